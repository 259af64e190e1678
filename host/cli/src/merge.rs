//! `llmb merge DIR... -o FILE`: the shards of one run as one result. The records of every
//! shard are put on one clock and every metric is recomputed from their union, so the merged
//! percentiles are exact; the run's setup keys come from the first shard, the measured keys
//! from the union.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use llmb_engine::merge::ShardRun;
use llmb_engine::metrics::MetricsConfig;
use llmb_engine::outcome::{LoadPattern, RunInfo};
use llmb_engine::records::read_records;
use serde_json::Value;

use crate::args::MergeArgs;

/// Top-level keys describing the run's setup, kept from the first shard's result.
const SETUP_KEYS: &[&str] = &[
    "date",
    "endpoint_type",
    "backend",
    "label",
    "model_id",
    "tokenizer_id",
    "request_rate",
    "burstiness",
    "ramp_up_strategy",
    "ramp_up_start_rps",
    "ramp_up_end_rps",
];

/// Keys under `llmb` describing the run's setup, kept from the first shard's result.
const LLMB_SETUP_KEYS: &[&str] = &[
    "base_url",
    "endpoint",
    "dataset_name",
    "output_len_forced",
    "percentile_metrics",
    "metric_percentiles",
    "goodput_slos_ms",
    "input_count_source",
    "load_pattern",
    "plugins",
    "plan_digest",
];

/// A shard's result file and what it says.
struct ShardFile {
    path: PathBuf,
    doc: Value,
    run: ShardRun,
}

fn result_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_file() {
            out.push(input.clone());
            continue;
        }
        let entries =
            std::fs::read_dir(input).with_context(|| format!("cannot read {}", input.display()))?;
        let mut inner = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_dir() {
                inner.push(path);
            } else if name.ends_with(".json") && !name.ends_with("-stages.json") {
                out.push(path);
            }
        }
        out.extend(result_files(&inner)?);
    }
    out.sort();
    Ok(out)
}

fn read_shard(path: &Path) -> anyhow::Result<Option<ShardFile>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let Ok(doc) = serde_json::from_str::<Value>(&text) else {
        return Ok(None);
    };
    let llmb = &doc["llmb"];
    if llmb["shard"].is_null() {
        return Ok(None);
    }
    let name = path.display().to_string();
    let shard = serde_json::from_value(llmb["shard"].clone())
        .with_context(|| format!("{name}: llmb.shard"))?;
    let timing = serde_json::from_value(llmb["timing"].clone())
        .with_context(|| format!("{name}: llmb.timing (written by llmb 0.1 with shards)"))?;
    let plan_digest = llmb["plan_digest"]
        .as_str()
        .with_context(|| format!("{name}: llmb.plan_digest"))?
        .to_string();
    let records_path = path.with_extension("records.jsonl");
    anyhow::ensure!(
        records_path.is_file(),
        "{name}: its records {} are needed to merge exactly",
        records_path.display()
    );
    let records = read_records(&records_path)?;
    Ok(Some(ShardFile {
        path: path.to_path_buf(),
        doc,
        run: ShardRun {
            name,
            shard,
            plan_digest,
            timing,
            records,
        },
    }))
}

fn metrics_config(llmb: &Value) -> MetricsConfig {
    let mut cfg = MetricsConfig::default();
    if let Ok(v) = serde_json::from_value(llmb["percentile_metrics"].clone()) {
        cfg.percentile_metrics = v;
    }
    if let Ok(v) = serde_json::from_value(llmb["metric_percentiles"].clone()) {
        cfg.metric_percentiles = v;
    }
    if let Some(slos) = llmb["goodput_slos_ms"].as_object() {
        cfg.goodput_slos_ms = slos
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect();
    }
    cfg
}

