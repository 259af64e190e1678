//! OpenAI-style requests: the validated [`Job`] a request becomes (for the [`Api`] its route
//! speaks), and the parsing of completions, chat, Responses, SenseTime, transcription and
//! Anthropic Messages bodies (prompts, token counts under the simulated chat template, images,
//! limits, fault markers).

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use hyper::{Response, StatusCode};
use serde_json::Value;

use llmb_engine::tokenizer::count_words;

use crate::api::Api;
use crate::body::{SimBody, anthropic_error, api_error, bad_request};
use crate::config::MAX_MODEL_LEN;
use crate::faults::Fault;
use crate::images::{Image, image_of_base64, image_of_url, remote};
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
    /// Images in the prompt (counted in `/metrics`).
    pub(crate) images: u32,
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
        Api::Chat | Api::Amsv2 => chat_prompt(&body).map_err(|e| bad_request(&e))?,
        Api::Responses => match body.get("input") {
            Some(Value::String(_)) => {
                completion_prompt(&body["input"], false).map_err(bad_request)?
            }
            Some(Value::Array(items)) => {
                messages_prompt(None, items, Messages::Responses).map_err(|e| bad_request(&e))?
            }
            _ => {
                return Err(bad_request(
                    "Field `input` is required (a string or a list of messages).",
                ));
            }
        },
        _ => return Err(bad_request("This route serves OpenAI requests only.")),
    };
    if let Some(message) = too_many_images(state, &prompt) {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "BadRequestError",
            &message,
            Some("image"),
        ));
    }
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
    let prefix_blocks = if state.config.prefix_cache {
        prompt.block_hashes()
    } else {
        Vec::new()
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
        images: prompt.images.len() as u32,
    })
}

/// Anthropic's `/v1/messages`: `model`, `max_tokens` and `messages` required, `system` (a
/// string or text blocks) counted as one more message under the template, `image` blocks as
/// images; errors in Anthropic's envelope. Anthropic has no `ignore_eos`: lengths are natural.
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
        Some(s @ (Value::String(_) | Value::Array(_))) => Some(s),
        Some(_) => {
            return Err(invalid(
                "system: Input should be a valid string or a list of text blocks",
            ));
        }
    };
    let prompt = messages_prompt(system, messages, Messages::Anthropic).map_err(|e| invalid(&e))?;
    if let Some(message) = too_many_images(state, &prompt) {
        return Err(invalid(&message));
    }
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
        prompt.block_hashes()
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
        images: prompt.images.len() as u32,
    })
}

/// A request's prompt as the simulator sees it.
pub(crate) struct Prompt<'a> {
    /// The text, searched for fault markers (empty for token ids).
    pub(crate) text: Cow<'a, str>,
    /// Its tokens: the text's words, the template's tokens, and its images' tokens.
    pub(crate) tokens: u32,
    /// The token ids when the prompt was given as ids; else the tokens are the text's words.
    pub(crate) ids: Option<&'a [Value]>,
    /// Chat messages under the simulated template, whose opening token starts every block chain:
    /// a chat prompt never shares cached blocks with a raw prompt of the same words.
    pub(crate) templated: bool,
    /// The images, in order, each with the byte offset in `text` where it stands.
    pub(crate) images: Vec<(usize, Image)>,
}

/// One token of a prompt as the prefix cache hashes it: a word, or one of an image's tokens
/// (all of them the image's hash, as vLLM hashes an image's placeholder tokens by its content).
#[derive(Clone, Copy)]
enum PromptToken<'a> {
    Word(&'a str),
    Image(u64),
}

impl Hash for PromptToken<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // A word hashes as the bare `&str`, so prompts without images keep their block hashes.
        match self {
            PromptToken::Word(word) => word.hash(state),
            PromptToken::Image(hash) => hash.hash(state),
        }
    }
}

