//! Speech-to-text over `POST /v1/audio/transcriptions` (OpenAI, vLLM, SGLang, llama.cpp).
//!
//! The body is multipart/form-data, not JSON, so the adapter builds it itself: the clip as the
//! `file` part, then `model`, `stream`, `response_format=json`, an optional `temperature`, and the
//! keys of `--extra-body` as text fields (this is how `language`, `prompt` or vLLM's
//! `max_completion_tokens` are sent). Two stream dialects share the route and both are parsed:
//! OpenAI's typed `transcript.text.delta` / `transcript.text.done` events and vLLM's
//! `transcription.chunk` chunks (`choices[].delta.content`, a usage chunk, `data: [DONE]`).
//! Whether OpenAI sends `[DONE]` after `transcript.text.done` is unconfirmed, so either ends the
//! stream, and a vLLM stream cut after its `finish_reason` chunk counts as complete.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::{error_message, get_u32, is_error_object};
use llmb_plugin_sdk::openai::{classify, map_error};
use serde_json::{Map, Value};

mod request;
#[cfg(test)]
mod tests;

pub use request::{Multipart, build, content_type};

/// The route; translations (`/v1/audio/translations`) take the same form via `--endpoint`.
const PATH: &str = "/v1/audio/transcriptions";

/// The error for text and chat prompts: this adapter only uploads audio.
pub const NEEDS_AUDIO: &str = "openai-audio needs an audio dataset (--dataset-name audio)";

/// Set by `--plugin-opt vllm-extras=true`: send what `vllm bench serve` sends on top of the
/// OpenAI fields, so vLLM caps the output and reports token usage in the stream.
static VLLM_EXTRAS: AtomicBool = AtomicBool::new(false);

/// The `openai-audio` adapter.
pub struct Adapter;

/// Per-request stream state: the stream is over at `[DONE]` or `transcript.text.done`, and a
/// vLLM `finish_reason` makes an end of body without `[DONE]` acceptable.
#[derive(Default)]
pub struct Parser {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    done: bool,
    failed: bool,
    finished: bool,
    /// The response is `application/json`: a server (OpenAI's `whisper-1`) that ignores
    /// `stream` and answers with a whole body, which SSE framing cannot carry intact.
    json_body: bool,
}

/// An in-band error object, classified by its `code` when it is an HTTP-like number.
fn stream_error(v: Option<&Value>, data: &[u8]) -> BackendError {
    let message = v.and_then(error_message).unwrap_or_else(|| {
        String::from_utf8_lossy(&data[..data.len().min(300)])
            .trim()
            .to_owned()
    });
    let code = v.and_then(|v| {
        v.get("error")
            .and_then(|e| e.get("code"))
            .or_else(|| v.get("code"))
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
    });
    classify(code, message)
}

