//! OpenAI's embeddings API, `POST /v1/embeddings`, as vLLM, SGLang, llama.cpp, TEI and hosted
//! APIs serve it: one input per request (a text prompt as it is, a chat prompt's contents joined
//! by newlines), `encoding_format: float`, and `--plugin-opt dimensions=N` for models that can
//! shorten their vectors.
//!
//! The answer is one JSON body, never a stream, so the adapter works with and without
//! `--no-stream` alike: with `raw` framing it buffers the bytes as they arrive and reads the
//! body at its end, reporting the usage (every token a prompt token, none generated) and one
//! delta with no text, which the host stamps with the arrival of the body's end. For an
//! embedding the first and the last byte of the answer are the same event: TTFT equals E2EL,
//! and there is no TPOT or ITL.
//!
//! A body that is not an embedding list (a chat completion from the wrong endpoint, a proxy's
//! page) fails the request as a protocol error naming what came instead. Errors are OpenAI's
//! `{"error":{...}}` or vLLM's `{"object":"error",...}`, classified as for the other OpenAI
//! routes. Input lengths before the run are counted by the server's `/tokenize`, as the prompt
//! of `/v1/completions` is.

use std::cell::RefCell;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::{is_error_object, merge_extra_body};
use llmb_plugin_sdk::openai::{self, Api, prompt_text};
use llmb_plugin_sdk::whole_body::{WholeBody, describe, in_band_error};
use serde_json::{Value, json};

const DEFAULT_ENDPOINT: &str = "/v1/embeddings";

thread_local! {
    /// `--plugin-opt dimensions=N`.
    static DIMENSIONS: RefCell<Option<u32>> = const { RefCell::new(None) };
    /// `server=NAME` (offered by the host from `/v1/models`): the tokenize route's dialect.
    static SERVER: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The `openai-embeddings` adapter.
pub struct Adapter;

/// Per-request state: the body so far, and whether `finish` already answered.
#[derive(Default)]
pub struct Parser {
    body: WholeBody,
}

/// Reads a 2xx body: the usage when it is an embedding list, else why not.
fn parse_embeddings(status: u16, body: &[u8]) -> Result<Usage, BackendError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        protocol(format!("the embeddings body is not JSON ({e}): {shown}"))
    })?;
    if is_error_object(&v) {
        return Err(in_band_error(status, body, &v));
    }
    let Some(data) = v.get("data").and_then(Value::as_array) else {
        return Err(protocol(format!(
            "expected an embedding list (`data` of embeddings), found {}",
            describe(&v)
        )));
    };
    if data.is_empty() {
        return Err(protocol("the embedding list is empty".into()));
    }
    for (i, item) in data.iter().enumerate() {
        // Floats, or base64 when `encoding_format` was changed with --extra-body.
        let ok = match item.get("embedding") {
            Some(Value::Array(xs)) => xs.iter().all(Value::is_number),
            Some(Value::String(_)) => true,
            _ => false,
        };
        if !ok {
            return Err(protocol(format!(
                "item {i} of the embedding list is not an embedding (found {})",
                describe(item)
            )));
        }
    }
    let usage = v.get("usage");
    let count = |key: &str| {
        usage
            .and_then(|u| u.get(key))
            .and_then(Value::as_u64)
            .map(|n| n.min(u64::from(u32::MAX)) as u32)
    };
    Ok(Usage {
        reasoning_tokens: None,
        prompt_tokens: count("prompt_tokens").or_else(|| count("total_tokens")),
        completion_tokens: Some(0),
        cached_prompt_tokens: None,
    })
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "openai-embeddings".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "OpenAI embeddings API POST /v1/embeddings (vLLM, SGLang, llama.cpp, TEI, hosted APIs): the prompt as one input, encoding_format float, option dimensions=N; one JSON body read at its end with or without --no-stream (TTFT = E2EL, no output tokens); input lengths by the server's /tokenize".into(),
            default_endpoint: DEFAULT_ENDPOINT.into(),
            framing: Framing::Raw,
            supports_ignore_eos: false,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        for kv in options {
            match kv.key.as_str() {
                "dimensions" => {
                    let n = kv.value.trim().parse::<u32>().ok().filter(|&n| n > 0);
                    let Some(n) = n else {
                        return Err(format!(
                            "dimensions must be a positive number, not {:?}",
                            kv.value
                        ));
                    };
                    DIMENSIONS.with(|d| *d.borrow_mut() = Some(n));
                }
                "server" => SERVER.with(|s| *s.borrow_mut() = Some(kv.value.to_ascii_lowercase())),
                other => {
                    return Err(format!(
                        "unknown option {other:?} for the openai-embeddings adapter (known: dimensions, server)"
                    ));
                }
            }
        }
        Ok(())
    }

    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let mut body = json!({
            "model": req.model,
            "input": prompt_text(&req.prompt)?,
            "encoding_format": "float",
        });
        if let Some(n) = DIMENSIONS.with(|d| *d.borrow()) {
            body["dimensions"] = json!(n);
        }
        merge_extra_body(&mut body, req.extra_body.as_deref())?;
        Ok(HttpRequest {
            method: "POST".into(),
            path: DEFAULT_ENDPOINT.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
        })
    }

    fn parse_body(
        status: u16,
        _headers: Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        let usage = parse_embeddings(status, &body)?;
        Ok(Completion {
            reasoning: String::new(),
            text: String::new(),
            finish: None,
            usage: Some(usage),
        })
    }

    fn map_error(status: u16, _headers: Headers, body: Vec<u8>) -> BackendError {
        openai::map_error(status, &body)
    }

    fn tokenize_request(req: GenRequest) -> Option<HttpRequest> {
        let server = SERVER.with(|s| s.borrow().clone());
        openai::tokenize_request_for(server.as_deref(), Api::Completions, &req)
    }

    fn parse_tokenize(body: Vec<u8>) -> Result<u32, String> {
        llmb_plugin_sdk::tokenize::count_from_body(&body)
    }
}

