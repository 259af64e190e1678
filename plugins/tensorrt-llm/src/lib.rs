//! Triton Inference Server's generate extension in front of TensorRT-LLM:
//! `POST /v2/models/<model>/generate_stream` (SSE `data: ` events, `text_output` = the text of
//! one decoding step) and `/v2/models/<model>/generate` when not streaming. The stream has no
//! `[DONE]` and no final event: it simply ends with the body, so a clean end of body is the
//! normal end (`Done` from `finish`) and only an error event or a cut-off event fails it.
//! Triton has no `ignore_eos`: output lengths are forced with the benchmarks' trick, a minimum
//! length equal to `max_tokens` plus an `end_id` the model can never emit.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Mutex;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::{error_message, merge_extra_body};
use llmb_plugin_sdk::openai::classify;
use llmb_plugin_sdk::openai::prompt_text;
use serde::Deserialize;
use serde_json::{Value, json};

/// The `tensorrt-llm` adapter.
pub struct Adapter;

/// The model of the TensorRT-LLM backend's repository that takes text in and gives text out,
/// used when the host names no model.
const DEFAULT_MODEL: &str = "ensemble";

/// An end id beyond any vocabulary (SGLang's bench sends it), so EOS never ends generation.
const UNREACHABLE_END_ID: u32 = 1_048_576;

/// The minimum-length input's name: `min_length` in older ensembles (what the vLLM and SGLang
/// benches send), `min_tokens` in newer ones; set with `--plugin-opt min-tokens-field=...`.
static MIN_TOKENS_FIELD: Mutex<&str> = Mutex::new("min_length");

/// Per-request stream state: with no terminator to wait for, only a failure needs remembering.
#[derive(Default)]
pub struct Parser {
    failed: RefCell<bool>,
}

/// One inference response: the model's output tensors by name (only two matter here).
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    text_output: Option<Cow<'a, str>>,
    error: Option<Value>,
}

/// A model name is one path segment: anything outside RFC 3986's unreserved set is escaped.
fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Triton's `{"error":"<msg>"}`, before the stream (with the HTTP status) or inside it (without:
/// the response was a 200, and a failure after generation started is the server's).
fn triton_error(status: Option<u16>, body: &[u8]) -> BackendError {
    let message = serde_json::from_slice(body)
        .ok()
        .as_ref()
        .and_then(error_message)
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&body[..body.len().min(300)])
                .trim()
                .to_owned()
        });
    let mut err = classify(status, message);
    if status.is_none() && matches!(err.kind, ErrorKind::Unknown) {
        err.kind = ErrorKind::Server;
    }
    err
}