impl Prompt<'_> {
    /// The prompt's prefix-cache block hashes: of its token ids, or of its words, with every
    /// image's tokens where the image stands.
    fn block_hashes(&self) -> Vec<u64> {
        if let Some(ids) = self.ids {
            return block_hashes(ids.iter().map(|id| id.as_u64().unwrap_or(0)));
        }
        let text = &*self.text;
        let opening = self.templated.then_some(PromptToken::Word("<|im_start|>"));
        let starts = std::iter::once(0).chain(self.images.iter().map(|(at, _)| *at));
        let ends = self
            .images
            .iter()
            .map(|(at, _)| *at)
            .chain(std::iter::once(text.len()));
        let images = self.images.iter().map(|(_, image)| Some(image));
        let tokens = starts
            .zip(ends)
            .zip(images.chain(std::iter::once(None)))
            .flat_map(|((start, end), image)| {
                text[start..end]
                    .split_whitespace()
                    .map(PromptToken::Word)
                    .chain(image.into_iter().flat_map(|image| {
                        std::iter::repeat_n(PromptToken::Image(image.hash), image.tokens() as usize)
                    }))
            });
        block_hashes(opening.into_iter().chain(tokens))
    }
}

/// vLLM's refusal of a prompt with more images than `--sim-max-images-per-prompt`.
fn too_many_images(state: &SimState, prompt: &Prompt<'_>) -> Option<String> {
    let max = state.config.max_images_per_prompt?;
    (prompt.images.len() > max).then(|| {
        format!(
            "At most {max} image(s) may be provided in one prompt. Set \
             `--sim-max-images-per-prompt` to increase this limit."
        )
    })
}

/// A completions `prompt`: a string, a list of token ids, or a one-element list of either.
pub(crate) fn completion_prompt(v: &Value, nested: bool) -> Result<Prompt<'_>, &'static str> {
    match v {
        Value::String(s) => Ok(Prompt {
            text: Cow::Borrowed(s.as_str()),
            tokens: count_words(s),
            ids: None,
            templated: false,
            images: Vec::new(),
        }),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => Ok(Prompt {
            text: Cow::Borrowed(""),
            tokens: items.len() as u32,
            ids: Some(items),
            templated: false,
            images: Vec::new(),
        }),
        Value::Array(items) if items.len() == 1 && !nested => completion_prompt(&items[0], true),
        Value::Array(_) => {
            Err("The simulator serves one prompt per request (a string or one list of token ids).")
        }
        _ => Err("`prompt` must be a string or a list of token ids."),
    }
}

/// A chat request's `messages` (OpenAI chat, SenseTime, the tokenize route): see
/// [`messages_prompt`].
pub(crate) fn chat_prompt(body: &Value) -> Result<Prompt<'static>, String> {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err("Field `messages` is required (a list of messages).".into());
    };
    messages_prompt(None, messages, Messages::Chat)
}

/// Whose messages a prompt is made of: which content parts are images, and how an error names
/// a part.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Messages {
    /// OpenAI chat `messages`: `image_url` parts (`{"url": …}` or a URL), and `input_image`
    /// ones, which vLLM's chat parser takes too. Named `messages[i].content[j]`.
    Chat,
    /// The Responses API's `input` items: the same parts, named `input[i].content[j]`.
    Responses,
    /// Anthropic's `system` and `messages`: `image` blocks (a `base64`, `url` or `file`
    /// source), named `messages.i.content.j` as Anthropic names fields.
    Anthropic,
}

/// All text of the messages (and Anthropic's `system`, one more message), one part per line,
/// their images, and their tokens under the simulated chat template: the words, the template's
/// tokens, and each image's (see [`crate::images::image_tokens`]). An image that cannot be
/// decoded is an error naming its part.
pub(crate) fn messages_prompt(
    system: Option<&Value>,
    messages: &[Value],
    kind: Messages,
) -> Result<Prompt<'static>, String> {
    let mut text = String::new();
    let mut images = Vec::new();
    let contents = system
        .map(|content| (None, Some(content)))
        .into_iter()
        .chain(
            messages
                .iter()
                .enumerate()
                .map(|(i, message)| (Some(i), message.get("content"))),
        );
    let mut count = 0;
    for (index, content) in contents {
        count += 1;
        match content {
            Some(Value::String(s)) => {
                text.push_str(s);
                text.push('\n');
            }
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    if let Some(t) = part.get("text").and_then(Value::as_str) {
                        text.push_str(t);
                        text.push('\n');
                    } else if let Some(image) = image_part(part, kind) {
                        let image = image.map_err(|(field, why)| {
                            let place = match (kind, index) {
                                (Messages::Chat, Some(i)) => format!("messages[{i}].content[{j}]"),
                                (Messages::Responses, Some(i)) => {
                                    format!("input[{i}].content[{j}]")
                                }
                                (_, Some(i)) => format!("messages.{i}.content.{j}"),
                                (_, None) => format!("system.{j}"),
                            };
                            format!("{place}{field}: {why}")
                        })?;
                        images.push((text.len(), image));
                    }
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => {
                return Err(
                    "Message `content` must be a string or a list of content parts.".into(),
                );
            }
        }
    }
    let tokens = images.iter().fold(
        count_words(&text)
            + CHAT_TEMPLATE_TOKENS_PER_MESSAGE * count
            + CHAT_GENERATION_PROMPT_TOKENS,
        |tokens, (_, image)| tokens.saturating_add(image.tokens()),
    );
    Ok(Prompt {
        text: Cow::Owned(text),
        tokens,
        ids: None,
        templated: true,
        images,
    })
}

