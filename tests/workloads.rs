//! Issue 17's workloads end to end against the simulator on 127.0.0.1: reasoning models (TTFO and
//! the reasoning/answer split), requests the client cancels on purpose, and repeated runs
//! compared across runs.

mod common;

use common::*;
use llmb_engine::lifecycle::Cancel;

/// A model that thinks for 6 tokens before answering: every record splits its 16 output
/// tokens into 6 reasoning and 10 answer tokens, the first answer token comes about 6 token
/// gaps after the first token, and the result file, CSV and console say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_models_get_ttfo_and_a_reasoning_answer_split() {
    for backend in ["openai-chat", "openai-responses"] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = quick_args(dir.path());
        args.backend = backend.into();
        args.num_prompts = 6;
        args.random_output_len = 16;
        args.sim.ttft_ms = 10.0;
        args.sim.itl_ms = 8.0;
        args.sim.reasoning_tokens = 6;
        args.save_result = true;
        let outcome = bench(&args).await;
        let m = &outcome.metrics;
        assert_eq!(m.completed, 6, "{backend}: {:?}", outcome.records[0].error);
        // The Responses API cannot force the length: its outputs may end early, even while
        // still reasoning.
        let forced = backend == "openai-chat";
        for r in &outcome.records {
            if forced {
                assert_eq!(r.output_tokens, 16, "{backend}: {r:?}");
            }
            let reasoning = r.output_tokens.min(6);
            assert_eq!(r.reasoning_tokens, Some(reasoning), "{backend}: {r:?}");
            if !forced {
                // A response cut by max_output_tokens ends with `response.incomplete`.
                let capped = r.output_tokens == r.requested_output_tokens;
                let want = if capped {
                    "max_output_tokens"
                } else {
                    "completed"
                };
                assert_eq!(r.finish_reason.as_deref(), Some(want), "{r:?}");
            }
            assert_eq!(r.answer_tokens(), r.output_tokens - reasoning, "{backend}");
            assert!(!r.reasoning_text.is_empty());
            if r.output_tokens <= 6 {
                assert!(r.generated_text.is_empty() && r.ttfo_s().is_none());
                continue;
            }
            assert!(!r.generated_text.is_empty());
            let thinking = r.ttfo_s().unwrap() - r.ttft_s().unwrap();
            // Six reasoning tokens 8 ms apart come before the answer's first.
            assert!(
                (0.035..0.075).contains(&thinking),
                "{backend}: thinking {thinking} s"
            );
        }
        let total_reasoning: u64 = outcome
            .records
            .iter()
            .map(|r| u64::from(r.output_tokens.min(6)))
            .sum();
        let reasoning = &m.reasoning;
        assert_eq!(reasoning.requests, 6);
        assert_eq!(reasoning.total_reasoning_tokens, total_reasoning);
        assert_eq!(
            reasoning.total_answer_tokens,
            m.total_output - total_reasoning
        );
        if forced {
            assert_eq!(total_reasoning, 36);
        }
        assert!(reasoning.ttfo.mean > m.ttft.mean + 35.0, "{backend}");

        let mut console = Vec::new();
        llmb_report::console::print_console(
            &outcome.info,
            m,
            &outcome.metrics_config,
            &mut console,
        )
        .unwrap();
        let console = String::from_utf8(console).unwrap();
        assert!(console.contains("Reasoning / answer tokens:"), "{console}");
        let split = format!("{total_reasoning} / {}", m.total_output - total_reasoning);
        assert!(console.contains(&split), "{console}");

        let result: serde_json::Value =
            serde_json::from_slice(&std::fs::read(outcome.result_path.as_ref().unwrap()).unwrap())
                .unwrap();
        let r = &result["llmb"]["reasoning"];
        assert_eq!(r["total_reasoning_tokens"], total_reasoning, "{r}");
        assert!(r["ttfo_ms"]["mean_ms"].as_f64().unwrap() > m.ttft.mean + 35.0);

        let csv =
            std::fs::read_to_string(outcome.records_path.as_ref().unwrap().with_extension("csv"))
                .unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
        let id: u64 = row[col("id")].parse().unwrap();
        let first = outcome.records.iter().find(|r| r.id == id).unwrap();
        assert_eq!(
            row[col("reasoning_tokens")],
            first.reasoning_tokens.unwrap().to_string()
        );
        assert_eq!(row[col("answer_tokens")], first.answer_tokens().to_string());
        assert!(!row[col("ttfo_ms")].is_empty());
    }
}

