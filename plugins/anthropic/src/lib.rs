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
//! The API key: Anthropic's API reads `x-api-key`, so `info` names that header and the host
//! puts `--api-key` there (an adapter never sees the key). `--api-key-header authorization`
//! sends it as `Authorization: Bearer` instead, for servers such as vLLM that take only that.

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
            reasoning_tokens: None,
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
    #[serde(default)]
    thinking: String,
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

/// The Messages API role of a chat turn: a system turn goes into the request's `system` field
/// (`None` here), a tool result is the user's turn.
fn message_role(role: Role) -> Option<&'static str> {
    match role {
        Role::System => None,
        Role::Assistant => Some("assistant"),
        Role::User | Role::Tool => Some("user"),
    }
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
                    let role = message_role(m.role)?;
                    Some(json!({ "role": role, "content": m.content }))
                })
                .collect();
            let system = (!system.is_empty()).then(|| system.join("\n\n"));
            Ok((system, messages))
        }
        // Anthropic's content blocks: `text`, and `image` with a base64 or URL source.
        Prompt::Multimodal(chat) => {
            let system: Vec<String> = chat
                .iter()
                .filter(|m| matches!(m.role, Role::System))
                .map(llmb_plugin_sdk::media::message_text)
                .collect();
            let messages = chat
                .iter()
                .filter_map(|m| {
                    let role = message_role(m.role)?;
                    let blocks: Vec<Value> = m
                        .parts
                        .iter()
                        .map(|part| match part {
                            ContentPart::Text(t) => json!({ "type": "text", "text": t }),
                            ContentPart::Image(image) => json!({
                                "type": "image",
                                "source": match image.url.as_deref().map(split_data_url) {
                                    // Anthropic's `url` source takes http(s) URLs only.
                                    Some(Some((media_type, data))) => json!({
                                        "type": "base64",
                                        "media_type": media_type,
                                        "data": data,
                                    }),
                                    Some(None) => json!({ "type": "url", "url": image.url }),
                                    None => json!({
                                        "type": "base64",
                                        "media_type": image.mime_type,
                                        "data": llmb_plugin_sdk::media::base64(&image.data),
                                    }),
                                },
                            }),
                        })
                        .collect();
                    Some(json!({ "role": role, "content": blocks }))
                })
                .collect();
            let system = (!system.is_empty()).then(|| system.join("\n\n"));
            Ok((system, messages))
        }
    }
}

/// A `data:MEDIA;base64,DATA` URL as its media type and base64 data.
fn split_data_url(url: &str) -> Option<(&str, &str)> {
    let (head, data) = url.strip_prefix("data:")?.split_once(',')?;
    let media_type = head.strip_suffix(";base64")?;
    Some((media_type, data))
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            // Anthropic's own header; `--api-key-header` still overrides it.
            api_key_header: Some("x-api-key".into()),
            name: "anthropic".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Anthropic Messages API POST /v1/messages (system apart from messages, anthropic-version 2023-06-01; named SSE events, text_delta and thinking_delta, usage in message_start and message_delta; no ignore_eos, output lengths cannot be forced; option thinking-budget=N (at least 1024); the key goes in x-api-key, as Anthropic wants; --api-key-header authorization sends it as Bearer)".into(),
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

    /// The text is every `text` block, in order, and the reasoning every `thinking` block; tool
    /// blocks are left out.
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
        let reasoning = m
            .content
            .iter()
            .filter(|block| block.kind == "thinking")
            .map(|block| block.thinking.as_str())
            .collect();
        Ok(Completion {
            reasoning,
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
mod tests;
