//! Anthropic's Messages API, `POST /v1/messages`: named SSE events from `message_start` to
//! `message_stop`. Text arrives in `content_block_delta` events of type `text_delta`, extended
//! thinking in `thinking_delta` (its `signature_delta` and tool `input_json_delta` carry no
//! output text); `message_start` carries the input usage, `message_delta` the stop reason and the
//! output tokens; `ping` keeps the connection alive and an `error` event fails the stream. There
//! is no `[DONE]` and no `ignore_eos`, so output lengths cannot be forced.
//!
//! Anthropic has no system role among the messages: system messages go to the top-level
//! `system` field. Its `input_tokens` counts only the prompt tokens read neither from nor into
//! the prompt cache, so the prompt tokens reported to the host are `input_tokens +
//! cache_creation_input_tokens + cache_read_input_tokens` (what OpenAI's `prompt_tokens`
//! counts), the cached ones `cache_read_input_tokens`.
//!
//! The API key: Anthropic's API reads `x-api-key`, while llmb sends `--api-key` as
//! `Authorization: Bearer` and an adapter may not set credentials (nor does it see the key);
//! pass `--header x-api-key=KEY` to a server that wants the Anthropic header.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Mutex;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::merge_extra_body;
use llmb_plugin_sdk::openai::{self, AUDIO_NOT_SUPPORTED, classify};
use serde::Deserialize;
use serde_json::{Value, json};

/// The API version this adapter speaks (the only one Anthropic has published).
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `--plugin-opt thinking-budget=N`: ask for extended thinking with this many tokens.
static THINKING_BUDGET: Mutex<Option<u32>> = Mutex::new(None);

/// The `anthropic` adapter.
pub struct Adapter;

/// Per-request stream state: the usage gathered so far, whether it was reported, whether
/// `message_stop` arrived or the stream already failed.
#[derive(Default)]
pub struct Parser {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    usage: UsageJson,
    usage_sent: bool,
    done: bool,
    failed: bool,
}

/// Events whose payload carries nothing the host needs, skipped unparsed when named.
const SKIPPED: [&str; 2] = ["ping", "content_block_stop"];

/// One stream event's payload, reduced to the fields of the handled types.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    /// `content_block_delta`'s delta (`type` and `text`/`thinking`), or `message_delta`'s
    /// (`stop_reason`).
    #[serde(borrow)]
    delta: Option<DeltaJson<'a>>,
    /// `message_start`'s message.
    message: Option<MessageStart>,
    /// `content_block_start`'s block (normally empty; its text counts when it is not).
    #[serde(borrow)]
    content_block: Option<BlockJson<'a>>,
    /// `message_delta`'s cumulative usage.
    usage: Option<UsageJson>,
}

#[derive(Deserialize)]
struct DeltaJson<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    thinking: Option<Cow<'a, str>>,
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct MessageStart {
    usage: Option<UsageJson>,
}

#[derive(Deserialize)]
struct BlockJson<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    thinking: Option<Cow<'a, str>>,
}

/// Anthropic's usage object; every field optional, as `message_delta` may repeat only some.
#[derive(Deserialize, Default, Clone, Copy)]
struct UsageJson {
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
    cache_creation_input_tokens: Option<u32>,
    cache_read_input_tokens: Option<u32>,
}

impl UsageJson {
    /// Fields present in `later` replace these (`message_delta`'s counts are cumulative).
    fn update(&mut self, later: UsageJson) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }

    /// The host's usage: every prompt token (uncached, written to the cache, read from it).
    fn to_usage(self) -> Usage {
        let prompt = self.input_tokens.map(|n| {
            n.saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
                .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
        });
        Usage {
            prompt_tokens: prompt,
            completion_tokens: self.output_tokens,
            cached_prompt_tokens: self.cache_read_input_tokens,
        }
    }
}

/// A whole (non-streaming) message.
#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Vec<ContentBlock>,
    stop_reason: Option<String>,
    usage: Option<UsageJson>,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

