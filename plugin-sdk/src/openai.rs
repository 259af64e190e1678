//! The OpenAI wire format (completions and chat), shared by every OpenAI-compatible adapter.
//!
//! Follows `vllm bench serve`: every chunk with a non-empty `choices` list is a delta (a
//! role-only first chat chunk included, text possibly empty); the usage-only last chunk and
//! `[DONE]` are not. A stream that ends without `[DONE]` fails, as does an in-band error object
//! or a `finish_reason` of `error`/`abort`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::backend::{
    BackendError, ChatMessage, Completion, ContentPart, Delta, ErrorKind, FrameBatch, GenRequest,
    Prompt, Role, StreamEvent, Usage,
};
use crate::json::{error_message, merge_extra_body};

/// Which OpenAI route a stream or body belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

/// How a chat adapter names the output cap: OpenAI and vLLM take `max_completion_tokens`,
/// some self-hosted servers only `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    MaxTokens,
    MaxCompletionTokens,
    Both,
}

impl MaxTokensField {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "max_tokens" => Ok(Self::MaxTokens),
            "max_completion_tokens" => Ok(Self::MaxCompletionTokens),
            "both" => Ok(Self::Both),
            other => Err(format!(
                "max-tokens-field must be max_tokens, max_completion_tokens or both, not {other:?}"
            )),
        }
    }
}

/// Body-building choices an adapter makes on top of the baseline OpenAI request.
#[derive(Debug, Clone, Copy)]
pub struct BodyOptions {
    pub max_tokens_field: MaxTokensField,
    /// Send `ignore_eos` when the run asks for fixed output lengths (self-hosted servers only).
    pub send_ignore_eos: bool,
    /// vLLM's bench sends `repetition_penalty: 1.0`; keep parity when emulating it.
    pub repetition_penalty_one: bool,
}

/// The error of a text adapter handed an audio dataset.
pub const AUDIO_NOT_SUPPORTED: &str =
    "this adapter sends text; the dataset produced audio (use --backend openai-audio)";

/// A prompt as one text: chat messages joined by newlines. Audio is refused with a clear error,
/// so a text adapter given an audio dataset fails its requests with the reason.
pub fn prompt_text(prompt: &Prompt) -> Result<String, String> {
    match prompt {
        Prompt::Text(t) => Ok(t.clone()),
        Prompt::Chat(messages) => Ok(flatten_chat(messages)),
        Prompt::Audio(_) => Err(AUDIO_NOT_SUPPORTED.into()),
        Prompt::Multimodal(_) => Err(crate::media::IMAGES_NOT_SUPPORTED.into()),
    }
}

/// Builds the JSON body for `/v1/completions` or `/v1/chat/completions`.
pub fn build_body(api: Api, req: &GenRequest, opts: BodyOptions) -> Result<Vec<u8>, String> {
    let mut body = json!({ "model": req.model, "stream": req.streaming });
    let obj = body.as_object_mut().expect("object literal");
    match api {
        Api::Completions => {
            let text = prompt_text(&req.prompt)?;
            obj.insert("prompt".into(), Value::String(text));
            obj.insert("max_tokens".into(), req.max_tokens.into());
        }
        Api::Chat => {
            obj.insert("messages".into(), chat_messages(&req.prompt)?);
            if matches!(
                opts.max_tokens_field,
                MaxTokensField::MaxTokens | MaxTokensField::Both
            ) {
                obj.insert("max_tokens".into(), req.max_tokens.into());
            }
            if matches!(
                opts.max_tokens_field,
                MaxTokensField::MaxCompletionTokens | MaxTokensField::Both
            ) {
                obj.insert("max_completion_tokens".into(), req.max_tokens.into());
            }
        }
    }
    if req.streaming && req.include_usage {
        obj.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(t) = req.temperature {
        obj.insert("temperature".into(), json!(t));
    }
    if opts.repetition_penalty_one {
        obj.insert("repetition_penalty".into(), json!(1.0));
    }
    if opts.send_ignore_eos && req.ignore_eos {
        obj.insert("ignore_eos".into(), Value::Bool(true));
    }
    merge_extra_body(&mut body, req.extra_body.as_deref())?;
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

/// The prompt as an OpenAI `messages` list (a raw prompt becomes one user message).
pub fn chat_messages(prompt: &Prompt) -> Result<Value, String> {
    Ok(Value::Array(match prompt {
        Prompt::Text(t) => vec![json!({"role": "user", "content": t})],
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| json!({"role": role_name(m.role), "content": m.content}))
            .collect(),
        Prompt::Audio(_) => return Err(AUDIO_NOT_SUPPORTED.into()),
        // OpenAI's content parts, which vLLM, SGLang and llama.cpp's multimodal servers take.
        Prompt::Multimodal(messages) => messages
            .iter()
            .map(|m| {
                let parts: Vec<Value> = m
                    .parts
                    .iter()
                    .map(|part| match part {
                        ContentPart::Text(t) => json!({"type": "text", "text": t}),
                        ContentPart::Image(image) => json!({
                            "type": "image_url",
                            "image_url": {"url": crate::media::image_url(image)},
                        }),
                    })
                    .collect();
                json!({"role": role_name(m.role), "content": parts})
            })
            .collect(),
    }))
}

/// vLLM's `/tokenize` request for what `build_body` sends on `api`: the completions prompt, or
/// the chat messages with the generation prompt the server's template appends (SGLang and other
/// OpenAI-compatible servers take the same body).
pub fn tokenize_request(api: Api, req: &GenRequest) -> Option<crate::backend::HttpRequest> {
    let body = match api {
        Api::Completions => json!({"model": req.model, "prompt": prompt_text(&req.prompt).ok()?}),
        Api::Chat => json!({
            "model": req.model,
            "messages": chat_messages(&req.prompt).ok()?,
            "add_generation_prompt": true,
        }),
    };
    Some(crate::tokenize::json_request("/tokenize", &body))
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

fn flatten_chat(messages: &[ChatMessage]) -> String {
    let parts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    parts.join("\n")
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<UsageJson>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default, borrow)]
    object: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<ChatDelta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChatDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UsageJson {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<u32>,
}

impl From<UsageJson> for Usage {
    fn from(u: UsageJson) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_prompt_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
            reasoning_tokens: u.completion_tokens_details.and_then(|d| d.reasoning_tokens),
        }
    }
}

