//! Metric definitions on hand-built timelines, checked against the values `vllm bench serve`
//! (vllm/benchmarks/serve.py, `calculate_metrics`) computes for the same timelines, worked out
//! by hand in the comments. No server is involved.

use llmb_engine::metrics::{MetricsConfig, compute, percentile};
use llmb_engine::outcome::RunInfo;
use llmb_engine::records::{RequestError, RequestRecord, TokenSource};
use llmb_report::console::{
    default_result_filename, print_console, result_json, result_json_at, timestamp,
};
use serde_json::json;

const MS: u64 = 1_000_000;

fn assert_close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "expected {expected}, got {actual}"
    );
}

/// A successful streamed request sent at `sent_ms` whose delta frames arrived at `deltas_ms`;
/// the body ends 5 ms after the last frame (the usage chunk and `[DONE]`).
fn ok(id: u64, sent_ms: u64, deltas_ms: &[u64], output_tokens: u32) -> RequestRecord {
    RequestRecord {
        id,
        scheduled_ns: sent_ms * MS,
        dispatched_ns: sent_ms * MS,
        sent_ns: sent_ms * MS,
        delta_ns: deltas_ms.iter().map(|t| t * MS).collect(),
        end_ns: deltas_ms.last().copied().unwrap_or(sent_ms) * MS + 5 * MS,
        prompt_tokens: 10,
        requested_output_tokens: output_tokens,
        output_tokens,
        token_source: Some(TokenSource::Usage),
        success: true,
        generated_text: "x".repeat(output_tokens as usize),
        ..Default::default()
    }
}

/// A request that failed with HTTP 500 after streaming two frames.
fn failed(id: u64) -> RequestRecord {
    RequestRecord {
        id,
        delta_ns: vec![5 * MS, 500 * MS],
        end_ns: 600 * MS,
        prompt_tokens: 10,
        output_tokens: 2,
        generated_text: "partial".into(),
        error: Some(RequestError {
            kind: "http".into(),
            message: "boom".into(),
            http_status: Some(500),
        }),
        ..Default::default()
    }
}

fn all_metrics() -> MetricsConfig {
    MetricsConfig {
        percentile_metrics: vec!["ttft".into(), "tpot".into(), "itl".into(), "e2el".into()],
        metric_percentiles: vec![50.0, 99.0],
        goodput_slos_ms: Vec::new(),
        slice_duration_s: None,
    }
}

fn run_info() -> RunInfo {
    RunInfo {
        plugins: Vec::new(),
        shard: None,
        plan_digest: String::new(),
        start: None,
        timing: None,
        backend: "vllm".into(),
        endpoint_type: "vllm".into(),
        label: None,
        model_id: "meta-llama/Llama-3.1-8B".into(),
        tokenizer_id: "meta-llama/Llama-3.1-8B".into(),
        input_counts: llmb_engine::input_tokens::InputCountSource::Tokenizer {
            id: "meta-llama/Llama-3.1-8B".into(),
        },
        base_url: "http://127.0.0.1:8000".into(),
        endpoint: "/v1/completions".into(),
        dataset_name: "random".into(),
        num_prompts: 3,
        request_rate: f64::INFINITY,
        burstiness: 1.0,
        max_concurrency: Some(16),
        output_len_forced: true,
        output_len_forceable: true,
        interrupted: false,
        pattern: Default::default(),
    }
}

