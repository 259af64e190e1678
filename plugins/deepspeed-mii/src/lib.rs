//! DeepSpeed-MII's HTTP front-ends. Streams go to the simple FastAPI server's `POST /generate`
//! (`mii.entrypoints.api_server`): SSE `data: ` events `{"text": [<this step's text, one entry
//! per prompt>]}` in Python `json.dumps` spacing, ended by `data: [DONE]`, with no token counts,
//! finish reason or error event. Requests that do not stream go to the RESTful gateway
//! `POST /mii/<deployment>`, which answers with one `Response` object per prompt
//! (`generated_text`, `prompt_length`, `generated_length`, `finish_reason`) but cannot stream;
//! `--plugin-opt no-stream-route=generate` sends them to the FastAPI route instead. The gateway
//! takes `ignore_eos`; `/generate` hard-codes `ignore_eos: false`, so there output lengths are
//! forced through `min_tokens`.

use std::cell::RefCell;
use std::sync::Mutex;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::{error_message, is_error_object, merge_extra_body};
use llmb_plugin_sdk::openai::prompt_text;
use llmb_plugin_sdk::openai::{classify, map_error};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

/// The `deepspeed-mii` adapter.
pub struct Adapter;

/// Per-request stream state: `[DONE]` is the only sign of a complete stream, as a server-side
/// failure just closes the body.
#[derive(Default)]
pub struct Parser {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    done: bool,
    failed: bool,
}

/// Where requests that do not stream go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoStreamRoute {
    /// The RESTful gateway `POST /mii/<deployment>`: the only route reporting token counts and a
    /// finish reason, and the only one taking `ignore_eos`.
    #[default]
    Gateway,
    /// The FastAPI `POST /generate` with `stream: false`, for a server started without the gateway.
    Generate,
}

/// The `--plugin-opt` values, validated once by `configure`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// The gateway's deployment name, needed because it is part of the route; MII's default
    /// (`<model>-mii-deployment`) is used when unset.
    pub deployment: Option<String>,
    /// Chosen by the user because the gateway and the FastAPI server are started separately:
    /// either may be the only one running.
    pub no_stream_route: NoStreamRoute,
}

impl Options {
    /// Parses `deployment=NAME` and `no-stream-route=gateway|generate`, rejecting anything else so
    /// a typo cannot silently benchmark the wrong route.
    pub fn parse(options: &[Kv]) -> Result<Self, String> {
        let mut parsed = Self::default();
        for kv in options {
            match kv.key.as_str() {
                "deployment" if kv.value.trim().is_empty() => {
                    return Err("deployment must not be empty".into());
                }
                "deployment" => parsed.deployment = Some(kv.value.trim().to_owned()),
                "no-stream-route" => {
                    parsed.no_stream_route = match kv.value.as_str() {
                        "gateway" => NoStreamRoute::Gateway,
                        "generate" => NoStreamRoute::Generate,
                        other => {
                            return Err(format!(
                                "no-stream-route must be gateway or generate, not {other:?}"
                            ));
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?} for the deepspeed-mii adapter (known: deployment, no-stream-route)"
                    ));
                }
            }
        }
        Ok(parsed)
    }
}

static OPTIONS: Mutex<Options> = Mutex::new(Options {
    deployment: None,
    no_stream_route: NoStreamRoute::Gateway,
});

/// `/generate` always samples (`do_sample: true`) and MII requires `temperature > 0`, so greedy
/// decoding is approximated the way vLLM's bench does for this backend.
const NEAR_GREEDY_TEMPERATURE: f64 = 0.01;

/// Room for the special tokens (BOS, SentencePiece's leading `▁`) a prompt's bytes do not bound.
const SPECIAL_TOKEN_MARGIN: u32 = 16;

/// The `min_tokens` that keeps `/generate` going past EOS up to `max_tokens`. MII suppresses the
/// stop while `seq_length < min_new_tokens`, and `seq_length` counts the prompt too, so
/// `min_tokens = max_tokens` would do nothing for prompts longer than the output. A prompt has at
/// most one token per byte plus a few special tokens, so adding its byte length is always enough;
/// generation still ends at `max_new_tokens`.
fn forcing_min_tokens(max_tokens: u32, prompt: &str) -> u32 {
    max_tokens
        .saturating_add(u32::try_from(prompt.len()).unwrap_or(u32::MAX))
        .saturating_add(SPECIAL_TOKEN_MARGIN)
}

