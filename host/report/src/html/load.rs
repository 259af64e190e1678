//! Reading `llmb report`'s inputs into a [`Report`]: result files (through
//! [`ResultFile`], whose errors name the key at fault), the `.records.jsonl` beside each, and a
//! sweep's `-stages.json`; other JSON files are listed as skipped. [`Report`] and its parts are
//! defined here, as what loading finds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use serde::Deserialize as _;
use serde_json::{Map, Value};

use llmb_engine::records::{RequestRecord, read_records};

use super::format::file_name;
use crate::result_file::{ResultFile, ServerMetrics, number, short_json};

/// Everything found in the report's input directories.
#[derive(Debug, Default)]
pub struct Report {
    /// One per result JSON file, in file-name order.
    pub runs: Vec<Run>,
    /// One per `-stages.json` sweep summary.
    pub sweeps: Vec<Sweep>,
    /// JSON files that are neither results nor stage summaries, and why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// One result file and, when its `.records.jsonl` sits next to it, its per-request records.
#[derive(Debug)]
pub struct Run {
    pub path: PathBuf,
    /// The result (vLLM's keys plus llmb's `"llmb"` object); its `server_metrics` are in
    /// [`server_metrics`](Self::server_metrics).
    pub result: ResultFile,
    pub records_path: PathBuf,
    /// `None` when the records file is missing (`--no-records`, or a vLLM result).
    pub records: Option<Vec<RequestRecord>>,
    /// The `server_metrics` object, checked for shape.
    pub server_metrics: Option<ServerMetrics>,
}

impl Run {
    /// The result file's name, as the report shows and `--run` matches it.
    pub fn file_name(&self) -> String {
        file_name(&self.path)
    }
}

/// A sweep's `NAME-stages.json`: the stage table and verdict `bench` printed at the end.
#[derive(Debug)]
pub struct Sweep {
    pub path: PathBuf,
    pub stages: Vec<StageRow>,
    /// Each stage's result file as it was written (an absolute path at the time).
    pub results: Vec<Option<String>>,
    pub best: Option<usize>,
    /// `(knee, flat, throughput gain, p99 E2EL rise, error-rate rise)`.
    pub saturation: Option<(usize, usize, f64, f64, f64)>,
}

/// One row of a sweep's stage table, as `NAME-stages.json` holds it.
pub type StageRow = llmb_engine::sweep::StageSummary;

/// Reads every `*.json` in `paths` (directories, not recursive, or single files): result files
/// (recognised by their keys), stage summaries, and the records beside each result. Errors name
/// the file and what is wrong; JSON files of other kinds are skipped and listed.
pub fn load(paths: &[PathBuf]) -> anyhow::Result<Report> {
    ensure!(!paths.is_empty(), "no directory given");
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot list {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json") && f.is_file())
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut seen = BTreeSet::new();
    let mut report = Report::default();
    for file in files {
        let key = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
        if !seen.insert(key) {
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let value: Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not valid JSON (a result file cut short by a crash?)",
                file.display()
            )
        })?;
        let Value::Object(doc) = value else {
            report
                .skipped
                .push((file, "not a JSON object, so not an llmb file".into()));
            continue;
        };
        if doc.contains_key("request_throughput") && doc.contains_key("completed") {
            report.runs.push(load_run(&file, doc)?);
        } else if doc.get("stages").is_some_and(Value::is_array) {
            report.sweeps.push(load_sweep(&file, &doc)?);
        } else if doc.get("llmb_kind").is_some_and(Value::is_string) {
            // summary_cX.json and overall_summary.json of a concurrency sweep: the same numbers
            // as the result files and -stages.json beside them.
            continue;
        } else {
            report.skipped.push((
                file,
                "neither a result file (no request_throughput/completed) nor a stage summary"
                    .into(),
            ));
        }
    }
    if report.runs.is_empty() && report.sweeps.iter().all(|s| s.stages.is_empty()) {
        let dirs: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "no llmb result files in {} (looked for the *.json files `llmb bench --save-result` \
             writes{})",
            dirs.join(", "),
            if report.skipped.is_empty() {
                String::new()
            } else {
                format!(
                    "; skipped {} other JSON file{}",
                    report.skipped.len(),
                    if report.skipped.len() == 1 { "" } else { "s" }
                )
            }
        );
    }
    Ok(report)
}

/// A result file's run: the result, its server metrics and the records beside it.
fn load_run(file: &Path, doc: Map<String, Value>) -> anyhow::Result<Run> {
    let mut result =
        ResultFile::from_map(doc).map_err(|e| e.in_file(&file.display().to_string()))?;
    let server_metrics = result.server_metrics.take();
    let stem = file
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let records_path = file.with_file_name(format!("{stem}.records.jsonl"));
    let records = if records_path.is_file() {
        Some(read_records(&records_path)?)
    } else {
        None
    };
    Ok(Run {
        path: file.to_path_buf(),
        result,
        records_path,
        records,
        server_metrics,
    })
}

fn load_sweep(file: &Path, doc: &Map<String, Value>) -> anyhow::Result<Sweep> {
    let ctx = || file.display().to_string();
    let stages: Vec<StageRow> = doc["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, s)| {
            StageRow::deserialize(s)
                .with_context(|| format!("{}: stage {} is not a stage summary", ctx(), i + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    let results = match doc.get("results") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let index = |v: Option<&Value>, what: &str| -> anyhow::Result<Option<usize>> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let i = v
                    .as_u64()
                    .with_context(|| format!("{}: \"{what}\" is not a stage index", ctx()))?
                    as usize;
                ensure!(
                    i < stages.len(),
                    "{}: \"{what}\" is stage {i} but there are {} stages",
                    ctx(),
                    stages.len()
                );
                Ok(Some(i))
            }
        }
    };
    let best = index(doc.get("best"), "best")?;
    let saturation = match doc.get("saturation") {
        None | Some(Value::Null) => None,
        Some(Value::Object(s)) => {
            let knee = index(s.get("knee"), "saturation.knee")?;
            let flat = index(s.get("flat"), "saturation.flat")?;
            let f = |k: &str| s.get(k).and_then(number).unwrap_or(f64::NAN);
            match (knee, flat) {
                (Some(k), Some(fl)) => Some((
                    k,
                    fl,
                    f("throughput_gain"),
                    f("p99_e2el_rise"),
                    f("error_rate_rise"),
                )),
                _ => bail!("{}: \"saturation\" lacks knee or flat", ctx()),
            }
        }
        Some(v) => bail!(
            "{}: \"saturation\" should be an object, found {}",
            ctx(),
            short_json(v)
        ),
    };
    Ok(Sweep {
        path: file.to_path_buf(),
        stages,
        results,
        best,
        saturation,
    })
}
