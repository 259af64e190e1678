//! Files for scripts and spreadsheets: per-request CSV, `summary_all.csv`, `--append-result` and
//! `llmb aggregate`, written by real runs against the simulator.

mod common;

use common::*;

fn read_csv(path: &std::path::Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

fn column(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_leaves_csvs_and_aggregate_reads_every_result() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = quick_args(&out);
    args.save_result = true;
    args.concurrency = Some("1,2".into());
    args.requests_per_stage = Some(6);
    args.num_prompts = 12;
    let sweep = llmb::bench::run_all(&args, tokio::sync::watch::channel(false).1, &mut |_| Ok(()))
        .await
        .unwrap();
    assert_eq!(sweep.stages.len(), 2);

    // One CSV row per request, with the timings the records hold.
    let stage = &sweep.stages[0];
    let csv_path = stage.records_path.as_ref().unwrap().with_extension("csv");
    let (header, rows) = read_csv(&csv_path);
    assert_eq!(rows.len(), stage.records.len());
    let ttft = column(&header, "ttft_ms");
    for (row, record) in rows.iter().zip(&stage.records) {
        assert_eq!(row[column(&header, "id")], record.id.to_string());
        let ms: f64 = row[ttft].parse().unwrap();
        assert!((ms - record.ttft_s().unwrap() * 1e3).abs() < 0.001, "{ms}");
        assert_eq!(row[column(&header, "output_tokens")], "8");
    }

    // A row per stage in summary_all.csv; a later single run appends to it.
    let (header, rows) = read_csv(&out.join("summary_all.csv"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][column(&header, "concurrency")], "1");
    assert_eq!(rows[1][column(&header, "concurrency")], "2");
    assert_eq!(rows[1][column(&header, "completed")], "6");

    let mut single = quick_args(&out);
    single.save_result = true;
    single.append_result = true;
    single.result_filename = Some("appended.json".into());
    bench(&single).await;
    bench(&single).await;
    let appended = std::fs::read_to_string(out.join("appended.json")).unwrap();
    let lines: Vec<serde_json::Value> = appended
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "--append-result adds a JSON line per run");
    assert!(lines.iter().all(|v| v["completed"] == 8));
    let (_, rows) = read_csv(&out.join("summary_all.csv"));
    assert_eq!(rows.len(), 4);

    let table = dir.path().join("all.csv");
    llmb::report::aggregate(&llmb::args::AggregateArgs {
        paths: vec![out.clone()],
        output: Some(table.clone()),
    })
    .unwrap();
    let (header, rows) = read_csv(&table);
    assert_eq!(rows.len(), 4, "two stages and two appended runs");
    let files: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert!(
        files.iter().any(|f| f.ends_with("appended.json#1")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with("appended.json#2")),
        "{files:?}"
    );
    let concurrency = column(&header, "max_concurrency");
    let mut caps: Vec<&str> = rows.iter().map(|r| r[concurrency].as_str()).collect();
    caps.sort();
    assert_eq!(caps, vec!["", "", "1", "2"]);
    for name in [
        "request_throughput",
        "p99_ttft_ms",
        "p95_ttft_ms",
        "max_e2el_ms",
    ] {
        let c = column(&header, name);
        assert!(
            rows.iter().all(|r| r[c].parse::<f64>().unwrap() > 0.0),
            "{name}"
        );
    }
}