/// A token count output tensor, serialised as a number or a one-element list.
fn count(v: Option<&Value>) -> Option<u32> {
    let v = v?;
    let n = v.as_u64().or_else(|| v.get(0)?.as_u64())?;
    u32::try_from(n).ok()
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "tensorrt-llm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TensorRT-LLM on Triton, generate extension POST /v2/models/<model>/generate_stream (/generate when not streaming; model from --model, else ensemble); no [DONE], the stream ends with the body; no ignore_eos: --ignore-eos uses the min_length=max_tokens + unreachable end_id trick".into(),
            default_endpoint: format!("/v2/models/{DEFAULT_MODEL}/generate_stream"),
            framing: Framing::Sse,
            supports_ignore_eos: true,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        for kv in options {
            match (kv.key.as_str(), kv.value.as_str()) {
                ("min-tokens-field", "min_length") => {
                    *MIN_TOKENS_FIELD.lock().unwrap() = "min_length"
                }
                ("min-tokens-field", "min_tokens") => {
                    *MIN_TOKENS_FIELD.lock().unwrap() = "min_tokens"
                }
                ("min-tokens-field", other) => {
                    return Err(format!(
                        "min-tokens-field must be min_length or min_tokens, not {other:?}"
                    ));
                }
                (other, _) => {
                    return Err(format!(
                        "unknown option {other:?} for the tensorrt-llm adapter (known: min-tokens-field)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// `bad_words`/`stop_words` are sent empty as Triton's examples do: older ensembles declare
    /// them as required inputs.
    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let mut body = json!({
            "text_input": prompt_text(&req.prompt)?,
            "max_tokens": req.max_tokens,
            "bad_words": "",
            "stop_words": "",
            "stream": req.streaming,
        });
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
        if req.ignore_eos {
            let field = *MIN_TOKENS_FIELD.lock().unwrap();
            body[field] = json!(req.max_tokens);
            body["end_id"] = json!(UNREACHABLE_END_ID);
        }
        merge_extra_body(&mut body, req.extra_body.as_deref())?;
        let model = match req.model.trim() {
            "" => DEFAULT_MODEL.into(),
            m => path_segment(m),
        };
        let route = if req.streaming {
            "generate_stream"
        } else {
            "generate"
        };
        Ok(HttpRequest {
            method: "POST".into(),
            path: format!("/v2/models/{model}/{route}"),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
        })
    }

    /// Counts exist only when the request asked for `return_num_*_tokens` (via `--extra-body`).
    fn parse_body(
        status: u16,
        _headers: Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| protocol(format!("response body is not JSON: {e}")))?;
        if v.get("error").is_some() {
            let mut err = triton_error(Some(status), &body);
            err.http_status = Some(status);
            return Err(err);
        }
        let Some(text) = v.get("text_output").and_then(Value::as_str) else {
            return Err(protocol(
                "the Triton response has no text_output (is the model the ensemble?)".into(),
            ));
        };
        let usage = Usage {
            reasoning_tokens: None,
            prompt_tokens: count(v.get("num_input_tokens")),
            completion_tokens: count(v.get("num_output_tokens")),
            cached_prompt_tokens: None,
        };
        Ok(Completion {
            reasoning: String::new(),
            text: text.to_owned(),
            finish: None,
            usage: (usage.prompt_tokens.is_some() || usage.completion_tokens.is_some())
                .then_some(usage),
        })
    }

    fn map_error(status: u16, _headers: Headers, body: Vec<u8>) -> BackendError {
        let mut err = triton_error(Some(status), &body);
        err.http_status = Some(status);
        err
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

    /// Every event with `text_output` is one decoding step, hence a delta even when its text is
    /// empty (the vLLM bench times every event); its token count is unknown (speculative decoding
    /// may emit several), so the host counts. An event cut off by the end of the body reaches
    /// here as unparsable JSON and fails the request.
    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        let mut failed = self.failed.borrow_mut();
        let mut events = Vec::with_capacity(batch.len());
        for (frame, _event, data) in batch.iter() {
            let data = data.trim_ascii();
            if *failed || data.is_empty() {
                continue;
            }
            let ev: Event = match serde_json::from_slice(data) {
                Ok(ev) => ev,
                Err(e) => {
                    let shown = String::from_utf8_lossy(&data[..data.len().min(120)]);
                    *failed = true;
                    events.push(StreamEvent::Error(protocol(format!(
                        "malformed or cut-off Triton stream event ({e}): {shown}"
                    ))));
                    continue;
                }
            };
            if ev.error.is_some() {
                *failed = true;
                events.push(StreamEvent::Error(triton_error(None, data)));
                continue;
            }
            if let Some(text) = ev.text_output {
                events.push(StreamEvent::Delta(Delta {
                    frame,
                    text: text.into_owned(),
                    reasoning: String::new(),
                    tokens: None,
                    index: 0,
                }));
            }
        }
        events
    }

    /// The generate stream has no end marker: a body that ends without an error is complete.
    fn finish(&self, _trailers: Headers) -> Vec<StreamEvent> {
        if *self.failed.borrow() {
            Vec::new()
        } else {
            vec![StreamEvent::Done]
        }
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;

    /// Serialises the tests that read or write the `min-tokens-field` option.
    static OPTION_LOCK: Mutex<()> = Mutex::new(());

    /// The `generate_stream` transcript of tensorrt-llm.md, byte for byte.
    const TRANSCRIPT: &[u8] = b"data: {\"batch_index\":0,\"context_logits\":0.0,\"cum_log_probs\":0.0,\"generation_logits\":0.0,\"model_name\":\"ensemble\",\"model_version\":\"1\",\"output_log_probs\":[0.0],\"sequence_end\":false,\"sequence_id\":0,\"sequence_index\":0,\"sequence_start\":false,\"text_output\":\" Paris\"}\n\ndata: {\"batch_index\":0,\"context_logits\":0.0,\"cum_log_probs\":0.0,\"generation_logits\":0.0,\"model_name\":\"ensemble\",\"model_version\":\"1\",\"output_log_probs\":[0.0],\"sequence_end\":false,\"sequence_id\":0,\"sequence_index\":0,\"sequence_start\":false,\"text_output\":\",\"}\n\ndata: {\"batch_index\":0,\"context_logits\":0.0,\"cum_log_probs\":0.0,\"generation_logits\":0.0,\"model_name\":\"ensemble\",\"model_version\":\"1\",\"output_log_probs\":[0.0],\"sequence_end\":false,\"sequence_id\":0,\"sequence_index\":0,\"sequence_start\":false,\"text_output\":\" the\"}\n\ndata: {\"batch_index\":0,\"context_logits\":0.0,\"cum_log_probs\":0.0,\"generation_logits\":0.0,\"model_name\":\"ensemble\",\"model_version\":\"1\",\"output_log_probs\":[0.0],\"sequence_end\":false,\"sequence_id\":0,\"sequence_index\":0,\"sequence_start\":false,\"text_output\":\" capital\"}\n\n";

    /// The short stream given to the simulator's author.
    const SHORT: &[u8] = b"data: {\"model_name\":\"ensemble\",\"model_version\":\"1\",\"sequence_end\":false,\"sequence_id\":0,\"sequence_start\":false,\"text_output\":\" a\"}\n\ndata: {\"model_name\":\"ensemble\",\"model_version\":\"1\",\"sequence_end\":false,\"sequence_id\":0,\"sequence_start\":false,\"text_output\":\" b\"}\n\ndata: {\"model_name\":\"ensemble\",\"model_version\":\"1\",\"sequence_end\":false,\"sequence_id\":0,\"sequence_start\":false,\"text_output\":\" c\"}\n\n";

    use llmb_plugin_sdk::testing::Outcome;

    /// Frames `chunks` as the host does (one batch per read) and feeds one parser.
    fn run(chunks: &[&[u8]]) -> Outcome {
        llmb_plugin_sdk::testing::run(Parser::new(200, Vec::new()), chunks)
    }

    /// Same events whatever the read boundaries: every two-way split and one byte per read.
    fn assert_split_invariant(body: &[u8]) -> Outcome {
        llmb_plugin_sdk::testing::assert_split_invariant(|| Parser::new(200, Vec::new()), body)
    }

    fn request(req: impl FnOnce(&mut GenRequest)) -> Result<(String, Value), String> {
        let mut r = GenRequest {
            id: 1,
            model: String::new(),
            prompt: Prompt::Text("What is the capital of France?".into()),
            max_tokens: 4,
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
        assert_eq!((out.finish, out.usage, out.done), (None, None, 1));
        assert!(out.errors.is_empty());
        let out = assert_split_invariant(SHORT);
        assert_eq!((out.text().as_str(), out.done), (" a b c", 1));
        assert!(out.errors.is_empty());
    }

    #[test]
    fn request_body() {
        let _guard = OPTION_LOCK.lock().unwrap();
        let (path, v) = request(|_| {}).unwrap();
        assert_eq!(path, "/v2/models/ensemble/generate_stream");
        assert_eq!(path, Adapter::info().default_endpoint);
        assert_eq!(v["text_input"], "What is the capital of France?");
        assert_eq!(v["max_tokens"], 4);
        assert_eq!(
            (&v["bad_words"], &v["stop_words"]),
            (&json!(""), &json!(""))
        );
        assert_eq!(v["stream"], true);
        for key in ["temperature", "min_length", "min_tokens", "end_id"] {
            assert!(v.get(key).is_none(), "{key}");
        }
        let (path, v) = request(|r| {
            r.model = "tensorrt_llm_bls".into();
            r.ignore_eos = true;
            r.streaming = false;
            r.temperature = Some(0.0);
            r.extra_body = Some(r#"{"accumulate_tokens":true,"max_tokens":8}"#.into());
        })
        .unwrap();
        assert_eq!(path, "/v2/models/tensorrt_llm_bls/generate");
        assert_eq!(v["stream"], false);
        assert_eq!(v["temperature"], 0.0);
        assert_eq!(v["min_length"], 4);
        assert_eq!(v["end_id"], 1_048_576);
        assert_eq!(v["accumulate_tokens"], true);
        assert_eq!(v["max_tokens"], 8);
        let (path, v) = request(|r| {
            r.model = "meta/llama 3".into();
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
        assert_eq!(path, "/v2/models/meta%2Fllama%203/generate_stream");
        assert_eq!(v["text_input"], "Be brief.\nHi");
        assert!(request(|r| r.extra_body = Some("[]".into())).is_err());
        assert!(Adapter::info().supports_ignore_eos);
    }

    #[test]
    fn min_tokens_field_option() {
        let _guard = OPTION_LOCK.lock().unwrap();
        let kv = |k: &str, v: &str| Kv {
            key: k.into(),
            value: v.into(),
        };
        assert!(Adapter::configure(vec![kv("min-tokens-field", "min_len")]).is_err());
        assert!(
            Adapter::configure(vec![kv("ignore-eos", "1")])
                .unwrap_err()
                .contains("unknown option")
        );
        Adapter::configure(vec![kv("min-tokens-field", "min_tokens")]).unwrap();
        let (_, v) = request(|r| r.ignore_eos = true).unwrap();
        Adapter::configure(vec![kv("min-tokens-field", "min_length")]).unwrap();
        assert_eq!(v["min_tokens"], 4);
        assert!(v.get("min_length").is_none());
        assert!(Adapter::configure(Vec::new()).is_ok());
    }

    #[test]
    fn in_stream_error_fails_the_request() {
        let body = b"data: {\"model_name\":\"ensemble\",\"model_version\":\"1\",\"sequence_end\":false,\"sequence_id\":0,\"sequence_start\":false,\"text_output\":\" a\"}\n\ndata: {\"error\":\"Encountered an error in forward function: CUDA out of memory\"}\n\n";
        let out = assert_split_invariant(body);
        assert_eq!((out.text().as_str(), out.done), (" a", 0));
        assert_eq!(
            out.errors,
            [(
                ErrorKind::Server,
                "Encountered an error in forward function: CUDA out of memory".to_owned()
            )]
        );
    }

    #[test]
    fn http_errors_carry_the_server_message() {
        let e = Adapter::map_error(
            400,
            Vec::new(),
            br#"{"error":"Unable to parse 'max_tokens': value out of range"}"#.to_vec(),
        );
        assert_eq!(
            e.message,
            "Unable to parse 'max_tokens': value out of range"
        );
        assert_eq!(e.http_status, Some(400));
        assert!(matches!(e.kind, ErrorKind::BadRequest));
        let e = Adapter::map_error(
            404,
            Vec::new(),
            br#"{"error":"Request for unknown model: 'llama' is not found"}"#.to_vec(),
        );
        assert!(matches!(e.kind, ErrorKind::NotFound));
        assert_eq!(e.message, "Request for unknown model: 'llama' is not found");
    }

    #[test]
    fn truncated_stream_fails_at_the_cut_event() {
        let cut = TRANSCRIPT.len() - 40;
        let out = assert_split_invariant(&TRANSCRIPT[..cut]);
        assert_eq!(out.text(), " Paris, the");
        assert_eq!(out.done, 0);
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        assert!(out.errors[0].1.contains("cut-off"));
        let boundary = TRANSCRIPT.windows(6).rposition(|w| w == b"data: ");
        let out = run(&[&TRANSCRIPT[..boundary.unwrap()]]);
        assert_eq!((out.text().as_str(), out.done), (" Paris, the", 1));
    }

    #[test]
    fn non_streaming_body() {
        let body = br#"{"batch_index":0,"context_logits":0.0,"cum_log_probs":0.0,"generation_logits":0.0,"model_name":"ensemble","model_version":"1","output_log_probs":[0.0,0.0,0.0,0.0],"sequence_end":false,"sequence_id":0,"sequence_index":0,"sequence_start":false,"text_output":" Paris, the capital"}"#;
        let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
        assert_eq!(c.text, " Paris, the capital");
        assert!(c.finish.is_none() && c.usage.is_none());
        let body = br#"{"model_name":"ensemble","num_input_tokens":[8],"num_output_tokens":4,"text_output":"x"}"#;
        let u = Adapter::parse_body(200, Vec::new(), body.to_vec())
            .unwrap()
            .usage
            .unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(8), Some(4)));
        let e = Adapter::parse_body(200, Vec::new(), br#"{"error":"boom"}"#.to_vec()).unwrap_err();
        assert_eq!(e.message, "boom");
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            TRANSCRIPT,
            SHORT,
            br#"{"model_name":"ensemble","num_input_tokens":[8],"num_output_tokens":4,"text_output":"x"}"#,
            br#"{"error":"Encountered an error in forward function"}"#,
        ]);
    }
}