/// An Anthropic error (`{"type":"error","error":{"type":…,"message":…}}`, as a body or an
/// `error` event): the server's message, the kind by its error type, else by the HTTP status.
fn anthropic_error(status: Option<u16>, v: &Value) -> BackendError {
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| llmb_plugin_sdk::json::error_message(v))
        .unwrap_or_else(|| format!("the server sent an error: {v}"));
    let mut err = classify(status, message);
    let lower = err.message.to_ascii_lowercase();
    let context = matches!(err.kind, ErrorKind::ContextLength)
        || lower.contains("context limit")
        || lower.contains("context window");
    err.kind = match v.pointer("/error/type").and_then(Value::as_str) {
        _ if context => ErrorKind::ContextLength,
        Some("invalid_request_error" | "request_too_large") => ErrorKind::BadRequest,
        Some("authentication_error" | "permission_error") => ErrorKind::Unauthorized,
        Some("not_found_error") => ErrorKind::NotFound,
        Some("rate_limit_error") => ErrorKind::RateLimited,
        Some("overloaded_error") => ErrorKind::Overloaded,
        Some("timeout_error") => ErrorKind::Timeout,
        Some("api_error") => ErrorKind::Server,
        // Another shape (a proxy's, a gateway's): the status decides, and an in-stream error
        // without one is the server's.
        _ if status.is_none() && matches!(err.kind, ErrorKind::Unknown) => ErrorKind::Server,
        _ => err.kind,
    };
    err.retryable = matches!(
        err.kind,
        ErrorKind::RateLimited | ErrorKind::Overloaded | ErrorKind::Timeout
    );
    err.http_status = status;
    err
}

/// The prompt as Anthropic's top-level `system` text (system messages joined by blank lines)
/// and its `messages`. A tool message without a tool call to answer is sent as a user message.
fn messages(prompt: &Prompt) -> Result<(Option<String>, Value), String> {
    match prompt {
        Prompt::Text(t) => Ok((None, json!([{ "role": "user", "content": t }]))),
        Prompt::Audio(_) => Err(AUDIO_NOT_SUPPORTED.into()),
        Prompt::Chat(chat) => {
            let system: Vec<&str> = chat
                .iter()
                .filter(|m| matches!(m.role, Role::System))
                .map(|m| m.content.as_str())
                .collect();
            let messages = chat
                .iter()
                .filter_map(|m| {
                    let role = match m.role {
                        Role::System => return None,
                        Role::Assistant => "assistant",
                        Role::User | Role::Tool => "user",
                    };
                    Some(json!({ "role": role, "content": m.content }))
                })
                .collect();
            let system = (!system.is_empty()).then(|| system.join("\n\n"));
            Ok((system, messages))
        }
    }
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            name: "anthropic".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Anthropic Messages API POST /v1/messages (system apart from messages, anthropic-version 2023-06-01; named SSE events, text_delta and thinking_delta, usage in message_start and message_delta; no ignore_eos, output lengths cannot be forced; option thinking-budget=N (at least 1024); send the key with --api-key-header x-api-key where Bearer is refused)".into(),
            default_endpoint: "/v1/messages".into(),
            framing: Framing::Sse,
            supports_ignore_eos: false,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        for kv in options {
            match kv.key.as_str() {
                "thinking-budget" => {
                    // Anthropic refuses budgets under 1,024 tokens (and at or above max_tokens,
                    // which only the server knows to check against each request).
                    let budget = kv.value.trim().parse::<u32>().ok().filter(|&n| n >= 1024);
                    let Some(budget) = budget else {
                        return Err(format!(
                            "thinking-budget must be a number of tokens of at least 1024 (Anthropic's minimum), not {:?}",
                            kv.value
                        ));
                    };
                    *THINKING_BUDGET.lock().unwrap() = Some(budget);
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?} for the anthropic adapter (known: thinking-budget)"
                    ));
                }
            }
        }
        Ok(())
    }

    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let (system, messages) = messages(&req.prompt)?;
        let mut body = json!({
            "model": req.model,
            "max_tokens": req.max_tokens,
            "messages": messages,
            "stream": req.streaming,
        });
        if let Some(system) = system {
            body["system"] = json!(system);
        }
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(budget) = *THINKING_BUDGET.lock().unwrap() {
            body["thinking"] = json!({ "type": "enabled", "budget_tokens": budget });
        }
        merge_extra_body(&mut body, req.extra_body.as_deref())?;
        Ok(HttpRequest {
            method: "POST".into(),
            path: "/v1/messages".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("anthropic-version".into(), ANTHROPIC_VERSION.into()),
            ],
            body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
        })
    }

    /// The text is every `text` block, in order; thinking and tool blocks are left out.
    fn parse_body(
        status: u16,
        _headers: Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| protocol(format!("response body is not JSON: {e}")))?;
        if v.get("type").and_then(Value::as_str) == Some("error")
            || llmb_plugin_sdk::json::is_error_object(&v)
        {
            return Err(anthropic_error(Some(status), &v));
        }
        // Anything else that is not a message (another API's body at this path) is not an
        // empty answer.
        if v.get("content").is_none_or(|c| !c.is_array()) {
            let shown: String = v.to_string().chars().take(200).collect();
            return Err(protocol(format!(
                "not a Messages body (no content list): {shown}"
            )));
        }
        let m: Message = serde_json::from_value(v)
            .map_err(|e| protocol(format!("unexpected Messages body: {e}")))?;
        let text = m
            .content
            .iter()
            .filter(|block| block.kind == "text")
            .map(|block| block.text.as_str())
            .collect();
        Ok(Completion {
            text,
            finish: m.stop_reason,
            usage: m.usage.map(UsageJson::to_usage),
        })
    }

    fn map_error(status: u16, _headers: Headers, body: Vec<u8>) -> BackendError {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v.is_object() => anthropic_error(Some(status), &v),
            // Not JSON (a proxy's page): the status and the text.
            _ => openai::map_error(status, &body),
        }
    }

    fn tokenize_request(_req: GenRequest) -> Option<HttpRequest> {
        None
    }

    fn parse_tokenize(_body: Vec<u8>) -> Result<u32, String> {
        Err(llmb_plugin_sdk::tokenize::NO_ROUTE.into())
    }
}