/// A model that does not reason: TTFO is the first content token, nothing is counted as
/// reasoning and the console prints no reasoning section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reasoning_ttfo_is_the_first_content_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.backend = "openai-chat".into();
    let outcome = bench(&args).await;
    for r in &outcome.records {
        assert_eq!(r.reasoning_tokens, None);
        assert_eq!(r.answer_tokens(), r.output_tokens);
        // The role-only first chunk is TTFT's; the first token follows it.
        assert!(r.ttfo_s().unwrap() >= r.ttft_s().unwrap());
    }
    assert_eq!(outcome.metrics.reasoning.requests, 0);
    let mut console = Vec::new();
    llmb_report::console::print_console(
        &outcome.info,
        &outcome.metrics,
        &outcome.metrics_config,
        &mut console,
    )
    .unwrap();
    assert!(
        !String::from_utf8(console)
            .unwrap()
            .contains("Reasoning / answer")
    );
}

/// `--cancel-rate 0.5 --cancel-after 30`: the picked requests are cut 30 ms after they were
/// written, keep the chunks that came before, and are counted as cancelled by plan; the
/// others complete. The same seed picks the same requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_cancellations_cut_requests_and_keep_what_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 20;
    args.max_concurrency = Some(10);
    args.random_output_len = 20;
    args.sim.ttft_ms = 5.0;
    args.sim.itl_ms = 10.0;
    args.cancel_rate = Some(0.5);
    args.cancel_after = Some(30.0);
    let outcome = bench(&args).await;
    let plan = llmb_engine::runner::CancelPlan {
        rate: 0.5,
        after: std::time::Duration::from_millis(30),
        seed: args.seed,
    };
    let expected: Vec<u64> = (0..20).filter(|&id| plan.after_for(id).is_some()).collect();
    assert!(!expected.is_empty() && expected.len() < 20);
    let mut cancelled: Vec<u64> = Vec::new();
    for r in &outcome.records {
        if r.planned_cancel {
            cancelled.push(r.id);
            assert!(!r.success);
            assert_eq!(r.error.as_ref().unwrap().kind, "cancelled");
            let from = r.written_ns.unwrap_or(r.sent_ns);
            let after_ms = (r.end_ns - from) as f64 / 1e6;
            assert!((30.0..45.0).contains(&after_ms), "cut after {after_ms} ms");
            // TTFT 5 ms then 10 ms gaps: about 3 chunks before the cut, none after.
            assert!(
                (1..=5).contains(&r.delta_ns.len()),
                "{} chunks",
                r.delta_ns.len()
            );
            assert!(r.delta_ns.iter().all(|&t| t <= r.end_ns));
            assert!(!r.generated_text.is_empty());
        } else {
            assert!(r.success, "{:?}", r.error);
            assert_eq!(r.output_tokens, 20);
        }
    }
    cancelled.sort();
    assert_eq!(cancelled, expected);
    let c = &outcome.metrics.cancellations;
    assert_eq!(c.requests, expected.len());
    assert_eq!(c.after_first_token, expected.len());
    assert_eq!(outcome.metrics.completed, 20 - expected.len());
}

