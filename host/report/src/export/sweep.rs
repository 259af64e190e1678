//! Files a sweep leaves for scripts: `summary_all.csv` with a row per stage of every run
//! written to a result folder, and beside a `--concurrency` sweep the per-stage
//! `requests_cX.csv`/`summary_cX.json` and `overall_summary.json` of the sweep scripts llmb
//! replaces.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use llmb_engine::sweep::StageSummary;

use super::requests::write_requests_csv;

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
    stages: &[llmb_engine::outcome::BenchOutcome],
    summaries: &[StageSummary],
    verdict: &llmb_engine::sweep::SweepVerdict,
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
        let stats = |x: &llmb_engine::metrics::MetricStats| {
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