impl Parser {
    fn frame(&self, frame: u32, name: Option<&str>, data: &[u8], events: &mut Vec<StreamEvent>) {
        let mut state = self.state.borrow_mut();
        let data = data.trim_ascii();
        if state.done || state.failed || data.is_empty() {
            return;
        }
        if name.is_some_and(|n| SKIPPED.contains(&n)) {
            return;
        }
        if name == Some("error") {
            // The server's message in whatever shape it came, never "malformed event".
            let v: Value = serde_json::from_slice(data).unwrap_or_else(|_| {
                let text = String::from_utf8_lossy(&data[..data.len().min(300)]).into_owned();
                let mut error = serde_json::Map::new();
                error.insert("message".into(), Value::String(text));
                let mut outer = serde_json::Map::new();
                outer.insert("error".into(), Value::Object(error));
                Value::Object(outer)
            });
            state.failed = true;
            events.push(StreamEvent::Error(anthropic_error(None, &v)));
            return;
        }
        let ev: Event = match serde_json::from_slice(data) {
            Ok(ev) => ev,
            Err(e) => {
                let shown = String::from_utf8_lossy(&data[..data.len().min(120)]);
                state.failed = true;
                events.push(StreamEvent::Error(protocol(format!(
                    "malformed Messages stream event ({e}): {shown}"
                ))));
                return;
            }
        };
        let delta = |text: &str, reasoning: &str| {
            StreamEvent::Delta(Delta {
                frame,
                text: text.to_owned(),
                reasoning: reasoning.to_owned(),
                tokens: None,
                index: 0,
            })
        };
        match name.or(ev.kind.as_deref()).unwrap_or_default() {
            "message_start" => {
                if let Some(usage) = ev.message.and_then(|m| m.usage) {
                    state.usage.update(usage);
                }
            }
            "content_block_start" => {
                // Servers start blocks empty; text already in one is output all the same.
                if let Some(block) = ev.content_block {
                    match (block.kind.as_deref(), block.text, block.thinking) {
                        (Some("text"), Some(t), _) if !t.is_empty() => events.push(delta(&t, "")),
                        (Some("thinking"), _, Some(t)) if !t.is_empty() => {
                            events.push(delta("", &t))
                        }
                        _ => {}
                    }
                }
            }
            "content_block_delta" => {
                let Some(d) = ev.delta else { return };
                match d.kind.as_deref() {
                    Some("text_delta") => events.push(delta(&d.text.unwrap_or_default(), "")),
                    Some("thinking_delta") => {
                        events.push(delta("", &d.thinking.unwrap_or_default()))
                    }
                    // signature_delta, input_json_delta, citations_delta: no output text.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(usage) = ev.usage {
                    state.usage.update(usage);
                    state.usage_sent = true;
                    events.push(StreamEvent::Usage(state.usage.to_usage()));
                }
                if let Some(reason) = ev.delta.and_then(|d| d.stop_reason) {
                    events.push(StreamEvent::Finish(reason));
                }
            }
            "message_stop" => {
                if !state.usage_sent && state.usage.input_tokens.is_some() {
                    events.push(StreamEvent::Usage(state.usage.to_usage()));
                }
                state.done = true;
                events.push(StreamEvent::Done);
            }
            "error" => {
                let v: Value = serde_json::from_slice(data).unwrap_or_default();
                state.failed = true;
                events.push(StreamEvent::Error(anthropic_error(None, &v)));
            }
            // ping, content_block_stop, and event types added after this adapter.
            _ => {}
        }
    }
}

