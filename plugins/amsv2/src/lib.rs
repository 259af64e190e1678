//! SenseTime AMSv2, best effort (unverified protocol): no AMSv2 spec, source or client is public,
//! so this speaks the public SenseNova native chat API it is assumed to share:
//! `POST /v1/llm/chat-completions` with `messages` and `max_new_tokens`, the payload wrapped in a
//! top-level `data` object, `choices[].delta` a plain string, usage under `data.usage`, and
//! `data:[DONE]` at the end. Only `data.choices[].delta` and the terminator are confirmed (by
//! client code), so the parser is lenient where the rest may differ: `data:` with or without a
//! space, `delta` as a string or an OpenAI-style object, the `data` wrapper optional, any field
//! missing, usage under `data`, at the top level, in a choice or in a chunk of its own, several
//! JSON lines in one event, raw JSON lines without `data:`, and a stream that ends after its
//! `finish_reason` without `[DONE]`. There is no documented `ignore_eos`, so output lengths
//! cannot be forced.

use std::cell::RefCell;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::{error_message, merge_extra_body};
use llmb_plugin_sdk::openai::classify;
use serde_json::{Map, Value, json};

/// The `amsv2` adapter.
pub struct Adapter;

/// Per-request stream state. `finished` (a non-empty `finish_reason` arrived) lets a stream
/// that then ends without `[DONE]` pass, since that terminator is not confirmed for AMSv2.
#[derive(Default)]
pub struct Parser {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    done: bool,
    failed: bool,
    finished: bool,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// Whether a `code` field signals failure: anything but absent, null, 0, "0", "", "ok" or
/// "success" (SenseTime-style envelopes report success as code 0).
fn failure_code(code: Option<&Value>) -> bool {
    match code {
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => {
            let s = s.trim();
            !(s.is_empty()
                || s == "0"
                || s.eq_ignore_ascii_case("ok")
                || s.eq_ignore_ascii_case("success"))
        }
        _ => false,
    }
}

/// The message and code of whatever error shape a payload carries: `{"error":{...}}` or
/// `{"error":"..."}` (top level or under `data`), a `status` object with a non-zero code, a
/// flat `{"code","message"}` envelope, or an OpenAI-style `{"object":"error",...}`.
fn error_parts(v: &Value) -> Option<(String, Option<&Value>)> {
    let inner = v.get("data").filter(|d| d.is_object());
    for holder in std::iter::once(v).chain(inner) {
        match holder.get("error") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::String(s)) if s.trim().is_empty() => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(Value::String(s)) => return Some((s.clone(), holder.get("code"))),
            Some(Value::Object(o)) => {
                let message = match o.get("message").and_then(Value::as_str) {
                    Some(m) => m.to_owned(),
                    None => Value::Object(o.clone()).to_string(),
                };
                return Some((message, o.get("code")));
            }
            Some(other) => return Some((other.to_string(), holder.get("code"))),
        }
        if let Some(status) = holder.get("status").and_then(Value::as_object)
            && failure_code(status.get("code"))
        {
            let code = status.get("code");
            let message = match status.get("message").and_then(Value::as_str) {
                Some(m) if !m.is_empty() => m.to_owned(),
                _ => format!(
                    "status code {}",
                    code.map(Value::to_string).unwrap_or_default()
                ),
            };
            return Some((message, code));
        }
    }
    let envelope_only = inner.is_none() && v.get("choices").is_none();
    if envelope_only
        && failure_code(v.get("code"))
        && let Some(m) = v.get("message").and_then(Value::as_str)
    {
        return Some((m.to_owned(), v.get("code")));
    }
    if v.get("object").and_then(Value::as_str) == Some("error") {
        return Some((error_message(v)?, v.get("code")));
    }
    None
}

/// Normalizes an error. A numeric code in the HTTP range classifies an in-stream error; the
/// string codes SenseNova clients retry on refine the kind.
fn error(status: Option<u16>, message: String, code: Option<&Value>) -> BackendError {
    let http = status.or_else(|| {
        code.and_then(Value::as_u64)
            .filter(|c| (400..600).contains(c))
            .map(|c| c as u16)
    });
    let mut err = classify(http, message);
    match code.and_then(Value::as_str) {
        Some("rate_limit_exceeded") => {
            err.kind = ErrorKind::RateLimited;
            err.retryable = true;
        }
        Some("context_length_exceeded") => {
            err.kind = ErrorKind::ContextLength;
            err.retryable = false;
        }
        _ => {}
    }
    err.http_status = status;
    err
}