/// `--num-runs 3` writes three runs and an across-runs summary; `llmb compare` of two such
/// folders compares across runs and finds a slower first token worse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_runs_summarise_spread_and_compare_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let series = |name: &str, ttft_ms: f64| {
        let mut args = quick_args(&dir.path().join(name));
        args.num_prompts = 12;
        args.max_concurrency = Some(4);
        args.save_result = true;
        args.result_filename = Some(format!("{name}.json"));
        args.sim.ttft_ms = ttft_ms;
        args.num_runs = 3;
        args
    };
    for (name, ttft) in [("a", 5.0), ("b", 30.0)] {
        let args = series(name, ttft);
        let runs = llmb::campaign::run_repeated(&args, &Cancel::new())
            .await
            .unwrap();
        assert_eq!(runs.len(), 3);
        for k in 1..=3 {
            let run = dir.path().join(name).join(format!("{name}-run{k}.json"));
            assert!(run.exists(), "{}", run.display());
        }
        let summary: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(name).join(format!("{name}-runs.json"))).unwrap(),
        )
        .unwrap();
        let ttft_spread = summary[0]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["metric"] == "mean_ttft")
            .unwrap()
            .clone();
        assert_eq!(ttft_spread["values"].as_array().unwrap().len(), 3);
        let mean = ttft_spread["mean"].as_f64().unwrap();
        assert!(mean > ttft && mean < ttft + 15.0, "{ttft_spread}");
        assert!(ttft_spread["ci_low"].as_f64().unwrap() <= mean);
    }
    let json = dir.path().join("cmp.json");
    llmb::compare::main(&llmb::args::CompareArgs {
        a: dir.path().join("a"),
        b: dir.path().join("b"),
        json: Some(json.clone()),
        html: Some(dir.path().join("cmp.html")),
        resamples: 100,
        min_effect_pct: 1.0,
    })
    .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["method"], "across-runs-welch");
    assert_eq!(doc["runs_a"], 3);
    let ttft = doc["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"] == "ttft_ms" && r["statistic"] == "mean")
        .unwrap();
    assert_eq!(ttft["verdict"], "worse", "{ttft}");
    let html = std::fs::read_to_string(dir.path().join("cmp.html")).unwrap();
    assert!(html.contains("across runs") && html.contains(">worse</td>"));
    assert!(html.contains("<polyline"));
}

/// `--slice-duration 0.25s` on a one-second run at 60 req/s: windows whose sends add up to the
/// run's, the steady-state window inside the run with ramp-up and drain left out, and the
/// windows in the result file and a CSV beside the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_and_the_steady_state_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 60;
    args.request_rate = vec![60.0];
    args.sim.ttft_ms = 10.0;
    args.sim.itl_ms = 2.0;
    args.slice_duration = Some(std::time::Duration::from_millis(250));
    args.save_result = true;
    let outcome = bench(&args).await;
    let m = &outcome.metrics;
    assert_eq!(m.completed, 60);
    assert!(
        (4..=6).contains(&m.slices.len()),
        "{} slices",
        m.slices.len()
    );
    assert_eq!(m.slices.iter().map(|s| s.sent).sum::<usize>(), 60);
    let (start, end) = m.steady_state.window.expect("a steady state");
    // Latency about 25 ms: the window opens then and closes at the last send (~1 s).
    assert!(start > 0.015 && start < 0.06, "{start}");
    assert!(end > 0.8 && end < 1.2, "{end}");
    assert!(m.steady_state.stats.sent < 60 && m.steady_state.stats.sent > 40);
    let rate = m.steady_state.stats.request_throughput;
    assert!(rate > 40.0 && rate < 80.0, "{rate}");

    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outcome.result_path.as_ref().unwrap()).unwrap())
            .unwrap();
    assert_eq!(
        result["llmb"]["slices"].as_array().unwrap().len(),
        m.slices.len()
    );
    assert!(result["llmb"]["steady_state"]["window"].is_array());
    let records = outcome.records_path.as_ref().unwrap();
    let csv =
        std::fs::read_to_string(records.with_extension("").with_extension("slices.csv")).unwrap();
    assert_eq!(csv.lines().count(), m.slices.len() + 1);
    assert!(csv.lines().skip(1).any(|l| l.contains(",true,")), "{csv}");
}