fn console(info: &RunInfo, records: &[RequestRecord], cfg: &MetricsConfig) -> String {
    let m = compute(records, 1.0, cfg);
    let mut out = Vec::new();
    print_console(info, &m, cfg, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn a_role_only_first_chunk_is_the_first_token() {
    // Chat: the role-only chunk at 100 ms is the first frame with a delta; content at 110,
    // 120, 130 ms; usage says 3 tokens.
    // TTFT = 100; ITLs = [10, 10, 10]; E2EL = 130; TPOT = (130 − 100) / (3 − 1) = 15.
    let m = compute(&[ok(0, 0, &[100, 110, 120, 130], 3)], 1.0, &all_metrics());
    assert_eq!(m.ttft.count, 1);
    assert_close(m.ttft.mean, 100.0);
    assert_eq!(m.itl.count, 3);
    assert_close(m.itl.mean, 10.0);
    assert_close(m.itl.std, 0.0);
    assert_close(m.e2el.mean, 130.0);
    assert_eq!(m.tpot.count, 1);
    assert_close(m.tpot.mean, 15.0);
}

#[test]
fn a_multi_token_chunk_is_one_itl_sample_and_tpot_uses_the_token_count() {
    // 5 frames at 50, 60, 70, 100, 110 ms, the fourth carrying 4 tokens: 8 tokens in all.
    // ITLs = [10, 10, 30, 10] (frames − 1 = 4 samples), mean 15;
    // TPOT = (110 − 50) / (8 − 1) = 60 / 7.
    let m = compute(&[ok(0, 0, &[50, 60, 70, 100, 110], 8)], 1.0, &all_metrics());
    assert_eq!(m.itl.count, 4);
    assert_close(m.itl.mean, 15.0);
    assert_close(m.tpot.mean, 60.0 / 7.0);
    assert_eq!(m.total_output, 8);
}

#[test]
fn a_usage_only_last_chunk_does_not_extend_latency() {
    // The usage chunk and [DONE] arrive at 135 ms but carry no delta: E2EL ends at the last
    // delta frame, 130 ms.
    let mut r = ok(0, 0, &[100, 110, 120, 130], 3);
    r.end_ns = 135 * MS;
    let m = compute(&[r], 1.0, &all_metrics());
    assert_close(m.e2el.mean, 130.0);
    assert_close(m.tpot.mean, 15.0);
}

#[test]
fn a_one_token_output_has_no_tpot_but_counts_as_zero_tpot_for_goodput() {
    // One frame at 40 ms, 1 token: TTFT = E2EL = 40, no TPOT or ITL sample.
    let mut cfg = all_metrics();
    cfg.goodput_slos_ms = vec![("ttft".into(), 50.0), ("tpot".into(), 1.0)];
    let m = compute(&[ok(0, 0, &[40], 1)], 2.0, &cfg);
    assert_eq!(m.tpot.count, 0);
    assert_close(m.tpot.mean, 0.0);
    assert_eq!(m.tpot.percentiles, vec![(50.0, 0.0), (99.0, 0.0)]);
    assert_eq!(m.itl.count, 0);
    assert_close(m.ttft.mean, 40.0);
    assert_close(m.e2el.mean, 40.0);
    // TPOT counts as 0 ≤ 1 ms and TTFT 40 ≤ 50 ms: good; goodput = 1 / 2 s.
    assert_close(m.request_goodput.unwrap(), 0.5);

    cfg.goodput_slos_ms = vec![("ttft".into(), 30.0)];
    let m = compute(&[ok(0, 0, &[40], 1)], 2.0, &cfg);
    assert_close(m.request_goodput.unwrap(), 0.0);
    assert_eq!(
        compute(&[ok(0, 0, &[40], 1)], 2.0, &all_metrics()).request_goodput,
        None
    );
}

#[test]
fn goodput_needs_every_slo_and_accepts_equality() {
    // A: TTFT 100, E2EL 130, TPOT 15. B: TTFT 50, E2EL 300, TPOT (300 − 50) / 4 = 62.5.
    let records = vec![
        ok(0, 0, &[100, 110, 120, 130], 3),
        ok(1, 0, &[50, 100, 150, 200, 300], 5),
    ];
    let mut cfg = all_metrics();
    // A: 100 ≤ 100 and 15 ≤ 62.5 → good. B: 50 ≤ 100 and 62.5 ≤ 62.5 → good.
    cfg.goodput_slos_ms = vec![("ttft".into(), 100.0), ("tpot".into(), 62.5)];
    assert_close(compute(&records, 4.0, &cfg).request_goodput.unwrap(), 0.5);
    // E2EL ≤ 200: only A.
    cfg.goodput_slos_ms = vec![("ttft".into(), 100.0), ("e2el".into(), 200.0)];
    assert_close(compute(&records, 4.0, &cfg).request_goodput.unwrap(), 0.25);
}

#[test]
fn a_request_that_did_not_stream_has_no_ttft_sample() {
    // Non-streamed success: sent at 200 ms, body ends at 300 ms, 5 tokens, no delta frames.
    // E2EL = 100; vLLM's TTFT defaults to 0, so TPOT = (100 − 0) / 4 = 25 and its single
    // "token" lands at the send time. llmb leaves it out of the TTFT stats.
    let r = RequestRecord {
        id: 0,
        scheduled_ns: 200 * MS,
        dispatched_ns: 200 * MS,
        sent_ns: 200 * MS,
        end_ns: 300 * MS,
        prompt_tokens: 10,
        output_tokens: 5,
        token_source: Some(TokenSource::Tokenizer),
        success: true,
        ..Default::default()
    };
    let mut cfg = all_metrics();
    cfg.goodput_slos_ms = vec![("ttft".into(), 1.0)];
    let m = compute(&[r], 1.0, &cfg);
    assert_eq!(m.ttft.count, 0);
    assert_close(m.ttft.mean, 0.0);
    assert_close(m.e2el.mean, 100.0);
    assert_close(m.tpot.mean, 25.0);
    assert_eq!(m.itl.count, 0);
    assert_close(m.max_output_tokens_per_s, 1.0);
    assert_eq!(m.max_concurrent_requests, 1);
    assert_close(m.request_goodput.unwrap(), 1.0);
    assert_eq!(m.token_sources.get(&TokenSource::Tokenizer), Some(&1));
}

#[test]
fn failed_requests_are_counted_but_excluded_from_every_statistic() {
    // The failures streamed frames at 5 and 500 ms: counted, their ITL of 495 ms must not be.
    let records = vec![ok(0, 0, &[100, 110, 120], 3), failed(1), failed(2)];
    let m = compute(&records, 2.0, &all_metrics());
    assert_eq!((m.completed, m.failed), (1, 2));
    assert_eq!(m.errors_by_kind.get("http"), Some(&2));
    assert_eq!(m.ttft.count, 1);
    assert_eq!(m.itl.count, 2);
    assert_close(m.itl.percentiles[1].1, 10.0);
    assert_eq!(m.e2el.count, 1);
    assert_eq!(m.total_input, 10);
    assert_eq!(m.total_output, 3);
    assert_eq!(m.token_sources.get(&TokenSource::Usage), Some(&1));
    assert_eq!(m.max_concurrent_requests, 1);

    let detailed = result_json(&run_info(), &m, &all_metrics(), &records, true);
    assert_eq!(detailed["output_lens"], json!([3, 0, 0]));
    assert_eq!(detailed["input_lens"], json!([10, 10, 10]));
    assert_eq!(detailed["ttfts"][1], json!(0.0));
    assert_eq!(detailed["itls"][1], json!([]));
    assert_eq!(detailed["errors"], json!(["", "boom", "boom"]));
    assert_eq!(detailed["completed"], json!(1));
    assert_eq!(detailed["failed"], json!(2));
    assert_eq!(detailed["llmb"]["errors_by_kind"], json!({"http": 2}));
}

#[test]
fn throughputs_divide_by_the_run_duration() {
    // Two successes over 2 s: inputs 10 + 12 (the server's count wins), outputs 3 + 2.
    // req/s = 2 / 2 = 1; output tok/s = 5 / 2 = 2.5; total tok/s = (22 + 5) / 2 = 13.5.
    let mut b = ok(1, 0, &[20, 30], 2);
    b.server_prompt_tokens = Some(12);
    let records = vec![ok(0, 0, &[100, 110, 120], 3), b];
    let m = compute(&records, 2.0, &all_metrics());
    assert_eq!(m.total_input, 22);
    assert_eq!(m.total_output, 5);
    assert_close(m.duration_s, 2.0);
    assert_close(m.request_throughput, 1.0);
    assert_close(m.output_throughput, 2.5);
    assert_close(m.total_token_throughput, 13.5);
}

#[test]
fn no_records_and_zero_duration_give_zeros() {
    let m = compute(&[], 0.0, &all_metrics());
    assert_eq!((m.completed, m.failed), (0, 0));
    assert_close(m.request_throughput, 0.0);
    assert_close(m.total_token_throughput, 0.0);
    assert_close(m.max_output_tokens_per_s, 0.0);
    assert_eq!(m.max_concurrent_requests, 0);
    for s in [&m.ttft, &m.tpot, &m.itl, &m.e2el, &m.queue] {
        assert_eq!(s.count, 0);
        assert_eq!((s.mean, s.median, s.std), (0.0, 0.0, 0.0));
        assert_eq!(s.percentiles, vec![(50.0, 0.0), (99.0, 0.0)]);
    }
}

#[test]
fn percentiles_follow_numpy_linear_and_std_is_the_population_std() {
    // np.percentile([1, 2, 3, 4], 99): index 3 × 0.99 = 2.97 → 3 + 0.97 × (4 − 3) = 3.97.
    let v = [1.0, 2.0, 3.0, 4.0];
    assert_close(percentile(&v, 99.0), 3.97);
    assert_close(percentile(&v, 50.0), 2.5);
    assert_close(percentile(&v, 25.0), 1.75);
    assert_close(percentile(&v, 0.0), 1.0);
    assert_close(percentile(&v, 100.0), 4.0);
    assert_close(percentile(&[7.0], 99.0), 7.0);
    assert_close(percentile(&[], 99.0), 0.0);

    // TTFTs 10, 20, 30, 40 ms: mean 25, median 25, population std
    // sqrt((15² + 5² + 5² + 15²) / 4) = sqrt(125), P99 = 30 + 0.97 × 10 = 39.7.
    let records: Vec<_> = (1..=4u64)
        .map(|i| ok(i, 0, &[i * 10, i * 10 + 1], 2))
        .collect();
    let m = compute(&records, 1.0, &all_metrics());
    assert_close(m.ttft.mean, 25.0);
    assert_close(m.ttft.median, 25.0);
    assert_close(m.ttft.std, 125f64.sqrt());
    assert_close(m.ttft.percentiles[0].1, 25.0);
    assert_close(m.ttft.percentiles[1].1, 39.7);
    assert_eq!(m.ttft.at(99.0), Some(m.ttft.percentiles[1].1));
}

#[test]
fn peak_tokens_per_second_and_peak_concurrency_follow_vllm() {
    // A: sent 0 s, frames at 0.5, 0.6, 1.2 s (ends 1.2).
    // B: sent 0.9 s, frames at 1.1, 1.3, 1.4, 2.5 s (ends 2.5).
    // C: sent 1.2 s (as A ends), frames at 1.5, 1.6 s (ends 1.6).
    // Buckets from the first send, ceil(2.5 − 0) + 1 = 4 of them:
    //   [0] A 0.5, 0.6 → 2; [1] A 1.2, B 1.1 1.3 1.4, C 1.5 1.6 → 6; [2] B 2.5 → 1 → peak 6.
    // Concurrency over [send, end): 0 → 1, 0.9 → 2, 1.2 A leaves → 1 then C joins → 2,
    //   1.6 → 1, 2.5 → 0 → peak 2 (per-second buckets would have said 3 in second 1).
    let a = ok(0, 0, &[500, 600, 1200], 3);
    let b = ok(1, 900, &[1100, 1300, 1400, 2500], 4);
    let c = ok(2, 1200, &[1500, 1600], 2);
    let m = compute(&[a, b, c], 3.0, &all_metrics());
    assert_close(m.max_output_tokens_per_s, 6.0);
    assert_eq!(m.max_concurrent_requests, 2);
}

#[test]
fn queue_time_and_schedule_lag_are_kept_apart_from_latency() {
    // A: scheduled 0, got a slot at 30 ms, sent at 31 ms → queue 30, lag 1; latencies from 31.
    // B: scheduled, dispatched and sent at 10 ms → queue 0, lag 0.
    // C: cancelled while waiting for a slot: never dispatched, no queue or lag sample.
    let mut a = ok(0, 31, &[131, 141], 2);
    a.scheduled_ns = 0;
    a.dispatched_ns = 30 * MS;
    let b = ok(1, 10, &[60, 70], 2);
    let c = RequestRecord {
        id: 2,
        end_ns: 200 * MS,
        error: Some(RequestError {
            kind: "cancelled".into(),
            message: "cut off after Ctrl-C".into(),
            http_status: None,
        }),
        ..Default::default()
    };
    let m = compute(&[a, b, c], 1.0, &all_metrics());
    assert_eq!(m.queue.count, 2);
    assert_close(m.queue.mean, 15.0);
    assert_close(m.schedule_lag.max_ms, 1.0);
    assert_close(m.schedule_lag.mean_ms, 0.5);
    // TTFTs 100 and 50 ms, measured from the send.
    assert_close(m.ttft.mean, 75.0);
    assert_eq!(m.errors_by_kind.get("cancelled"), Some(&1));
}

#[test]
fn the_console_uses_vllm_layout() {
    // A: TTFT 100, ITLs 10 10, E2EL 120. B: sent 5, TTFT 85, ITL 5, E2EL 90.
    // Mean TTFT 92.5; P99 TTFT = 85 + 0.99 × 15 = 99.85; P99.9 E2EL = 90 + 0.999 × 30 = 119.97.
    let records = vec![ok(0, 0, &[100, 110, 120], 3), ok(1, 5, &[90, 95], 2)];
    let text = console(&run_info(), &records, &MetricsConfig::default());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "============ Serving Benchmark Result ============"
    );
    assert_eq!(lines[0].len(), 50);
    for expected in [
        "Successful requests:                     2         ",
        "Failed requests:                         0         ",
        "Maximum request concurrency:             16        ",
        "Request rate configured (RPS):           inf       ",
        "Benchmark duration (s):                  1.00      ",
        "Total input tokens:                      20        ",
        "Total generated tokens:                  5         ",
        "Request throughput (req/s):              2.00      ",
        "Peak concurrent requests:                2.00      ",
        "---------------Time to First Token----------------",
        "Mean TTFT (ms):                          92.50     ",
        "P99 TTFT (ms):                           99.85     ",
        "-----Time per Output Token (excl. 1st token)------",
        "---------------Inter-token Latency----------------",
        "==================================================",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
    }
    assert!(
        !text.contains("End-to-end Latency"),
        "e2el is not in the default percentile metrics"
    );
    assert!(!text.contains("Request goodput"));
    assert!(!text.contains("Interrupted"));
    assert!(!text.contains("NOT forced"));
    let closing = lines.iter().position(|l| *l == "=".repeat(50)).unwrap();
    assert!(
        lines[closing + 1..]
            .iter()
            .any(|l| l.starts_with("Client queue time (ms):"))
    );
    assert!(
        lines[closing + 1..]
            .iter()
            .any(|l| l.starts_with("Schedule lag (ms):"))
    );
    assert!(lines[closing + 1..].iter().any(|l| {
        l.starts_with("Output token counts from:")
            && l.contains("server usage (completion_tokens) (2)")
    }));

    let mut info = run_info();
    info.request_rate = 10.0;
    info.max_concurrency = None;
    info.output_len_forced = false;
    info.output_len_forceable = false;
    info.interrupted = true;
    let cfg = MetricsConfig {
        percentile_metrics: vec!["e2el".into()],
        metric_percentiles: vec![99.9],
        goodput_slos_ms: vec![("e2el".into(), 200.0)],
        slice_duration_s: None,
    };
    let text = console(&info, &records, &cfg);
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        "Request rate configured (RPS):           10.00     ",
        "Request goodput (req/s):                 2.00      ",
        "----------------End-to-end Latency----------------",
        "P99.9 E2EL (ms):                         119.97    ",
        "Output lengths were NOT forced: this adapter cannot make the server ignore EOS",
        "Interrupted: partial results",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("Maximum request concurrency"));
    assert!(!text.contains("Time to First Token"));
}

