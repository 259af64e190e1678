//! ScaleLLM's OpenAI-compatible server: `POST /v1/completions` (default, as the vLLM bench maps
//! `scalellm`) or `POST /v1/chat/completions` (`--plugin-opt api=chat`). The stream is OpenAI's
//! with two quirks the generic adapter does not handle: the finish reason comes in a separate
//! chunk without text (not a token, so not a delta), and an error after streaming started is
//! written as a raw JSON line without `data:`, after which the body ends without `[DONE]`.
//!
//! The host's SSE framer turns such a line into a frame whose event name is the JSON up to its
//! first colon (`{"error"`) and whose data is the rest, so host framing is kept and the parser
//! joins the two halves back together.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Mutex;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::error_message;
use llmb_plugin_sdk::openai::{self, Api, BodyOptions, MaxTokensField, classify};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

/// The `scalellm` adapter.
pub struct Adapter;

/// The route requests go to, set once by `configure`.
static API: Mutex<Api> = Mutex::new(Api::Completions);

/// Per-request stream state: whether `[DONE]` arrived or the stream already failed.
#[derive(Default)]
pub struct Parser {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    done: bool,
    failed: bool,
}

/// One chunk of either route; the route is recognised by `text` versus `delta`.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
    usage: Option<UsageJson>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    delta: Option<ChatDelta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChatDelta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UsageJson {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u32>,
}

/// `{"error":{"message","code"}}` inside a 200 response: the code classifies it, but no HTTP
/// status is reported, and a failure after generation started is the server's.
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

fn path(api: Api) -> &'static str {
    match api {
        Api::Completions => "/v1/completions",
        Api::Chat => "/v1/chat/completions",
    }
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "scalellm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "ScaleLLM OpenAI server POST /v1/completions (or /v1/chat/completions with --plugin-opt api=chat; ignore_eos; separate finish-reason chunk; mid-stream error as a raw JSON line without data:)".into(),
            default_endpoint: path(Api::Completions).into(),
            framing: Framing::Sse,
            supports_ignore_eos: true,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        for kv in options {
            let api = match (kv.key.as_str(), kv.value.as_str()) {
                ("api", "completions") => Api::Completions,
                ("api", "chat") => Api::Chat,
                ("api", other) => {
                    return Err(format!("api must be completions or chat, not {other:?}"));
                }
                (other, _) => {
                    return Err(format!(
                        "unknown option {other:?} for the scalellm adapter (known: api)"
                    ));
                }
            };
            *API.lock().unwrap() = api;
        }
        Ok(())
    }

    /// ScaleLLM takes only `max_tokens` (no `max_completion_tokens`), a string prompt, and
    /// silently ignores unknown fields; its default temperature is 0.7, so one is sent only
    /// when asked for.
    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let api = *API.lock().unwrap();
        let body = openai::build_body(
            api,
            &req,
            BodyOptions {
                max_tokens_field: MaxTokensField::MaxTokens,
                send_ignore_eos: true,
                repetition_penalty_one: false,
            },
        )?;
        Ok(HttpRequest {
            method: "POST".into(),
            path: path(api).into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        })
    }

    fn parse_body(
        status: u16,
        _headers: Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        let chat = serde_json::from_slice::<Value>(&body)
            .is_ok_and(|v| v.pointer("/choices/0/message").is_some());
        openai::parse_body(
            if chat { Api::Chat } else { Api::Completions },
            status,
            &body,
        )
    }

    fn map_error(status: u16, _headers: Headers, body: Vec<u8>) -> BackendError {
        openai::map_error(status, &body)
    }

    fn tokenize_request(_req: GenRequest) -> Option<HttpRequest> {
        None
    }

    fn parse_tokenize(_body: Vec<u8>) -> Result<u32, String> {
        Err(llmb_plugin_sdk::tokenize::NO_ROUTE.into())
    }
}

