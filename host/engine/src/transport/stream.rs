//! Reading a streamed response: each socket read is stamped where it returns (`wire`), the body
//! is framed (SSE, NDJSON, gRPC or raw) and every frame keeps the stamp of the read that
//! completed it. Frames then go to the adapter in batches of up to [`PARSE_BATCH_FRAMES`]: a
//! WebAssembly call costs about as much as parsing one chunk, so one call per token would
//! double the client's work; the stamps do not depend on when the adapter sees the frames.

use std::time::Instant;

use futures_util::FutureExt;
use http_body_util::BodyExt;
use llmb_plugin_sdk::framing::{Batch, BodyFramer, FramingKind};

use crate::plugin::backend::{FrameBatch, FrameSpan, Framing, PooledBackend};
use crate::records::{RequestError, RequestRecord};

use super::errors::{chain, fail};
use super::exchange::{Exchange, last_read};
use super::stream_outcome::StreamOutcome;
use super::wire::WireLog;

/// Frames handed to the adapter in one call at most (and at the end of the stream, a failure or
/// a cancellation, whatever is pending). `llmb selfbench --parse-only` prints the cost per event
/// at 1, 8 and 32 frames per call: 2.67, 1.53 and 1.42 µs on the 2-core machine of the README,
/// so 16 keeps nearly all of the gain with a few KiB pending per stream.
pub const PARSE_BATCH_FRAMES: usize = 16;
/// Bytes of pending frames that trigger a call before [`PARSE_BATCH_FRAMES`] is reached.
const PARSE_BATCH_BYTES: usize = 16 * 1024;

/// Frames framed but not yet given to the adapter, with their arrival stamps.
#[derive(Default)]
pub(super) struct PendingFrames {
    pub(super) frames: Batch,
    /// When each frame arrived (the read that completed it), ns since the run's start.
    pub(super) arrived_ns: Vec<u64>,
}

impl PendingFrames {
    fn full(&self) -> bool {
        self.frames.frames.len() >= PARSE_BATCH_FRAMES
            || self.frames.data.len() >= PARSE_BATCH_BYTES
    }
}

/// The host binding's `framing` as the SDK's framer kind.
fn framing_kind(framing: Framing) -> FramingKind {
    match framing {
        Framing::Sse => FramingKind::Sse,
        Framing::Ndjson => FramingKind::Ndjson,
        Framing::Grpc => FramingKind::Grpc,
        Framing::Raw => FramingKind::Raw,
    }
}

/// Moves a framed batch into the plugin's type (the data buffer is moved, not copied).
fn to_plugin_batch(batch: &mut Batch) -> FrameBatch {
    FrameBatch {
        data: std::mem::take(&mut batch.data),
        frames: batch
            .frames
            .drain(..)
            .map(|s| FrameSpan {
                start: s.start,
                len: s.len,
                event: s.event,
            })
            .collect(),
    }
}
/// `--timeout` and `--read-idle-timeout` over a whole body with one timer (streamed, whole or an
/// error's). A timer per frame (`tokio::time::timeout`) inserts into and removes from the
/// runtime's timer wheel once per token; this one stays armed and is moved only when it fires
/// before either limit is really reached (the body made progress since it was set), about once
/// per idle timeout.
pub(super) struct BodyTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    deadline: tokio::time::Instant,
    idle: std::time::Duration,
    /// When the latest bytes of the body arrived; `None` until the first did.
    last_progress: Option<tokio::time::Instant>,
}

impl BodyTimer {
    pub(super) fn new(deadline: tokio::time::Instant, idle: std::time::Duration) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
            idle,
            last_progress: None,
        }
    }

    /// Bytes of the body arrived at `at`: the idle limit now runs from there.
    pub(super) fn progressed(&mut self, at: Instant) {
        let at = tokio::time::Instant::from_std(at);
        if self.last_progress.is_none() {
            let due = self.due_after(at);
            self.sleep.as_mut().reset(due);
        }
        self.last_progress = Some(at);
    }

    fn due_after(&self, progress: tokio::time::Instant) -> tokio::time::Instant {
        self.deadline.min(progress + self.idle)
    }

    /// The body's next frame, or the failure of whichever limit came first (`whole` words the
    /// `--timeout` one).
    pub(super) async fn next_frame(
        &mut self,
        body: &mut hyper::body::Incoming,
        whole: impl FnOnce() -> RequestError,
    ) -> Result<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>, RequestError> {
        loop {
            tokio::select! {
                biased;
                frame = body.frame() => return Ok(frame),
                () = self.sleep.as_mut() => {
                    let due = match self.last_progress {
                        Some(at) => self.due_after(at),
                        None => self.deadline,
                    };
                    if tokio::time::Instant::now() < due {
                        self.sleep.as_mut().reset(due);
                        continue;
                    }
                    return Err(match self.last_progress {
                        Some(at) if at + self.idle <= self.deadline => fail(
                            "timeout",
                            format!(
                                "the response stalled: no bytes for {:?} (--read-idle-timeout)",
                                self.idle
                            ),
                        ),
                        _ => whole(),
                    });
                }
            }
        }
    }
}

