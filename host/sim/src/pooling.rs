//! The routes that generate no text: vLLM's pooling routes and Hugging Face TEI's rerank.
//!
//! - `POST /v1/embeddings`: OpenAI's shape (`object: list`, one `embedding` per input, `usage`
//!   with `prompt_tokens`); `input` a string, a list of strings, a list of token ids or a list of
//!   such lists; vectors of [`EMBEDDING_DIM`] floats, or `dimensions` of them, of unit length.
//! - `POST /v1/rerank`, `/rerank`, `/v2/rerank`: the Jina/Cohere-style rerank vLLM serves
//!   (`query`, `documents`, `top_n`), answered with `results` sorted by `relevance_score` and
//!   `usage.total_tokens`; a body with `texts` instead of `documents`, or the `tei` dialect,
//!   gets TEI's answer instead: a bare array of `{index, score}`.
//! - `POST /v1/score`: vLLM's score API (`text_1` against each of `text_2`), answered with `data`
//!   of scores in input order and `usage`.
//!
//! Each answer is one JSON body after the simulated prefill: `ttft_ms + prefill_us_per_token ×
//! prompt tokens`, jittered, counted from admission into the batch (a full `max_batch` makes it
//! wait, as generations do); there is no decode, so `itl_ms` plays no part. Token counts are the
//! words the client sent, by the word tokenizer every route shares: a rerank query counts once
//! however many documents it is paired with (vLLM counts each pair under the model's template).
//! Errors are vLLM's (TEI's shape in its dialect); the refusal faults, `no_answer` and
//! `malformed` apply.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, Response, StatusCode};
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use tokio::time::Instant;

use llmb_engine::tokenizer::count_words;

use crate::api::Api;
use crate::body::{SimBody, api_error, bad_request, json_response, native_error, never};
use crate::config::MAX_BODY_BYTES;
use crate::faults::Fault;
use crate::generate::admit;
use crate::state::{SimState, unix_now};
use crate::timing::{ActiveGuard, jitter, secs};

/// Length of the embeddings the simulator returns when the request names no `dimensions`.
pub(crate) const EMBEDDING_DIM: usize = 16;
/// The largest `dimensions` the simulated model accepts.
const MAX_EMBEDDING_DIM: u64 = 8192;

/// Which pooling route a request came to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    Embeddings,
    Rerank,
    Score,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        match path {
            "/v1/embeddings" => Some(Route::Embeddings),
            "/v1/rerank" | "/rerank" | "/v2/rerank" => Some(Route::Rerank),
            "/v1/score" => Some(Route::Score),
            _ => None,
        }
    }
}

/// True for the paths [`pooling`] answers.
pub(crate) fn is_pooling(path: &str) -> bool {
    Route::of(path).is_some()
}

/// A validated pooling request.
struct PoolJob {
    prompt_tokens: u32,
    fault: Fault,
    answer: Answer,
}

/// What the answer will hold, decided from the request alone.
enum Answer {
    /// One vector per input, each seeded by its input so the same text embeds the same way.
    Embeddings {
        seeds: Vec<u64>,
        dims: usize,
    },
    /// Scores of the documents in input order, the documents' text, how many results to keep
    /// (0: all) and whether to answer in TEI's shape.
    Rerank {
        scores: Vec<f64>,
        documents: Vec<String>,
        top_n: usize,
        return_documents: bool,
        tei: bool,
    },
    Score {
        scores: Vec<f64>,
    },
}