impl GuestResponseParser for Parser {
    fn new(_status: u16, _headers: Headers) -> Self {
        Self::default()
    }

    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        self.body.feed(&batch)
    }

    fn finish(&self, _trailers: Headers) -> Vec<StreamEvent> {
        self.body.finish(|body| parse_embeddings(200, body))
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;
    use llmb_plugin_sdk::testing::{Outcome, run_framed};

    /// vLLM's answer (its `usage` has no completion tokens to speak of).
    const VLLM: &[u8] = br#"{"id":"embd-6f3a","object":"list","created":1733000000,"model":"intfloat/e5-small-v2","data":[{"index":0,"object":"embedding","embedding":[0.0123,-0.0456,0.0789,0.1]}],"usage":{"prompt_tokens":9,"total_tokens":9,"completion_tokens":0,"prompt_tokens_details":null}}"#;
    /// OpenAI's, with base64 vectors (`encoding_format` changed with --extra-body).
    const OPENAI_BASE64: &[u8] = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AACAPwAAAEA="}],"model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}"#;
    const OPENAI_ERROR: &[u8] = br#"{"error":{"message":"This model's maximum context length is 8192 tokens, however you requested 9000 tokens","type":"invalid_request_error","param":null,"code":null}}"#;
    const VLLM_ERROR: &[u8] = br#"{"object":"error","message":"The model `nope` does not exist.","type":"NotFoundError","param":null,"code":404}"#;
    const CHAT: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

    fn run(chunks: &[&[u8]]) -> Outcome {
        run_framed(
            &Parser::new(200, Vec::new()),
            Framing::Raw,
            chunks,
            Vec::new(),
        )
    }

    fn request(prompt: Prompt, extra: Option<&str>) -> Result<Value, String> {
        let http = Adapter::build_request(GenRequest {
            id: 1,
            model: "e5".into(),
            prompt,
            max_tokens: 64,
            ignore_eos: true,
            streaming: true,
            include_usage: true,
            temperature: Some(0.5),
            extra_body: extra.map(str::to_owned),
        })?;
        assert_eq!(
            (http.method.as_str(), http.path.as_str()),
            ("POST", "/v1/embeddings")
        );
        assert!(
            http.headers
                .contains(&("content-type".into(), "application/json".into()))
        );
        Ok(serde_json::from_slice(&http.body).unwrap())
    }

    #[test]
    fn the_body_read_at_its_end_whatever_the_reads() {
        // The harness numbers `finish`'s frames after the fed ones: the delta comes after the
        // one read, from `finish` (which the host stamps with the body's end).
        let whole = run(&[VLLM]);
        assert_eq!(whole.deltas, [(1, String::new(), None)]);
        assert_eq!(whole.usage, Some((Some(9), Some(0), None)));
        assert_eq!((whole.done, whole.errors.len()), (1, 0));
        // Split anywhere, one byte per read: the same events, the delta at the end.
        for k in 0..=VLLM.len() {
            let split = run(&[&VLLM[..k], &VLLM[k..]]);
            assert_eq!(split.usage, whole.usage, "split at {k}");
            assert_eq!(split.deltas.len(), 1, "split at {k}");
            assert_eq!(split.deltas[0].1, "");
            assert_eq!(split.done, 1);
        }
        let bytes: Vec<&[u8]> = VLLM.chunks(1).collect();
        let out = run(&bytes);
        assert_eq!(out.deltas, [(VLLM.len() as u32, String::new(), None)]);
        assert_eq!(out.usage, whole.usage);
        let out = run(&[OPENAI_BASE64]);
        assert_eq!(out.usage, Some((Some(5), Some(0), None)));
        // No usage at all: still one delta and no output tokens.
        let out = run(&[br#"{"data":[{"embedding":[1,2]}]}"#]);
        assert_eq!(out.usage, Some((None, Some(0), None)));
        assert_eq!(out.done, 1);
    }

    #[test]
    fn what_is_not_an_embedding_list_fails_and_says_what_it_was() {
        for (body, says) in [
            (CHAT, "found an object of type \"chat.completion\""),
            (
                &br#"{"results":[]}"#[..],
                "found an object with keys [results]",
            ),
            (b"[1,2]", "found a JSON array of 2 items"),
            (br#"{"data":[]}"#, "the embedding list is empty"),
            (
                br#"{"data":[{"index":0,"object":"embedding","embedding":null}]}"#,
                "item 0 of the embedding list is not an embedding",
            ),
            (b"<html>502</html>", "not JSON"),
            (b"", "not JSON"),
        ] {
            let out = run(&[body]);
            assert_eq!(out.deltas.len(), 0);
            assert_eq!(out.done, 0);
            assert_eq!(out.errors.len(), 1, "{}", String::from_utf8_lossy(body));
            assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
            assert!(out.errors[0].1.contains(says), "{:?}", out.errors[0].1);
            let e = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap_err();
            assert!(e.message.contains(says), "{}", e.message);
        }
        // An error object in a 2xx body is the server's error.
        let out = run(&[VLLM_ERROR]);
        assert_eq!(
            out.errors,
            [(
                ErrorKind::NotFound,
                "The model `nope` does not exist.".into()
            )]
        );
    }

    #[test]
    fn whole_bodies_without_streaming() {
        let c = Adapter::parse_body(200, Vec::new(), VLLM.to_vec()).unwrap();
        assert_eq!((c.text.as_str(), c.finish), ("", None));
        let u = c.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens),
            (Some(9), Some(0), None)
        );
    }

    #[test]
    fn errors_by_kind_with_the_servers_message() {
        let e = Adapter::map_error(400, Vec::new(), OPENAI_ERROR.to_vec());
        assert!(matches!(e.kind, ErrorKind::ContextLength));
        assert!(e.message.starts_with("This model's maximum context length"));
        assert_eq!(e.http_status, Some(400));
        let e = Adapter::map_error(404, Vec::new(), VLLM_ERROR.to_vec());
        assert!(matches!(e.kind, ErrorKind::NotFound));
        assert_eq!(e.message, "The model `nope` does not exist.");
        let e = Adapter::map_error(
            401,
            Vec::new(),
            br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#.to_vec(),
        );
        assert!(matches!(e.kind, ErrorKind::Unauthorized) && !e.retryable);
        let e = Adapter::map_error(429, Vec::new(), br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#.to_vec());
        assert!(matches!(e.kind, ErrorKind::RateLimited) && e.retryable);
        let e = Adapter::map_error(503, Vec::new(), b"upstream overloaded".to_vec());
        assert!(matches!(e.kind, ErrorKind::Overloaded));
        assert_eq!(e.message, "upstream overloaded");
    }

    #[test]
    fn request_bodies_and_options() {
        let v = request(Prompt::Text("the quick brown fox".into()), None).unwrap();
        // No max_tokens, stream or temperature: an embedding generates nothing.
        assert_eq!(
            v,
            json!({"model": "e5", "input": "the quick brown fox", "encoding_format": "float"})
        );
        let chat = Prompt::Chat(vec![
            ChatMessage {
                role: Role::System,
                content: "Represent this sentence".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "for retrieval".into(),
            },
        ]);
        let v = request(
            chat,
            Some(r#"{"encoding_format":"base64","truncate_prompt_tokens":512}"#),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"model": "e5", "input": "Represent this sentence\nfor retrieval",
                   "encoding_format": "base64", "truncate_prompt_tokens": 512})
        );
        assert!(request(Prompt::Text("x".into()), Some("[1]")).is_err());
        let audio = Prompt::Audio(AudioClip {
            data: vec![0; 4],
            filename: "a.wav".into(),
            reference: None,
            duration_s: None,
        });
        assert!(request(audio, None).is_err());

        let opt = |k: &str, v: &str| {
            vec![Kv {
                key: k.into(),
                value: v.into(),
            }]
        };
        assert!(Adapter::configure(opt("dimensions", "0")).is_err());
        assert!(Adapter::configure(opt("dimensions", "wide")).is_err());
        let e = Adapter::configure(opt("dims", "8")).unwrap_err();
        assert!(e.contains("known: dimensions"), "{e}");
        Adapter::configure(opt("dimensions", "256")).unwrap();
        let v = request(Prompt::Text("x".into()), None).unwrap();
        assert_eq!(v["dimensions"], 256);
        // Options live in this thread (one per component instance in WebAssembly).
        DIMENSIONS.with(|d| *d.borrow_mut() = None);
    }

    #[test]
    fn input_lengths_from_the_servers_tokenize_route() {
        let req = GenRequest {
            id: 1,
            model: "e5".into(),
            prompt: Prompt::Text("a b c".into()),
            max_tokens: 1,
            ignore_eos: false,
            streaming: false,
            include_usage: false,
            temperature: None,
            extra_body: None,
        };
        let http = Adapter::tokenize_request(req).unwrap();
        assert_eq!(http.path, "/tokenize");
        let v: Value = serde_json::from_slice(&http.body).unwrap();
        assert_eq!(v, json!({"model": "e5", "prompt": "a b c"}));
        assert_eq!(
            Adapter::parse_tokenize(br#"{"count":3,"tokens":[1,2,3]}"#.to_vec()),
            Ok(3)
        );
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            VLLM,
            OPENAI_BASE64,
            OPENAI_ERROR,
            VLLM_ERROR,
            CHAT,
        ]);
    }
}
