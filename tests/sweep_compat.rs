//! Files and command lines brought from the tools llmb replaces work as they are: a
//! concurrency-sweep command line (`--endpoint chat.completions --prompt-file ... --outdir`)
//! leaves `requests_cX.csv`, `summary_cX.json`, `summary_all.csv` and `overall_summary.json`,
//! `llmb report --indir` makes the HTML report of that folder, and a YAML SLO file with `_ms`
//! keys sets the goodput limits. Everything runs against the in-process simulator.

mod common;

use std::path::Path;

use clap::Parser;
use common::*;
use llmb::args::{BenchArgs, Cli, Command};

fn bench_args(words: &[&str]) -> BenchArgs {
    let cli = Cli::try_parse_from(["llmb", "bench"].iter().chain(words))
        .unwrap_or_else(|e| panic!("{e}"));
    let Command::Bench(mut args) = cli.command else {
        unreachable!()
    };
    args.api_key = None;
    *args
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .map(|x| x.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_command_line_leaves_its_files_and_report_indir_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("llm_bench_out");
    let prompts = dir.path().join("prompts_chat.json");
    std::fs::write(
        &prompts,
        r#"[
  [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}],
  {"messages": [{"role": "user", "content": "Count to three."}]}
]"#,
    )
    .unwrap();
    let out_s = out.display().to_string();
    let prompts_s = prompts.display().to_string();
    let args = bench_args(&[
        "--endpoint",
        "chat.completions",
        "--concurrency",
        "1,2,4",
        "--requests-per-stage",
        "6",
        "--stream",
        "--max-tokens",
        "5",
        "--prompt-file",
        &prompts_s,
        "--outdir",
        &out_s,
        "--disable-tqdm",
        "--sim-ttft-ms",
        "3",
        "--sim-itl-ms",
        "1",
    ]);
    let sweep = llmb::bench::run_all(&args, tokio::sync::watch::channel(false).1, &mut |_| Ok(()))
        .await
        .unwrap();
    assert_eq!(sweep.stages.len(), 3);
    for stage in &sweep.stages {
        assert_eq!(
            stage.info.backend, "openai-chat",
            "--endpoint names the backend"
        );
        assert_eq!(stage.info.endpoint, "/v1/chat/completions");
        assert_eq!(stage.info.dataset_name, "prompt-file");
        assert_eq!(stage.metrics.completed, 6);
        assert_eq!(stage.metrics.failed, 0);
        assert!(
            stage
                .records
                .iter()
                .all(|r| r.requested_output_tokens == 5 && (3..=5).contains(&r.output_tokens)),
            "--max-tokens sets every request's output length"
        );
    }

    for c in [1, 2, 4] {
        let (header, rows) = csv_rows(&out.join(format!("requests_c{c}.csv")));
        assert_eq!(rows.len(), 6, "one row per request");
        let ttft = header.iter().position(|h| h == "ttft_ms").unwrap();
        assert!(rows.iter().all(|r| r[ttft].parse::<f64>().unwrap() > 0.0));

        let s = json(&out.join(format!("summary_c{c}.json")));
        assert_eq!(s["concurrency"], c);
        assert_eq!(s["requests"], 6);
        assert_eq!(s["completed"], 6);
        assert_eq!(s["error_rate"], 0.0);
        assert!(s["qps"].as_f64().unwrap() > 0.0);
        assert!(
            s["latency_ms"]["p99"].as_f64().unwrap() >= s["latency_ms"]["p50"].as_f64().unwrap()
        );
        assert!(s["ttft_ms"]["avg"].as_f64().unwrap() > 0.0);
        assert_eq!(s["requests_csv"], format!("requests_c{c}.csv"));
        let result = s["result_file"]
            .as_str()
            .expect("a concurrency sweep saves its results");
        assert!(result.ends_with(&format!("-c{c}.json")), "{result}");
        assert!(out.join(result).exists());
    }

    let (header, rows) = csv_rows(&out.join("summary_all.csv"));
    assert_eq!(rows.len(), 3);
    let conc = header.iter().position(|h| h == "concurrency").unwrap();
    assert_eq!(
        rows.iter().map(|r| r[conc].as_str()).collect::<Vec<_>>(),
        ["1", "2", "4"]
    );

    let overall = json(&out.join("overall_summary.json"));
    let qps: Vec<f64> = sweep
        .summaries
        .iter()
        .map(|s| s.request_throughput)
        .collect();
    let best = qps.iter().cloned().fold(f64::MIN, f64::max);
    assert_eq!(overall["best_qps"].as_f64().unwrap(), best);
    let best_c = [1, 2, 4][qps.iter().position(|q| *q == best).unwrap()];
    assert_eq!(overall["best_qps_concurrency"], best_c);
    assert_eq!(overall["concurrencies"], serde_json::json!([1, 2, 4]));
    assert_eq!(overall["backend"], "openai-chat");
    assert_eq!(overall["per_stage"].as_array().unwrap().len(), 3);
    let saturation = &overall["saturation_concurrency"];
    match &sweep.verdict.saturation {
        Some(s) => assert_eq!(*saturation, [1, 2, 4][s.knee]),
        None => assert!(saturation.is_null()),
    }

    // `llmb report --indir DIR`, as the report scripts are called.
    let cli = Cli::try_parse_from(["llmb", "report", "--indir", &out_s]).unwrap();
    let Command::Report(report_args) = cli.command else {
        unreachable!()
    };
    let (path, report) = llmb::report::write_report(&report_args).unwrap();
    assert_eq!(path, out.join("report.html"));
    assert_eq!(report.runs.len(), 3);
    assert_eq!(report.sweeps.len(), 1);
    assert!(
        report.skipped.is_empty(),
        "the summaries are not reported as strange files: {:?}",
        report.skipped
    );
    assert!(report.runs.iter().all(|r| r.records.is_some()));
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.contains("<section id=\"stages\">"));
    assert!(html.contains(">concurrency 4<"));
    assert!(html.matches("<svg").count() >= 5, "charts");
    // The summaries are not results to `llmb aggregate` either.
    let found = llmb_report::export::collect_results(std::slice::from_ref(&out)).unwrap();
    assert_eq!(found.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_system_and_prompt_file_reach_the_server_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let run = |words: Vec<String>| {
        let mut args = bench_args(&words.iter().map(String::as_str).collect::<Vec<_>>());
        args.result_dir = dir.path().to_path_buf();
        args.num_prompts = 4;
        args.disable_tqdm = true;
        args.sim.ttft_ms = 2.0;
        args.sim.itl_ms = 0.5;
        args
    };
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // The simulator fails requests whose prompt holds a fault marker: where the marker sits
    // shows which text was sent. (A run whose first prompt fails stops at the pre-flight
    // request with the server's error.)
    let o = bench(&run(words(&[
        "--endpoint",
        "chat.completions",
        "--user",
        "hello",
    ])))
    .await;
    assert_eq!((o.metrics.completed, o.metrics.failed), (4, 0));
    assert_eq!(o.info.dataset_name, "user-prompt");
    let all_fail = |args: BenchArgs, why: &'static str| async move {
        match llmb::bench::run(&args, tokio::sync::watch::channel(false).1).await {
            Ok(o) => assert_eq!(o.metrics.failed, 4, "{why}"),
            Err(e) => assert!(
                format!("{e:#}").contains("simulated internal error"),
                "{why}: {e:#}"
            ),
        }
    };
    all_fail(
        run(words(&[
            "--endpoint",
            "chat.completions",
            "--user",
            "x __sim_fault:http500__",
        ])),
        "the --user text is every request",
    )
    .await;
    let mut args = run(words(&[
        "--endpoint",
        "responses",
        "--user",
        "hello",
        "--system",
        "__sim_fault:http500__",
    ]));
    assert_eq!(
        llmb::config::sweep::normalize(&args).unwrap().backend,
        "openai-responses"
    );
    args.num_prompts = 4;
    all_fail(args, "--system goes with every request").await;
    let o = bench(&run(words(&[
        "--endpoint",
        "responses",
        "--user",
        "hello",
        "--system",
        "Be brief.",
    ])))
    .await;
    assert_eq!(o.info.backend, "openai-responses");
    assert_eq!(o.metrics.completed, 4);

    let file = dir.path().join("p.jsonl");
    std::fs::write(
        &file,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"fine\"}]}\n\
         [{\"role\": \"user\", \"content\": \"__sim_fault:http500__\"}]\n",
    )
    .unwrap();
    let mut args = run(words(&[
        "--endpoint",
        "chat.completions",
        "--prompt-file",
        &file.display().to_string(),
    ]));
    args.max_concurrency = Some(1);
    let o = bench(&args).await;
    let mut by_id: Vec<_> = o.records.iter().map(|r| (r.id, r.success)).collect();
    by_id.sort();
    assert_eq!(
        by_id.iter().map(|(_, ok)| *ok).collect::<Vec<_>>(),
        [true, false, true, false],
        "entries go out in file order, cycled"
    );

    let err = llmb::bench::run(
        &run(words(&["--user", "a", "--dataset-name", "sharegpt"])),
        tokio::sync::watch::channel(false).1,
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("--user") && err.contains("sharegpt"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_slo_file_with_ms_keys_sets_goodput() {
    let dir = tempfile::tempdir().unwrap();
    let slo = dir.path().join("slo.yaml");
    std::fs::write(
        &slo,
        "slo: {ttft_ms: 1000, itl_ms: 50, latency_ms: 10000}\n",
    )
    .unwrap();
    assert_eq!(
        llmb_engine::metrics::parse_slo_file(&slo).unwrap(),
        vec![
            ("ttft".to_string(), 1000.0),
            ("itl".to_string(), 50.0),
            ("e2el".to_string(), 10000.0)
        ]
    );
    let mut args = quick_args(dir.path());
    args.slo_file = Some(slo);
    let o = bench(&args).await;
    let outcome = o.metrics.slo.as_ref().expect("SLOs from the YAML file");
    assert_eq!(outcome.good_requests, 8);

    // Top-level keys, block style, a file name without an extension, a tight limit.
    let tight = dir.path().join("limits");
    std::fs::write(&tight, "# e2e budget\ne2el_ms: 0.001\ntpot_ms: 1000\n").unwrap();
    assert_eq!(
        llmb_engine::metrics::parse_slo_file(&tight).unwrap(),
        vec![("tpot".to_string(), 1000.0), ("e2el".to_string(), 0.001)]
    );
    args.slo_file = Some(tight);
    let o = bench(&args).await;
    assert_eq!(o.metrics.slo.as_ref().unwrap().good_requests, 0);

    for (name, text, expected) in [
        (
            "typo.yaml",
            "slo: {ttfb_ms: 200}\n",
            "unknown key \"ttfb_ms\"",
        ),
        (
            "twice.yml",
            "ttft: 1\nttft_ms: 2\n",
            "ttft_ms sets the ttft limit a second time",
        ),
        (
            "text.yaml",
            "itl_ms: 50ms\n",
            "itl_ms must be a number of milliseconds, not a string",
        ),
        (
            "neg.yaml",
            "slo:\n  latency_ms: -5\n",
            "latency_ms must be a non-negative",
        ),
        ("broken.yaml", "slo: {ttft_ms: 1\n", "not valid YAML"),
        ("list.yaml", "- ttft_ms: 1\n", "expected keys and values"),
        ("neither", "= 1\n- x\n", "not valid TOML"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let err = llmb_engine::metrics::parse_slo_file(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(name) && err.contains(expected), "{err}");
    }
}