/// Answers a pooling route. The `/v1/*` ones passed the API-key check in `routes::v1`; the
/// others (`/rerank`, `/v2/rerank`) are checked here, as vLLM guards every route it serves.
pub(crate) async fn pooling(
    state: &Arc<SimState>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<SimBody> {
    let path = req.uri().path().to_string();
    let Some(route) = Route::of(&path) else {
        return crate::body::not_found();
    };
    if !path.starts_with("/v1/")
        && let Some(expected) = &state.expected_auth
        && req
            .headers()
            .get(AUTHORIZATION)
            .is_none_or(|v| v.as_bytes() != expected.as_bytes())
    {
        return json_response(StatusCode::UNAUTHORIZED, r#"{"error":"Unauthorized"}"#);
    }
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return bad_request(&format!("Cannot read the request body: {e}")),
    };
    let job = match parse(state, route, &bytes) {
        Ok(job) => job,
        Err(response) => return response,
    };
    answer(state, job, arrived).await
}

/// Waits out the simulated prefill, then writes the answer.
async fn answer(state: &Arc<SimState>, job: PoolJob, arrived: Instant) -> Response<SimBody> {
    if job.fault == Fault::NoAnswer {
        return never().await;
    }
    let (slot, arrived) = admit(state, arrived).await;
    let cfg = &state.config;
    let n = state.generations.fetch_add(1, Relaxed);
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let wait_s = ((cfg.ttft_ms / 1e3
        + cfg.prefill_us_per_token * f64::from(job.prompt_tokens) / 1e6)
        * jitter(cfg, &mut rng))
    .max(0.0);
    state
        .prompt_tokens
        .fetch_add(u64::from(job.prompt_tokens), Relaxed);
    let active = ActiveGuard::new(state.clone(), slot);
    tokio::time::sleep_until(arrived + secs(wait_s)).await;
    drop(active);
    if job.fault == Fault::Malformed {
        return json_response(StatusCode::OK, "{\"data\": BROKEN");
    }
    state.successes.fetch_add(1, Relaxed);
    let id = format!("{:016x}{:016x}", rng.random::<u64>(), n);
    let body = match job.answer {
        Answer::Embeddings { seeds, dims } => {
            let data: Vec<Value> = seeds
                .iter()
                .enumerate()
                .map(|(index, &seed)| {
                    json!({"index": index, "object": "embedding",
                           "embedding": embedding(cfg.seed ^ seed, dims)})
                })
                .collect();
            json!({"id": format!("embd-{id}"), "object": "list", "created": unix_now(),
                   "model": cfg.model, "data": data,
                   "usage": usage(job.prompt_tokens)})
        }
        Answer::Rerank {
            scores,
            documents,
            top_n,
            return_documents,
            tei,
        } => {
            let mut order: Vec<usize> = (0..scores.len()).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            if top_n > 0 {
                order.truncate(top_n);
            }
            let results: Vec<Value> = order
                .into_iter()
                .map(|i| match (tei, return_documents) {
                    (true, false) => json!({"index": i, "score": scores[i]}),
                    (true, true) => json!({"index": i, "score": scores[i], "text": documents[i]}),
                    (false, false) => json!({"index": i, "relevance_score": scores[i]}),
                    (false, true) => json!({"index": i, "document": {"text": documents[i]},
                                            "relevance_score": scores[i]}),
                })
                .collect();
            if tei {
                Value::Array(results)
            } else {
                json!({"id": format!("rerank-{id}"), "model": cfg.model, "results": results,
                       "usage": {"total_tokens": job.prompt_tokens}})
            }
        }
        Answer::Score { scores } => {
            let data: Vec<Value> = scores
                .iter()
                .enumerate()
                .map(|(index, score)| json!({"index": index, "object": "score", "score": score}))
                .collect();
            json!({"id": format!("score-{id}"), "object": "list", "created": unix_now(),
                   "model": cfg.model, "data": data, "usage": usage(job.prompt_tokens)})
        }
    };
    json_response(StatusCode::OK, body.to_string())
}

/// vLLM's usage of a pooling request: every token a prompt token.
fn usage(prompt_tokens: u32) -> Value {
    json!({"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens,
           "completion_tokens": 0, "prompt_tokens_details": null})
}

/// A unit vector of `dims` floats, the same for the same seed.
fn embedding(seed: u64, dims: usize) -> Vec<f32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..dims).map(|_| rng.random_range(-1.0..=1.0)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// FNV-1a, for seeds and scores that depend on text and nothing else.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A document's relevance to `query` in [0, 1): half the share of its words the query has, half
/// a fixed function of its text, so scores differ, repeat, and favour overlapping documents.
fn relevance(query: &HashSet<&str>, document: &str) -> f64 {
    let words: Vec<&str> = document.split_whitespace().collect();
    let overlap = if words.is_empty() {
        0.0
    } else {
        words.iter().filter(|w| query.contains(*w)).count() as f64 / words.len() as f64
    };
    let noise = (fnv(document.as_bytes()) >> 11) as f64 / (1u64 << 53) as f64;
    ((0.5 * overlap + 0.5 * noise) * 1e6).round() / 1e6
}

// The error is the ready-made response for a bad request: rare, so its size does not matter.
#[allow(clippy::result_large_err)]
fn parse(state: &SimState, route: Route, bytes: &[u8]) -> Result<PoolJob, Response<SimBody>> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| bad_request(&format!("Invalid JSON in the request body: {e}")))?;
    if !body.is_object() {
        return Err(bad_request("The request body must be a JSON object."));
    }
    let tei = route == Route::Rerank
        && (state.config.dialect.as_deref() == Some("tei")
            || (body.get("texts").is_some() && body.get("documents").is_none()));
    // TEI's router shares TGI's error shape (`error`, `error_type`); it serves one model and
    // reads no `model` field.
    let invalid = |message: &str| {
        if tei {
            native_error(Api::TgiGenerate, StatusCode::UNPROCESSABLE_ENTITY, message)
        } else {
            bad_request(message)
        }
    };
    if !tei {
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
    }
    let mut text = String::new();
    let (prompt_tokens, answer) = match route {
        Route::Embeddings => embeddings(&body, &mut text).map_err(|m| invalid(&m))?,
        Route::Rerank => rerank(&body, tei, &mut text).map_err(|m| invalid(&m))?,
        Route::Score => score(&body, &mut text).map_err(|m| invalid(&m))?,
    };
    let fault = Fault::of(&text);
    let refusal = fault.refusal(|status, kind, message| {
        if tei {
            native_error(Api::TgiGenerate, status, message)
        } else {
            api_error(status, kind, message, None)
        }
    });
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    Ok(PoolJob {
        prompt_tokens,
        fault,
        answer,
    })
}

