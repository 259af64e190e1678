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

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, u64::from(field) << 3 | u64::from(wire_type));
}

fn put_len(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Encodes one `Request` in a `BatchedRequest`, framed as a gRPC message. Fields are written in
/// field-number order with proto3 defaults left out, which is what protoc-generated encoders
/// emit, so the bytes match other clients' and a simulator can compare them. Public so tests
/// and tools can produce the exact bytes the adapter sends.
pub fn encode_request(
    id: u64,
    temperature: f32,
    prompt: &str,
    max_new_tokens: u32,
    ignore_eos: bool,
) -> Vec<u8> {
    let mut stopping = Vec::new();
    if max_new_tokens != 0 {
        put_tag(&mut stopping, 1, 0);
        put_varint(&mut stopping, u64::from(max_new_tokens));
    }
    if ignore_eos {
        put_tag(&mut stopping, 3, 0);
        put_varint(&mut stopping, 1);
    }
    let mut request = Vec::with_capacity(prompt.len() + 32);
    if id != 0 {
        put_tag(&mut request, 1, 0);
        put_varint(&mut request, id);
    }
    if temperature.to_bits() != 0 {
        put_tag(&mut request, 2, 5);
        request.extend_from_slice(&temperature.to_le_bytes());
    }
    if !prompt.is_empty() {
        put_len(&mut request, 3, prompt.as_bytes());
    }
    put_len(&mut request, 5, &stopping);
    let mut batched = Vec::with_capacity(request.len() + 8);
    put_len(&mut batched, 1, &request);
    let mut message = Vec::with_capacity(batched.len() + 5);
    message.push(0);
    message.extend_from_slice(&(batched.len() as u32).to_be_bytes());
    message.extend_from_slice(&batched);
    message
}

/// A cursor over protobuf bytes; every read fails on truncation instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .bytes
                .get(self.pos)
                .ok_or("truncated varint in a protobuf message")?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes in a protobuf message".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or("a protobuf field runs past the end of its message")?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "protobuf length out of range")?)
    }

    /// Returns (field number, wire type).
    fn tag(&mut self) -> Result<(u64, u8), String> {
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 {
            return Err("protobuf field number 0".into());
        }
        Ok((field, (tag & 7) as u8))
    }

    /// Skips a field's value; groups (wire types 3/4) are skipped through their end tag.
    fn skip(&mut self, field: u64, wire_type: u8) -> Result<(), String> {
        match wire_type {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.len_delimited().map(drop),
            5 => self.take(4).map(drop),
            3 => loop {
                let (inner, wt) = self.tag()?;
                if wt == 4 {
                    return if inner == field {
                        Ok(())
                    } else {
                        Err(format!("protobuf group {field} closed by end tag {inner}"))
                    };
                }
                self.skip(inner, wt)?;
            },
            4 => Err(format!(
                "unexpected protobuf end-group tag for field {field}"
            )),
            other => Err(format!("invalid protobuf wire type {other}")),
        }
    }
}

/// One decoded `Response`; absent fields keep their proto3 defaults.
#[derive(Debug, Default, PartialEq)]
struct Response<'a> {
    status: u64,
    id: u64,
    generated: &'a [u8],
}

/// Decodes a `BatchedResponse`. A known field with an unexpected wire type is skipped as
/// unknown, as the C++ protobuf runtime the server uses does.
fn decode_batched(bytes: &[u8]) -> Result<Vec<Response<'_>>, String> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::with_capacity(1);
    while !r.at_end() {
        match r.tag()? {
            (1, 2) => out.push(decode_response(r.len_delimited()?)?),
            (field, wt) => r.skip(field, wt)?,
        }
    }
    Ok(out)
}

fn decode_response(bytes: &[u8]) -> Result<Response<'_>, String> {
    let mut r = Reader::new(bytes);
    let mut rsp = Response::default();
    while !r.at_end() {
        match r.tag()? {
            (1, 0) => rsp.status = r.varint()?,
            (2, 0) => rsp.id = r.varint()?,
            (3, 2) => rsp.generated = r.len_delimited()?,
            (field, wt) => r.skip(field, wt)?,
        }
    }
    Ok(rsp)
}

