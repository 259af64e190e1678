//! `llmb bench --search rate|concurrency --slo ...`: the highest load that meets every SLO.
//!
//! Each stage is an ordinary run at one load (saved with a `-search-rN`/`-search-cN` suffix, so
//! every stage's evidence stays on disk); [`Search`] picks the next load from the verdicts.
//! Stages are separate runs so that one stopped early (it could no longer meet a percentile
//! SLO) does not stop the search; Ctrl-C stops both.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use llmb_engine::lifecycle::Cancel;
use llmb_engine::slo_search::{Search, SearchKind, SloCheck, parse_slos};
use serde::Serialize;

use crate::args::BenchArgs;

/// One stage of the search and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct SearchStage {
    pub load: f64,
    pub met: bool,
    pub checks: Vec<SloCheck>,
    /// Why the stage ended before all its requests, when it did.
    pub stopped_early: Option<String>,
    pub completed: usize,
    pub failed: usize,
    pub request_throughput: f64,
    pub result: Option<String>,
}

/// What the search found.
#[derive(Debug, Clone, Serialize)]
pub struct SearchOutcome {
    pub kind: SearchKind,
    pub slos: Vec<String>,
    /// The highest load that met every SLO (`None`: not even the lowest tried).
    pub best: Option<f64>,
    /// The lowest load that missed one.
    pub first_fail: Option<f64>,
    /// The highest load the stages could apply, when there was one.
    pub ceiling: Option<f64>,
    pub stages: Vec<SearchStage>,
}