fn http_error(status: u16, body: &[u8]) -> BackendError {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let parts = v
        .as_ref()
        .and_then(|v| error_parts(v).or_else(|| error_message(v).map(|m| (m, None))));
    match parts {
        Some((message, code)) => error(Some(status), message, code),
        None => {
            let raw = String::from_utf8_lossy(&body[..body.len().min(300)])
                .trim()
                .to_owned();
            error(Some(status), raw, None)
        }
    }
}

/// The object holding `choices` and `usage`: SenseNova wraps it in `data`, an OpenAI-style
/// server would not.
fn payload_of(v: &Value) -> &Value {
    v.get("data").filter(|d| d.is_object()).unwrap_or(v)
}

/// A choice's text and reasoning: `delta` (stream), `message` (whole body) or `text`, each as a
/// plain string or an object with `content` and `reasoning_content`/`reasoning`.
fn choice_text(choice: &Value) -> (String, String) {
    let part = ["delta", "message", "text"]
        .iter()
        .find_map(|k| choice.get(*k).filter(|p| !p.is_null()));
    let field = |o: &Map<String, Value>, k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match part {
        Some(Value::String(s)) => (s.clone(), String::new()),
        Some(Value::Object(o)) => {
            let reasoning = match field(o, "reasoning_content") {
                r if r.is_empty() => field(o, "reasoning"),
                r => r,
            };
            (field(o, "content"), reasoning)
        }
        _ => (String::new(), String::new()),
    }
}

/// A finish reason, with SenseNova's empty string (and a literal "null") meaning "not yet".
fn finish_reason(choice: &Value) -> Option<&str> {
    choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty() && *r != "null")
}

/// Usage from `data.usage`, a top-level `usage` or the first choice's `usage`.
fn usage_of(v: &Value) -> Option<Usage> {
    let payload = payload_of(v);
    let first_choice = payload
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("usage"));
    let u = [payload.get("usage"), v.get("usage"), first_choice]
        .into_iter()
        .flatten()
        .find_map(Value::as_object)?;
    let count = |k: &str| {
        u.get(k)
            .and_then(Value::as_u64)
            .map(|n| n.min(u32::MAX as u64) as u32)
    };
    let usage = Usage {
        reasoning_tokens: None,
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        cached_prompt_tokens: u
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .map(|n| n.min(u32::MAX as u64) as u32),
    };
    (usage.prompt_tokens.is_some() || usage.completion_tokens.is_some()).then_some(usage)
}

impl State {
    /// One frame. A frame named like the start of a JSON value is a raw JSON line the server sent
    /// without `data:` (the host's SSE framer took the text before its first colon for a field
    /// name), so it is put back together.
    fn frame(
        &mut self,
        frame: u32,
        name: Option<&str>,
        data: &[u8],
        events: &mut Vec<StreamEvent>,
    ) {
        if self.done || self.failed {
            return;
        }
        let joined;
        let data = match name {
            Some(n) if n.starts_with('{') => {
                joined = [n.as_bytes(), b":", data].concat();
                &joined[..]
            }
            Some("error") => {
                let v: Option<Value> = serde_json::from_slice(data).ok();
                let (message, code) = match v
                    .as_ref()
                    .and_then(|v| error_parts(v).or_else(|| error_message(v).map(|m| (m, None))))
                {
                    Some(parts) => parts,
                    None => (String::from_utf8_lossy(data).trim().to_owned(), None),
                };
                self.fail(error(None, message, code), events);
                return;
            }
            _ => data,
        };
        let data = data.trim_ascii();
        if data.is_empty() {
            return;
        }
        if data == b"[DONE]" {
            self.done = true;
            events.push(StreamEvent::Done);
            return;
        }
        match serde_json::from_slice::<Value>(data) {
            Ok(v) => self.payload(frame, &v, events),
            Err(_) if data.contains(&b'\n') => {
                for line in data.split(|&b| b == b'\n') {
                    self.frame(frame, None, line, events);
                }
            }
            Err(e) => {
                let shown = String::from_utf8_lossy(&data[..data.len().min(120)]);
                self.fail(
                    protocol(format!("malformed AMSv2 stream chunk ({e}): {shown}")),
                    events,
                );
            }
        }
    }

