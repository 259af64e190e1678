//! `llmb bench`: the flags turned into a [`RunConfig`](llmb_engine::config::RunConfig) (see
//! [`crate::config`]), the simulator started when no server is given, the engine run, and
//! every stage printed and saved as it finishes (result JSON, records, CSV, sweep summaries).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use llmb_engine::lifecycle::Cancel;
use llmb_engine::metrics::BenchmarkMetrics;
use llmb_engine::outcome::{BenchOutcome, RunInfo, SweepOutcome};
use llmb_engine::plan::Stage;
use llmb_engine::session::StageObserver;
use llmb_engine::sweep::{StageSummary, SweepVerdict};
use llmb_report::console;
use llmb_report::export::{ConsoleExporter, CsvExporter, Exporter, JsonExporter, StageOutcome};
use llmb_sim::SimConfig;

use crate::args::BenchArgs;
use crate::config::Server;

/// Runs every stage and prints each report as it finishes, then the rounds and stage tables.
/// `stop`: a [`Cancel`], or a `watch` flag whose turning true stops the run as Ctrl-C does.
pub async fn run_and_print(
    args: &BenchArgs,
    stop: impl Into<Cancel>,
) -> anyhow::Result<SweepOutcome> {
    let sweep = run_all(args, stop, &mut |outcome| {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&ConsoleExporter.serialize(outcome.into())?)?;
        if let Some(sm) = &outcome.server_metrics {
            sm.print(&mut stdout)?;
            let ttft = outcome.metrics.ttft.mean;
            for t in sm.highlights.kv_transfer.iter().filter(|t| t.unit == "ms") {
                if ttft > 0.0 {
                    println!(
                        "{:<40} {:.3} ms of the mean TTFT {ttft:.3} ms ({:.1} %; {})",
                        "KV transfer beside TTFT:",
                        t.mean,
                        100.0 * t.mean / ttft,
                        t.metric
                    );
                }
            }
        }
        if let Some(p) = &outcome.records_path {
            println!("Per-request records: {}", p.display());
        }
        if let Some(p) = &outcome.result_path {
            println!("Result: {}", p.display());
        }
        println!();
        Ok(())
    })
    .await?;
    let mut stdout = std::io::stdout().lock();
    if args.rounds > 1 {
        for group in sweep.stages.chunks(args.rounds as usize) {
            let title = group[0]
                .info
                .pattern
                .stage
                .as_deref()
                .map(|s| s.rsplit_once(", round").map_or(s, |(head, _)| head))
                .filter(|s| !s.starts_with("round"))
                .unwrap_or("same batch")
                .to_string();
            let metrics: Vec<&BenchmarkMetrics> = group.iter().map(|o| &o.metrics).collect();
            console::print_rounds(&title, &metrics, &mut stdout)?;
        }
    }
    if sweep.stages.len() > 1 && sweep.summaries.len() / args.rounds as usize > 1 {
        llmb_report::stages::print_stage_table(&sweep.summaries, &sweep.verdict, &mut stdout)?;
    }
    drop(stdout);
    Ok(sweep)
}

/// Runs a benchmark as `args` says and returns its (last) stage; `stop` (a [`Cancel`], or a
/// `watch` flag turning true) stops it as Ctrl-C does.
pub async fn run(args: &BenchArgs, stop: impl Into<Cancel>) -> anyhow::Result<BenchOutcome> {
    let mut sweep = run_all(args, stop, &mut |_| Ok(())).await?;
    sweep.stages.pop().context("no stage ran")
}

/// Runs every stage in order, calling `on_stage` as each finishes and is saved (so a long
/// sweep reports as it goes). The run's lifecycle is prepare → (per stage) warmup → measure →
/// drain → write; `stop` ends it in any phase, and what was measured is written all the same.
/// The sweep-wide files (summary CSV, stage table, concurrency-sweep files) come at the end.
pub async fn run_all(
    args: &BenchArgs,
    stop: impl Into<Cancel>,
    on_stage: &mut dyn FnMut(&BenchOutcome) -> anyhow::Result<()>,
) -> anyhow::Result<SweepOutcome> {
    // `--endpoint chat.completions`, `--outdir`, fixed prompts: see crate::config::sweep.
    let args = &crate::config::sweep::normalize(args)?;
    let simulator = if args.base_url.is_none() && args.port.is_none() {
        let mut config = crate::sim::sim_config(&args.sim, args.seed);
        config.dialect = Some(args.backend.clone());
        Some(llmb_sim::start_dedicated(config, "127.0.0.1:0".parse()?)?)
    } else {
        None
    };
    let default_model = SimConfig::default().model;
    let server = match &simulator {
        Some(sim) => Server::Simulator {
            base_url: sim.base_url(),
            model: &default_model,
        },
        None => Server::Given,
    };
    let config = crate::config::run_config(args, server);
    let result = match config {
        Ok(config) => {
            let mut saver = Saver {
                args,
                on_stage,
                result_name: None,
            };
            llmb_engine::session::run(&config, stop, &mut saver).await
        }
        Err(e) => Err(e),
    };
    if let Some(s) = simulator {
        s.shutdown().await;
    }
    let sweep = result?;
    let SweepOutcome {
        stages,
        summaries,
        verdict,
    } = &sweep;
    if args.save_result || args.save_detailed {
        let run = match (
            stages.len(),
            &stages.first().and_then(|o| o.result_path.clone()),
        ) {
            (1, Some(p)) => p
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
            _ => sweep_stem(args),
        };
        let rows: Vec<_> = summaries
            .iter()
            .cloned()
            .zip(stages.iter().map(|o| o.result_path.clone()))
            .collect();
        llmb_report::export::append_summary_all(&args.result_dir, &run, &rows)?;
    }
    if (args.save_result || args.save_detailed) && stages.len() > 1 {
        save_sweep_summary(args, summaries, verdict, stages)?;
    }
    if args.concurrency.is_some() && !stages.is_empty() {
        let files = llmb_report::export::write_concurrency_sweep(
            &args.result_dir,
            stages,
            summaries,
            verdict,
            !args.no_records,
        )?;
        if let Some(overall) = files.last() {
            eprintln!("Sweep summary: {}", overall.display());
        }
    }
    Ok(sweep)
}

