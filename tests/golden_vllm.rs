//! llmb's metric code against numbers written by `vllm bench serve` 0.32.0 itself
//! (tests/fixtures/golden/, see the README there).
//!
//! Each golden file holds vLLM's per-request arrays and the aggregates vLLM computed from them.
//! The arrays are turned back into llmb `RequestRecord`s (host timestamps in whole nanoseconds),
//! run through `metrics::compute` and `report::result_json_at`, and every aggregate key of
//! vLLM's file is compared with the same key of llmb's result file. The expected values all come
//! from vLLM's files; the only inputs taken from elsewhere are the `--goodput` SLOs, which vLLM
//! does not save (they are copied from the command lines in the fixtures README).
//!
//! Tolerance: relative 1e-9 for every float. vLLM's per-request times are differences of float
//! `perf_counter` readings (an error near 1e-13 s each); llmb's are exact nanoseconds, so the
//! aggregates cannot agree to the bit, but they agree far inside 1e-9. Counts (completed,
//! failed, token totals, the per-second peaks) must be equal.
//!
//! Where llmb deliberately differs from vLLM 0.32 the test says so and checks llmb's own value
//! instead (README, "Matching vLLM's numbers"):
//! - `max_concurrent_requests`: vLLM 0.32 counts requests active during some part of each
//!   whole second, which exceeds the concurrency cap; llmb's key holds the exact peak in flight
//!   and vLLM's number is `llmb.max_concurrent_requests_per_second`.
//! - per-request `ttfts`/`itls` of failed requests: vLLM keeps what a failed stream delivered
//!   before breaking; llmb writes 0.0 and `[]`, as for any failure (no aggregate uses them).

use std::path::PathBuf;

use llmb_engine::input_tokens::InputCountSource;
use llmb_engine::metrics::{BenchmarkMetrics, MetricsConfig, PERCENTILE_METRICS, compute};
use llmb_engine::outcome::RunInfo;
use llmb_engine::records::{RequestError, RequestRecord, TokenSource};
use llmb_report::console::result_json_at;
use serde_json::{Map, Value};

/// Relative tolerance for float aggregates (see the module comment).
const REL_TOL: f64 = 1e-9;

/// Keys vLLM copies from the command line into its result: compared with llmb's as written.
const SETUP_KEYS: [&str; 9] = [
    "endpoint_type",
    "backend",
    "label",
    "model_id",
    "tokenizer_id",
    "num_prompts",
    "request_rate",
    "burstiness",
    "max_concurrency",
];

/// vLLM's per-request arrays: the test's input, compared back with llmb's detailed output.
const ARRAY_KEYS: [&str; 9] = [
    "input_lens",
    "output_lens",
    "ttfts",
    "itls",
    "latencies",
    "start_times",
    "queue_times",
    "generated_texts",
    "errors",
];

/// Aggregates that are counts: equal, not close.
const COUNT_KEYS: [&str; 5] = [
    "completed",
    "failed",
    "total_input_tokens",
    "total_output_tokens",
    "max_output_tokens_per_s",
];

fn fixture(name: &str) -> Map<String, Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/golden")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    match serde_json::from_str(&text) {
        Ok(Value::Object(doc)) => doc,
        other => panic!("{}: not a JSON object: {other:?}", path.display()),
    }
}

fn array<'a>(doc: &'a Map<String, Value>, key: &str) -> &'a Vec<Value> {
    doc.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("vLLM's file has no array {key:?}"))
}

fn floats(doc: &Map<String, Value>, key: &str) -> Vec<f64> {
    array(doc, key)
        .iter()
        .map(|v| {
            v.as_f64()
                .unwrap_or_else(|| panic!("{key}: {v} is not a number"))
        })
        .collect()
}

fn counts(doc: &Map<String, Value>, key: &str) -> Vec<u32> {
    array(doc, key)
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_else(|| panic!("{key}: {v} is not a count"))
        })
        .collect()
}

