//! Files other tools read: a CSV row per request, `summary_all.csv` with a row per stage, and
//! `llmb aggregate`, which folds result files from many runs (config sweeps, recipes,
//! `--append-result` files) into one CSV table.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use crate::records::{RequestRecord, ns_to_s};
use crate::sweep::StageSummary;

/// The per-request CSV next to `records.jsonl`: timings in milliseconds since the run's start,
/// the numbers people sort and plot in a spreadsheet.
pub fn write_requests_csv(path: &Path, records: &[RequestRecord]) -> anyhow::Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    w.write_record([
        "id",
        "sample",
        "client",
        "turn",
        "warmup",
        "success",
        "error_kind",
        "http_status",
        "intended_ms",
        "sent_ms",
        "schedule_lag_ms",
        "queue_ms",
        "ttft_ms",
        "tpot_ms",
        "itl_max_ms",
        "e2el_ms",
        "prompt_tokens",
        "server_prompt_tokens",
        "cached_prompt_tokens",
        "requested_output_tokens",
        "output_tokens",
        "finish_reason",
        "error",
    ])?;
    let ms = |s: f64| format!("{:.3}", s * 1e3);
    let opt = |v: Option<String>| v.unwrap_or_default();
    for r in records {
        let ttft = r.ttft_s();
        let tpot = (r.success && r.output_tokens > 1)
            .then(|| (r.e2el_s() - ttft.unwrap_or(0.0)) / f64::from(r.output_tokens - 1));
        let itl_max = r.itls_s().reduce(f64::max);
        w.write_record([
            r.id.to_string(),
            r.sample.to_string(),
            opt(r.client.map(|c| c.to_string())),
            opt(r.turn.map(|t| t.to_string())),
            r.warmup.to_string(),
            r.success.to_string(),
            opt(r.error.as_ref().map(|e| e.kind.clone())),
            opt(r
                .error
                .as_ref()
                .and_then(|e| e.http_status)
                .map(|s| s.to_string())),
            ms(ns_to_s(r.scheduled_ns)),
            ms(ns_to_s(r.sent_ns)),
            ms(r.schedule_lag_s()),
            ms(r.queue_s()),
            opt(ttft.map(ms)),
            opt(tpot.map(ms)),
            opt(itl_max.map(ms)),
            if r.success {
                ms(r.e2el_s())
            } else {
                String::new()
            },
            r.prompt_tokens.to_string(),
            opt(r.server_prompt_tokens.map(|n| n.to_string())),
            opt(r.cached_prompt_tokens.map(|n| n.to_string())),
            r.requested_output_tokens.to_string(),
            r.output_tokens.to_string(),
            opt(r.finish_reason.clone()),
            opt(r
                .error
                .as_ref()
                .map(|e| crate::secrets::scrub(&e.message).into_owned())),
        ])?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

const SUMMARY_COLUMNS: [&str; 16] = [
    "run",
    "stage",
    "concurrency",
    "request_rate",
    "round",
    "completed",
    "failed",
    "error_rate",
    "request_throughput",
    "output_throughput",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "e2el_p50_ms",
    "e2el_p95_ms",
    "e2el_p99_ms",
    "result_file",
];

/// Appends one row per stage to `DIR/summary_all.csv` (the header when the file is new), so a
/// result folder keeps one table over every stage of every run written there.
pub fn append_summary_all(
    dir: &Path,
    run: &str,
    stages: &[(StageSummary, Option<PathBuf>)],
) -> anyhow::Result<PathBuf> {
    let path = dir.join("summary_all.csv");
    let fresh = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut w = csv::Writer::from_writer(file);
    if fresh {
        w.write_record(SUMMARY_COLUMNS)?;
    }
    for (s, result) in stages {
        w.write_record([
            run.to_string(),
            s.label.clone(),
            s.concurrency.map_or_else(String::new, |c| c.to_string()),
            if s.request_rate.is_finite() {
                s.request_rate.to_string()
            } else {
                "inf".into()
            },
            s.round.to_string(),
            s.completed.to_string(),
            s.failed.to_string(),
            format!("{:.4}", s.error_rate()),
            format!("{:.4}", s.request_throughput),
            format!("{:.4}", s.output_throughput),
            format!("{:.3}", s.ttft_p50_ms),
            format!("{:.3}", s.ttft_p99_ms),
            format!("{:.3}", s.e2el_p50_ms),
            format!("{:.3}", s.e2el_p95_ms),
            format!("{:.3}", s.e2el_p99_ms),
            result
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string()),
        ])?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// What a `--concurrency` sweep leaves beside its result files, under the names of the sweep
/// scripts llmb replaces: per stage `requests_cX.csv` (the per-request CSV, unless
/// `--no-records`) and `summary_cX.json` (the stage's numbers), then `overall_summary.json`
/// (best QPS, the saturation concurrency, every stage's files); `summary_all.csv` gets its rows
/// from [`append_summary_all`]. Neither JSON has a top-level `request_throughput`, so
/// `llmb aggregate` and `llmb report` do not take them for results. Returns the files written.
pub fn write_concurrency_sweep(
    dir: &Path,
    stages: &[crate::bench::BenchOutcome],
    summaries: &[StageSummary],
    verdict: &crate::sweep::SweepVerdict,
    write_requests: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    use serde_json::json;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let rate = |r: f64| {
        if r.is_finite() {
            json!(r)
        } else {
            json!("inf")
        }
    };
    let many_rates = summaries
        .iter()
        .any(|s| s.request_rate.to_bits() != summaries[0].request_rate.to_bits());
    let many_rounds = summaries.iter().any(|s| s.round > 1);
    let name = |p: &Option<PathBuf>| {
        p.as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    };
    let write_json = |path: &Path, doc: &Value| {
        std::fs::write(path, serde_json::to_vec_pretty(doc)?)
            .with_context(|| format!("cannot write {}", path.display()))
    };
    let mut written = Vec::new();
    let mut per_stage = Vec::new();
    for (outcome, s) in stages.iter().zip(summaries) {
        let mut tag = format!("c{}", s.concurrency.unwrap_or(0));
        if many_rates {
            tag.push_str(&format!(
                "_rate{}",
                rate(s.request_rate).to_string().trim_matches('"')
            ));
        }
        if many_rounds {
            tag.push_str(&format!("_round{}", s.round));
        }
        let requests_csv = write_requests.then(|| dir.join(format!("requests_{tag}.csv")));
        if let Some(path) = &requests_csv {
            write_requests_csv(path, &outcome.records)?;
            written.push(path.clone());
        }
        let m = &outcome.metrics;
        let stats = |x: &crate::metrics::MetricStats| {
            json!({
                "avg": x.mean, "p50": x.summary.p50, "p90": x.summary.p90, "p95": x.summary.p95,
                "p99": x.summary.p99, "min": x.summary.min, "max": x.summary.max, "count": x.count,
            })
        };
        let summary_file = dir.join(format!("summary_{tag}.json"));
        let result_file = name(&outcome.result_path);
        write_json(
            &summary_file,
            &json!({
                "llmb_kind": "stage_summary",
                "stage": s.label,
                "concurrency": s.concurrency,
                "request_rate": rate(s.request_rate),
                "round": s.round,
                "requests": m.completed + m.failed,
                "completed": m.completed,
                "failed": m.failed,
                "error_rate": s.error_rate(),
                "duration_s": m.duration_s,
                "qps": m.request_throughput,
                "output_tokens_per_s": m.output_throughput,
                "total_tokens_per_s": m.total_token_throughput,
                "input_tokens": m.total_input,
                "output_tokens": m.total_output,
                "latency_ms": stats(&m.e2el),
                "ttft_ms": stats(&m.ttft),
                "tpot_ms": stats(&m.tpot),
                "itl_ms": stats(&m.itl),
                "requests_csv": name(&requests_csv),
                "result_file": result_file,
            }),
        )?;
        written.push(summary_file.clone());
        per_stage.push(json!({
            "stage": s.label,
            "concurrency": s.concurrency,
            "qps": s.request_throughput,
            "output_tokens_per_s": s.output_throughput,
            "error_rate": s.error_rate(),
            "latency_p50_ms": s.e2el_p50_ms,
            "latency_p99_ms": s.e2el_p99_ms,
            "ttft_p50_ms": s.ttft_p50_ms,
            "ttft_p99_ms": s.ttft_p99_ms,
            "summary_file": name(&Some(summary_file)),
            "requests_csv": name(&requests_csv),
            "result_file": result_file,
        }));
    }
    let best_qps =
        summaries
            .iter()
            .enumerate()
            .fold(None::<(usize, f64)>, |best, (i, s)| match best {
                Some((_, q)) if q >= s.request_throughput => best,
                _ => Some((i, s.request_throughput)),
            });
    let concurrency_at = |i: usize| summaries.get(i).and_then(|s| s.concurrency);
    let first = stages.first().map(|o| &o.info);
    let overall = dir.join("overall_summary.json");
    write_json(
        &overall,
        &json!({
            "llmb_kind": "overall_summary",
            "model": first.map(|i| i.model_id.clone()),
            "backend": first.map(|i| i.backend.clone()),
            "endpoint": first.map(|i| i.endpoint.clone()),
            "base_url": first.map(|i| i.base_url.clone()),
            "dataset": first.map(|i| i.dataset_name.clone()),
            "concurrencies": summaries.iter().map(|s| s.concurrency).collect::<Vec<_>>(),
            "best_qps": best_qps.map(|(_, q)| q),
            "best_qps_concurrency": best_qps.and_then(|(i, _)| concurrency_at(i)),
            "best_output_tokens_per_s": verdict.best.map(|i| summaries[i].output_throughput),
            "best_output_concurrency": verdict.best.and_then(concurrency_at),
            // The last concurrency that still raised throughput before latency or errors rose.
            "saturation_concurrency": verdict.saturation.as_ref().and_then(|s| concurrency_at(s.knee)),
            "saturation": verdict.saturation.as_ref().map(|s| json!({
                "knee_concurrency": concurrency_at(s.knee),
                "next_concurrency": concurrency_at(s.flat),
                "throughput_gain": s.throughput_gain,
                "p99_latency_rise": s.p99_e2el_rise,
                "error_rate_rise": s.error_rate_rise,
            })),
            "stage_count": per_stage.len(),
            "per_stage": per_stage,
            "summary_all_csv": "summary_all.csv",
        }),
    )?;
    written.push(overall);
    Ok(written)
}

/// One result found by [`collect_results`]: the file, and the result's place in it when the
/// file holds several (`--append-result`).
pub struct FoundResult {
    pub file: PathBuf,
    pub index: Option<usize>,
    pub result: serde_json::Map<String, Value>,
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
            if let Value::Object(result) = v
                && result.contains_key("request_throughput")
            {
                out.push(FoundResult {
                    file: file.clone(),
                    index: several.then_some(i + 1),
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

/// Columns that say what a run was, before its numbers.
const IDENTITY: [&str; 10] = [
    "date",
    "label",
    "backend",
    "model_id",
    "tokenizer_id",
    "request_rate",
    "max_concurrency",
    "burstiness",
    "num_prompts",
    "duration",
];

/// One CSV over `results`: the file, what ran (label, backend, model, load) and every number the
/// results carry (vLLM's keys in the order of first appearance, then llmb's latency summary as
/// `ttft_p95_ms` and so on), so runs with different `--metric-percentiles` still line up.
pub fn aggregate_csv(results: &[FoundResult], out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let mut columns: Vec<String> = vec!["file".into(), "dataset".into()];
    columns.extend(IDENTITY.iter().map(|s| s.to_string()));
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
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut row: Vec<(String, String)> = Vec::new();
    let llmb = r.get("llmb").and_then(Value::as_object);
    if let Some(d) = llmb.and_then(|l| l.get("dataset_name")) {
        row.push(("dataset".into(), text(d)));
    }
    for key in IDENTITY {
        if let Some(v) = r.get(key) {
            row.push((key.into(), text(v)));
        }
    }
    for (k, v) in r {
        if v.is_number() && !IDENTITY.contains(&k.as_str()) {
            row.push((k.clone(), text(v)));
        }
    }
    if let Some(stats) = llmb
        .and_then(|l| l.get("latency_stats_ms"))
        .and_then(Value::as_object)
    {
        for (metric, s) in stats {
            for q in ["p90", "p95", "min", "max"] {
                if let Some(v) = s.get(q) {
                    row.push((format!("{q}_{metric}_ms"), text(v)));
                }
            }
        }
    }
    if let Some(g) = llmb
        .and_then(|l| l.get("slo"))
        .and_then(|s| s.get("good_requests"))
    {
        row.push(("good_requests".into(), text(g)));
    }
    row
}

/// `llmb aggregate PATH... [--output FILE]`.
pub fn aggregate(args: &crate::cli::AggregateArgs) -> anyhow::Result<()> {
    let results = collect_results(&args.paths)?;
    anyhow::ensure!(
        !results.is_empty(),
        "no result files under {} (results are the JSON files --save-result writes)",
        args.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    match &args.output {
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
