//! OpenAI-style requests: the validated [`Job`] a request becomes (for the [`Api`] its route
//! speaks), and the parsing of completions, chat, Responses, SenseTime, transcription and
//! Anthropic Messages bodies (prompts, token counts under the simulated chat template, limits,
//! fault markers).

use std::borrow::Cow;

use hyper::{Response, StatusCode};
use serde_json::Value;

use llmb_engine::tokenizer::count_words;

use crate::api::Api;
use crate::body::{SimBody, anthropic_error, api_error, bad_request};
use crate::config::MAX_MODEL_LEN;
use crate::faults::Fault;
use crate::prefix_cache::block_hashes;
use crate::state::SimState;

/// The simulated chat template, ChatML-like: `<|im_start|>role\n` … `<|im_end|>\n` around every
/// message and `<|im_start|>assistant\n` after the last, so chat prompts cost more tokens than
/// their words, as on a real server, and llmb's template accounting is tested for real.
const CHAT_TEMPLATE_TOKENS_PER_MESSAGE: u32 = 5;
const CHAT_GENERATION_PROMPT_TOKENS: u32 = 3;
/// Token ids of the simulated template's special tokens (past the word vocabulary).
pub(crate) const TEMPLATE_TOKEN_ID: u32 = 1 << 20;

/// What one request asks for, validated.
pub(crate) struct Job {
    pub(crate) api: Api,
    pub(crate) prompt_tokens: u32,
    /// Chained hashes of the prompt's whole blocks; empty when the prefix cache is off.
    pub(crate) prefix_blocks: Vec<u64>,
    pub(crate) max_tokens: u32,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) ignore_eos: bool,
    pub(crate) fault: Fault,
    /// The client's id for the request (gRPC `Request.id`), echoed in every response.
    pub(crate) request_id: u64,
}

// The error is the ready-made response for a bad request: rare, so its size does not matter.
#[allow(clippy::result_large_err)]
pub(crate) fn parse_job(
    state: &SimState,
    api: Api,
    bytes: &[u8],
) -> Result<Job, Response<SimBody>> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| bad_request(&format!("Invalid JSON in the request body: {e}")))?;
    if !body.is_object() {
        return Err(bad_request("The request body must be a JSON object."));
    }
    match body.get("model") {
        None | Some(Value::Null) => {}
        Some(Value::String(m)) if *m == state.config.model => {}
        Some(Value::String(m)) => {
            return Err(api_error(
                StatusCode::NOT_FOUND,
                "NotFoundError",
                &format!("The model `{m}` does not exist."),
                Some("model"),
            ));
        }
        Some(_) => return Err(bad_request("`model` must be a string.")),
    }
    let prompt = match api {
        Api::Completions => match body.get("prompt") {
            None | Some(Value::Null) => return Err(bad_request("Field `prompt` is required.")),
            Some(p) => completion_prompt(p, false).map_err(bad_request)?,
        },
        Api::Chat | Api::Amsv2 => chat_prompt(&body).map_err(bad_request)?,
        Api::Responses => match body.get("input") {
            Some(Value::String(_)) => {
                completion_prompt(&body["input"], false).map_err(bad_request)?
            }
            Some(Value::Array(items)) => {
                let messages = serde_json::json!({ "messages": items });
                let p = chat_prompt(&messages).map_err(bad_request)?;
                Prompt {
                    text: Cow::Owned(p.text.into_owned()),
                    tokens: p.tokens,
                    ids: None,
                    templated: true,
                }
            }
            _ => {
                return Err(bad_request(
                    "Field `input` is required (a string or a list of messages).",
                ));
            }
        },
        _ => return Err(bad_request("This route serves OpenAI requests only.")),
    };
    let prompt_tokens = prompt.tokens;
    let fault = Fault::of(&prompt.text);
    if let Some(refusal) =
        fault.refusal(|status, kind, message| api_error(status, kind, message, None))
    {
        return Err(refusal);
    }
    let requested = [
        "max_completion_tokens",
        "max_tokens",
        "max_output_tokens",
        "max_new_tokens",
    ]
    .iter()
    .find_map(|k| body.get(*k).filter(|v| !v.is_null()));
    let max_tokens = match requested {
        None => 16,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_MODEL_LEN).contains(&n) => n as u32,
            _ => {
                return Err(bad_request(&format!(
                    "max_tokens must be an integer between 1 and {MAX_MODEL_LEN}, got {v}."
                )));
            }
        },
    };
    let total = u64::from(prompt_tokens) + u64::from(max_tokens);
    if total > MAX_MODEL_LEN {
        return Err(bad_request(&format!(
            "This model's maximum context length is {MAX_MODEL_LEN} tokens. However, you requested {total} \
             tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the \
             length of the messages or completion."
        )));
    }
    let flag = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(false);
    let prefix_blocks = match (state.config.prefix_cache, prompt.ids) {
        (false, _) => Vec::new(),
        (true, Some(ids)) => block_hashes(ids.iter().map(|id| id.as_u64().unwrap_or(0))),
        (true, None) if prompt.templated => {
            block_hashes(std::iter::once("<|im_start|>").chain(prompt.text.split_whitespace()))
        }
        (true, None) => block_hashes(prompt.text.split_whitespace()),
    };
    Ok(Job {
        api,
        prompt_tokens,
        prefix_blocks,
        max_tokens,
        stream: flag(body.get("stream")),
        include_usage: flag(body.pointer("/stream_options/include_usage")),
        ignore_eos: flag(body.get("ignore_eos")),
        fault,
        request_id: 0,
    })
}