fn texts(doc: &Map<String, Value>, key: &str) -> Vec<String> {
    array(doc, key)
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Seconds to whole nanoseconds. vLLM's times are `perf_counter` readings, nanoseconds on Linux
/// turned into float seconds, so rounding recovers the nanosecond each one was taken at.
fn ns(seconds: f64) -> u64 {
    assert!(seconds >= 0.0, "negative time {seconds}");
    (seconds * 1e9).round() as u64
}

/// vLLM's per-request outputs as llmb records, in vLLM's (dispatch) order, which numpy's sums
/// depend on. Times count from just before the first request began waiting for a slot.
fn records(doc: &Map<String, Value>) -> Vec<RequestRecord> {
    let start = floats(doc, "start_times");
    let queue = floats(doc, "queue_times");
    let ttft = floats(doc, "ttfts");
    let latency = floats(doc, "latencies");
    let input = counts(doc, "input_lens");
    let output = counts(doc, "output_lens");
    let errors = texts(doc, "errors");
    let generated = texts(doc, "generated_texts");
    let itls: Vec<Vec<f64>> = array(doc, "itls")
        .iter()
        .map(|v| {
            v.as_array()
                .expect("itls holds one array per request")
                .iter()
                .map(|x| x.as_f64().expect("an ITL is a number"))
                .collect()
        })
        .collect();
    let n = start.len();
    for (key, len) in [
        ("queue_times", queue.len()),
        ("ttfts", ttft.len()),
        ("latencies", latency.len()),
        ("input_lens", input.len()),
        ("output_lens", output.len()),
        ("errors", errors.len()),
        ("generated_texts", generated.len()),
        ("itls", itls.len()),
    ] {
        assert_eq!(len, n, "{key} has {len} entries, start_times {n}");
    }
    let t0 = (0..n)
        .map(|i| start[i] - queue[i])
        .fold(f64::INFINITY, f64::min);
    (0..n)
        .map(|i| {
            let success = errors[i].is_empty();
            let sent = ns(start[i] - t0);
            // A failed request keeps whatever its stream delivered before it broke (vLLM
            // records a TTFT and ITLs for dropped streams); compute() must leave it all out.
            let mut delta_ns = Vec::new();
            if success || ttft[i] > 0.0 {
                let mut t = sent + ns(ttft[i]);
                delta_ns.push(t);
                for &gap in &itls[i] {
                    t += ns(gap);
                    delta_ns.push(t);
                }
            }
            let end_ns = if success {
                sent + ns(latency[i])
            } else {
                delta_ns.last().copied().unwrap_or(sent)
            };
            RequestRecord {
                id: i as u64,
                sample: i as u64,
                scheduled_ns: sent.saturating_sub(ns(queue[i])),
                dispatched_ns: sent,
                sent_ns: sent,
                delta_ns,
                end_ns,
                prompt_tokens: input[i],
                requested_output_tokens: output[i],
                output_tokens: output[i],
                token_source: success.then_some(TokenSource::Usage),
                success,
                error: (!success).then(|| RequestError {
                    kind: if errors[i].starts_with("Traceback") {
                        "transport".into()
                    } else {
                        "http".into()
                    },
                    message: errors[i].clone(),
                    http_status: None,
                }),
                generated_text: generated[i].clone(),
                ..Default::default()
            }
        })
        .collect()
}

/// `--percentile-metrics` and `--metric-percentiles` as vLLM applied them, read from the
/// `p{P}_{metric}_ms` keys it wrote, plus the run's `--goodput` SLOs.
fn config(doc: &Map<String, Value>, goodput_slos_ms: &[(&str, f64)]) -> MetricsConfig {
    let mut percentiles: Vec<f64> = Vec::new();
    let mut metrics: Vec<String> = Vec::new();
    for key in doc.keys() {
        let Some((p, metric)) = key
            .strip_prefix('p')
            .and_then(|k| k.strip_suffix("_ms"))
            .and_then(|k| k.split_once('_'))
        else {
            continue;
        };
        let (Ok(p), true) = (p.parse::<f64>(), PERCENTILE_METRICS.contains(&metric)) else {
            continue;
        };
        if !percentiles.contains(&p) {
            percentiles.push(p);
        }
        if !metrics.iter().any(|m| m == metric) {
            metrics.push(metric.to_string());
        }
    }
    percentiles.sort_by(f64::total_cmp);
    metrics.sort_by_key(|m| PERCENTILE_METRICS.iter().position(|k| k == m));
    assert!(
        !percentiles.is_empty(),
        "vLLM's file has no percentile keys"
    );
    MetricsConfig {
        percentile_metrics: metrics,
        metric_percentiles: percentiles,
        goodput_slos_ms: goodput_slos_ms
            .iter()
            .map(|(m, ms)| (m.to_string(), *ms))
            .collect(),
        slice_duration_s: None,
    }
}

/// The run setup as vLLM saved it, so llmb's result file can be compared key by key.
fn run_info(doc: &Map<String, Value>) -> RunInfo {
    let text = |k: &str| doc[k].as_str().unwrap_or_default().to_string();
    let rate = match &doc["request_rate"] {
        Value::String(s) if s == "inf" => f64::INFINITY,
        v => v.as_f64().expect("request_rate is a number or \"inf\""),
    };
    RunInfo {
        plugins: Vec::new(),
        shard: None,
        plan_digest: String::new(),
        start: None,
        timing: None,
        backend: text("backend"),
        endpoint_type: text("endpoint_type"),
        label: doc["label"].as_str().map(str::to_string),
        model_id: text("model_id"),
        tokenizer_id: text("tokenizer_id"),
        input_counts: InputCountSource::Tokenizer {
            id: text("tokenizer_id"),
        },
        base_url: "http://127.0.0.1:8000".into(),
        endpoint: "/v1/chat/completions".into(),
        dataset_name: "random".into(),
        num_prompts: doc["num_prompts"].as_u64().expect("num_prompts") as usize,
        request_rate: rate,
        burstiness: doc["burstiness"].as_f64().expect("burstiness"),
        max_concurrency: doc["max_concurrency"].as_u64().map(|c| c as usize),
        output_len_forced: true,
        output_len_forceable: true,
        interrupted: false,
        pattern: Default::default(),
    }
}

fn assert_close(what: &str, llmb: f64, vllm: f64) {
    assert!(
        (llmb - vllm).abs() <= REL_TOL * llmb.abs().max(vllm.abs()),
        "{what}: llmb {llmb}, vLLM {vllm} (relative difference {:e})",
        (llmb - vllm).abs() / llmb.abs().max(vllm.abs())
    );
}

fn number(what: &str, v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what}: {v} is not a number"))
}

