//! SGLang's native `POST /generate`: SSE `data: ` events whose `text` is cumulative (the whole
//! output so far), running counts in `meta_info`, a `finish_reason` object on the last event and
//! `data: [DONE]` at the end. `sampling_params.ignore_eos` forces output lengths.

use std::borrow::Cow;
use std::cell::RefCell;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::{error_message, merge_extra_body};
use llmb_plugin_sdk::openai::prompt_text;
use llmb_plugin_sdk::openai::{classify, map_error};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

/// The `sglang` adapter.
pub struct Adapter;

/// Per-request stream state: the output so far (to turn cumulative `text` into deltas), the
/// running `completion_tokens`, and whether `[DONE]` arrived.
#[derive(Default)]
pub struct Parser {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    text: String,
    tokens: u32,
    done: bool,
    failed: bool,
}

/// One stream event or a whole non-streaming body.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    text: Cow<'a, str>,
    output_ids: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    meta_info: Meta,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct Meta {
    /// `{"type":"length"|"stop"|"abort", ...}`, null until the last event.
    finish_reason: Option<Value>,
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    cached_tokens: Option<u32>,
}

impl Meta {
    /// The finish reason's `type`, or the error an `abort` stands for.
    fn finish(&self) -> Option<Result<String, BackendError>> {
        let reason = self.finish_reason.as_ref().filter(|r| !r.is_null())?;
        let kind = reason.get("type").or(Some(reason)).and_then(Value::as_str);
        Some(match kind {
            Some("abort") => Err(BackendError {
                kind: ErrorKind::Server,
                message: match reason.get("message").and_then(Value::as_str) {
                    Some(m) => format!("SGLang aborted the request: {m}"),
                    None => "SGLang aborted the request".into(),
                },
                http_status: None,
                retryable: false,
            }),
            Some(k) => Ok(k.to_owned()),
            None => Ok(reason.to_string()),
        })
    }

    fn usage(&self) -> Usage {
        Usage {
            reasoning_tokens: None,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_prompt_tokens: self.cached_tokens,
        }
    }
}

/// `data: {"error":{"message":..}}`: the response itself was a 200, so no HTTP status.
fn stream_error(data: &[u8]) -> BackendError {
    let v: Option<Value> = serde_json::from_slice(data).ok();
    let message = v.as_ref().and_then(error_message).unwrap_or_else(|| {
        String::from_utf8_lossy(&data[..data.len().min(300)])
            .trim()
            .to_owned()
    });
    let code = v.as_ref().and_then(|v| {
        let code = v.get("error").and_then(|e| e.get("code")).or(v.get("code"));
        code?.as_u64().and_then(|c| u16::try_from(c).ok())
    });
    let mut err = classify(code, message);
    err.http_status = None;
    err
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "sglang".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "SGLang native POST /generate (cumulative text, meta_info token counts, sampling_params.ignore_eos)".into(),
            default_endpoint: "/generate".into(),
            framing: Framing::Sse,
            supports_ignore_eos: true,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        match options.first() {
            Some(kv) => Err(format!(
                "the sglang adapter takes no options (got {:?})",
                kv.key
            )),
            None => Ok(()),
        }
    }

    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let mut sampling =
            json!({ "max_new_tokens": req.max_tokens, "ignore_eos": req.ignore_eos });
        if let Some(t) = req.temperature {
            sampling["temperature"] = json!(t);
        }
        let mut body = json!({
            "text": prompt_text(&req.prompt)?,
            "sampling_params": sampling,
            "stream": req.streaming,
        });
        merge_extra_body(&mut body, req.extra_body.as_deref())?;
        Ok(HttpRequest {
            method: "POST".into(),
            path: "/generate".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
        })
    }

    fn parse_body(
        status: u16,
        _headers: Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        let ev: Event = serde_json::from_slice(&body)
            .map_err(|e| protocol(format!("unexpected SGLang response body: {e}")))?;
        if ev.error.is_some() {
            return Err(map_error(status, &body));
        }
        Ok(Completion {
            reasoning: String::new(),
            finish: ev.meta_info.finish().transpose()?,
            usage: Some(ev.meta_info.usage()),
            text: ev.text.into_owned(),
        })
    }

    fn map_error(status: u16, _headers: Headers, body: Vec<u8>) -> BackendError {
        map_error(status, &body)
    }

    fn tokenize_request(req: GenRequest) -> Option<HttpRequest> {
        let text = prompt_text(&req.prompt).ok()?;
        Some(llmb_plugin_sdk::tokenize::json_request(
            "/tokenize",
            &json!({ "model": req.model, "prompt": text }),
        ))
    }

    fn parse_tokenize(body: Vec<u8>) -> Result<u32, String> {
        llmb_plugin_sdk::tokenize::count_from_body(&body)
    }
}