#[test]
fn aggregate_names_what_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let args = |p: &std::path::Path| llmb::args::AggregateArgs {
        paths: vec![p.to_path_buf()],
        output: Some(dir.path().join("x.csv")),
    };
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("other.json"), r#"{"not":"a result"}"#).unwrap();
    let err = llmb::report::aggregate(&args(&empty))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no result files under") && err.contains("empty"),
        "{err}"
    );

    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(
        broken.join("run.json"),
        "{\"request_throughput\": 1.0}\n{\"request_throughput\": oops}\n",
    )
    .unwrap();
    let err = format!("{:#}", llmb::report::aggregate(&args(&broken)).unwrap_err());
    assert!(err.contains("run.json:2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_metrics_are_scraped_and_agree_with_what_the_requests_saw() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.dataset_name = "shared-prefix".into();
    args.dataset_opts = vec![
        "shared-prefix-groups=2".into(),
        "shared-prefix-prompts=4".into(),
        "shared-prefix-len=64".into(),
        "shared-prefix-suffix-len=16".into(),
    ];
    args.num_prompts = 24;
    args.max_concurrency = Some(4);
    args.sim.prefix_cache = true;
    args.sim.itl_ms = 2.0;
    args.server_metrics_url = Some("/metrics".into());
    args.server_metrics_interval = 0.02;
    args.save_result = true;
    let outcome = bench(&args).await;
    let sm = outcome.server_metrics.as_ref().expect("scraped");
    assert_eq!(sm.failed_scrapes, 0);
    assert!(sm.series["vllm:num_requests_running"].len() >= 3, "{sm:?}");
    let running = sm.highlights.running.unwrap();
    assert!(running.max >= 1.0 && running.max <= 4.0, "{running:?}");
    assert_eq!(
        sm.delta["vllm:request_success_total"],
        outcome.metrics.completed as f64
    );
    // The server's hit rate over the stage is what the requests' usage reported.
    let cached: u64 = outcome
        .records
        .iter()
        .map(|r| u64::from(r.cached_prompt_tokens.unwrap_or(0)))
        .sum();
    let prompt: u64 = outcome
        .records
        .iter()
        .map(|r| u64::from(r.server_prompt_tokens.unwrap()))
        .sum();
    let (rate, _) = sm.highlights.prefix_cache_hit_rate.clone().unwrap();
    assert!(cached > 0);
    assert!(
        (rate - cached as f64 / prompt as f64).abs() < 1e-9,
        "{rate}"
    );

    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outcome.result_path.as_ref().unwrap()).unwrap())
            .unwrap();
    assert_eq!(
        saved["server_metrics"]["delta"]["vllm:request_success_total"],
        24.0
    );

    args.server_metrics_url = Some("http://127.0.0.1:9/metrics".into());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let Err(err) = llmb::bench::run(&args, rx).await else {
        panic!("a server that cannot be scraped must stop the run before it starts")
    };
    let err = format!("{err:#}");
    assert!(
        err.contains("--server-metrics-url http://127.0.0.1:9/metrics: cannot connect"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_batch_shows_as_waiting_requests_and_longer_ttft() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 12;
    args.max_concurrency = Some(6);
    args.sim.itl_ms = 3.0;
    args.server_metrics_url = Some("/metrics".into());
    args.server_metrics_interval = 0.01;
    let open = bench(&args).await;
    args.sim.max_batch = Some(2);
    let batched = bench(&args).await;
    let waiting = |o: &llmb_engine::outcome::BenchOutcome| {
        o.server_metrics
            .as_ref()
            .unwrap()
            .highlights
            .waiting
            .unwrap()
            .max
    };
    let running = |o: &llmb_engine::outcome::BenchOutcome| {
        o.server_metrics
            .as_ref()
            .unwrap()
            .highlights
            .running
            .unwrap()
            .max
    };
    assert_eq!(waiting(&open), 0.0);
    assert!(waiting(&batched) >= 1.0, "{:?}", batched.server_metrics);
    assert!(running(&batched) <= 2.0);
    // Queued at the server, not at the client: the wait shows in TTFT.
    assert!(
        batched.metrics.ttft.median > open.metrics.ttft.median + 10.0,
        "{} vs {}",
        batched.metrics.ttft.median,
        open.metrics.ttft.median
    );
}

/// The default result name holds the time of day; the records and CSV are named when the stage
/// starts and the result when it ends, so a run crossing a second boundary must still give all
/// three files one stem (`llmb report` pairs them by it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_records_and_csv_share_a_stem_across_a_second_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.save_result = true;
    args.result_filename = None;
    // 6 requests, one at a time, each about 0.25 s: the stage ends in a later second.
    args.num_prompts = 6;
    args.max_concurrency = Some(1);
    args.sim.itl_ms = 30.0;
    let outcome = llmb::bench::run(&args, tokio::sync::watch::channel(false).1)
        .await
        .unwrap();
    let result = outcome.result_path.expect("--save-result writes a result");
    let records = outcome.records_path.expect("records are written");
    let stem = result.file_stem().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        records.file_name().unwrap().to_string_lossy(),
        format!("{stem}.records.jsonl")
    );
    assert!(records.with_extension("csv").exists());
    assert!(dir.path().join(format!("{stem}.json")).exists());
}