impl Parser {
    /// One frame's events. A frame named like the start of a JSON object is ScaleLLM's raw
    /// error line, split by the SSE framer at its first colon (one optional space after it
    /// dropped, which JSON does not miss).
    fn frame(&self, frame: u32, event: Option<&str>, data: &[u8], events: &mut Vec<StreamEvent>) {
        let mut state = self.state.borrow_mut();
        if state.done || state.failed {
            return;
        }
        if let Some(name) = event.filter(|n| n.trim_start().starts_with('{')) {
            let raw = [name.as_bytes(), b":", data].concat();
            let err =
                if serde_json::from_slice::<Value>(&raw).is_ok_and(|v| v.get("error").is_some()) {
                    stream_error(&raw)
                } else {
                    let shown = String::from_utf8_lossy(&raw[..raw.len().min(120)]);
                    protocol(format!(
                        "unexpected raw line in the ScaleLLM stream: {shown}"
                    ))
                };
            state.failed = true;
            events.push(StreamEvent::Error(err));
            return;
        }
        let data = data.trim_ascii();
        if data.is_empty() {
            return;
        }
        if data == b"[DONE]" {
            state.done = true;
            events.push(StreamEvent::Done);
            return;
        }
        let chunk: Chunk = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => {
                let shown = String::from_utf8_lossy(&data[..data.len().min(120)]);
                state.failed = true;
                events.push(StreamEvent::Error(protocol(format!(
                    "malformed ScaleLLM stream chunk ({e}): {shown}"
                ))));
                return;
            }
        };
        if chunk.error.is_some() {
            state.failed = true;
            events.push(StreamEvent::Error(stream_error(data)));
            return;
        }
        for choice in chunk.choices {
            let (text, reasoning) = match choice.delta {
                Some(d) => (d.content, d.reasoning_content),
                None => (choice.text, None),
            };
            let text = text.unwrap_or_default();
            let reasoning = reasoning.unwrap_or_default();
            if !text.is_empty() || !reasoning.is_empty() {
                events.push(StreamEvent::Delta(Delta {
                    frame,
                    text: text.into_owned(),
                    reasoning: reasoning.into_owned(),
                    tokens: None,
                    index: choice.index,
                }));
            }
            if let Some(reason) = choice.finish_reason {
                events.push(StreamEvent::Finish(reason.into_owned()));
            }
        }
        if let Some(u) = chunk.usage {
            events.push(StreamEvent::Usage(Usage {
                reasoning_tokens: None,
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                cached_prompt_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
            }));
        }
    }
}

impl GuestResponseParser for Parser {
    fn new(_status: u16, _headers: Headers) -> Self {
        Self::default()
    }

