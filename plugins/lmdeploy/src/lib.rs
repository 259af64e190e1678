//! LMDeploy's native `POST /generate`: SSE `data: ` events whose `text`/`output_ids` are the
//! delta of one engine step (unlike SGLang's cumulative text) while `meta_info.completion_tokens`
//! is the running total, a `finish_reason` object on the last event and `data: [DONE]` at the
//! end. The same route answers with one object when `stream` is false. `ignore_eos` forces
//! output lengths.

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

/// The `lmdeploy` adapter.
pub struct Adapter;

/// Per-request stream state: the running `completion_tokens` (to count each event's tokens) and
/// whether `[DONE]` arrived.
#[derive(Default)]
pub struct Parser {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
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
    /// `"error"` on LMDeploy's flat error object.
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct Meta {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    /// `{"type":"stop"|"length"|...}`, null until the last event.
    finish_reason: Option<Value>,
}

impl Meta {
    /// The finish reason's `type`, or the error an `error`/`abort` stands for.
    fn finish(&self) -> Option<Result<String, BackendError>> {
        let reason = self.finish_reason.as_ref().filter(|r| !r.is_null())?;
        let kind = reason.get("type").or(Some(reason)).and_then(Value::as_str);
        Some(match kind {
            Some(k @ ("error" | "abort")) => Err(BackendError {
                kind: ErrorKind::Server,
                message: format!("LMDeploy ended the request with finish_reason {k:?}"),
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
            cached_prompt_tokens: None,
        }
    }
}

/// `data: {"error":{<flat LMDeploy error>}}`: its `code` classifies the error, but the response
/// itself was a 200, so no HTTP status is reported.
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
    if matches!(err.kind, ErrorKind::Unknown) {
        err.kind = ErrorKind::Server;
    }
    err.http_status = None;
    err
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "lmdeploy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "LMDeploy native POST /generate (delta text per engine step, meta_info.completion_tokens running total, data: [DONE]; ignore_eos)".into(),
            default_endpoint: "/generate".into(),
            framing: Framing::Sse,
            supports_ignore_eos: true,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        match options.first() {
            Some(kv) => Err(format!(
                "the lmdeploy adapter takes no options (got {:?})",
                kv.key
            )),
            None => Ok(()),
        }
    }

    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let mut body = json!({
            "prompt": prompt_text(&req.prompt)?,
            "max_tokens": req.max_tokens,
            "stream": req.streaming,
        });
        if req.ignore_eos {
            body["ignore_eos"] = json!(true);
        }
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
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
            .map_err(|e| protocol(format!("unexpected LMDeploy response body: {e}")))?;
        if ev.error.is_some() || ev.object.as_deref() == Some("error") {
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

    /// `/v1/encode` without the chat template, as `/generate` sends the prompt.
    fn tokenize_request(req: GenRequest) -> Option<HttpRequest> {
        let text = prompt_text(&req.prompt).ok()?;
        Some(llmb_plugin_sdk::tokenize::json_request(
            "/v1/encode",
            &json!({ "input": text, "do_preprocess": false, "add_bos": true }),
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

    /// An event is a delta when it carries text or new tokens (several tokens may share one
    /// engine step); its token count is the rise in `completion_tokens`, else its `output_ids`.
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
                        "malformed LMDeploy stream event ({e}): {shown}"
                    ))));
                    continue;
                }
            };
            if ev.error.is_some() || ev.object.as_deref() == Some("error") {
                state.failed = true;
                events.push(StreamEvent::Error(stream_error(data)));
                continue;
            }
            let tokens = match (ev.meta_info.completion_tokens, &ev.output_ids) {
                (Some(total), _) => Some(total.saturating_sub(state.tokens)),
                (None, Some(ids)) => Some(ids.len() as u32),
                (None, None) => None,
            };
            state.tokens = match ev.meta_info.completion_tokens {
                Some(total) => state.tokens.max(total),
                None => state.tokens + tokens.unwrap_or(0),
            };
            if !ev.text.is_empty() || tokens.unwrap_or(0) > 0 {
                events.push(StreamEvent::Delta(Delta {
                    frame,
                    text: ev.text.into_owned(),
                    reasoning: String::new(),
                    tokens,
                    index: 0,
                }));
            }
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
            "the LMDeploy stream ended before `data: [DONE]`".into(),
        ))]
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;

    /// The native `/generate` stream transcript of lmdeploy.md, byte for byte.
    const TRANSCRIPT: &[u8] = b"data: {\"text\":\" Paris\",\"output_ids\":[12366],\"meta_info\":{\"prompt_tokens\":8,\"completion_tokens\":1,\"finish_reason\":null,\"output_token_logprobs\":null,\"routed_experts\":null}}\n\ndata: {\"text\":\",\",\"output_ids\":[11],\"meta_info\":{\"prompt_tokens\":8,\"completion_tokens\":2,\"finish_reason\":null,\"output_token_logprobs\":null,\"routed_experts\":null}}\n\ndata: {\"text\":\" the\",\"output_ids\":[279],\"meta_info\":{\"prompt_tokens\":8,\"completion_tokens\":3,\"finish_reason\":null,\"output_token_logprobs\":null,\"routed_experts\":null}}\n\ndata: {\"text\":\" capital\",\"output_ids\":[6864],\"meta_info\":{\"prompt_tokens\":8,\"completion_tokens\":4,\"finish_reason\":{\"type\":\"length\"},\"output_token_logprobs\":null,\"routed_experts\":null}}\n\ndata: [DONE]\n\n";

    /// The short stream given to the simulator's author.
    const SHORT: &[u8] = b"data: {\"text\":\" a\",\"output_ids\":[264],\"meta_info\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"finish_reason\":null,\"output_token_logprobs\":null,\"routed_experts\":null}}\n\ndata: {\"text\":\" b\",\"output_ids\":[293],\"meta_info\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"finish_reason\":null,\"output_token_logprobs\":null,\"routed_experts\":null}}\n\ndata: {\"text\":\" c\",\"output_ids\":[272],\"meta_info\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"finish_reason\":{\"type\":\"length\"},\"output_token_logprobs\":null,\"routed_experts\":null}}\n\ndata: [DONE]\n\n";

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
            ignore_eos: false,
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
        assert_eq!(out.usage, Some((Some(8), Some(4), None)));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
        let out = assert_split_invariant(SHORT);
        assert_eq!((out.text().as_str(), out.tokens()), (" a b c", 3));
        assert_eq!(out.usage, Some((Some(5), Some(3), None)));
        assert_eq!((out.finish.as_deref(), out.done), (Some("length"), 1));
    }

    #[test]
    fn several_tokens_per_step_and_empty_steps() {
        let body = "data: {\"text\":\"\",\"output_ids\":[1],\"meta_info\":{\"prompt_tokens\":8,\"completion_tokens\":1,\"finish_reason\":null}}\n\ndata: {\"text\":\"Caf\u{e9} \u{2615}\",\"output_ids\":[2,3],\"meta_info\":{\"prompt_tokens\":8,\"completion_tokens\":3,\"finish_reason\":null}}\n\ndata: {\"text\":\"\",\"output_ids\":[],\"meta_info\":{\"prompt_tokens\":8,\"completion_tokens\":3,\"finish_reason\":{\"type\":\"stop\"}}}\n\ndata: [DONE]\n\n";
        let out = assert_split_invariant(body.as_bytes());
        assert_eq!(out.text(), "Caf\u{e9} \u{2615}");
        assert_eq!(
            out.deltas.iter().map(|d| (d.0, d.2)).collect::<Vec<_>>(),
            [(0, Some(1)), (1, Some(2))]
        );
        assert_eq!((out.finish.as_deref(), out.done), (Some("stop"), 1));
        assert_eq!(out.usage, Some((Some(8), Some(3), None)));
    }

    #[test]
    fn request_body() {
        let (path, v) = request(|_| {}).unwrap();
        assert_eq!(path, "/generate");
        assert_eq!(path, Adapter::info().default_endpoint);
        assert_eq!(
            v,
            json!({"prompt": "What is the capital of France?", "max_tokens": 4, "stream": true})
        );
        let (path, v) = request(|r| {
            r.ignore_eos = true;
            r.streaming = false;
            r.temperature = Some(0.0);
            r.extra_body = Some(r#"{"top_k":1,"max_tokens":8}"#.into());
        })
        .unwrap();
        assert_eq!(path, "/generate");
        assert_eq!(
            v,
            json!({"prompt": "What is the capital of France?", "max_tokens": 8, "stream": false,
                   "ignore_eos": true, "temperature": 0.0, "top_k": 1})
        );
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
        assert_eq!(v["prompt"], "Be brief.\nHi");
        assert!(request(|r| r.extra_body = Some("{".into())).is_err());
        assert!(
            Adapter::configure(vec![Kv {
                key: "x".into(),
                value: "y".into()
            }])
            .is_err()
        );
        assert!(Adapter::info().supports_ignore_eos);
    }

    #[test]
    fn in_stream_errors_fail_the_request() {
        let body = b"data: {\"text\":\" a\",\"output_ids\":[264],\"meta_info\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"finish_reason\":null,\"output_token_logprobs\":null,\"routed_experts\":null}}\n\ndata: {\"error\":{\"message\":\"engine internal error: out of blocks\",\"type\":\"server_error\",\"code\":500,\"param\":null,\"object\":\"error\"}}\n\ndata: [DONE]\n\n";
        let out = assert_split_invariant(body);
        assert_eq!((out.text().as_str(), out.done), (" a", 0));
        assert_eq!(
            out.errors,
            [(
                ErrorKind::Server,
                "engine internal error: out of blocks".to_owned()
            )]
        );
        let body = b"data: {\"text\":\"\",\"output_ids\":[],\"meta_info\":{\"prompt_tokens\":8,\"completion_tokens\":0,\"finish_reason\":{\"type\":\"abort\"}}}\n\ndata: [DONE]\n\n";
        let out = assert_split_invariant(body);
        assert_eq!((out.finish, out.done), (None, 0));
        assert_eq!(out.errors.len(), 1);
        assert!(out.errors[0].1.contains("\"abort\""));
    }

    #[test]
    fn http_errors_carry_the_server_message() {
        let e = Adapter::map_error(
            400,
            Vec::new(),
            br#"{"message":"The prompt and input_ids cannot both be given","type":"invalid_request_error","code":400,"param":null,"object":"error"}"#.to_vec(),
        );
        assert_eq!(e.message, "The prompt and input_ids cannot both be given");
        assert_eq!(e.http_status, Some(400));
        assert!(matches!(e.kind, ErrorKind::BadRequest));
        let e = Adapter::map_error(
            401,
            Vec::new(),
            br#"{"message":"Please request with valid api key!","type":"authentication_error","code":401,"param":null,"object":"error"}"#.to_vec(),
        );
        assert!(matches!(e.kind, ErrorKind::Unauthorized));
        assert_eq!(e.message, "Please request with valid api key!");
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
        let body = br#"{"text":" Paris, the capital","output_ids":[12366,11,279,6864],"meta_info":{"prompt_tokens":8,"completion_tokens":4,"finish_reason":{"type":"length"},"output_token_logprobs":null,"routed_experts":null}}"#;
        let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
        assert_eq!(c.text, " Paris, the capital");
        assert_eq!(c.finish.as_deref(), Some("length"));
        let u = c.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(8), Some(4)));
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            TRANSCRIPT,
            SHORT,
            br#"{"text":" Paris","output_ids":[12366],"meta_info":{"prompt_tokens":8,"completion_tokens":1,"finish_reason":{"type":"length"}}}"#,
            br#"{"input_ids":[1,2],"length":2}"#,
        ]);
    }
}
