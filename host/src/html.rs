//! `llmb report`: one self-contained HTML file from the files `bench --save-result` leaves.
//!
//! Data flows one way, as in the rest of llmb: result JSON files, their `.records.jsonl`
//! per-request records and a sweep's `-stages.json` are read back by [`load`] into a [`Report`],
//! and [`render`] turns that into HTML with inline SVG charts (plotters' SVG backend). Nothing is
//! measured again: latency quantiles come from the records (the single source of truth) when
//! they are there, else from the stage table, else from the result file's own keys.
//!
//! The page needs no network, no JavaScript and no font files, so it can be attached to an issue
//! or mailed and opened anywhere; a Content-Security-Policy forbids any load at all. Every string
//! taken from a file (model names, URLs, file names, error messages, metric names) is escaped,
//! so a result file cannot inject markup.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use serde::Deserialize as _;
use serde_json::{Map, Value};

use crate::cli::ReportArgs;
use crate::metrics::{MetricsConfig, PERCENTILE_METRICS};
use crate::records::{RequestRecord, read_records};

/// Per-request timelines draw at most this many requests unless told otherwise: beyond a few
/// thousand bars the SVG grows large and each bar is thinner than a pixel anyway.
pub const DEFAULT_TIMELINE_CAP: usize = 2000;

/// With more runs than this and no `--run`, only the last run gets per-request charts, so a
/// long sweep does not make a page of hundreds of charts.
const DETAIL_ALL_UP_TO: usize = 4;

/// Small multiples drawn per run for server metrics; the table still lists every name.
const MAX_SERVER_CHARTS: usize = 60;

/// Entry point of `llmb report`: writes the report and says where it went.
pub fn main(args: &ReportArgs) -> anyhow::Result<()> {
    let (path, report) = write_report(args)?;
    println!(
        "Wrote {} ({} run{}, {} stage summar{})",
        path.display(),
        report.runs.len(),
        if report.runs.len() == 1 { "" } else { "s" },
        report.sweeps.len(),
        if report.sweeps.len() == 1 { "y" } else { "ies" },
    );
    for (file, why) in &report.skipped {
        eprintln!("skipped {}: {why}", file.display());
    }
    Ok(())
}

/// Loads `args.dirs`, renders and writes the report (default `FIRST_DIR/report.html`); returns
/// the path written and what was loaded, so callers and tests can check both.
pub fn write_report(args: &ReportArgs) -> anyhow::Result<(PathBuf, Report)> {
    let dirs: Vec<PathBuf> = args.dirs.iter().chain(&args.indir).cloned().collect();
    let report = load(&dirs)?;
    let options = RenderOptions {
        runs: args.runs.clone(),
        timeline_cap: args.max_timeline_requests,
    };
    let html = render(&report, &options)?;
    let output = match &args.output {
        Some(path) => path.clone(),
        None => {
            let first = &dirs[0];
            if first.is_dir() {
                first.join("report.html")
            } else {
                first.parent().unwrap_or(Path::new(".")).join("report.html")
            }
        }
    };
    std::fs::write(&output, html)
        .with_context(|| format!("cannot write the report to {}", output.display()))?;
    Ok((output, report))
}

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
    /// The result document (vLLM's keys plus llmb's `"llmb"` object).
    pub doc: Map<String, Value>,
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
pub type StageRow = crate::sweep::StageSummary;

/// The `server_metrics` object of a result file: Prometheus-style values scraped during the run.
#[derive(Debug, Clone, Default)]
pub struct ServerMetrics {
    pub url: Option<String>,
    /// Names in the order the scraper listed them.
    pub names: Vec<String>,
    pub start: BTreeMap<String, Option<f64>>,
    pub end: BTreeMap<String, Option<f64>>,
    pub delta: BTreeMap<String, Option<f64>>,
    /// `(name, [(seconds since run start, value)])`, in `names` order.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// What `render` shows beyond what was loaded.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Per-request charts for runs whose file name contains one of these (none: all runs when
    /// there are few, else the last).
    pub runs: Vec<String>,
    pub timeline_cap: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            runs: Vec::new(),
            timeline_cap: DEFAULT_TIMELINE_CAP,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

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

/// Keys the report reads as numbers: present and not null means they must be numbers.
const NUMBER_KEYS: &[&str] = &[
    "completed",
    "failed",
    "duration",
    "request_throughput",
    "output_throughput",
    "request_goodput",
    "total_input_tokens",
    "total_output_tokens",
    "max_concurrency",
    "max_concurrent_requests",
    "request_rate",
];

fn load_run(file: &Path, doc: Map<String, Value>) -> anyhow::Result<Run> {
    for key in NUMBER_KEYS {
        if let Some(v) = doc.get(*key)
            && !v.is_null()
            && number(v).is_none()
        {
            bail!(
                "{}: \"{key}\" should be a number, found {}",
                file.display(),
                short_json(v)
            );
        }
    }
    for key in PERCENTILE_METRICS {
        for (k, v) in doc
            .iter()
            .filter(|(k, _)| k.ends_with(&format!("_{key}_ms")))
        {
            if !v.is_null() && number(v).is_none() {
                bail!(
                    "{}: \"{k}\" should be a number, found {}",
                    file.display(),
                    short_json(v)
                );
            }
        }
    }
    for key in ["model_id", "backend", "date"] {
        if let Some(v) = doc.get(key)
            && !(v.is_string() || v.is_null())
        {
            bail!(
                "{}: \"{key}\" should be a string, found {}",
                file.display(),
                short_json(v)
            );
        }
    }
    let server_metrics = match doc.get("server_metrics") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            parse_server_metrics(v)
                .with_context(|| format!("{}: bad \"server_metrics\"", file.display()))?,
        ),
    };
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
        doc,
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

/// Checks the `server_metrics` shape: `{url, names, start, end, delta, series: {name: [[t, v]]}}`.
fn parse_server_metrics(v: &Value) -> anyhow::Result<ServerMetrics> {
    let obj = v
        .as_object()
        .with_context(|| format!("should be an object, found {}", short_json(v)))?;
    let url = match obj.get("url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => bail!("\"url\" should be a string, found {}", short_json(other)),
    };
    let mut names: Vec<String> = match obj.get("names") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_string)
                    .with_context(|| format!("\"names\" has a non-string {}", short_json(n)))
            })
            .collect::<anyhow::Result<_>>()?,
        Some(other) => bail!("\"names\" should be a list, found {}", short_json(other)),
    };
    let values = |key: &str| -> anyhow::Result<BTreeMap<String, Option<f64>>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(name, v)| {
                    if v.is_null() {
                        return Ok((name.clone(), None));
                    }
                    let n = number(v).with_context(|| {
                        format!(
                            "\"{key}\".\"{name}\" should be a number, found {}",
                            short_json(v)
                        )
                    })?;
                    Ok((name.clone(), Some(n)))
                })
                .collect(),
            Some(other) => bail!("\"{key}\" should be an object, found {}", short_json(other)),
        }
    };
    let (start, end, delta) = (values("start")?, values("end")?, values("delta")?);
    let mut series = Vec::new();
    match obj.get("series") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (name, points) in m {
                let list = points.as_array().with_context(|| {
                    format!("\"series\".\"{name}\" should be a list of [seconds, value] pairs")
                })?;
                let mut out = Vec::with_capacity(list.len());
                for (i, p) in list.iter().enumerate() {
                    let pair = p.as_array().filter(|a| a.len() == 2).with_context(|| {
                        format!(
                            "\"series\".\"{name}\"[{i}] should be [seconds, value], found {}",
                            short_json(p)
                        )
                    })?;
                    let t = number(&pair[0]).with_context(|| {
                        format!("\"series\".\"{name}\"[{i}] has a non-number time")
                    })?;
                    match &pair[1] {
                        Value::Null => {}
                        v => {
                            let y = number(v).with_context(|| {
                                format!("\"series\".\"{name}\"[{i}] has a non-number value")
                            })?;
                            if t.is_finite() && y.is_finite() {
                                out.push((t, y));
                            }
                        }
                    }
                }
                series.push((name.clone(), out));
            }
        }
        Some(other) => bail!(
            "\"series\" should be an object, found {}",
            short_json(other)
        ),
    }
    // The scraper's order first, then anything it did not list.
    for name in start
        .keys()
        .chain(end.keys())
        .chain(delta.keys())
        .chain(series.iter().map(|(n, _)| n))
    {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    series.sort_by_key(|(n, _)| names.iter().position(|m| m == n));
    Ok(ServerMetrics {
        url,
        names,
        start,
        end,
        delta,
        series,
    })
}

