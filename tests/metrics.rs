//! Metric definitions on hand-built timelines, checked against the values `vllm bench serve`
//! computes for the same timelines (worked out by hand in the comments).

use llmb::metrics::{MetricsConfig, compute, percentile};
use llmb::records::{RequestError, RequestRecord, TokenSource};
use llmb::report::{RunInfo, default_result_filename, print_console, result_json, timestamp};

const MS: u64 = 1_000_000;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// A successful streamed request sent at `sent_ms` whose delta frames arrived at `deltas_ms`.
fn ok(id: u64, sent_ms: u64, deltas_ms: &[u64], output_tokens: u32) -> RequestRecord {
    RequestRecord {
        id,
        sent_ns: sent_ms * MS,
        dispatched_ns: sent_ms * MS,
        scheduled_ns: sent_ms * MS,
        delta_ns: deltas_ms.iter().map(|t| t * MS).collect(),
        end_ns: deltas_ms.last().copied().unwrap_or(sent_ms) * MS + 5 * MS,
        prompt_tokens: 10,
        output_tokens,
        token_source: Some(TokenSource::Usage),
        success: true,
        generated_text: "x".repeat(output_tokens as usize),
        ..Default::default()
    }
}

fn failed(id: u64) -> RequestRecord {
    RequestRecord {
        id,
        sent_ns: 0,
        end_ns: 50 * MS,
        prompt_tokens: 10,
        error: Some(RequestError {
            kind: "server".into(),
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
    }
}

#[test]
fn role_only_first_chunk_counts_for_ttft() {
    // Chat: the role chunk at 100 ms is the first frame with a choice; content at 110/120/130.
    let r = ok(0, 0, &[100, 110, 120, 130], 3);
    let m = compute(&[r], 1.0, &all_metrics());
    assert!(close(m.ttft.mean, 100.0));
    assert_eq!(m.itl.count, 3);
    assert!(close(m.itl.mean, 10.0));
    assert!(close(m.e2el.mean, 130.0));
    // TPOT = (130 − 100) / (3 − 1) = 15 ms
    assert!(close(m.tpot.mean, 15.0));
}

#[test]
fn a_multi_token_chunk_is_one_itl_sample_and_tpot_uses_token_count() {
    // 5 frames, one of them carrying 4 tokens: 8 tokens in all.
    let r = ok(0, 0, &[50, 60, 70, 100, 110], 8);
    let m = compute(&[r], 1.0, &all_metrics());
    assert_eq!(m.itl.count, 4);
    // ITLs 10, 10, 30, 10 → mean 15
    assert!(close(m.itl.mean, 15.0));
    // TPOT = (110 − 50) / 7
    assert!(close(m.tpot.mean, 60.0 / 7.0));
    assert_eq!(m.total_output, 8);
}

#[test]
fn usage_only_last_chunk_does_not_extend_latency() {
    // The usage chunk and [DONE] arrive at end_ns (135 ms) but carry no delta.
    let mut r = ok(0, 0, &[100, 110, 120, 130], 3);
    r.end_ns = 135 * MS;
    let m = compute(&[r], 1.0, &all_metrics());
    assert!(close(m.e2el.mean, 130.0));
}

#[test]
fn one_token_outputs_have_no_tpot_but_count_for_goodput() {
    let r = ok(0, 0, &[40], 1);
    let mut cfg = all_metrics();
    cfg.goodput_slos_ms = vec![("ttft".into(), 50.0), ("tpot".into(), 1.0)];
    let m = compute(&[r], 2.0, &cfg);
    assert_eq!(m.tpot.count, 0);
    assert!(close(m.tpot.mean, 0.0));
    assert!(close(m.ttft.mean, 40.0));
    assert!(close(m.e2el.mean, 40.0));
    assert_eq!(m.itl.count, 0);
    // tpot is 0 for goodput → the request is good: 1 / 2 s
    assert!(close(m.request_goodput.unwrap(), 0.5));
}

#[test]
fn failed_requests_are_counted_but_excluded_from_stats() {
    let records = vec![ok(0, 0, &[100, 110, 120], 3), failed(1), failed(2)];
    let m = compute(&records, 2.0, &all_metrics());
    assert_eq!((m.completed, m.failed), (1, 2));
    assert_eq!(m.errors_by_kind.get("server"), Some(&2));
    assert_eq!(m.ttft.count, 1);
    assert_eq!(m.total_input, 10);
    assert_eq!(m.total_output, 3);
    assert!(close(m.request_throughput, 0.5));
    assert!(close(m.output_throughput, 1.5));
    assert!(close(m.total_token_throughput, 6.5));

    let info = run_info();
    let detailed = result_json(&info, &m, &all_metrics(), &records, true);
    assert_eq!(detailed["output_lens"], serde_json::json!([3, 0, 0]));
    assert_eq!(detailed["ttfts"][1], 0.0);
    assert_eq!(detailed["errors"], serde_json::json!(["", "boom", "boom"]));
}

#[test]
fn percentiles_follow_numpy_linear_and_std_is_population() {
    let v = [1.0, 2.0, 3.0, 4.0];
    assert!(close(percentile(&v, 99.0), 3.97));
    assert!(close(percentile(&v, 50.0), 2.5));
    assert!(close(percentile(&v, 0.0), 1.0));
    assert!(close(percentile(&v, 100.0), 4.0));
    // TTFTs 10, 20, 30, 40 ms: mean 25, population std sqrt(125)
    let records: Vec<_> = (1..=4u64)
        .map(|i| ok(i, 0, &[i * 10, i * 10 + 1], 2))
        .collect();
    let m = compute(&records, 1.0, &all_metrics());
    assert!(close(m.ttft.mean, 25.0));
    assert!(close(m.ttft.median, 25.0));
    assert!(close(m.ttft.std, 125f64.sqrt()));
    assert!(close(m.ttft.percentiles[1].1, 39.7));
}

#[test]
fn peak_tokens_per_second_and_concurrency_use_vllm_buckets() {
    // A: sent 0, deltas at 0.5, 0.6, 1.2 s. B: sent 0.9 s, deltas at 1.1, 1.3, 1.4, 2.5 s.
    // Buckets from min start 0: A → [0]:2, [1]:1; B → [1]:3, [2]:1 → peak 4 tokens/s.
    // Concurrency: A spans seconds 0..=1, B spans 0..=2 → second 0: 2, 1: 2, 2: 1 → peak 2.
    let a = ok(0, 0, &[500, 600, 1200], 3);
    let b = ok(1, 900, &[1100, 1300, 1400, 2500], 4);
    let m = compute(&[a, b], 3.0, &all_metrics());
    assert!(close(m.max_output_tokens_per_s, 4.0));
    assert_eq!(m.max_concurrent_requests, 2);
}

fn run_info() -> RunInfo {
    RunInfo {
        backend: "vllm".into(),
        endpoint_type: "vllm".into(),
        label: None,
        model_id: "meta-llama/Llama-3.1-8B".into(),
        tokenizer_id: "t".into(),
        base_url: "http://127.0.0.1:8000".into(),
        endpoint: "/v1/completions".into(),
        dataset_name: "random".into(),
        num_prompts: 3,
        request_rate: f64::INFINITY,
        burstiness: 1.0,
        max_concurrency: Some(16),
        output_len_forced: true,
        interrupted: false,
    }
}

#[test]
fn console_and_json_use_vllm_layout_and_keys() {
    let records = vec![ok(0, 0, &[100, 110, 120], 3), ok(1, 5, &[90, 95], 2)];
    let cfg = MetricsConfig::default();
    let m = compute(&records, 1.0, &cfg);
    let mut out = Vec::new();
    print_console(&run_info(), &m, &cfg, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("============ Serving Benchmark Result ============\n"));
    assert!(text.contains("Successful requests:                     2"));
    assert!(text.contains("Maximum request concurrency:             16"));
    assert!(text.contains("---------------Time to First Token----------------"));
    assert!(text.contains("P99 TTFT (ms):"));
    assert!(
        !text.contains("End-to-end Latency"),
        "e2el is not in the default percentile metrics"
    );

    let plain = result_json(&run_info(), &m, &cfg, &records, false);
    for key in [
        "p99_ttft_ms",
        "median_itl_ms",
        "std_e2el_ms",
        "mean_tpot_ms",
        "request_throughput",
        "max_concurrent_requests",
    ] {
        assert!(plain.get(key).is_some(), "missing {key}");
    }
    assert_eq!(plain["request_rate"], "inf");
    for key in ["ttfts", "itls", "generated_texts", "errors"] {
        assert!(plain.get(key).is_none());
    }
    let detailed = result_json(&run_info(), &m, &cfg, &records, true);
    assert_eq!(detailed["itls"][0].as_array().unwrap().len(), 2);
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
    assert_eq!(timestamp(1_700_000_000), "20231114-221320");
}

#[test]
fn goodput_flags_are_validated() {
    assert!(MetricsConfig::parse_goodput(&["ttft:200".into(), "e2el:1000".into()]).is_ok());
    let e = MetricsConfig::parse_goodput(&["itl:5".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("itl:5"), "{e}");
    assert!(MetricsConfig::parse_goodput(&["ttft=5".into()]).is_err());
}