/// Anthropic's `/v1/messages`: `model`, `max_tokens` and `messages` required, `system` (a
/// string or text blocks) counted as one more message under the template; errors in
/// Anthropic's envelope. Anthropic has no `ignore_eos`: lengths are natural.
// The error is the ready-made response for a bad request: rare, so its size does not matter.
#[allow(clippy::result_large_err)]
pub(crate) fn parse_anthropic_job(
    state: &SimState,
    bytes: &[u8],
) -> Result<Job, Response<SimBody>> {
    let invalid = |message: &str| anthropic_error(StatusCode::BAD_REQUEST, message);
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid(&format!("The request body is not valid JSON: {e}")))?;
    if !body.is_object() {
        return Err(invalid("The request body must be a JSON object."));
    }
    match body.get("model") {
        Some(Value::String(m)) if *m == state.config.model => {}
        Some(Value::String(m)) => {
            return Err(anthropic_error(
                StatusCode::NOT_FOUND,
                &format!("model: {m}"),
            ));
        }
        None | Some(Value::Null) => return Err(invalid("model: Field required")),
        Some(_) => return Err(invalid("model: Input should be a valid string")),
    }
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err(invalid("messages: Field required"));
    };
    let system = match body.get("system") {
        None | Some(Value::Null) => None,
        Some(s @ (Value::String(_) | Value::Array(_))) => Some(s.clone()),
        Some(_) => {
            return Err(invalid(
                "system: Input should be a valid string or a list of text blocks",
            ));
        }
    };
    let all = serde_json::json!({
        "messages": system
            .map(|content| serde_json::json!({ "role": "system", "content": content }))
            .into_iter()
            .chain(messages.iter().cloned())
            .collect::<Vec<_>>()
    });
    let prompt = chat_prompt(&all).map_err(invalid)?;
    let fault = Fault::of(&prompt.text);
    if let Some(refusal) = fault.refusal(|status, _, message| anthropic_error(status, message)) {
        return Err(refusal);
    }
    let max_tokens = match body.get("max_tokens") {
        None | Some(Value::Null) => return Err(invalid("max_tokens: Field required")),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_MODEL_LEN).contains(&n) => n as u32,
            _ => {
                return Err(invalid(&format!(
                    "max_tokens: must be an integer between 1 and {MAX_MODEL_LEN}, got {v}"
                )));
            }
        },
    };
    let prompt_tokens = prompt.tokens;
    if u64::from(prompt_tokens) + u64::from(max_tokens) > MAX_MODEL_LEN {
        return Err(invalid(&format!(
            "input length and `max_tokens` exceed context limit: {prompt_tokens} + {max_tokens} >              {MAX_MODEL_LEN}, decrease input length or `max_tokens` and try again"
        )));
    }
    let prefix_blocks = if state.config.prefix_cache {
        block_hashes(std::iter::once("<|im_start|>").chain(prompt.text.split_whitespace()))
    } else {
        Vec::new()
    };
    Ok(Job {
        api: Api::Anthropic,
        prompt_tokens,
        prefix_blocks,
        max_tokens,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: true,
        ignore_eos: false,
        fault,
        request_id: 0,
    })
}