impl GuestResponseParser for Parser {
    fn new(_status: u16, _headers: Headers) -> Self {
        Self::default()
    }

    /// An event is a delta when its text grew or `completion_tokens` rose (several tokens may
    /// share one event). Text that does not extend the output so far, or `output_ids` shorter
    /// than `completion_tokens`, means the server streams increments
    /// (`--incremental-streaming-output`): then the text is taken whole.
    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        let mut events = Vec::with_capacity(batch.len() + 3);
        for (frame, _event, data) in batch.iter() {
            let data = data.trim_ascii();
            if state.done || state.failed || data.is_empty() {
                continue;
            }
            if data == b"[DONE]" {
                state.done = true;
                events.push(StreamEvent::Done);
                continue;
            }
            let ev: Event = match serde_json::from_slice(data) {
                Ok(ev) => ev,
                Err(e) => {
                    let shown = String::from_utf8_lossy(&data[..data.len().min(120)]);
                    state.failed = true;
                    events.push(StreamEvent::Error(protocol(format!(
                        "malformed SGLang stream event ({e}): {shown}"
                    ))));
                    continue;
                }
            };
            if ev.error.is_some() {
                state.failed = true;
                events.push(StreamEvent::Error(stream_error(data)));
                continue;
            }
            let total = ev.meta_info.completion_tokens;
            let cumulative = match (&ev.output_ids, total) {
                (Some(ids), Some(n)) => ids.len() == n as usize,
                _ => true,
            };
            let new = match ev.text.strip_prefix(state.text.as_str()) {
                Some(rest) if cumulative => rest,
                _ => &ev.text,
            };
            let tokens = total.map(|n| n.saturating_sub(state.tokens));
            if !new.is_empty() || tokens.unwrap_or(0) > 0 {
                let text = new.to_owned();
                state.text.push_str(&text);
                events.push(StreamEvent::Delta(Delta {
                    frame,
                    text,
                    reasoning: String::new(),
                    tokens,
                    index: 0,
                }));
            }
            state.tokens = state.tokens.max(total.unwrap_or(0));
            match ev.meta_info.finish() {
                Some(Ok(reason)) => {
                    events.push(StreamEvent::Finish(reason));
                    events.push(StreamEvent::Usage(ev.meta_info.usage()));
                }
                Some(Err(err)) => {
                    state.failed = true;
                    events.push(StreamEvent::Error(err));
                }
                None => {}
            }
        }
        events
    }

    fn finish(&self, _trailers: Headers) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        if state.done || state.failed {
            return Vec::new();
        }
        state.failed = true;
        vec![StreamEvent::Error(protocol(
            "the SGLang stream ended before `data: [DONE]`".into(),
        ))]
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;

    /// The native `/generate` stream transcript of sglang.md (cumulative mode), byte for byte.
    const TRANSCRIPT: &[u8] = b"data: {\"text\":\" Paris\",\"output_ids\":[12366],\"meta_info\":{\"id\":\"2f6c0a8e1b7d4c3a9e5f\",\"finish_reason\":null,\"prompt_tokens\":8,\"completion_tokens\":1,\"cached_tokens\":0}}\n\ndata: {\"text\":\" Paris,\",\"output_ids\":[12366,11],\"meta_info\":{\"id\":\"2f6c0a8e1b7d4c3a9e5f\",\"finish_reason\":null,\"prompt_tokens\":8,\"completion_tokens\":2,\"cached_tokens\":0}}\n\ndata: {\"text\":\" Paris, the\",\"output_ids\":[12366,11,279],\"meta_info\":{\"id\":\"2f6c0a8e1b7d4c3a9e5f\",\"finish_reason\":null,\"prompt_tokens\":8,\"completion_tokens\":3,\"cached_tokens\":0}}\n\ndata: {\"text\":\" Paris, the capital\",\"output_ids\":[12366,11,279,6864],\"meta_info\":{\"id\":\"2f6c0a8e1b7d4c3a9e5f\",\"finish_reason\":{\"type\":\"length\",\"length\":4},\"prompt_tokens\":8,\"completion_tokens\":4,\"cached_tokens\":0,\"e2e_latency\":0.0712}}\n\ndata: [DONE]\n\n";

    use llmb_plugin_sdk::testing::Outcome;

    /// Same events whatever the read boundaries: every two-way split and one byte per read.
    fn assert_split_invariant(body: &[u8]) -> Outcome {
        llmb_plugin_sdk::testing::assert_split_invariant(|| Parser::new(200, Vec::new()), body)
    }

    fn request(req: impl FnOnce(&mut GenRequest)) -> Result<(String, Value), String> {
        let mut r = GenRequest {
            id: 1,
            model: "m".into(),
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
        assert_eq!(texts, [" Paris", ",", " the", " capital"]);
        assert_eq!(
            out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(out.deltas.iter().all(|d| d.2 == Some(1)));
        assert_eq!(out.finish.as_deref(), Some("length"));
        assert_eq!(out.usage, Some((Some(8), Some(4), Some(0))));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn several_tokens_per_event_and_unchanged_text() {
        let body = "data: {\"text\":\"\",\"output_ids\":[128000],\"meta_info\":{\"finish_reason\":null,\"prompt_tokens\":8,\"completion_tokens\":1}}\n\ndata: {\"text\":\"Caf\u{e9} \u{2615}\",\"output_ids\":[128000,1,2],\"meta_info\":{\"finish_reason\":null,\"prompt_tokens\":8,\"completion_tokens\":3}}\n\ndata: {\"text\":\"Caf\u{e9} \u{2615}\",\"output_ids\":[128000,1,2],\"meta_info\":{\"finish_reason\":{\"type\":\"stop\",\"matched\":128009},\"prompt_tokens\":8,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
        let out = assert_split_invariant(body.as_bytes());
        assert_eq!(out.text(), "Caf\u{e9} \u{2615}");
        assert_eq!(
            out.deltas.iter().map(|d| d.2).collect::<Vec<_>>(),
            [Some(1), Some(2)]
        );
        assert_eq!(out.finish.as_deref(), Some("stop"));
        assert_eq!(out.done, 1);
    }

    #[test]
    fn incremental_output_is_taken_whole() {
        let body = b"data: {\"text\":\"\\n\",\"output_ids\":[198],\"meta_info\":{\"finish_reason\":null,\"prompt_tokens\":8,\"completion_tokens\":1}}\n\ndata: {\"text\":\"\\n\",\"output_ids\":[198],\"meta_info\":{\"finish_reason\":{\"type\":\"length\",\"length\":2},\"prompt_tokens\":8,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let out = assert_split_invariant(body);
        assert_eq!(out.text(), "\n\n");
        assert_eq!(out.tokens(), 2);
    }

    #[test]
    fn request_body() {
        let (path, v) = request(|_| {}).unwrap();
        assert_eq!(path, "/generate");
        assert_eq!(v["text"], "What is the capital of France?");
        assert_eq!(v["stream"], true);
        assert_eq!(v["sampling_params"]["max_new_tokens"], 4);
        assert_eq!(v["sampling_params"]["ignore_eos"], true);
        assert!(v["sampling_params"].get("temperature").is_none());
        let (_, v) = request(|r| {
            r.ignore_eos = false;
            r.streaming = false;
            r.temperature = Some(0.0);
            r.extra_body = Some(r#"{"sampling_params":{"top_p":0.9},"rid":"x"}"#.into());
        })
        .unwrap();
        assert_eq!(v["stream"], false);
        assert_eq!(v["sampling_params"]["ignore_eos"], false);
        assert_eq!(v["sampling_params"]["temperature"], 0.0);
        assert_eq!(v["sampling_params"]["top_p"], 0.9);
        assert_eq!(v["sampling_params"]["max_new_tokens"], 4);
        assert_eq!(v["rid"], "x");
        let (_, v) = request(|r| {
            r.prompt = Prompt::Chat(vec![
                ChatMessage {
                    role: Role::System,
                    content: "Be brief.".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "Hi".into(),
                },
            ])
        })
        .unwrap();
        assert_eq!(v["text"], "Be brief.\nHi");
        assert!(request(|r| r.extra_body = Some("{".into())).is_err());
        assert!(Adapter::info().supports_ignore_eos);
    }

    #[test]
    fn in_stream_errors_fail_the_request() {
        let body = b"data: {\"text\":\" Paris\",\"output_ids\":[12366],\"meta_info\":{\"finish_reason\":null,\"prompt_tokens\":8,\"completion_tokens\":1}}\n\ndata: {\"error\":{\"message\":\"The input (4100 tokens) is longer than the model's context length (4096 tokens).\"}}\n\ndata: [DONE]\n\n";
        let out = assert_split_invariant(body);
        assert_eq!(out.text(), " Paris");
        assert_eq!(out.done, 0);
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::ContextLength));
        assert!(out.errors[0].1.starts_with("The input (4100 tokens)"));
        let body = b"data: {\"text\":\" Paris\",\"output_ids\":[12366],\"meta_info\":{\"finish_reason\":{\"type\":\"abort\",\"message\":\"Abort by the scheduler\"},\"prompt_tokens\":8,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
        let out = assert_split_invariant(body);
        assert_eq!((out.finish, out.done), (None, 0));
        assert_eq!(out.errors.len(), 1);
        assert!(out.errors[0].1.ends_with("Abort by the scheduler"));
    }

    #[test]
    fn http_errors_carry_the_server_message() {
        let e = Adapter::map_error(
            400,
            Vec::new(),
            br#"{"error": {"message": "max_new_tokens must be positive"}}"#.to_vec(),
        );
        assert_eq!(e.message, "max_new_tokens must be positive");
        assert_eq!(e.http_status, Some(400));
        assert!(matches!(e.kind, ErrorKind::BadRequest));
        let e = Adapter::map_error(401, Vec::new(), br#"{"error": "Unauthorized"}"#.to_vec());
        assert_eq!(e.message, "Unauthorized");
        assert!(matches!(e.kind, ErrorKind::Unauthorized));
    }

    #[test]
    fn truncated_stream_fails_at_finish() {
        let cut = TRANSCRIPT.len() - b"data: [DONE]\n\n".len();
        let out = assert_split_invariant(&TRANSCRIPT[..cut]);
        assert_eq!(out.text(), " Paris, the capital");
        assert_eq!(out.done, 0);
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        assert!(out.errors[0].1.contains("[DONE]"));
    }

    #[test]
    fn non_streaming_body() {
        let body = br#"{"text":" Paris, the capital","output_ids":[12366,11,279,6864],"meta_info":{"id":"2f6c0a8e1b7d4c3a9e5f","finish_reason":{"type":"length","length":4},"prompt_tokens":8,"completion_tokens":4,"cached_tokens":0,"e2e_latency":0.0712}}"#;
        let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
        assert_eq!(c.text, " Paris, the capital");
        assert_eq!(c.finish.as_deref(), Some("length"));
        let u = c.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens),
            (Some(8), Some(4), Some(0))
        );
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            TRANSCRIPT,
            br#"{"text":" Paris","output_ids":[12366],"meta_info":{"id":"x","finish_reason":{"type":"length","length":1},"prompt_tokens":8,"completion_tokens":1,"cached_tokens":0}}"#,
            br#"{"error":{"message":"The input is longer than the model's context length","code":400}}"#,
            br#"{"tokens":[1,2],"count":2,"max_model_len":8}"#,
        ]);
    }
}