/// The image of a content part, if the part is one in `kind`'s messages; an error is the field
/// at fault (appended to the part's name) and why.
fn image_part(part: &Value, kind: Messages) -> Option<Result<Image, (&'static str, String)>> {
    let ty = part.get("type").and_then(Value::as_str)?;
    if kind == Messages::Anthropic {
        return (ty == "image").then(|| anthropic_image(part));
    }
    if ty != "image_url" && ty != "input_image" {
        return None;
    }
    let url = match part.get("image_url") {
        Some(Value::String(url)) => Some(url.as_str()),
        Some(object) => object.get("url").and_then(Value::as_str),
        None => None,
    };
    Some(match (url, part.get("file_id").and_then(Value::as_str)) {
        (Some(url), _) => image_of_url(url).map_err(|why| ("", why)),
        // An uploaded file, which the simulator has not got: counted as a remote image.
        (None, Some(file_id)) => Ok(remote(file_id)),
        (None, None) => Err((
            "",
            "The image part has no URL (`image_url.url`, or `image_url` as a string).".into(),
        )),
    })
}

/// Anthropic's `image` block: a `base64` source (`media_type`, `data`) is decoded; a `url` or
/// `file` source is counted unfetched, as a remote image.
fn anthropic_image(block: &Value) -> Result<Image, (&'static str, String)> {
    let source = block.get("source");
    let field = |name: &str| source.and_then(|s| s.get(name)).and_then(Value::as_str);
    match field("type") {
        Some("base64") => {
            if !matches!(
                field("media_type"),
                Some("image/jpeg" | "image/png" | "image/gif" | "image/webp")
            ) {
                return Err((
                    ".source.media_type",
                    "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'".into(),
                ));
            }
            let data = field("data").ok_or((".source.data", "Field required".to_string()))?;
            image_of_base64(data).map_err(|why| (".source.data", why))
        }
        Some("url") => match field("url") {
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                Ok(remote(url))
            }
            _ => Err((".source.url", "Input should be an http(s) URL".into())),
        },
        Some("file") => match field("file_id") {
            Some(file_id) => Ok(remote(file_id)),
            None => Err((".source.file_id", "Field required".into())),
        },
        _ => Err((
            ".source.type",
            "Input should be 'base64', 'url' or 'file'".into(),
        )),
    }
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
        images: 0,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::config::SimConfig;
    use crate::images::samples::{base64, data_url, jpeg, png};
    use crate::testutil::*;

    /// 448 × 448 is 16 × 16 patches of 28 pixels.
    const TOKENS_448: u64 = 256;

    fn chat(content: Value) -> String {
        json!({"model": "llmb-sim", "max_tokens": 2, "messages": [{"role": "user", "content": content}]})
            .to_string()
    }

    fn image_url(url: &str) -> Value {
        json!({"type": "image_url", "image_url": {"url": url}})
    }

    fn anthropic(content: Value) -> String {
        json!({"model": "llmb-sim", "max_tokens": 2, "system": "be brief",
               "messages": [{"role": "user", "content": content}]})
        .to_string()
    }

    fn anthropic_png(data: &str) -> Value {
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}})
    }

    fn json_of(r: &Reply) -> Value {
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
    }

    /// `llmb_sim:images_received_total` of `/metrics`.
    async fn images_received(sim: &crate::SimHandle) -> u64 {
        let metrics = get(sim, "/metrics").await.body;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("llmb_sim:images_received_total{"))
            .unwrap_or_else(|| panic!("no image counter in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// vLLM's 400 body: `(message, param)`.
    fn openai_error(r: &Reply) -> (String, Value) {
        assert_eq!(r.status, 400, "{}", r.body);
        let v = json_of(r);
        assert_eq!(v["error"]["type"], "BadRequestError", "{v}");
        assert_eq!(v["error"]["code"], 400, "{v}");
        (
            v["error"]["message"].as_str().unwrap().to_string(),
            v["error"]["param"].clone(),
        )
    }

    fn anthropic_error(r: &Reply) -> String {
        assert_eq!(r.status, 400, "{}", r.body);
        let v = json_of(r);
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        v["error"]["message"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn chat_images_cost_a_token_per_28_pixel_patch() {
        let sim = sim(fast()).await;
        let png = data_url("image/png", &png(448, 448));
        let jpeg = data_url("image/jpeg", &jpeg(448, 448));
        // Two words, one message under the template (5), the generation prompt (3), the image.
        let text = 2 + 5 + 3;
        for image in [&png, &jpeg] {
            let body = chat(json!([{"type": "text", "text": "describe this"}, image_url(image)]));
            let r = post(&sim, "/v1/chat/completions", &body).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(json_of(&r)["usage"]["prompt_tokens"], text + TOKENS_448);
        }
        assert_eq!(images_received(&sim).await, 2);
        // Both, and a remote image counted as 512 × 512 (19 × 19 patches) without fetching.
        let body = chat(json!([
            image_url(&png),
            {"type": "text", "text": "describe this"},
            image_url(&jpeg),
            image_url("https://example.invalid/cat.jpg"),
        ]));
        let v = json_of(&post(&sim, "/v1/chat/completions", &body).await);
        assert_eq!(v["usage"]["prompt_tokens"], text + 2 * TOKENS_448 + 361);
        assert_eq!(images_received(&sim).await, 5);
        // The tokenize route counts what usage reports.
        let v = json_of(&post(&sim, "/tokenize", &body).await);
        assert_eq!(v["count"], text + 2 * TOKENS_448 + 361);
        // Streamed usage too.
        let mut streamed: Value = serde_json::from_str(&body).unwrap();
        streamed["stream"] = true.into();
        streamed["stream_options"] = json!({"include_usage": true});
        let r = post(&sim, "/v1/chat/completions", &streamed.to_string()).await;
        let usage = r
            .body
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: {"))
            .map(|e| serde_json::from_str::<Value>(&format!("{{{e}")).unwrap())
            .find(|v| !v["usage"].is_null())
            .unwrap();
        assert_eq!(usage["usage"]["prompt_tokens"], text + 2 * TOKENS_448 + 361);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn responses_and_anthropic_images_count_too() {
        let sim = sim(fast()).await;
        let png_bytes = png(448, 448);
        let body = json!({"model": "llmb-sim", "max_output_tokens": 2, "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "describe this"},
                {"type": "input_image", "image_url": data_url("image/png", &png_bytes)},
            ]},
        ]});
        let r = post(&sim, "/v1/responses", &body.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(json_of(&r)["usage"]["input_tokens"], 2 + 5 + 3 + TOKENS_448);

        let body = anthropic(json!([
            {"type": "text", "text": "describe this"},
            anthropic_png(&base64(&png_bytes)),
            {"type": "image", "source": {"type": "url", "url": "https://example.invalid/a.png"}},
        ]));
        let r = post(&sim, "/v1/messages", &body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        // Two messages (system and user) under the template, four words, the generation
        // prompt, the image and the remote one.
        assert_eq!(
            json_of(&r)["usage"]["input_tokens"],
            2 * 5 + 4 + 3 + TOKENS_448 + 361
        );
        assert_eq!(images_received(&sim).await, 3);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn undecodable_images_are_400s_naming_their_part() {
        let sim = sim(fast()).await;
        let not_an_image = base64(b"just some text, not pixels");
        for (data, why) in [
            ("%%%not-base64", "not valid base64"),
            (not_an_image.as_str(), "not a PNG, JPEG, WebP or GIF image"),
        ] {
            let url = format!("data:image/png;base64,{data}");
            let body = json!({"model": "llmb-sim", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, image_url(&url)]},
            ]});
            let (message, param) =
                openai_error(&post(&sim, "/v1/chat/completions", &body.to_string()).await);
            assert!(
                message.starts_with("messages[1].content[1]: ") && message.contains(why),
                "{message}"
            );
            assert!(param.is_null());

            let body = json!({"model": "llmb-sim", "input": [
                {"role": "user", "content": [{"type": "input_image", "image_url": url}]},
            ]});
            let (message, _) = openai_error(&post(&sim, "/v1/responses", &body.to_string()).await);
            assert!(
                message.starts_with("input[0].content[0]: ") && message.contains(why),
                "{message}"
            );

            let body = anthropic(json!([{"type": "text", "text": "hi"}, anthropic_png(data)]));
            let message = anthropic_error(&post(&sim, "/v1/messages", &body).await);
            assert!(
                message.starts_with("messages.0.content.1.source.data: ") && message.contains(why),
                "{message}"
            );
        }
        // vLLM's words for URLs it cannot load.
        let (message, _) = openai_error(
            &post(
                &sim,
                "/v1/chat/completions",
                &chat(json!([image_url("ftp://example.invalid/a.png")])),
            )
            .await,
        );
        assert_eq!(
            message,
            "messages[0].content[0]: The URL must be either a HTTP, data or file URL."
        );
        let body = anthropic(json!([
            {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"}},
        ]));
        let message = anthropic_error(&post(&sim, "/v1/messages", &body).await);
        assert!(
            message.starts_with("messages.0.content.0.source.media_type: "),
            "{message}"
        );
        assert_eq!(images_received(&sim).await, 0);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn more_images_than_the_limit_is_vllms_400() {
        let sim = sim(SimConfig {
            max_images_per_prompt: Some(1),
            ..fast()
        })
        .await;
        let url = data_url("image/png", &png(28, 28));
        let one = chat(json!([{"type": "text", "text": "a"}, image_url(&url)]));
        let r = post(&sim, "/v1/chat/completions", &one).await;
        assert_eq!(json_of(&r)["usage"]["prompt_tokens"], 1 + 5 + 3 + 1);
        let two = chat(json!([
            image_url(&url),
            image_url("https://example.invalid/b.png")
        ]));
        let (message, param) = openai_error(&post(&sim, "/v1/chat/completions", &two).await);
        assert!(
            message.starts_with("At most 1 image(s) may be provided in one prompt."),
            "{message}"
        );
        assert_eq!(param, "image");
        let body = json!({"model": "llmb-sim", "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": url},
            {"type": "input_image", "image_url": url},
        ]}]});
        let (message, _) = openai_error(&post(&sim, "/v1/responses", &body.to_string()).await);
        assert!(message.starts_with("At most 1 image(s)"), "{message}");
        let block = anthropic_png(&base64(&png(28, 28)));
        let body = anthropic(json!([block.clone(), block]));
        let message = anthropic_error(&post(&sim, "/v1/messages", &body).await);
        assert!(message.starts_with("At most 1 image(s)"), "{message}");
        assert_eq!(images_received(&sim).await, 1);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn the_prefix_cache_tells_images_apart() {
        let sim = sim(SimConfig {
            prefix_cache: true,
            ..fast()
        })
        .await;
        let cached = |body: String| {
            let sim = &sim;
            async move {
                let v = json_of(&post(sim, "/v1/chat/completions", &body).await);
                v["usage"]["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .unwrap()
            }
        };
        let ask = |image: &[u8]| {
            chat(json!([
                {"type": "text", "text": "describe this"},
                image_url(&data_url("image/png", image)),
            ]))
        };
        // 2 words + 5 + 3 + 256 = 266 tokens, 16 whole blocks; the last token is never cached.
        assert_eq!(cached(ask(&png(448, 448))).await, 0);
        assert_eq!(cached(ask(&png(448, 448))).await, 256);
        // Another image of the same size: the first block holds image tokens already, so none
        // is shared.
        assert_eq!(cached(ask(&png(447, 448))).await, 0);
        sim.shutdown().await;
    }
}
