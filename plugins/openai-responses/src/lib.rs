//! The OpenAI Responses API, `POST /v1/responses` (OpenAI, vLLM, SGLang, LMDeploy, TRT-LLM
//! serve, llama.cpp): named SSE events (`event: <type>` + `data: <json>`), text in
//! `response.output_text.delta`, reasoning in `response.reasoning_text.delta` or
//! `response.reasoning_summary_text.delta`, usage only in the final `response.completed` (or
//! `response.incomplete`), and no `[DONE]`: the stream ends after that final event, or after
//! `error`/`response.failed`. The API has no `ignore_eos`, so output lengths cannot be forced.

use std::borrow::Cow;
use std::cell::RefCell;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::{error_message, merge_extra_body};
use llmb_plugin_sdk::openai::{classify, map_error};
use serde::Deserialize;
use serde_json::{Value, json};

/// The `openai-responses` adapter.
pub struct Adapter;

/// Per-request stream state: whether the final event arrived or the stream already failed.
#[derive(Default)]
pub struct Parser {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    done: bool,
    failed: bool,
}

/// The event types that matter; every other one (`response.created`, `*.added`, `*.done`, ...)
/// is skipped without parsing its payload.
const HANDLED: [&str; 7] = [
    "response.output_text.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
];

/// One stream event's payload, reduced to the fields of the handled types.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    delta: Option<Cow<'a, str>>,
    response: Option<ResponseObject>,
}

/// The response object of the final events, or a whole non-streaming body.
#[derive(Deserialize, Default)]
struct ResponseObject {
    status: Option<String>,
    incomplete_details: Option<IncompleteDetails>,
    usage: Option<UsageJson>,
    #[serde(default)]
    output: Vec<OutputItem>,
}

#[derive(Deserialize)]
struct IncompleteDetails {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct UsageJson {
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
    input_tokens_details: Option<InputDetails>,
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize)]
struct OutputDetails {
    reasoning_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct InputDetails {
    cached_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct OutputItem {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    content: Vec<OutputPart>,
    /// A reasoning item's summary parts (`summary_text`).
    #[serde(default)]
    summary: Vec<OutputPart>,
}

#[derive(Deserialize)]
struct OutputPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

/// The text of every part of `kind`, in order.
fn texts<'a>(parts: &'a [OutputPart], kind: &str) -> Vec<&'a str> {
    parts
        .iter()
        .filter(|p| p.kind == kind)
        .map(|p| p.text.as_str())
        .collect()
}

impl ResponseObject {
    fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(|u| Usage {
            reasoning_tokens: u
                .output_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            cached_prompt_tokens: u
                .input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
        })
    }

    /// `completed`, or why the response is `incomplete` (`max_output_tokens`: the cap was hit).
    fn finish(&self) -> Option<String> {
        self.incomplete_details
            .as_ref()
            .and_then(|d| d.reason.clone())
            .or_else(|| self.status.clone())
    }
}

/// The Responses API takes a string or a list of role messages. It has no tool role without a
/// function call to answer, so a tool message is sent as a user message.
fn input(prompt: &Prompt) -> Result<Value, String> {
    Ok(match prompt {
        Prompt::Text(t) => json!(t),
        Prompt::Audio(_) => return Err(llmb_plugin_sdk::openai::AUDIO_NOT_SUPPORTED.into()),
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::Assistant => "assistant",
                    Role::User | Role::Tool => "user",
                };
                json!({ "role": role, "content": m.content })
            })
            .collect(),
        // The Responses API's own parts: `input_text` and `input_image` with a URL or data URL.
        Prompt::Multimodal(messages) => messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::Assistant => "assistant",
                    Role::User | Role::Tool => "user",
                };
                // An assistant turn of the history is output: its text as one string (the
                // API takes no `input_*` parts, and no images, in that role).
                if role == "assistant" {
                    let text = llmb_plugin_sdk::media::message_text(m);
                    return json!({ "role": role, "content": text });
                }
                let parts: Vec<Value> = m
                    .parts
                    .iter()
                    .map(|part| match part {
                        ContentPart::Text(t) => json!({"type": "input_text", "text": t}),
                        ContentPart::Image(image) => json!({
                            "type": "input_image",
                            "image_url": llmb_plugin_sdk::media::image_url(image),
                        }),
                    })
                    .collect();
                json!({ "role": role, "content": parts })
            })
            .collect(),
    })
}