/// Per-request state of an OpenAI stream.
#[derive(Debug)]
pub struct OpenAiStream {
    api: Api,
    done: bool,
    failed: bool,
}

impl OpenAiStream {
    pub fn new(api: Api) -> Self {
        Self {
            api,
            done: false,
            failed: false,
        }
    }

    /// Parses the frames of one read into events, in order.
    pub fn feed(&mut self, batch: &FrameBatch) -> Vec<StreamEvent> {
        let mut events = Vec::with_capacity(batch.len() + 1);
        for (i, event, data) in batch.iter() {
            self.frame(i, event, data, &mut events);
        }
        events
    }

    /// End of body: a stream without `[DONE]` is incomplete.
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        if self.done || self.failed {
            return Vec::new();
        }
        self.failed = true;
        vec![StreamEvent::Error(protocol_error(
            "the stream ended before `data: [DONE]`".into(),
        ))]
    }

    fn frame(
        &mut self,
        index: u32,
        event: Option<&str>,
        data: &[u8],
        events: &mut Vec<StreamEvent>,
    ) {
        if self.done || self.failed {
            return;
        }
        let data = data.trim_ascii();
        if data.is_empty() {
            return;
        }
        if data == b"[DONE]" {
            self.done = true;
            events.push(StreamEvent::Done);
            return;
        }
        if event == Some("error") {
            self.fail(error_from_payload(data, None), events);
            return;
        }
        let chunk: Chunk = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => {
                let shown = String::from_utf8_lossy(&data[..data.len().min(120)]).into_owned();
                self.fail(
                    protocol_error(format!("malformed stream chunk ({e}): {shown}")),
                    events,
                );
                return;
            }
        };
        if chunk.error.is_some() || chunk.object.as_deref() == Some("error") {
            self.fail(error_from_payload(data, None), events);
            return;
        }
        if let Some(choices) = chunk.choices {
            for choice in choices {
                let (text, reasoning) = match self.api {
                    Api::Completions => {
                        (choice.text.unwrap_or_default().into_owned(), String::new())
                    }
                    Api::Chat => match choice.delta {
                        Some(d) => (
                            d.content.unwrap_or_default().into_owned(),
                            d.reasoning
                                .or(d.reasoning_content)
                                .unwrap_or_default()
                                .into_owned(),
                        ),
                        None => (choice.text.unwrap_or_default().into_owned(), String::new()),
                    },
                };
                events.push(StreamEvent::Delta(Delta {
                    frame: index,
                    text,
                    reasoning,
                    tokens: None,
                    index: choice.index,
                }));
                if let Some(reason) = choice.finish_reason {
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
                    events.push(StreamEvent::Finish(reason.into_owned()));
                }
            }
        }
        if let Some(usage) = chunk.usage {
            events.push(StreamEvent::Usage(usage.into()));
        }
    }

    fn fail(&mut self, err: BackendError, events: &mut Vec<StreamEvent>) {
        self.failed = true;
        events.push(StreamEvent::Error(err));
    }
}

