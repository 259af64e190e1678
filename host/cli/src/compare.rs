//! `llmb compare A B`: did B change anything against A? Each side is a result file (its
//! `.records.jsonl` beside it) or a folder of them (every run's requests pooled, e.g. the
//! shards or repeated runs of one setup).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use llmb_engine::compare::{CompareOptions, compare};
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

fn load(path: &Path) -> anyhow::Result<Vec<RequestRecord>> {
    let mut records = Vec::new();
    for file in records_files(path)? {
        records.extend(read_records(&file)?);
    }
    if records.is_empty() {
        bail!("{}: no request records found", path.display());
    }
    Ok(records)
}

/// `llmb compare`.
pub fn main(args: &CompareArgs) -> anyhow::Result<()> {
    let (a, b) = (load(&args.a)?, load(&args.b)?);
    let opts = CompareOptions {
        resamples: args.resamples,
        min_effect: args.min_effect_pct / 100.0,
        seed: 0,
    };
    let rows = compare(&a, &b, opts);
    println!(
        "A: {} ({} requests)   B: {} ({} requests)   95 % bootstrap intervals over requests, \
         {} resamples; a difference counts from {} % of A",
        args.a.display(),
        a.len(),
        args.b.display(),
        b.len(),
        args.resamples,
        args.min_effect_pct
    );
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
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "a": args.a.display().to_string(),
            "b": args.b.display().to_string(),
            "requests_a": a.len(),
            "requests_b": b.len(),
            "resamples": args.resamples,
            "min_effect_pct": args.min_effect_pct,
            "comparisons": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
