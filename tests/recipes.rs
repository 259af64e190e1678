//! `llmb run`: a recipe's matrix expands, every case runs against the simulator and the
//! aggregate table covers them; the shipped examples expand without errors.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipe_runs_every_case_and_ends_with_the_aggregate_table() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("pairs.toml");
    std::fs::write(
        &recipe,
        format!(
            r#"
html-report = true

[bench]
num-prompts = "${{LLMB_TEST_SURELY_UNSET_PROMPTS:-6}}"
ignore-eos = true
disable-tqdm = true
sim-ttft-ms = 2
sim-itl-ms = 1
result-dir = "{}"

[matrix]
lengths = [
  {{ random-input-len = 12, random-output-len = 3 }},
  {{ random-input-len = 40, random-output-len = 5 }},
]
max-concurrency = [1, 3]
"#,
            dir.path().join("out").display()
        ),
    )
    .unwrap();
    llmb::recipe::run(&llmb::args::RunArgs {
        recipe: recipe.clone(),
        dry_run: false,
    })
    .await
    .unwrap();
    let out = dir.path().join("out");
    for name in [
        "pairs-01-random-input-len12_random-output-len3_max-concurrency1.json",
        "pairs-04-random-input-len40_random-output-len5_max-concurrency3.json",
    ] {
        assert!(out.join(name).exists(), "{name}");
    }
    let mut table = csv::Reader::from_path(out.join("pairs-aggregate.csv")).unwrap();
    let header: Vec<String> = table.headers().unwrap().iter().map(str::to_owned).collect();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let rows: Vec<Vec<String>> = table
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 4);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.matches("<svg").count() >= 4,
        "the report charts the cases"
    );
    let mut seen: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r[col("max_concurrency")].clone(),
                r[col("total_input_tokens")].clone(),
                r[col("total_output_tokens")].clone(),
            )
        })
        .collect();
    seen.sort();
    let expect = |c: &str, i: &str, o: &str| (c.to_string(), i.to_string(), o.to_string());
    assert_eq!(
        seen,
        vec![
            expect("1", "240", "30"),
            expect("1", "72", "18"),
            expect("3", "240", "30"),
            expect("3", "72", "18"),
        ]
    );
}

#[test]
fn the_shipped_examples_expand() {
    let examples = workspace_root().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("slo.") {
            assert!(
                !llmb_engine::metrics::parse_slo_file(&path)
                    .unwrap()
                    .is_empty()
            );
            continue;
        }
        let recipe = match ext {
            "toml" => text.contains("[bench]"),
            "yaml" | "yml" => text.contains("bench:") || text.contains("input_output:"),
            _ => false,
        };
        if !recipe {
            continue;
        }
        let cases = llmb::recipe::load(&path, &|_| None)
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        assert!(!cases.is_empty());
        for c in &cases {
            assert!(
                c.args.base_url.is_none(),
                "defaults run against the simulator"
            );
            if let Some(slo) = &c.args.slo_file {
                llmb_engine::metrics::parse_slo_file(slo).unwrap();
            }
            if let Some(data) = &c.args.dataset_path {
                assert!(data.exists(), "{}", data.display());
            }
        }
        checked += 1;
    }
    assert!(checked >= 5, "{checked} recipes");
}