/// Token usage in either dialect: OpenAI's `input_tokens`/`output_tokens` (a `duration` usage
/// has no tokens and gives none) or vLLM's `prompt_tokens`/`completion_tokens`.
fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?.as_object()?;
    let prompt = get_u32(u, "prompt_tokens").or_else(|| get_u32(u, "input_tokens"));
    let completion = get_u32(u, "completion_tokens").or_else(|| get_u32(u, "output_tokens"));
    let cached = u
        .get("prompt_tokens_details")
        .or_else(|| u.get("input_token_details"))
        .and_then(Value::as_object)
        .and_then(|d| get_u32(d, "cached_tokens"));
    (prompt.is_some() || completion.is_some()).then_some(Usage {
        reasoning_tokens: None,
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_prompt_tokens: cached,
    })
}

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl State {
    fn fail(&mut self, err: BackendError, events: &mut Vec<StreamEvent>) {
        self.failed = true;
        events.push(StreamEvent::Error(err));
    }

    fn frame(&mut self, frame: u32, event: Option<&str>, data: &[u8], out: &mut Vec<StreamEvent>) {
        let data = data.trim_ascii();
        if self.done || self.failed || data.is_empty() {
            return;
        }
        if data == b"[DONE]" {
            self.done = true;
            out.push(StreamEvent::Done);
            return;
        }
        let parsed: Result<Value, _> = serde_json::from_slice(data);
        if event == Some("error") {
            self.fail(stream_error(parsed.as_ref().ok(), data), out);
            return;
        }
        let v = match parsed {
            Ok(v) => v,
            Err(_) if self.json_body => return,
            Err(e) => {
                let shown = String::from_utf8_lossy(&data[..data.len().min(120)]);
                self.fail(
                    protocol(format!(
                        "malformed transcription stream event ({e}): {shown}"
                    )),
                    out,
                );
                return;
            }
        };
        let kind = v.get("type").and_then(Value::as_str);
        if is_error_object(&v) || kind == Some("error") {
            self.fail(stream_error(Some(&v), data), out);
            return;
        }
        match kind {
            Some("transcript.text.delta") => out.push(StreamEvent::Delta(Delta {
                frame,
                text: v
                    .get("delta")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                reasoning: String::new(),
                tokens: None,
                index: 0,
            })),
            Some("transcript.text.done") => {
                if let Some(u) = usage(&v) {
                    out.push(StreamEvent::Usage(u));
                }
                self.done = true;
                out.push(StreamEvent::Done);
            }
            Some(_) => {}
            None => self.chunk(frame, &v, out),
        }
    }

    /// A vLLM `transcription.chunk`: each choice is a delta (as `vllm bench serve` counts
    /// them, even with empty text); the `choices: []` chunk only carries usage.
    fn chunk(&mut self, frame: u32, v: &Value, out: &mut Vec<StreamEvent>) {
        let choices = v.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .map_or(0, |i| i.min(u32::MAX as u64) as u32);
            let text = choice
                .get("delta")
                .and_then(|d| d.get("content"))
                .or_else(|| choice.get("text"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            out.push(StreamEvent::Delta(Delta {
                frame,
                text,
                reasoning: String::new(),
                tokens: None,
                index,
            }));
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
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
                        out,
                    );
                    return;
                }
                self.finished = true;
                out.push(StreamEvent::Finish(reason.to_owned()));
            }
        }
        if let Some(u) = usage(v) {
            out.push(StreamEvent::Usage(u));
        }
    }
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "openai-audio".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Speech-to-text: POST /v1/audio/transcriptions as multipart/form-data (OpenAI, vLLM, SGLang, llama.cpp); needs --dataset-name audio; --extra-body keys become form fields (e.g. language); --plugin-opt vllm-extras=true adds max_completion_tokens and stream_include_usage as vllm bench sends".into(),
            default_endpoint: PATH.into(),
            framing: Framing::Sse,
            supports_ignore_eos: false,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        for kv in options {
            match kv.key.as_str() {
                "vllm-extras" => {
                    let on = match kv.value.trim() {
                        "true" | "1" | "yes" | "" => true,
                        "false" | "0" | "no" => false,
                        other => {
                            return Err(format!(
                                "vllm-extras must be true or false, not {other:?}"
                            ));
                        }
                    };
                    VLLM_EXTRAS.store(on, Ordering::Relaxed);
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?} for the openai-audio adapter (known: vllm-extras)"
                    ));
                }
            }
        }
        Ok(())
    }

    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        build(&req, VLLM_EXTRAS.load(Ordering::Relaxed))
    }

    /// `{"text": ..}` with optional usage; a non-JSON `text/*` body is taken as the transcript,
    /// for when `--extra-body` asks for `response_format` `text`, `srt` or `vtt`.
    fn parse_body(
        status: u16,
        headers: Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                let is_text = header(&headers, "content-type")
                    .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("text/"));
                if is_text {
                    return Ok(Completion {
                        reasoning: String::new(),
                        text: String::from_utf8_lossy(&body).into_owned(),
                        finish: None,
                        usage: None,
                    });
                }
                return Err(protocol(format!("response body is not JSON: {e}")));
            }
        };
        if is_error_object(&v) {
            return Err(map_error(status, &body));
        }
        let text = v
            .as_object()
            .and_then(|o: &Map<String, Value>| o.get("text"))
            .and_then(Value::as_str)
            .ok_or_else(|| protocol("the transcription response has no \"text\" string".into()))?;
        Ok(Completion {
            reasoning: String::new(),
            text: text.to_owned(),
            finish: None,
            usage: usage(&v),
        })
    }

    fn map_error(status: u16, _headers: Headers, body: Vec<u8>) -> BackendError {
        map_error(status, &body)
    }

    fn tokenize_request(_req: GenRequest) -> Option<HttpRequest> {
        None
    }

    fn parse_tokenize(_body: Vec<u8>) -> Result<u32, String> {
        Err(llmb_plugin_sdk::tokenize::NO_ROUTE.into())
    }
}

impl GuestResponseParser for Parser {
    fn new(_status: u16, headers: Headers) -> Self {
        let json_body = header(&headers, "content-type").is_some_and(|t| {
            t.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
        Self {
            state: RefCell::new(State {
                json_body,
                ..State::default()
            }),
        }
    }

    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        let mut events = Vec::with_capacity(batch.len() + 2);
        for (frame, event, data) in batch.iter() {
            state.frame(frame, event, data, &mut events);
        }
        events
    }

    /// A stream cut after a `finish_reason` lost only its usage chunk and `[DONE]`: complete.
    fn finish(&self, _trailers: Headers) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        if state.done || state.failed {
            return Vec::new();
        }
        if state.finished {
            state.done = true;
            return vec![StreamEvent::Done];
        }
        state.failed = true;
        if state.json_body {
            return vec![StreamEvent::Error(protocol(
                "the server answered the streaming request with a whole JSON body (OpenAI's whisper-1 ignores `stream`); run without streaming".into(),
            ))];
        }
        vec![StreamEvent::Error(protocol(
            "the transcription stream ended before `transcript.text.done`, a finish_reason or `data: [DONE]`".into(),
        ))]
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);
