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
    llmb::recipe::run(&llmb::cli::RunArgs {
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
        if path.extension().is_none_or(|e| e != "toml") || !text.contains("[bench]") {
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
                llmb::metrics::parse_slo_file(slo).unwrap();
            }
            if let Some(data) = &c.args.dataset_path {
                assert!(data.exists(), "{}", data.display());
            }
        }
        checked += 1;
    }
    assert!(checked >= 4, "{checked} recipes");
}