/// Token-by-token decoding can split a multi-byte character across tokens: the incomplete tail
/// is held back and completed by the next token, so the joined text is what the model produced.
#[derive(Default)]
struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::with_capacity(self.pending.len());
        let mut rest = &self.pending[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, tail) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &tail[n..];
                        }
                        None => {
                            rest = tail;
                            break;
                        }
                    }
                }
            }
        }
        let kept = rest.len();
        let start = self.pending.len() - kept;
        self.pending.drain(..start);
        out
    }

    fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

fn code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "unknown code",
    }
}

/// `grpc-message` is percent-encoded UTF-8; malformed escapes are kept as they are, as the
/// gRPC spec asks of decoders.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let hex = |c: u8| (c as char).to_digit(16);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The error of a non-OK `grpc-status`, its kind chosen so overload and timeouts are counted
/// apart from hard failures.
fn status_error(code: &str, message: Option<&str>) -> Option<BackendError> {
    let Ok(code) = code.trim().parse::<u32>() else {
        return Some(protocol(format!("unparseable grpc-status {code:?}")));
    };
    if code == 0 {
        return None;
    }
    let name = code_name(code);
    let text = message.map(percent_decode).unwrap_or_default();
    let message = if text.is_empty() {
        format!("grpc-status {code} ({name}) without a message")
    } else {
        format!("{text} (grpc-status {code} {name})")
    };
    let kind = match code {
        _ if matches!(
            classify(None, message.clone()).kind,
            ErrorKind::ContextLength
        ) =>
        {
            ErrorKind::ContextLength
        }
        3 => ErrorKind::BadRequest,
        4 => ErrorKind::Timeout,
        5 | 12 => ErrorKind::NotFound,
        7 | 16 => ErrorKind::Unauthorized,
        8 => ErrorKind::RateLimited,
        14 => ErrorKind::Overloaded,
        _ => ErrorKind::Server,
    };
    Some(BackendError {
        retryable: matches!(
            kind,
            ErrorKind::RateLimited | ErrorKind::Overloaded | ErrorKind::Timeout
        ),
        kind,
        message,
        http_status: None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use llmb_plugin_sdk::backend_bindings::llmb::plugin::types::AudioClip;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    fn to_hex(b: &[u8]) -> String {
        b.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The example request of openppl-grpc.md, byte for byte.
    const EXAMPLE_REQUEST: &str = "00 00 00 00 2f 0a 2d 08 07 15 00 00 80 3f
        1a 1e 57 68 61 74 20 69 73 20 74 68 65 20 63 61 70 69 74 61 6c 20 6f 66 20 46 72 61 6e 63 65 3f
        2a 04 08 04 18 01";

    /// The example response stream of openppl-grpc.md, byte for byte.
    const EXAMPLE_STREAM: &str = "
        00 00 00 00 0c 0a 0a 10 07 1a 06 20 50 61 72 69 73
        00 00 00 00 07 0a 05 10 07 1a 01 2c
        00 00 00 00 0a 0a 08 10 07 1a 04 20 74 68 65
        00 00 00 00 10 0a 0e 08 01 10 07 1a 08 20 63 61 70 69 74 61 6c";

    const FAILED_MESSAGE: &str = "00 00 00 00 06 0a 04 08 02 10 07";

    fn ok() -> Headers {
        vec![("grpc-status".into(), "0".into())]
    }

    /// Frames a `Response` as the server does (proto3 defaults left out).
    fn rsp_message(status: u64, id: u64, text: &[u8]) -> Vec<u8> {
        let mut rsp = Vec::new();
        if status != 0 {
            put_tag(&mut rsp, 1, 0);
            put_varint(&mut rsp, status);
        }
        if id != 0 {
            put_tag(&mut rsp, 2, 0);
            put_varint(&mut rsp, id);
        }
        if !text.is_empty() {
            put_len(&mut rsp, 3, text);
        }
        let mut batched = Vec::new();
        put_len(&mut batched, 1, &rsp);
        grpc_frame(&batched)
    }

    fn grpc_frame(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Events reduced to comparable values; delta frames are kept apart because they depend on
    /// where the reads split the body.
    #[derive(Debug, Default, PartialEq)]
    struct Outcome {
        deltas: Vec<(String, Option<u32>)>,
        finish: Option<String>,
        usage: Option<(Option<u32>, Option<u32>, Option<u32>)>,
        errors: Vec<(ErrorKind, String)>,
        done: usize,
    }

    impl Outcome {
        fn text(&self) -> String {
            self.deltas.iter().map(|d| d.0.as_str()).collect()
        }

        fn tokens(&self) -> u32 {
            self.deltas.iter().filter_map(|d| d.1).sum()
        }
    }

    fn batch_of(chunks: &[&[u8]]) -> FrameBatch {
        let mut data = Vec::new();
        let mut frames = Vec::new();
        for c in chunks {
            frames.push(FrameSpan {
                start: data.len() as u32,
                len: c.len() as u32,
                event: None,
            });
            data.extend_from_slice(c);
        }
        FrameBatch { data, frames }
    }

    /// Feeds `chunks` as raw frames: each in its own batch (one read each) or all in one batch
    /// (one read completing several chunks). Returns the outcome and each delta's chunk index.
    fn run_with(
        headers: Headers,
        chunks: &[&[u8]],
        one_batch: bool,
        trailers: Headers,
    ) -> (Outcome, Vec<u32>) {
        let parser = Parser::new(200, headers);
        let mut out = Outcome::default();
        let mut frames = Vec::new();
        if one_batch {
            collect(parser.feed(batch_of(chunks)), 0, &mut out, &mut frames);
        } else {
            for (i, c) in chunks.iter().enumerate() {
                collect(parser.feed(batch_of(&[c])), i as u32, &mut out, &mut frames);
            }
        }
        collect(parser.finish(trailers), 0, &mut out, &mut frames);
        (out, frames)
    }

    fn grpc_headers() -> Headers {
        vec![("content-type".into(), "application/grpc".into())]
    }

    fn run(chunks: &[&[u8]], trailers: Headers) -> (Outcome, Vec<u32>) {
        run_with(grpc_headers(), chunks, false, trailers)
    }

    fn collect(events: Vec<StreamEvent>, base: u32, out: &mut Outcome, frames: &mut Vec<u32>) {
        for e in events {
            match e {
                StreamEvent::Delta(d) => {
                    assert!(d.reasoning.is_empty() && d.index == 0);
                    frames.push(base + d.frame);
                    out.deltas.push((d.text, d.tokens));
                }
                StreamEvent::Finish(r) => out.finish = Some(r),
                StreamEvent::Usage(u) => {
                    out.usage = Some((u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens))
                }
                StreamEvent::Error(e) => out.errors.push((e.kind, e.message)),
                StreamEvent::Done => out.done += 1,
            }
        }
    }

    /// Byte offsets just past each gRPC message of a well-formed stream prefix.
    fn message_ends(body: &[u8]) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut pos = 0;
        while body.len() - pos >= 5 {
            let len = u32::from_be_bytes(body[pos + 1..pos + 5].try_into().unwrap()) as usize;
            if body.len() - pos - 5 < len {
                break;
            }
            pos += 5 + len;
            ends.push(pos);
        }
        ends
    }

    /// Same events whatever the read boundaries (every two-way split, one byte per chunk, each
    /// chunk its own batch or all in one batch), and when every message yields one delta, each
    /// delta is stamped with the chunk holding its message's last byte.
    fn assert_split_invariant(body: &[u8], trailers: Headers) -> Outcome {
        let (whole, _) = run(&[body], trailers.clone());
        let ends = message_ends(body);
        let check_frames = ends.len() == whole.deltas.len();
        for one_batch in [false, true] {
            for k in 0..=body.len() {
                let (a, b) = body.split_at(k);
                let (out, frames) = run_with(grpc_headers(), &[a, b], one_batch, trailers.clone());
                assert_eq!(out, whole, "split at byte {k}, one batch: {one_batch}");
                if check_frames {
                    let want: Vec<u32> = ends.iter().map(|&e| u32::from(e > k)).collect();
                    assert_eq!(frames, want, "frames, split at byte {k}");
                }
            }
            let bytes: Vec<&[u8]> = body.chunks(1).collect();
            let (out, frames) = run_with(grpc_headers(), &bytes, one_batch, trailers.clone());
            assert_eq!(out, whole, "one byte per chunk, one batch: {one_batch}");
            if check_frames {
                let want: Vec<u32> = ends.iter().map(|&e| e as u32 - 1).collect();
                assert_eq!(frames, want, "frames, one byte per chunk");
            }
        }
        whole
    }

    fn request(id: u64, prompt: Prompt, temperature: Option<f32>) -> GenRequest {
        GenRequest {
            id,
            model: "m".into(),
            prompt,
            max_tokens: 4,
            ignore_eos: true,
            streaming: true,
            include_usage: true,
            temperature,
            extra_body: None,
        }
    }

    #[test]
    fn encoder_matches_the_example_request() {
        let prompt = Prompt::Text("What is the capital of France?".into());
        let http = Adapter::build_request(request(7, prompt.clone(), Some(1.0))).unwrap();
        assert_eq!(http.body, hex(EXAMPLE_REQUEST));
        assert_eq!(http.body.len(), 52);
        assert_eq!(http.method, "POST");
        assert_eq!(http.path, "/ppl.llm.proto.LLMService/Generation");
        assert_eq!(
            http.headers,
            [
                ("content-type".to_owned(), "application/grpc".to_owned()),
                ("te".to_owned(), "trailers".to_owned())
            ]
        );
        let unspecified = Adapter::build_request(request(7, prompt, None)).unwrap();
        assert_eq!(unspecified.body, hex(EXAMPLE_REQUEST));
    }

    #[test]
    fn simulator_request_bytes() {
        let req = GenRequest {
            max_tokens: 3,
            ..request(3, Prompt::Text("hi".into()), None)
        };
        let http = Adapter::build_request(req).unwrap();
        assert_eq!(
            to_hex(&http.body),
            "00 00 00 00 13 0a 11 08 03 15 00 00 80 3f 1a 02 68 69 2a 04 08 03 18 01"
        );
    }

    #[test]
    fn proto3_defaults_are_left_out() {
        let req = GenRequest {
            max_tokens: 0,
            ignore_eos: false,
            streaming: false,
            ..request(0, Prompt::Text("hi".into()), Some(0.0))
        };
        let http = Adapter::build_request(req).unwrap();
        assert_eq!(to_hex(&http.body), "00 00 00 00 08 0a 06 1a 02 68 69 2a 00");
        let big = encode_request(300, 0.5, "x", 1 << 20, false);
        assert_eq!(
            to_hex(&big),
            "00 00 00 00 13 0a 11 08 ac 02 15 00 00 00 3f 1a 01 78 2a 04 08 80 80 40"
        );
    }

    #[test]
    fn requests_that_cannot_be_sent_are_refused() {
        let text = || Prompt::Text("hi".into());
        let err = Adapter::build_request(GenRequest {
            extra_body: Some("{}".into()),
            ..request(1, text(), None)
        })
        .unwrap_err();
        assert!(
            err.contains("--extra-body") && err.contains("protobuf"),
            "{err}"
        );
        let audio = Prompt::Audio(AudioClip {
            data: vec![1, 2],
            filename: "a.wav".into(),
            reference: None,
            duration_s: None,
        });
        let err = Adapter::build_request(request(1, audio, None)).unwrap_err();
        assert!(err.contains("audio"), "{err}");
        let err =
            Adapter::build_request(request(1, Prompt::Text(String::new()), None)).unwrap_err();
        assert!(err.contains("empty prompt"), "{err}");
    }

    #[test]
    fn chat_prompt_is_joined() {
        let chat = Prompt::Chat(vec![
            ChatMessage {
                role: Role::System,
                content: "Be brief.".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "Hi".into(),
            },
        ]);
        let http = Adapter::build_request(request(1, chat, None)).unwrap();
        assert_eq!(http.body, encode_request(1, 1.0, "Be brief.\nHi", 4, true));
    }

    #[test]
    fn info_and_options() {
        let info = Adapter::info();
        assert_eq!(info.name, "ppl");
        assert_eq!(
            info.description,
            "OpenPPL ppl.llm.serving over gRPC (LLMService/Generation, HTTP/2)"
        );
        assert_eq!(
            info.default_endpoint,
            "/ppl.llm.proto.LLMService/Generation"
        );
        assert!(matches!(info.framing, Framing::Grpc));
        assert!(info.supports_ignore_eos && info.http2);
        assert!(Adapter::configure(Vec::new()).is_ok());
        assert!(
            Adapter::configure(vec![Kv {
                key: "x".into(),
                value: "1".into()
            }])
            .is_err()
        );
    }

    #[test]
    fn example_stream_conformance() {
        let out = assert_split_invariant(&hex(EXAMPLE_STREAM), ok());
        assert_eq!(
            out.deltas,
            [
                (" Paris".to_owned(), Some(1)),
                (",".to_owned(), Some(1)),
                (" the".to_owned(), Some(1)),
                (" capital".to_owned(), Some(1)),
            ]
        );
        assert_eq!(out.tokens(), 4);
        assert_eq!(out.finish.as_deref(), Some("finished"));
        assert_eq!(out.usage, Some((None, Some(4), None)));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
    }

    #[test]
    fn simulator_stream_bytes() {
        let stream = [
            rsp_message(0, 3, b" a"),
            rsp_message(0, 3, b" b"),
            rsp_message(1, 3, b" c"),
        ]
        .concat();
        assert_eq!(
            to_hex(&stream),
            "00 00 00 00 08 0a 06 10 03 1a 02 20 61 \
             00 00 00 00 08 0a 06 10 03 1a 02 20 62 \
             00 00 00 00 0a 0a 08 08 01 10 03 1a 02 20 63"
        );
        let out = assert_split_invariant(&stream, ok());
        assert_eq!(out.text(), " a b c");
        assert_eq!(out.usage, Some((None, Some(3), None)));
        assert_eq!((out.done, out.errors.len()), (1, 0));
    }

    #[test]
    fn failed_request() {
        let out = assert_split_invariant(&hex(FAILED_MESSAGE), ok());
        assert!(out.deltas.is_empty());
        assert_eq!(out.done, 0);
        assert_eq!(
            out.errors,
            [(
                ErrorKind::Server,
                "request failed (status FAILED)".to_owned()
            )]
        );
        let mut body = rsp_message(0, 7, b" Paris");
        body.extend(hex(FAILED_MESSAGE));
        body.extend(rsp_message(1, 7, b" late"));
        let out = assert_split_invariant(&body, ok());
        assert_eq!(out.text(), " Paris");
        assert_eq!((out.done, out.usage), (0, None));
        assert_eq!(out.errors.len(), 1);
    }

    #[test]
    fn non_ok_status_in_trailers() {
        let trailers = |code: &str, msg: &str| -> Headers {
            vec![
                ("grpc-status".into(), code.into()),
                ("grpc-message".into(), msg.into()),
            ]
        };
        let body = rsp_message(0, 7, b" Paris");
        let out = assert_split_invariant(
            &body,
            trailers(
                "14",
                "connect%20failed%3A%20upstream%20%E2%9C%93%20100%25%zz",
            ),
        );
        assert_eq!(out.text(), " Paris");
        assert_eq!(out.done, 0);
        assert_eq!(
            out.errors,
            [(
                ErrorKind::Overloaded,
                "connect failed: upstream \u{2713} 100%%zz (grpc-status 14 UNAVAILABLE)".to_owned()
            )]
        );
        for (code, kind) in [
            ("4", ErrorKind::Timeout),
            ("8", ErrorKind::RateLimited),
            ("3", ErrorKind::BadRequest),
            ("1", ErrorKind::Server),
            ("13", ErrorKind::Server),
        ] {
            let e = status_error(code, Some("x")).unwrap();
            assert_eq!(e.kind, kind, "code {code}");
            assert_eq!(
                e.retryable,
                matches!(
                    kind,
                    ErrorKind::Timeout | ErrorKind::RateLimited | ErrorKind::Overloaded
                )
            );
        }
        let e = status_error("3", Some("prompt exceeds the maximum context length")).unwrap();
        assert_eq!(e.kind, ErrorKind::ContextLength);
        let e = status_error("2", None).unwrap();
        assert_eq!(e.message, "grpc-status 2 (UNKNOWN) without a message");
        assert!(status_error("0", Some("fine")).is_none());
        assert_eq!(status_error("x", None).unwrap().kind, ErrorKind::Protocol);
        let (out, _) = run(&[&hex(EXAMPLE_STREAM)], trailers("13", "boom"));
        assert_eq!((out.done, out.tokens()), (1, 4));
        assert_eq!(out.errors.len(), 1);
    }

    #[test]
    fn trailers_only_failure_arrives_as_headers() {
        let headers = vec![
            ("content-type".into(), "application/grpc".into()),
            ("grpc-status".into(), "14".into()),
            ("grpc-message".into(), "no%20backend".into()),
        ];
        let (out, _) = run_with(headers, &[], false, Vec::new());
        assert_eq!(
            out.errors,
            [(
                ErrorKind::Overloaded,
                "no backend (grpc-status 14 UNAVAILABLE)".to_owned()
            )]
        );
    }

    #[test]
    fn truncated_stream() {
        let body = hex(EXAMPLE_STREAM);
        let cut = message_ends(&body)[2] + 9;
        let out = assert_split_invariant(&body[..cut], ok());
        assert_eq!(out.text(), " Paris, the");
        assert_eq!((out.done, out.finish, out.usage), (0, None, None));
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].0, ErrorKind::Protocol);
        assert!(
            out.errors[0].1.starts_with("stream ended before FINISHED"),
            "{}",
            out.errors[0].1
        );
        let whole_messages = &body[..message_ends(&body)[2]];
        let (out, _) = run(&[whole_messages], Vec::new());
        assert_eq!(
            out.errors,
            [(
                ErrorKind::Protocol,
                "stream ended before FINISHED (and without grpc-status trailers)".to_owned()
            )]
        );
        let (out, _) = run(&[&body], Vec::new());
        assert_eq!(out.done, 1);
        assert_eq!(
            out.errors,
            [(
                ErrorKind::Protocol,
                "the call ended without grpc-status trailers".to_owned()
            )]
        );
    }

    #[test]
    fn compressed_and_invalid_flags_are_refused() {
        let mut body = rsp_message(0, 7, b" Paris");
        let mut compressed = rsp_message(1, 7, b",");
        compressed[0] = 1;
        body.extend(compressed);
        let out = assert_split_invariant(&body, ok());
        assert_eq!(out.text(), " Paris");
        assert_eq!(out.done, 0);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].0, ErrorKind::Protocol);
        assert!(
            out.errors[0].1.contains("compressed"),
            "{}",
            out.errors[0].1
        );
        let out = assert_split_invariant(b"HTTP/1.1 200 OK\r\n\r\n", ok());
        assert!(out.errors[0].1.contains("invalid gRPC message flag 0x48"));
        let (out, _) = run(&[&hex("00 7f ff ff ff 0a")], ok());
        assert!(out.errors[0].1.contains("exceeds"), "{:?}", out.errors);
    }

    #[test]
    fn unknown_fields_are_skipped_and_absent_fields_default() {
        let mut rsp = Vec::new();
        put_tag(&mut rsp, 9, 0);
        put_varint(&mut rsp, 150);
        put_tag(&mut rsp, 10, 1);
        rsp.extend_from_slice(&[1; 8]);
        put_tag(&mut rsp, 11, 5);
        rsp.extend_from_slice(&[2; 4]);
        put_tag(&mut rsp, 12, 3);
        put_tag(&mut rsp, 1, 0);
        put_varint(&mut rsp, 2);
        put_tag(&mut rsp, 13, 3);
        put_tag(&mut rsp, 13, 4);
        put_tag(&mut rsp, 12, 4);
        put_len(&mut rsp, 4, &[0x0a, 0x01, 0x05]);
        put_len(&mut rsp, 200, b"ignored");
        put_tag(&mut rsp, 1, 5);
        rsp.extend_from_slice(&[2, 0, 0, 0]);
        put_tag(&mut rsp, 2, 0);
        put_varint(&mut rsp, 7);
        put_len(&mut rsp, 3, b" Paris");
        let mut batched = Vec::new();
        put_tag(&mut batched, 2, 0);
        put_varint(&mut batched, 5);
        put_len(&mut batched, 15, b"xyz");
        put_len(&mut batched, 1, &rsp);
        put_tag(&mut batched, 3, 1);
        batched.extend_from_slice(&[0; 8]);
        let mut body = grpc_frame(&batched);
        body.extend(grpc_frame(&[]));
        body.extend(grpc_frame(&hex("0a 02 10 07")));
        body.extend(rsp_message(1, 7, b""));
        let out = assert_split_invariant(&body, ok());
        assert_eq!(
            out.deltas,
            [
                (" Paris".to_owned(), Some(1)),
                (String::new(), Some(1)),
                (String::new(), Some(1)),
            ]
        );
        assert_eq!(out.usage, Some((None, Some(3), None)));
        assert_eq!((out.done, out.errors.len()), (1, 0));

        let zero = assert_split_invariant(
            &hex("00 00 00 00 02 0a 00 00 00 00 00 04 0a 02 08 01"),
            ok(),
        );
        assert_eq!(zero.tokens(), 2);
        assert_eq!(zero.done, 1);
        assert!(zero.errors.is_empty());
    }

    #[test]
    fn garbled_messages_fail() {
        for (payload, why) in [
            ("0a 05 10 07", "runs past the end"),
            ("0a 02 10", "runs past the end"),
            ("0a 02 10 ff", "truncated varint"),
            ("0f", "wire type 7"),
            ("0c", "end-group"),
            ("0a 04 63 08 01 6c", "closed by end tag"),
            ("00", "field number 0"),
            (
                "10 ff ff ff ff ff ff ff ff ff ff 01",
                "longer than 10 bytes",
            ),
        ] {
            let body = grpc_frame(&hex(payload));
            let out = assert_split_invariant(&body, ok());
            assert_eq!(out.errors.len(), 1, "{payload}");
            assert_eq!(out.errors[0].0, ErrorKind::Protocol);
            assert!(
                out.errors[0].1.starts_with("malformed BatchedResponse")
                    && out.errors[0].1.contains(why),
                "{payload}: {}",
                out.errors[0].1
            );
        }
    }

    #[test]
    fn responses_for_another_id_fail() {
        let body = [rsp_message(0, 7, b" a"), rsp_message(1, 8, b" b")].concat();
        let out = assert_split_invariant(&body, ok());
        assert_eq!(out.text(), " a");
        assert_eq!(out.errors.len(), 1);
        assert!(out.errors[0].1.contains("id 8"), "{}", out.errors[0].1);
    }

    #[test]
    fn characters_split_across_tokens_are_rejoined() {
        let body = [
            rsp_message(0, 7, b" caf"),
            rsp_message(0, 7, b"\xc3"),
            rsp_message(0, 7, b"\xa9 \xff!\xe2\x9c"),
            rsp_message(1, 7, b"\xe2"),
        ]
        .concat();
        let out = assert_split_invariant(&body, ok());
        let texts: Vec<&str> = out.deltas.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(texts, [" caf", "", "\u{e9} \u{fffd}!", "\u{fffd}\u{fffd}"]);
        assert_eq!(out.tokens(), 4);
    }

    #[test]
    fn non_grpc_content_type_fails() {
        let headers = vec![("content-type".into(), "text/html".into())];
        let (out, _) = run_with(headers.clone(), &[&hex(EXAMPLE_STREAM)], false, ok());
        assert!(out.deltas.is_empty());
        assert_eq!(out.errors.len(), 1);
        assert!(out.errors[0].1.contains("text/html"));
        let (out, _) = run_with(headers, &[], false, ok());
        assert_eq!(out.errors.len(), 1);
    }

    #[test]
    fn whole_bodies_and_http_errors() {
        let e = Adapter::parse_body(200, Vec::new(), hex(EXAMPLE_STREAM)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert!(e.message.contains("only streams"));
        let e = Adapter::map_error(404, Vec::new(), b"Not Found\n".to_vec());
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::NotFound, "Not Found")
        );
        assert_eq!(e.http_status, Some(404));
        let headers = vec![("grpc-message".into(), "invalid%20content-type".into())];
        let e = Adapter::map_error(415, headers, Vec::new());
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert_eq!(e.message, "invalid content-type");
        assert_eq!(e.http_status, Some(415));
        let e = Adapter::map_error(503, Vec::new(), br#"{"error":"busy"}"#.to_vec());
        assert!(e.kind == ErrorKind::Overloaded && e.retryable && e.message == "busy");
        let e = Adapter::map_error(502, Vec::new(), Vec::new());
        assert_eq!(e.message, "HTTP 502 with an empty body");
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            &hex(EXAMPLE_STREAM),
            &hex(FAILED_MESSAGE),
            &rsp_message(1, 8, b" b"),
        ]);
    }
}
