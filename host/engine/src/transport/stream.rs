//! Reading a streamed response: each read is stamped as its bytes arrive, everything already
//! buffered with it is framed (SSE, NDJSON, gRPC or raw) and handed to the adapter in a single
//! call, so a delta's timestamp is that of the read that carried it.

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
impl Exchange<'_> {
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
        let limits = self.target.limits;
        // `--max-frame-bytes`: the SDK framers' own limit (raw framing buffers nothing).
        let mut framer = BodyFramer::new(framing_kind(self.target.framing), limits.max_frame_bytes);
        let mut overflow: Option<RequestError> = None;
        let mut frames = Batch::default();
        // When each frame of `frames` arrived (the read that completed it), ns since t0.
        let mut frame_ns: Vec<u64> = Vec::new();
        let mut trailers: Vec<(String, String)> = Vec::new();
        let mut ended = false;
        let mut received: u64 = 0;
        while !ended {
            let whole = || {
                fail(
                    "timeout",
                    format!("stream incomplete after {:?}", self.target.timeout),
                )
            };
            let first = self.next_frame(body, deadline, received > 0, whole).await?;
            let now = Instant::now();
            let now_ns = self.ns(now);
            // Everything already buffered arrived with this read: frame it all, one plugin call.
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    None => ended = true,
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
                            framer.push(&data, &mut frames);
                            // Frames this data completed arrived with the read that carried its
                            // last byte.
                            let at = wire.and_then(|w| w.arrival_of(received)).unwrap_or(now);
                            let at_ns = self.ns(at);
                            frame_ns.resize(frames.frames.len(), at_ns);
                            if let Some(why) = framer.overflowed() {
                                // Frames completed before the oversized one still go to the
                                // adapter, so what it sees does not depend on read splits.
                                overflow =
                                    Some(fail("too-large", format!("{why} (--max-frame-bytes)")));
                                ended = true;
                            }
                        }
                        Err(frame) => {
                            if let Ok(map) = frame.into_trailers() {
                                trailers.extend(map.iter().map(|(k, v)| {
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
            if ended && overflow.is_none() {
                framer.finish(&mut frames);
                let end_ns = self.ns(last_read(wire));
                frame_ns.resize(frames.frames.len(), end_ns);
            }
            if !frames.is_empty() {
                let batch = to_plugin_batch(&mut frames);
                let events = adapter
                    .feed(parser, &batch)
                    .map_err(|f| fail("plugin", f.to_string()))?;
                frames.data = batch.data;
                frames.data.clear();
                outcome.apply(events, &frame_ns, now_ns, &mut record.delta_ns);
                frame_ns.clear();
                if outcome.error.is_some() {
                    record.end_ns = now_ns;
                    return Ok(());
                }
                if let Some(e) = outcome.over_budget(record.delta_ns.len(), limits.max_text_bytes) {
                    return Err(e);
                }
            }
            if let Some(e) = overflow {
                return Err(e);
            }
        }
        let events = adapter
            .finish(parser, &trailers)
            .map_err(|f| fail("plugin", f.to_string()))?;
        let end_ns = self.ns(last_read(wire));
        outcome.apply(events, &[], end_ns, &mut record.delta_ns);
        record.end_ns = end_ns;
        if let Some(e) = outcome.over_budget(record.delta_ns.len(), limits.max_text_bytes) {
            return Err(e);
        }
        Ok(())
    }
}
