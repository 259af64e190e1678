//! The native (non-OpenAI) HTTP routes: TGI, llama.cpp, SGLang, LightLLM, LMDeploy, Triton
//! (TensorRT-LLM) and DeepSpeed-MII, told apart by path, body and configured dialect, with each
//! one's request fields and defaults (their error bodies are `body::native_error`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use crate::api::Api;
use crate::body::{SimBody, bad_request, full, json_response, native_error};
use crate::config::{MAX_BODY_BYTES, MAX_MODEL_LEN};
use crate::faults::Fault;
use crate::generate::generate;
use crate::prefix_cache::block_hashes;
use crate::request::{Job, completion_prompt};
use crate::state::SimState;

/// The native routes: TGI, llama.cpp and SGLang (`/generate` is TGI's with `inputs`, SGLang's
/// with `text` or `input_ids`).
pub(crate) async fn native(
    state: &Arc<SimState>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<SimBody> {
    let path = req.uri().path().to_string();
    let authorized = state.expected_auth.as_ref().is_none_or(|expected| {
        req.headers()
            .get(AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes())
    });
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return bad_request(&format!("Cannot read the request body: {e}")),
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                r#"{"error":"Failed to deserialize the JSON body","error_type":"validation"}"#,
            );
        }
    };
    let lightllm = state.config.dialect.as_deref() == Some("lightllm");
    let mii = state.config.dialect.as_deref() == Some("deepspeed-mii");
    let api = match path.as_str() {
        p if p.starts_with("/mii/") => Api::Mii,
        "/generate" if mii => Api::Mii,
        "/generate_stream" | "/generate" if lightllm => Api::LightLlm,
        "/generate_stream" => Api::TgiStream,
        "/completion" => Api::LlamaCpp,
        p if p.starts_with("/v2/models/") => Api::Trtllm,
        _ if body.get("inputs").is_some() => Api::TgiGenerate,
        _ if body.get("prompt").is_some() => Api::Lmdeploy,
        _ => Api::Sglang,
    };
    let triton_streams = path.ends_with("/generate_stream");
    if !authorized {
        return match api {
            Api::TgiStream | Api::TgiGenerate => full(StatusCode::UNAUTHORIZED, None, Bytes::new()),
            _ => native_error(api, StatusCode::UNAUTHORIZED, "Invalid API Key"),
        };
    }
    match parse_native_job(state, api, &body) {
        Ok(mut job) => {
            // Triton and LightLLM stream only on their `generate_stream` routes.
            if matches!(api, Api::Trtllm | Api::LightLlm) && !triton_streams {
                job.stream = false;
            }
            if path.starts_with("/mii/") {
                job.stream = false;
            }
            generate(state, job, arrived).await
        }
        Err(response) => response,
    }
}

// The error is the ready-made response for a bad request: rare, so its size does not matter.
#[allow(clippy::result_large_err)]
fn parse_native_job(state: &SimState, api: Api, body: &Value) -> Result<Job, Response<SimBody>> {
    let invalid = |msg: &str| {
        let status = match api {
            Api::TgiStream | Api::TgiGenerate => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        native_error(api, status, msg)
    };
    let (prompt_key, params, max_key, default_max) = match api {
        Api::TgiStream | Api::TgiGenerate => {
            ("inputs", body.get("parameters"), "max_new_tokens", 100)
        }
        Api::LightLlm => ("inputs", body.get("parameters"), "max_new_tokens", 16),
        Api::LlamaCpp => ("prompt", Some(body), "n_predict", 16),
        Api::Lmdeploy => ("prompt", Some(body), "max_tokens", 128),
        Api::Trtllm => ("text_input", Some(body), "max_tokens", 16),
        Api::Mii if body.get("prompts").is_some() => ("prompts", Some(body), "max_new_tokens", 128),
        Api::Mii => ("prompt", Some(body), "max_tokens", 128),
        _ => ("text", body.get("sampling_params"), "max_new_tokens", 128),
    };
    let prompt = match body.get(prompt_key) {
        Some(p) => completion_prompt(p, false).map_err(invalid)?,
        None if api == Api::Sglang && body.get("input_ids").is_some() => {
            completion_prompt(&body["input_ids"], false).map_err(invalid)?
        }
        None => return Err(invalid(&format!("`{prompt_key}` is required"))),
    };
    let fault = Fault::of(&prompt.text);
    if let Some(refusal) = fault.refusal(|status, _, message| native_error(api, status, message)) {
        return Err(refusal);
    }
    let max_tokens = match params.and_then(|p| p.get(max_key)).filter(|v| !v.is_null()) {
        None => default_max,
        // llama.cpp's -1 means "until EOS": generate the default.
        Some(v) if api == Api::LlamaCpp && v.as_i64() == Some(-1) => default_max,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_MODEL_LEN).contains(&n) => n as u32,
            _ => {
                return Err(invalid(&format!(
                    "`{max_key}` must be a positive integer, got {v}"
                )));
            }
        },
    };
    let flag = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(false);
    let prefix_blocks = match (state.config.prefix_cache, prompt.ids) {
        (false, _) => Vec::new(),
        (true, Some(ids)) => block_hashes(ids.iter().map(|id| id.as_u64().unwrap_or(0))),
        (true, None) => block_hashes(prompt.text.split_whitespace()),
    };
    Ok(Job {
        api,
        prompt_tokens: prompt.tokens,
        prefix_blocks,
        max_tokens,
        stream: match api {
            Api::TgiStream | Api::LightLlm => true,
            Api::TgiGenerate => false,
            _ => flag(body.get("stream")),
        },
        include_usage: true,
        ignore_eos: match api {
            // TGI has no ignore_eos: its outputs end where the model says.
            Api::TgiStream | Api::TgiGenerate => false,
            // Triton has none either; a minimum length as long as the cap forces it.
            // MII keeps going past EOS up to `min_tokens` (capped by the maximum).
            Api::Trtllm | Api::Mii if body.get("ignore_eos").is_none() => {
                ["min_length", "min_tokens"].iter().any(|k| {
                    body.get(*k)
                        .and_then(Value::as_u64)
                        .is_some_and(|n| n >= u64::from(max_tokens))
                })
            }
            _ => flag(params.and_then(|p| p.get("ignore_eos"))),
        },
        fault,
        request_id: 0,
        images: 0,
    })
}
