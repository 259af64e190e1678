//! The fault matrix: every failure the simulator can inject (`host/sim/src/faults.rs`), mixed
//! with clean requests in one run under load, with tight limits. Every request is accounted for
//! (completed + failed = sent, and every one on disk), each failure has the right kind and
//! reason, nothing panics, the run ends within its limits and memory stays bounded.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use llmb::args::BenchArgs;
use llmb_engine::outcome::BenchOutcome;
use llmb_engine::records::{RequestRecord, read_records};

/// The faults, each with the kind its requests must fail with and a piece of the message, when
/// streaming and when not.
struct Expect {
    fault: &'static str,
    stream: (&'static str, &'static str),
    whole: (&'static str, &'static str),
}

const MATRIX: &[Expect] = &[
    Expect {
        fault: "http500",
        stream: ("server", "simulated internal error"),
        whole: ("server", "simulated internal error"),
    },
    Expect {
        fault: "rate_limited",
        stream: ("rate-limited", "(Retry-After: 1)"),
        whole: ("rate-limited", "(Retry-After: 1)"),
    },
    Expect {
        fault: "overloaded",
        stream: ("overloaded", "(Retry-After: 2)"),
        whole: ("overloaded", "(Retry-After: 2)"),
    },
    Expect {
        fault: "reset",
        stream: ("connect", ""),
        whole: ("connect", ""),
    },
    Expect {
        fault: "no_answer",
        stream: ("timeout", "--header-timeout"),
        whole: ("timeout", "--header-timeout"),
    },
    Expect {
        fault: "slow_headers",
        stream: ("timeout", "--header-timeout"),
        whole: ("timeout", "--header-timeout"),
    },
    Expect {
        fault: "malformed",
        stream: ("protocol", ""),
        whole: ("protocol", ""),
    },
    Expect {
        fault: "drop",
        stream: ("connection", "mid-stream"),
        whole: ("connection", "while reading the body"),
    },
    Expect {
        fault: "error_event",
        stream: ("server", "simulated in-stream error"),
        whole: ("server", "simulated in-stream error"),
    },
    Expect {
        fault: "truncated",
        stream: ("protocol", ""),
        whole: ("connection", "while reading the body"),
    },
    Expect {
        fault: "stall",
        stream: ("timeout", "stalled"),
        whole: ("timeout", "stalled"),
    },
    Expect {
        fault: "huge",
        stream: ("too-large", "--max-response-bytes"),
        whole: ("too-large", "--max-response-bytes"),
    },
    Expect {
        fault: "endless",
        stream: ("too-large", "--max-text-bytes"),
        // A server generating forever never sends a non-streaming head.
        whole: ("timeout", "--header-timeout"),
    },
];

/// Copies of each fault in a run.
const COPIES: usize = 3;
/// Longest a run of the matrix may take: every fault is cut within 2 s (--header-timeout), the
/// run's 97 requests go 16 at a time.
const RUN_BOUND: Duration = Duration::from_secs(20);

/// The prompts of one run: clean ones around every fault, a clean one first (the pre-flight
/// request sends the first prompt). Returns them with the fault of each (None = clean).
fn prompts() -> Vec<(String, Option<&'static Expect>)> {
    let mut out = vec![("a clean first prompt".to_string(), None)];
    for copy in 0..COPIES {
        for (i, e) in MATRIX.iter().enumerate() {
            out.push((format!("clean prompt {copy} {i}"), None));
            out.push((
                format!("prompt {copy} {i} __sim_fault:{}__ with a fault", e.fault),
                Some(e),
            ));
        }
    }
    out
}

fn matrix_args(dir: &std::path::Path, stream: bool) -> (BenchArgs, Vec<Option<&'static Expect>>) {
    let prompts = prompts();
    let texts: Vec<&str> = prompts.iter().map(|(p, _)| p.as_str()).collect();
    let mut args = quick_args(dir);
    args.backend = "openai".into();
    args.dataset_name = "custom".into();
    args.dataset_path = Some(custom_dataset(dir, &texts));
    args.disable_shuffle = true;
    args.custom_output_len = 16;
    args.num_prompts = prompts.len();
    args.max_concurrency = Some(16);
    args.no_stream = !stream;
    args.save_detailed = true;
    // Tight limits, each well above what a clean request needs (16 tokens of a few bytes,
    // 18 chunk stamps, a body of about 1 KiB).
    args.header_timeout = Some(2.0);
    args.read_idle_timeout = 1.0;
    args.max_response_bytes = 1 << 20;
    args.max_text_bytes = 4 << 10;
    args.timeout = 10.0;
    (args, prompts.into_iter().map(|(_, e)| e).collect())
}

