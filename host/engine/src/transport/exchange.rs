//! Sending one request and measuring it: [`Exchange`] builds the request through the adapter
//! and [`Target`], sends it under `--timeout` and `--header-timeout`, reads error and
//! non-streaming bodies, and resolves the output token count. The streaming read loop is in
//! the sibling `stream` module.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::plugin::backend::{GenRequest, PooledBackend};
use crate::records::{RequestError, RequestRecord, TokenSource};
use crate::tokenizer::HostTokenizer;

use super::client::HttpClient;
use super::errors::{backend_error, chain, fail};
use super::pool::SendError;
use super::stream::BodyTimer;
use super::stream_outcome::StreamOutcome;
use super::target::Target;
use super::wire::WireLog;
use super::{limits, transcript};

/// When the request went out and when its last byte was written, as far as the exchange knows
/// yet (ns since the run's origin, 0: not yet), for the `--cancel-after` timer that runs beside
/// it.
#[derive(Default)]
struct SendMarks {
    sent: AtomicU64,
    written: AtomicU64,
    /// The connection the request went out on, whose I/O stamps the end of the write; only
    /// for a request with a cancel timer (the others pay nothing for it).
    wire: Option<super::wire::WireWatch>,
}

impl SendMarks {
    /// The instant the cancel timer counts from: the write's end when known (from the
    /// connection's I/O as it happens, or the exchange once the head came), else the send.
    fn base(&self, t0: Instant) -> Option<Instant> {
        let sent = match self.sent.load(Relaxed) {
            0 => return None,
            ns => t0 + Duration::from_nanos(ns),
        };
        Some(match self.written.load(Relaxed) {
            0 => self
                .wire
                .as_ref()
                .and_then(|w| w.written_after(sent))
                .unwrap_or(sent),
            w => t0 + Duration::from_nanos(w),
        })
    }
}

/// The error a request cancelled by plan is recorded with.
fn record_cancel(after: Duration) -> RequestError {
    RequestError {
        kind: "cancelled".into(),
        message: format!(
            "cancelled by the client {} ms after the request was sent (--cancel-rate/--cancel-after)",
            after.as_secs_f64() * 1e3
        ),
        http_status: None,
    }
}

/// When the connection's latest read returned: the end of a body just read to its end (now,
/// when the connection is not stamped).
pub(super) fn last_read(wire: Option<&WireLog>) -> Instant {
    wire.and_then(|w| w.times().last_read)
        .unwrap_or_else(Instant::now)
}

/// The record's `read_wait_max_ns`, read before the connection goes back to the pool.
fn longest_read_wait_ns(wire: Option<&WireLog>) -> Option<u64> {
    wire.and_then(|w| w.times().longest_read_wait)
        .map(|d| d.as_nanos() as u64)
}

/// Largest error body kept for the error message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Everything `execute` needs besides the request itself.
pub struct Exchange<'a> {
    pub client: &'a HttpClient,
    pub target: &'a Target,
    pub tokenizer: &'a HostTokenizer,
    /// The run's time origin: every timestamp is nanoseconds since this instant.
    pub t0: Instant,
}