/// Runs the search and prints and saves its outcome.
pub async fn run_search(args: &BenchArgs, cancel: &Cancel) -> anyhow::Result<SearchOutcome> {
    let kind = match args.search.as_deref() {
        Some("concurrency" | "max_concurrency") => SearchKind::Concurrency,
        _ => SearchKind::Rate,
    };
    let slos = match (&args.slo, &args.sla_params) {
        (Some(list), _) => parse_slos(list)?,
        (None, Some(path)) => parse_slos(&vllm_sla_params(path)?)?,
        (None, None) => anyhow::bail!("--search needs --slo LIST or --sla-params FILE"),
    };
    anyhow::ensure!(
        args.search_start > 0.0 && args.search_start.is_finite(),
        "--search-start must be a positive load"
    );
    anyhow::ensure!(
        args.search_max_stages >= 1,
        "--search-max-stages must be at least 1"
    );
    anyhow::ensure!(
        args.search_tolerance.is_finite() && args.search_tolerance > 0.0,
        "--search-tolerance must be a positive percentage, not {}",
        args.search_tolerance
    );
    anyhow::ensure!(
        args.concurrency.is_none() && args.request_rate.len() <= 1,
        "--search picks the load itself: drop --concurrency and the --request-rate list"
    );
    let mut search = Search::new(kind, args.search_tolerance / 100.0);
    if kind == SearchKind::Concurrency && args.duration.is_none() {
        // More clients than requests in a stage apply no more load.
        search.ceiling = Some(args.num_prompts as f64);
    }
    let mut load = match kind {
        SearchKind::Rate => args.search_start,
        SearchKind::Concurrency => {
            anyhow::ensure!(
                args.search_start.fract() == 0.0 && args.search_start <= 1e6,
                "--search-start {} is not a whole concurrency of at most 1,000,000",
                args.search_start
            );
            args.search_start.min(search.ceiling.unwrap_or(f64::MAX))
        }
    };
    let mut stages = Vec::new();
    eprintln!(
        "SLO search over {}: {}",
        match kind {
            SearchKind::Rate => "the request rate",
            SearchKind::Concurrency => "the concurrency",
        },
        slos.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    while stages.len() < args.search_max_stages && !cancel.is_stopping() {
        let mut stage_args = args.clone();
        stage_args.search = None;
        stage_args.stop_on_slos = slos.clone();
        match kind {
            SearchKind::Rate => {
                stage_args.request_rate = vec![load];
                stage_args.run_suffix = format!("{}-search-r{load}", args.run_suffix);
            }
            SearchKind::Concurrency => {
                stage_args.max_concurrency = Some(load as usize);
                stage_args.run_suffix = format!("{}-search-c{load}", args.run_suffix);
            }
        }
        eprintln!(
            "search stage {}: {}",
            stages.len() + 1,
            describe(kind, load)
        );
        let stage_stop = Cancel::new();
        let forward = {
            let (parent, child) = (cancel.clone(), stage_stop.clone());
            tokio::spawn(async move {
                parent.stopped().await;
                child.stop(llmb_engine::lifecycle::StopCause::Interrupt);
            })
        };
        let outcome = crate::bench::run_and_print(&stage_args, &stage_stop).await;
        forward.abort();
        let sweep = outcome?;
        let Some(stage) = sweep.stages.last() else {
            break;
        };
        if cancel.is_stopping() {
            break;
        }
        let checks = llmb_engine::slo_search::check(&stage.records, &slos);
        // A stage the watch stopped has missed, whatever its finished requests say.
        let stopped_by_slo = matches!(
            stage_stop.cause(),
            Some(llmb_engine::lifecycle::StopCause::SloMissed(_))
        );
        let met = checks.iter().all(|c| c.met) && stage.metrics.completed > 0 && !stopped_by_slo;
        search.record(load, met);
        print_stage(kind, load, &checks, met);
        stages.push(SearchStage {
            load,
            met,
            checks,
            stopped_early: stage.stop_reason.clone(),
            completed: stage.metrics.completed,
            failed: stage.metrics.failed,
            request_throughput: stage.metrics.request_throughput,
            result: stage.result_path.as_ref().map(|p| p.display().to_string()),
        });
        match search.next(load) {
            Some(next) => load = next,
            None => break,
        }
    }
    let outcome = SearchOutcome {
        kind,
        slos: slos.iter().map(|s| s.to_string()).collect(),
        best: search.best_pass,
        first_fail: search.first_fail,
        ceiling: search.ceiling,
        stages,
    };
    print_outcome(&outcome)?;
    if args.save_result || args.save_detailed {
        save(args, &outcome)?;
    }
    Ok(outcome)
}

/// vLLM's `--sla-params` file (`[{"p99_ttft_ms": "<=200", ...}]`) as an `--slo` list.
fn vllm_sla_params(path: &Path) -> anyhow::Result<String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{shown}: not JSON"))?;
    let sets = match &doc {
        serde_json::Value::Array(sets) => sets.clone(),
        object @ serde_json::Value::Object(_) => vec![object.clone()],
        _ => anyhow::bail!("{shown}: expected a list of SLA objects"),
    };
    anyhow::ensure!(
        sets.len() == 1,
        "{shown}: {} SLA sets; a search meets one set at a time (run once per set)",
        sets.len()
    );
    let set = sets[0]
        .as_object()
        .with_context(|| format!("{shown}: the SLA set should be an object"))?;
    set.iter()
        .map(|(key, value)| {
            let limit = match value {
                serde_json::Value::String(s) => {
                    s.trim().trim_start_matches("<=").trim().to_string()
                }
                serde_json::Value::Number(n) => n.to_string(),
                other => anyhow::bail!("{shown}: {key:?} should be like \"<=200\", found {other}"),
            };
            if let serde_json::Value::String(s) = value {
                anyhow::ensure!(
                    s.trim().starts_with("<="),
                    "{shown}: {key:?} is {s:?}; only upper limits (\"<=N\") are SLOs here"
                );
            }
            Ok(format!("{key}<={limit}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(|items| items.join(","))
}

fn describe(kind: SearchKind, load: f64) -> String {
    match kind {
        SearchKind::Rate => format!("{load} req/s"),
        SearchKind::Concurrency => format!("concurrency {load}"),
    }
}

fn print_stage(kind: SearchKind, load: f64, checks: &[SloCheck], met: bool) {
    let parts: Vec<String> = checks
        .iter()
        .map(|c| {
            let value = match c.value_ms {
                Some(v) if v.is_infinite() => "failed requests".to_string(),
                Some(v) => format!("{v:.2}"),
                None => "not measured".into(),
            };
            format!(
                "{} → {value} {}",
                c.slo,
                if c.met { "ok" } else { "MISSED" }
            )
        })
        .collect();
    eprintln!(
        "search: {} {}: {}",
        describe(kind, load),
        if met { "meets every SLO" } else { "misses" },
        parts.join("; ")
    );
}

fn print_outcome(o: &SearchOutcome) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:=^70}", " SLO search ")?;
    writeln!(out, "{:<24} {}", "SLOs:", o.slos.join(", "))?;
    writeln!(
        out,
        "{:>5} {:>12} {:>6} {:>9} {:>7} {:>8}  verdict",
        "stage", "load", "ok", "failed", "req/s", "early"
    )?;
    for (i, s) in o.stages.iter().enumerate() {
        writeln!(
            out,
            "{:>5} {:>12} {:>6} {:>9} {:>7.2} {:>8}  {}",
            i + 1,
            s.load,
            s.completed,
            s.failed,
            s.request_throughput,
            if s.stopped_early.is_some() { "yes" } else { "" },
            if s.met {
                "meets every SLO".to_string()
            } else {
                let missed: Vec<&str> = s
                    .checks
                    .iter()
                    .filter(|c| !c.met)
                    .map(|c| c.slo.as_str())
                    .collect();
                format!("misses {}", missed.join(", "))
            }
        )?;
    }
    match (o.best, o.first_fail) {
        (Some(best), fail) => writeln!(
            out,
            "Highest load meeting every SLO: {}{}",
            describe(o.kind, best),
            fail.map_or_else(
                || match o.ceiling {
                    Some(top) if best >= top => format!(
                        " (every load up to the stage's {top} requests met the SLOs: raise \
                         --num-prompts, or use --duration, to go higher)"
                    ),
                    _ => " (no load tried missed: raise --search-max-stages to go higher)".into(),
                },
                |f| format!("; {} missed", describe(o.kind, f))
            )
        )?,
        (None, Some(f)) => writeln!(
            out,
            "No load tried met every SLO (the lowest, {}, missed).",
            describe(o.kind, f)
        )?,
        (None, None) => writeln!(out, "No stage finished.")?,
    }
    writeln!(out, "{}", "=".repeat(70))?;
    Ok(())
}

fn save(args: &BenchArgs, o: &SearchOutcome) -> anyhow::Result<()> {
    let stem = match &args.result_filename {
        Some(name) => Path::new(name)
            .file_stem()
            .map_or_else(|| name.clone(), |s| s.to_string_lossy().into_owned()),
        None => format!("{}-search", args.label.as_deref().unwrap_or(&args.backend)),
    };
    std::fs::create_dir_all(&args.result_dir)
        .with_context(|| format!("cannot create {}", args.result_dir.display()))?;
    let path = args.result_dir.join(format!("{stem}-search.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(o)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("SLO search summary: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_sla_params_become_slos() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sla.json");
        std::fs::write(
            &file,
            r#"[{"p99_ttft_ms": "<=200", "mean_tpot_ms": "<= 20"}]"#,
        )
        .unwrap();
        let slos = parse_slos(&vllm_sla_params(&file).unwrap()).unwrap();
        let names: Vec<String> = slos.iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["mean_tpot_ms<=20", "p99_ttft_ms<=200"]);
        std::fs::write(
            &file,
            r#"[{"p99_ttft_ms": "<=200"}, {"p99_ttft_ms": "<=100"}]"#,
        )
        .unwrap();
        assert!(
            vllm_sla_params(&file)
                .unwrap_err()
                .to_string()
                .contains("2 SLA sets")
        );
        std::fs::write(&file, r#"[{"p99_ttft_ms": ">=200"}]"#).unwrap();
        assert!(
            vllm_sla_params(&file)
                .unwrap_err()
                .to_string()
                .contains("upper limits")
        );
    }
}