fn protocol_error(message: String) -> BackendError {
    BackendError {
        kind: ErrorKind::Protocol,
        message,
        http_status: None,
        retryable: false,
    }
}

fn error_from_payload(data: &[u8], status: Option<u16>) -> BackendError {
    let parsed: Option<Value> = serde_json::from_slice(data).ok();
    let message = parsed.as_ref().and_then(error_message).unwrap_or_else(|| {
        String::from_utf8_lossy(&data[..data.len().min(300)])
            .trim()
            .to_owned()
    });
    let code = parsed.as_ref().and_then(|v| {
        v.get("error")
            .and_then(|e| e.get("code"))
            .or_else(|| v.get("code"))
            .and_then(Value::as_u64)
            .map(|c| c as u16)
    });
    classify(status.or(code), message)
}

/// Normalizes an error by HTTP status (or in-band code) and message.
pub fn classify(status: Option<u16>, message: String) -> BackendError {
    let lower = message.to_ascii_lowercase();
    let kind = if lower.contains("context length")
        || lower.contains("maximum context")
        || lower.contains("too long")
    {
        ErrorKind::ContextLength
    } else {
        match status {
            Some(400 | 422) => ErrorKind::BadRequest,
            Some(401 | 403) => ErrorKind::Unauthorized,
            Some(404) => ErrorKind::NotFound,
            Some(408 | 504) => ErrorKind::Timeout,
            Some(429) => ErrorKind::RateLimited,
            Some(503) => ErrorKind::Overloaded,
            Some(500..=599) => ErrorKind::Server,
            _ => ErrorKind::Unknown,
        }
    };
    let message = if message.trim().is_empty() {
        status
            .map(|s| format!("HTTP {s} with an empty body"))
            .unwrap_or_else(|| "unknown error".into())
    } else {
        message
    };
    BackendError {
        retryable: matches!(
            kind,
            ErrorKind::RateLimited | ErrorKind::Overloaded | ErrorKind::Timeout
        ),
        kind,
        message,
        http_status: status,
    }
}

/// Maps a non-2xx response to an error carrying the server's own message.
pub fn map_error(status: u16, body: &[u8]) -> BackendError {
    let mut err = error_from_payload(body, Some(status));
    err.http_status = Some(status);
    err
}

/// Parses a non-streaming 2xx body.
pub fn parse_body(api: Api, status: u16, body: &[u8]) -> Result<Completion, BackendError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| protocol_error(format!("response body is not JSON: {e}")))?;
    if crate::json::is_error_object(&v) {
        return Err(map_error(status, body));
    }
    let choice = v.get("choices").and_then(|c| c.get(0));
    let text = match api {
        Api::Completions => choice.and_then(|c| c.get("text")),
        Api::Chat => choice
            .and_then(|c| c.get("message"))
            .and_then(|m| m.get("content")),
    }
    .and_then(Value::as_str)
    .unwrap_or_default()
    .to_owned();
    // vLLM's and DeepSeek's `reasoning_content`, or the newer `reasoning`.
    let message = choice.and_then(|c| c.get("message"));
    let reasoning = ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|k| message.and_then(|m| m.get(*k)).and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let usage = v
        .get("usage")
        .and_then(|u| serde_json::from_value::<UsageJson>(u.clone()).ok())
        .map(Usage::from);
    Ok(Completion {
        text,
        reasoning,
        finish,
        usage,
    })
}

/// What distinguishes one OpenAI-compatible adapter from another.
pub trait Flavor: 'static {
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    const API: Api;
    const DEFAULT_ENDPOINT: &'static str;
    const DEFAULT_MAX_TOKENS_FIELD: MaxTokensField;
    /// vLLM's bench sends `repetition_penalty: 1.0`; hosted APIs reject unknown fields.
    const REPETITION_PENALTY_ONE: bool;
    /// Whether to ask the server's vLLM-style `/tokenize` route for input lengths. OpenAI-
    /// compatible servers mostly have it; where one does not, the host notices the refusal of
    /// the first request and estimates instead.
    const TOKENIZE_ROUTE: bool = true;
}

static MAX_TOKENS_FIELD: std::sync::Mutex<Option<MaxTokensField>> = std::sync::Mutex::new(None);