    /// Only chunks with text are deltas: the role-only first chat chunk and the separate
    /// finish-reason chunk carry none and are not tokens.
    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        let mut events = Vec::with_capacity(batch.len() + 2);
        for (frame, event, data) in batch.iter() {
            self.frame(frame, event, data, &mut events);
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
            "the ScaleLLM stream ended before `data: [DONE]`".into(),
        ))]
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;

    /// The chat transcript of scalellm.md, byte for byte.
    const CHAT: &[u8] = b"data: {\"id\":\"chatcmpl-4JqzW9mT2bXc8VhKpR6sLd\",\"object\":\"chat.completion.chunk\",\"created\":1736900000,\"model\":\"meta-llama/Meta-Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"chatcmpl-4JqzW9mT2bXc8VhKpR6sLd\",\"object\":\"chat.completion.chunk\",\"created\":1736900000,\"model\":\"meta-llama/Meta-Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"The\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"chatcmpl-4JqzW9mT2bXc8VhKpR6sLd\",\"object\":\"chat.completion.chunk\",\"created\":1736900000,\"model\":\"meta-llama/Meta-Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" capital\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"chatcmpl-4JqzW9mT2bXc8VhKpR6sLd\",\"object\":\"chat.completion.chunk\",\"created\":1736900000,\"model\":\"meta-llama/Meta-Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" is\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"chatcmpl-4JqzW9mT2bXc8VhKpR6sLd\",\"object\":\"chat.completion.chunk\",\"created\":1736900000,\"model\":\"meta-llama/Meta-Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" Paris\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"chatcmpl-4JqzW9mT2bXc8VhKpR6sLd\",\"object\":\"chat.completion.chunk\",\"created\":1736900000,\"model\":\"meta-llama/Meta-Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"length\"}],\"usage\":null}\n\ndata: {\"id\":\"chatcmpl-4JqzW9mT2bXc8VhKpR6sLd\",\"object\":\"chat.completion.chunk\",\"created\":1736900000,\"model\":\"meta-llama/Meta-Llama-3.1-8B-Instruct\",\"choices\":[],\"usage\":{\"prompt_tokens\":42,\"total_tokens\":46,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n";

    /// A completions stream as scalellm.md describes it (text chunks, a separate `"text":""`
    /// finish chunk, the usage chunk, `[DONE]`); also the short stream given to the simulator.
    const COMPLETIONS: &[u8] = b"data: {\"id\":\"cmpl-7Hq2mX9pLw4RtV1sNc8bKd\",\"object\":\"text_completion\",\"created\":1736900000,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\" a\",\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"cmpl-7Hq2mX9pLw4RtV1sNc8bKd\",\"object\":\"text_completion\",\"created\":1736900000,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\" b\",\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"cmpl-7Hq2mX9pLw4RtV1sNc8bKd\",\"object\":\"text_completion\",\"created\":1736900000,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\" c\",\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"cmpl-7Hq2mX9pLw4RtV1sNc8bKd\",\"object\":\"text_completion\",\"created\":1736900000,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"length\"}],\"usage\":null}\n\ndata: {\"id\":\"cmpl-7Hq2mX9pLw4RtV1sNc8bKd\",\"object\":\"text_completion\",\"created\":1736900000,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":8,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";

    /// Serialises the tests that read or write the `api` option.
    static OPTION_LOCK: Mutex<()> = Mutex::new(());

    use llmb_plugin_sdk::testing::Outcome;

    /// Same events whatever the read boundaries: every two-way split and one byte per read.
    fn assert_split_invariant(body: &[u8]) -> Outcome {
        llmb_plugin_sdk::testing::assert_split_invariant(|| Parser::new(200, Vec::new()), body)
    }

    fn request(req: impl FnOnce(&mut GenRequest)) -> Result<(String, Value), String> {
        let mut r = GenRequest {
            id: 1,
            model: "meta-llama/Meta-Llama-3.1-8B-Instruct".into(),
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

    fn kv(key: &str, value: &str) -> Kv {
        Kv {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn chat_transcript_conformance() {
        let out = assert_split_invariant(CHAT);
        let texts: Vec<&str> = out.deltas.iter().map(|d| d.1.as_str()).collect();
        assert_eq!(texts, ["The", " capital", " is", " Paris"]);
        assert_eq!(
            out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(out.finish.as_deref(), Some("length"));
        assert_eq!(out.usage, Some((Some(42), Some(4), None)));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn completions_transcript_conformance() {
        let out = assert_split_invariant(COMPLETIONS);
        assert_eq!(out.text(), " a b c");
        assert_eq!(
            out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(out.finish.as_deref(), Some("length"));
        assert_eq!(out.usage, Some((Some(5), Some(3), None)));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn raw_error_line_fails_the_request() {
        let cut = 1 + COMPLETIONS[1..]
            .windows(6)
            .position(|w| w == b"data: ")
            .unwrap();
        for raw in [
            &b"{\"error\":{\"message\":\"Sequence aborted: out of KV cache blocks\",\"code\":500}}"[..],
            b"{\"error\": {\"message\": \"Sequence aborted: out of KV cache blocks\", \"code\": 500}}",
        ] {
            let body = [&COMPLETIONS[..cut], raw].concat();
            let out = assert_split_invariant(&body);
            assert_eq!((out.text().as_str(), out.done), (" a", 0));
            assert_eq!(
                out.errors,
                [(
                    ErrorKind::Server,
                    "Sequence aborted: out of KV cache blocks".to_owned()
                )]
            );
        }
        let body = b"data: {\"choices\":[{\"index\":0,\"text\":\" a\",\"logprobs\":null,\"finish_reason\":null}]}\n\n{\"error\":{\"message\":\"The input is too long\",\"code\":400}}\n";
        let out = assert_split_invariant(body);
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::ContextLength));
        let body = b"data: {\"choices\":[{\"index\":0,\"text\":\" a\",\"logprobs\":null,\"finish_reason\":null}]}\n\ndata: {\"error\":{\"message\":\"boom\",\"code\":500}}\n\n";
        let out = assert_split_invariant(body);
        assert_eq!(out.errors, [(ErrorKind::Server, "boom".to_owned())]);
    }

    #[test]
    fn request_body() {
        let _guard = OPTION_LOCK.lock().unwrap();
        let (path, v) = request(|_| {}).unwrap();
        assert_eq!(path, "/v1/completions");
        assert_eq!(path, Adapter::info().default_endpoint);
        assert_eq!(v["model"], "meta-llama/Meta-Llama-3.1-8B-Instruct");
        assert_eq!(v["prompt"], "What is the capital of France?");
        assert_eq!(v["max_tokens"], 4);
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        for key in [
            "temperature",
            "ignore_eos",
            "max_completion_tokens",
            "repetition_penalty",
        ] {
            assert!(v.get(key).is_none(), "{key}");
        }
        let (_, v) = request(|r| {
            r.ignore_eos = true;
            r.streaming = false;
            r.temperature = Some(0.0);
            r.extra_body = Some(r#"{"priority":"high","max_tokens":8}"#.into());
        })
        .unwrap();
        assert_eq!(
            (&v["ignore_eos"], &v["stream"]),
            (&json(true), &json(false))
        );
        assert!(v.get("stream_options").is_none());
        assert_eq!(v["temperature"], 0.0);
        assert_eq!(
            (&v["priority"], &v["max_tokens"]),
            (&json("high"), &json(8))
        );
        assert!(request(|r| r.extra_body = Some("{".into())).is_err());
        Adapter::configure(vec![kv("api", "chat")]).unwrap();
        let chat = request(|r| {
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
        });
        Adapter::configure(vec![kv("api", "completions")]).unwrap();
        let (path, v) = chat.unwrap();
        assert_eq!(path, "/v1/chat/completions");
        assert_eq!(
            v["messages"][0],
            json_obj(r#"{"role":"system","content":"Be brief."}"#)
        );
        assert_eq!(v["max_tokens"], 4);
        assert!(v.get("max_completion_tokens").is_none());
        assert!(Adapter::configure(vec![kv("api", "responses")]).is_err());
        assert!(Adapter::configure(vec![kv("max-tokens-field", "both")]).is_err());
        assert!(Adapter::info().supports_ignore_eos);
    }

    fn json(v: impl Into<Value>) -> Value {
        v.into()
    }

    fn json_obj(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn http_errors_carry_the_server_message() {
        let e = Adapter::map_error(
            404,
            Vec::new(),
            br#"{"error":{"message":"The model `gpt-4` does not exist.","code":404}}"#.to_vec(),
        );
        assert_eq!(e.message, "The model `gpt-4` does not exist.");
        assert_eq!(e.http_status, Some(404));
        assert!(matches!(e.kind, ErrorKind::NotFound));
        let e = Adapter::map_error(
            400,
            Vec::new(),
            br#"{"error":{"message":"best_of must be equal to n for streaming","code":400}}"#
                .to_vec(),
        );
        assert!(matches!(e.kind, ErrorKind::BadRequest));
        assert_eq!(e.message, "best_of must be equal to n for streaming");
    }

    #[test]
    fn truncated_stream_fails_at_finish() {
        let cut = CHAT.len() - b"data: [DONE]\n\n".len();
        let out = assert_split_invariant(&CHAT[..cut]);
        assert_eq!(out.text(), "The capital is Paris");
        assert_eq!(out.done, 0);
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        assert!(out.errors[0].1.contains("[DONE]"));
    }

    #[test]
    fn non_streaming_bodies() {
        let body = br#"{"id":"cmpl-1","object":"text_completion","created":1736900000,"model":"m","choices":[{"index":0,"text":" a b c","logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"total_tokens":8,"completion_tokens":3}}"#;
        let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
        assert_eq!(
            (c.text.as_str(), c.finish.as_deref()),
            (" a b c", Some("length"))
        );
        assert_eq!(c.usage.unwrap().completion_tokens, Some(3));
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1736900000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Paris"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"total_tokens":43,"completion_tokens":1}}"#;
        let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
        assert_eq!(
            (c.text.as_str(), c.finish.as_deref()),
            ("Paris", Some("stop"))
        );
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            CHAT,
            COMPLETIONS,
            b"data: {\"choices\":[{\"index\":0,\"text\":\" a\",\"logprobs\":null,\"finish_reason\":null}]}\n\n{\"error\":{\"message\":\"The input is too long\",\"code\":400}}\n",
            br#"{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Paris"},"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":1}}"#,
        ]);
    }
}