/// `/v1/embeddings`: the inputs' tokens and seeds, the vector length.
fn embeddings(body: &Value, text: &mut String) -> Result<(u32, Answer), String> {
    match body.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if f == "float" => {}
        Some(other) => {
            return Err(format!(
                "encoding_format {other} is not served by the simulator (it writes floats)."
            ));
        }
    }
    let dims = match body.get("dimensions") {
        None | Some(Value::Null) => EMBEDDING_DIM,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_EMBEDDING_DIM).contains(&n) => n as usize,
            _ => {
                return Err(format!(
                    "dimensions must be an integer between 1 and {MAX_EMBEDDING_DIM}, got {v}."
                ));
            }
        },
    };
    let is_ids = |items: &[Value]| !items.is_empty() && items.iter().all(Value::is_u64);
    let seed_of_ids = |items: &[Value]| fnv(Value::Array(items.to_vec()).to_string().as_bytes());
    let mut tokens = 0u32;
    let mut seeds = Vec::new();
    let mut add_text = |s: &str, tokens: &mut u32, seeds: &mut Vec<u64>| {
        *tokens += count_words(s);
        seeds.push(fnv(s.as_bytes()));
        text.push_str(s);
        text.push('\n');
    };
    match body.get("input") {
        None | Some(Value::Null) => return Err("Field `input` is required.".into()),
        Some(Value::String(s)) => add_text(s, &mut tokens, &mut seeds),
        Some(Value::Array(items)) if is_ids(items) => {
            tokens = items.len() as u32;
            seeds.push(seed_of_ids(items));
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            for item in items {
                match item {
                    Value::String(s) => add_text(s, &mut tokens, &mut seeds),
                    Value::Array(ids) if is_ids(ids) => {
                        tokens += ids.len() as u32;
                        seeds.push(seed_of_ids(ids));
                    }
                    _ => return Err(INPUT_SHAPES.into()),
                }
            }
        }
        Some(_) => return Err(INPUT_SHAPES.into()),
    }
    Ok((tokens, Answer::Embeddings { seeds, dims }))
}

