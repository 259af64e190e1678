//! `llmb aggregate`: folds the result files of many runs (config sweeps, recipes,
//! `--append-result` files) into one CSV table, reading each through
//! [`ResultFile`].

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use crate::result_file::{Num, ResultFile};

/// One result found by [`collect_results`]: the file, and the result's place in it when the
/// file holds several (`--append-result`).
pub struct FoundResult {
    pub file: PathBuf,
    pub index: Option<usize>,
    pub result: ResultFile,
}

/// Every result in `paths` (files, or folders searched recursively): a JSON object with
/// `request_throughput`, or JSON lines of them as `--append-result` writes. Other JSON files
/// (stage summaries, datasets) are skipped; a result file that does not parse is an error that
/// names it.
pub fn collect_results(paths: &[PathBuf]) -> anyhow::Result<Vec<FoundResult>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("{}: cannot open", p.display()))?;
        if meta.is_dir() {
            walk(p, &mut files)?;
        } else {
            files.push(p.clone());
        }
    }
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("{}: cannot read", file.display()))?;
        if !text.contains("\"request_throughput\"") {
            continue;
        }
        let values: Vec<Value> = match serde_json::from_str::<Value>(&text) {
            Ok(v) => vec![v],
            Err(whole) => text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    serde_json::from_str(l).with_context(|| {
                        format!(
                            "{}:{}: not a result (whole file: {whole})",
                            file.display(),
                            i + 1
                        )
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let several = values.len() > 1;
        for (i, v) in values.into_iter().enumerate() {
            if let Value::Object(doc) = v
                && doc.contains_key("request_throughput")
            {
                let index = several.then_some(i + 1);
                let result = ResultFile::from_map(doc).map_err(|e| {
                    e.in_file(&match index {
                        Some(i) => format!("{}#{i}", file.display()),
                        None => file.display().to_string(),
                    })
                })?;
                out.push(FoundResult {
                    file: file.clone(),
                    index,
                    result,
                });
            }
        }
    }
    Ok(out)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, files)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "json" || e == "jsonl")
            && !path.to_string_lossy().ends_with(".records.jsonl")
        {
            files.push(path);
        }
    }
    Ok(())
}

/// A column's text in a result.
type Text = fn(&ResultFile) -> Option<String>;

/// Columns that say what a run was, before its numbers: the key and its text.
const IDENTITY: [(&str, Text); 10] = [
    ("date", |r| r.date.clone()),
    ("label", |r| r.label.clone()),
    ("backend", |r| r.backend.clone()),
    ("model_id", |r| r.model_id.clone()),
    ("tokenizer_id", |r| r.tokenizer_id.clone()),
    ("request_rate", |r| num(&r.request_rate)),
    ("max_concurrency", |r| num(&r.max_concurrency)),
    ("burstiness", |r| num(&r.burstiness)),
    ("num_prompts", |r| num(&r.num_prompts)),
    ("duration", |r| num(&r.duration)),
];

/// A number as the file wrote it.
fn num(n: &Option<Num>) -> Option<String> {
    n.as_ref().map(Num::to_string)
}

/// One CSV over `results`: the file, what ran (label, backend, model, load) and every number the
/// results carry (vLLM's keys in the order of first appearance, then llmb's latency summary as
/// `ttft_p95_ms` and so on), so runs with different `--metric-percentiles` still line up.
pub fn aggregate_csv(results: &[FoundResult], out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let mut columns: Vec<String> = vec!["file".into(), "dataset".into()];
    columns.extend(IDENTITY.iter().map(|(key, _)| key.to_string()));
    let rows: Vec<Vec<(String, String)>> = results.iter().map(flatten).collect();
    for row in &rows {
        for (k, _) in row {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let mut w = csv::Writer::from_writer(out);
    w.write_record(&columns)?;
    for (found, row) in results.iter().zip(&rows) {
        let file = match found.index {
            Some(i) => format!("{}#{i}", found.file.display()),
            None => found.file.display().to_string(),
        };
        let record: Vec<String> = columns
            .iter()
            .map(|c| match c.as_str() {
                "file" => file.clone(),
                _ => row
                    .iter()
                    .find(|(k, _)| k == c)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
            })
            .collect();
        w.write_record(&record)?;
    }
    w.flush()?;
    Ok(())
}

fn flatten(found: &FoundResult) -> Vec<(String, String)> {
    let r = &found.result;
    let mut row: Vec<(String, String)> = Vec::new();
    let llmb = r.llmb.as_ref();
    if let Some(d) = llmb.and_then(|l| l.dataset_name.clone()) {
        row.push(("dataset".into(), d));
    }
    for (key, text) in IDENTITY {
        if let Some(v) = text(r) {
            row.push((key.to_string(), v));
        }
    }
    for (k, v) in r.numbers() {
        if !IDENTITY.iter().any(|(key, _)| *key == k) {
            row.push((k, v.to_string()));
        }
    }
    if let Some(stats) = llmb.and_then(|l| l.latency_stats_ms.as_ref()) {
        for (metric, s) in stats {
            for (q, v) in [
                ("p90", &s.p90),
                ("p95", &s.p95),
                ("min", &s.min),
                ("max", &s.max),
            ] {
                if let Some(v) = num(v) {
                    row.push((format!("{q}_{metric}_ms"), v));
                }
            }
        }
    }
    if let Some(g) = llmb
        .and_then(|l| l.slo.as_ref())
        .and_then(|s| num(&s.good_requests))
    {
        row.push(("good_requests".into(), g));
    }
    row
}

/// `llmb aggregate PATH... [--output FILE]`: one CSV row per result file found under `paths`,
/// to `output` or stdout.
pub fn aggregate(paths: &[PathBuf], output: Option<&Path>) -> anyhow::Result<()> {
    let results = collect_results(paths)?;
    anyhow::ensure!(
        !results.is_empty(),
        "no result files under {} (results are the JSON files --save-result writes)",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    match output {
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            aggregate_csv(&results, &mut file)?;
            eprintln!("{} results -> {}", results.len(), path.display());
        }
        None => aggregate_csv(&results, &mut std::io::stdout().lock())?,
    }
    Ok(())
}