/// What one golden file checked, for the summary line.
struct Checked {
    aggregates: usize,
    requests: usize,
    failed: usize,
}

/// Runs one golden file through llmb and compares every aggregate vLLM saved.
fn check(file: &str, goodput_slos_ms: &[(&str, f64)]) -> Checked {
    let vllm = fixture(file);
    let records = records(&vllm);
    let cfg = config(&vllm, goodput_slos_ms);
    let info = run_info(&vllm);
    let duration = number("duration", &vllm["duration"]);
    let m = compute(&records, duration, &cfg);
    let llmb = result_json_at(&info, &m, &cfg, &records, true, 0);
    let Value::Object(llmb) = llmb else {
        panic!("llmb's result is not an object")
    };

    // The records carry vLLM's timeline: every success ends at send + vLLM's latency, which in
    // 0.32 is the last chunk with choices (so llmb's last delta frame).
    for (r, &latency) in records.iter().zip(&floats(&vllm, "latencies")) {
        if r.success {
            assert!(
                (r.e2el_s() - latency).abs() < 2e-9,
                "{file}: request {} latency {latency} rebuilt as {}",
                r.id,
                r.e2el_s()
            );
        }
    }

    let mut aggregates = 0;
    for (key, expected) in &vllm {
        let what = format!("{file}: {key}");
        let got = llmb.get(key);
        if key == "date" || ARRAY_KEYS.contains(&key.as_str()) {
            continue; // the clock of the run; the arrays are checked below
        }
        if SETUP_KEYS.contains(&key.as_str()) {
            assert_eq!(got, Some(expected), "{what}: the run setup as written");
            continue;
        }
        aggregates += 1;
        if key == "max_concurrent_requests" {
            check_concurrency(file, &m, &llmb, expected, info.max_concurrency);
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("{what}: vLLM saves it, llmb does not"));
        if COUNT_KEYS.contains(&key.as_str()) {
            assert_eq!(
                number(&what, got),
                number(&what, expected),
                "{what}: a count must be equal"
            );
        } else if expected.is_null() {
            // request_goodput without --goodput.
            assert!(got.is_null(), "{what}: vLLM wrote null, llmb {got}");
        } else {
            assert_close(&what, number(&what, got), number(&what, expected));
        }
    }
    let failed = check_arrays(file, &vllm, &llmb);
    Checked {
        aggregates,
        requests: records.len(),
        failed,
    }
}