#[test]
fn the_result_json_uses_vllm_keys() {
    // ITLs 10, 10, 5 → median 10. E2ELs 120, 90 → population std 15.
    let records = vec![ok(0, 0, &[100, 110, 120], 3), ok(1, 5, &[90, 95], 2)];
    let cfg = MetricsConfig::default();
    let m = compute(&records, 1.0, &cfg);
    let plain = result_json_at(&run_info(), &m, &cfg, &records, false, 1_700_000_000);
    for key in [
        "date",
        "endpoint_type",
        "backend",
        "label",
        "model_id",
        "tokenizer_id",
        "num_prompts",
        "request_rate",
        "burstiness",
        "max_concurrency",
        "duration",
        "completed",
        "failed",
        "total_input_tokens",
        "total_output_tokens",
        "request_throughput",
        "request_goodput",
        "output_throughput",
        "total_token_throughput",
        "max_output_tokens_per_s",
        "max_concurrent_requests",
        "p99_ttft_ms",
        "mean_tpot_ms",
        "median_itl_ms",
        "std_e2el_ms",
        "p99_e2el_ms",
    ] {
        assert!(plain.get(key).is_some(), "missing {key}");
    }
    assert_eq!(plain["date"], "20231114-221320");
    assert_eq!(plain["request_rate"], "inf");
    assert_eq!(plain["max_concurrency"], 16);
    assert_eq!(plain["request_goodput"], serde_json::Value::Null);
    assert_eq!(plain["label"], serde_json::Value::Null);
    assert_close(plain["p99_ttft_ms"].as_f64().unwrap(), 99.85);
    assert_close(plain["median_itl_ms"].as_f64().unwrap(), 10.0);
    assert_close(plain["std_e2el_ms"].as_f64().unwrap(), 15.0);
    assert_eq!(plain["llmb"]["token_sources"], json!({"usage": 2}));
    assert_eq!(plain["llmb"]["endpoint"], "/v1/completions");
    for key in [
        "input_lens",
        "output_lens",
        "start_times",
        "ttfts",
        "itls",
        "generated_texts",
        "errors",
    ] {
        assert!(
            plain.get(key).is_none(),
            "{key} only belongs in detailed results"
        );
    }

    let detailed = result_json(&run_info(), &m, &cfg, &records, true);
    for key in [
        "ttfts",
        "itls",
        "generated_texts",
        "errors",
        "input_lens",
        "output_lens",
    ] {
        assert!(detailed.get(key).is_some(), "missing {key}");
    }
    assert_eq!(detailed["itls"][0].as_array().unwrap().len(), 2);
    assert_close(detailed["ttfts"][1].as_f64().unwrap(), 0.085);
    assert_eq!(detailed["generated_texts"], json!(["xxx", "xx"]));
    assert_eq!(detailed["errors"], json!(["", ""]));
}