    /// A chunk: an error, or deltas for choices with text, finish reasons and usage. Chunks whose
    /// choices carry no text are not deltas: SenseNova's first token is the first non-empty
    /// `delta`.
    fn payload(&mut self, frame: u32, v: &Value, events: &mut Vec<StreamEvent>) {
        if let Some((message, code)) = error_parts(v) {
            self.fail(error(None, message, code), events);
            return;
        }
        let payload = payload_of(v);
        let choices = payload.get("choices").and_then(Value::as_array);
        for (i, choice) in choices.into_iter().flatten().enumerate() {
            let (text, reasoning) = choice_text(choice);
            if !text.is_empty() || !reasoning.is_empty() {
                events.push(StreamEvent::Delta(Delta {
                    frame,
                    text,
                    reasoning,
                    tokens: None,
                    index: (choice.get("index").and_then(Value::as_u64))
                        .map_or(i as u32, |n| n as u32),
                }));
            }
            if let Some(reason) = finish_reason(choice) {
                if reason == "error" || reason == "abort" {
                    self.fail(
                        BackendError {
                            kind: ErrorKind::Server,
                            message: format!(
                                "the server ended the stream with finish_reason {reason:?}"
                            ),
                            http_status: None,
                            retryable: false,
                        },
                        events,
                    );
                    return;
                }
                self.finished = true;
                events.push(StreamEvent::Finish(reason.to_owned()));
            }
        }
        if let Some(usage) = usage_of(v) {
            events.push(StreamEvent::Usage(usage));
        }
    }

    fn fail(&mut self, err: BackendError, events: &mut Vec<StreamEvent>) {
        self.failed = true;
        events.push(StreamEvent::Error(err));
    }
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "amsv2".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "SenseTime AMSv2, best effort (unverified protocol): SenseNova-style POST /v1/llm/chat-completions (messages, max_new_tokens, data-wrapped chunks with a string delta, data:[DONE]); lenient parser; no ignore_eos, output lengths cannot be forced".into(),
            default_endpoint: "/v1/llm/chat-completions".into(),
            framing: Framing::Sse,
            supports_ignore_eos: false,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        match options.first() {
            Some(kv) => Err(format!(
                "the amsv2 adapter takes no options (got {:?})",
                kv.key
            )),
            None => Ok(()),
        }
    }

    /// Only documented fields are sent (a SenseNova gateway rejects unknown ones): no
    /// `ignore_eos`, no `stream_options`. The temperature goes through as given, even 0, which
    /// public SenseNova documents as out of range: whether AMSv2 shares that limit is unknown,
    /// and its error message says more than a silently changed value would.
    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let messages: Vec<Value> = match &req.prompt {
            Prompt::Text(t) => vec![json!({"role": "user", "content": t})],
            Prompt::Chat(messages) => messages
                .iter()
                .map(|m| json!({"role": role_name(m.role), "content": m.content}))
                .collect(),
            Prompt::Audio(_) => {
                return Err(llmb_plugin_sdk::openai::AUDIO_NOT_SUPPORTED.into());
            }
            Prompt::Multimodal(_) => {
                return Err(llmb_plugin_sdk::media::IMAGES_NOT_SUPPORTED.into());
            }
        };
        let mut body = json!({
            "model": req.model,
            "messages": messages,
            "max_new_tokens": req.max_tokens,
            "stream": req.streaming,
        });
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
        merge_extra_body(&mut body, req.extra_body.as_deref())?;
        Ok(HttpRequest {
            method: "POST".into(),
            path: "/v1/llm/chat-completions".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
        })
    }

    /// `data.choices[0].message` (a string in SenseNova, an object in OpenAI style), its
    /// `finish_reason`, and usage wherever it is.
    fn parse_body(
        status: u16,
        _headers: Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| protocol(format!("response body is not JSON: {e}")))?;
        if error_parts(&v).is_some() {
            return Err(http_error(status, &body));
        }
        let choice = payload_of(&v).get("choices").and_then(|c| c.get(0));
        let Some(choice) = choice else {
            let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
            return Err(protocol(format!("AMSv2 response without choices: {shown}")));
        };
        Ok(Completion {
            reasoning: String::new(),
            text: choice_text(choice).0,
            finish: finish_reason(choice).map(str::to_owned),
            usage: usage_of(&v),
        })
    }

    fn map_error(status: u16, _headers: Headers, body: Vec<u8>) -> BackendError {
        http_error(status, &body)
    }

    fn tokenize_request(_req: GenRequest) -> Option<HttpRequest> {
        None
    }

    fn parse_tokenize(_body: Vec<u8>) -> Result<u32, String> {
        Err(llmb_plugin_sdk::tokenize::NO_ROUTE.into())
    }
}

