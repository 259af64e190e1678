//! The backends that generate no text, end to end against the simulator on 127.0.0.1:
//! `openai-embeddings` (`/v1/embeddings`) and `rerank` in its three APIs (`/v1/rerank`, TEI's
//! `/rerank`, vLLM's `/v1/score`), streaming and with `--no-stream`. Every request completes
//! with the simulator's prompt-token count and no output, the latency is at least the simulated
//! prefill, the metrics of a workload without output make sense (no TPOT, one arrival per
//! request), and errors carry the server's message.

mod common;

use std::io::{Read as _, Write as _};

use common::*;
use llmb_engine::outcome::BenchOutcome;
use llmb_engine::records::TokenSource;
use llmb_sim::{SimConfig, SimHandle};

/// The simulated time to answer, and the prefill cost per prompt token on top.
const TTFT_MS: f64 = 30.0;
const PREFILL_US_PER_TOKEN: f64 = 1000.0;

async fn start_sim(config: SimConfig) -> SimHandle {
    llmb_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// `vllm:prompt_tokens_total` from the simulator's `/metrics`: every prompt token it counted.
fn prompt_tokens_total(sim: &SimHandle) -> u64 {
    let mut s = std::net::TcpStream::connect(sim.addr()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: sim\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("vllm:prompt_tokens_total{"))
        .unwrap_or_else(|| panic!("no prompt counter in {text}"));
    line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
}

/// A run of `backend` with `opts` against the in-process simulator.
fn args_for(
    dir: &std::path::Path,
    backend: &str,
    opts: &[&str],
    stream: bool,
) -> llmb::args::BenchArgs {
    let mut args = quick_args(dir);
    args.backend = backend.into();
    args.plugin_opts = opts.iter().map(|o| o.to_string()).collect();
    args.no_stream = !stream;
    args.num_prompts = 6;
    args.sim.ttft_ms = TTFT_MS;
    args.sim.prefill_us_per_token = PREFILL_US_PER_TOKEN;
    // Input lengths as the client counts them (its word tokenizer), not asked of the server:
    // comparing them with the server's usage then checks two counts, not one twice.
    args.no_server_tokenize = true;
    args
}

/// What every run of a backend without output must show. `usage`: the server reports prompt
/// tokens (TEI does not).
fn check_no_output_run(what: &str, outcome: &BenchOutcome, stream: bool, usage: bool) {
    let m = &outcome.metrics;
    assert_eq!(
        (m.completed, m.failed),
        (6, 0),
        "{what}: {:?}",
        outcome.records.iter().find_map(|r| r.error.as_ref())
    );
    let mut counted = 0u64;
    for r in &outcome.records {
        assert!(r.success, "{what}");
        assert_eq!(r.output_tokens, 0, "{what}");
        assert_eq!(r.token_source, Some(TokenSource::Usage), "{what}");
        assert!(r.generated_text.is_empty(), "{what}");
        assert!(r.prompt_tokens > 0, "{what}");
        if usage {
            // The simulator counted exactly the words the client sent: no word of the prompt
            // was lost or repeated in the query and documents.
            assert_eq!(r.server_prompt_tokens, Some(r.prompt_tokens), "{what}");
        } else {
            assert_eq!(r.server_prompt_tokens, None, "{what}");
        }
        counted += u64::from(r.input_tokens());
        // The answer took at least the simulated prefill of its prompt.
        let floor_s = (TTFT_MS + PREFILL_US_PER_TOKEN / 1e3 * f64::from(r.prompt_tokens)) / 1e3;
        assert!(
            r.e2el_s() >= floor_s,
            "{what}: E2EL {} s < {floor_s} s",
            r.e2el_s()
        );
        if stream {
            // One arrival, the body's end: the first and the last byte are the same event.
            assert_eq!(r.delta_ns, [r.end_ns], "{what}");
            assert_eq!(r.ttft_s(), Some(r.e2el_s()), "{what}");
        } else {
            assert!(r.delta_ns.is_empty(), "{what}");
        }
    }
    assert_eq!(m.total_input, counted, "{what}");
    assert!(m.total_input > 0, "{what}");
    assert_eq!(m.total_output, 0, "{what}");
    assert!(
        m.e2el.summary.min >= TTFT_MS,
        "{what}: E2EL min {} ms",
        m.e2el.summary.min
    );
    // No output: no TPOT and no ITL, but requests and tokens per second all the same.
    assert_eq!((m.tpot.count, m.itl.count), (0, 0), "{what}");
    assert_eq!(m.output_throughput, 0.0, "{what}");
    assert!(m.request_throughput > 0.0, "{what}");
    assert!(m.total_token_throughput > 0.0, "{what}");
    assert_eq!(m.ttft.count, if stream { 6 } else { 0 }, "{what}");
    if stream {
        assert!((m.ttft.mean - m.e2el.mean).abs() < 1e-9, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_with_and_without_streaming() {
    for stream in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let args = args_for(dir.path(), "openai-embeddings", &[], stream);
        let outcome = bench(&args).await;
        assert!(!outcome.info.output_len_forced);
        check_no_output_run(
            &format!("openai-embeddings stream={stream}"),
            &outcome,
            stream,
            true,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerank_in_each_api_with_and_without_streaming() {
    for (opts, usage, endpoint) in [
        (&["api=rerank"][..], true, "/v1/rerank"),
        // Two documents and only the best one back: the adapter expects one result.
        (&["documents=2", "top-n=1"][..], true, "/v1/rerank"),
        (&["api=tei"][..], false, "/rerank"),
        (&["api=score"][..], true, "/v1/score"),
    ] {
        for stream in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let args = args_for(dir.path(), "rerank", opts, stream);
            let outcome = bench(&args).await;
            // The result names the path the configured adapter used.
            assert_eq!(outcome.info.endpoint, endpoint, "{opts:?}");
            check_no_output_run(
                &format!("rerank {opts:?} stream={stream}"),
                &outcome,
                stream,
                usage,
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_count_is_the_clients() {
    let sim = start_sim(SimConfig {
        ttft_ms: 2.0,
        ..SimConfig::default()
    })
    .await;
    let mut before = prompt_tokens_total(&sim);
    for (backend, opts) in [
        ("openai-embeddings", &[][..]),
        ("rerank", &[][..]),
        ("rerank", &["api=tei"][..]),
        ("rerank", &["api=score", "documents=3"][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = args_for(dir.path(), backend, opts, true);
        args.base_url = Some(sim.base_url());
        args.model = Some("llmb-sim".into());
        // Only the measured requests reach the simulator, so its counter is theirs.
        args.no_preflight = true;
        let outcome = bench(&args).await;
        assert_eq!(outcome.metrics.completed, 6, "{backend} {opts:?}");
        let after = prompt_tokens_total(&sim);
        let client: u64 = outcome
            .records
            .iter()
            .map(|r| u64::from(r.prompt_tokens))
            .sum();
        assert_eq!(client, after - before, "{backend} {opts:?}");
        before = after;
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_fail_requests_with_the_servers_message() {
    let sim = start_sim(SimConfig {
        api_key: Some("k3y".into()),
        ttft_ms: 2.0,
        ..SimConfig::default()
    })
    .await;
    let error = |outcome: &BenchOutcome, k: usize| {
        let e = outcome.records[k].error.as_ref().expect("an error");
        (e.kind.clone(), e.message.clone(), e.http_status)
    };
    for (backend, opts) in [
        ("openai-embeddings", &[][..]),
        ("rerank", &[][..]),
        ("rerank", &["api=score"][..]),
        ("rerank", &["api=tei"][..]),
    ] {
        let what = format!("{backend} {opts:?}");
        let dir = tempfile::tempdir().unwrap();
        let mut args = args_for(dir.path(), backend, opts, true);
        args.base_url = Some(sim.base_url());
        args.model = Some("llmb-sim".into());
        args.no_preflight = true;
        args.num_prompts = 2;
        args.api_key = Some("k3y".into());
        assert_eq!(bench(&args).await.metrics.completed, 2, "{what}");

        args.api_key = Some("wrong".into());
        let outcome = bench(&args).await;
        assert_eq!(outcome.metrics.failed, 2, "{what}");
        for k in 0..2 {
            assert_eq!(
                error(&outcome, k),
                ("unauthorized".into(), "Unauthorized".into(), Some(401)),
                "{what}"
            );
        }
        args.api_key = Some("k3y".into());

        // A model the server does not serve fails every request (TEI's body names none).
        if !opts.contains(&"api=tei") {
            args.model = Some("nope".into());
            let outcome = bench(&args).await;
            assert_eq!(outcome.metrics.failed, 2, "{what}");
            for k in 0..2 {
                assert_eq!(
                    error(&outcome, k),
                    (
                        "not-found".into(),
                        "The model `nope` does not exist.".into(),
                        Some(404)
                    ),
                    "{what}"
                );
            }
            args.model = Some("llmb-sim".into());
        }

        // A server error, and a 200 whose body is not JSON, streaming and not.
        let path = custom_dataset(
            dir.path(),
            &[
                "a fine prompt of words",
                "please __sim_fault:http500__",
                "please __sim_fault:malformed__",
            ],
        );
        args.dataset_name = "custom".into();
        args.dataset_path = Some(path);
        args.disable_shuffle = true;
        args.num_prompts = 3;
        for stream in [true, false] {
            args.no_stream = !stream;
            let mut outcome = bench(&args).await;
            outcome.records.sort_by_key(|r| r.sample);
            assert!(
                outcome.records[0].success,
                "{what}: {:?}",
                error(&outcome, 0)
            );
            let (kind, message, status) = error(&outcome, 1);
            assert_eq!(
                (kind.as_str(), status),
                ("server", Some(500)),
                "{what} stream={stream}"
            );
            assert!(
                message.contains("simulated internal error"),
                "{what}: {message}"
            );
            let (kind, message, status) = error(&outcome, 2);
            assert_eq!(
                (kind.as_str(), status),
                ("protocol", None),
                "{what} stream={stream}"
            );
            assert!(message.contains("is not JSON"), "{what}: {message}");
        }
    }
    sim.shutdown().await;
}