/// A JSON number, or `"inf"`/`"-inf"`/`"nan"` as llmb and vLLM write non-finite rates.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "inf" | "Infinity" => Some(f64::INFINITY),
            "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
            "nan" | "NaN" => Some(f64::NAN),
            _ => None,
        },
        _ => None,
    }
}

/// A value for an error message, cut to a readable length.
fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Numbers per row

/// What one table row and one chart point show; `None` is an unknown value, shown as `–`.
#[derive(Debug, Clone, Default)]
struct Stats {
    concurrency: Option<usize>,
    rate: f64,
    completed: Option<f64>,
    failed: Option<f64>,
    req_s: Option<f64>,
    out_tok_s: Option<f64>,
    goodput: Option<f64>,
    /// p50, p95, p99 in ms.
    ttft: [Option<f64>; 3],
    e2el: [Option<f64>; 3],
    tpot_mean: Option<f64>,
    itl_mean: Option<f64>,
    itl_p99: Option<f64>,
}

impl Stats {
    /// From the result file's own keys (vLLM writes only the configured percentiles).
    fn from_result(doc: &Map<String, Value>) -> Self {
        let get = |k: &str| doc.get(k).and_then(number).filter(|v| !v.is_nan());
        let no_stream = doc
            .get("llmb")
            .and_then(|l| l.pointer("/load_pattern/no_stream"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let streamed = |v: Option<f64>| if no_stream { None } else { v };
        Stats {
            concurrency: get("max_concurrency").map(|c| c as usize),
            rate: get("request_rate").unwrap_or(f64::INFINITY),
            completed: get("completed"),
            failed: get("failed"),
            req_s: get("request_throughput"),
            out_tok_s: get("output_throughput"),
            goodput: get("request_goodput"),
            ttft: [
                streamed(get("median_ttft_ms").or(get("p50_ttft_ms"))),
                streamed(get("p95_ttft_ms")),
                streamed(get("p99_ttft_ms")),
            ],
            e2el: [
                get("median_e2el_ms").or(get("p50_e2el_ms")),
                get("p95_e2el_ms"),
                get("p99_e2el_ms"),
            ],
            tpot_mean: streamed(get("mean_tpot_ms")),
            itl_mean: streamed(get("mean_itl_ms")),
            itl_p99: streamed(get("p99_itl_ms")),
        }
    }

    fn from_stage(s: &StageRow) -> Self {
        Stats {
            concurrency: s.concurrency,
            rate: s.request_rate,
            completed: Some(s.completed as f64),
            failed: Some(s.failed as f64),
            req_s: Some(s.request_throughput),
            out_tok_s: Some(s.output_throughput),
            ttft: [Some(s.ttft_p50_ms), None, Some(s.ttft_p99_ms)],
            e2el: [
                Some(s.e2el_p50_ms),
                Some(s.e2el_p95_ms),
                Some(s.e2el_p99_ms),
            ],
            ..Stats::default()
        }
    }

    /// Latency quantiles recomputed from the records with the metrics code itself, so they
    /// match what `bench` printed and add the percentiles the result file did not keep.
    fn overlay_records(&mut self, records: &[RequestRecord], duration_s: f64) {
        let cfg = MetricsConfig {
            percentile_metrics: PERCENTILE_METRICS.iter().map(|s| s.to_string()).collect(),
            metric_percentiles: vec![50.0, 95.0, 99.0],
            goodput_slos_ms: Vec::new(),
        };
        let m = crate::metrics::compute(records, duration_s, &cfg);
        let q = |s: &crate::metrics::MetricStats| -> [Option<f64>; 3] {
            if s.count == 0 {
                [None; 3]
            } else {
                [s.at(50.0), s.at(95.0), s.at(99.0)]
            }
        };
        if m.e2el.count > 0 {
            self.e2el = q(&m.e2el);
        }
        if m.ttft.count > 0 {
            self.ttft = q(&m.ttft);
        }
        if m.tpot.count > 0 {
            self.tpot_mean = Some(m.tpot.mean);
        }
        if m.itl.count > 0 {
            self.itl_mean = Some(m.itl.mean);
            self.itl_p99 = m.itl.at(99.0);
        }
    }

    fn load_words(&self) -> String {
        let c = match self.concurrency {
            Some(c) => format!("concurrency {c}"),
            None => "unlimited concurrency".into(),
        };
        if self.rate.is_finite() {
            format!("{c}, {} req/s", fmt_rate(self.rate))
        } else {
            c
        }
    }
}

/// A row of the stage table, and a point on each load chart.
#[derive(Debug, Clone)]
struct Row {
    label: String,
    stats: Stats,
    /// Index into `Report::runs`, when the row has a result file.
    run: Option<usize>,
    best: bool,
    knee: bool,
    flat: bool,
}

/// Rows that belong together: one sweep, or the runs no stage summary claims.
#[derive(Debug, Clone)]
struct Group {
    title: String,
    rows: Vec<Row>,
    verdict: Vec<String>,
}

fn run_stats(run: &Run) -> Stats {
    let mut stats = Stats::from_result(&run.doc);
    if let Some(records) = &run.records {
        let duration = run.doc.get("duration").and_then(number).unwrap_or(0.0);
        stats.overlay_records(records, duration);
    }
    stats
}

fn groups_of(report: &Report) -> Vec<Group> {
    let mut claimed = vec![false; report.runs.len()];
    let mut groups = Vec::new();
    for sweep in &report.sweeps {
        let mut rows = Vec::new();
        for (i, stage) in sweep.stages.iter().enumerate() {
            let wanted = sweep
                .results
                .get(i)
                .and_then(|r| r.as_deref())
                .map(|r| file_name(Path::new(r)));
            let run = wanted.and_then(|name| {
                report
                    .runs
                    .iter()
                    .enumerate()
                    .position(|(k, r)| !claimed[k] && r.file_name() == name)
            });
            let mut stats = Stats::from_stage(stage);
            if let Some(k) = run {
                claimed[k] = true;
                let from_run = run_stats(&report.runs[k]);
                stats = Stats {
                    concurrency: stage.concurrency,
                    rate: stage.request_rate,
                    ttft: merge3(from_run.ttft, stats.ttft),
                    e2el: merge3(from_run.e2el, stats.e2el),
                    ..from_run
                };
            }
            let mut label = if stage.label.is_empty() {
                stats.load_words()
            } else {
                stage.label.clone()
            };
            if stage.round > 1 || sweep.stages.iter().any(|s| s.round > 1) {
                label.push_str(&format!(", round {}", stage.round));
            }
            let sat = sweep.saturation;
            rows.push(Row {
                label,
                stats,
                run,
                best: sweep.best == Some(i),
                knee: sat.is_some_and(|s| s.0 == i),
                flat: sat.is_some_and(|s| s.1 == i),
            });
        }
        let mut verdict = Vec::new();
        if let Some(b) = sweep.best.and_then(|b| rows.get(b)) {
            verdict.push(format!(
                "Best throughput: {} tok/s at {}.",
                fmt_num(b.stats.out_tok_s),
                b.label
            ));
        }
        match sweep.saturation {
            Some((knee, flat, gain, rise, errors)) if knee < rows.len() && flat < rows.len() => {
                verdict.push(format!(
                    "Saturation: throughput stops growing after {} ({}: {:+.1}% tok/s, p99 E2EL \
                     {:+.1}%, errors {:+.1} pp).",
                    rows[knee].label,
                    rows[flat].label,
                    gain * 100.0,
                    rise * 100.0,
                    errors * 100.0
                ));
            }
            _ => verdict.push("Saturation: not reached within the tested loads.".into()),
        }
        if rows.is_empty() {
            continue;
        }
        groups.push(Group {
            title: file_name(&sweep.path),
            rows,
            verdict,
        });
    }
    let mut loose: Vec<Row> = report
        .runs
        .iter()
        .enumerate()
        .filter(|(k, _)| !claimed[*k])
        .map(|(k, run)| {
            let stats = run_stats(run);
            let label = run
                .doc
                .get("llmb")
                .and_then(|l| l.pointer("/load_pattern/stage"))
                .and_then(Value::as_str)
                .map_or_else(|| stats.load_words(), str::to_string);
            Row {
                label,
                stats,
                run: Some(k),
                best: false,
                knee: false,
                flat: false,
            }
        })
        .collect();
    if !loose.is_empty() {
        let date = |r: &Row| {
            r.run
                .and_then(|k| report.runs[k].doc.get("date"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        loose.sort_by(|a, b| {
            (a.stats.concurrency.unwrap_or(usize::MAX))
                .cmp(&b.stats.concurrency.unwrap_or(usize::MAX))
                .then(a.stats.rate.total_cmp(&b.stats.rate))
                .then(date(a).cmp(&date(b)))
        });
        groups.push(Group {
            title: if groups.is_empty() {
                String::new()
            } else {
                "Runs outside any stage summary".into()
            },
            rows: loose,
            verdict: Vec::new(),
        });
    }
    groups
}

fn merge3(first: [Option<f64>; 3], second: [Option<f64>; 3]) -> [Option<f64>; 3] {
    [
        first[0].or(second[0]),
        first[1].or(second[1]),
        first[2].or(second[2]),
    ]
}

// ---------------------------------------------------------------------------------------------
// The x axis of the load charts

#[derive(Debug, Clone, Copy, PartialEq)]
enum XKind {
    Concurrency,
    Rate,
    /// Nothing varied: points are numbered as the table rows.
    Index,
}

/// How load maps to the x axis: whichever of concurrency and rate the runs varied, on a log2
/// scale when it spans a factor of 8 or more (sweeps usually double the load).
#[derive(Debug, Clone)]
struct XScale {
    kind: XKind,
    log2: bool,
    /// Tick values in data space: the loads that were tested.
    ticks: Vec<f64>,
    /// Loads (data space) marked by a labelled vertical line: where saturation set in.
    marks: Vec<(f64, &'static str)>,
}

impl XScale {
    fn of(rows: &[&Row]) -> Self {
        let concurrencies: BTreeSet<usize> =
            rows.iter().filter_map(|r| r.stats.concurrency).collect();
        let rates: BTreeSet<u64> = rows
            .iter()
            .map(|r| r.stats.rate)
            .filter(|r| r.is_finite())
            .map(f64::to_bits)
            .collect();
        let (kind, mut values): (XKind, Vec<f64>) = if concurrencies.len() > 1 {
            (
                XKind::Concurrency,
                concurrencies.iter().map(|&c| c as f64).collect(),
            )
        } else if rates.len() > 1 {
            (
                XKind::Rate,
                rates.iter().map(|&b| f64::from_bits(b)).collect(),
            )
        } else {
            (XKind::Index, (1..=rows.len()).map(|i| i as f64).collect())
        };
        values.sort_by(f64::total_cmp);
        if values.is_empty() {
            values.push(1.0);
        }
        let (lo, hi) = (values[0], values[values.len() - 1]);
        let log2 = kind != XKind::Index && lo > 0.0 && hi / lo >= 8.0;
        // At most a dozen ticks, the first and last always among them.
        let step = values.len().div_ceil(12);
        let mut ticks: Vec<f64> = values.iter().copied().step_by(step.max(1)).collect();
        if ticks.last() != values.last() {
            ticks.push(hi);
        }
        XScale {
            kind,
            log2,
            ticks,
            marks: Vec::new(),
        }
    }

    /// Row numbers start after `first` rows (when the axis is the table's row number).
    fn numbered_from(mut self, first: usize) -> Self {
        if self.kind == XKind::Index {
            for t in &mut self.ticks {
                *t += first as f64;
            }
        }
        self
    }

    /// The row's x in data space (`None`: not on this axis, e.g. unlimited concurrency).
    fn x_of(&self, row: &Row, index: usize) -> Option<f64> {
        match self.kind {
            XKind::Concurrency => row.stats.concurrency.map(|c| c as f64),
            XKind::Rate => Some(row.stats.rate).filter(|r| r.is_finite()),
            XKind::Index => Some(index as f64 + 1.0),
        }
    }

    fn t(&self, x: f64) -> f64 {
        if self.log2 { x.log2() } else { x }
    }

    fn untransform(&self, t: f64) -> f64 {
        if self.log2 { t.exp2() } else { t }
    }

    fn range(&self) -> (f64, f64) {
        let lo = self.t(self.ticks[0]);
        let hi = self.t(self.ticks[self.ticks.len() - 1]);
        if hi - lo <= f64::EPSILON {
            return (lo - 1.0, hi + 1.0);
        }
        let pad = (hi - lo) * 0.06;
        (lo - pad, hi + pad)
    }

    fn desc(&self) -> String {
        let scale = if self.log2 { " (log scale)" } else { "" };
        match self.kind {
            XKind::Concurrency => format!("max concurrency{scale}"),
            XKind::Rate => format!("request rate, req/s{scale}"),
            XKind::Index => "run (row # of the table)".into(),
        }
    }

    fn label(&self, t: f64) -> String {
        let x = self.untransform(t);
        match self.kind {
            XKind::Concurrency => format!("{}", x.round() as i64),
            XKind::Rate => fmt_rate((x * 1000.0).round() / 1000.0),
            XKind::Index => format!("#{}", x.round() as i64),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Charts

type DrawResult = anyhow::Result<()>;

const FONT: &str = "sans-serif";
const CHART_W: u32 = 640;
const CHART_H: u32 = 340;
const GRID_BOLD: RGBColor = RGBColor(215, 215, 215);
const AXIS: RGBColor = RGBColor(90, 90, 90);
const MARK: RGBColor = RGBColor(197, 48, 48);

const C_P50: RGBColor = RGBColor(31, 119, 180);
const C_P95: RGBColor = RGBColor(255, 127, 14);
const C_P99: RGBColor = RGBColor(214, 39, 40);
const C_REQ: RGBColor = RGBColor(44, 160, 44);
const C_TOK: RGBColor = RGBColor(148, 103, 189);
const C_WAIT: RGBColor = RGBColor(246, 178, 70);
const C_STREAM: RGBColor = RGBColor(49, 116, 196);
const C_FAIL: RGBColor = RGBColor(214, 39, 40);
const C_SERVER: RGBColor = RGBColor(23, 128, 128);

fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// Draws into a fresh SVG of `w`×`h` and returns its markup, to be inlined in the page.
fn svg(
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> DrawResult,
) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(out)
}

/// A linear f64 axis whose ticks are exactly the given values (the tested loads), so each
/// point sits on a labelled grid line.
#[derive(Debug, Clone)]
struct TickedAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// One line of a load chart: a colour, a name for the HTML legend, points in data space.
struct Line {
    name: String,
    color: RGBColor,
    /// Which group the points belong to (selects the marker shape).
    group: usize,
    points: Vec<(f64, f64)>,
}

/// Upper end of a y axis starting at zero, with headroom so the top point is not on the frame.
fn y_top(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max <= 0.0 { 1.0 } else { max * 1.12 }
}

type LoadCoord = Cartesian2d<TickedAxis, plotters::coord::types::RangedCoordf64>;

/// The left axis, grid and lines of a load chart.
fn draw_primary(
    chart: &mut ChartContext<'_, SVGBackend<'_>, LoadCoord>,
    x: &XScale,
    y_desc: &str,
    lines: &[Line],
) -> DrawResult {
    let x_fmt = |t: &f64| x.label(*t);
    chart
        .configure_mesh()
        .x_desc(x.desc())
        .y_desc(y_desc)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| fmt_axis(*v))
        .y_labels(7)
        .bold_line_style(GRID_BOLD)
        .light_line_style(TRANSPARENT)
        .axis_style(AXIS)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()?;
    let top = chart.y_range().end;
    for &(at, label) in &x.marks {
        let t = x.t(at);
        chart.draw_series(DashedLineSeries::new(
            [(t, 0.0), (t, top)],
            5,
            4,
            MARK.stroke_width(1),
        ))?;
        let style = (FONT, 12).into_font().color(&MARK);
        chart.draw_series(std::iter::once(
            EmptyElement::at((t, top)) + Text::new(label, (4, 2), style),
        ))?;
    }
    for l in lines {
        let pts: Vec<(f64, f64)> = l.points.iter().map(|&(a, b)| (x.t(a), b)).collect();
        chart.draw_series(LineSeries::new(pts.clone(), l.color.stroke_width(2)))?;
        let c = l.color;
        match l.group % 3 {
            0 => chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?,
            1 => chart.draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 5, c.filled())))?,
            _ => chart.draw_series(pts.iter().map(|&p| Cross::new(p, 4, c.stroke_width(2))))?,
        };
    }
    Ok(())
}

/// A line chart against load; `right` adds dashed lines on a second y axis.
fn load_chart(
    x: &XScale,
    y_desc: &str,
    lines: &[Line],
    right: Option<(&str, &[Line])>,
) -> anyhow::Result<String> {
    let (x0, x1) = x.range();
    let axis = TickedAxis {
        lo: x0,
        hi: x1,
        ticks: x.ticks.iter().map(|&v| x.t(v)).collect(),
    };
    let left_top = y_top(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)));
    svg(CHART_W, CHART_H, |root| {
        let chart = ChartBuilder::on(root)
            .margin(14)
            .margin_right(if right.is_some() { 8 } else { 22 })
            .x_label_area_size(46)
            .y_label_area_size(66)
            .right_y_label_area_size(if right.is_some() { 66 } else { 0 })
            .build_cartesian_2d(axis.clone(), 0.0..left_top)?;
        let Some((desc, rlines)) = right else {
            let mut chart = chart;
            return draw_primary(&mut chart, x, y_desc, lines);
        };
        // The secondary axis takes over the right label area, so it is set before the
        // primary mesh is drawn (else the left axis labels are drawn on the right too).
        // More headroom on the right axis, so that a point of each axis at its maximum (always
        // the case with one run) do not land on top of each other.
        let top = y_top(rlines.iter().flat_map(|l| l.points.iter().map(|p| p.1))) * 1.25;
        let mut chart = chart.set_secondary_coord(axis.clone(), 0.0..top);
        draw_primary(&mut chart, x, y_desc, lines)?;
        chart
            .configure_secondary_axes()
            .y_desc(desc)
            .y_label_formatter(&|v| fmt_axis(*v))
            .y_labels(7)
            .axis_style(AXIS)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()?;
        for l in rlines {
            let pts: Vec<(f64, f64)> = l.points.iter().map(|&(a, b)| (x.t(a), b)).collect();
            let c = l.color;
            chart.draw_secondary_series(DashedLineSeries::new(
                pts.clone(),
                6,
                4,
                c.stroke_width(2),
            ))?;
            // Squares, unlike the primary lines' markers, so the axes stay apart.
            chart
                .draw_secondary_series(pts.iter().map(|&p| {
                    EmptyElement::at(p) + Rectangle::new([(-5, -5), (5, 5)], c.filled())
                }))?;
        }
        Ok(())
    })
}

/// Histogram of `values` (ms); values above the 99.5th percentile are counted in the note
/// rather than stretching the axis.
fn histogram(
    values: &[f64],
    x_desc: &str,
    y_desc: &str,
    color: RGBColor,
) -> anyhow::Result<(String, String)> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let lo = sorted[0];
    let max = sorted[n - 1];
    let mut hi = crate::metrics::percentile(&sorted, 99.5);
    if max <= hi * 1.25 {
        hi = max;
    }
    if hi - lo < 1e-9 {
        hi = lo + lo.abs().max(1.0) * 0.05;
    }
    let bins = (n as f64).sqrt().ceil().clamp(10.0, 50.0) as usize;
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    let mut above = 0usize;
    for &v in &sorted {
        if v > hi {
            above += 1;
            continue;
        }
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    let step = nice_step(most as f64, 6).max(1.0) as usize;
    // Counts are whole numbers: ticks at multiples of a round step, never at 0.5.
    let y_axis = TickedAxis {
        lo: 0.0,
        hi: most as f64 * 1.12,
        ticks: (0..=most).step_by(step).map(|c| c as f64).collect(),
    };
    let pad = (hi - lo) * 0.02;
    let chart =
        svg(CHART_W, CHART_H - 40, |root| {
            let mut chart = ChartBuilder::on(root)
                .margin(14)
                .margin_right(22)
                .x_label_area_size(46)
                .y_label_area_size(66)
                .build_cartesian_2d((lo - pad)..(hi + pad), y_axis.clone())?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_label_formatter(&|v| fmt_axis(*v))
                .y_label_formatter(&|v| fmt_axis(*v))
                .x_labels(8)
                .bold_line_style(GRID_BOLD)
                .light_line_style(TRANSPARENT)
                .axis_style(AXIS)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .draw()?;
            chart.draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(
                |(i, &c)| {
                    let a = lo + width * i as f64;
                    Rectangle::new([(a, 0.0), (a + width, c as f64)], color.mix(0.85).filled())
                },
            ))?;
            chart.draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(
                |(i, &c)| {
                    let a = lo + width * i as f64;
                    Rectangle::new([(a, 0.0), (a + width, c as f64)], WHITE.stroke_width(1))
                },
            ))?;
            Ok(())
        })?;
    let mut note = format!(
        "{} values; p50 {} ms, p99 {} ms, max {} ms",
        fmt_count(n),
        fmt_ms(crate::metrics::percentile(&sorted, 50.0)),
        fmt_ms(crate::metrics::percentile(&sorted, 99.0)),
        fmt_ms(max)
    );
    if above > 0 {
        let _ = write!(
            note,
            "; {} value{} above {} ms not drawn",
            fmt_count(above),
            if above == 1 { "" } else { "s" },
            fmt_ms(hi)
        );
    }
    Ok((chart, note))
}