impl GuestResponseParser for Parser {
    fn new(_status: u16, _headers: Headers) -> Self {
        Self::default()
    }

    /// Each text or thinking delta event is a delta (a fragment, possibly several tokens); the
    /// event name comes from `event:`, else from the payload's `type`.
    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        let mut events = Vec::with_capacity(batch.len() + 2);
        for (frame, name, data) in batch.iter() {
            self.frame(frame, name, data, &mut events);
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
            "the Messages stream ended before message_stop".into(),
        ))]
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;
    use llmb_plugin_sdk::testing::{self, Outcome};

    /// A streamed answer as Anthropic's streaming documentation shows it (spaces after colons
    /// included), with a ping after the first block starts.
    const TEXT: &[u8] = br#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"#;

    /// Extended thinking: a thinking block with its signature, then the text block; the prompt
    /// partly read from the cache.
    const THINKING: &[u8] = br#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":5,"cache_creation_input_tokens":3,"cache_read_input_tokens":20,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"1071 = 2 x 462 + 147"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"\n462 = 3 x 147 + 21"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"The GCD is **21**."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":66}}

event: message_stop
data: {"type":"message_stop"}

"#;

    /// A tool call: its JSON arrives as `input_json_delta`, which is no output text.
    const TOOL: &[u8] = br#"event: message_start