/// An in-stream error: `error` events carry `{code, message}` flat or nested under `error`,
/// `response.failed` carries them in `response.error`. The response itself was a 200, so the
/// kind comes from the code and message only.
fn stream_error(v: &Value) -> BackendError {
    let message = error_message(v)
        .or_else(|| v.get("response").and_then(error_message))
        .unwrap_or_else(|| format!("the server failed the response: {v}"));
    let code = v
        .pointer("/error/code")
        .or_else(|| v.get("code"))
        .or_else(|| v.pointer("/response/error/code"))
        .and_then(Value::as_str);
    let mut err = classify(None, message);
    err.kind = match code {
        _ if matches!(err.kind, ErrorKind::ContextLength) => ErrorKind::ContextLength,
        Some("context_length_exceeded") => ErrorKind::ContextLength,
        Some("rate_limit_exceeded") => ErrorKind::RateLimited,
        Some("server_is_overloaded" | "slow_down") => ErrorKind::Overloaded,
        Some("invalid_prompt" | "invalid_request_error") => ErrorKind::BadRequest,
        _ => ErrorKind::Server,
    };
    err.retryable = matches!(err.kind, ErrorKind::RateLimited | ErrorKind::Overloaded);
    err
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "openai-responses".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "OpenAI Responses API POST /v1/responses (input, max_output_tokens; named SSE events, usage in response.completed, no [DONE]; no ignore_eos, output lengths cannot be forced)".into(),
            default_endpoint: "/v1/responses".into(),
            framing: Framing::Sse,
            supports_ignore_eos: false,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        match options.first() {
            Some(kv) => Err(format!(
                "the openai-responses adapter takes no options (got {:?})",
                kv.key
            )),
            None => Ok(()),
        }
    }

    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let mut body = json!({
            "model": req.model,
            "input": input(&req.prompt)?,
            "max_output_tokens": req.max_tokens,
            "stream": req.streaming,
        });
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
        merge_extra_body(&mut body, req.extra_body.as_deref())?;
        Ok(HttpRequest {
            method: "POST".into(),
            path: "/v1/responses".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
        })
    }

    /// The text is every `output_text` part of every message item; the reasoning is each
    /// reasoning item's `reasoning_text` parts, or its summary when the server gives only that.
    fn parse_body(
        status: u16,
        _headers: Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| protocol(format!("response body is not JSON: {e}")))?;
        if v.get("object").and_then(Value::as_str) != Some("response")
            && v.get("error").is_some_and(|e| !e.is_null())
        {
            return Err(map_error(status, &body));
        }
        let r: ResponseObject = serde_json::from_value(v.clone())
            .map_err(|e| protocol(format!("unexpected Responses body: {e}")))?;
        if r.status.as_deref() == Some("failed") {
            return Err(stream_error(&json!({ "response": v })));
        }
        let text = r
            .output
            .iter()
            .filter(|item| item.kind == "message")
            .flat_map(|item| &item.content)
            .filter(|part| part.kind == "output_text")
            .map(|part| part.text.as_str())
            .collect();
        let reasoning = r
            .output
            .iter()
            .filter(|item| item.kind == "reasoning")
            .flat_map(|item| {
                let full = texts(&item.content, "reasoning_text");
                if full.is_empty() {
                    texts(&item.summary, "summary_text")
                } else {
                    full
                }
            })
            .collect();
        Ok(Completion {
            reasoning,
            text,
            finish: r.finish(),
            usage: r.usage(),
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

impl Parser {
    fn frame(&self, frame: u32, name: Option<&str>, data: &[u8], events: &mut Vec<StreamEvent>) {
        let mut state = self.state.borrow_mut();
        let data = data.trim_ascii();
        if state.done || state.failed || data.is_empty() || data == b"[DONE]" {
            return;
        }
        if name.is_some_and(|n| !HANDLED.contains(&n)) {
            return;
        }
        let fail = |state: &mut State, events: &mut Vec<StreamEvent>, err| {
            state.failed = true;
            events.push(StreamEvent::Error(err));
        };
        let ev: Event = match serde_json::from_slice(data) {
            Ok(ev) => ev,
            Err(e) => {
                let shown = String::from_utf8_lossy(&data[..data.len().min(120)]);
                let err = protocol(format!("malformed Responses stream event ({e}): {shown}"));
                return fail(&mut state, events, err);
            }
        };
        let kind = name.or(ev.kind.as_deref()).unwrap_or_default();
        match kind {
            "response.output_text.delta"
            | "response.reasoning_text.delta"
            | "response.reasoning_summary_text.delta" => {
                let delta = ev.delta.unwrap_or_default().into_owned();
                let (text, reasoning) = if kind == "response.output_text.delta" {
                    (delta, String::new())
                } else {
                    (String::new(), delta)
                };
                events.push(StreamEvent::Delta(Delta {
                    frame,
                    text,
                    reasoning,
                    tokens: None,
                    index: 0,
                }));
            }
            "response.completed" | "response.incomplete" => {
                let r = ev.response.unwrap_or_default();
                if let Some(usage) = r.usage() {
                    events.push(StreamEvent::Usage(usage));
                }
                if let Some(reason) = r.finish() {
                    events.push(StreamEvent::Finish(reason));
                }
                state.done = true;
                events.push(StreamEvent::Done);
            }
            "response.failed" | "error" => {
                let v: Value = serde_json::from_slice(data).unwrap_or_default();
                fail(&mut state, events, stream_error(&v));
            }
            _ => {}
        }
    }
}

impl GuestResponseParser for Parser {
    fn new(_status: u16, _headers: Headers) -> Self {
        Self::default()
    }

    /// Each text or reasoning delta event is a delta (a fragment, possibly several tokens); the
    /// event name comes from `event:`, else from the payload's `type`. A `[DONE]` some servers
    /// may append is tolerated.
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
            "the Responses stream ended before response.completed (or .incomplete/.failed)".into(),
        ))]
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;
    use llmb_plugin_sdk::testing::{self, Outcome};

    /// The example transcript of openai-responses.md, byte for byte.
    const TRANSCRIPT: &[u8] = br#"event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_68a1f0c2e4d08190","object":"response","created_at":1755443394,"status":"in_progress","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":64,"model":"gpt-4.1-2025-04-14","output":[],"parallel_tool_calls":true,"temperature":1.0,"tool_choice":"auto","tools":[],"top_p":1.0,"usage":null}}