/// Round steps (1, 2, 5 × 10^k) giving at most `most` ticks over `span`.
fn nice_step(span: f64, most: usize) -> f64 {
    let raw = span / most.max(1) as f64;
    let base = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * base)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * base)
}

/// Each request a bar from send to end: amber until the first token, blue while streaming, red
/// when it failed. Requests are ordered by send time, the first at the top; request k (1-based)
/// is drawn at y = n − k + 1.
fn timeline(records: &[&RequestRecord]) -> anyhow::Result<String> {
    let n = records.len();
    let end_of = |r: &RequestRecord| r.end_ns.max(r.delta_ns.last().copied().unwrap_or(0));
    let end = records.iter().map(|r| end_of(r)).max().unwrap_or(1) as f64 / 1e9;
    let start = records.iter().map(|r| r.sent_ns).min().unwrap_or(0) as f64 / 1e9;
    let height = (n as u32 * 4).clamp(220, 900) + 70;
    let width = CHART_W * 2 + 20;
    let pad = (end - start).max(1e-3) * 0.01;
    let step = nice_step(n as f64, 10).max(1.0) as usize;
    let mut ticks: Vec<f64> = std::iter::once(1)
        .chain((step..=n).step_by(step))
        .map(|k| (n - k + 1) as f64)
        .collect();
    ticks.dedup();
    let y_axis = TickedAxis {
        lo: 0.4,
        hi: n as f64 + 0.6,
        ticks,
    };
    svg(width, height, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .margin_right(22)
            .x_label_area_size(46)
            .y_label_area_size(66)
            .build_cartesian_2d((start - pad)..(end + pad), y_axis.clone())?;
        chart
            .configure_mesh()
            .x_desc("seconds since the run started")
            .y_desc("request # (by send time)")
            .x_label_formatter(&|v| fmt_axis(*v))
            .y_label_formatter(&|v| format!("{}", n as i64 - v.round() as i64 + 1))
            .x_labels(12)
            .bold_line_style(GRID_BOLD)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()?;
        let half = if n > 150 { 0.5 } else { 0.35 };
        let min_width = (end - start).max(1e-3) * 0.004;
        let mut bars = Vec::with_capacity(n * 2);
        for (i, r) in records.iter().enumerate() {
            let y = (n - i) as f64;
            let (y0, y1) = (y - half, y + half);
            let sent = r.sent_ns as f64 / 1e9;
            let done = end_of(r) as f64 / 1e9;
            if !r.success {
                // A fast failure would be a hairline: give it a visible width.
                let done = done.max(sent + min_width);
                bars.push(Rectangle::new([(sent, y0), (done, y1)], C_FAIL.filled()));
                continue;
            }
            match r.delta_ns.first() {
                Some(&first) => {
                    let first = first as f64 / 1e9;
                    bars.push(Rectangle::new([(sent, y0), (first, y1)], C_WAIT.filled()));
                    bars.push(Rectangle::new([(first, y0), (done, y1)], C_STREAM.filled()));
                }
                None => bars.push(Rectangle::new([(sent, y0), (done, y1)], C_STREAM.filled())),
            }
        }
        chart.draw_series(bars)?;
        Ok(())
    })
}

