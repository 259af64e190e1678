//! OpenPPL `ppl.llm.serving`: gRPC only, `LLMService/Generation` over HTTP/2 (prior knowledge).
//!
//! The call is always server-streaming (so `--no-stream` cannot be honoured): one `BatchedRequest` carrying a
//! single `Request` goes out, and every generated token comes back as its own length-prefixed
//! `BatchedResponse`; the last one has `status = FINISHED`, then the trailers carry
//! `grpc-status`. The adapter asks for `grpc` framing, so the host hands over one frame per
//! whole message, stamped at the read that completed it; the parser still reassembles messages
//! split across frames, so it also works with `raw` chunks. The handful of protobuf fields
//! involved are encoded and decoded by hand (proto3: default values are absent on the wire,
//! unknown fields are skipped), which keeps the component free of a protobuf runtime.

use std::cell::RefCell;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::error_message;
use llmb_plugin_sdk::openai::{classify, prompt_text};
use serde_json::Value;

mod proto;
mod status;
#[cfg(test)]
mod tests;
mod utf8;

pub use proto::encode_request;
use proto::{Response, decode_batched};
use status::{percent_decode, status_error};
use utf8::Utf8Carry;

/// The `ppl` adapter.
pub struct Adapter;

/// Per-request stream state: bytes of a gRPC message that is still incomplete must survive
/// between reads, and the end of the call is only known from the trailers.
pub struct Parser {
    state: RefCell<State>,
}

const DEFAULT_ENDPOINT: &str = "/ppl.llm.proto.LLMService/Generation";

/// gRPC's default maximum receive size; a larger length prefix means the stream is garbage.
const MAX_MESSAGE: usize = 4 << 20;