data: {"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

    const BODY: &[u8] = br#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"thinking","thinking":"Let me see.","signature":"EqQB"},{"type":"text","text":"The GCD"},{"type":"text","text":" is 21."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":4,"output_tokens":40}}"#;

    const OVERLOADED: &[u8] =
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;

    /// Frames `chunks` as the host does (one batch per read) and feeds one parser; this adapter
    /// never says how many tokens a delta carried.
    fn run(chunks: &[&[u8]]) -> Outcome {
        let out = testing::run(Parser::new(200, Vec::new()), chunks);
        assert_eq!(out.tokens(), 0);
        out
    }

    fn split_invariant(body: &[u8]) -> Outcome {
        testing::assert_split_invariant(|| Parser::new(200, Vec::new()), body)
    }

    /// `TEXT` up to its second delta, then `tail`.
    fn text_then(tail: &str) -> Vec<u8> {
        let stop = TEXT
            .windows(26)
            .position(|w| w == b"event: content_block_stop\n")
            .unwrap();
        [&TEXT[..stop], tail.as_bytes()].concat()
    }

    fn request(req: impl FnOnce(&mut GenRequest)) -> Result<HttpRequest, String> {
        let mut r = GenRequest {
            id: 1,
            model: "claude-sonnet-4-5".into(),
            prompt: Prompt::Text("What is the GCD of 1071 and 462?".into()),
            max_tokens: 64,
            ignore_eos: false,
            streaming: true,
            include_usage: true,
            temperature: None,
            extra_body: None,
        };
        req(&mut r);
        Adapter::build_request(r)
    }

    fn body_of(http: &HttpRequest) -> Value {
        serde_json::from_slice(&http.body).unwrap()
    }

    #[test]
    fn text_stream() {
        let out = split_invariant(TEXT);
        let texts: Vec<&str> = out.deltas.iter().map(|d| d.1.as_str()).collect();
        assert_eq!(texts, ["Hello", "!"]);
        // Frames: message_start, content_block_start, ping, then the deltas.
        assert_eq!(out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(out.reasoning, "");
        assert_eq!(out.finish.as_deref(), Some("end_turn"));
        assert_eq!(out.usage, Some((Some(25), Some(15), None)));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn thinking_is_reasoning_and_cached_tokens_count_as_prompt() {
        let out = split_invariant(THINKING);
        assert_eq!(out.reasoning, "1071 = 2 x 462 + 147\n462 = 3 x 147 + 21");
        assert_eq!(out.text(), "The GCD is **21**.");
        // Two thinking deltas (empty text), the signature left out, one text delta.
        assert_eq!(
            out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
            [2, 3, 7]
        );
        assert_eq!(out.finish.as_deref(), Some("max_tokens"));
        assert_eq!(out.usage, Some((Some(28), Some(66), Some(20))));
        assert_eq!(out.done, 1);
        let out = split_invariant(TOOL);
        assert_eq!(out.text(), "Checking");
        assert_eq!(out.deltas.len(), 1);
        assert_eq!(out.finish.as_deref(), Some("tool_use"));
        assert_eq!(out.usage, Some((Some(472), Some(89), None)));
    }

    #[test]
    fn unnamed_events_and_usage_without_message_delta() {
        // A server that sends only `data:` lines (the type in the payload), and no usage in
        // message_delta: the input usage is still reported at message_stop.
        let body = b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\ndata: {\"type\":\"message_stop\"}\n\n";
        let out = split_invariant(body);
        assert_eq!(out.text(), "Hi");
        assert_eq!(out.finish.as_deref(), Some("end_turn"));
        assert_eq!(out.usage, Some((Some(7), Some(1), None)));
        assert_eq!(out.done, 1);
    }

    #[test]
    fn in_stream_errors_fail_the_request_with_their_kind() {
        for (kind, expected) in [
            ("overloaded_error", ErrorKind::Overloaded),
            ("rate_limit_error", ErrorKind::RateLimited),
            ("invalid_request_error", ErrorKind::BadRequest),
            ("authentication_error", ErrorKind::Unauthorized),
            ("not_found_error", ErrorKind::NotFound),
            ("api_error", ErrorKind::Server),
        ] {
            let body = text_then(&format!(
                "event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"{kind}\", \"message\": \"went wrong: {kind}\"}}}}\n\n"
            ));
            let out = split_invariant(&body);
            assert_eq!((out.text().as_str(), out.done), ("Hello!", 0));
            assert_eq!(
                out.errors,
                [(expected, format!("went wrong: {kind}"))],
                "{kind}"
            );
            assert_eq!((out.finish, out.usage), (None, None));
        }
        // A proxy's error event that is not Anthropic's JSON still fails with its own words.
        for data in [
            "upstream connect error",
            "{\"message\":\"gateway timeout\"}",
        ] {
            let out = run(&[&text_then(&format!("event: error\ndata: {data}\n\n"))]);
            assert_eq!(out.errors.len(), 1, "{data}");
            assert!(!out.errors[0].1.contains("malformed"), "{:?}", out.errors);
            assert!(
                out.errors[0].1.contains("upstream") || out.errors[0].1.contains("gateway"),
                "{:?}",
                out.errors
            );
        }
    }

    #[test]
    fn broken_streams_fail() {
        let out = split_invariant(&text_then(""));
        assert_eq!((out.text().as_str(), out.done), ("Hello!", 0));
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        assert!(out.errors[0].1.contains("before message_stop"));
        let out = run(&[&text_then(
            "event: content_block_delta\ndata: {\"type\": BROKEN\n\n",
        )]);
        assert_eq!(out.errors.len(), 1);
        assert!(out.errors[0].1.contains("malformed"), "{:?}", out.errors);
        // Whatever follows message_stop is ignored.
        let after = [TEXT, b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"late\"}}\n\n"].concat();
        let out = run(&[&after]);
        assert!(out.errors.is_empty());
        assert_eq!(out.done, 1);
    }

    #[test]
    fn request_body() {
        let http = request(|_| {}).unwrap();
        assert_eq!(
            (http.method.as_str(), http.path.as_str()),
            ("POST", "/v1/messages")
        );
        assert_eq!(http.path, Adapter::info().default_endpoint);
        assert!(
            http.headers
                .contains(&("anthropic-version".into(), "2023-06-01".into()))
        );
        assert!(
            http.headers
                .contains(&("content-type".into(), "application/json".into()))
        );
        assert_eq!(
            body_of(&http),
            json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true,
                   "messages": [{"role": "user", "content": "What is the GCD of 1071 and 462?"}]})
        );
        let http = request(|r| {
            r.streaming = false;
            r.ignore_eos = true;
            r.temperature = Some(0.5);
            r.extra_body = Some(r#"{"metadata":{"user_id":"u1"},"max_tokens":32}"#.into());
            r.prompt = Prompt::Chat(vec![
                ChatMessage {
                    role: Role::System,
                    content: "Be brief.".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "Hi".into(),
                },
                ChatMessage {
                    role: Role::Assistant,
                    content: "Hello.".into(),
                },
                ChatMessage {
                    role: Role::System,
                    content: "Answer in French.".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "GCD?".into(),
                },
            ]);
        })
        .unwrap();
        assert_eq!(
            body_of(&http),
            json!({"model": "claude-sonnet-4-5", "max_tokens": 32, "stream": false, "temperature": 0.5,
                   "system": "Be brief.\n\nAnswer in French.",
                   "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                                {"role": "user", "content": "GCD?"}],
                   "metadata": {"user_id": "u1"}})
        );
        assert!(request(|r| r.extra_body = Some("[1]".into())).is_err());
        assert!(!Adapter::info().supports_ignore_eos);

        // The thinking budget is process-wide state: only this test sets it, after the checks
        // of the bodies without it.
        let opt = |k: &str, v: &str| {
            vec![Kv {
                key: k.into(),
                value: v.into(),
            }]
        };
        assert!(Adapter::configure(opt("thinking-budget", "0")).is_err());
        assert!(Adapter::configure(opt("thinking-budget", "1023")).is_err());
        assert!(Adapter::configure(opt("thinking-budget", "lots")).is_err());
        assert!(Adapter::configure(opt("budget", "1024")).is_err());
        Adapter::configure(opt("thinking-budget", "2048")).unwrap();
        let v = body_of(&request(|_| {}).unwrap());
        assert_eq!(
            v["thinking"],
            json!({"type": "enabled", "budget_tokens": 2048})
        );
        *THINKING_BUDGET.lock().unwrap() = None;
    }

    #[test]
    fn non_streaming_body() {
        let c = Adapter::parse_body(200, Vec::new(), BODY.to_vec()).unwrap();
        assert_eq!(c.text, "The GCD is 21.");
        assert_eq!(c.finish.as_deref(), Some("end_turn"));
        let u = c.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens),
            (Some(16), Some(40), Some(4))
        );
        let e = Adapter::parse_body(200, Vec::new(), OVERLOADED.to_vec()).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Overloaded) && e.retryable);
        assert!(Adapter::parse_body(200, Vec::new(), b"{\"content\": 3}".to_vec()).is_err());
        // A 200 that is an error, or another API's body, is not an empty answer.
        let e = Adapter::parse_body(
            200,
            Vec::new(),
            br#"{"error":{"message":"quota"}}"#.to_vec(),
        )
        .unwrap_err();
        assert!(e.message.contains("quota"), "{e:?}");
        let chat = br#"{"object":"chat.completion","choices":[{"message":{"content":"hi"}}]}"#;
        let e = Adapter::parse_body(200, Vec::new(), chat.to_vec()).unwrap_err();
        assert!(e.message.contains("not a Messages body"), "{e:?}");
    }

    #[test]
    fn http_errors_carry_the_server_message() {
        let e = Adapter::map_error(529, Vec::new(), OVERLOADED.to_vec());
        assert_eq!(e.message, "Overloaded");
        assert_eq!(e.http_status, Some(529));
        assert!(matches!(e.kind, ErrorKind::Overloaded) && e.retryable);
        let e = Adapter::map_error(
            401,
            Vec::new(),
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#.to_vec(),
        );
        assert_eq!(e.message, "invalid x-api-key");
        assert!(matches!(e.kind, ErrorKind::Unauthorized) && !e.retryable);
        let e = Adapter::map_error(
            400,
            Vec::new(),
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#.to_vec(),
        );
        assert!(matches!(e.kind, ErrorKind::ContextLength));
        let e = Adapter::map_error(
            404,
            Vec::new(),
            br#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-nope"}}"#.to_vec(),
        );
        assert!(matches!(e.kind, ErrorKind::NotFound));
        assert_eq!(e.message, "model: claude-nope");
        let e = Adapter::map_error(429, Vec::new(), br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#.to_vec());
        assert!(matches!(e.kind, ErrorKind::RateLimited) && e.retryable);
        let e = Adapter::map_error(502, Vec::new(), b"<html>Bad Gateway</html>".to_vec());
        assert!(matches!(e.kind, ErrorKind::Server));
        assert!(e.message.contains("Bad Gateway"), "{}", e.message);
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            TEXT, THINKING, TOOL, BODY, OVERLOADED,
        ]);
    }
}