const INPUT_SHAPES: &str = "`input` must be a string, a list of strings, a list of token ids or a list of lists of token ids.";

/// A text field: a string, or (as vLLM and Jina take documents) an object with `text`.
fn text_of(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("text").and_then(Value::as_str),
        _ => None,
    }
}

/// The texts of a list field, which must be a non-empty list of texts.
fn texts<'a>(body: &'a Value, key: &str) -> Result<Vec<&'a str>, String> {
    let Some(items) = body.get(key).and_then(Value::as_array) else {
        return Err(format!("Field `{key}` is required (a list of texts)."));
    };
    if items.is_empty() {
        return Err(format!("`{key}` must not be empty."));
    }
    items
        .iter()
        .map(|item| text_of(item).ok_or_else(|| format!("Every item of `{key}` must be a text.")))
        .collect()
}

/// Words of `query` and `documents` (the query once), and their text for the fault markers.
fn count_pairs(query: &str, documents: &[&str], text: &mut String) -> u32 {
    text.push_str(query);
    let mut tokens = count_words(query);
    for d in documents {
        tokens += count_words(d);
        text.push('\n');
        text.push_str(d);
    }
    tokens
}

/// `/rerank` and friends: vLLM's `query` and `documents` (`top_n`, `return_documents`), or TEI's
/// `query` and `texts` (`return_text`).
fn rerank(body: &Value, tei: bool, text: &mut String) -> Result<(u32, Answer), String> {
    let Some(query) = body.get("query").and_then(Value::as_str) else {
        return Err("Field `query` is required (a string).".into());
    };
    let documents = texts(body, if tei { "texts" } else { "documents" })?;
    let top_n = match body.get("top_n") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("top_n must be a non-negative integer, got {v}."))?
            as usize,
    };
    let flag = |key: &str, default: bool| body.get(key).and_then(Value::as_bool).unwrap_or(default);
    let return_documents = if tei {
        flag("return_text", false)
    } else {
        flag("return_documents", true)
    };
    let tokens = count_pairs(query, &documents, text);
    let words: HashSet<&str> = query.split_whitespace().collect();
    let scores = documents.iter().map(|d| relevance(&words, d)).collect();
    Ok((
        tokens,
        Answer::Rerank {
            scores,
            documents: documents.iter().map(|d| d.to_string()).collect(),
            top_n,
            return_documents,
            tei,
        },
    ))
}