const STATUS_FINISHED: u64 = 1;
const STATUS_FAILED: u64 = 2;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The id of the first response: one request per call, so every response must carry it.
    id: Option<u64>,
    tokens: u32,
    utf8: Utf8Carry,
    /// `grpc-status`/`grpc-message` of a Trailers-Only response, which hyper reports as headers.
    header_status: Option<(String, Option<String>)>,
    /// Set when the response headers already rule the stream out.
    pending_error: Option<BackendError>,
    done: bool,
    failed: bool,
}

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl State {
    /// Splits `bytes` into whole gRPC messages and handles each; returns how many bytes were
    /// consumed (the rest is an incomplete message).
    fn messages(&mut self, frame: u32, bytes: &[u8], events: &mut Vec<StreamEvent>) -> usize {
        let mut pos = 0;
        while !self.done && !self.failed && bytes.len() - pos >= 5 {
            let flag = bytes[pos];
            if flag != 0 {
                let why = if flag == 1 {
                    "a compressed gRPC message (the adapter asks for none and cannot inflate it)"
                        .to_owned()
                } else {
                    format!("an invalid gRPC message flag 0x{flag:02x} (is this a gRPC stream?)")
                };
                self.fail(protocol(format!("the server sent {why}")), events);
                break;
            }
            let len = u32::from_be_bytes([
                bytes[pos + 1],
                bytes[pos + 2],
                bytes[pos + 3],
                bytes[pos + 4],
            ]) as usize;
            if len > MAX_MESSAGE {
                self.fail(
                    protocol(format!(
                        "gRPC message length {len} exceeds {MAX_MESSAGE} bytes (garbled stream?)"
                    )),
                    events,
                );
                break;
            }
            if bytes.len() - pos - 5 < len {
                break;
            }
            let payload = &bytes[pos + 5..pos + 5 + len];
            pos += 5 + len;
            match decode_batched(payload) {
                Ok(responses) => {
                    for rsp in responses {
                        self.response(frame, rsp, events);
                    }
                }
                Err(e) => self.fail(protocol(format!("malformed BatchedResponse: {e}")), events),
            }
        }
        pos
    }

    fn response(&mut self, frame: u32, rsp: Response, events: &mut Vec<StreamEvent>) {
        if self.done || self.failed {
            return;
        }
        match self.id {
            None => self.id = Some(rsp.id),
            Some(id) if id != rsp.id => {
                self.fail(
                    protocol(format!(
                        "response for id {} on a call whose responses carry id {id} (one request per call)",
                        rsp.id
                    )),
                    events,
                );
                return;
            }
            Some(_) => {}
        }
        if rsp.status == STATUS_FAILED {
            self.fail(
                BackendError {
                    kind: ErrorKind::Server,
                    message: "request failed (status FAILED)".into(),
                    http_status: None,
                    retryable: false,
                },
                events,
            );
            return;
        }
        self.tokens += 1;
        let mut text = self.utf8.push(rsp.generated);
        let finished = rsp.status == STATUS_FINISHED;
        if finished {
            text.push_str(&self.utf8.flush());
        }
        events.push(StreamEvent::Delta(Delta {
            frame,
            text,
            reasoning: String::new(),
            tokens: Some(1),
            index: 0,
        }));
        if finished {
            events.push(StreamEvent::Finish("finished".into()));
            events.push(StreamEvent::Usage(Usage {
                reasoning_tokens: None,
                prompt_tokens: None,
                completion_tokens: Some(self.tokens),
                cached_prompt_tokens: None,
            }));
            events.push(StreamEvent::Done);
            self.done = true;
        }
    }

    fn fail(&mut self, err: BackendError, events: &mut Vec<StreamEvent>) {
        self.failed = true;
        self.buf.clear();
        events.push(StreamEvent::Error(err));
    }
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "ppl".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "OpenPPL ppl.llm.serving over gRPC (LLMService/Generation, HTTP/2)".into(),
            default_endpoint: DEFAULT_ENDPOINT.into(),
            framing: Framing::Grpc,
            supports_ignore_eos: true,
            http2: true,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        match options.first() {
            Some(kv) => Err(format!(
                "the ppl adapter takes no options (got {:?})",
                kv.key
            )),
            None => Ok(()),
        }
    }

    /// The body is protobuf, so `--extra-body` (a JSON merge) has nothing to apply to and is
    /// refused rather than silently dropped. An empty prompt is refused too: OpenPPL would take
    /// it for token-in mode with no tokens. Without a temperature 1.0 is sent, as the server
    /// would otherwise read proto3's absent value as 0.0. `streaming: false` changes nothing in
    /// the request: `Generation` is a server-streaming RPC either way.
    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        if req.extra_body.is_some() {
            return Err(
                "--extra-body cannot apply to the ppl adapter: its request is protobuf, not JSON"
                    .into(),
            );
        }
        let prompt = prompt_text(&req.prompt)?;
        if prompt.is_empty() {
            return Err("empty prompt: OpenPPL reads it as token-in mode without tokens".into());
        }
        Ok(HttpRequest {
            method: "POST".into(),
            path: DEFAULT_ENDPOINT.into(),
            headers: vec![
                ("content-type".into(), "application/grpc".into()),
                ("te".into(), "trailers".into()),
            ],
            body: encode_request(
                req.id,
                req.temperature.unwrap_or(1.0),
                &prompt,
                req.max_tokens,
                req.ignore_eos,
            ),
        })
    }

    /// `Generation` is server-streaming and its outcome lives in the trailers, which a whole-body
    /// call never sees: the adapter only streams.
    fn parse_body(
        _status: u16,
        _headers: Headers,
        _body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        Err(protocol(
            "the ppl (gRPC) adapter only streams: run without --no-stream".into(),
        ))
    }

    /// A gRPC server answers HTTP errors (404 for an unknown path, 415 for a wrong content type)
    /// with a short text body or with `grpc-message` in the headers; either becomes the message.
    /// 415 means the request itself is wrong for the server, so it counts as a bad request.
    fn map_error(status: u16, headers: Headers, body: Vec<u8>) -> BackendError {
        let message = match header(&headers, "grpc-message") {
            Some(m) if !m.trim().is_empty() => percent_decode(m),
            _ => serde_json::from_slice::<Value>(&body)
                .ok()
                .as_ref()
                .and_then(error_message)
                .unwrap_or_else(|| {
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                        .trim()
                        .to_owned()
                }),
        };
        let mut err = classify(Some(status), message);
        if status == 415 && matches!(err.kind, ErrorKind::Unknown) {
            err.kind = ErrorKind::BadRequest;
        }
        err.http_status = Some(status);
        err
    }

    fn tokenize_request(_req: GenRequest) -> Option<HttpRequest> {
        None
    }

    fn parse_tokenize(_body: Vec<u8>) -> Result<u32, String> {
        Err(llmb_plugin_sdk::tokenize::NO_ROUTE.into())
    }
}

