//! LightLLM's native `POST /generate_stream` (SSE `data:` without a space, one event per token
//! with the running `token.count_output_tokens`, no `[DONE]`: the last event has
//! `"finished":true`) and `POST /generate` when not streaming. LightLLM sends no error event
//! inside a stream: a failure just ends the body, so a body without the `finished` event fails.
//! `parameters.ignore_eos` forces output lengths. The TGI dialect (`--use_tgi_api`) parses too.

use std::cell::RefCell;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::{error_message, merge_extra_body};
use llmb_plugin_sdk::openai::classify;
use llmb_plugin_sdk::openai::prompt_text;
use serde::Deserialize;
use serde_json::{Value, json};

/// The `lightllm` adapter.
pub struct Adapter;

/// Per-request stream state: the running `count_output_tokens` (to count each event's tokens)
/// and whether the `finished` event, the only sign of a complete stream, arrived.
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

/// One per-token stream event.
#[derive(Deserialize)]
struct Event {
    token: Option<Token>,
    #[serde(default)]
    finished: bool,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Token {
    #[serde(default)]
    text: String,
    #[serde(default)]
    special: bool,
    count_output_tokens: Option<u32>,
    prompt_tokens: Option<u32>,
}

/// LightLLM's `{"message":..}`. Its 417 means an exception in the request handler (a prompt
/// too long, bad parameters), so it is a bad request unless the message says context length.
fn lightllm_error(status: u16, body: &[u8]) -> BackendError {
    let message = serde_json::from_slice(body)
        .ok()
        .as_ref()
        .and_then(error_message)
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&body[..body.len().min(300)])
                .trim()
                .to_owned()
        });
    let mut err = classify(Some(status), message);
    if status == 417 && matches!(err.kind, ErrorKind::Unknown) {
        err.kind = ErrorKind::BadRequest;
    }
    err.http_status = Some(status);
    err
}

