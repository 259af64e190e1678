//! `llmb bench`'s entry: one run, `--num-runs` repeated runs summarised across runs, or an
//! `--search` for the highest load meeting SLOs; each is made of [`crate::bench`] runs.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use llmb_engine::lifecycle::{Cancel, StopCause};
use llmb_engine::metrics::BenchmarkMetrics;
use llmb_engine::outcome::SweepOutcome;
use llmb_report::console;

use crate::args::BenchArgs;
use crate::bench::run_and_print;

/// `llmb bench`: run, print the report, save files. Ctrl-C stops the run in any phase (see
/// [`llmb_engine::lifecycle`]); the results so far are still written.
pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    let metering = match args.plugin_metering.as_str() {
        "fuel" => llmb_engine::plugin::Metering::Fuel,
        _ => llmb_engine::plugin::Metering::Epoch,
    };
    // LLMB_NO_FUEL=1 (no metering, for measuring its cost) overrides the flag.
    if std::env::var_os("LLMB_NO_FUEL").is_none() {
        llmb_engine::plugin::set_metering(metering)?;
    }
    let cancel = Cancel::new();
    cancel.on_ctrl_c();
    if args.search.is_some() {
        crate::search::run_search(&args, &cancel).await?;
    } else if args.num_runs > 1 {
        run_repeated(&args, &cancel).await?;
    } else {
        run_and_print(&args, &cancel).await?;
    }
    if let Some(cause @ StopCause::PluginFaults { .. }) = cancel.cause() {
        bail!(
            "the run was stopped: {cause}; what was measured until then is in the records and the report above"
        );
    }
    Ok(())
}

/// One case of `llmb run`: an SLO search, repeated runs or a single run as its flags say, printed
/// as `llmb bench` prints it; returns the result files it saved.
pub async fn run_case(
    args: &BenchArgs,
    cancel: &Cancel,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    if args.search.is_some() {
        let outcome = crate::search::run_search(args, cancel).await?;
        return Ok(outcome
            .stages
            .iter()
            .filter_map(|s| s.result.as_ref().map(std::path::PathBuf::from))
            .collect());
    }
    let runs = if args.num_runs > 1 {
        run_repeated(args, cancel).await?
    } else {
        vec![run_and_print(args, cancel).await?]
    };
    Ok(runs
        .iter()
        .flat_map(|r| r.stages.iter().filter_map(|s| s.result_path.clone()))
        .collect())
}

/// `--num-runs N`: the benchmark N times with the same seed (a pause of `--run-cooldown`
/// between), each run's files with a `-runK` suffix, then per stage each metric's spread across
/// the runs (printed, and saved as `NAME-runs.json` with `--save-result`). Ctrl-C ends the
/// series after the run it interrupts; the runs that finished are still summarised.
pub async fn run_repeated(args: &BenchArgs, cancel: &Cancel) -> anyhow::Result<Vec<SweepOutcome>> {
    let mut runs = Vec::new();
    for k in 1..=args.num_runs {
        if k > 1 {
            if let Some(pause) = args.run_cooldown {
                eprintln!("cooldown {pause:?} before run {k} of {}", args.num_runs);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancel.stopped() => {}
                }
            }
            if cancel.is_stopping() {
                break;
            }
        }
        eprintln!("run {k} of {} (seed {})", args.num_runs, args.seed);
        let mut run_args = args.clone();
        run_args.run_suffix = format!("-run{k}");
        let run = run_and_print(&run_args, cancel).await?;
        if cancel.is_stopping() {
            // Cut short: its numbers are not a run like the others, so they stay out of the
            // spread (its files are kept and say `interrupted`).
            eprintln!(
                "run {k} was interrupted: the summary covers the {} runs that finished",
                runs.len()
            );
            break;
        }
        runs.push(run);
    }
    print_and_save_spreads(args, &runs)?;
    Ok(runs)
}

/// The across-runs table of every stage (stage i of each run together).
fn print_and_save_spreads(args: &BenchArgs, runs: &[SweepOutcome]) -> anyhow::Result<()> {
    let stages = runs.iter().map(|r| r.stages.len()).min().unwrap_or(0);
    let mut stdout = std::io::stdout().lock();
    let mut doc = Vec::new();
    for i in 0..stages {
        let metrics: Vec<&BenchmarkMetrics> = runs.iter().map(|r| &r.stages[i].metrics).collect();
        let spreads = llmb_engine::repeat::spreads(&metrics);
        let title = runs[0].stages[i]
            .info
            .pattern
            .stage
            .clone()
            .unwrap_or_else(|| "Across runs".into());
        if runs.len() > 1 {
            llmb_report::repeats::print_spreads(&title, runs.len(), &spreads, &mut stdout)?;
        }
        doc.push(serde_json::json!({
            "stage": title,
            "runs": runs.len(),
            "results": runs.iter().map(|r| r.stages[i].result_path.as_ref().map(|p| p.display().to_string())).collect::<Vec<_>>(),
            "metrics": spreads,
        }));
    }
    drop(stdout);
    if (args.save_result || args.save_detailed) && !doc.is_empty() {
        let stem = match &args.result_filename {
            Some(name) => Path::new(name)
                .file_stem()
                .map_or_else(|| name.clone(), |s| s.to_string_lossy().into_owned()),
            None => {
                let unix_now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                format!(
                    "{}-runs-{}",
                    args.label.as_deref().unwrap_or(&args.backend),
                    console::timestamp(unix_now)
                )
            }
        };
        std::fs::create_dir_all(&args.result_dir)
            .with_context(|| format!("cannot create {}", args.result_dir.display()))?;
        let path = args.result_dir.join(format!("{stem}-runs.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("Across-runs summary: {}", path.display());
    }
    Ok(())
}