impl Exchange<'_> {
    /// Reads the stream to its end. Frames still pending when it fails are parsed before the
    /// failure is returned, so a failed stream keeps every delta that arrived.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn read_stream(
        &self,
        adapter: &mut PooledBackend,
        parser: crate::plugin::ParserHandle,
        body: &mut hyper::body::Incoming,
        wire: Option<&WireLog>,
        deadline: tokio::time::Instant,
        record: &mut RequestRecord,
        outcome: &mut StreamOutcome,
    ) -> Result<(), RequestError> {
        outcome.parser = Some(parser);
        let result = self
            .read_frames(adapter, body, wire, deadline, record, outcome)
            .await;
        let flushed = self.flush_pending(adapter, record, outcome);
        result?;
        flushed?;
        if outcome.error.is_some() {
            return Ok(());
        }
        let events = adapter
            .finish(parser, &outcome.trailers)
            .map_err(|f| fail("plugin", f.to_string()))?;
        let end_ns = self.ns(last_read(wire));
        outcome.apply(events, &[], end_ns, &mut record.delta_ns);
        record.end_ns = end_ns;
        if let Some(e) =
            outcome.over_budget(record.delta_ns.len(), self.target.limits.max_text_bytes)
        {
            return Err(e);
        }
        Ok(())
    }

    /// Hands every pending frame to the adapter in one call and applies its events (each delta
    /// stamped with its frame's arrival). Also called after a cancellation cut the read short.
    pub(super) fn flush_pending(
        &self,
        adapter: &mut PooledBackend,
        record: &mut RequestRecord,
        outcome: &mut StreamOutcome,
    ) -> Result<(), RequestError> {
        let Some(parser) = outcome.parser else {
            return Ok(());
        };
        if outcome.pending.frames.is_empty() || outcome.error.is_some() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut outcome.pending);
        let batch = to_plugin_batch(&mut pending.frames);
        let events = adapter
            .feed(parser, &batch)
            .map_err(|f| fail("plugin", f.to_string()))?;
        let now_ns = self.ns(Instant::now());
        outcome.apply(events, &pending.arrived_ns, now_ns, &mut record.delta_ns);
        if outcome.error.is_some() {
            record.end_ns = pending.arrived_ns.last().copied().unwrap_or(now_ns);
        }
        // Keep the buffers for the next batch.
        pending.frames.data = batch.data;
        pending.frames.data.clear();
        pending.arrived_ns.clear();
        outcome.pending = pending;
        match outcome.over_budget(record.delta_ns.len(), self.target.limits.max_text_bytes) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn read_frames(
        &self,
        adapter: &mut PooledBackend,
        body: &mut hyper::body::Incoming,
        wire: Option<&WireLog>,
        deadline: tokio::time::Instant,
        record: &mut RequestRecord,
        outcome: &mut StreamOutcome,
    ) -> Result<(), RequestError> {
        let limits = self.target.limits;
        // `--max-frame-bytes`: the SDK framers' own limit (raw framing buffers nothing).
        let mut framer = BodyFramer::new(framing_kind(self.target.framing), limits.max_frame_bytes);
        let mut ended = false;
        let mut received: u64 = 0;
        let mut timer = BodyTimer::new(deadline, limits.read_idle_timeout);
        let whole = || {
            fail(
                "timeout",
                format!("stream incomplete after {:?}", self.target.timeout),
            )
        };
        while !ended {
            let first = timer.next_frame(body, whole).await?;
            let now = Instant::now();
            // Everything already buffered is framed now.
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    None => {
                        ended = true;
                        outcome.body_ended = true;
                    }
                    Some(Err(e)) => {
                        return Err(fail(
                            "connection",
                            format!("the connection failed mid-stream: {}", chain(&e)),
                        ));
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            received += data.len() as u64;
                            if received > limits.max_response_bytes {
                                return Err(self.too_large("the stream"));
                            }
                            if let Some(t) = outcome.transcript.as_mut() {
                                t.reads.push(String::from_utf8_lossy(&data).into_owned());
                            }
                            let pending = &mut outcome.pending;
                            framer.push(&data, &mut pending.frames);
                            // Frames this data completed arrived with the read that carried its
                            // last byte.
                            let at = wire.and_then(|w| w.arrival_of(received)).unwrap_or(now);
                            let at_ns = self.ns(at);
                            pending
                                .arrived_ns
                                .resize(pending.frames.frames.len(), at_ns);
                            if let Some(why) = framer.overflowed() {
                                // Frames completed before the oversized one still go to the
                                // adapter (flushed by the caller), so what it sees does not
                                // depend on read splits.
                                return Err(fail(
                                    "too-large",
                                    format!("{why} (--max-frame-bytes)"),
                                ));
                            }
                        }
                        Err(frame) => {
                            if let Ok(map) = frame.into_trailers() {
                                outcome.trailers.extend(map.iter().map(|(k, v)| {
                                    (
                                        k.as_str().to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                }));
                            }
                        }
                    },
                }
                if !ended {
                    next = body.frame().now_or_never();
                }
            }
            if received > 0 {
                timer.progressed(now);
            }
            if ended {
                let pending = &mut outcome.pending;
                framer.finish(&mut pending.frames);
                let end_ns = self.ns(last_read(wire));
                pending
                    .arrived_ns
                    .resize(pending.frames.frames.len(), end_ns);
            }
            if outcome.pending.full() {
                self.flush_pending(adapter, record, outcome)?;
                if outcome.error.is_some() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
