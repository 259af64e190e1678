//! The start of every response: admission into the batch, TTFT (with prefill and queueing),
//! output lengths and ids, then a whole body after its full generation time or a [`Generation`]
//! stream; the inter-token gaps on absolute deadlines come from `timing`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use hyper::header::CONTENT_TYPE;
use hyper::{Response, StatusCode};
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::time::Instant;

use crate::api::Api;
use crate::body::{
    JSON_CONTENT_TYPE, SSE_CONTENT_TYPE, SimBody, api_error, broken_whole, huge, json_response,
    native_error, never,
};
use crate::faults::{self, Fault};
use crate::request::Job;
use crate::shapes::whole_body;
use crate::state::{SimState, unix_now};
use crate::stream::{Generation, Step};
use crate::timing::{ActiveGuard, itl_s, jitter, secs};

pub(crate) async fn generate(
    state: &Arc<SimState>,
    job: Job,
    arrived: Instant,
) -> Response<SimBody> {
    match job.fault {
        Fault::NoAnswer => return never().await,
        Fault::Endless if !job.stream => return never().await,
        Fault::Huge => return huge(job.stream),
        Fault::SlowHeaders => tokio::time::sleep(faults::SLOW_HEADERS).await,
        _ => {}
    }
    let (slot, arrived) = admit(state, arrived).await;
    let cfg = &state.config;
    let n = state.generations.fetch_add(1, Relaxed);
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let output_tokens = if job.fault == Fault::Endless {
        u32::MAX
    } else if job.ignore_eos {
        job.max_tokens
    } else {
        rng.random_range(job.max_tokens.div_ceil(2)..=job.max_tokens)
    };
    let hit_max = output_tokens == job.max_tokens;
    let reasoning_tokens = if job.api.has_reasoning_channel() {
        cfg.reasoning_tokens.min(output_tokens)
    } else {
        0
    };
    let cached_tokens = cfg
        .prefix_cache
        .then(|| state.prefix_lookup(&job.prefix_blocks, job.prompt_tokens));
    let prefilled = job.prompt_tokens - cached_tokens.unwrap_or(0);
    let kv_transfer_s = if cfg.kv_transfer_ms > 0.0 {
        let t = (cfg.kv_transfer_ms / 1e3 * jitter(cfg, &mut rng)).max(0.0);
        state.kv_transfers.fetch_add(1, Relaxed);
        state
            .kv_transfer_us
            .fetch_add((t * 1e6).round() as u64, Relaxed);
        t
    } else {
        0.0
    };
    let ttft_s = ((cfg.ttft_ms / 1e3 + cfg.prefill_us_per_token * f64::from(prefilled) / 1e6)
        * jitter(cfg, &mut rng))
    .max(0.0)
        + kv_transfer_s;
    let id = format!(
        "{}{}{:016x}{:016x}",
        job.api.id_prefix(),
        // Anthropic's ids read `msg_…`.
        if job.api == Api::Anthropic { '_' } else { '-' },
        splitmix64(cfg.seed ^ n),
        splitmix64(n.wrapping_add(0x5851_F42D_4C95_7F2D))
    );
    let created = unix_now();
    let word_offset = splitmix64(cfg.seed.wrapping_add(n));
    state
        .prompt_tokens
        .fetch_add(u64::from(job.prompt_tokens), Relaxed);
    state.images.fetch_add(u64::from(job.images), Relaxed);
    let active = ActiveGuard::new(state.clone(), slot);

    if !job.stream {
        let mut offset_s = ttft_s;
        for _ in 1..output_tokens {
            offset_s += itl_s(state, &mut rng);
        }
        tokio::time::sleep_until(arrived + secs(offset_s)).await;
        drop(active);
        match job.fault {
            Fault::Malformed => {
                return json_response(StatusCode::OK, "{\"choices\":[{\"text\": BROKEN");
            }
            Fault::ErrorEvent if !job.api.is_openai() => {
                return native_error(
                    job.api,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "simulated in-stream error",
                );
            }
            Fault::ErrorEvent => {
                return api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "simulated in-stream error",
                    None,
                );
            }
            Fault::Drop => {
                return Response::builder()
                    .status(StatusCode::OK)
                    .header(CONTENT_TYPE, JSON_CONTENT_TYPE)
                    .body(SimBody::Fail { yielded: false })
                    .expect("static headers are valid");
            }
            Fault::Truncated | Fault::Stall => {
                let body = whole_body(
                    state,
                    job.api,
                    &id,
                    created,
                    word_offset,
                    job.prompt_tokens,
                    cached_tokens,
                    output_tokens,
                    reasoning_tokens,
                    hit_max,
                );
                return broken_whole(job.fault, body);
            }
            _ => {}
        }
        state
            .generation_tokens
            .fetch_add(u64::from(output_tokens), Relaxed);
        state.successes.fetch_add(1, Relaxed);
        let body = whole_body(
            state,
            job.api,
            &id,
            created,
            word_offset,
            job.prompt_tokens,
            cached_tokens,
            output_tokens,
            reasoning_tokens,
            hit_max,
        );
        return json_response(StatusCode::OK, body);
    }

    let prefix = format!(
        "data: {{\"id\":\"{id}\",\"object\":\"{}\",\"created\":{created},\"model\":{},\"choices\":",
        job.api.chunk_object(),
        state.model_json
    );
    let generation = Generation {
        state: state.clone(),
        _active: Some(active),
        api: job.api,
        prefix,
        prompt_tokens: job.prompt_tokens,
        cached_tokens,
        output_tokens,
        reasoning_tokens,
        hit_max,
        include_usage: job.include_usage,
        word_offset,
        fault: job.fault,
        rng,
        arrived,
        offset_s: ttft_s,
        sleep: Box::pin(tokio::time::sleep_until(arrived + secs(ttft_s))),
        armed: true,
        yielded: false,
        sent: 0,
        step: if matches!(job.api, Api::Chat | Api::Responses | Api::Anthropic) {
            Step::Role
        } else {
            Step::Token
        },
        sequence: 0,
        created,
        request_id: job.request_id,
        failed: false,
        id,
        text_so_far: String::new(),
        reasoning_so_far: String::new(),
        ids_so_far: String::new(),
        send_log: None,
    };
    let content_type = if job.api == Api::Ppl {
        "application/grpc"
    } else {
        SSE_CONTENT_TYPE
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, content_type)
        .body(SimBody::Stream(Box::new(generation)))
        .expect("static headers are valid")
}