/// `llmb merge`.
pub fn main(args: &MergeArgs) -> anyhow::Result<()> {
    let mut shards = Vec::new();
    for path in result_files(&args.inputs)? {
        if let Some(shard) = read_shard(&path)? {
            shards.push(shard);
        }
    }
    if shards.is_empty() {
        bail!("no shard results (result files with llmb.shard) under the inputs");
    }
    let first_doc = shards[0].doc.clone();
    let files: Vec<String> = shards
        .iter()
        .map(|s| s.path.display().to_string())
        .collect();
    let shard_prompts: f64 = shards
        .iter()
        .filter_map(|s| s.doc["num_prompts"].as_f64())
        .sum();
    let concurrency: Option<f64> = shards
        .iter()
        .map(|s| s.doc["max_concurrency"].as_f64())
        .sum();
    let merged = llmb_engine::merge::merge(shards.into_iter().map(|s| s.run).collect())?;
    if !merged.missing.is_empty() && !args.allow_missing {
        bail!(
            "shards {:?} of {} have no result: their requests would be missing (--allow-missing \
             merges what is there)",
            merged.missing,
            merged.shard_count
        );
    }
    let cfg = metrics_config(&first_doc["llmb"]);
    let metrics = llmb_engine::metrics::compute(&merged.records, merged.measured_s, &cfg);
    let text = |k: &str| first_doc[k].as_str().unwrap_or_default().to_string();
    let info = RunInfo {
        backend: text("backend"),
        endpoint_type: text("endpoint_type"),
        label: first_doc["label"].as_str().map(str::to_string),
        model_id: text("model_id"),
        tokenizer_id: text("tokenizer_id"),
        input_counts: llmb_engine::input_tokens::InputCountSource::Tokenizer { id: String::new() },
        base_url: String::new(),
        endpoint: String::new(),
        dataset_name: String::new(),
        num_prompts: shard_prompts as usize,
        request_rate: first_doc["request_rate"].as_f64().unwrap_or(f64::INFINITY),
        burstiness: first_doc["burstiness"].as_f64().unwrap_or(1.0),
        max_concurrency: concurrency.map(|c| c as usize),
        output_len_forced: first_doc["llmb"]["output_len_forced"]
            .as_bool()
            .unwrap_or(false),
        output_len_forceable: true,
        interrupted: false,
        pattern: LoadPattern::default(),
        plugins: Vec::new(),
        shard: None,
        plan_digest: merged.plan_digest.clone(),
        start: None,
        timing: None,
    };
    let detailed = first_doc.get("ttfts").is_some();
    let unix_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let fresh = llmb_report::result_file::result_json_at(
        &info,
        &metrics,
        &cfg,
        &merged.records,
        detailed,
        unix_secs,
    );
    let mut out = first_doc.clone();
    overlay(&mut out, &fresh, SETUP_KEYS, LLMB_SETUP_KEYS);
    out["llmb"]["merged_from"] = serde_json::json!({
        "shards": merged.shard_count,
        "missing": merged.missing,
        "files": files,
    });
    if let Some(llmb) = out["llmb"].as_object_mut() {
        llmb.remove("shard");
        llmb.remove("start");
        llmb.remove("timing");
    }
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.output, serde_json::to_string_pretty(&out)? + "\n")
        .with_context(|| format!("writing {}", args.output.display()))?;
    let records_path = args.output.with_extension("records.jsonl");
    let mut lines = String::new();
    for r in &merged.records {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    std::fs::write(&records_path, lines)
        .with_context(|| format!("writing {}", records_path.display()))?;
    println!(
        "merged {} shard(s) of {} ({} requests, {} completed, {:.3} s measured) into {}",
        merged.shard_count - merged.missing.len(),
        merged.shard_count,
        merged.records.len(),
        metrics.completed,
        merged.measured_s,
        args.output.display()
    );
    Ok(())
}

/// Every key of `fresh` into `out`, except the setup keys kept from the first shard (at the
/// top and under `llmb`).
fn overlay(out: &mut Value, fresh: &Value, keep: &[&str], keep_llmb: &[&str]) {
    let (Some(out), Some(fresh)) = (out.as_object_mut(), fresh.as_object()) else {
        return;
    };
    for (key, value) in fresh {
        if keep.contains(&key.as_str()) {
            continue;
        }
        if key == "llmb" {
            let target = out
                .entry("llmb")
                .or_insert_with(|| Value::Object(Default::default()));
            if let (Some(target), Some(source)) = (target.as_object_mut(), value.as_object()) {
                for (k, v) in source {
                    if !keep_llmb.contains(&k.as_str()) {
                        target.insert(k.clone(), v.clone());
                    }
                }
            }
            continue;
        }
        out.insert(key.clone(), value.clone());
    }
}
