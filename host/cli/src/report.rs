//! `llmb report` and `llmb aggregate`: the flags turned into calls of `llmb-report`.

use std::path::PathBuf;

use llmb_report::html::{RenderOptions, Report};

use crate::args::{AggregateArgs, ReportArgs};

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

/// `llmb report`'s directories and options, rendered and written; returns the path written and
/// what was loaded.
pub fn write_report(args: &ReportArgs) -> anyhow::Result<(PathBuf, Report)> {
    let dirs: Vec<PathBuf> = args.dirs.iter().chain(&args.indir).cloned().collect();
    let options = RenderOptions {
        runs: args.runs.clone(),
        timeline_cap: args.max_timeline_requests,
    };
    llmb_report::html::write_report(&dirs, args.output.as_deref(), &options)
}

/// `llmb aggregate PATH... [--output FILE]`.
pub fn aggregate(args: &AggregateArgs) -> anyhow::Result<()> {
    llmb_report::export::aggregate(&args.paths, args.output.as_deref())
}