/// One small chart of a server metric over the run.
fn server_chart(points: &[(f64, f64)]) -> anyhow::Result<String> {
    let (mut t0, mut t1) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (mut y0, mut y1) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    if t1 - t0 < 1e-9 {
        t0 -= 1.0;
        t1 += 1.0;
    }
    if y1 - y0 < 1e-12 {
        let d = y0.abs().max(1.0) * 0.1;
        y0 -= d;
        y1 += d;
    } else {
        let d = (y1 - y0) * 0.08;
        y0 = if y0 >= 0.0 && y0 - d < 0.0 {
            0.0
        } else {
            y0 - d
        };
        y1 += d;
    }
    svg(420, 230, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_right(16)
            .x_label_area_size(38)
            .y_label_area_size(62)
            .build_cartesian_2d(t0..t1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .x_label_formatter(&|v| fmt_axis(*v))
            .y_label_formatter(&|v| fmt_axis(*v))
            .x_labels(6)
            .y_labels(5)
            .bold_line_style(GRID_BOLD)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 12))
            .draw()?;
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            C_SERVER.stroke_width(2),
        ))?;
        if points.len() <= 60 {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 2, C_SERVER.filled())))?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.2}"),
        Some(v) if v.is_infinite() => "inf".into(),
        _ => "–".into(),
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_rate(r: f64) -> String {
    if r.is_infinite() {
        "inf".into()
    } else {
        let s = format!("{r}");
        s.strip_suffix(".0").map_or(s.clone(), str::to_string)
    }
}