event: response.in_progress
data: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_68a1f0c2e4d08190","object":"response","created_at":1755443394,"status":"in_progress","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":64,"model":"gpt-4.1-2025-04-14","output":[],"parallel_tool_calls":true,"temperature":1.0,"tool_choice":"auto","tools":[],"top_p":1.0,"usage":null}}

event: response.output_item.added
data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_68a1f0c3a1b48190","type":"message","status":"in_progress","content":[],"role":"assistant"}}

event: response.content_part.added
data: {"type":"response.content_part.added","sequence_number":3,"item_id":"msg_68a1f0c3a1b48190","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_68a1f0c3a1b48190","output_index":0,"content_index":0,"delta":"Paris","logprobs":[]}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_68a1f0c3a1b48190","output_index":0,"content_index":0,"delta":" is","logprobs":[]}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":6,"item_id":"msg_68a1f0c3a1b48190","output_index":0,"content_index":0,"delta":" the capital.","logprobs":[]}

event: response.output_text.done
data: {"type":"response.output_text.done","sequence_number":7,"item_id":"msg_68a1f0c3a1b48190","output_index":0,"content_index":0,"text":"Paris is the capital.","logprobs":[]}

event: response.content_part.done
data: {"type":"response.content_part.done","sequence_number":8,"item_id":"msg_68a1f0c3a1b48190","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":"Paris is the capital."}}

