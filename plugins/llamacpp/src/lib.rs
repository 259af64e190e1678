//! llama.cpp server's native `POST /completion`: SSE `data: ` events with `content`, no `[DONE]`
//! (the stream ends with the event whose `stop` is true, carrying `tokens_predicted`,
//! `tokens_evaluated` and `timings`), and errors after the stream started as an SSE field named
//! `error` rather than `data`. `ignore_eos` forces output lengths.

use std::cell::RefCell;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::{error_message, merge_extra_body};
use llmb_plugin_sdk::openai::prompt_text;
use llmb_plugin_sdk::openai::{classify, map_error};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

/// The `llama.cpp` adapter.
pub struct Adapter;

/// Per-request stream state: the running `tokens_predicted` (to count each event's tokens) and
/// whether the `stop: true` event, the only sign of a complete stream, arrived.
#[derive(Default)]
pub struct Parser {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    predicted: u32,
    done: bool,
    failed: bool,
}

/// A partial (`stop: false`) or final (`stop: true`) event, or a whole non-streaming body.
#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    content: String,
    #[serde(default)]
    stop: bool,
    tokens_predicted: Option<u32>,
    tokens_evaluated: Option<u32>,
    stop_type: Option<String>,
    timings: Option<Timings>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Timings {
    prompt_n: Option<u32>,
    predicted_n: Option<u32>,
}

impl Event {
    /// `tokens_evaluated - timings.prompt_n` is the prompt prefix served from the slot's cache.
    fn usage(&self) -> Usage {
        let timings = self.timings.as_ref();
        Usage {
            reasoning_tokens: None,
            prompt_tokens: self.tokens_evaluated,
            completion_tokens: self
                .tokens_predicted
                .or_else(|| timings.and_then(|t| t.predicted_n)),
            cached_prompt_tokens: self
                .tokens_evaluated
                .zip(timings.and_then(|t| t.prompt_n))
                .map(|(all, processed)| all.saturating_sub(processed)),
        }
    }
}

