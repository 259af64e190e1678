//! What real servers do between requests, against the simulator taught their behaviour:
//! idle closes announced with `Keep-Alive`, a request limit per connection, `Connection: close`
//! on every response, and a connection closed just as the client reuses it. Every one of them
//! must give 0 failed requests. Also: warmups run before the measured phase, the pre-flight
//! request stops a run the server cannot serve, and llama.cpp's tokenize dialect.

mod common;

use std::time::Duration;

use common::*;
use llmb_sim::{ConnectionPolicy, SimConfig, SimHandle};

async fn sim_with(connections: ConnectionPolicy, dialect: Option<&str>) -> SimHandle {
    let config = SimConfig {
        ttft_ms: 5.0,
        itl_ms: 1.0,
        connections,
        dialect: dialect.map(str::to_owned),
        ..Default::default()
    };
    llmb_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Requests about every `gap`, one at a time, so each finds the previous one's connection idle.
fn spaced_args(
    dir: &std::path::Path,
    sim: &SimHandle,
    gap: Duration,
    n: usize,
) -> llmb::args::BenchArgs {
    let mut args = quick_args(dir);
    args.base_url = Some(sim.base_url());
    args.model = Some("llmb-sim".into());
    args.num_prompts = n;
    args.max_concurrency = Some(1);
    args.request_rate = vec![1.0 / gap.as_secs_f64()];
    // Gamma shape 1000: nearly regular gaps.
    args.burstiness = 1000.0;
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_idle_close_and_request_limit_give_no_failures() {
    let sim = sim_with(
        ConnectionPolicy {
            keep_alive_timeout: Some(Duration::from_secs(1)),
            keep_alive_max: Some(3),
            ..Default::default()
        },
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Gaps of 0.8 s: longer than the 0.5 s the client keeps a connection the server announced
    // to keep for 1 s, shorter than the server's own 1 s.
    let mut args = spaced_args(dir.path(), &sim, Duration::from_millis(800), 5);
    args.pool_idle_timeout = 30.0;
    let slow = bench(&args).await;
    assert_eq!(slow.metrics.failed, 0, "{:?}", slow.metrics.errors_by_kind);
    assert_eq!(slow.metrics.connection_retries, 0);

    // Back to back: the server closes after its third request on a connection.
    args.request_rate = vec![f64::INFINITY];
    args.num_prompts = 12;
    args.result_filename = Some("fast.json".into());
    let fast = bench(&args).await;
    assert_eq!(fast.metrics.completed, 12);
    assert_eq!(fast.metrics.failed, 0, "{:?}", fast.metrics.errors_by_kind);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_on_every_response_gives_no_failures() {
    let sim = sim_with(
        ConnectionPolicy {
            close_every_response: true,
            ..Default::default()
        },
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.base_url = Some(sim.base_url());
    args.model = Some("llmb-sim".into());
    args.num_prompts = 16;
    args.max_concurrency = Some(4);
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.completed, 16);
    assert_eq!(outcome.metrics.failed, 0);
    assert_eq!(outcome.metrics.connection_retries, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_on_a_reused_connection_is_retried_once_on_a_fresh_one() {
    // The server drops, unanswered, any request on a connection idle for more than 0.3 s (and
    // does not announce it); the client keeps idle connections 30 s, so every reuse meets it.
    let sim = sim_with(
        ConnectionPolicy {
            drop_stale_after: Some(Duration::from_millis(300)),
            ..Default::default()
        },
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = spaced_args(dir.path(), &sim, Duration::from_millis(600), 5);
    args.pool_idle_timeout = 30.0;
    let outcome = bench(&args).await;
    assert_eq!(
        outcome.metrics.failed, 0,
        "{:?}",
        outcome.metrics.errors_by_kind
    );
    assert!(
        outcome.metrics.connection_retries >= 3,
        "retries {}",
        outcome.metrics.connection_retries
    );
    let retried: Vec<_> = outcome.records.iter().filter(|r| r.retried).collect();
    assert_eq!(retried.len(), outcome.metrics.connection_retries);
    for r in retried {
        // Times count from the first attempt: the send time is not later than the dispatch
        // plus a moment, and the request still succeeded.
        assert!(r.success);
        assert!(r.sent_ns >= r.dispatched_ns && r.sent_ns - r.dispatched_ns < 50_000_000);
    }
    let mut out = Vec::new();
    llmb_report::console::print_console(
        &outcome.info,
        &outcome.metrics,
        &outcome.metrics_config,
        &mut out,
    )
    .unwrap();
    let report = String::from_utf8(out).unwrap();
    assert!(
        report.contains("Requests retried on a fresh connection:"),
        "{report}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmups_finish_before_the_measured_phase_and_stay_out_of_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 6;
    args.max_concurrency = Some(1);
    args.sim.ttft_ms = 40.0;
    args.num_warmups = 6;
    let outcome = bench(&args).await;
    let m = &outcome.metrics;
    assert_eq!(m.completed, 6);
    assert_eq!(m.warmups, 6);
    let warm_end = outcome
        .records
        .iter()
        .filter(|r| r.warmup)
        .map(|r| r.end_ns)
        .max()
        .unwrap();
    let first_measured = outcome
        .records
        .iter()
        .filter(|r| !r.warmup)
        .map(|r| r.sent_ns)
        .min()
        .unwrap();
    assert!(
        warm_end <= first_measured,
        "a warmup ended at {warm_end} ns, after the first measured request went at {first_measured} ns"
    );
    // The duration covers the measured requests only: from the end of the warmups (at most)
    // to the last measured completion.
    let last_end = outcome.records.iter().map(|r| r.end_ns).max().unwrap();
    let measured_span = (last_end - warm_end) as f64 / 1e9;
    assert!(
        m.duration_s <= measured_span + 0.05,
        "duration {} s, measured requests spanned {measured_span} s",
        m.duration_s
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_server_does_not_serve_stops_the_run_before_it_starts() {
    let sim = sim_with(ConnectionPolicy::default(), None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.base_url = Some(sim.base_url());
    args.model = Some("no-such-model".into());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = llmb::bench::run(&args, rx)
        .await
        .err()
        .expect("the run must stop");
    let text = format!("{err:#}");
    assert!(text.contains("pre-flight"), "{text}");
    assert!(text.contains("HTTP 404"), "{text}");
    assert!(text.contains("llmb-sim"), "names the served model: {text}");
    // Nothing but the pre-flight request reached the generation routes.
    // The /v1/models lookup, the pre-flight request and the lookup naming the served models.
    assert_eq!(sim.requests_served(), 3);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_cpp_tokenize_dialect_is_spoken_and_a_zero_count_is_never_used() {
    // The simulator in llama.cpp's dialect: /tokenize reads only `content`, answers
    // `{"tokens": []}` to vLLM's body, and /v1/models says owned_by "llamacpp".
    let sim = sim_with(ConnectionPolicy::default(), Some("llama.cpp")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.base_url = Some(sim.base_url());
    args.model = Some("llmb-sim".into());
    args.backend = "openai".into();
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.failed, 0);
    match &outcome.info.input_counts {
        llmb_engine::input_tokens::InputCountSource::ServerFitted {
            route,
            prompts,
            exact,
            ..
        } => {
            assert_eq!(route, "POST /tokenize");
            assert_eq!((prompts, exact), (&8, &8));
        }
        other => panic!("expected the server's counts, got {other:?}"),
    }
    for r in &outcome.records {
        assert!(r.prompt_tokens > 0);
        assert_eq!(Some(r.prompt_tokens), r.server_prompt_tokens, "{r:?}");
    }

    // Forcing vLLM's body on llama.cpp gets 0 counts: they are refused, not used.
    args.plugin_opts = vec!["server=vllm".into()];
    args.result_filename = Some("forced.json".into());
    let forced = bench(&args).await;
    match &forced.info.input_counts {
        llmb_engine::input_tokens::InputCountSource::Estimate { reason } => {
            assert!(reason.contains("answered 0 tokens"), "{reason}")
        }
        other => panic!("a zero count was used: {other:?}"),
    }
    assert!(forced.records.iter().all(|r| r.prompt_tokens > 0));

    // Chat on llama.cpp has no one-request tokenize form for messages: the plain prompt's
    // content is fitted alone, and the template the server adds stays apart (the simulator's
    // ChatML-like template: 5 tokens per message + 3).
    args.plugin_opts.clear();
    args.backend = "openai-chat".into();
    args.result_filename = Some("chat.json".into());
    let chat = bench(&args).await;
    assert!(
        matches!(
            chat.info.input_counts,
            llmb_engine::input_tokens::InputCountSource::ServerFitted { exact: 8, .. }
        ),
        "{:?}",
        chat.info.input_counts
    );
    for r in &chat.records {
        assert_eq!(r.prompt_tokens, 16);
        assert_eq!(r.server_prompt_tokens, Some(16 + 8));
    }
    assert_eq!(chat.metrics.failed, 0);
    sim.shutdown().await;
}

/// By default the run's connections are open before timing: no measured request pays a
/// connect, and the report says how many were opened. `--no-warm-connections` puts the connect
/// back into the first wave's requests, timed in their records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_opened_before_timing_unless_asked_not_to() {
    let config = SimConfig {
        ttft_ms: 5.0,
        itl_ms: 1.0,
        // No tokenize requests before the run, whose connections would be reused.
        tokenize_route: false,
        ..Default::default()
    };
    let sim = llmb_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.base_url = Some(sim.base_url());
    args.model = Some("llmb-sim".into());
    args.max_concurrency = Some(4);
    args.no_preflight = true;

    let warm = bench(&args).await;
    let phases = &warm.metrics.http_phases;
    assert_eq!(warm.metrics.failed, 0);
    assert_eq!(phases.connections_warmed, Some(4));
    assert_eq!(phases.new_connections, 0, "{phases:?}");
    for r in &warm.records {
        assert_eq!(r.connect_duration_ns, None, "{r:?}");
        let written = r.written_ns.expect("written_ns");
        assert!(written >= r.sent_ns, "{r:?}");
        assert!(r.first_byte_ns.is_some_and(|f| f >= written), "{r:?}");
        assert!(r.delta_ns[0] >= written, "{r:?}");
        // A read waits in the socket at most from the request written to the response's end.
        if let Some(w) = r.read_wait_max_ns {
            assert!(w <= r.end_ns - written, "{r:?}");
        }
    }
    assert_eq!(phases.write.count, 8);
    assert_eq!(phases.wait.count, 8);
    let stamped = warm
        .records
        .iter()
        .filter(|r| r.read_wait_max_ns.is_some())
        .count();
    assert_eq!(phases.read_wait.count, stamped);
    // The run lasts until its last response ended (no warmup: measured from the start), not
    // until the record collector, which takes records in batches, woke to see it.
    let last_end = warm.records.iter().map(|r| r.end_ns).max().unwrap();
    assert_eq!(
        (warm.metrics.duration_s * 1e9).round() as u64,
        last_end,
        "duration {} s",
        warm.metrics.duration_s
    );
    // Kernel receive stamps (Linux) give each request its longest read wait.
    if cfg!(target_os = "linux") {
        assert!(stamped > 0, "no record carries a read wait");
    }

    args.no_warm_connections = true;
    let cold = bench(&args).await;
    let phases = &cold.metrics.http_phases;
    assert_eq!(cold.metrics.failed, 0);
    assert_eq!(phases.connections_warmed, None);
    // The first wave opens what it needs (the model listing may have left one idle).
    assert!(phases.new_connections >= 3, "{phases:?}");
    assert_eq!(phases.connect.count, phases.new_connections);
    let connected = cold
        .records
        .iter()
        .filter(|r| r.connect_duration_ns.is_some_and(|ns| ns > 0))
        .count();
    assert_eq!(connected, phases.new_connections);
    // The per-request CSV carries the phases too: a connect time on each request that opened.
    let csv = cold.records_path.as_ref().unwrap().with_extension("csv");
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let column = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "connect_ms")
        .expect("a connect_ms column");
    let with_connect = reader
        .records()
        .filter(|row| !row.as_ref().unwrap()[column].is_empty())
        .count();
    assert_eq!(with_connect, phases.new_connections);
    sim.shutdown().await;
}
