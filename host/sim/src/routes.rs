//! Routing: which handler answers which method and path, the `/v1/*` entry point with its API-key
//! check, and the routes that generate nothing (`/health`, `/metrics`, `/v1/models`, the tokenize
//! routes).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use crate::api::Api;
use crate::body::{SimBody, anthropic_error, bad_request, full, json_response, not_found};
use crate::config::{MAX_BODY_BYTES, MAX_MODEL_LEN};
use crate::generate::generate;
use crate::native::native;
use crate::pooling::{is_pooling, pooling};
use crate::ppl::{PPL_GENERATION, ppl};
use crate::request::{
    TEMPLATE_TOKEN_ID, chat_prompt, parse_anthropic_job, parse_job, parse_transcription_job,
};
use crate::state::SimState;

/// How many streams the simulated KV cache holds: `vllm:kv_cache_usage_perc` is active / this.
const SIM_KV_CACHE_SEQUENCES: f64 = 64.0;

pub(crate) async fn handle(
    state: Arc<SimState>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let arrived = Instant::now();
    let path = req.uri().path();
    let response = if path.starts_with("/v1/") {
        let response = v1(&state, req, arrived).await;
        state.served.fetch_add(1, Relaxed);
        response
    } else {
        match (req.method(), path) {
            (&Method::GET, "/health") => full(StatusCode::OK, None, Bytes::new()),
            (&Method::GET, "/metrics") => metrics(&state),
            (&Method::POST, "/tokenize") if state.config.tokenize_route => {
                tokenize(&state, req).await
            }
            (&Method::POST, "/generate_stream" | "/generate" | "/completion") => {
                let response = native(&state, req, arrived).await;
                state.served.fetch_add(1, Relaxed);
                response
            }
            (&Method::POST, "/rerank" | "/v2/rerank") => {
                let response = pooling(&state, req, arrived).await;
                state.served.fetch_add(1, Relaxed);
                response
            }
            (&Method::POST, PPL_GENERATION) => {
                let response = ppl(&state, req, arrived).await;
                state.served.fetch_add(1, Relaxed);
                response
            }
            (&Method::POST, p) if p.starts_with("/mii/") => {
                let response = native(&state, req, arrived).await;
                state.served.fetch_add(1, Relaxed);
                response
            }
            (&Method::POST, p)
                if p.starts_with("/v2/models/")
                    && (p.ends_with("/generate_stream") || p.ends_with("/generate")) =>
            {
                let response = native(&state, req, arrived).await;
                state.served.fetch_add(1, Relaxed);
                response
            }
            _ => not_found(),
        }
    };
    Ok(response)
}

async fn v1(state: &Arc<SimState>, req: Request<Incoming>, arrived: Instant) -> Response<SimBody> {
    let anthropic = req.uri().path() == "/v1/messages";
    if let (Some(expected), Some(key)) = (&state.expected_auth, &state.config.api_key) {
        let headers = req.headers();
        let bearer = headers
            .get(AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
        // Anthropic's clients send the key as `x-api-key`.
        let x_api_key = anthropic
            && headers
                .get("x-api-key")
                .is_some_and(|v| v.as_bytes() == key.as_bytes());
        if !(bearer || x_api_key) {
            return if anthropic {
                anthropic_error(StatusCode::UNAUTHORIZED, "invalid x-api-key")
            } else {
                json_response(StatusCode::UNAUTHORIZED, r#"{"error":"Unauthorized"}"#)
            };
        }
    }
    let api = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/completions") => Api::Completions,
        (&Method::POST, "/v1/chat/completions") => Api::Chat,
        (&Method::POST, "/v1/responses") => Api::Responses,
        (&Method::POST, "/v1/llm/chat-completions") => Api::Amsv2,
        (&Method::POST, "/v1/audio/transcriptions") => Api::Transcription,
        (&Method::POST, "/v1/messages") => Api::Anthropic,
        (&Method::GET, "/v1/models") => return models(state),
        (&Method::POST, path) if is_pooling(path) => return pooling(state, req, arrived).await,
        (&Method::POST, "/v1/encode") if state.config.tokenize_route => {
            return tokenize(state, req).await;
        }
        _ => return not_found(),
    };
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return bad_request(&format!("Cannot read the request body: {e}")),
    };
    let job = match api {
        Api::Transcription => parse_transcription_job(state, &content_type, &bytes),
        Api::Anthropic => parse_anthropic_job(state, &bytes),
        _ => parse_job(state, api, &bytes),
    };
    match job {
        Ok(job) => generate(state, job, arrived).await,
        Err(response) => response,
    }
}