/// The same recipe in TOML and in YAML expands to the same cases.
#[test]
fn a_yaml_recipe_is_a_toml_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("r.toml");
    std::fs::write(
        &toml,
        r#"
html-report = true
[bench]
model = "${MODEL:-m}"
ignore-eos = true
goodput = ["ttft:200", "tpot:50"]
[matrix]
lengths = [
  { random-input-len = 1024, random-output-len = 128 },
  { random-input-len = 128, random-output-len = 1024 },
]
max-concurrency = [1, 8]
"#,
    )
    .unwrap();
    let yaml = dir.path().join("r.yaml");
    std::fs::write(
        &yaml,
        r#"
html-report: true
bench:
  model: "${MODEL:-m}"
  ignore-eos: true
  goodput: [ "ttft:200", "tpot:50" ]
  base-url:          # empty: left out
matrix:
  lengths:
    - {random-input-len: 1024, random-output-len: 128}
    - random-input-len: 128
      random-output-len: 1024
  max-concurrency: [1, 8]
"#,
    )
    .unwrap();
    let env = |_: &str| None;
    let argv = |p: &std::path::Path| -> Vec<(String, Vec<String>)> {
        llmb::recipe::load(p, &env)
            .unwrap()
            .into_iter()
            .map(|c| (c.label, c.argv))
            .collect()
    };
    assert_eq!(argv(&toml).len(), 4);
    assert_eq!(argv(&toml), argv(&yaml));
    assert!(llmb::recipe::wants_html_report(&yaml).unwrap());

    std::fs::write(&yaml, "bench:\n  max-concurency: 4\n").unwrap();
    let err = format!("{:#}", llmb::recipe::load(&yaml, &env).unwrap_err());
    assert!(
        err.contains("r.yaml") && err.contains("--max-concurency"),
        "{err}"
    );
    std::fs::write(&yaml, "bench:\n  seed: 1\n  seed: 2\n").unwrap();
    let err = format!("{:#}", llmb::recipe::load(&yaml, &env).unwrap_err());
    assert!(err.contains("r.yaml") && err.contains("line 3"), "{err}");
    std::fs::write(&yaml, "input_output: [[256, 256], [512]]\n").unwrap();
    let err = format!("{:#}", llmb::recipe::load(&yaml, &env).unwrap_err());
    assert!(
        err.contains("r.yaml") && err.contains("input_output item 2") && err.contains("[512]"),
        "{err}"
    );
}

/// A sweep config as the vLLM sweep scripts read it (`model`, `base_url`, `tokenizer`,
/// `input_output`, `concurrency_prompts`) runs the cartesian product of its pairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_sweep_config_runs_the_cartesian_product() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"model: "llmb-sim"
tokenizer: "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"   # a hub name: left to the server
input_output:
  - [12, 3]
  - [40, 5]
concurrency_prompts:
  - [1, 2]
  - [3, 6]
ignore_eos: true
disable_tqdm: true
sim_ttft_ms: 2
sim_itl_ms: 1
result_dir: "{}"
"#,
            out.display()
        ),
    )
    .unwrap();
    let cases = llmb::recipe::load(&config, &|_| None).unwrap();
    let shape: Vec<_> = cases
        .iter()
        .map(|c| {
            (
                c.args.random_input_len,
                c.args.random_output_len,
                c.args.max_concurrency,
                c.args.num_prompts,
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (12, 3, Some(1), 2),
            (12, 3, Some(3), 6),
            (40, 5, Some(1), 2),
            (40, 5, Some(3), 6)
        ],
        "lengths outermost, as the scripts loop"
    );
    for c in &cases {
        assert_eq!(c.args.dataset_name, "random");
        assert_eq!(c.args.percentile_metrics, "ttft,tpot,itl,e2el");
        assert!(
            c.args.tokenizer.is_none(),
            "a hub name is not a local tokenizer"
        );
        assert!(c.args.base_url.is_none(), "no base_url: the simulator");
    }
    assert_eq!(
        cases[0].args.result_filename.as_deref(),
        Some("config-01-random-input-len12_random-output-len3_max-concurrency1_num-prompts2.json")
    );

    llmb::recipe::run(&llmb::args::RunArgs {
        recipe: config.clone(),
        dry_run: false,
    })
    .await
    .unwrap();
    let (header, rows) = {
        let mut t = csv::Reader::from_path(out.join("config-aggregate.csv")).unwrap();
        let header: Vec<String> = t.headers().unwrap().iter().map(str::to_owned).collect();
        let rows: Vec<Vec<String>> = t
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        (header, rows)
    };
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let mut seen: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r[col("max_concurrency")].clone(),
                r[col("completed")].clone(),
                r[col("total_input_tokens")].clone(),
                r[col("total_output_tokens")].clone(),
            ]
        })
        .collect();
    seen.sort();
    let row = |a: &str, b: &str, c: &str, d: &str| [a, b, c, d].map(str::to_string);
    assert_eq!(
        seen,
        [
            row("1", "2", "24", "6"),
            row("1", "2", "80", "10"),
            row("3", "6", "240", "30"),
            row("3", "6", "72", "18"),
        ]
    );
}