/// The first entry of a per-sequence list, or the value itself when `n` is 1.
fn first(v: Option<&Value>) -> Option<&Value> {
    let v = v?;
    match v {
        Value::Array(items) => items.first(),
        other => Some(other),
    }
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "lightllm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "LightLLM native POST /generate_stream (/generate when not streaming; data: without a space, token.count_output_tokens, final finished:true event, no [DONE]; parameters.ignore_eos)".into(),
            default_endpoint: "/generate_stream".into(),
            framing: Framing::Sse,
            supports_ignore_eos: true,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        match options.first() {
            Some(kv) => Err(format!(
                "the lightllm adapter takes no options (got {:?})",
                kv.key
            )),
            None => Ok(()),
        }
    }

    /// LightLLM ignores `temperature` unless `do_sample` is set (its default comes from the
    /// model's generation config), so 0 is sent as `do_sample: false` (greedy) and any other
    /// temperature turns sampling on.
    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let mut parameters = json!({ "max_new_tokens": req.max_tokens });
        if req.ignore_eos {
            parameters["ignore_eos"] = json!(true);
        }
        match req.temperature {
            Some(t) if t <= 0.0 => parameters["do_sample"] = json!(false),
            Some(t) => {
                parameters["do_sample"] = json!(true);
                parameters["temperature"] = json!(t);
            }
            None => {}
        }
        let mut body = json!({ "inputs": prompt_text(&req.prompt)?, "parameters": parameters });
        merge_extra_body(&mut body, req.extra_body.as_deref())?;
        Ok(HttpRequest {
            method: "POST".into(),
            path: if req.streaming {
                "/generate_stream"
            } else {
                "/generate"
            }
            .into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
        })
    }

    /// `generated_text` is a list (one entry per sequence) natively, a string in the TGI dialect.
    fn parse_body(
        status: u16,
        _headers: Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| protocol(format!("response body is not JSON: {e}")))?;
        let Some(text) = first(v.get("generated_text")).and_then(Value::as_str) else {
            return Err(lightllm_error(status, &body));
        };
        let details = v.get("details");
        let field = |key: &str| first(v.get(key)).or_else(|| details?.get(key));
        let as_u32 = |v: Option<&Value>| v?.as_u64().and_then(|n| u32::try_from(n).ok());
        let usage = Usage {
            reasoning_tokens: None,
            prompt_tokens: as_u32(field("prompt_tokens")),
            completion_tokens: as_u32(field("count_output_tokens"))
                .or_else(|| as_u32(field("generated_tokens"))),
            cached_prompt_tokens: None,
        };
        Ok(Completion {
            reasoning: String::new(),
            text: text.to_owned(),
            finish: field("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_owned),
            usage: (usage.prompt_tokens.is_some() || usage.completion_tokens.is_some())
                .then_some(usage),
        })
    }

    fn map_error(status: u16, _headers: Headers, body: Vec<u8>) -> BackendError {
        lightllm_error(status, &body)
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

    /// Every token event is a delta worth the rise in `count_output_tokens` (one when absent); a
    /// special token counts but adds no text. The `finished` event also carries the last token.
    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        let mut events = Vec::with_capacity(batch.len() + 3);
        for (frame, _event, data) in batch.iter() {
            let data = data.trim_ascii();
            if state.done || state.failed || data.is_empty() {
                continue;
            }
            let ev: Event = match serde_json::from_slice(data) {
                Ok(ev) => ev,
                Err(e) => {
                    let shown = String::from_utf8_lossy(&data[..data.len().min(120)]);
                    state.failed = true;
                    events.push(StreamEvent::Error(protocol(format!(
                        "malformed LightLLM stream event ({e}): {shown}"
                    ))));
                    continue;
                }
            };
            let Some(token) = ev.token else {
                let message = serde_json::from_slice(data)
                    .ok()
                    .as_ref()
                    .and_then(error_message)
                    .unwrap_or_else(|| "a LightLLM stream event without a token".into());
                let mut err = classify(None, message);
                if matches!(err.kind, ErrorKind::Unknown) {
                    err.kind = ErrorKind::Server;
                }
                state.failed = true;
                events.push(StreamEvent::Error(err));
                continue;
            };
            let tokens = match token.count_output_tokens {
                Some(n) => n.saturating_sub(state.tokens),
                None => 1,
            };
            state.tokens = token.count_output_tokens.unwrap_or(state.tokens + 1);
            events.push(StreamEvent::Delta(Delta {
                frame,
                text: if token.special {
                    String::new()
                } else {
                    token.text
                },
                reasoning: String::new(),
                tokens: Some(tokens),
                index: 0,
            }));
            if ev.finished {
                if let Some(reason) = ev.finish_reason {
                    events.push(StreamEvent::Finish(reason));
                }
                events.push(StreamEvent::Usage(Usage {
                    reasoning_tokens: None,
                    prompt_tokens: token.prompt_tokens,
                    completion_tokens: Some(state.tokens),
                    cached_prompt_tokens: None,
                }));
                state.done = true;
                events.push(StreamEvent::Done);
            }
        }
        events
    }

    /// LightLLM reports a failure after the stream started only by closing the body early.
    fn finish(&self, _trailers: Headers) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        if state.done || state.failed {
            return Vec::new();
        }
        state.failed = true;
        vec![StreamEvent::Error(BackendError {
            kind: ErrorKind::Server,
            message: "the LightLLM stream ended before its `\"finished\":true` event (LightLLM closes the stream when generation fails)".into(),
            http_status: None,
            retryable: false,
        })]
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;

    /// The native `/generate_stream` transcript of lightllm.md, byte for byte.
    const TRANSCRIPT: &[u8] = b"data:{\"token\":{\"id\":12366,\"text\":\" Paris\",\"logprob\":-0.0825,\"special\":false,\"count_output_tokens\":1,\"prompt_tokens\":8},\"generated_text\":null,\"finished\":false,\"finish_reason\":null,\"details\":null}\n\ndata:{\"token\":{\"id\":11,\"text\":\",\",\"logprob\":-0.7705,\"special\":false,\"count_output_tokens\":2,\"prompt_tokens\":8},\"generated_text\":null,\"finished\":false,\"finish_reason\":null,\"details\":null}\n\ndata:{\"token\":{\"id\":279,\"text\":\" the\",\"logprob\":-0.6113,\"special\":false,\"count_output_tokens\":3,\"prompt_tokens\":8},\"generated_text\":null,\"finished\":false,\"finish_reason\":null,\"details\":null}\n\ndata:{\"token\":{\"id\":6864,\"text\":\" capital\",\"logprob\":-0.0234,\"special\":false,\"count_output_tokens\":4,\"prompt_tokens\":8},\"generated_text\":null,\"finished\":true,\"finish_reason\":\"length\",\"details\":null}\n\n";

    /// The short stream given to the simulator's author.
    const SHORT: &[u8] = b"data:{\"token\":{\"id\":264,\"text\":\" a\",\"logprob\":-0.1,\"special\":false,\"count_output_tokens\":1,\"prompt_tokens\":5},\"generated_text\":null,\"finished\":false,\"finish_reason\":null,\"details\":null}\n\ndata:{\"token\":{\"id\":293,\"text\":\" b\",\"logprob\":-0.1,\"special\":false,\"count_output_tokens\":2,\"prompt_tokens\":5},\"generated_text\":null,\"finished\":false,\"finish_reason\":null,\"details\":null}\n\ndata:{\"token\":{\"id\":272,\"text\":\" c\",\"logprob\":-0.1,\"special\":false,\"count_output_tokens\":3,\"prompt_tokens\":5},\"generated_text\":null,\"finished\":true,\"finish_reason\":\"length\",\"details\":null}\n\n";

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
    fn tgi_dialect_and_escaped_slash() {
        let body = b"data:{\"token\": {\"id\": 1, \"text\": \"a\\/b\", \"logprob\": -0.1, \"special\": false, \"count_output_tokens\": 2, \"prompt_tokens\": 8}, \"generated_text\": null, \"finished\": false, \"finish_reason\": null, \"details\": null}\n\ndata:{\"token\": {\"id\": 2, \"text\": \"</s>\", \"logprob\": -0.1, \"special\": true, \"count_output_tokens\": 3, \"prompt_tokens\": 8}, \"generated_text\": \"a/b\", \"finished\": true, \"finish_reason\": \"stop\", \"details\": {\"generated_tokens\": 3, \"finish_reason\": \"stop\", \"prompt_tokens\": 8}}\n\n";
        let out = assert_split_invariant(body);
        assert_eq!(out.text(), "a/b");
        assert_eq!(
            out.deltas.iter().map(|d| d.2).collect::<Vec<_>>(),
            [Some(2), Some(1)]
        );
        assert_eq!(out.usage, Some((Some(8), Some(3), None)));
        assert_eq!((out.finish.as_deref(), out.done), (Some("stop"), 1));
    }

    #[test]
    fn request_body() {
        let (path, v) = request(|_| {}).unwrap();
        assert_eq!(path, "/generate_stream");
        assert_eq!(path, Adapter::info().default_endpoint);
        assert_eq!(v["inputs"], "What is the capital of France?");
        assert_eq!(v["parameters"], json!({ "max_new_tokens": 4 }));
        assert!(v.get("stream").is_none());
        let (path, v) = request(|r| {
            r.ignore_eos = true;
            r.streaming = false;
            r.temperature = Some(0.0);
            r.extra_body = Some(r#"{"parameters":{"add_special_tokens":false}}"#.into());
        })
        .unwrap();
        assert_eq!(path, "/generate");
        assert_eq!(
            v["parameters"],
            json!({ "max_new_tokens": 4, "ignore_eos": true, "do_sample": false, "add_special_tokens": false })
        );
        let (_, v) = request(|r| {
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
        })
        .unwrap();
        assert_eq!(v["inputs"], "Be brief.\nHi");
        assert_eq!(
            (
                &v["parameters"]["do_sample"],
                &v["parameters"]["temperature"]
            ),
            (&json!(true), &json!(0.5))
        );
        assert!(request(|r| r.extra_body = Some("1".into())).is_err());
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
    fn stream_without_finished_event_fails() {
        let last = b"data:{\"token\":{\"id\":6864";
        let cut = TRANSCRIPT
            .windows(last.len())
            .position(|w| w == last)
            .unwrap();
        for body in [&TRANSCRIPT[..cut], &TRANSCRIPT[..cut + 40]] {
            let out = assert_split_invariant(body);
            assert_eq!(out.text(), " Paris, the");
            assert_eq!((out.done, out.finish, out.usage), (0, None, None));
            assert_eq!(out.errors.len(), 1);
        }
        let out = run(&[&TRANSCRIPT[..cut]]);
        assert!(matches!(out.errors[0].0, ErrorKind::Server));
        assert!(
            out.errors[0]
                .1
                .contains("ended before its `\"finished\":true` event")
        );
        let out = run(&[&TRANSCRIPT[..cut + 40]]);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        let first = SHORT.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
        let out = assert_split_invariant(&SHORT[..first]);
        assert_eq!((out.text().as_str(), out.done), (" a", 0));
        assert!(matches!(out.errors[..], [(ErrorKind::Server, _)]));
    }

    #[test]
    fn error_object_in_stream_fails_the_request() {
        let body = b"data:{\"token\":{\"id\":12366,\"text\":\" Paris\",\"logprob\":-0.08,\"special\":false,\"count_output_tokens\":1,\"prompt_tokens\":8},\"generated_text\":null,\"finished\":false,\"finish_reason\":null,\"details\":null}\n\ndata:{\"message\":\"the input prompt is too long\"}\n\n";
        let out = assert_split_invariant(body);
        assert_eq!((out.text().as_str(), out.done), (" Paris", 0));
        assert_eq!(
            out.errors,
            [(
                ErrorKind::ContextLength,
                "the input prompt is too long".to_owned()
            )]
        );
    }

    #[test]
    fn http_errors_carry_the_server_message() {
        let e = Adapter::map_error(
            417,
            Vec::new(),
            br#"{"message":"input_len 5000 + max_new_tokens 128 > max_req_total_len 4096"}"#
                .to_vec(),
        );
        assert_eq!(
            e.message,
            "input_len 5000 + max_new_tokens 128 > max_req_total_len 4096"
        );
        assert_eq!(e.http_status, Some(417));
        assert!(matches!(e.kind, ErrorKind::BadRequest));
        let e = Adapter::map_error(503, Vec::new(), br#"{"message":"Error"}"#.to_vec());
        assert!(matches!(e.kind, ErrorKind::Overloaded) && e.retryable);
        assert_eq!(e.message, "Error");
    }

    #[test]
    fn non_streaming_body() {
        let body = br#"{"generated_text":[" Paris, the capital"],"count_output_tokens":4,"finish_reason":"length","prompt_tokens":8}"#;
        let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
        assert_eq!(c.text, " Paris, the capital");
        assert_eq!(c.finish.as_deref(), Some("length"));
        let u = c.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(8), Some(4)));
        let body = br#"{"generated_text": "a/b", "details": {"generated_tokens": 3, "finish_reason": "stop", "prompt_tokens": 8}}"#;
        let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
        assert_eq!(
            (c.text.as_str(), c.finish.as_deref()),
            ("a/b", Some("stop"))
        );
        assert_eq!(c.usage.unwrap().completion_tokens, Some(3));
        let e = Adapter::parse_body(200, Vec::new(), br#"{"message":"boom"}"#.to_vec());
        assert_eq!(e.unwrap_err().message, "boom");
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            TRANSCRIPT,
            SHORT,
            br#"{"generated_text":[" Paris"],"count_output_tokens":1,"finish_reason":"length","prompt_tokens":8}"#,
            br#"{"message":"Error"}"#,
        ]);
    }
}
