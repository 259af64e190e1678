//! `llmb compare A B`: did B change anything against A? Each side is a result file (its
//! `.records.jsonl` beside it) or a folder of them (every run's requests pooled, e.g. the
//! shards or repeated runs of one setup).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use llmb_engine::compare::{CompareOptions, compare, compare_runs};
use llmb_engine::records::{RequestRecord, read_records};

use crate::args::CompareArgs;

/// The records files of `path`: the one beside a result file, or all under a folder.
fn records_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        let name = path.to_string_lossy();
        let records = if name.ends_with(".records.jsonl") {
            path.to_path_buf()
        } else {
            path.with_extension("records.jsonl")
        };
        return Ok(vec![records]);
    }
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))?;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(records_files(&p)?);
        } else if p.to_string_lossy().ends_with(".records.jsonl") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Every run's records under `path` (one entry per records file).
fn load(path: &Path) -> anyhow::Result<Vec<Vec<RequestRecord>>> {
    let runs: Vec<Vec<RequestRecord>> = records_files(path)?
        .iter()
        .map(|file| read_records(file))
        .collect::<anyhow::Result<_>>()?;
    if runs.iter().all(|r| r.is_empty()) {
        bail!("{}: no request records found", path.display());
    }
    Ok(runs)
}

/// `llmb compare`.
pub fn main(args: &CompareArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.resamples >= 100,
        "--resamples {} is too few for a 95 % interval (use 100 or more)",
        args.resamples
    );
    anyhow::ensure!(
        args.min_effect_pct.is_finite() && args.min_effect_pct >= 0.0,
        "--min-effect-pct must be a percentage >= 0, not {}",
        args.min_effect_pct
    );
    let (runs_a, runs_b) = (load(&args.a)?, load(&args.b)?);
    let across_runs = runs_a.len() >= 2 && runs_b.len() >= 2;
    let (a, b): (Vec<RequestRecord>, Vec<RequestRecord>) = (
        runs_a.iter().flatten().cloned().collect(),
        runs_b.iter().flatten().cloned().collect(),
    );
    let opts = CompareOptions {
        resamples: args.resamples,
        min_effect: args.min_effect_pct / 100.0,
        seed: 0,
    };
    let rows = if across_runs {
        compare_runs(&runs_a, &runs_b, opts.min_effect)
    } else {
        compare(&a, &b, opts)
    };
    let method = if across_runs {
        format!(
            "95 % intervals across runs ({} and {} runs, Welch)",
            runs_a.len(),
            runs_b.len()
        )
    } else {
        format!(
            "95 % bootstrap intervals over requests, {} resamples",
            args.resamples
        )
    };
    println!(
        "A: {} ({} requests)   B: {} ({} requests)   {method}; a difference counts from {} % of A",
        args.a.display(),
        a.len(),
        args.b.display(),
        b.len(),
        args.min_effect_pct
    );
    // Latencies are compared over successes only: say what failed, and warn when one side
    // failed more, or a "better" B could be one that fails its slow requests.
    let failed = |records: &[RequestRecord]| {
        let measured: Vec<&RequestRecord> = records.iter().filter(|r| !r.warmup).collect();
        let failed = measured.iter().filter(|r| !r.success).count();
        (failed, measured.len())
    };
    let ((fa, na), (fb, nb)) = (failed(&a), failed(&b));
    let share = |f: usize, n: usize| 100.0 * f as f64 / n.max(1) as f64;
    println!(
        "Failed requests: A {fa} of {na} ({:.1} %), B {fb} of {nb} ({:.1} %); latencies below compare successes only",
        share(fa, na),
        share(fb, nb)
    );
    let failure_warning = ((fa > 0 || fb > 0) && (share(fa, na) - share(fb, nb)).abs() >= 1.0)
        .then(|| {
            format!(
                "A and B failed different shares of their requests ({:.1} % and {:.1} %): a \
                 side that fails its slow requests can look faster; compare the failures first",
                share(fa, na),
                share(fb, nb)
            )
        });
    if let Some(w) = &failure_warning {
        println!("WARNING: {w}");
    }
    println!(
        "{:<9} {:<7} {:>11} {:>11} {:>10} {:>8} {:>24} {:>8}  verdict",
        "metric", "stat", "A", "B", "B-A", "B-A %", "95 % interval of B-A", "noise %"
    );
    for r in &rows {
        println!(
            "{:<9} {:<7} {:>11.3} {:>11.3} {:>10.3} {:>8.1} {:>24} {:>8.1}  {}",
            r.metric,
            r.statistic,
            r.a,
            r.b,
            r.difference,
            r.difference_pct,
            format!("[{:.3}, {:.3}]", r.ci_low, r.ci_high),
            r.noise_pct,
            r.verdict
        );
    }
    if let Some(path) = &args.html {
        let page = llmb_report::html::compare_page(&llmb_report::html::ComparePage {
            a_name: &args.a.display().to_string(),
            b_name: &args.b.display().to_string(),
            method: &method,
            rows: &rows,
            a: &a,
            b: &b,
        });
        std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("Comparison page: {}", path.display());
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "a": args.a.display().to_string(),
            "b": args.b.display().to_string(),
            "requests_a": a.len(),
            "requests_b": b.len(),
            "failed_a": fa,
            "failed_b": fb,
            "failure_warning": failure_warning,
            "method": if across_runs { "across-runs-welch" } else { "bootstrap-over-requests" },
            "runs_a": runs_a.len(),
            "runs_b": runs_b.len(),
            "resamples": args.resamples,
            "min_effect_pct": args.min_effect_pct,
            "comparisons": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