/// A request's prompt as the simulator sees it.
pub(crate) struct Prompt<'a> {
    /// The text, searched for fault markers (empty for token ids).
    pub(crate) text: Cow<'a, str>,
    pub(crate) tokens: u32,
    /// The token ids when the prompt was given as ids; else the tokens are the text's words.
    pub(crate) ids: Option<&'a [Value]>,
    /// Chat messages under the simulated template, whose opening token starts every block chain:
    /// a chat prompt never shares cached blocks with a raw prompt of the same words.
    pub(crate) templated: bool,
}

/// A completions `prompt`: a string, a list of token ids, or a one-element list of either.
pub(crate) fn completion_prompt(v: &Value, nested: bool) -> Result<Prompt<'_>, &'static str> {
    match v {
        Value::String(s) => Ok(Prompt {
            text: Cow::Borrowed(s.as_str()),
            tokens: count_words(s),
            ids: None,
            templated: false,
        }),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => Ok(Prompt {
            text: Cow::Borrowed(""),
            tokens: items.len() as u32,
            ids: Some(items),
            templated: false,
        }),
        Value::Array(items) if items.len() == 1 && !nested => completion_prompt(&items[0], true),
        Value::Array(_) => {
            Err("The simulator serves one prompt per request (a string or one list of token ids).")
        }
        _ => Err("`prompt` must be a string or a list of token ids."),
    }
}

/// All message contents of a chat request, one per line, and their tokens under the simulated
/// chat template.
pub(crate) fn chat_prompt(body: &Value) -> Result<Prompt<'_>, &'static str> {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err("Field `messages` is required (a list of messages).");
    };
    let mut text = String::new();
    for message in messages {
        match message.get("content") {
            Some(Value::String(s)) => {
                text.push_str(s);
                text.push('\n');
            }
            Some(Value::Array(parts)) => {
                for part in parts {
                    if let Some(t) = part.get("text").and_then(Value::as_str) {
                        text.push_str(t);
                        text.push('\n');
                    }
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => {
                return Err("Message `content` must be a string or a list of content parts.");
            }
        }
    }
    let tokens = count_words(&text)
        + CHAT_TEMPLATE_TOKENS_PER_MESSAGE * messages.len() as u32
        + CHAT_GENERATION_PROMPT_TOKENS;
    Ok(Prompt {
        text: Cow::Owned(text),
        tokens,
        ids: None,
        templated: true,
    })
}

// The error is the ready-made response for a bad request: rare, so its size does not matter.
#[allow(clippy::result_large_err)]
/// `/v1/audio/transcriptions`: a multipart form with the audio `file`; the transcript is as
/// long as the audio (about ten words a second of 16 kHz 16-bit mono) unless
/// `max_completion_tokens` caps it.
pub(crate) fn parse_transcription_job(
    state: &SimState,
    content_type: &str,
    bytes: &[u8],
) -> Result<Job, Response<SimBody>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
        .ok_or_else(|| bad_request("Expected a multipart/form-data body with a boundary."))?;
    let delimiter = format!("--{boundary}");
    let mut fields: Vec<(String, &[u8])> = Vec::new();
    let mut rest = bytes;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let body_start = head_end + 4;
        let body_end = find(&rest[body_start..], delimiter.as_bytes())
            .map_or(rest.len(), |e| body_start + e.saturating_sub(2));
        let name = head
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))
            .map(|n| {
                n.split(['\r', '\n'])
                    .next()
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_string()
            })
            .unwrap_or_default();
        fields.push((name, &rest[body_start..body_end]));
        rest = &rest[body_end..];
    }
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let text = |name: &str| field(name).map(|v| String::from_utf8_lossy(v).trim().to_string());
    let audio = field("file").ok_or_else(|| bad_request("Field `file` is required."))?;
    if let Some(m) = text("model")
        && m != state.config.model
    {
        return Err(api_error(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            &format!("The model `{m}` does not exist."),
            Some("model"),
        ));
    }
    let truthy = |v: Option<String>| v.is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let natural = (audio.len() as u32 / 3200).clamp(4, 64);
    let max_tokens = text("max_completion_tokens")
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(natural, |m| m.clamp(1, natural));
    let marker = String::from_utf8_lossy(&audio[..audio.len().min(256)]).to_string();
    Ok(Job {
        api: Api::Transcription,
        prompt_tokens: (audio.len() / 640) as u32,
        prefix_blocks: Vec::new(),
        max_tokens,
        stream: truthy(text("stream")),
        include_usage: truthy(text("stream_include_usage")),
        ignore_eos: true,
        fault: Fault::of(&marker),
        request_id: 0,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