/// The tokenize routes, told apart by their bodies: vLLM and SGLang (`prompt` or `messages`,
/// answering `count`, `max_model_len` and `tokens`), llama.cpp (`content`, answering `tokens`),
/// TGI (`inputs`, answering a list of token objects) and LMDeploy's `/v1/encode` (`input`,
/// answering `input_ids` and `length`). Counts are the ones usage reports for the same prompt.
async fn tokenize(state: &SimState, req: Request<Incoming>) -> Response<SimBody> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return bad_request(&format!("Cannot read the request body: {e}")),
    };
    let Ok(body @ Value::Object(_)) = serde_json::from_slice::<Value>(&bytes) else {
        return bad_request("The body must be a JSON object.");
    };
    let words = llmb_engine::tokenizer::HostTokenizer::Words;
    if state.config.dialect.as_deref() == Some("llama.cpp") {
        // llama.cpp reads only `content` and answers an empty list for anything else (a
        // vLLM-shaped body included), as the real server does.
        let ids = match body.get("content") {
            Some(Value::String(t)) => words.encode(t),
            _ => Vec::new(),
        };
        return json_response(
            StatusCode::OK,
            serde_json::json!({ "tokens": ids }).to_string(),
        );
    }
    let ids = if body.get("messages").is_some() {
        let prompt = match chat_prompt(&body) {
            Ok(p) => p,
            Err(e) => return bad_request(&e),
        };
        // Image headers are trusted for their size: a prompt past the context is refused
        // before its ids are made, as generation refuses it.
        if u64::from(prompt.tokens) > MAX_MODEL_LEN {
            return bad_request(&format!(
                "This model's maximum context length is {MAX_MODEL_LEN} tokens. However, your \
                 request has {} input tokens.",
                prompt.tokens
            ));
        }
        let mut ids = words.encode(&prompt.text);
        ids.resize(prompt.tokens as usize, TEMPLATE_TOKEN_ID);
        ids
    } else {
        let key = ["prompt", "content", "inputs", "input"]
            .into_iter()
            .find(|k| body.get(*k).is_some())
            .unwrap_or("prompt");
        match body.get(key) {
            Some(Value::String(t)) => words.encode(t),
            _ => return bad_request(&format!("Field `{key}` must be a string.")),
        }
    };
    let json = if body.get("content").is_some() {
        serde_json::json!({ "tokens": ids })
    } else if body.get("inputs").is_some() {
        let words: Vec<&str> = body["inputs"]
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        Value::Array(
            ids.iter()
                .zip(words)
                .map(|(id, w)| serde_json::json!({"id": id, "text": w, "start": 0, "stop": 0}))
                .collect(),
        )
    } else if body.get("input").is_some() {
        serde_json::json!({ "input_ids": ids, "length": ids.len() })
    } else {
        serde_json::json!({ "count": ids.len(), "max_model_len": MAX_MODEL_LEN, "tokens": ids })
    };
    json_response(StatusCode::OK, json.to_string())
}

fn models(state: &SimState) -> Response<SimBody> {
    let body = format!(
        "{{\"object\":\"list\",\"data\":[{{\"id\":{m},\"object\":\"model\",\"created\":{t},\"owned_by\":{owner},\"root\":{m},\"parent\":null,\"max_model_len\":{MAX_MODEL_LEN}}}]}}",
        m = state.model_json,
        t = state.started_unix,
        // llama.cpp names itself here; clients use it to pick its tokenize dialect.
        owner = if state.config.dialect.as_deref() == Some("llama.cpp") {
            "\"llamacpp\""
        } else {
            "\"llmb-sim\""
        }
    );
    json_response(StatusCode::OK, body)
}