/// Deliberate difference: vLLM 0.32's `max_concurrent_requests` is the most requests active
/// during some part of one whole second (27 for a run capped at 8 concurrent requests). llmb
/// reproduces it as `llmb.max_concurrent_requests_per_second` and keeps the exact peak in flight
/// under vLLM's key, which can never exceed `--max-concurrency`.
fn check_concurrency(
    file: &str,
    m: &BenchmarkMetrics,
    llmb: &Map<String, Value>,
    expected: &Value,
    cap: Option<usize>,
) {
    let vllm_value = number("max_concurrent_requests", expected);
    let per_second = &llmb["llmb"]["max_concurrent_requests_per_second"];
    assert_eq!(
        number("llmb.max_concurrent_requests_per_second", per_second),
        vllm_value,
        "{file}: vLLM 0.32's per-second max_concurrent_requests"
    );
    assert_eq!(m.max_concurrent_requests_per_second as f64, vllm_value);
    let exact = m.max_concurrent_requests;
    assert_eq!(llmb["max_concurrent_requests"], Value::from(exact));
    let cap = cap.expect("the golden runs had --max-concurrency");
    assert!(
        (1..=cap).contains(&exact),
        "{file}: llmb's max_concurrent_requests is the exact peak in flight, deliberately not \
         vLLM 0.32's per-second count ({vllm_value}); it was {exact}, outside 1..={cap}"
    );
}

/// llmb's detailed arrays give vLLM's back: the same lengths, latencies, queue times and
/// send times (from llmb's origin), and for successes the same TTFTs and ITLs. Returns the
/// number of failed requests.
fn check_arrays(file: &str, vllm: &Map<String, Value>, llmb: &Map<String, Value>) -> usize {
    let errors = texts(vllm, "errors");
    for key in ["input_lens", "output_lens", "errors", "generated_texts"] {
        assert_eq!(llmb[key], vllm[key], "{file}: {key}");
    }
    for key in ["latencies", "queue_times"] {
        let (ours, theirs) = (floats(llmb, key), floats(vllm, key));
        assert_eq!(ours.len(), theirs.len(), "{file}: {key}");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() < 2e-9,
                "{file}: {key}[{i}] llmb {a}, vLLM {b}"
            );
        }
    }
    let (ours, theirs) = (floats(llmb, "start_times"), floats(vllm, "start_times"));
    for i in 1..theirs.len() {
        let (a, b) = (ours[i] - ours[0], theirs[i] - theirs[0]);
        assert!(
            (a - b).abs() < 2e-9,
            "{file}: start_times[{i}] − start_times[0]"
        );
    }
    let (ttfts, vllm_ttfts) = (floats(llmb, "ttfts"), floats(vllm, "ttfts"));
    let (itls, vllm_itls) = (array(llmb, "itls"), array(vllm, "itls"));
    let mut failed = 0;
    for i in 0..errors.len() {
        let gaps = |v: &Value| -> Vec<f64> {
            v.as_array()
                .expect("itls")
                .iter()
                .map(|x| x.as_f64().expect("ITL"))
                .collect()
        };
        let (ours, theirs) = (gaps(&itls[i]), gaps(&vllm_itls[i]));
        if errors[i].is_empty() {
            assert!(
                (ttfts[i] - vllm_ttfts[i]).abs() < 2e-9,
                "{file}: ttfts[{i}]"
            );
            assert_eq!(ours.len(), theirs.len(), "{file}: itls[{i}]");
            for (a, b) in ours.iter().zip(&theirs) {
                assert!((a - b).abs() < 2e-9, "{file}: itls[{i}] llmb {a}, vLLM {b}");
            }
        } else {
            failed += 1;
            // Deliberate difference: vLLM keeps a broken stream's TTFT and ITLs; llmb reports
            // none for any failure. Neither enters an aggregate.
            assert_eq!(
                (ttfts[i], ours.len()),
                (0.0, 0),
                "{file}: request {i} failed: llmb writes ttft 0.0 and no ITLs (vLLM kept {} and {} ITLs)",
                vllm_ttfts[i],
                theirs.len()
            );
        }
    }
    failed
}