/// `/v1/score`: `text_1` (one text, or as many as `text_2`) against `text_2` (a text or a list).
fn score(body: &Value, text: &mut String) -> Result<(u32, Answer), String> {
    let side = |key: &str| -> Result<Vec<&str>, String> {
        match body.get(key) {
            Some(Value::Array(_)) => texts(body, key),
            Some(v) => text_of(v)
                .map(|t| vec![t])
                .ok_or_else(|| format!("Field `{key}` must be a text or a list of texts.")),
            None => Err(format!("Field `{key}` is required.")),
        }
    };
    let (first, second) = (side("text_1")?, side("text_2")?);
    if first.len() != 1 && first.len() != second.len() {
        return Err(format!(
            "text_1 has {} texts and text_2 {}: give one text_1, or as many as text_2.",
            first.len(),
            second.len()
        ));
    }
    let mut tokens = 0;
    let scores = if first.len() == 1 {
        tokens += count_pairs(first[0], &second, text);
        let words: HashSet<&str> = first[0].split_whitespace().collect();
        second.iter().map(|d| relevance(&words, d)).collect()
    } else {
        first
            .iter()
            .zip(&second)
            .map(|(q, d)| {
                tokens += count_pairs(q, &[*d], text);
                relevance(&q.split_whitespace().collect(), d)
            })
            .collect()
    };
    Ok((tokens, Answer::Score { scores }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use crate::config::SimConfig;
    use crate::testutil::*;

    fn json(r: &Reply) -> Value {
        assert!(
            r.head.contains("content-type: application/json"),
            "{}",
            r.head
        );
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
    }

    /// `/metrics`' `vllm:prompt_tokens_total`.
    async fn prompt_tokens_total(sim: &crate::SimHandle) -> u64 {
        let r = get(sim, "/metrics").await;
        let line = r
            .body
            .lines()
            .find(|l| l.starts_with("vllm:prompt_tokens_total{"))
            .unwrap()
            .to_string();
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
    }

    #[tokio::test]
    async fn embeddings_in_openais_shape() {
        let sim = sim(fast()).await;
        let r = post(
            &sim,
            "/v1/embeddings",
            r#"{"model":"llmb-sim","input":"the quick brown fox","encoding_format":"float"}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        let v = json(&r);
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "llmb-sim");
        assert!(v["id"].as_str().unwrap().starts_with("embd-"));
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data[0]["object"], "embedding");
        assert_eq!(data[0]["index"], 0);
        let vector: Vec<f64> = data[0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(vector.len(), super::EMBEDDING_DIM);
        let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
        assert_eq!(v["usage"]["prompt_tokens"], 4);
        assert_eq!(v["usage"]["total_tokens"], 4);
        assert_eq!(v["usage"]["completion_tokens"], 0);

        // The same text embeds the same way; `dimensions` sets the length; a list of inputs gets
        // one vector each, token ids count one token each.
        let again = json(
            &post(
                &sim,
                "/v1/embeddings",
                r#"{"input":["the quick brown fox", [7, 8, 9], "x"],"dimensions":8}"#,
            )
            .await,
        );
        let data = again["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        for (i, item) in data.iter().enumerate() {
            assert_eq!(item["index"], i);
            assert_eq!(item["embedding"].as_array().unwrap().len(), 8);
        }
        assert_eq!(again["usage"]["prompt_tokens"], 4 + 3 + 1);
        let long = json(&post(&sim, "/v1/embeddings", r#"{"input":"the quick brown fox"}"#).await);
        assert_eq!(long["data"][0]["embedding"], v["data"][0]["embedding"]);
        assert_ne!(data[2]["embedding"], data[0]["embedding"]);
        assert_eq!(prompt_tokens_total(&sim).await, 4 + 8 + 4);

        for bad in [
            r#"{"model":"llmb-sim"}"#,
            r#"{"input":[]}"#,
            r#"{"input":[{"text":"x"}]}"#,
            r#"{"input":"x","dimensions":0}"#,
            r#"{"input":"x","encoding_format":"base64"}"#,
            "[1]",
        ] {
            let r = post(&sim, "/v1/embeddings", bad).await;
            assert_eq!(r.status, 400, "{bad}");
            assert_eq!(json(&r)["error"]["type"], "BadRequestError", "{bad}");
        }
        let r = post(&sim, "/v1/embeddings", r#"{"model":"nope","input":"x"}"#).await;
        assert_eq!(r.status, 404);
        assert_eq!(
            r.body,
            r#"{"error":{"message":"The model `nope` does not exist.","type":"NotFoundError","param":"model","code":404}}"#
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn rerank_on_every_route_and_teis_shape() {
        let sim = sim(fast()).await;
        let body = r#"{"model":"llmb-sim","query":"red apple pie","documents":["green pear","red apple",{"text":"apple pie with red berries"},"stone"]}"#;
        let mut first = None;
        for path in ["/v1/rerank", "/rerank", "/v2/rerank"] {
            let r = post(&sim, path, body).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            let v = json(&r);
            assert!(v["id"].as_str().unwrap().starts_with("rerank-"));
            assert_eq!(v["model"], "llmb-sim");
            // Three query words (once) and 2 + 2 + 5 + 1 document words.
            assert_eq!(v["usage"]["total_tokens"], 13, "{path}");
            let results = v["results"].as_array().unwrap();
            assert_eq!(results.len(), 4);
            let scores: Vec<f64> = results
                .iter()
                .map(|r| r["relevance_score"].as_f64().unwrap())
                .collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
            assert!(scores.iter().all(|s| (0.0..1.0).contains(s)));
            let mut indices: Vec<u64> = results
                .iter()
                .map(|r| r["index"].as_u64().unwrap())
                .collect();
            // "red apple" shares all its words with the query: it ranks first.
            assert_eq!(indices[0], 1);
            assert_eq!(results[0]["document"]["text"], "red apple");
            indices.sort();
            assert_eq!(indices, [0, 1, 2, 3]);
            // Every route ranks alike.
            let ranking = results.clone();
            assert_eq!(first.get_or_insert(ranking), results, "{path}");
        }
        let v = json(
            &post(
                &sim,
                "/v1/rerank",
                r#"{"query":"red apple","documents":["a","red apple","b c"],"top_n":2,"return_documents":false}"#,
            )
            .await,
        );
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0]["index"], 1);
        assert!(results[0].get("document").is_none());
        assert_eq!(v["usage"]["total_tokens"], 2 + 1 + 2 + 2);

        // TEI's body (`texts`), answered with a bare array and no usage.
        let r = post(
            &sim,
            "/rerank",
            r#"{"query":"red apple","texts":["a","red apple","b c"]}"#,
        )
        .await;
        let v = json(&r);
        let results = v.as_array().unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0]["index"], 1);
        assert!(results[0]["score"].as_f64().unwrap() > results[1]["score"].as_f64().unwrap());
        assert!(results[0].get("text").is_none());
        let r = post(&sim, "/rerank", r#"{"query":"q","texts":[]}"#).await;
        assert_eq!(r.status, 422);
        assert!(json(&r)["error"].as_str().unwrap().contains("texts"));

        for bad in [
            r#"{"documents":["a"]}"#,
            r#"{"query":"q"}"#,
            r#"{"query":"q","documents":[]}"#,
            r#"{"query":"q","documents":[3]}"#,
            r#"{"query":"q","documents":["a"],"top_n":-1}"#,
        ] {
            assert_eq!(post(&sim, "/v1/rerank", bad).await.status, 400, "{bad}");
        }
        let r = post(
            &sim,
            "/rerank",
            r#"{"model":"nope","query":"q","documents":["a"]}"#,
        )
        .await;
        assert_eq!(r.status, 404);
        assert_eq!(
            json(&r)["error"]["message"],
            "The model `nope` does not exist."
        );
        sim.shutdown().await;

        // The `tei` dialect answers in TEI's shape whatever the body.
        let tei = crate::testutil::sim(SimConfig {
            dialect: Some("tei".into()),
            ..fast()
        })
        .await;
        let v = json(
            &post(
                &tei,
                "/rerank",
                r#"{"query":"q","texts":["a","b"],"return_text":true}"#,
            )
            .await,
        );
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert!(v[0]["text"].is_string());
        tei.shutdown().await;
    }

    #[tokio::test]
    async fn score_pairs_in_input_order() {
        let sim = sim(fast()).await;
        let v = json(
            &post(
                &sim,
                "/v1/score",
                r#"{"model":"llmb-sim","text_1":"red apple","text_2":["pear","red apple","apple"]}"#,
            )
            .await,
        );
        assert_eq!(v["object"], "list");
        assert!(v["id"].as_str().unwrap().starts_with("score-"));
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d["index"], i);
            assert_eq!(d["object"], "score");
        }
        assert!(data[1]["score"].as_f64().unwrap() > data[0]["score"].as_f64().unwrap());
        assert_eq!(v["usage"]["prompt_tokens"], 2 + 1 + 2 + 1);
        // N texts against N: pairwise.
        let v = json(
            &post(
                &sim,
                "/v1/score",
                r#"{"text_1":["a b","c"],"text_2":["d","e f g"]}"#,
            )
            .await,
        );
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["usage"]["prompt_tokens"], 7);
        let r = post(
            &sim,
            "/v1/score",
            r#"{"text_1":["a","b"],"text_2":["c","d","e"]}"#,
        )
        .await;
        assert_eq!(r.status, 400);
        assert_eq!(
            post(&sim, "/v1/score", r#"{"text_1":"a"}"#).await.status,
            400
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn answers_after_the_prefill_time_and_queue_in_the_batch() {
        let sim = sim(SimConfig {
            ttft_ms: 30.0,
            itl_ms: 5000.0,
            prefill_us_per_token: 2000.0,
            max_batch: Some(1),
            ..SimConfig::default()
        })
        .await;
        // 10 words: 30 ms + 10 × 2 ms; the decode gap (5 s) plays no part, which a loaded
        // machine's slack of well over a second cannot hide.
        let body = r#"{"input":"a b c d e f g h i j"}"#;
        let t0 = std::time::Instant::now();
        assert_eq!(post(&sim, "/v1/embeddings", body).await.status, 200);
        let one = t0.elapsed();
        assert!(
            one >= Duration::from_millis(50) && one < Duration::from_millis(2000),
            "{one:?}"
        );
        // Two at once with one batch slot: the second waits for the first.
        let t0 = std::time::Instant::now();
        let rerank = r#"{"query":"a b c d e","documents":["f g h","i j"]}"#;
        let (a, b) = tokio::join!(
            post(&sim, "/v1/rerank", rerank),
            post(
                &sim,
                "/v1/score",
                r#"{"text_1":"a b c d e","text_2":["f g h","i j"]}"#
            )
        );
        assert_eq!((a.status, b.status), (200, 200));
        let both = t0.elapsed();
        assert!(both >= Duration::from_millis(100), "{both:?}");
        assert_eq!(prompt_tokens_total(&sim).await, 30);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn keys_and_faults() {
        let sim = sim(SimConfig {
            api_key: Some("k3y".into()),
            ..fast()
        })
        .await;
        let bearer = "authorization: Bearer k3y\r\n";
        let send = |path: &'static str, headers: &'static str, body: &'static str| {
            let addr = sim.addr();
            async move { request(addr, "POST", path, headers, body).await }
        };
        let rerank = r#"{"query":"q","documents":["a"]}"#;
        for path in ["/v1/rerank", "/rerank", "/v2/rerank"] {
            let r = send(path, "", rerank).await;
            assert_eq!(
                (r.status, r.body.as_str()),
                (401, r#"{"error":"Unauthorized"}"#)
            );
            assert_eq!(send(path, bearer, rerank).await.status, 200, "{path}");
        }
        assert_eq!(
            send("/v1/embeddings", "", r#"{"input":"x"}"#).await.status,
            401
        );
        let r = send(
            "/v1/embeddings",
            bearer,
            r#"{"input":"please __sim_fault:http500__"}"#,
        )
        .await;
        assert_eq!(r.status, 500);
        assert_eq!(json(&r)["error"]["message"], "simulated internal error");
        // A marker in any document counts.
        let r = send(
            "/v1/rerank",
            bearer,
            r#"{"query":"q","documents":["a","__sim_fault:overloaded__"]}"#,
        )
        .await;
        assert_eq!(r.status, 503);
        assert!(r.head.contains("retry-after: 2"), "{}", r.head);
        let r = send(
            "/rerank",
            bearer,
            r#"{"query":"q","texts":["__sim_fault:rate_limited__"]}"#,
        )
        .await;
        assert_eq!(r.status, 429);
        assert_eq!(json(&r)["error"], "simulated rate limit");
        let r = send(
            "/v1/score",
            bearer,
            r#"{"text_1":"q __sim_fault:malformed__","text_2":"a"}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(
            serde_json::from_str::<Value>(&r.body).is_err(),
            "{}",
            r.body
        );
        sim.shutdown().await;
    }
}