/// The server behind the OpenAI-compatible routes (`server` option; the host offers what the
/// server's `/v1/models` says in `owned_by`), for the parts that differ: its tokenize route.
static SERVER: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The tokenize request in the dialect of `server`: llama.cpp's `/tokenize` reads only
/// `content` (and answers an empty list for vLLM's body) and has no chat form in one request,
/// so a chat prompt's plain text is counted without its template; everything else takes
/// vLLM's shape.
pub fn tokenize_request_for(
    server: Option<&str>,
    api: Api,
    req: &GenRequest,
) -> Option<crate::backend::HttpRequest> {
    match server {
        Some("llamacpp" | "llama.cpp") => match api {
            Api::Completions => Some(crate::tokenize::json_request(
                "/tokenize",
                // The completions route tokenizes with special tokens (BOS) added.
                &json!({"content": prompt_text(&req.prompt).ok()?, "add_special": true}),
            )),
            // No one-request form for messages (the template needs `/apply-template` first);
            // a plain prompt's content is counted alone and the template stays apart.
            Api::Chat => match &req.prompt {
                Prompt::Text(t) => Some(crate::tokenize::json_request(
                    "/tokenize",
                    &json!({"content": t, "add_special": false}),
                )),
                _ => None,
            },
        },
        _ => tokenize_request(api, req),
    }
}

/// A complete adapter for an OpenAI-compatible route; a plugin crate picks a [`Flavor`] and
/// exports `OpenAiAdapter<ItsFlavor>` under a type alias.
pub struct OpenAiAdapter<F: Flavor>(std::marker::PhantomData<F>);

/// The streaming parser resource of [`OpenAiAdapter`].
pub struct OpenAiParser<F: Flavor> {
    stream: std::cell::RefCell<OpenAiStream>,
    _flavor: std::marker::PhantomData<F>,
}

impl<F: Flavor> crate::backend::Guest for OpenAiAdapter<F> {
    type ResponseParser = OpenAiParser<F>;

    fn info() -> crate::backend::BackendInfo {
        crate::backend::BackendInfo {
            name: F::NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: F::DESCRIPTION.into(),
            default_endpoint: F::DEFAULT_ENDPOINT.into(),
            framing: crate::backend::Framing::Sse,
            supports_ignore_eos: true,
            http2: false,
            api_key_header: None,
        }
    }

    fn configure(options: Vec<crate::backend::Kv>) -> Result<(), String> {
        for kv in options {
            match kv.key.as_str() {
                "max-tokens-field" => {
                    *MAX_TOKENS_FIELD.lock().unwrap() = Some(MaxTokensField::parse(&kv.value)?)
                }
                "server" => *SERVER.lock().unwrap() = Some(kv.value.to_ascii_lowercase()),
                other => {
                    return Err(format!(
                        "unknown option {other:?} for the {} adapter (known: max-tokens-field, server)",
                        F::NAME
                    ));
                }
            }
        }
        Ok(())
    }

    fn build_request(req: GenRequest) -> Result<crate::backend::HttpRequest, String> {
        let max_tokens_field = MAX_TOKENS_FIELD
            .lock()
            .unwrap()
            .unwrap_or(F::DEFAULT_MAX_TOKENS_FIELD);
        let body = build_body(
            F::API,
            &req,
            BodyOptions {
                max_tokens_field,
                send_ignore_eos: true,
                repetition_penalty_one: F::REPETITION_PENALTY_ONE,
            },
        )?;
        Ok(crate::backend::HttpRequest {
            method: "POST".into(),
            path: F::DEFAULT_ENDPOINT.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        })
    }

    fn parse_body(
        status: u16,
        _headers: crate::backend::Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        parse_body(F::API, status, &body)
    }

    fn map_error(status: u16, _headers: crate::backend::Headers, body: Vec<u8>) -> BackendError {
        map_error(status, &body)
    }

    fn tokenize_request(req: GenRequest) -> Option<crate::backend::HttpRequest> {
        let server = SERVER.lock().unwrap().clone();
        F::TOKENIZE_ROUTE
            .then(|| tokenize_request_for(server.as_deref(), F::API, &req))
            .flatten()
    }

    fn parse_tokenize(body: Vec<u8>) -> Result<u32, String> {
        crate::tokenize::count_from_body(&body)
    }
}

impl<F: Flavor> crate::backend::GuestResponseParser for OpenAiParser<F> {
    fn new(_status: u16, _headers: crate::backend::Headers) -> Self {
        Self {
            stream: OpenAiStream::new(F::API).into(),
            _flavor: std::marker::PhantomData,
        }
    }

    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        self.stream.borrow_mut().feed(&batch)
    }

    fn finish(&self, _trailers: crate::backend::Headers) -> Vec<StreamEvent> {
        self.stream.borrow_mut().finish()
    }
}