/// `--search concurrency --slo p99_ttft_ms<=...` against a simulator that queues past 4
/// requests at once: the search brackets and bisects to exactly 4, keeps every stage's result,
/// and stops a stage early once its p99 TTFT is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_search_finds_the_highest_concurrency_meeting_the_slo() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 24;
    args.random_output_len = 10;
    args.sim.ttft_ms = 20.0;
    args.sim.itl_ms = 5.0;
    args.sim.batch_slowdown = 0.0;
    // Past 4 streams, requests wait in the simulator's queue: their TTFT grows by a whole
    // request time (~65 ms).
    args.sim.max_batch = Some(4);
    args.search = Some("concurrency".into());
    args.slo = Some("p99_ttft_ms<=60".into());
    args.save_result = true;
    args.result_filename = Some("cap.json".into());
    let outcome = llmb::search::run_search(&args, &Cancel::new())
        .await
        .unwrap();
    assert_eq!(outcome.best, Some(4.0), "{outcome:#?}");
    assert_eq!(outcome.first_fail, Some(5.0), "{outcome:#?}");
    let loads: Vec<f64> = outcome.stages.iter().map(|s| s.load).collect();
    // 1, 2, 4, 8 (misses), then 6 and 5 miss.
    assert_eq!(loads, vec![1.0, 2.0, 4.0, 8.0, 6.0, 5.0], "{outcome:#?}");
    let eight = &outcome.stages[3];
    assert!(!eight.met);
    assert!(eight.stopped_early.is_some(), "{eight:?}");
    assert!(eight.completed < 24, "{eight:?}");
    for s in &outcome.stages {
        assert!(std::path::Path::new(s.result.as_ref().unwrap()).exists());
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cap-search.json")).unwrap())
            .unwrap();
    assert_eq!(summary["best"], 4.0);
}

/// A disaggregated server (the simulator moving each request's KV cache for 15 ms before its
/// first token, counted in vLLM's NIXL histogram): the scraped metrics give the stage's
/// transfers and their mean, and TTFT includes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_transfer_histograms_are_reported_per_stage() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 10;
    args.sim.ttft_ms = 5.0;
    args.sim.kv_transfer_ms = 15.0;
    args.server_metrics_url = Some("/metrics".into());
    args.save_result = true;
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.completed, 10);
    assert!(
        outcome.metrics.ttft.mean >= 20.0,
        "{}",
        outcome.metrics.ttft.mean
    );
    let sm = outcome.server_metrics.as_ref().expect("scraped");
    let kv = &sm.highlights.kv_transfer;
    assert_eq!(kv.len(), 1, "{kv:?}");
    assert_eq!(kv[0].metric, "vllm:nixl_xfer_time_seconds");
    // The pre-flight request moved its cache before the stage's first scrape.
    assert_eq!(kv[0].transfers, 10.0);
    assert!((kv[0].mean - 15.0).abs() < 0.01, "{:?}", kv[0]);
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outcome.result_path.as_ref().unwrap()).unwrap())
            .unwrap();
    let delta = &result["server_metrics"]["delta"];
    assert_eq!(delta["vllm:nixl_xfer_time_seconds_count"], 10.0, "{delta}");
}

/// `--search rate`: against a simulator that serves 4 streams at once (~65 ms each, so about 60
/// req/s at most), doubling from 8 req/s brackets the capacity and bisection narrows it; every
/// stage keeps its result, the best passing rate is below the first failing one, and the
/// bracket ends within the tolerance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_search_over_the_rate_brackets_the_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 40;
    args.random_output_len = 10;
    args.sim.ttft_ms = 20.0;
    args.sim.itl_ms = 5.0;
    args.sim.batch_slowdown = 0.0;
    args.sim.max_batch = Some(4);
    args.search = Some("rate".into());
    args.slo = Some("p90_ttft_ms<=80".into());
    args.search_start = 8.0;
    args.search_tolerance = 25.0;
    args.save_result = true;
    args.result_filename = Some("rate.json".into());
    let outcome = llmb::search::run_search(&args, &Cancel::new())
        .await
        .unwrap();
    let (best, fail) = (outcome.best.unwrap(), outcome.first_fail.unwrap());
    assert!(best >= 8.0 && best < fail, "{outcome:#?}");
    // Far past capacity, queues grow without bound: 256 req/s never passes.
    assert!(fail <= 256.0, "{outcome:#?}");
    assert!(fail - best <= 0.25 * best + 1e-9, "{outcome:#?}");
    let loads: Vec<f64> = outcome.stages.iter().map(|s| s.load).collect();
    assert_eq!(&loads[..2], &[8.0, 16.0], "doubling first: {loads:?}");
    for s in &outcome.stages {
        assert!(std::path::Path::new(s.result.as_ref().unwrap()).exists());
        assert_eq!(s.met, s.load <= best, "{s:?}");
    }
}