/// Waits for a batch slot when the batch is full, counted as waiting; the request's clock
/// (TTFT and every token) starts when it is admitted, as a real server's queue time adds to TTFT.
pub(crate) async fn admit(
    state: &Arc<SimState>,
    arrived: Instant,
) -> (Option<tokio::sync::OwnedSemaphorePermit>, Instant) {
    let Some(batch) = &state.batch else {
        return (None, arrived);
    };
    if let Ok(permit) = batch.clone().try_acquire_owned() {
        return (Some(permit), arrived);
    }
    state.waiting.fetch_add(1, Relaxed);
    let permit = batch.clone().acquire_owned().await.ok();
    state.waiting.fetch_sub(1, Relaxed);
    (permit, Instant::now())
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use llmb_engine::tokenizer::count_words;
    use serde_json::Value;

    use crate::config::SimConfig;
    use crate::testutil::*;

    #[tokio::test]
    async fn non_streaming_responses_carry_text_and_usage() {
        let sim = sim(fast()).await;
        let r = post(
            &sim,
            "/v1/completions",
            r#"{"prompt":"a b","max_tokens":4,"ignore_eos":true}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(r.head.contains("content-type: application/json"));
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(count_words(v["choices"][0]["text"].as_str().unwrap()), 4);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["prompt_tokens"], 2);
        assert_eq!(v["usage"]["completion_tokens"], 4);
        assert_eq!(v["usage"]["total_tokens"], 6);

        let r = post(
            &sim,
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"x y z"}],"max_tokens":2,"ignore_eos":true}"#,
        )
        .await;
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(
            count_words(v["choices"][0]["message"]["content"].as_str().unwrap()),
            2
        );
        // Three words, one message under the template (5) and the generation prompt (3).
        assert_eq!(v["usage"]["prompt_tokens"], 11);

        // Natural lengths: between half and all of max_tokens, "stop" unless the cap was hit.
        for _ in 0..8 {
            let r = post(&sim, "/v1/completions", r#"{"prompt":"p","max_tokens":10}"#).await;
            let v: Value = serde_json::from_str(&r.body).unwrap();
            let n = v["usage"]["completion_tokens"].as_u64().unwrap();
            assert!((5..=10).contains(&n), "{n}");
            assert_eq!(
                count_words(v["choices"][0]["text"].as_str().unwrap()) as u64,
                n
            );
            assert_eq!(
                v["choices"][0]["finish_reason"],
                if n == 10 { "length" } else { "stop" }
            );
        }
        // Default max_tokens is 16.
        let r = post(
            &sim,
            "/v1/completions",
            r#"{"prompt":"p","ignore_eos":true}"#,
        )
        .await;
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["usage"]["completion_tokens"], 16);
        assert_eq!(sim.requests_served(), 11);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn non_streaming_bodies_carry_the_reasoning_apart() {
        let sim = sim(SimConfig {
            reasoning_tokens: 3,
            ..fast()
        })
        .await;
        let json = |r: crate::testutil::Reply| serde_json::from_str::<Value>(&r.body).unwrap();
        let chat = |max: u32| {
            format!(
                r#"{{"messages":[{{"role":"user","content":"x"}}],"max_tokens":{max},"ignore_eos":true}}"#
            )
        };
        let v = json(post(&sim, "/v1/chat/completions", &chat(5)).await);
        let message = &v["choices"][0]["message"];
        let reasoning = message["reasoning_content"].as_str().unwrap();
        assert_eq!(count_words(reasoning), 3);
        assert_eq!(message["reasoning"], reasoning);
        assert_eq!(count_words(message["content"].as_str().unwrap()), 2);
        assert_eq!(v["usage"]["completion_tokens"], 5);
        assert_eq!(
            v["usage"]["completion_tokens_details"]["reasoning_tokens"],
            3
        );
        // Cut off while thinking: no answer.
        let v = json(post(&sim, "/v1/chat/completions", &chat(2)).await);
        let message = &v["choices"][0]["message"];
        assert!(message["content"].is_null(), "{v}");
        assert_eq!(count_words(message["reasoning"].as_str().unwrap()), 2);
        assert_eq!(
            v["usage"]["completion_tokens_details"]["reasoning_tokens"],
            2
        );

        let v = json(
            post(
                &sim,
                "/v1/responses",
                r#"{"input":"x","max_output_tokens":4,"ignore_eos":true}"#,
            )
            .await,
        );
        let output = v["output"].as_array().unwrap();
        assert_eq!(output.len(), 2, "{v}");
        assert_eq!(output[0]["type"], "reasoning");
        assert_eq!(
            count_words(output[0]["content"][0]["text"].as_str().unwrap()),
            3
        );
        assert_eq!(output[1]["type"], "message");
        assert_eq!(
            count_words(output[1]["content"][0]["text"].as_str().unwrap()),
            1
        );
        assert_eq!(v["usage"]["output_tokens"], 4);
        assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 3);

        // No reasoning channel: all text.
        let v = json(
            post(
                &sim,
                "/v1/completions",
                r#"{"prompt":"x","max_tokens":4,"ignore_eos":true}"#,
            )
            .await,
        );
        assert_eq!(count_words(v["choices"][0]["text"].as_str().unwrap()), 4);
        assert!(v["usage"].get("completion_tokens_details").is_none(), "{v}");
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn same_seed_same_lengths_and_text() {
        let body = r#"{"prompt":"p","max_tokens":12}"#;
        let mut runs = Vec::new();
        for _ in 0..2 {
            let sim = sim(SimConfig { seed: 7, ..fast() }).await;
            let mut texts = Vec::new();
            for _ in 0..4 {
                let v: Value =
                    serde_json::from_str(&post(&sim, "/v1/completions", body).await.body).unwrap();
                texts.push((v["id"].clone(), v["choices"][0]["text"].clone()));
            }
            runs.push(texts);
            sim.shutdown().await;
        }
        assert_eq!(runs[0], runs[1]);
    }

    #[tokio::test]
    async fn timing_follows_absolute_deadlines() {
        let sim = sim(SimConfig {
            ttft_ms: 30.0,
            itl_ms: 10.0,
            ..SimConfig::default()
        })
        .await;
        let t0 = std::time::Instant::now();
        let r = post(
            &sim,
            "/v1/completions",
            r#"{"prompt":"p","max_tokens":5,"ignore_eos":true,"stream":true}"#,
        )
        .await;
        let streamed = t0.elapsed();
        assert_eq!(r.chunks.len(), 6);
        assert!(
            streamed >= Duration::from_millis(70) && streamed < Duration::from_millis(1000),
            "{streamed:?}"
        );
        let t0 = std::time::Instant::now();
        let r = post(
            &sim,
            "/v1/completions",
            r#"{"prompt":"p","max_tokens":5,"ignore_eos":true}"#,
        )
        .await;
        let whole = t0.elapsed();
        assert_eq!(r.status, 200);
        assert!(
            whole >= Duration::from_millis(70) && whole < Duration::from_millis(1000),
            "{whole:?}"
        );
        sim.shutdown().await;
    }
}