/// `{"code","message","type"}` (the `error:` field) or `{"error":{...}}`; the code classifies the
/// error, but the response itself was a 200, so no HTTP status is reported.
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
            name: "llama.cpp".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "llama.cpp server native POST /completion (n_predict, ignore_eos; final stop:true event, no [DONE])".into(),
            default_endpoint: "/completion".into(),
            framing: Framing::Sse,
            supports_ignore_eos: true,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        match options.first() {
            Some(kv) => Err(format!(
                "the llama.cpp adapter takes no options (got {:?})",
                kv.key
            )),
            None => Ok(()),
        }
    }

    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let mut body = json!({
            "prompt": prompt_text(&req.prompt)?,
            "n_predict": req.max_tokens,
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
            path: "/completion".into(),
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
            .map_err(|e| protocol(format!("unexpected llama.cpp response body: {e}")))?;
        if ev.error.is_some() {
            return Err(map_error(status, &body));
        }
        Ok(Completion {
            reasoning: String::new(),
            usage: Some(ev.usage()),
            text: ev.content,
            finish: ev.stop_type,
        })
    }

    fn map_error(status: u16, _headers: Headers, body: Vec<u8>) -> BackendError {
        map_error(status, &body)
    }

    /// `add_special` as `/completion` tokenizes its prompt (BOS included).
    fn tokenize_request(req: GenRequest) -> Option<HttpRequest> {
        let text = prompt_text(&req.prompt).ok()?;
        Some(llmb_plugin_sdk::tokenize::json_request(
            "/tokenize",
            &json!({ "content": text, "add_special": true }),
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

    /// Every partial event is a delta (its `content` may be empty while a multi-byte character
    /// is held back) worth the rise in `tokens_predicted`; the final event is one only if it
    /// still carries text.
    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        let mut events = Vec::with_capacity(batch.len() + 3);
        for (frame, name, data) in batch.iter() {
            let data = data.trim_ascii();
            if state.done || state.failed || data.is_empty() {
                continue;
            }
            if name == Some("error") {
                state.failed = true;
                events.push(StreamEvent::Error(stream_error(data)));
                continue;
            }
            let ev: Event = match serde_json::from_slice(data) {
                Ok(ev) => ev,
                Err(e) => {
                    let shown = String::from_utf8_lossy(&data[..data.len().min(120)]);
                    state.failed = true;
                    events.push(StreamEvent::Error(protocol(format!(
                        "malformed llama.cpp stream event ({e}): {shown}"
                    ))));
                    continue;
                }
            };
            if ev.error.is_some() {
                state.failed = true;
                events.push(StreamEvent::Error(stream_error(data)));
                continue;
            }
            let tokens = ev
                .tokens_predicted
                .map(|n| n.saturating_sub(state.predicted));
            state.predicted = state.predicted.max(ev.tokens_predicted.unwrap_or(0));
            let usage = ev.stop.then(|| ev.usage());
            if !ev.stop || !ev.content.is_empty() {
                events.push(StreamEvent::Delta(Delta {
                    frame,
                    text: ev.content,
                    reasoning: String::new(),
                    tokens,
                    index: 0,
                }));
            }
            if let Some(usage) = usage {
                if let Some(reason) = ev.stop_type {
                    events.push(StreamEvent::Finish(reason));
                }
                events.push(StreamEvent::Usage(usage));
                state.done = true;
                events.push(StreamEvent::Done);
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
            "the llama.cpp stream ended before its final `\"stop\":true` event".into(),
        ))]
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;

    /// The native `/completion` stream transcript of llamacpp.md, byte for byte.
    const TRANSCRIPT: &[u8] = b"data: {\"index\":0,\"content\":\" Paris\",\"tokens\":[12366],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":1,\"tokens_evaluated\":8}\n\ndata: {\"index\":0,\"content\":\",\",\"tokens\":[11],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":2,\"tokens_evaluated\":8}\n\ndata: {\"index\":0,\"content\":\" the\",\"tokens\":[279],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":3,\"tokens_evaluated\":8}\n\ndata: {\"index\":0,\"content\":\" capital\",\"tokens\":[6864],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":4,\"tokens_evaluated\":8,\"timings\":{\"prompt_n\":8,\"prompt_ms\":41.2,\"prompt_per_token_ms\":5.15,\"prompt_per_second\":194.17,\"predicted_n\":4,\"predicted_ms\":61.7,\"predicted_per_token_ms\":15.43,\"predicted_per_second\":64.83}}\n\ndata: {\"index\":0,\"content\":\"\",\"tokens\":[],\"id_slot\":0,\"stop\":true,\"model\":\"gpt-3.5-turbo\",\"tokens_predicted\":4,\"tokens_evaluated\":8,\"generation_settings\":{\"n_predict\":4,\"seed\":4294967295,\"temperature\":0.800000011920929},\"prompt\":\"<|begin_of_text|>What is the capital of France?\",\"has_new_line\":false,\"truncated\":false,\"stop_type\":\"limit\",\"stopping_word\":\"\",\"tokens_cached\":11,\"timings\":{\"prompt_n\":8,\"prompt_ms\":41.2,\"prompt_per_token_ms\":5.15,\"prompt_per_second\":194.17,\"predicted_n\":4,\"predicted_ms\":61.7,\"predicted_per_token_ms\":15.43,\"predicted_per_second\":64.83}}\n\n";

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
        assert_eq!(out.text(), " Paris, the capital");
        assert_eq!(
            out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(out.deltas.iter().all(|d| d.2 == Some(1)));
        assert_eq!(out.finish.as_deref(), Some("limit"));
        assert_eq!(out.usage, Some((Some(8), Some(4), Some(0))));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn request_body() {
        let (path, v) = request(|_| {}).unwrap();
        assert_eq!(path, "/completion");
        assert_eq!(v["prompt"], "What is the capital of France?");
        assert_eq!(v["n_predict"], 4);
        assert_eq!(v["stream"], true);
        assert!(v.get("ignore_eos").is_none() && v.get("temperature").is_none());
        let (_, v) = request(|r| {
            r.ignore_eos = true;
            r.streaming = false;
            r.temperature = Some(0.0);
            r.extra_body = Some(r#"{"cache_prompt":false,"n_predict":8}"#.into());
        })
        .unwrap();
        assert_eq!(v["ignore_eos"], true);
        assert_eq!(v["stream"], false);
        assert_eq!(v["temperature"], 0.0);
        assert_eq!(v["cache_prompt"], false);
        assert_eq!(v["n_predict"], 8);
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
        assert!(request(|r| r.extra_body = Some("nope".into())).is_err());
        assert!(Adapter::info().supports_ignore_eos);
    }

    #[test]
    fn in_stream_error_fails_the_request() {
        let body = b"data: {\"index\":0,\"content\":\" Paris\",\"tokens\":[12366],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":1,\"tokens_evaluated\":8}\n\nerror: {\"code\":500,\"message\":\"Input prompt is too big compared to KV size. Please try increasing KV size.\",\"type\":\"server_error\"}\n\n";
        let out = assert_split_invariant(body);
        assert_eq!(out.text(), " Paris");
        assert_eq!(out.done, 0);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(
            out.errors[0].1,
            "Input prompt is too big compared to KV size. Please try increasing KV size."
        );
        assert!(matches!(out.errors[0].0, ErrorKind::Server));
    }

    #[test]
    fn http_errors_carry_the_server_message() {
        let e = Adapter::map_error(
            503,
            Vec::new(),
            br#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#
                .to_vec(),
        );
        assert_eq!(e.message, "Loading model");
        assert_eq!(e.http_status, Some(503));
        assert!(matches!(e.kind, ErrorKind::Overloaded) && e.retryable);
        let e = Adapter::map_error(
            401,
            Vec::new(),
            br#"{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}"#
                .to_vec(),
        );
        assert_eq!(e.message, "Invalid API Key");
        assert!(matches!(e.kind, ErrorKind::Unauthorized));
    }

    #[test]
    fn truncated_stream_fails_at_finish() {
        let last = b"data: {\"index\":0,\"content\":\"\"";
        let cut = TRANSCRIPT
            .windows(last.len())
            .position(|w| w == last)
            .unwrap();
        let out = assert_split_invariant(&TRANSCRIPT[..cut]);
        assert_eq!(out.text(), " Paris, the capital");
        assert_eq!(
            (out.tokens(), out.done, out.finish, out.usage),
            (4, 0, None, None)
        );
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        assert!(out.errors[0].1.contains("ended before its final"));
    }

    #[test]
    fn non_streaming_body() {
        let body = br#"{"index":0,"content":" Paris, the capital","tokens":[],"id_slot":0,"stop":true,"model":"gpt-3.5-turbo","tokens_predicted":4,"tokens_evaluated":8,"generation_settings":{"n_predict":4,"seed":4294967295,"temperature":0.800000011920929,"top_k":40,"top_p":0.949999988079071},"prompt":"<|begin_of_text|>What is the capital of France?","has_new_line":false,"truncated":false,"stop_type":"limit","stopping_word":"","tokens_cached":11,"timings":{"prompt_n":8,"prompt_ms":41.2,"prompt_per_token_ms":5.15,"prompt_per_second":194.17,"predicted_n":4,"predicted_ms":61.7,"predicted_per_token_ms":15.43,"predicted_per_second":64.83}}"#;
        let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
        assert_eq!(c.text, " Paris, the capital");
        assert_eq!(c.finish.as_deref(), Some("limit"));
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
            br#"{"index":0,"content":" Paris, the capital","tokens":[],"id_slot":0,"stop":true,"model":"m","tokens_predicted":4,"tokens_evaluated":8,"stop_type":"limit","tokens_cached":11}"#,
            b"data: {\"content\":\" a\",\"stop\":false}\n\nerror: {\"code\":500,\"message\":\"too big\",\"type\":\"server_error\"}\n\n",
            br#"{"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error","n_prompt_tokens":9,"n_ctx":8}}"#,
            br#"{"tokens":[1,2,3]}"#,
        ]);
    }
}