impl GuestResponseParser for Parser {
    /// A Trailers-Only failure arrives as the response headers (hyper sees no trailers), and a
    /// non-gRPC content type means the endpoint is not a gRPC server: both are kept for later.
    fn new(_status: u16, headers: Headers) -> Self {
        let mut state = State::default();
        if let Some(code) = header(&headers, "grpc-status") {
            state.header_status = Some((
                code.to_owned(),
                header(&headers, "grpc-message").map(str::to_owned),
            ));
        }
        if let Some(ct) = header(&headers, "content-type")
            && !ct.trim().starts_with("application/grpc")
        {
            state.pending_error = Some(protocol(format!(
                "the response content-type is {ct:?}, not application/grpc (is this a gRPC server?)"
            )));
        }
        Self {
            state: RefCell::new(state),
        }
    }

    /// Each `Response` is one token; its delta is stamped with the frame that completed it.
    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        let mut events = Vec::new();
        if let Some(err) = state.pending_error.take() {
            state.fail(err, &mut events);
        }
        for (frame, _event, data) in batch.iter() {
            if state.done || state.failed {
                break;
            }
            if state.buf.is_empty() {
                let used = state.messages(frame, data, &mut events);
                if !state.failed && !state.done {
                    state.buf.extend_from_slice(&data[used..]);
                }
            } else {
                let mut buf = std::mem::take(&mut state.buf);
                buf.extend_from_slice(data);
                let used = state.messages(frame, &buf, &mut events);
                if !state.failed {
                    buf.drain(..used);
                    state.buf = buf;
                }
            }
        }
        events
    }

    /// The trailers settle the call: a non-OK `grpc-status` fails it (even after FINISHED, as
    /// gRPC defines the call's outcome by its status), and a stream without FINISHED or without
    /// a status is incomplete.
    fn finish(&self, trailers: Headers) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        let mut events = Vec::new();
        if let Some(err) = state.pending_error.take() {
            state.fail(err, &mut events);
        }
        if state.failed {
            return events;
        }
        let status = match header(&trailers, "grpc-status") {
            Some(code) => Some((
                code.to_owned(),
                header(&trailers, "grpc-message").map(str::to_owned),
            )),
            None => state.header_status.clone(),
        };
        let err = match &status {
            Some((code, message)) => status_error(code, message.as_deref()),
            None => None,
        };
        let err = match (err, state.done) {
            (Some(err), _) => Some(err),
            (None, false) if !state.buf.is_empty() => Some(protocol(format!(
                "stream ended before FINISHED, inside a gRPC message ({} bytes left over)",
                state.buf.len()
            ))),
            (None, false) => Some(protocol(if status.is_some() {
                "stream ended before FINISHED".to_owned()
            } else {
                "stream ended before FINISHED (and without grpc-status trailers)".to_owned()
            })),
            (None, true) if status.is_none() => Some(protocol(
                "the call ended without grpc-status trailers".into(),
            )),
            (None, true) => None,
        };
        if let Some(err) = err {
            state.fail(err, &mut events);
        }
        events
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);
