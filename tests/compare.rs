//! `llmb compare`: a real change in the server (a slower first token) is found with its
//! interval; a run against itself shows no significant difference; the JSON says the same.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_server_is_worse_and_a_run_equals_itself() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, ttft_ms: f64| {
        let mut args = quick_args(&dir.path().join(name));
        args.num_prompts = 60;
        args.max_concurrency = Some(8);
        args.save_result = true;
        args.sim.ttft_ms = ttft_ms;
        args
    };
    bench(&run("a", 5.0)).await;
    bench(&run("b", 40.0)).await;
    let json = dir.path().join("cmp.json");
    let compare = |a: &str, b: &str| {
        llmb::compare::main(&llmb::args::CompareArgs {
            a: dir.path().join(a),
            b: dir.path().join(b),
            json: Some(json.clone()),
            html: None,
            resamples: 300,
            min_effect_pct: 1.0,
        })
        .unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        doc["comparisons"].as_array().unwrap().clone()
    };
    let rows = compare("a", "b");
    let ttft = rows
        .iter()
        .find(|r| r["metric"] == "ttft_ms" && r["statistic"] == "mean")
        .unwrap();
    assert_eq!(ttft["verdict"], "worse", "{ttft}");
    assert!(ttft["ci_low"].as_f64().unwrap() > 20.0, "{ttft}");
    let same = compare("a", "a");
    assert!(
        same.iter()
            .all(|r| r["verdict"] == "no significant difference"),
        "{same:?}"
    );
}

/// A B that fails half its requests is not quietly judged on its successes: the failures are
/// counted on both sides and the comparison warns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_failure_shares_are_reported_beside_the_latencies() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, prompts: &[&str]| {
        let mut args = quick_args(&dir.path().join(name));
        args.dataset_name = "custom".into();
        args.dataset_path = Some(custom_dataset(dir.path(), prompts));
        args.save_result = true;
        args
    };
    let clean = ["one two", "three four", "five six", "seven eight"];
    bench(&run("a", &clean)).await;
    let faulty = [
        "one two",
        "three __sim_fault:http500__",
        "five six",
        "seven __sim_fault:http500__",
    ];
    bench(&run("b", &faulty)).await;
    let json = dir.path().join("cmp.json");
    llmb::compare::main(&llmb::args::CompareArgs {
        a: dir.path().join("a"),
        b: dir.path().join("b"),
        json: Some(json.clone()),
        html: None,
        resamples: 200,
        min_effect_pct: 1.0,
    })
    .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["failed_a"], 0);
    assert!(doc["failed_b"].as_u64().unwrap() > 0, "{doc}");
    assert!(
        doc["failure_warning"]
            .as_str()
            .is_some_and(|w| w.contains("failed different shares")),
        "{doc}"
    );
}