/// MII's default deployment name (`generate_deployment_name`): the model name, or a local path's
/// last component, followed by `-mii-deployment`.
fn default_deployment(model: &str) -> String {
    let local = model.starts_with('/') || model.starts_with("./") || model.starts_with("../");
    let name = if local {
        model
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(model)
    } else {
        model
    };
    format!("{name}-mii-deployment")
}

/// Flask registers the gateway route with the deployment name verbatim (slashes included), so
/// only bytes a URI path cannot hold are escaped.
fn escape_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@!$&'()*+,;=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds the request for `req` under `opts`; pure, so tests need not touch the global options.
pub fn build(req: &GenRequest, opts: &Options) -> Result<HttpRequest, String> {
    let prompt = prompt_text(&req.prompt)?;
    let (path, mut body) = if req.streaming || opts.no_stream_route == NoStreamRoute::Generate {
        let mut body = json!({
            "prompt": prompt,
            "max_tokens": req.max_tokens,
            "stream": req.streaming,
        });
        if req.ignore_eos {
            body["min_tokens"] = json!(forcing_min_tokens(req.max_tokens, &prompt));
        }
        match req.temperature {
            Some(t) if t <= 0.0 => body["temperature"] = json!(NEAR_GREEDY_TEMPERATURE),
            Some(t) => body["temperature"] = json!(t),
            None => {}
        }
        ("/generate".to_owned(), body)
    } else {
        let mut body = json!({ "prompts": [prompt], "max_new_tokens": req.max_tokens });
        if req.ignore_eos {
            body["ignore_eos"] = json!(true);
        }
        match req.temperature {
            Some(t) if t <= 0.0 => body["do_sample"] = json!(false),
            Some(t) => body["temperature"] = json!(t),
            None => {}
        }
        let deployment = match &opts.deployment {
            Some(d) => d.clone(),
            None => default_deployment(&req.model),
        };
        (format!("/mii/{}", escape_path(&deployment)), body)
    };
    merge_extra_body(&mut body, req.extra_body.as_deref())?;
    Ok(HttpRequest {
        method: "POST".into(),
        path,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
    })
}

/// One `/generate` stream event: the text each prompt gained in this step.
#[derive(Deserialize)]
struct Event {
    text: Option<Texts>,
    error: Option<IgnoredAny>,
}

/// `text` is a list (one entry per prompt); a bare string is accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Texts {
    Many(Vec<String>),
    One(String),
}

/// A gateway `Response` (`Response.to_msg_dict()`).
#[derive(Deserialize)]
struct GatewayResponse {
    #[serde(default)]
    generated_text: String,
    prompt_length: Option<u32>,
    generated_length: Option<u32>,
    finish_reason: Option<String>,
}

/// An error object inside a 200 stream; MII defines none, but one shaped like its HTTP 400 body
/// (`{"error": "..."}`) must still fail the request rather than pass as an odd chunk.
fn stream_error(data: &[u8]) -> BackendError {
    let v: Option<Value> = serde_json::from_slice(data).ok();
    let message = v.as_ref().and_then(error_message).unwrap_or_else(|| {
        String::from_utf8_lossy(&data[..data.len().min(300)])
            .trim()
            .to_owned()
    });
    let code = v.as_ref().and_then(|v| {
        let code = v.get("error").and_then(|e| e.get("code")).or(v.get("code"));
        code?
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..600).contains(c))
    });
    let mut err = classify(code, message);
    err.http_status = None;
    err
}

/// werkzeug's HTML error page (the gateway's only error body) reduced to its title and text, e.g.
/// "500 Internal Server Error: The server encountered an internal error ...".
fn html_message(body: &str) -> Option<String> {
    let head = body.trim_start().as_bytes();
    let starts = |p: &[u8]| head.len() >= p.len() && head[..p.len()].eq_ignore_ascii_case(p);
    if !starts(b"<!doctype html") && !starts(b"<html") {
        return None;
    }
    let element = |open: &str, close: &str| {
        let start = body.find(open)? + open.len();
        let end = body[start..].find(close)? + start;
        Some(html_text(&body[start..end])).filter(|t| !t.is_empty())
    };
    match (element("<title>", "</title>"), element("<p>", "</p>")) {
        (Some(t), Some(p)) => Some(format!("{t}: {p}")),
        (t, p) => t.or(p),
    }
}