fn metrics(state: &SimState) -> Response<SimBody> {
    let rows = [
        (
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            state.active.load(Relaxed) as f64,
        ),
        (
            "vllm:num_requests_waiting",
            "gauge",
            "Number of requests waiting to be processed.",
            state.waiting.load(Relaxed) as f64,
        ),
        (
            "vllm:kv_cache_usage_perc",
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            (state.active.load(Relaxed) as f64 / SIM_KV_CACHE_SEQUENCES).min(1.0),
        ),
        (
            "vllm:prompt_tokens_total",
            "counter",
            "Number of prefill tokens processed.",
            state.prompt_tokens.load(Relaxed) as f64,
        ),
        (
            "vllm:generation_tokens_total",
            "counter",
            "Number of generation tokens processed.",
            state.generation_tokens.load(Relaxed) as f64,
        ),
        (
            "vllm:request_success_total",
            "counter",
            "Count of successfully processed requests.",
            state.successes.load(Relaxed) as f64,
        ),
        (
            "vllm:prefix_cache_queries_total",
            "counter",
            "Prefix cache queries, in terms of number of queried tokens.",
            state.prefix_queries.load(Relaxed) as f64,
        ),
        (
            "vllm:prefix_cache_hits_total",
            "counter",
            "Prefix cache hits, in terms of number of cached tokens.",
            state.prefix_hits.load(Relaxed) as f64,
        ),
        // The simulator's own (vLLM counts no images): tests check that images arrived.
        (
            "llmb_sim:images_received_total",
            "counter",
            "Number of images in the prompts of the requests generated for.",
            state.images.load(Relaxed) as f64,
        ),
    ];
    let mut out = String::with_capacity(2048);
    for (name, kind, help, value) in rows {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{model_name=\"{}\"}} {value}\n",
            state.model_label
        );
    }
    if state.config.kv_transfer_ms > 0.0 {
        // vLLM's NIXL connector histogram, labelled per engine as vLLM does.
        let count = state.kv_transfers.load(Relaxed);
        let sum = state.kv_transfer_us.load(Relaxed) as f64 / 1e6;
        let name = "vllm:nixl_xfer_time_seconds";
        let labels = format!("model_name=\"{}\",engine=\"0\"", state.model_label);
        let _ = write!(
            out,
            "# HELP {name} Histogram of transfer duration for NIXL KV Cache transfers.\n\
             # TYPE {name} histogram\n{name}_sum{{{labels}}} {sum}\n\
             {name}_bucket{{{labels},le=\"+Inf\"}} {count}\n{name}_count{{{labels}}} {count}\n"
        );
    }
    full(
        StatusCode::OK,
        Some("text/plain; version=0.0.4; charset=utf-8"),
        out,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::config::SimConfig;
    use crate::testutil::*;

    #[tokio::test]
    async fn tokenize_routes_count_what_usage_reports() {
        let sim = sim(fast()).await;
        let json = |body: &str| serde_json::from_str::<Value>(body).unwrap();
        let v = json(
            &post(
                &sim,
                "/tokenize",
                r#"{"model":"llmb-sim","prompt":"a b c"}"#,
            )
            .await
            .body,
        );
        assert_eq!(v["count"], 3);
        assert_eq!(v["tokens"].as_array().unwrap().len(), 3);
        let chat =
            r#"{"model":"llmb-sim","messages":[{"role":"user","content":"a b c"}],"max_tokens":1}"#;
        let v = json(&post(&sim, "/tokenize", chat).await.body);
        let usage = json(&post(&sim, "/v1/chat/completions", chat).await.body);
        assert_eq!(v["count"], 11);
        assert_eq!(v["count"], usage["usage"]["prompt_tokens"]);
        let v = json(
            &post(&sim, "/tokenize", r#"{"content":"a b c d"}"#)
                .await
                .body,
        );
        assert_eq!(v["tokens"].as_array().unwrap().len(), 4);
        let v = json(&post(&sim, "/tokenize", r#"{"inputs":"a b"}"#).await.body);
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["text"], "b");
        let v = json(
            &post(&sim, "/v1/encode", r#"{"input":"a b c d e"}"#)
                .await
                .body,
        );
        assert_eq!(v["length"], 5);
        assert_eq!(post(&sim, "/tokenize", r#"{"prompt":7}"#).await.status, 400);
        sim.shutdown().await;

        let without = crate::start(
            SimConfig {
                tokenize_route: false,
                ..fast()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            post(&without, "/tokenize", r#"{"prompt":"a"}"#)
                .await
                .status,
            404
        );
        assert_eq!(
            post(&without, "/v1/encode", r#"{"input":"a"}"#)
                .await
                .status,
            404
        );
        without.shutdown().await;
    }

    #[tokio::test]
    async fn errors_look_like_vllm() {
        let sim = sim(fast()).await;
        let r = post(&sim, "/v1/completions", r#"{"model":"nope","prompt":"x"}"#).await;
        assert_eq!(r.status, 404);
        assert_eq!(
            r.body,
            r#"{"error":{"message":"The model `nope` does not exist.","type":"NotFoundError","param":"model","code":404}}"#
        );
        let r = post(&sim, "/v1/completions", "{not json").await;
        assert_eq!(r.status, 400);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"]["type"], "BadRequestError");
        assert_eq!(v["error"]["code"], 400);
        assert!(v["error"]["param"].is_null());
        let r = post(
            &sim,
            "/v1/chat/completions",
            r#"{"model":"llmb-sim","prompt":"x"}"#,
        )
        .await;
        assert_eq!(r.status, 400);
        let r = post(&sim, "/v1/completions", r#"{"prompt":"x","max_tokens":0}"#).await;
        assert_eq!(r.status, 400);
        let r = get(&sim, "/nowhere").await;
        assert_eq!(r.status, 404);
        assert_eq!(
            r.body,
            r#"{"error":{"message":"Not Found","type":"NotFoundError","param":null,"code":404}}"#
        );
        let r = get(&sim, "/health").await;
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        let r = get(&sim, "/v1/models").await;
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][0]["id"], "llmb-sim");
        assert_eq!(v["data"][0]["max_model_len"], 131072);
        let r = get(&sim, "/metrics").await;
        assert!(
            r.body.contains("# TYPE vllm:num_requests_running gauge\n"),
            "{}",
            r.body
        );
        assert!(
            r.body
                .contains("vllm:num_requests_running{model_name=\"llmb-sim\"} 0\n"),
            "{}",
            r.body
        );
        assert!(
            r.body
                .contains("vllm:num_requests_waiting{model_name=\"llmb-sim\"} 0\n")
        );
        assert!(
            r.body
                .contains("# TYPE vllm:request_success_total counter\n")
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn api_key_guards_v1_only() {
        let sim = sim(SimConfig {
            api_key: Some("k3y".into()),
            ..fast()
        })
        .await;
        let denied = get(&sim, "/v1/models").await;
        assert_eq!(denied.status, 401);
        assert_eq!(denied.body, r#"{"error":"Unauthorized"}"#);
        let wrong = request(
            sim.addr(),
            "GET",
            "/v1/models",
            "authorization: Bearer nope\r\n",
            "",
        )
        .await;
        assert_eq!(wrong.status, 401);
        let ok = request(
            sim.addr(),
            "GET",
            "/v1/models",
            "authorization: Bearer k3y\r\n",
            "",
        )
        .await;
        assert_eq!(ok.status, 200);
        assert_eq!(get(&sim, "/health").await.status, 200);
        assert_eq!(get(&sim, "/metrics").await.status, 200);
        assert_eq!(sim.requests_served(), 3);
        sim.shutdown().await;
    }
}
