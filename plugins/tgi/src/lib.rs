//! Hugging Face TGI's native routes: `POST /generate_stream` (SSE, `data:` without a space, one
//! event per token, no `[DONE]`: the stream ends with the event whose `generated_text` is set)
//! and `POST /generate` when not streaming. TGI has no `ignore_eos`, so output lengths cannot be
//! forced; `details: true` is always sent so the last event carries the token counts.

use std::cell::RefCell;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::{error_message, get_u32, merge_extra_body};
use llmb_plugin_sdk::openai::classify;
use llmb_plugin_sdk::openai::prompt_text;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

/// The `tgi` adapter.
pub struct Adapter;

/// Per-request stream state: TGI has no terminator, so the parser must remember whether the
/// final event (non-null `generated_text`) arrived.
#[derive(Default)]
pub struct Parser {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    done: bool,
    failed: bool,
}

/// One `StreamResponse`: a token, plus `generated_text` and `details` on the last one.
#[derive(Deserialize)]
struct Event {
    token: Option<Token>,
    generated_text: Option<IgnoredAny>,
    details: Option<Details>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Token {
    text: String,
    #[serde(default)]
    special: bool,
}

#[derive(Deserialize)]
struct Details {
    finish_reason: Option<String>,
    generated_tokens: Option<u32>,
    input_length: Option<u32>,
}

/// TGI's `{"error","error_type"}` envelope; `error_type` is a better guide to the kind than
/// the status (a failed generation is 424) and its context-overflow message never says "context".
fn tgi_error(status: Option<u16>, body: &[u8]) -> BackendError {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let message = v.as_ref().and_then(error_message).unwrap_or_else(|| {
        String::from_utf8_lossy(&body[..body.len().min(300)])
            .trim()
            .to_owned()
    });
    let overflow = message.contains("`inputs` tokens + `max_new_tokens`");
    let mut err = classify(status, message);
    let error_type = v.as_ref().and_then(|v| v.get("error_type")?.as_str());
    err.kind = match error_type {
        _ if overflow || matches!(err.kind, ErrorKind::ContextLength) => ErrorKind::ContextLength,
        Some("overloaded") => ErrorKind::Overloaded,
        Some("validation") => ErrorKind::BadRequest,
        Some("generation" | "incomplete_generation" | "incomplete_generation_stream") => {
            ErrorKind::Server
        }
        _ => err.kind,
    };
    err.retryable = matches!(
        err.kind,
        ErrorKind::RateLimited | ErrorKind::Overloaded | ErrorKind::Timeout
    );
    err
}

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "tgi".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Hugging Face TGI native POST /generate_stream (/generate when not streaming); TGI has no ignore_eos, output lengths cannot be forced".into(),
            default_endpoint: "/generate_stream".into(),
            framing: Framing::Sse,
            supports_ignore_eos: false,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        match options.first() {
            Some(kv) => Err(format!(
                "the tgi adapter takes no options (got {:?})",
                kv.key
            )),
            None => Ok(()),
        }
    }

    /// TGI rejects `temperature: 0`, so it is sent as greedy decoding (`do_sample: false`); any
    /// other temperature turns sampling on, as TGI decodes greedily unless told otherwise.
    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let mut parameters = json!({ "max_new_tokens": req.max_tokens, "details": true });
        match req.temperature {
            Some(t) if t <= 0.0 => parameters["do_sample"] = json!(false),
            Some(t) => {
                parameters["temperature"] = json!(t);
                parameters["do_sample"] = json!(true);
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

    /// Counts come from `details`, else from the `x-prompt-tokens`/`x-generated-tokens` headers.
    fn parse_body(
        status: u16,
        headers: Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| protocol(format!("response body is not JSON: {e}")))?;
        if v.get("error").is_some() {
            return Err(tgi_error(Some(status), &body));
        }
        let details = v.get("details").and_then(Value::as_object);
        let from_header = |name| header(&headers, name).and_then(|s| s.trim().parse().ok());
        let usage = Usage {
            reasoning_tokens: None,
            prompt_tokens: from_header("x-prompt-tokens"),
            completion_tokens: details
                .and_then(|d| get_u32(d, "generated_tokens"))
                .or_else(|| from_header("x-generated-tokens")),
            cached_prompt_tokens: None,
        };
        Ok(Completion {
            reasoning: String::new(),
            text: v["generated_text"].as_str().unwrap_or_default().to_owned(),
            finish: details
                .and_then(|d| d.get("finish_reason")?.as_str())
                .map(str::to_owned),
            usage: (usage.prompt_tokens.is_some() || usage.completion_tokens.is_some())
                .then_some(usage),
        })
    }

    fn map_error(status: u16, _headers: Headers, body: Vec<u8>) -> BackendError {
        let mut err = tgi_error(Some(status), &body);
        err.http_status = Some(status);
        err
    }

    fn tokenize_request(req: GenRequest) -> Option<HttpRequest> {
        let text = prompt_text(&req.prompt).ok()?;
        Some(llmb_plugin_sdk::tokenize::json_request(
            "/tokenize",
            &json!({ "inputs": text }),
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

    /// Every token event is a delta of one token; a special token (EOS) counts but adds no text,
    /// as TGI leaves it out of `generated_text`.
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
                        "malformed TGI stream event ({e}): {shown}"
                    ))));
                    continue;
                }
            };
            if ev.error.is_some() {
                state.failed = true;
                events.push(StreamEvent::Error(tgi_error(None, data)));
                continue;
            }
            if let Some(token) = ev.token {
                events.push(StreamEvent::Delta(Delta {
                    frame,
                    text: if token.special {
                        String::new()
                    } else {
                        token.text
                    },
                    reasoning: String::new(),
                    tokens: Some(1),
                    index: 0,
                }));
            }
            if ev.generated_text.is_some() {
                if let Some(d) = ev.details {
                    if let Some(reason) = d.finish_reason {
                        events.push(StreamEvent::Finish(reason));
                    }
                    events.push(StreamEvent::Usage(Usage {
                        reasoning_tokens: None,
                        prompt_tokens: d.input_length,
                        completion_tokens: d.generated_tokens,
                        cached_prompt_tokens: None,
                    }));
                }
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
            "the TGI stream ended before its final event (the one with `generated_text`)".into(),
        ))]
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;

    /// The `/generate_stream` transcript of tgi.md, byte for byte.
    const TRANSCRIPT: &[u8] = b"data:{\"index\":1,\"token\":{\"id\":12366,\"text\":\" Paris\",\"logprob\":-0.08251953,\"special\":false},\"generated_text\":null,\"details\":null}\n\ndata:{\"index\":2,\"token\":{\"id\":11,\"text\":\",\",\"logprob\":-0.7705078,\"special\":false},\"generated_text\":null,\"details\":null}\n\ndata:{\"index\":3,\"token\":{\"id\":279,\"text\":\" the\",\"logprob\":-0.6113281,\"special\":false},\"generated_text\":null,\"details\":null}\n\ndata:{\"index\":4,\"token\":{\"id\":6864,\"text\":\" capital\",\"logprob\":-0.0234375,\"special\":false},\"generated_text\":\" Paris, the capital\",\"details\":{\"finish_reason\":\"length\",\"generated_tokens\":4,\"seed\":6721946394781285437,\"input_length\":8}}\n\n";

    use llmb_plugin_sdk::testing::Outcome;

    /// Frames `chunks` as the host does (one batch per read) and feeds one parser.
    fn run(chunks: &[&[u8]]) -> Outcome {
        llmb_plugin_sdk::testing::run(Parser::new(200, Vec::new()), chunks)
    }

    /// Same events whatever the read boundaries: every two-way split and one byte per read.
    fn assert_split_invariant(body: &[u8]) -> Outcome {
        llmb_plugin_sdk::testing::assert_split_invariant(|| Parser::new(200, Vec::new()), body)
    }

    fn request(streaming: bool, temperature: Option<f32>, extra: Option<&str>) -> Value {
        let req = GenRequest {
            id: 1,
            model: "m".into(),
            prompt: Prompt::Text("What is the capital of France?".into()),
            max_tokens: 4,
            ignore_eos: true,
            streaming,
            include_usage: true,
            temperature,
            extra_body: extra.map(str::to_owned),
        };
        let http = Adapter::build_request(req).unwrap();
        assert_eq!(http.method, "POST");
        let mut v: Value = serde_json::from_slice(&http.body).unwrap();
        v["path"] = http.path.into();
        v
    }

    #[test]
    fn transcript_conformance() {
        let out = assert_split_invariant(TRANSCRIPT);
        assert_eq!(out.text(), " Paris, the capital");
        assert_eq!(
            out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(out.tokens(), 4);
        assert_eq!(out.finish.as_deref(), Some("length"));
        assert_eq!(out.usage, Some((Some(8), Some(4), None)));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn eos_token_counts_without_text() {
        let body = b"data:{\"index\":1,\"token\":{\"id\":12366,\"text\":\" Paris\",\"logprob\":-0.08,\"special\":false},\"generated_text\":null,\"details\":null}\n\n:\n\ndata:{\"index\":2,\"token\":{\"id\":128009,\"text\":\"<|eot_id|>\",\"logprob\":-0.01,\"special\":true},\"generated_text\":\" Paris\",\"details\":{\"finish_reason\":\"eos_token\",\"generated_tokens\":2,\"seed\":null,\"input_length\":8}}\n\n";
        let out = assert_split_invariant(body);
        assert_eq!(out.text(), " Paris");
        assert_eq!(out.tokens(), 2);
        assert_eq!(out.finish.as_deref(), Some("eos_token"));
        assert_eq!(out.usage, Some((Some(8), Some(2), None)));
        assert_eq!(out.done, 1);
    }

    #[test]
    fn request_body() {
        let v = request(true, Some(0.5), None);
        assert_eq!(v["path"], "/generate_stream");
        assert_eq!(v["inputs"], "What is the capital of France?");
        assert_eq!(v["parameters"]["max_new_tokens"], 4);
        assert_eq!(v["parameters"]["details"], true);
        assert_eq!(v["parameters"]["temperature"], 0.5);
        assert_eq!(v["parameters"]["do_sample"], true);
        assert!(v.get("stream").is_none() && v["parameters"].get("ignore_eos").is_none());
        let v = request(
            false,
            Some(0.0),
            Some(r#"{"parameters":{"top_p":0.9,"details":false},"truncate":1}"#),
        );
        assert_eq!(v["path"], "/generate");
        assert_eq!(v["parameters"]["do_sample"], false);
        assert!(v["parameters"].get("temperature").is_none());
        assert_eq!(v["parameters"]["top_p"], 0.9);
        assert_eq!(v["parameters"]["details"], false);
        assert_eq!(v["parameters"]["max_new_tokens"], 4);
        assert_eq!(v["truncate"], 1);
        assert!(!Adapter::info().supports_ignore_eos);
    }

    #[test]
    fn chat_prompt_is_joined() {
        let req = GenRequest {
            id: 1,
            model: "m".into(),
            prompt: Prompt::Chat(vec![
                ChatMessage {
                    role: Role::System,
                    content: "Be brief.".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "Hi".into(),
                },
            ]),
            max_tokens: 1,
            ignore_eos: false,
            streaming: true,
            include_usage: false,
            temperature: None,
            extra_body: Some("[1]".into()),
        };
        assert!(
            Adapter::build_request(req.clone())
                .unwrap_err()
                .contains("JSON object")
        );
        let http = Adapter::build_request(GenRequest {
            extra_body: None,
            ..req
        })
        .unwrap();
        let v: Value = serde_json::from_slice(&http.body).unwrap();
        assert_eq!(v["inputs"], "Be brief.\nHi");
    }

    #[test]
    fn in_stream_error_fails_the_request() {
        let body = b"data:{\"index\":1,\"token\":{\"id\":12366,\"text\":\" Paris\",\"logprob\":-0.08,\"special\":false},\"generated_text\":null,\"details\":null}\n\ndata:{\"error\":\"Request failed during generation: Server error: CUDA out of memory\",\"error_type\":\"generation\"}\n\n";
        let out = assert_split_invariant(body);
        assert_eq!(out.text(), " Paris");
        assert_eq!(out.done, 0);
        assert_eq!(
            out.errors,
            [(
                ErrorKind::Server,
                "Request failed during generation: Server error: CUDA out of memory".to_owned()
            )]
        );
    }

    #[test]
    fn http_errors_carry_the_server_message() {
        let body = br#"{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4031 `inputs` tokens and 200 `max_new_tokens`","error_type":"validation"}"#;
        let e = Adapter::map_error(422, Vec::new(), body.to_vec());
        assert!(matches!(e.kind, ErrorKind::ContextLength));
        assert!(
            e.message
                .starts_with("Input validation error: `inputs` tokens")
        );
        assert_eq!(e.http_status, Some(422));
        let e = Adapter::map_error(
            429,
            Vec::new(),
            br#"{"error":"Model is overloaded","error_type":"overloaded"}"#.to_vec(),
        );
        assert!(matches!(e.kind, ErrorKind::Overloaded) && e.retryable);
        assert_eq!(e.message, "Model is overloaded");
        let e = Adapter::map_error(401, Vec::new(), Vec::new());
        assert!(matches!(e.kind, ErrorKind::Unauthorized));
        assert_eq!(e.message, "HTTP 401 with an empty body");
    }

    #[test]
    fn truncated_stream_fails_at_finish() {
        let last = b"data:{\"index\":4";
        let cut = TRANSCRIPT
            .windows(last.len())
            .position(|w| w == last)
            .unwrap();
        let out = assert_split_invariant(&TRANSCRIPT[..cut]);
        assert_eq!(out.text(), " Paris, the");
        assert_eq!(
            (out.tokens(), out.done, out.finish, out.usage),
            (3, 0, None, None)
        );
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        assert!(out.errors[0].1.contains("ended before its final event"));
        let out = run(&[&TRANSCRIPT[..cut + 40]]);
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
    }

    #[test]
    fn non_streaming_body() {
        let body = br#"{"generated_text":" Paris, the capital","details":{"finish_reason":"length","generated_tokens":4,"seed":null,"prefill":[],"tokens":[{"id":12366,"text":" Paris","logprob":-0.08,"special":false},{"id":11,"text":",","logprob":-0.77,"special":false},{"id":279,"text":" the","logprob":-0.61,"special":false},{"id":6864,"text":" capital","logprob":-0.02,"special":false}]}}"#;
        let headers = vec![("x-prompt-tokens".into(), "8".into())];
        let c = Adapter::parse_body(200, headers, body.to_vec()).unwrap();
        assert_eq!(c.text, " Paris, the capital");
        assert_eq!(c.finish.as_deref(), Some("length"));
        let u = c.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(8), Some(4)));
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            TRANSCRIPT,
            br#"{"generated_text":" Paris","details":{"finish_reason":"length","generated_tokens":1,"seed":null}}"#,
            br#"{"error":"Model is overloaded","error_type":"overloaded"}"#,
            br#"[{"id":1,"text":"a","start":0,"stop":1}]"#,
        ]);
    }
}