/// Saves each stage as it finishes (`--save-result`, records, CSV), then hands it on.
struct Saver<'a> {
    args: &'a BenchArgs,
    on_stage: &'a mut dyn FnMut(&BenchOutcome) -> anyhow::Result<()>,
    /// The running stage's result file name, chosen with its records path so both share a stem
    /// (the default name holds the time of day).
    result_name: Option<String>,
}

impl StageObserver for Saver<'_> {
    fn records_path(&mut self, info: &RunInfo, stage: &Stage) -> Option<PathBuf> {
        let (result_name, records_path) = stage_files(self.args, stage, info);
        self.result_name = Some(result_name);
        records_path
    }

    fn finished(&mut self, stage: &Stage, outcome: &mut BenchOutcome) -> anyhow::Result<()> {
        let result_name = match self.result_name.take() {
            Some(name) => name,
            None => stage_files(self.args, stage, &outcome.info).0,
        };
        if let Some(path) = &outcome.records_path {
            let csv = path.with_extension("csv");
            std::fs::write(&csv, CsvExporter.serialize((&*outcome).into())?)
                .with_context(|| format!("cannot write {}", csv.display()))?;
            if !outcome.metrics.slices.is_empty() {
                llmb_report::export::write_slices_csv(
                    &path.with_extension("").with_extension("slices.csv"),
                    &outcome.metrics,
                )?;
            }
        }
        outcome.result_path = save_result(self.args, &result_name, (&*outcome).into())?;
        (self.on_stage)(outcome)
    }
}

/// The name a sweep's shared files start with: `--result-filename`'s stem, else
/// `{label or backend}-sweep-{timestamp}`.
fn sweep_stem(args: &BenchArgs) -> String {
    let stem = match &args.result_filename {
        Some(name) => Path::new(name)
            .file_stem()
            .map_or_else(|| name.clone(), |s| s.to_string_lossy().into_owned()),
        None => {
            let unix_now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!(
                "{}-sweep-{}",
                args.label.as_deref().unwrap_or(&args.backend),
                console::timestamp(unix_now)
            )
        }
    };
    format!("{stem}{}", args.run_suffix)
}

/// `NAME-stages.json`: the stage table, the verdict and each stage's result file.
fn save_sweep_summary(
    args: &BenchArgs,
    summaries: &[StageSummary],
    verdict: &SweepVerdict,
    stages: &[BenchOutcome],
) -> anyhow::Result<()> {
    let stem = sweep_stem(args);
    let rounds: Vec<serde_json::Value> = stages
        .chunks(args.rounds as usize)
        .filter(|group| group.len() > 1)
        .map(|group| {
            let metrics: Vec<&BenchmarkMetrics> = group.iter().map(|o| &o.metrics).collect();
            console::rounds_json(&metrics)
        })
        .collect();
    let doc = serde_json::json!({
        "stages": summaries,
        "results": stages.iter().map(|o| o.result_path.as_ref().map(|p| p.display().to_string())).collect::<Vec<_>>(),
        "best": verdict.best,
        "saturation": verdict.saturation,
        "round_changes": rounds,
    });
    let path = args.result_dir.join(format!("{stem}-stages.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A stage's result file name and records path.
fn stage_files(args: &BenchArgs, spec: &Stage, info: &RunInfo) -> (String, Option<PathBuf>) {
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let result_name = with_suffix(
        &args
            .result_filename
            .clone()
            .unwrap_or_else(|| console::default_result_filename(info, unix_now)),
        &format!("{}{}", args.run_suffix, spec.suffix),
    );
    let records_path = (!args.no_records).then(|| {
        let stem = Path::new(&result_name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        args.result_dir.join(format!(
            "{}.records.jsonl",
            stem.unwrap_or_else(|| result_name.clone())
        ))
    });
    (result_name, records_path)
}

/// `--save-result`/`--save-detailed`: the result JSON (or one more line with
/// `--append-result`); `None` when not asked for.
fn save_result(
    args: &BenchArgs,
    result_name: &str,
    stage: StageOutcome<'_>,
) -> anyhow::Result<Option<PathBuf>> {
    if !(args.save_result || args.save_detailed) {
        return Ok(None);
    }
    let json = JsonExporter {
        detailed: args.save_detailed,
        unix_secs: None,
        compact: args.append_result,
        metadata: crate::config::vllm::parse_metadata(&args.vllm.metadata)?,
    }
    .serialize(stage)?;
    std::fs::create_dir_all(&args.result_dir)
        .with_context(|| format!("cannot create {}", args.result_dir.display()))?;
    let path = args.result_dir.join(result_name);
    if args.append_result {
        append_json_line(&path, &json)?;
    } else {
        std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Some(path))
}

/// `--append-result`: the result as one JSON line after whatever the file holds, as vLLM does.
fn append_json_line(path: &Path, json: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut line = json.to_vec();
    if file.metadata().map(|m| m.len()).unwrap_or(0) > 0 {
        line.insert(0, b'\n');
    }
    file.write_all(&line)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `name.json` + `-c8` -> `name-c8.json`.
fn with_suffix(name: &str, suffix: &str) -> String {
    if suffix.is_empty() {
        return name.to_string();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}{suffix}.{ext}"),
        _ => format!("{name}{suffix}"),
    }
}