impl GuestResponseParser for Parser {
    fn new(_status: u16, _headers: Headers) -> Self {
        Self::default()
    }

    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        let mut events = Vec::with_capacity(batch.len() + 2);
        for (frame, name, data) in batch.iter() {
            state.frame(frame, name, data, &mut events);
        }
        events
    }

    /// A stream without `[DONE]` fails unless a finish reason already ended it.
    fn finish(&self, _trailers: Headers) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        if state.done || state.failed || state.finished {
            return Vec::new();
        }
        state.failed = true;
        vec![StreamEvent::Error(protocol(
            "the AMSv2 stream ended before a finish_reason or `data:[DONE]`".into(),
        ))]
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;

    /// The SenseNova native stream skeleton of sensetime.md, byte for byte.
    const TRANSCRIPT: &[u8] = b"data:{\"data\":{\"id\":\"4b44b7a8c3e94a0b8d7f2c1e5a6b9d0f\",\"choices\":[{\"index\":0,\"delta\":\"The\",\"finish_reason\":\"\"}]}}\n\ndata:{\"data\":{\"id\":\"4b44b7a8c3e94a0b8d7f2c1e5a6b9d0f\",\"choices\":[{\"index\":0,\"delta\":\" capital\",\"finish_reason\":\"\"}]}}\n\ndata:{\"data\":{\"id\":\"4b44b7a8c3e94a0b8d7f2c1e5a6b9d0f\",\"choices\":[{\"index\":0,\"delta\":\" is Paris.\",\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":5,\"total_tokens\":19}}}\n\ndata:[DONE]\n\n";

    /// The short stream given to the simulator, in the skeleton's layout.
    const SIM_STREAM: &[u8] = b"data:{\"data\":{\"id\":\"sim-1\",\"choices\":[{\"index\":0,\"delta\":\" a\",\"finish_reason\":\"\"}]}}\n\ndata:{\"data\":{\"id\":\"sim-1\",\"choices\":[{\"index\":0,\"delta\":\" b\",\"finish_reason\":\"\"}]}}\n\ndata:{\"data\":{\"id\":\"sim-1\",\"choices\":[{\"index\":0,\"delta\":\" c\",\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}}\n\ndata:[DONE]\n\n";

    use llmb_plugin_sdk::testing::Outcome;

    /// Frames `chunks` as the host does (one batch per read) and feeds one parser.
    fn run(chunks: &[&[u8]]) -> Outcome {
        llmb_plugin_sdk::testing::run(Parser::new(200, Vec::new()), chunks)
    }

    /// Same events whatever the read boundaries: every two-way split and one byte per read.
    fn assert_split_invariant(body: &[u8]) -> Outcome {
        llmb_plugin_sdk::testing::assert_split_invariant(|| Parser::new(200, Vec::new()), body)
    }

    fn request(req: impl FnOnce(&mut GenRequest)) -> Result<(String, Value), String> {
        let mut r = GenRequest {
            id: 1,
            model: "SenseChat-5".into(),
            prompt: Prompt::Text("What is the capital of France?".into()),
            max_tokens: 4,
            ignore_eos: true,
            streaming: true,
            include_usage: true,
            temperature: None,
            extra_body: None,
        };
        req(&mut r);
        let http = Adapter::build_request(r)?;
        assert_eq!(http.method, "POST");
        Ok((http.path, serde_json::from_slice(&http.body).unwrap()))
    }

    #[test]
    fn transcript_conformance() {
        let out = assert_split_invariant(TRANSCRIPT);
        let texts: Vec<&str> = out.deltas.iter().map(|d| d.1.as_str()).collect();
        assert_eq!(texts, ["The", " capital", " is Paris."]);
        assert_eq!(
            out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(out.deltas.iter().all(|d| d.2.is_none()));
        assert_eq!(out.finish.as_deref(), Some("stop"));
        assert_eq!(out.usage, Some((Some(14), Some(5), None)));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn simulator_stream() {
        let out = assert_split_invariant(SIM_STREAM);
        assert_eq!(out.text(), " a b c");
        assert_eq!(out.deltas.len(), 3);
        assert_eq!(out.finish.as_deref(), Some("stop"));
        assert_eq!(out.usage, Some((Some(5), Some(3), None)));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn tolerated_variants() {
        let body = b": keep-alive\n\ndata: {\"data\":{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}}\n\ndata: {\"data\":{\"choices\":[{\"delta\":{\"reasoning_content\":\"Hmm.\"}}]}}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" a\"},\"finish_reason\":null}]}\n\ndata: {\"data\":{\"choices\":[{\"delta\":\" b\"}]},\"status\":{\"code\":0,\"message\":\"ok\"}}\n\ndata: {\"data\":{\"choices\":[{\"index\":0,\"delta\":\"\",\"finish_reason\":\"length\"}]}}\n\ndata: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\ndata: [DONE]\n\n";
        let out = assert_split_invariant(body);
        assert_eq!(
            out.deltas,
            [
                (1, String::new(), None),
                (2, " a".into(), None),
                (3, " b".into(), None)
            ]
        );
        assert_eq!(out.reasoning, "Hmm.");
        assert_eq!(out.finish.as_deref(), Some("length"));
        assert_eq!(out.usage, Some((Some(5), Some(2), Some(4))));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn lines_without_blank_lines_and_no_done() {
        let body = b"data:{\"data\":{\"choices\":[{\"delta\":\" a\"}]}}\ndata:{\"data\":{\"choices\":[{\"delta\":\" b\"}]}}\ndata:{\"data\":{\"choices\":[{\"delta\":\" c\",\"finish_reason\":\"stop\"}],\"usage\":{\"completion_tokens\":3}}}\n";
        let out = assert_split_invariant(body);
        assert_eq!(out.text(), " a b c");
        assert_eq!(
            out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
            [0, 0, 0]
        );
        assert_eq!(out.finish.as_deref(), Some("stop"));
        assert_eq!(out.usage, Some((None, Some(3), None)));
        assert_eq!(out.done, 0);
        assert!(out.errors.is_empty());
        let raw = b"{\"data\":{\"choices\":[{\"delta\":\" a\"}]}}\n\n{\"data\": {\"choices\":[{\"delta\":\" b\",\"finish_reason\":\"stop\"}]}}\n\ndata:[DONE]\n\n";
        let out = assert_split_invariant(raw);
        assert_eq!(out.text(), " a b");
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn request_body() {
        let (path, v) = request(|_| {}).unwrap();
        assert_eq!(path, "/v1/llm/chat-completions");
        assert_eq!(
            v,
            json!({
                "model": "SenseChat-5",
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_new_tokens": 4,
                "stream": true,
            })
        );
        let (path, v) = request(|r| {
            r.streaming = false;
            r.temperature = Some(0.5);
            r.prompt = Prompt::Chat(vec![
                ChatMessage {
                    role: Role::System,
                    content: "Be brief.".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "Hi".into(),
                },
            ]);
            r.extra_body = Some(r#"{"top_p":0.7,"max_new_tokens":8,"know_ids":[]}"#.into());
        })
        .unwrap();
        assert_eq!(path, "/v1/llm/chat-completions");
        assert_eq!(v["stream"], false);
        assert_eq!(v["temperature"], 0.5);
        assert_eq!(v["top_p"], 0.7);
        assert_eq!(v["max_new_tokens"], 8);
        assert_eq!(v["know_ids"], json!([]));
        assert_eq!(
            v["messages"],
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
        );
        assert!(v.get("max_tokens").is_none() && v.get("ignore_eos").is_none());
        assert!(request(|r| r.extra_body = Some("null".into())).is_err());
        let info = Adapter::info();
        assert!(!info.supports_ignore_eos);
        assert!(
            info.description
                .contains("best effort (unverified protocol)")
        );
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
    fn in_stream_errors_fail_the_request() {
        let head = b"data:{\"data\":{\"choices\":[{\"index\":0,\"delta\":\"The\",\"finish_reason\":\"\"}]}}\n\n";
        let cases: [(&[u8], ErrorKind, &str); 5] = [
            (
                b"data:{\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit reached\"}}\n\ndata:[DONE]\n\n",
                ErrorKind::RateLimited,
                "Rate limit reached",
            ),
            (
                b"data:{\"data\":{\"choices\":[]},\"status\":{\"code\":18,\"message\":\"internal error\"}}\n\n",
                ErrorKind::Unknown,
                "internal error",
            ),
            (
                b"data:{\"code\":503,\"message\":\"server busy\"}\n\n",
                ErrorKind::Overloaded,
                "server busy",
            ),
            (
                b"{\"error\":{\"message\":\"model crashed\",\"code\":500}}\n\n",
                ErrorKind::Server,
                "model crashed",
            ),
            (
                b"data:{\"data\":{\"choices\":[{\"delta\":\"\",\"finish_reason\":\"error\"}]}}\n\n",
                ErrorKind::Server,
                "the server ended the stream with finish_reason \"error\"",
            ),
        ];
        for (tail, kind, message) in cases {
            let out = assert_split_invariant(&[&head[..], tail].concat());
            assert_eq!(out.text(), "The");
            assert_eq!((out.done, out.finish), (0, None));
            assert_eq!(out.errors, [(kind, message.to_owned())]);
        }
    }

    #[test]
    fn http_errors_carry_the_server_message() {
        let e = Adapter::map_error(
            400,
            Vec::new(),
            br#"{"error":{"code":17,"message":"max_new_tokens out of range","details":[]}}"#
                .to_vec(),
        );
        assert_eq!(e.message, "max_new_tokens out of range");
        assert_eq!(e.http_status, Some(400));
        assert!(matches!(e.kind, ErrorKind::BadRequest));
        let e = Adapter::map_error(
            400,
            Vec::new(),
            br#"{"error":{"code":"rate_limit_exceeded","message":"Too many requests"}}"#.to_vec(),
        );
        assert!(matches!(e.kind, ErrorKind::RateLimited) && e.retryable);
        let e = Adapter::map_error(
            400,
            Vec::new(),
            br#"{"error":{"message":"Errors in message queue response","type":"invalid_request_error","code":"3"}}"#.to_vec(),
        );
        assert_eq!(e.message, "Errors in message queue response");
        let e = Adapter::map_error(
            500,
            Vec::new(),
            br#"{"code":10001,"message":"inference backend unavailable"}"#.to_vec(),
        );
        assert_eq!(e.message, "inference backend unavailable");
        assert!(matches!(e.kind, ErrorKind::Server));
        let e = Adapter::map_error(401, Vec::new(), Vec::new());
        assert!(matches!(e.kind, ErrorKind::Unauthorized));
        assert_eq!(e.message, "HTTP 401 with an empty body");
        let e = Adapter::map_error(502, Vec::new(), b"Bad Gateway".to_vec());
        assert_eq!(e.message, "Bad Gateway");
    }

    #[test]
    fn truncated_stream_fails_at_finish() {
        let last = b"data:{\"data\":{\"id\":\"4b44b7a8c3e94a0b8d7f2c1e5a6b9d0f\",\"choices\":[{\"index\":0,\"delta\":\" is";
        let cut = TRANSCRIPT
            .windows(last.len())
            .position(|w| w == last)
            .unwrap();
        let out = assert_split_invariant(&TRANSCRIPT[..cut]);
        assert_eq!(out.text(), "The capital");
        assert_eq!((out.done, out.finish, out.usage), (0, None, None));
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        assert!(out.errors[0].1.contains("ended before"));
        let out = run(&[&TRANSCRIPT[..cut + 60]]);
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        let without_done = &TRANSCRIPT[..TRANSCRIPT.len() - b"data:[DONE]\n\n".len()];
        let out = assert_split_invariant(without_done);
        assert_eq!(out.text(), "The capital is Paris.");
        assert_eq!((out.done, out.errors.len()), (0, 0));
    }

    #[test]
    fn non_streaming_bodies() {
        let body = br#"{"data":{"id":"4b44b7a8c3e94a0b8d7f2c1e5a6b9d0f","choices":[{"index":0,"role":"assistant","message":"The capital is Paris.","finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":5,"total_tokens":19}}}"#;
        let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
        assert_eq!(c.text, "The capital is Paris.");
        assert_eq!(c.finish.as_deref(), Some("stop"));
        let u = c.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(14), Some(5)));
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":" a b c"},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#;
        let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
        assert_eq!(
            (c.text.as_str(), c.finish.as_deref()),
            (" a b c", Some("length"))
        );
        assert_eq!(c.usage.unwrap().completion_tokens, Some(3));
        let e = Adapter::parse_body(
            200,
            Vec::new(),
            br#"{"data":null,"error":{"code":"insufficient_quota","message":"quota exhausted"}}"#
                .to_vec(),
        )
        .unwrap_err();
        assert_eq!(e.message, "quota exhausted");
        let e = Adapter::parse_body(200, Vec::new(), br#"{"data":{}}"#.to_vec()).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Protocol));
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            TRANSCRIPT,
            SIM_STREAM,
            br#"{"data":{"id":"4b","choices":[{"index":0,"role":"assistant","message":"The capital is Paris.","finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":5,"total_tokens":19}}}"#,
            br#"{"choices":[{"index":0,"message":{"role":"assistant","content":" a b c"},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#,
        ]);
    }
}