event: response.output_item.done
data: {"type":"response.output_item.done","sequence_number":9,"output_index":0,"item":{"id":"msg_68a1f0c3a1b48190","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Paris is the capital."}],"role":"assistant"}}

event: response.completed
data: {"type":"response.completed","sequence_number":10,"response":{"id":"resp_68a1f0c2e4d08190","object":"response","created_at":1755443394,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":64,"model":"gpt-4.1-2025-04-14","output":[{"id":"msg_68a1f0c3a1b48190","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Paris is the capital."}],"role":"assistant"}],"parallel_tool_calls":true,"temperature":1.0,"tool_choice":"auto","tools":[],"top_p":1.0,"usage":{"input_tokens":14,"input_tokens_details":{"cached_tokens":0},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":19}}}

"#;

    /// The short stream given to the simulator's author.
    const SHORT: &[u8] = br#"event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1755443394,"status":"in_progress","model":"m","output":[],"usage":null}}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":" a","logprobs":[]}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":0,"delta":" b","logprobs":[]}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"delta":" c","logprobs":[]}

event: response.output_text.done
data: {"type":"response.output_text.done","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"text":" a b c","logprobs":[]}

event: response.completed
data: {"type":"response.completed","sequence_number":5,"response":{"id":"resp_1","object":"response","created_at":1755443394,"status":"completed","model":"m","output":[{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],"text":" a b c"}]}],"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":2},"output_tokens":3,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":8}}}