/// Text of an HTML fragment: tags dropped, common entities decoded, whitespace collapsed.
fn html_text(fragment: &str) -> String {
    let mut text = String::with_capacity(fragment.len());
    let mut in_tag = false;
    for c in fragment.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Non-2xx bodies: JSON envelopes (`{"error": "..."}`, the OpenAI server's flat
/// `{"object": "error", "message": ...}`, FastAPI's `detail`), werkzeug HTML, or plain text.
fn http_error(status: u16, body: &[u8]) -> BackendError {
    match std::str::from_utf8(body).ok().and_then(html_message) {
        Some(message) => classify(Some(status), message),
        None => map_error(status, body),
    }
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "deepspeed-mii".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "DeepSpeed-MII: streams from the FastAPI POST /generate ({\"text\": [...]} SSE ending in data: [DONE]; no server token counts or finish reason), non-streaming requests via the REST gateway POST /mii/<deployment> (plugin-opts deployment=NAME, no-stream-route=gateway|generate); output lengths are forced with ignore_eos on the gateway and, as /generate hard-codes ignore_eos false, with min_tokens (min_new_tokens) there".into(),
            default_endpoint: "/generate".into(),
            framing: Framing::Sse,
            supports_ignore_eos: true,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        let parsed = Options::parse(&options)?;
        *OPTIONS.lock().unwrap_or_else(|e| e.into_inner()) = parsed;
        Ok(())
    }

    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let opts = OPTIONS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        build(&req, &opts)
    }

    /// The gateway's array of `Response` objects (also when flask-restful JSON-encodes the
    /// already-encoded array a second time, as some MII versions do), or `/generate`'s
    /// `{"text": [...]}`, which carries no counts. The first prompt's result is the request's.
    fn parse_body(
        status: u16,
        _headers: Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        let mut v: Value = serde_json::from_slice(&body)
            .map_err(|e| protocol(format!("response body is not JSON: {e}")))?;
        if let Value::String(inner) = &v {
            v = serde_json::from_str(inner).map_err(|e| {
                protocol(format!("DeepSpeed-MII body is a string but not JSON: {e}"))
            })?;
        }
        if is_error_object(&v) || v.get("detail").is_some() {
            return Err(http_error(status, &body));
        }
        if let Some(first) = v.as_array().and_then(|a| a.first()) {
            let r: GatewayResponse = serde_json::from_value(first.clone())
                .map_err(|e| protocol(format!("unexpected DeepSpeed-MII gateway response: {e}")))?;
            return Ok(Completion {
                reasoning: String::new(),
                text: r.generated_text,
                finish: r.finish_reason.filter(|f| f != "none"),
                usage: (r.prompt_length.is_some() || r.generated_length.is_some()).then_some(
                    Usage {
                        reasoning_tokens: None,
                        prompt_tokens: r.prompt_length,
                        completion_tokens: r.generated_length,
                        cached_prompt_tokens: None,
                    },
                ),
            });
        }
        let text = match v.get("text") {
            Some(Value::Array(texts)) => texts.first().and_then(Value::as_str),
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        match text {
            Some(text) => Ok(Completion {
                reasoning: String::new(),
                text: text.to_owned(),
                finish: None,
                usage: None,
            }),
            None => {
                let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
                Err(protocol(format!(
                    "unexpected DeepSpeed-MII response body: {shown}"
                )))
            }
        }
    }

    fn map_error(status: u16, _headers: Headers, body: Vec<u8>) -> BackendError {
        http_error(status, &body)
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

    /// Every event other than `[DONE]` is a delta per prompt, even with empty text: the file's
    /// rule is that the first such event is the first token. Token counts are left to the host
    /// (its tokenizer, else one token per event), as the stream carries none.
    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        let mut events = Vec::with_capacity(batch.len() + 1);
        for (frame, name, data) in batch.iter() {
            let data = data.trim_ascii();
            if state.done || state.failed || data.is_empty() {
                continue;
            }
            if data == b"[DONE]" {
                state.done = true;
                events.push(StreamEvent::Done);
                continue;
            }
            if name == Some("error") {
                state.failed = true;
                events.push(StreamEvent::Error(stream_error(data)));
                continue;
            }
            let ev: Event = match serde_json::from_slice(data) {
                Ok(ev) => ev,
                Err(e) => {
                    let shown = String::from_utf8_lossy(&data[..data.len().min(120)]);
                    state.failed = true;
                    events.push(StreamEvent::Error(protocol(format!(
                        "malformed DeepSpeed-MII stream event ({e}): {shown}"
                    ))));
                    continue;
                }
            };
            if ev.error.is_some() {
                state.failed = true;
                events.push(StreamEvent::Error(stream_error(data)));
                continue;
            }
            let texts = match ev.text {
                Some(Texts::Many(texts)) => texts,
                Some(Texts::One(text)) => vec![text],
                None => {
                    let shown = String::from_utf8_lossy(&data[..data.len().min(120)]);
                    state.failed = true;
                    events.push(StreamEvent::Error(protocol(format!(
                        "DeepSpeed-MII stream event without `text` (is --endpoint the FastAPI /generate route?): {shown}"
                    ))));
                    continue;
                }
            };
            for (index, text) in texts.into_iter().enumerate() {
                events.push(StreamEvent::Delta(Delta {
                    frame,
                    text,
                    reasoning: String::new(),
                    tokens: None,
                    index: index as u32,
                }));
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
            "the DeepSpeed-MII stream ended before `data: [DONE]` (MII reports a failure mid-stream only by closing the body)".into(),
        ))]
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;

    /// The FastAPI `/generate` stream transcript of deepspeed-mii.md, byte for byte.
    const TRANSCRIPT: &[u8] = b"data: {\"text\": [\" Paris\"]}\n\ndata: {\"text\": [\",\"]}\n\ndata: {\"text\": [\" the\"]}\n\ndata: {\"text\": [\" capital\"]}\n\ndata: [DONE]\n\n";

    /// The short stream given to the simulator: three tokens and the terminator.
    const SIM_STREAM: &[u8] = b"data: {\"text\": [\" a\"]}\n\ndata: {\"text\": [\" b\"]}\n\ndata: {\"text\": [\" c\"]}\n\ndata: [DONE]\n\n";

    use llmb_plugin_sdk::testing::Outcome;

    /// Frames `chunks` as the host does (one batch per read) and feeds one parser.
    fn run(chunks: &[&[u8]]) -> Outcome {
        llmb_plugin_sdk::testing::run(Parser::new(200, Vec::new()), chunks)
    }

    /// Same events whatever the read boundaries: every two-way split and one byte per read.
    fn assert_split_invariant(body: &[u8]) -> Outcome {
        llmb_plugin_sdk::testing::assert_split_invariant(|| Parser::new(200, Vec::new()), body)
    }

    fn request(
        opts: &Options,
        req: impl FnOnce(&mut GenRequest),
    ) -> Result<(String, Value), String> {
        let mut r = GenRequest {
            id: 1,
            model: "mistralai/Mistral-7B-v0.1".into(),
            prompt: Prompt::Text("What is the capital of France?".into()),
            max_tokens: 4,
            ignore_eos: false,
            streaming: true,
            include_usage: true,
            temperature: None,
            extra_body: None,
        };
        req(&mut r);
        let http = build(&r, opts)?;
        assert_eq!(http.method, "POST");
        assert_eq!(
            http.headers,
            [("content-type".to_owned(), "application/json".to_owned())]
        );
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
        assert!(out.deltas.iter().all(|d| d.2.is_none()));
        assert_eq!((out.finish, out.usage), (None, None));
        assert_eq!(out.done, 1);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn simulator_stream() {
        let out = assert_split_invariant(SIM_STREAM);
        assert_eq!(out.text(), " a b c");
        assert_eq!(out.deltas.len(), 3);
        assert_eq!((out.finish, out.usage, out.done), (None, None, 1));
        assert!(out.errors.is_empty());
    }

    #[test]
    fn every_event_is_a_delta_per_prompt() {
        let body = b"data: {\"text\": [\"\"]}\n\ndata: {\"text\": [\" Caf\\u00e9\", \" Seattle\"]}\n\ndata: {\"text\": \" is\"}\n\ndata: [DONE]\n\n";
        let out = assert_split_invariant(body);
        assert_eq!(
            out.deltas,
            [
                (0, String::new(), None),
                (1, " Caf\u{e9}".into(), None),
                (1, " Seattle".into(), None),
                (2, " is".into(), None),
            ]
        );
        assert_eq!(out.done, 1);
        let parser = Parser::new(200, Vec::new());
        let data = b"{\"text\": [\"x\", \"y\"]}".to_vec();
        let events = parser.feed(FrameBatch {
            frames: vec![FrameSpan {
                start: 0,
                len: data.len() as u32,
                event: None,
            }],
            data,
        });
        let indexes: Vec<u32> = (events.iter())
            .filter_map(|e| match e {
                StreamEvent::Delta(d) => Some(d.index),
                _ => None,
            })
            .collect();
        assert_eq!(indexes, [0, 1]);
    }

    #[test]
    fn streaming_request_body() {
        let opts = Options::default();
        let (path, v) = request(&opts, |_| {}).unwrap();
        assert_eq!(path, "/generate");
        assert_eq!(
            v,
            json!({"prompt": "What is the capital of France?", "max_tokens": 4, "stream": true})
        );
        let (_, v) = request(&opts, |r| {
            r.ignore_eos = true;
            r.temperature = Some(0.0);
            r.extra_body = Some(r#"{"top_p":1.0,"max_tokens":8}"#.into());
        })
        .unwrap();
        assert_eq!(v["min_tokens"], 4 + 30 + SPECIAL_TOKEN_MARGIN);
        assert_eq!(v["temperature"], 0.01);
        assert_eq!(v["top_p"], 1.0);
        assert_eq!(v["max_tokens"], 8);
        assert!(v.get("ignore_eos").is_none());
        let (_, v) = request(&opts, |r| r.temperature = Some(0.5)).unwrap();
        assert_eq!(v["temperature"], 0.5);
        let (_, v) = request(&opts, |r| {
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
        })
        .unwrap();
        assert_eq!(v["prompt"], "Be brief.\nHi");
        assert!(request(&opts, |r| r.extra_body = Some("[1]".into())).is_err());
        assert!(Adapter::info().supports_ignore_eos);
        assert_eq!(Adapter::info().default_endpoint, "/generate");
    }

    #[test]
    fn non_streaming_request_body() {
        let opts = Options::default();
        let (path, v) = request(&opts, |r| r.streaming = false).unwrap();
        assert_eq!(path, "/mii/mistralai/Mistral-7B-v0.1-mii-deployment");
        assert_eq!(
            v,
            json!({"prompts": ["What is the capital of France?"], "max_new_tokens": 4})
        );
        let (_, v) = request(&opts, |r| {
            r.streaming = false;
            r.ignore_eos = true;
            r.temperature = Some(0.0);
            r.extra_body = Some(r#"{"max_length":2048,"top_k":5}"#.into());
        })
        .unwrap();
        assert_eq!(v["ignore_eos"], true);
        assert_eq!(v["do_sample"], false);
        assert!(v.get("temperature").is_none() && v.get("min_tokens").is_none());
        assert_eq!(
            (v["max_length"].clone(), v["top_k"].clone()),
            (2048.into(), 5.into())
        );
        let (_, v) = request(&opts, |r| {
            r.streaming = false;
            r.temperature = Some(0.7);
        })
        .unwrap();
        assert!(
            v["temperature"]
                .as_f64()
                .is_some_and(|t| (t - 0.7).abs() < 1e-6)
        );
        assert!(v.get("do_sample").is_none());

        let (path, _) = request(&opts, |r| {
            r.streaming = false;
            r.model = "/models/llama 3/".into();
        })
        .unwrap();
        assert_eq!(path, "/mii/llama%203-mii-deployment");
        let named = Options {
            deployment: Some("mistral-deployment".into()),
            ..Options::default()
        };
        let (path, _) = request(&named, |r| r.streaming = false).unwrap();
        assert_eq!(path, "/mii/mistral-deployment");
        let (path, _) = request(&named, |_| {}).unwrap();
        assert_eq!(path, "/generate");

        let fastapi = Options {
            no_stream_route: NoStreamRoute::Generate,
            ..Options::default()
        };
        let (path, v) = request(&fastapi, |r| r.streaming = false).unwrap();
        assert_eq!(path, "/generate");
        assert_eq!(v["stream"], false);
        assert_eq!(v["max_tokens"], 4);
    }

    #[test]
    fn options() {
        let kv = |k: &str, v: &str| Kv {
            key: k.into(),
            value: v.into(),
        };
        assert_eq!(Options::parse(&[]).unwrap(), Options::default());
        assert_eq!(
            Options::parse(&[kv("deployment", "d"), kv("no-stream-route", "generate")]).unwrap(),
            Options {
                deployment: Some("d".into()),
                no_stream_route: NoStreamRoute::Generate,
            }
        );
        assert!(Options::parse(&[kv("no-stream-route", "grpc")]).is_err());
        assert!(Options::parse(&[kv("deployment", " ")]).is_err());
        let e = Adapter::configure(vec![kv("max-tokens-field", "max_tokens")]).unwrap_err();
        assert!(e.contains("unknown option \"max-tokens-field\""));
    }

    #[test]
    fn in_stream_error_fails_the_request() {
        let body = b"data: {\"text\": [\" Paris\"]}\n\ndata: {\"error\": \"CUDA out of memory\"}\n\ndata: [DONE]\n\n";
        let out = assert_split_invariant(body);
        assert_eq!(out.text(), " Paris");
        assert_eq!(out.done, 0);
        assert_eq!(
            out.errors,
            [(ErrorKind::Unknown, "CUDA out of memory".to_owned())]
        );
        let out = assert_split_invariant(
            b"data: {\"text\": [\" Paris\"]}\n\ndata: {\"choices\": []}\n\n",
        );
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        assert!(out.errors[0].1.contains("without `text`"));
    }

    #[test]
    fn http_errors_carry_the_server_message() {
        let e = Adapter::map_error(
            400,
            Vec::new(),
            br#"{"error": "Prompt is required."}"#.to_vec(),
        );
        assert_eq!(e.message, "Prompt is required.");
        assert_eq!(e.http_status, Some(400));
        assert!(matches!(e.kind, ErrorKind::BadRequest));
        let e = Adapter::map_error(500, Vec::new(), b"Internal Server Error".to_vec());
        assert_eq!(e.message, "Internal Server Error");
        assert!(matches!(e.kind, ErrorKind::Server));
        let html = b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>\n<p>The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.</p>\n";
        let e = Adapter::map_error(500, Vec::new(), html.to_vec());
        assert_eq!(
            e.message,
            "500 Internal Server Error: The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application."
        );
        assert_eq!(e.http_status, Some(500));
        let e = Adapter::map_error(
            400,
            Vec::new(),
            br#"{"object": "error", "message": "Input too long: maximum context length is 4096", "code": 1}"#
                .to_vec(),
        );
        assert!(matches!(e.kind, ErrorKind::ContextLength));
        assert_eq!(e.http_status, Some(400));
        let e = Adapter::map_error(
            422,
            Vec::new(),
            br#"{"detail":[{"loc":["body","prompt"],"msg":"field required","type":"value_error.missing"}]}"#.to_vec(),
        );
        assert!(e.message.contains("field required"));
        assert!(matches!(e.kind, ErrorKind::BadRequest));
    }

    #[test]
    fn truncated_stream_fails_at_finish() {
        let cut = TRANSCRIPT.len() - b"data: [DONE]\n\n".len();
        let out = assert_split_invariant(&TRANSCRIPT[..cut]);
        assert_eq!(out.text(), " Paris, the capital");
        assert_eq!(out.done, 0);
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        assert!(out.errors[0].1.contains("ended before `data: [DONE]`"));
        let out = run(&[&TRANSCRIPT[..20]]);
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
    }

    #[test]
    fn non_streaming_bodies() {
        let body = br#"[{"finish_reason":"length","generated_length":4,"generated_text":" Paris, the capital","prompt_length":8},{"finish_reason":"stop","generated_length":12,"generated_text":" a city in Washington state.","prompt_length":3}]"#;
        let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
        assert_eq!(c.text, " Paris, the capital");
        assert_eq!(c.finish.as_deref(), Some("length"));
        let u = c.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(8), Some(4)));
        let doubled = serde_json::to_vec(&Value::String(
            r#"[{"generated_text": " a b c", "prompt_length": 5, "generated_length": 3, "finish_reason": "none"}]"#.into(),
        ))
        .unwrap();
        let c = Adapter::parse_body(200, Vec::new(), doubled).unwrap();
        assert_eq!((c.text.as_str(), c.finish), (" a b c", None));
        assert_eq!(c.usage.unwrap().completion_tokens, Some(3));
        let c = Adapter::parse_body(200, Vec::new(), br#"{"text": [" a b c"]}"#.to_vec()).unwrap();
        assert_eq!((c.text.as_str(), c.finish), (" a b c", None));
        assert!(c.usage.is_none());
        let e = Adapter::parse_body(
            200,
            Vec::new(),
            br#"{"error": "Prompt is required."}"#.to_vec(),
        )
        .unwrap_err();
        assert_eq!(e.message, "Prompt is required.");
        let e = Adapter::parse_body(200, Vec::new(), b"<html></html>".to_vec()).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Protocol));
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            TRANSCRIPT,
            SIM_STREAM,
            br#"[{"finish_reason":"length","generated_length":4,"generated_text":" Paris, the capital","prompt_length":8}]"#,
            br#"{"text": [" a b c"]}"#,
            b"data: {\"text\": [\" Paris\"]}\n\ndata: {\"error\": \"CUDA out of memory\"}\n\ndata: [DONE]\n\n",
        ]);
    }
}