/// `examples/sweep-config.yaml` as shipped, end to end against the simulator (made fast, and
/// writing into a temporary folder through its RESULT_DIR variable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_sweep_config_runs_against_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let env = |name: &str| (name == "RESULT_DIR").then(|| out.clone());
    let example = workspace_root().join("examples/sweep-config.yaml");
    let cases = llmb::recipe::load(&example, &env).unwrap();
    assert_eq!(cases.len(), 4);
    assert!(llmb::recipe::wants_html_report(&example).unwrap());
    for case in &cases {
        let mut args = case.args.clone();
        args.disable_tqdm = true;
        args.sim.ttft_ms = 1.0;
        args.sim.itl_ms = 0.02;
        let o = bench(&args).await;
        assert_eq!(o.metrics.completed, args.num_prompts, "{}", case.label);
        assert_eq!(
            o.metrics.total_output,
            u64::from(args.random_output_len) * args.num_prompts as u64
        );
        assert_eq!(o.info.max_concurrency, args.max_concurrency);
        assert!(o.result_path.as_ref().unwrap().starts_with(dir.path()));
    }
}

/// An `llmb.lock` next to a recipe pins every case's plugins: a case whose plugin differs
/// from the lock is refused before it sends anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_next_to_a_recipe_pins_its_cases() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("locked.toml");
    std::fs::write(
        &recipe,
        format!(
            "[bench]\nnum-prompts = 2\nrandom-output-len = 2\ndisable-tqdm = true\nresult-dir = \"{}\"\n",
            dir.path().join("results").display()
        ),
    )
    .unwrap();
    let cases = llmb::recipe::load(&recipe, &|_| None).unwrap();
    assert_eq!(cases[0].args.lock, None, "no lock, nothing pinned");
    let lock = dir.path().join("llmb.lock");
    std::fs::write(
        &lock,
        "version = 1\n\n[[plugin]]\nname = \"vllm\"\nkind = \"backend\"\nversion = \"0.1.0\"\n\
         sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
    )
    .unwrap();
    let cases = llmb::recipe::load(&recipe, &|_| None).unwrap();
    assert_eq!(cases[0].args.lock.as_deref(), Some(lock.as_path()));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let Err(e) = llmb::bench::run(&cases[0].args, rx).await else {
        panic!("the run should have been refused");
    };
    let e = format!("{e:#}");
    assert!(
        e.contains("the backend plugin vllm is 0.1.0") && e.contains("pins 0.1.0"),
        "{e}"
    );
}

/// A recipe case takes `llmb bench`'s campaign flags too: `num-runs` repeats each case and
/// `search` runs an SLO search per case, every stage's result in the aggregate table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipe_cases_repeat_and_search() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let recipe = dir.path().join("campaign.toml");
    std::fs::write(
        &recipe,
        format!(
            r#"
[bench]
num-prompts = 4
ignore-eos = true
disable-tqdm = true
save-result = true
sim-ttft-ms = 2
sim-itl-ms = 1
result-dir = "{}"

[matrix]
campaign = [
  {{ num-runs = 2 }},
  {{ search = "concurrency", slo = "p99_ttft_ms<=1000" }},
]
"#,
            out.display()
        ),
    )
    .unwrap();
    llmb::recipe::run(&llmb::args::RunArgs {
        recipe,
        dry_run: false,
    })
    .await
    .unwrap();
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let has = |suffix: &str| names.iter().any(|n| n.ends_with(suffix));
    assert!(
        has("-run1.json") && has("-run2.json") && has("-runs.json"),
        "{names:?}"
    );
    // Concurrency 1, 2 and 4: the stage's 4 requests are the ceiling.
    assert!(has("-search-c4.json") && has("-search.json"), "{names:?}");
    let table = csv::Reader::from_path(out.join("campaign-aggregate.csv"))
        .unwrap()
        .into_records()
        .count();
    assert_eq!(table, 2 + 3, "two runs and three search stages");
}