"#;

    /// Frames `chunks` as the host does (one batch per read) and feeds one parser (the SDK's
    /// harness); this adapter never says how many tokens a delta carried.
    fn run(chunks: &[&[u8]]) -> Outcome {
        let out = testing::run(Parser::new(200, Vec::new()), chunks);
        assert_eq!(out.tokens(), 0);
        out
    }

    /// Same events whatever the read boundaries: every two-way split and one byte per read.
    fn assert_split_invariant(body: &[u8]) -> Outcome {
        let whole = run(&[body]);
        for k in 0..=body.len() {
            assert_eq!(run(&[&body[..k], &body[k..]]), whole, "split at byte {k}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "one byte per read");
        whole
    }

    fn request(req: impl FnOnce(&mut GenRequest)) -> Result<(String, Value), String> {
        let mut r = GenRequest {
            id: 1,
            model: "gpt-4.1".into(),
            prompt: Prompt::Text("What is the capital of France?".into()),
            max_tokens: 64,
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

    /// [`SHORT`] up to its third text delta, then `tail`.
    fn short_then(tail: &str) -> Vec<u8> {
        let done = SHORT
            .windows(32)
            .position(|w| w == b"event: response.output_text.done")
            .unwrap();
        [&SHORT[..done], tail.as_bytes()].concat()
    }

    #[test]
    fn transcript_conformance() {
        let out = assert_split_invariant(TRANSCRIPT);
        let texts: Vec<&str> = out.deltas.iter().map(|d| d.1.as_str()).collect();
        assert_eq!(texts, ["Paris", " is", " the capital."]);
        assert_eq!(
            out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
            [4, 5, 6]
        );
        assert_eq!(out.reasoning, "");
        assert_eq!(out.finish.as_deref(), Some("completed"));
        assert_eq!(out.usage, Some((Some(14), Some(5), Some(0))));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
        let out = assert_split_invariant(SHORT);
        assert_eq!(out.text(), " a b c");
        assert_eq!(
            out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(out.usage, Some((Some(5), Some(3), Some(2))));
        assert_eq!((out.finish.as_deref(), out.done), (Some("completed"), 1));
    }

    #[test]
    fn reasoning_incomplete_and_unnamed_events() {
        let body = b"event: response.reasoning_text.delta\ndata: {\"type\":\"response.reasoning_text.delta\",\"sequence_number\":3,\"item_id\":\"rs_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Think\"}\n\ndata: {\"type\":\"response.reasoning_summary_text.delta\",\"sequence_number\":4,\"item_id\":\"rs_1\",\"output_index\":0,\"summary_index\":0,\"delta\":\"ing.\"}\n\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"delta\":\"Paris\"}\n\nevent: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"sequence_number\":6,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"usage\":{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":3,\"output_tokens_details\":{\"reasoning_tokens\":2},\"total_tokens\":12}}}\n\ndata: [DONE]\n\n";
        let out = assert_split_invariant(body);
        assert_eq!(
            (out.reasoning.as_str(), out.text().as_str()),
            ("Thinking.", "Paris")
        );
        assert_eq!(out.finish.as_deref(), Some("max_output_tokens"));
        assert_eq!(out.usage, Some((Some(9), Some(3), Some(0))));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn request_body() {
        let (path, v) = request(|_| {}).unwrap();
        assert_eq!(path, "/v1/responses");
        assert_eq!(path, Adapter::info().default_endpoint);
        assert_eq!(
            v,
            json!({"model": "gpt-4.1", "input": "What is the capital of France?", "max_output_tokens": 64, "stream": true})
        );
        let (_, v) = request(|r| {
            r.streaming = false;
            r.ignore_eos = true;
            r.temperature = Some(0.0);
            r.extra_body = Some(r#"{"reasoning":{"effort":"low"},"store":false}"#.into());
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
        assert_eq!(
            v,
            json!({"model": "gpt-4.1", "max_output_tokens": 64, "stream": false, "temperature": 0.0,
                   "input": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                   "reasoning": {"effort": "low"}, "store": false})
        );
        // Images: `input_text`/`input_image` parts for the user; an assistant turn of the
        // history is its text (the API takes no input parts in that role).
        let (_, v) = request(|r| {
            r.prompt = Prompt::Multimodal(vec![
                MultimodalMessage {
                    role: Role::Assistant,
                    parts: vec![ContentPart::Text("Earlier.".into())],
                },
                MultimodalMessage {
                    role: Role::User,
                    parts: vec![
                        ContentPart::Text("What is it?".into()),
                        ContentPart::Image(Image {
                            data: b"abc".to_vec(),
                            mime_type: "image/png".into(),
                            url: None,
                            width: Some(1),
                            height: Some(1),
                        }),
                    ],
                },
            ]);
        })
        .unwrap();
        assert_eq!(
            v["input"],
            json!([{"role": "assistant", "content": "Earlier."},
                   {"role": "user", "content": [{"type": "input_text", "text": "What is it?"},
                       {"type": "input_image", "image_url": "data:image/png;base64,YWJj"}]}])
        );
        assert!(request(|r| r.extra_body = Some("null".into())).is_err());
        assert!(
            Adapter::configure(vec![Kv {
                key: "x".into(),
                value: "y".into()
            }])
            .is_err()
        );
        assert!(!Adapter::info().supports_ignore_eos);
    }

    #[test]
    fn in_stream_errors_fail_the_request() {
        let flat = short_then(
            "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"The server had an error while processing your request.\",\"param\":null,\"sequence_number\":4}\n\n",
        );
        let nested = short_then(
            "event: error\ndata: {\"type\":\"error\",\"sequence_number\":4,\"error\":{\"type\":\"server_error\",\"code\":\"server_error\",\"message\":\"The server had an error while processing your request.\",\"param\":null}}\n\nevent: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":5,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"other\"},\"usage\":null}}\n\n",
        );
        let failed = short_then(
            "event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":4,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"The server had an error while processing your request.\"},\"incomplete_details\":null,\"usage\":null}}\n\n",
        );
        for body in [flat, nested, failed] {
            let out = assert_split_invariant(&body);
            assert_eq!((out.text().as_str(), out.done), (" a b c", 0));
            assert_eq!((out.finish, out.usage), (None, None));
            assert_eq!(
                out.errors,
                [(
                    ErrorKind::Server,
                    "The server had an error while processing your request.".to_owned()
                )]
            );
        }
        let body = short_then(
            "event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit reached\",\"param\":null,\"sequence_number\":4}\n\n",
        );
        let out = run(&[&body]);
        assert_eq!(
            out.errors,
            [(ErrorKind::RateLimited, "Rate limit reached".to_owned())]
        );
    }

    #[test]
    fn http_errors_carry_the_server_message() {
        let e = Adapter::map_error(
            400,
            Vec::new(),
            br#"{"error":{"message":"Invalid 'max_output_tokens': integer below minimum value.","type":"invalid_request_error","param":"max_output_tokens","code":"integer_below_min_value"}}"#.to_vec(),
        );
        assert_eq!(
            e.message,
            "Invalid 'max_output_tokens': integer below minimum value."
        );
        assert_eq!(e.http_status, Some(400));
        assert!(matches!(e.kind, ErrorKind::BadRequest));
        let e = Adapter::map_error(
            429,
            Vec::new(),
            br#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.to_vec(),
        );
        assert!(matches!(e.kind, ErrorKind::RateLimited) && e.retryable);
        assert_eq!(e.message, "Rate limit reached for requests");
    }

    #[test]
    fn truncated_stream_fails_at_finish() {
        let out = assert_split_invariant(&short_then(""));
        assert_eq!((out.text().as_str(), out.done), (" a b c", 0));
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        assert!(out.errors[0].1.contains("ended before response.completed"));
        let cut = TRANSCRIPT.len() - 100;
        let out = run(&[&TRANSCRIPT[..cut]]);
        assert_eq!(
            (out.text().as_str(), out.done),
            ("Paris is the capital.", 0)
        );
        assert_eq!(out.errors.len(), 1);
    }

    #[test]
    fn non_streaming_body() {
        let body = br#"{"id":"resp_67ccd2bed1ec8190b14f964abc054267","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,"model":"gpt-4.1-2025-04-14","output":[{"type":"reasoning","id":"rs_1","summary":[]},{"type":"message","id":"msg_67ccd2bf17f0819081ff3bb2cf6508e6","status":"completed","role":"assistant","content":[{"type":"output_text","text":"The capital is Paris.","annotations":[],"logprobs":[]}]}],"usage":{"input_tokens":14,"input_tokens_details":{"cached_tokens":0},"output_tokens":6,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":20}}"#;
        let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
        assert_eq!(c.text, "The capital is Paris.");
        assert_eq!(c.finish.as_deref(), Some("completed"));
        let u = c.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens),
            (Some(14), Some(6), Some(0))
        );
        // Reasoning: the full text when the server gives it, the summary only without it.
        let both = br#"{"object":"response","status":"completed","output":[{"type":"reasoning","content":[{"type":"reasoning_text","text":"a b"}],"summary":[{"type":"summary_text","text":"ab"}]},{"type":"reasoning","summary":[{"type":"summary_text","text":" c"}]},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Paris"}]}],"usage":{"input_tokens":3,"output_tokens":4,"output_tokens_details":{"reasoning_tokens":3}}}"#;
        let c = Adapter::parse_body(200, Vec::new(), both.to_vec()).unwrap();
        assert_eq!((c.reasoning.as_str(), c.text.as_str()), ("a b c", "Paris"));
        assert_eq!(c.usage.unwrap().reasoning_tokens, Some(3));
        let failed = br#"{"id":"resp_1","object":"response","status":"failed","error":{"code":"server_error","message":"boom"},"output":[],"usage":null}"#;
        let e = Adapter::parse_body(200, Vec::new(), failed.to_vec()).unwrap_err();
        assert_eq!(e.message, "boom");
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            TRANSCRIPT,
            SHORT,
            br#"{"id":"resp_1","object":"response","status":"completed","error":null,"output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Paris","annotations":[]}]}],"usage":{"input_tokens":8,"input_tokens_details":{"cached_tokens":0},"output_tokens":1,"total_tokens":9}}"#,
            br#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#,
        ]);
    }
}