/// Runs one matrix and checks every request against its expectation.
async fn run_matrix(stream: bool) -> BenchOutcome {
    let dir = tempfile::tempdir().unwrap();
    let (args, expected) = matrix_args(dir.path(), stream);
    let started = Instant::now();
    let outcome = bench(&args).await;
    let took = started.elapsed();
    let mode = if stream { "streaming" } else { "non-streaming" };
    eprintln!(
        "{mode} matrix: {took:?}, failures by kind {}",
        summary(&outcome.records)
    );
    assert!(took < RUN_BOUND, "{mode}: the run took {took:?}");

    // Every request accounted for, in the metrics and on disk.
    let sent = expected.len();
    let faults = expected.iter().filter(|e| e.is_some()).count();
    let m = &outcome.metrics;
    assert_eq!(m.completed + m.failed, sent, "{mode}");
    assert_eq!(m.failed, faults, "{mode}: {}", summary(&outcome.records));
    let on_disk = read_records(outcome.records_path.as_ref().unwrap()).unwrap();
    assert_eq!(on_disk.len(), sent, "{mode}");

    for r in &on_disk {
        let expect = expected[r.sample as usize];
        match expect {
            None => assert!(
                r.success,
                "{mode}: clean request {} failed: {r:?}",
                r.sample
            ),
            Some(e) => {
                let (kind, words) = if stream { e.stream } else { e.whole };
                let err = r
                    .error
                    .as_ref()
                    .unwrap_or_else(|| panic!("{mode} {}: no error recorded", e.fault));
                assert!(!r.success);
                assert_eq!(err.kind, kind, "{mode} {}: {err:?}", e.fault);
                assert!(
                    err.message.contains(words),
                    "{mode} {}: {err:?} lacks {words:?}",
                    e.fault
                );
                // Nothing failed later than its limits allow (10 s --timeout, all others 2 s).
                let secs = (r.end_ns - r.sent_ns) as f64 / 1e9;
                assert!(secs < 5.0, "{mode} {}: failed after {secs} s", e.fault);
            }
        }
    }
    outcome
}

/// `kind: count` over failed records, for assertion messages.
fn summary(records: &[RequestRecord]) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        if let Some(e) = &r.error {
            *kinds.entry(e.kind.clone()).or_default() += 1;
        }
    }
    format!("{kinds:?}")
}

/// The process's peak resident memory so far (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib << 10
}

/// Growth of the peak RSS allowed over the whole matrix. This binary holds one test, so the
/// peak is this test's own (the in-process simulator included). The warm-up run below pays for
/// compiling the adapter and the runtime's pools; the matrix then keeps at most 1 MiB per body
/// (--max-response-bytes), while the `huge` fault alone offers 1 GiB per request, 6 of them:
/// reading any of them whole would pass this bound many times over.
const RSS_GROWTH_BOUND: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_at_once_under_load_is_accounted_for_and_bounded() {
    // A clean run first, so the bound below measures the faults, not the first run's setup.
    let dir = tempfile::tempdir().unwrap();
    let mut warm = quick_args(dir.path());
    warm.backend = "openai".into();
    warm.max_concurrency = Some(16);
    warm.num_prompts = 32;
    assert_eq!(bench(&warm).await.metrics.completed, 32);
    let before = peak_rss();

    run_matrix(true).await;
    run_matrix(false).await;

    let growth = peak_rss().saturating_sub(before);
    eprintln!(
        "peak RSS {} MiB before the matrix, grew by {} MiB",
        before >> 20,
        growth >> 20
    );
    assert!(
        growth < RSS_GROWTH_BOUND,
        "peak RSS grew by {} MiB",
        growth >> 20
    );

    // The idle timeout starts with the body: a first token later than it (queue time) is no
    // stall, while the same silence between two tokens is.
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.backend = "openai".into();
    args.num_prompts = 2;
    args.no_preflight = true;
    args.read_idle_timeout = 0.5;
    args.sim.ttft_ms = 900.0;
    let outcome = bench(&args).await;
    assert_eq!(
        outcome.metrics.completed,
        2,
        "{}",
        summary(&outcome.records)
    );

    // The frame size limit: the streamed `huge` event is one endless SSE frame.
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.backend = "openai".into();
    args.dataset_name = "custom".into();
    args.dataset_path = Some(custom_dataset(
        dir.path(),
        &["a clean prompt", "x __sim_fault:huge__"],
    ));
    args.disable_shuffle = true;
    args.num_prompts = 2;
    args.max_frame_bytes = 64 << 10;
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.failed, 1);
    let err = outcome
        .records
        .iter()
        .find_map(|r| r.error.clone())
        .unwrap();
    assert_eq!(err.kind, "too-large", "{err:?}");
    assert!(err.message.contains("--max-frame-bytes"), "{err:?}");
}