impl Exchange<'_> {
    pub(super) fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_nanos() as u64
    }

    /// The failure for a body past `--max-response-bytes`.
    pub(super) fn too_large(&self, what: &str) -> RequestError {
        fail(
            "too-large",
            format!(
                "{what} passed --max-response-bytes {}",
                limits::size(self.target.limits.max_response_bytes)
            ),
        )
    }

    /// Sends `req` and measures it. Never fails: every problem becomes a failed record.
    pub async fn execute(
        &self,
        adapter: &mut PooledBackend,
        req: &GenRequest,
        record: RequestRecord,
    ) -> RequestRecord {
        self.execute_until(adapter, req, record, std::future::pending(), None)
            .await
    }

    /// [`Self::execute`], cut off when `cancel` resolves (to the error to record, e.g. kind
    /// `cancelled`), or by the client itself `cancel_after` the request was written
    /// (`--cancel-rate`). A cut-off request keeps what was measured until then: its send time,
    /// response head and every delta frame, and the text received.
    pub async fn execute_until(
        &self,
        adapter: &mut PooledBackend,
        req: &GenRequest,
        mut record: RequestRecord,
        cancel: impl std::future::Future<Output = RequestError>,
        cancel_after: Option<Duration>,
    ) -> RequestRecord {
        record.requested_output_tokens = req.max_tokens;
        let mut outcome = StreamOutcome::default();
        let marks = SendMarks {
            wire: cancel_after.map(|_| super::wire::WireWatch::default()),
            ..SendMarks::default()
        };
        let planned = async {
            match cancel_after {
                Some(after) => {
                    self.planned_cancel(&marks, after).await;
                    record_cancel(after)
                }
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            biased;
            r = self.exchange(adapter, req, &mut record, &mut outcome, &marks) => r,
            e = cancel => Err(e),
            e = planned => {
                record.planned_cancel = true;
                Err(e)
            }
        };
        if let Err(e) = result {
            outcome.error.get_or_insert(e);
        }
        // Cut off mid-stream: the frames that arrived still count, and the parser is released.
        if let Some(parser) = outcome.parser {
            let cut = outcome.error.take();
            if let Err(e) = self.flush_pending(adapter, &mut record, &mut outcome) {
                outcome.error.get_or_insert(e);
            }
            if let Some(e) = cut {
                outcome.error = Some(e);
            }
            outcome.parser = None;
            adapter.drop_parser(parser);
        }
        if record.end_ns == 0 {
            record.end_ns = self.ns(Instant::now());
        }
        if outcome.error.is_none() && req.streaming && record.delta_ns.is_empty() {
            outcome.error = Some(fail(
                "protocol",
                "never received a valid chunk to calculate TTFT (no delta in the stream)",
            ));
        }
        self.resolve_tokens(&mut record, &outcome);
        record.success = outcome.error.is_none();
        record.error = outcome.error;
        record.finish_reason = outcome.finish_reason;
        record.first_answer_ns = outcome.first_answer_ns;
        record.generated_text = outcome.text;
        record.reasoning_text = outcome.reasoning;
        record
    }

    /// Output tokens: server usage, else server per-delta counts, else a real tokenizer, else
    /// the number of frames that carried text, else the word estimate over the text. The label
    /// says which, truthfully: "tokenizer" only when a real tokenizer counted.
    fn resolve_tokens(&self, record: &mut RequestRecord, outcome: &StreamOutcome) {
        if let Some(u) = &outcome.usage {
            record.server_prompt_tokens = u.prompt_tokens;
            record.cached_prompt_tokens = u.cached_prompt_tokens;
        }
        let text = || format!("{}{}", outcome.text, outcome.reasoning);
        let (tokens, source) =
            if let Some(n) = outcome.usage.as_ref().and_then(|u| u.completion_tokens) {
                (n, TokenSource::Usage)
            } else if let Some(n) = outcome.server_tokens {
                (n, TokenSource::ServerDeltas)
            } else if matches!(self.tokenizer, HostTokenizer::HuggingFace { .. }) {
                (self.tokenizer.count(&text()), TokenSource::Tokenizer)
            } else if outcome.text_frames > 0 {
                (outcome.text_frames, TokenSource::DeltaCount)
            } else {
                (self.tokenizer.count(&text()), TokenSource::WordEstimate)
            };
        record.output_tokens = tokens;
        record.token_source = Some(source);
        let server_reasoning = outcome
            .usage
            .as_ref()
            .and_then(|u| u.reasoning_tokens)
            .filter(|&n| n > 0 || outcome.reasoning.is_empty());
        if let Some(n) = server_reasoning {
            // The server's own count (`completion_tokens_details.reasoning_tokens`): exact,
            // and the only count when the reasoning text is hidden (OpenAI's o-series).
            if n > 0 {
                record.reasoning_tokens = Some(n.min(tokens));
                record.reasoning_token_source = Some(TokenSource::Usage);
            }
        } else if !outcome.reasoning.is_empty() {
            // Without the server's count, reasoning is counted here: by a real tokenizer, else
            // one token per frame that carried it.
            let (reasoning, source) = if matches!(self.tokenizer, HostTokenizer::HuggingFace { .. })
            {
                (
                    self.tokenizer.count(&outcome.reasoning),
                    TokenSource::Tokenizer,
                )
            } else if outcome.reasoning_frames > 0 {
                (outcome.reasoning_frames, TokenSource::DeltaCount)
            } else {
                (
                    self.tokenizer.count(&outcome.reasoning),
                    TokenSource::WordEstimate,
                )
            };
            record.reasoning_tokens = Some(reasoning.min(tokens));
            record.reasoning_token_source = Some(source);
        }
    }

    /// Returns `after` the request was written: the timer starts when execution does, then
    /// moves to `after` past the send and, once the connection's I/O has stamped it, past the
    /// last byte written (the send stands in only over HTTP/2, whose writes are not stamped).
    async fn planned_cancel(&self, marks: &SendMarks, after: Duration) {
        let mut due = Instant::now() + after;
        loop {
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            let Some(base) = marks.base(self.t0) else {
                // Not yet sent (the adapter still building it): look again shortly.
                due = Instant::now() + Duration::from_millis(1).min(after);
                continue;
            };
            let wanted = base + after;
            if wanted <= Instant::now() {
                return;
            }
            due = wanted;
        }
    }

    async fn exchange(
        &self,
        adapter: &mut PooledBackend,
        req: &GenRequest,
        record: &mut RequestRecord,
        outcome: &mut StreamOutcome,
        marks: &SendMarks,
    ) -> Result<(), RequestError> {
        let http = adapter
            .build_request(req)
            .map_err(|f| fail("plugin", f.to_string()))?
            .map_err(|e| {
                fail(
                    "plugin",
                    format!("the adapter refused request {}: {e}", req.id),
                )
            })?;
        let path = self.target.endpoint.as_deref().unwrap_or(&http.path);
        let mut transcript = transcript::enabled().then(|| transcript::Transcript {
            method: http.method.clone(),
            path: path.to_string(),
            request_body: String::from_utf8_lossy(&http.body).into_owned(),
            status: 0,
            headers: Vec::new(),
            reads: Vec::new(),
        });
        let mut request = self
            .target
            .request(path, &http.method, &http.headers, http.body)?;
        if let Some(wire) = &marks.wire {
            request.extensions_mut().insert(wire.clone());
        }

        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent + self.target.timeout);
        record.sent_ns = self.ns(sent);
        marks.sent.store(record.sent_ns.max(1), Relaxed);
        let timeout_error = || {
            fail(
                "timeout",
                format!("no complete response within {:?}", self.target.timeout),
            )
        };

        let wire;
        let checkin;
        // On the heap while the request goes out: inline, this future (with a connect, a TLS
        // handshake and HTTP/2's client in it) would stay in every request's task for the whole
        // stream, twice over (a local moved into `timeout_at` keeps its own slot).
        let send = Box::pin(
            self.client
                .send_within(request, self.target.limits.header_timeout),
        );
        let response = match tokio::time::timeout_at(deadline, send).await {
            Err(_) => return Err(timeout_error()),
            Ok(Err(SendError::HeaderTimeout(t))) => {
                return Err(fail(
                    "timeout",
                    format!(
                        "no response head within {t:?} of sending the request (--header-timeout)"
                    ),
                ));
            }
            Ok(Err(e)) => return Err(fail("connect", chain(&e))),
            Ok(Ok(sent)) => {
                record.retried = sent.retried;
                if let Some(opened) = sent.opened {
                    record.connect_duration_ns = Some(opened.connect.as_nanos() as u64);
                    record.tls_duration_ns = opened.tls.map(|t| t.as_nanos() as u64);
                }
                wire = sent.wire;
                checkin = sent.checkin;
                sent.response
            }
        };
        let head_at = Instant::now();
        let times = wire.as_ref().map(|w| w.times()).unwrap_or_default();
        let first_byte = self.ns(times.first_byte.unwrap_or(head_at));
        record.first_byte_ns = Some(first_byte);
        // The write-completion stamp is read after write() returns, the first byte's by the
        // kernel on arrival: a writer preempted in between would stamp its write after the
        // answer began. The request was written by the time its answer arrived.
        record.written_ns = times.request_written.map(|t| self.ns(t).min(first_byte));
        if let Some(w) = record.written_ns {
            marks.written.store(w.max(1), Relaxed);
        }
        let status = response.status().as_u16();
        let resp_headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = response.into_body();
        if let Some(t) = transcript.as_mut() {
            t.status = status;
            t.headers = resp_headers.clone();
        }

        if !(200..300).contains(&status) {
            let mut bytes = Vec::new();
            // Best effort: what arrives within the idle timeout, up to MAX_ERROR_BODY.
            let mut timer = BodyTimer::new(deadline, self.target.limits.read_idle_timeout);
            timer.progressed(Instant::now());
            while let Ok(Some(Ok(frame))) = timer.next_frame(&mut body, timeout_error).await {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data[..data.len().min(MAX_ERROR_BODY - bytes.len())]);
                    if bytes.len() >= MAX_ERROR_BODY {
                        break;
                    }
                }
            }
            record.end_ns = self.ns(Instant::now());
            record.read_wait_max_ns = longest_read_wait_ns(wire.as_deref());
            let err = adapter
                .map_error(status, &resp_headers, &bytes)
                .map_err(|f| fail("plugin", f.to_string()))?;
            let mut err = backend_error(err);
            err.http_status = Some(status);
            // 429 and 503 say when to come back; the request is not retried (nor by curl or
            // Go's net/http), as a retry would hide the overload the benchmark measures.
            if let Some((_, after)) = resp_headers.iter().find(|(k, _)| k == "retry-after") {
                err.message = format!("{} (Retry-After: {after})", err.message);
            }
            return Err(err);
        }

        if !req.streaming {
            let max = self.target.limits.max_response_bytes;
            let declared = resp_headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return Err(self.too_large(&format!(
                    "the response body ({} bytes by its Content-Length)",
                    declared.unwrap_or_default()
                )));
            }
            let mut collected = Vec::with_capacity(declared.unwrap_or(0) as usize);
            let mut timer = BodyTimer::new(deadline, self.target.limits.read_idle_timeout);
            while let Some(frame) = timer.next_frame(&mut body, timeout_error).await? {
                let frame = frame.map_err(|e| {
                    fail(
                        "connection",
                        format!("connection error while reading the body: {}", chain(&e)),
                    )
                })?;
                if let Ok(data) = frame.into_data() {
                    timer.progressed(Instant::now());
                    if (collected.len() + data.len()) as u64 > max {
                        return Err(self.too_large("the response body"));
                    }
                    collected.extend_from_slice(&data);
                    // Only the end is timed: drop the stamps of the reads behind it, which
                    // would otherwise pile up for a large body.
                    if let Some(w) = wire.as_deref() {
                        w.arrival_of(collected.len() as u64);
                    }
                }
            }
            record.end_ns = self.ns(last_read(wire.as_deref()));
            record.read_wait_max_ns = longest_read_wait_ns(wire.as_deref());
            if let Some(mut t) = transcript.take() {
                t.reads
                    .push(String::from_utf8_lossy(&collected).into_owned());
                transcript::save(&t);
            }
            // The body was read to its end: the connection is free for the next request.
            if let Some(c) = checkin {
                c.done().await;
            }
            let completion = adapter
                .parse_body(status, &resp_headers, &collected)
                .map_err(|f| fail("plugin", f.to_string()))?
                .map_err(backend_error)?;
            outcome.text = completion.text;
            outcome.reasoning = completion.reasoning;
            outcome.finish_reason = completion.finish;
            outcome.usage = completion.usage;
            if let Some(e) = outcome.over_budget(0, self.target.limits.max_text_bytes) {
                outcome.text.clear();
                outcome.reasoning.clear();
                return Err(e);
            }
            return Ok(());
        }

        let parser = adapter
            .new_parser(status, &resp_headers)
            .map_err(|f| fail("plugin", f.to_string()))?;
        outcome.transcript = transcript;
        let result = self
            .read_stream(
                adapter,
                parser,
                &mut body,
                wire.as_deref(),
                deadline,
                record,
                outcome,
            )
            .await;
        record.read_wait_max_ns = longest_read_wait_ns(wire.as_deref());
        if let Some(t) = outcome.transcript.take() {
            transcript::save(&t);
        }
        outcome.parser = None;
        adapter.drop_parser(parser);
        // Only a body read to its end leaves the connection ready for the next request.
        if let (Ok(()), Some(c)) = (&result, checkin)
            && outcome.body_ended
        {
            c.done().await;
        }
        result
    }
}