#[test]
fn result_file_names_follow_vllm() {
    assert_eq!(
        default_result_filename(&run_info(), 0),
        "vllm-infqps-concurrency16-Llama-3.1-8B-19700101-000000.json"
    );
    let mut info = run_info();
    info.request_rate = 10.0;
    info.max_concurrency = None;
    assert_eq!(
        default_result_filename(&info, 0),
        "vllm-10.0qps-Llama-3.1-8B-19700101-000000.json"
    );
    info.label = Some("nightly".into());
    info.request_rate = 0.5;
    assert_eq!(
        default_result_filename(&info, 1_700_000_000),
        "nightly-0.5qps-Llama-3.1-8B-20231114-221320.json"
    );
    assert_eq!(timestamp(1_700_000_000), "20231114-221320");
    assert_eq!(timestamp(0), "19700101-000000");
}

#[test]
fn goodput_flags_are_validated() {
    let slos =
        MetricsConfig::parse_goodput(&["ttft:200".into(), "e2el:1000".into(), "ttft:150".into()])
            .unwrap();
    assert_eq!(
        slos,
        vec![("ttft".to_string(), 150.0), ("e2el".to_string(), 1000.0)]
    );
    let slos = MetricsConfig::parse_goodput(&["tpot:50 e2el:2000".into()]).unwrap();
    assert_eq!(slos.len(), 2);
    for bad in ["itl:5", "ttft=5", "ttft:-1", "ttft:abc", "ttft:1:2"] {
        let e = MetricsConfig::parse_goodput(&[bad.into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains(bad), "{e}");
    }
}

#[test]
fn default_config_matches_vllm() {
    let cfg = MetricsConfig::default();
    assert_eq!(cfg.percentile_metrics, ["ttft", "tpot", "itl"]);
    assert_eq!(cfg.metric_percentiles, [99.0]);
    assert!(cfg.goodput_slos_ms.is_empty());
}

#[test]
fn slos_count_good_requests_and_each_miss_including_the_longest_gap() {
    // A: ITLs 10, 10, 10 (longest 10), E2EL 130. B: ITLs 50, 50, 50, 100 (longest 100), E2EL 300.
    let records = vec![
        ok(0, 0, &[100, 110, 120, 130], 3),
        ok(1, 0, &[50, 100, 150, 200, 300], 5),
        failed(2),
    ];
    let mut cfg = all_metrics();
    cfg.goodput_slos_ms = vec![
        ("ttft".into(), 100.0),
        ("itl".into(), 50.0),
        ("e2el".into(), 200.0),
    ];
    let m = compute(&records, 4.0, &cfg);
    let slo = m.slo.as_ref().unwrap();
    assert_eq!(slo.good_requests, 1);
    assert_eq!(
        slo.misses,
        vec![("ttft".into(), 0), ("itl".into(), 1), ("e2el".into(), 1)]
    );
    assert_close(m.request_goodput.unwrap(), 0.25);
    assert!(compute(&records, 4.0, &all_metrics()).slo.is_none());

    let mut out = Vec::new();
    print_console(&run_info(), &m, &cfg, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("Good requests:                           1 of 2 successful (50.0 %)"),
        "{text}"
    );
    assert!(
        text.contains("Missed ITL SLO:                          1"),
        "{text}"
    );
    let saved = result_json(&run_info(), &m, &cfg, &records, false);
    assert_eq!(saved["llmb"]["slo"]["misses"]["e2el"], 1);
    assert_eq!(saved["llmb"]["slo"]["good_requests"], 1);
}

#[test]
fn every_metric_has_the_full_summary() {
    // TTFTs 100 and 50 ms: numpy's linear percentiles between them.
    let records = vec![
        ok(0, 0, &[100, 110, 120, 130], 3),
        ok(1, 0, &[50, 100, 150, 200, 300], 5),
    ];
    let m = compute(&records, 4.0, &all_metrics());
    let q = m.ttft.summary;
    for (got, want) in [
        (q.min, 50.0),
        (q.p50, 75.0),
        (q.p90, 95.0),
        (q.p95, 97.5),
        (q.p99, 99.5),
        (q.max, 100.0),
    ] {
        assert_close(got, want);
    }
    assert_close(m.ttft.std, 25.0);
    let saved = result_json(&run_info(), &m, &all_metrics(), &records, false);
    assert_eq!(saved["llmb"]["latency_stats_ms"]["ttft"]["p95"], 97.5);
    assert_eq!(saved["llmb"]["latency_stats_ms"]["e2el"]["max"], 300.0);
    let mut out = Vec::new();
    print_console(&run_info(), &m, &all_metrics(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(
            "TTFT       75.00     75.00     95.00     97.50     99.50     50.00    100.00     25.00"
        ),
        "{text}"
    );
}

#[test]
fn slo_files_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let top = write("top.toml", "e2el = 5000\nttft = 200\nitl = 40.5\n");
    assert_eq!(
        llmb_engine::metrics::parse_slo_file(&top).unwrap(),
        vec![
            ("ttft".to_string(), 200.0),
            ("itl".to_string(), 40.5),
            ("e2el".to_string(), 5000.0)
        ]
    );
    let table = write("table.toml", "[slo]\ntpot = 50\n");
    assert_eq!(
        llmb_engine::metrics::parse_slo_file(&table).unwrap(),
        vec![("tpot".to_string(), 50.0)]
    );
    for (name, text, expected) in [
        ("typo.toml", "ttfb = 200\n", "unknown key \"ttfb\""),
        (
            "text.toml",
            "ttft = \"200ms\"\n",
            "ttft must be a number of milliseconds, not a string",
        ),
        ("neg.toml", "tpot = -1\n", "tpot must be a non-negative"),
        ("bad.toml", "ttft = \n", "not valid TOML"),
        ("empty.toml", "", "no limits"),
    ] {
        let path = write(name, text);
        let err = llmb_engine::metrics::parse_slo_file(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(name) && err.contains(expected), "{err}");
    }
}