fn report(file: &str, c: &Checked) {
    println!(
        "{file}: {} vLLM aggregates reproduced from {} requests ({} failed)",
        c.aggregates, c.requests, c.failed
    );
}

#[test]
fn gamma_arrivals_with_three_slos_and_custom_percentiles() {
    // --goodput ttft:25 tpot:11 e2el:700 --metric-percentiles 25,50,90,99
    // --percentile-metrics ttft,tpot,itl,e2el
    let file = "vllm-oracle-jitter-chat.json";
    let c = check(file, &[("ttft", 25.0), ("tpot", 11.0), ("e2el", 700.0)]);
    report(file, &c);
    // duration, 8 totals and rates, 2 peaks, rtfx, 4 metrics × (mean, median, std, 4 percentiles).
    assert_eq!(
        c.aggregates,
        9 + 2 + 1 + 4 * 7,
        "every aggregate vLLM saved was compared"
    );
    assert_eq!((c.requests, c.failed), (120, 0));
}

#[test]
fn failed_requests_are_counted_and_left_out_of_every_aggregate() {
    // --goodput ttft:40; vLLM's default percentiles (99) and metrics (ttft, tpot, itl).
    let file = "vllm-faults-chat.json";
    let c = check(file, &[("ttft", 40.0)]);
    report(file, &c);
    assert_eq!(
        c.aggregates,
        9 + 2 + 1 + 3 * 4,
        "every aggregate vLLM saved was compared"
    );
    assert_eq!((c.requests, c.failed), (100, 30));
}

#[test]
fn a_real_llama_cpp_stream_without_slos() {
    // No --goodput: request_goodput is null in both files.
    let file = "vllm-llamacpp-chat.json";
    let c = check(file, &[]);
    report(file, &c);
    assert_eq!(
        c.aggregates,
        9 + 2 + 1 + 3 * 4,
        "every aggregate vLLM saved was compared"
    );
    assert_eq!((c.requests, c.failed), (24, 0));
}

#[test]
fn per_second_concurrency_counts_a_request_in_the_second_it_ends_in() {
    // vLLM 0.32: a request is active in buckets int(start − min_start) ..= int(end − min_start).
    // A: sent 0, frames 0.5 and 1.0 s, so it ends exactly on the edge of bucket 1 and counts
    //    there too. C: 0.2 → 0.3 s. D: 1.2 → 1.4 s. B: 1.5 → 1.6 s.
    // Buckets: [0] A, C → 2; [1] A, D, B → 3. Tokens: [0] A 0.5, C 0.3 → 2; [1] A 1.0, D, B → 3.
    // The exact peak in flight is 2 (A and C); B and D never overlap A's [0, 1.0).
    const MS: u64 = 1_000_000;
    let req = |id: u64, sent_ms: u64, frames_ms: &[u64]| RequestRecord {
        id,
        scheduled_ns: sent_ms * MS,
        dispatched_ns: sent_ms * MS,
        sent_ns: sent_ms * MS,
        delta_ns: frames_ms.iter().map(|t| t * MS).collect(),
        end_ns: frames_ms.last().copied().unwrap_or(sent_ms) * MS,
        prompt_tokens: 4,
        output_tokens: frames_ms.len() as u32,
        token_source: Some(TokenSource::Usage),
        success: true,
        ..Default::default()
    };
    let records = [
        req(0, 0, &[500, 1000]),
        req(1, 200, &[300]),
        req(2, 1200, &[1400]),
        req(3, 1500, &[1600]),
    ];
    let m = compute(&records, 2.0, &MetricsConfig::default());
    assert_eq!(m.max_concurrent_requests_per_second, 3);
    assert_eq!(m.max_output_tokens_per_s, 3.0);
    assert_eq!(m.max_concurrent_requests, 2);
}