/// Axis numbers: short, no float noise (`0.30000000000000004`), thousands as `k`.
fn fmt_axis(v: f64) -> String {
    let a = v.abs();
    if a < 1e-12 {
        // Tick arithmetic leaves 1.7e-18 where 0 was meant.
        return "0".into();
    }
    let s = if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.1e}")
    };
    if s.contains('.') && !s.contains('e') && !s.ends_with(['k', 'M']) {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A metric value for the server table: integers as integers, others to 4 significant digits.
fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => {
            let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
            let s = format!("{v:.digits$}");
            if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                s
            }
        }
    }
}

/// `20261201-080652` → `2026-12-01 08:06:52`.
fn fmt_date(d: &str) -> String {
    let b = d.as_bytes();
    if d.len() == 15 && b[8] == b'-' && d.is_ascii() {
        format!(
            "{}-{}-{} {}:{}:{}",
            &d[0..4],
            &d[4..6],
            &d[6..8],
            &d[9..11],
            &d[11..13],
            &d[13..15]
        )
    } else {
        d.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// The page

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
color:#1d2329;margin:0;background:#f4f6f8}\
main{max-width:1360px;margin:0 auto;padding:18px 22px 40px}\
h1{font-size:24px;margin:4px 0 10px}h2{font-size:19px;margin:30px 0 10px;\
border-bottom:2px solid #d5dbe1;padding-bottom:4px}h3{font-size:16px;margin:20px 0 8px}\
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0 0 8px}\
dl.meta dt{color:#5b6670}dl.meta dd{margin:0;word-break:break-all}\
nav a{margin-right:14px}a{color:#1f5fa8}\
table{border-collapse:collapse;background:#fff;font-variant-numeric:tabular-nums;margin:6px 0}\
th,td{border:1px solid #dde2e7;padding:3px 7px;text-align:right;white-space:nowrap}\
table{font-size:13px}th{background:#eef1f4;font-weight:600;white-space:normal;\
vertical-align:bottom}td.l,th.l{text-align:left}\
tr.best td{background:#e8f6e8}tr.flat td{background:#fdecea}\
.tag{display:inline-block;font-size:11px;font-weight:600;border-radius:3px;padding:0 5px;\
margin-left:6px;color:#fff;vertical-align:1px}.tag.best{background:#2e8b3a}\
.tag.knee{background:#b7791f}.tag.flat{background:#c53030}\
.scroll{overflow-x:auto}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px}\
.grid.small{grid-template-columns:repeat(auto-fill,minmax(380px,1fr))}\
figure{margin:0;background:#fff;border:1px solid #dde2e7;border-radius:6px;padding:8px 10px}\
figure svg{display:block;width:100%;height:auto}\
figcaption{font-weight:600;margin-bottom:4px;word-break:break-all}\
.note{color:#5b6670;font-size:13px;margin:4px 0}\
.legend span{display:inline-block;margin-right:14px;font-size:13px}\
.legend i{display:inline-block;width:14px;height:10px;margin-right:5px;border-radius:2px;\
vertical-align:0}\
article.run{background:#fff;border:1px solid #dde2e7;border-radius:6px;padding:4px 14px 14px;\
margin:14px 0}article.run figure{border:none;padding:0}\
.verdict{font-weight:600}.err{color:#b00020}\
footer{color:#5b6670;font-size:12px;margin-top:30px}footer li{word-break:break-all}";

fn legend(items: &[(&str, RGBColor)]) -> String {
    let mut s = String::from("<div class=\"legend\">");
    for (name, c) in items {
        let _ = write!(
            s,
            "<span><i style=\"background:{}\"></i>{}</span>",
            hex(*c),
            escape(name)
        );
    }
    s.push_str("</div>");
    s
}

fn figure(title: &str, svg: &str, extra: &str) -> String {
    format!(
        "<figure><figcaption>{}</figcaption>{svg}{extra}</figure>\n",
        escape(title)
    )
}

/// Distinct non-empty values of a string field across runs, for the header.
fn distinct(report: &Report, get: impl Fn(&Run) -> Option<String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for r in &report.runs {
        if let Some(v) = get(r).filter(|v| !v.is_empty())
            && !seen.contains(&v)
        {
            seen.push(v);
        }
    }
    if seen.is_empty() {
        "–".into()
    } else {
        seen.join(", ")
    }
}

/// A string field of a run's result document, by key path (`["llmb", "base_url"]`).
fn doc_str(run: &Run, path: &[&str]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut v = run.doc.get(*first)?;
    for k in rest {
        v = v.get(*k)?;
    }
    v.as_str().map(str::to_string)
}

/// Renders the report as one HTML document (see the module doc for what it contains).
pub fn render(report: &Report, options: &RenderOptions) -> anyhow::Result<String> {
    let groups = groups_of(report);
    let all_rows: Vec<&Row> = groups.iter().flat_map(|g| &g.rows).collect();
    let detail = detail_runs(report, &groups, options)?;
    let has_server = detail
        .iter()
        .any(|&k| report.runs[k].server_metrics.is_some());

    let mut h = String::with_capacity(1 << 16);
    let model = distinct(report, |r| doc_str(r, &["model_id"]));
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; img-src data:\">",
    );
    h.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    let _ = writeln!(
        h,
        "<title>llmb report: {}</title><style>{STYLE}</style></head><body><main>",
        escape(&model)
    );

    // 1. Header and stage table.
    h.push_str("<h1>llmb benchmark report</h1>\n<dl class=\"meta\">");
    let mut dates: Vec<String> = report
        .runs
        .iter()
        .filter_map(|r| doc_str(r, &["date"]))
        .collect();
    dates.sort();
    let date = match (dates.first(), dates.last()) {
        (Some(a), Some(b)) if a != b => format!("{} – {} UTC", fmt_date(a), fmt_date(b)),
        (Some(a), _) => format!("{} UTC", fmt_date(a)),
        _ => "–".into(),
    };
    let stage_only = all_rows.iter().filter(|r| r.run.is_none()).count();
    let runs_text = if stage_only > 0 {
        format!(
            "{} ({} more stage{} known only from a stage summary)",
            report.runs.len(),
            stage_only,
            if stage_only == 1 { "" } else { "s" }
        )
    } else {
        report.runs.len().to_string()
    };
    for (k, v) in [
        ("Model", model.clone()),
        ("Backend", distinct(report, |r| doc_str(r, &["backend"]))),
        (
            "Base URL",
            distinct(report, |r| doc_str(r, &["llmb", "base_url"])),
        ),
        (
            "Endpoint",
            distinct(report, |r| doc_str(r, &["llmb", "endpoint"])),
        ),
        (
            "Dataset",
            distinct(report, |r| doc_str(r, &["llmb", "dataset_name"])),
        ),
        ("Date", date),
        ("Runs", runs_text),
    ] {
        let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    }
    h.push_str("</dl>\n<nav><a href=\"#stages\">Stages</a><a href=\"#load\">Load curves</a>");
    if !detail.is_empty() {
        h.push_str("<a href=\"#requests\">Per-request detail</a>");
    }
    if has_server {
        h.push_str("<a href=\"#server\">Server metrics</a>");
    }
    h.push_str("</nav>\n");

    h.push_str("<section id=\"stages\"><h2>1. Stages</h2>\n");
    let mut number = 0usize;
    for g in &groups {
        if !g.title.is_empty() {
            let _ = write!(h, "<h3>{}</h3>", escape(&g.title));
        }
        h.push_str(&stage_table(report, g, &all_rows, &detail, &mut number));
        for v in &g.verdict {
            let _ = write!(h, "<p class=\"verdict\">{}</p>", escape(v));
        }
    }
    h.push_str(
        "<p class=\"note\">Latencies in ms. TTFT: first streamed token − send; TPOT: mean time \
         per output token after the first; ITL: gaps between streamed chunks; E2EL: send to last \
         token. Quantiles are recomputed from the per-request records when they are present, \
         else taken from the stage summary or the result file.</p></section>\n",
    );

    // 2. Load curves.
    h.push_str("<section id=\"load\"><h2>2. Load curves</h2>\n");
    h.push_str(&load_curves(&groups)?);
    h.push_str("</section>\n");

    // 3. Per-request detail.
    if !detail.is_empty() {
        h.push_str("<section id=\"requests\"><h2>3. Per-request detail</h2>\n");
        if options.runs.is_empty() && detail.len() < report.runs.len() {
            let _ = write!(
                h,
                "<p class=\"note\">Showing the last of {} runs; <code>llmb report --run \
                 TEXT</code> picks runs whose file name contains TEXT.</p>",
                report.runs.len()
            );
        }
        for &k in &detail {
            h.push_str(&run_detail(report, k, &all_rows, options.timeline_cap)?);
        }
        h.push_str("</section>\n");
    }

    // 4. Server metrics.
    if has_server {
        h.push_str("<section id=\"server\"><h2>4. Server metrics</h2>\n");
        for &k in &detail {
            if let Some(sm) = &report.runs[k].server_metrics {
                h.push_str(&server_section(&report.runs[k], sm)?);
            }
        }
        h.push_str("</section>\n");
    }

    h.push_str("<footer><p>Written by llmb ");
    h.push_str(env!("CARGO_PKG_VERSION"));
    h.push_str(" <code>report</code> from:</p><ul>");
    for r in &report.runs {
        let records = if r.records.is_some() {
            format!(" + {}", file_name(&r.records_path))
        } else {
            String::new()
        };
        let _ = write!(
            h,
            "<li>{}{}</li>",
            escape(&r.path.display().to_string()),
            escape(&records)
        );
    }
    for s in &report.sweeps {
        let _ = write!(h, "<li>{}</li>", escape(&s.path.display().to_string()));
    }
    for (f, why) in &report.skipped {
        let _ = write!(
            h,
            "<li>skipped {}: {}</li>",
            escape(&f.display().to_string()),
            escape(why)
        );
    }
    h.push_str("</ul></footer>\n</main></body></html>\n");
    Ok(h)
}

/// Which runs get per-request charts: `--run` matches, else all of few runs, else the last.
fn detail_runs(
    report: &Report,
    groups: &[Group],
    options: &RenderOptions,
) -> anyhow::Result<Vec<usize>> {
    let in_order: Vec<usize> = groups
        .iter()
        .flat_map(|g| g.rows.iter().filter_map(|r| r.run))
        .collect();
    if !options.runs.is_empty() {
        let mut picked = Vec::new();
        for want in &options.runs {
            let matches: Vec<usize> = in_order
                .iter()
                .copied()
                .filter(|&k| report.runs[k].file_name().contains(want.as_str()))
                .collect();
            ensure!(
                !matches.is_empty(),
                "--run {want:?} matches none of the result files ({})",
                report
                    .runs
                    .iter()
                    .map(Run::file_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for k in matches {
                if !picked.contains(&k) {
                    picked.push(k);
                }
            }
        }
        picked.sort_by_key(|k| in_order.iter().position(|x| x == k));
        return Ok(picked);
    }
    if in_order.len() <= DETAIL_ALL_UP_TO {
        Ok(in_order)
    } else {
        Ok(in_order.last().copied().into_iter().collect())
    }
}

fn anchor(k: usize) -> String {
    format!("run-{}", k + 1)
}

fn stage_table(
    report: &Report,
    g: &Group,
    all_rows: &[&Row],
    detail: &[usize],
    number: &mut usize,
) -> String {
    let rows: Vec<&Row> = g.rows.iter().collect();
    let conc_varies = rows
        .iter()
        .map(|r| r.stats.concurrency)
        .collect::<BTreeSet<_>>()
        .len()
        > 1;
    let rate_varies = rows
        .iter()
        .map(|r| r.stats.rate.to_bits())
        .collect::<BTreeSet<_>>()
        .len()
        > 1;
    let show_conc =
        conc_varies || (!rate_varies && rows.iter().any(|r| r.stats.concurrency.is_some()));
    let show_rate = rate_varies || !show_conc;
    let show_goodput = all_rows.iter().any(|r| r.stats.goodput.is_some());
    let mut h = String::from(
        "<div class=\"scroll\"><table><thead><tr><th>#</th><th class=\"l\">Stage</th>",
    );
    if show_conc {
        h.push_str("<th>Concurrency</th>");
    }
    if show_rate {
        h.push_str("<th>Rate req/s</th>");
    }
    h.push_str("<th>Completed</th><th>Failed</th><th>req/s</th><th>Output tok/s</th>");
    if show_goodput {
        h.push_str("<th>Goodput req/s</th>");
    }
    h.push_str(
        "<th>TTFT p50</th><th>TTFT p99</th><th>TPOT mean</th><th>ITL mean</th><th>ITL p99</th>\
         <th>E2EL p50</th><th>E2EL p95</th><th>E2EL p99</th></tr></thead><tbody>\n",
    );
    for r in rows {
        *number += 1;
        let s = &r.stats;
        let class = if r.best {
            " class=\"best\""
        } else if r.flat {
            " class=\"flat\""
        } else {
            ""
        };
        let mut label = escape(&r.label);
        if let Some(k) = r.run
            && detail.contains(&k)
        {
            label = format!("<a href=\"#{}\">{label}</a>", anchor(k));
        }
        let title = r
            .run
            .map(|k| escape(&report.runs[k].file_name()))
            .unwrap_or_else(|| "no result file".into());
        let mut tags = String::new();
        if r.best {
            tags.push_str("<span class=\"tag best\">best throughput</span>");
        }
        if r.knee {
            tags.push_str("<span class=\"tag knee\">knee</span>");
        }
        if r.flat {
            tags.push_str("<span class=\"tag flat\">saturated</span>");
        }
        let _ = write!(
            h,
            "<tr{class}><td>{number}</td><td class=\"l\" title=\"{title}\">{label}{tags}</td>"
        );
        if show_conc {
            let c = s.concurrency.map_or("unlimited".into(), |c| c.to_string());
            let _ = write!(h, "<td>{c}</td>");
        }
        if show_rate {
            let _ = write!(h, "<td>{}</td>", fmt_rate(s.rate));
        }
        let count = |v: Option<f64>| v.map_or("–".into(), |v| format!("{}", v as u64));
        let _ = write!(
            h,
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            count(s.completed),
            count(s.failed),
            fmt_num(s.req_s),
            fmt_num(s.out_tok_s)
        );
        if show_goodput {
            let _ = write!(h, "<td>{}</td>", fmt_num(s.goodput));
        }
        for v in [
            s.ttft[0],
            s.ttft[2],
            s.tpot_mean,
            s.itl_mean,
            s.itl_p99,
            s.e2el[0],
            s.e2el[1],
            s.e2el[2],
        ] {
            let _ = write!(h, "<td>{}</td>", fmt_num(v));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table></div>\n");
    h
}

/// Section 2: latency and throughput against load, one line per metric (and per sweep).
/// Section 2: one set of charts when every group varied the same thing (concurrency or rate),
/// else a set per group, since a rate sweep has no place on a concurrency axis.
fn load_curves(groups: &[Group]) -> anyhow::Result<String> {
    let kinds: BTreeSet<String> = groups
        .iter()
        .map(|g| format!("{:?}", XScale::of(&g.rows.iter().collect::<Vec<_>>()).kind))
        .collect();
    if groups.len() < 2 || kinds.len() == 1 {
        return load_section(groups, 0);
    }
    let mut h = String::new();
    let mut first = 0;
    for g in groups {
        let title = if g.title.is_empty() { "Runs" } else { &g.title };
        let _ = write!(h, "<h3>{}</h3>", escape(title));
        h.push_str(&load_section(std::slice::from_ref(g), first)?);
        first += g.rows.len();
    }
    Ok(h)
}

/// Latency and throughput against load, one line per metric and group; `first` is the table
/// row number of the first row (for the x axis when no load varied).
fn load_section(groups: &[Group], first: usize) -> anyhow::Result<String> {
    let all_rows: Vec<&Row> = groups.iter().flat_map(|g| &g.rows).collect();
    let mut x = XScale::of(&all_rows).numbered_from(first);
    // Each group's points, sorted by x; rows off the axis are counted for a note.
    let mut index = first;
    let mut off_axis = 0usize;
    let mut per_group: Vec<Vec<(f64, &Row)>> = Vec::new();
    for g in groups {
        let mut pts = Vec::new();
        for r in &g.rows {
            match x.x_of(r, index) {
                Some(v) => pts.push((v, r)),
                None => off_axis += 1,
            }
            index += 1;
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        per_group.push(pts);
    }
    x.marks = per_group
        .iter()
        .flatten()
        .filter(|(_, r)| r.flat)
        .map(|(v, _)| (*v, "saturation"))
        .collect();
    let lines = |name: &str, color: RGBColor, get: &dyn Fn(&Stats) -> Option<f64>| -> Vec<Line> {
        per_group
            .iter()
            .enumerate()
            .map(|(gi, pts)| Line {
                name: name.to_string(),
                color,
                group: gi,
                points: pts
                    .iter()
                    .filter_map(|(xv, r)| get(&r.stats).filter(|v| v.is_finite()).map(|y| (*xv, y)))
                    .collect(),
            })
            .filter(|l| !l.points.is_empty())
            .collect()
    };
    let mut h = String::new();
    if all_rows.len() == 1 {
        h.push_str("<p class=\"note\">One run: each chart shows its numbers as single points.</p>");
    } else if x.kind == XKind::Index {
        h.push_str(
            "<p class=\"note\">Neither concurrency nor request rate varied across these runs: \
             points are placed by their row number in the table.</p>",
        );
    }
    if off_axis > 0 {
        let _ = write!(
            h,
            "<p class=\"note\">{off_axis} row{} with unlimited {} left out of these charts.</p>",
            if off_axis == 1 { "" } else { "s" },
            if x.kind == XKind::Concurrency {
                "concurrency"
            } else {
                "rate"
            }
        );
    }
    if groups.len() > 1 {
        let shapes = ["●", "▲", "✕"];
        let names: Vec<String> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let title = if g.title.is_empty() { "runs" } else { &g.title };
                format!("{} {}", shapes[i % 3], escape(title))
            })
            .collect();
        let _ = write!(h, "<p class=\"note\">Markers: {}</p>", names.join("; "));
    }
    h.push_str("<div class=\"grid\">\n");
    let pct = |which: usize, name: &str, c: RGBColor, field: fn(&Stats) -> [Option<f64>; 3]| {
        lines(name, c, &move |s: &Stats| field(s)[which])
    };
    let e2el: Vec<Line> = [
        pct(0, "p50", C_P50, |s| s.e2el),
        pct(1, "p95", C_P95, |s| s.e2el),
        pct(2, "p99", C_P99, |s| s.e2el),
    ]
    .into_iter()
    .flatten()
    .collect();
    let ttft: Vec<Line> = [
        pct(0, "p50", C_P50, |s| s.ttft),
        pct(1, "p95", C_P95, |s| s.ttft),
        pct(2, "p99", C_P99, |s| s.ttft),
    ]
    .into_iter()
    .flatten()
    .collect();
    let req = lines("requests/s", C_REQ, &|s| s.req_s);
    let tok = lines("output tokens/s", C_TOK, &|s| s.out_tok_s);
    let ttft99 = lines("TTFT p99", C_P99, &|s| s.ttft[2]);
    let legend_of = |ls: &[Line]| {
        let mut seen: Vec<(&str, RGBColor)> = Vec::new();
        for l in ls {
            if !seen.iter().any(|(n, _)| *n == l.name) {
                seen.push((&l.name, l.color));
            }
        }
        legend(&seen)
    };
    let mut chart = |title: &str,
                     y: &str,
                     ls: &[Line],
                     right: Option<(&str, &[Line])>,
                     leg: String|
     -> anyhow::Result<()> {
        if ls.is_empty() && right.is_none_or(|r| r.1.is_empty()) {
            h.push_str(&figure(
                title,
                "",
                "<p class=\"note\">No values for this chart in these files.</p>",
            ));
            return Ok(());
        }
        h.push_str(&figure(title, &load_chart(&x, y, ls, right)?, &leg));
        Ok(())
    };
    chart(
        "End-to-end latency",
        "E2EL, ms",
        &e2el,
        None,
        legend_of(&e2el),
    )?;
    chart(
        "Time to first token",
        "TTFT, ms",
        &ttft,
        None,
        legend_of(&ttft),
    )?;
    chart(
        "Request throughput",
        "requests/s",
        &req,
        None,
        legend_of(&req),
    )?;
    chart(
        "Output token throughput",
        "output tokens/s",
        &tok,
        None,
        legend_of(&tok),
    )?;
    let both_legend = format!(
        "{}<p class=\"note\">Solid line with dots, left axis: output tokens/s. Dashed line \
         with squares, right axis: TTFT p99 (ms).</p>",
        legend(&[("output tokens/s", C_TOK), ("TTFT p99", C_P99)])
    );
    chart(
        "Output tokens/s and TTFT p99",
        "output tokens/s",
        &tok,
        Some(("TTFT p99, ms", &ttft99)),
        both_legend,
    )?;
    h.push_str("</div>\n");
    Ok(h)
}

/// Section 3 for one run: TTFT and ITL histograms, a request timeline, failures by kind.
fn run_detail(report: &Report, k: usize, all_rows: &[&Row], cap: usize) -> anyhow::Result<String> {
    let run = &report.runs[k];
    let row = all_rows.iter().position(|r| r.run == Some(k));
    let mut h = format!("<article class=\"run\" id=\"{}\">", anchor(k));
    let label = row.map_or_else(String::new, |i| {
        format!("#{} {} — ", i + 1, all_rows[i].label)
    });
    let _ = write!(h, "<h3>{}{}</h3>", escape(&label), escape(&run.file_name()));
    let Some(records) = &run.records else {
        let _ = writeln!(
            h,
            "<p class=\"note\">No records file ({} is missing: runs with --no-records, and \
             vLLM's own result files, have none), so no per-request charts.</p></article>",
            escape(&file_name(&run.records_path))
        );
        return Ok(h);
    };
    let measured: Vec<&RequestRecord> = records.iter().filter(|r| !r.warmup).collect();
    let warmups = records.len() - measured.len();
    let ok: Vec<&RequestRecord> = measured.iter().copied().filter(|r| r.success).collect();
    let failed = measured.len() - ok.len();
    let _ = write!(
        h,
        "<p class=\"note\">{} requests: {} succeeded, {} failed{}.</p>",
        fmt_count(measured.len()),
        fmt_count(ok.len()),
        fmt_count(failed),
        if warmups > 0 {
            format!("; {} warmup requests left out", fmt_count(warmups))
        } else {
            String::new()
        }
    );
    h.push_str("<div class=\"grid\">");
    let ttfts: Vec<f64> = ok
        .iter()
        .filter_map(|r| r.ttft_s())
        .map(|s| s * 1e3)
        .collect();
    let itls: Vec<f64> = ok
        .iter()
        .flat_map(|r| r.itls_s())
        .map(|s| s * 1e3)
        .collect();
    for (title, values, desc, y_desc, color, none) in [
        (
            "TTFT distribution",
            &ttfts,
            "TTFT, ms",
            "requests",
            C_WAIT,
            "No successful streamed request, so no TTFT.",
        ),
        (
            "ITL distribution",
            &itls,
            "inter-token latency, ms",
            "gaps between chunks",
            C_STREAM,
            "No request streamed two chunks or more, so no inter-token gaps.",
        ),
    ] {
        if values.is_empty() {
            h.push_str(&figure(title, "", &format!("<p class=\"note\">{none}</p>")));
        } else {
            let (chart, note) = histogram(values, desc, y_desc, color)?;
            h.push_str(&figure(
                title,
                &chart,
                &format!("<p class=\"note\">{}</p>", escape(&note)),
            ));
        }
    }
    h.push_str("</div>");
    if !measured.is_empty() {
        let mut ordered = measured.clone();
        ordered.sort_by_key(|r| (r.sent_ns, r.id));
        let shown = ordered.len().min(cap.max(1));
        let mut note = legend(&[
            ("waiting for the first token", C_WAIT),
            ("streaming", C_STREAM),
            ("failed", C_FAIL),
        ]);
        if shown < ordered.len() {
            let _ = write!(
                note,
                "<p class=\"note\">Capped: showing the first {} of {} requests by send time \
                 (<code>--max-timeline-requests</code> changes the cap).</p>",
                fmt_count(shown),
                fmt_count(ordered.len())
            );
        }
        h.push_str(&figure(
            "Request timeline (send → first token → end)",
            &timeline(&ordered[..shown])?,
            &note,
        ));
    }
    if failed > 0 {
        let mut kinds: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for r in measured.iter().filter(|r| !r.success) {
            let (kind, msg) = r
                .error
                .as_ref()
                .map_or(("unknown", ""), |e| (e.kind.as_str(), e.message.as_str()));
            let e = kinds
                .entry(kind.to_string())
                .or_insert_with(|| (0, msg.chars().take(300).collect()));
            e.0 += 1;
        }
        h.push_str(
            "<h3>Failures</h3><table><tr><th class=\"l\">kind</th><th>requests</th>\
             <th class=\"l\">first message</th></tr>",
        );
        for (kind, (n, msg)) in kinds {
            let _ = write!(
                h,
                "<tr><td class=\"l err\">{}</td><td>{n}</td><td class=\"l\">{}</td></tr>",
                escape(&kind),
                escape(&msg)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</article>\n");
    Ok(h)
}

/// Section 4 for one run: each scraped series as a small chart, then start/end/delta.
fn server_section(run: &Run, sm: &ServerMetrics) -> anyhow::Result<String> {
    let mut h = format!("<h3>{}</h3>", escape(&run.file_name()));
    if let Some(url) = &sm.url {
        let _ = write!(h, "<p class=\"note\">Scraped from {}</p>", escape(url));
    }
    let drawable: Vec<&(String, Vec<(f64, f64)>)> =
        sm.series.iter().filter(|(_, p)| !p.is_empty()).collect();
    if !drawable.is_empty() {
        h.push_str("<div class=\"grid small\">");
        for (name, points) in drawable.iter().take(MAX_SERVER_CHARTS) {
            h.push_str(&figure(name, &server_chart(points)?, ""));
        }
        h.push_str("</div>");
        if drawable.len() > MAX_SERVER_CHARTS {
            let _ = write!(
                h,
                "<p class=\"note\">Charts for the first {MAX_SERVER_CHARTS} of {} series; the \
                 table lists all.</p>",
                drawable.len()
            );
        }
    }
    if !sm.names.is_empty() {
        h.push_str(
            "<div class=\"scroll\"><table><tr><th class=\"l\">metric</th><th>start</th>\
             <th>end</th><th>delta</th></tr>",
        );
        for name in &sm.names {
            let get = |m: &BTreeMap<String, Option<f64>>| m.get(name).copied().flatten();
            let _ = write!(
                h,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(name),
                fmt_value(get(&sm.start)),
                fmt_value(get(&sm.end)),
                fmt_value(get(&sm.delta))
            );
        }
        h.push_str("</table></div>");
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn axis_numbers_are_short() {
        assert_eq!(fmt_axis(0.30000000000000004), "0.3");
        assert_eq!(fmt_axis(2500.0), "2500");
        assert_eq!(fmt_axis(25000.0), "25k");
        assert_eq!(fmt_axis(12.5), "12.5");
        assert_eq!(fmt_axis(0.0), "0");
        assert_eq!(fmt_axis(1.7e-18), "0");
        assert_eq!(fmt_count(1234567), "1,234,567");
        assert_eq!(fmt_date("20261201-080652"), "2026-12-01 08:06:52");
        assert_eq!(fmt_value(Some(3.0)), "3");
        assert_eq!(fmt_value(Some(0.123456)), "0.1235");
        assert_eq!(fmt_value(Some(0.05)), "0.05");
    }

    fn row(concurrency: Option<usize>, rate: f64) -> Row {
        Row {
            label: String::new(),
            stats: Stats {
                concurrency,
                rate,
                ..Stats::default()
            },
            run: None,
            best: false,
            knee: false,
            flat: false,
        }
    }

    #[test]
    fn x_axis_follows_what_varied() {
        let rows = [
            row(Some(1), f64::INFINITY),
            row(Some(4), f64::INFINITY),
            row(Some(16), f64::INFINITY),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let x = XScale::of(&refs);
        assert_eq!(x.kind, XKind::Concurrency);
        assert!(x.log2, "1..16 spans a factor of 16: log scale");
        assert_eq!(x.label(x.t(16.0)), "16");

        let rows = [row(None, 2.0), row(None, 4.0)];
        let refs: Vec<&Row> = rows.iter().collect();
        let x = XScale::of(&refs);
        assert_eq!(x.kind, XKind::Rate);
        assert!(!x.log2);

        let rows = [row(Some(8), 1.0)];
        let refs: Vec<&Row> = rows.iter().collect();
        let x = XScale::of(&refs);
        assert_eq!(x.kind, XKind::Index);
        let (a, b) = x.range();
        assert!(a < 1.0 && b > 1.0);
    }

    fn record(id: u64, sent: u64, deltas: &[u64], success: bool) -> RequestRecord {
        RequestRecord {
            id,
            sent_ns: sent,
            dispatched_ns: sent,
            delta_ns: deltas.to_vec(),
            end_ns: deltas.last().copied().unwrap_or(sent + 1_000_000),
            output_tokens: deltas.len() as u32,
            success,
            error: (!success).then(|| crate::records::RequestError {
                kind: "http".into(),
                message: "503 <b>busy</b>".into(),
                http_status: Some(503),
            }),
            ..RequestRecord::default()
        }
    }

    #[test]
    fn renders_runs_with_failures_and_caps_the_timeline() {
        let mut doc = Map::new();
        for (k, v) in [
            ("model_id", Value::from("m<script>x</script>")),
            ("backend", Value::from("vllm")),
            ("date", Value::from("20260101-000000")),
            ("completed", Value::from(3)),
            ("failed", Value::from(1)),
            ("request_throughput", Value::from(1.5)),
            ("output_throughput", Value::from(10.0)),
            ("max_concurrency", Value::from(2)),
            ("request_rate", Value::from("inf")),
            ("duration", Value::from(2.0)),
        ] {
            doc.insert(k.into(), v);
        }
        let records = vec![
            record(0, 0, &[20_000_000, 25_000_000, 31_000_000], true),
            record(1, 1_000_000, &[22_000_000, 27_000_000], true),
            record(2, 2_000_000, &[], false),
            record(3, 3_000_000, &[40_000_000, 41_000_000, 49_000_000], true),
        ];
        let report = Report {
            runs: vec![Run {
                path: PathBuf::from("/x/run.json"),
                doc,
                records_path: PathBuf::from("/x/run.records.jsonl"),
                records: Some(records),
                server_metrics: None,
            }],
            ..Report::default()
        };
        let html = render(
            &report,
            &RenderOptions {
                runs: Vec::new(),
                timeline_cap: 2,
            },
        )
        .unwrap();
        assert!(!html.contains("<script>"));
        assert!(html.contains("m&lt;script&gt;x&lt;/script&gt;"));
        assert!(
            html.contains("503 &lt;b&gt;busy&lt;/b&gt;"),
            "failure messages escaped"
        );
        assert!(html.contains("showing the first 2 of 4 requests"));
        assert!(html.contains(&hex(C_FAIL)), "failed requests drawn in red");
        // 5 load charts, 2 histograms, 1 timeline.
        assert_eq!(html.matches("<svg").count(), 8);
    }
}
