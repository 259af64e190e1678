//! `llmb report`: one self-contained HTML file from the files `bench --save-result` leaves.
//!
//! Data flows one way, as in the rest of llmb: result JSON files, their `.records.jsonl`
//! per-request records and a sweep's `-stages.json` are read back by [`load()`] into a [`Report`],
//! and [`render`] turns that into HTML with inline SVG charts (plotters' SVG backend). Nothing is
//! measured again: latency quantiles come from the records (the single source of truth) when
//! they are there, else from the stage table, else from the result file's own keys.
//!
//! The page needs no network, no JavaScript and no font files, so it can be attached to an issue
//! or mailed and opened anywhere; a Content-Security-Policy forbids any load at all. Every string
//! taken from a file (model names, URLs, file names, error messages, metric names) is escaped,
//! so a result file cannot inject markup.
//!
//! The modules follow that flow: `load` reads the files into a [`Report`], `stats` turns each
//! run and stage into the numbers of a table row, `charts` draws them, and `page` (with `curves`
//! for the load curves and `detail` for the per-request and server sections) writes the HTML;
//! `format` holds the number formats and HTML snippets they share. This module only names the
//! public API and writes the file ([`write_report`]).

mod charts;
mod compare;
mod curves;
mod detail;
mod format;
mod load;
mod page;
mod stats;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, ensure};

pub use crate::result_file::ServerMetrics;
pub use compare::{ComparePage, compare_page};
pub use format::escape;
pub use load::{Report, Run, StageRow, Sweep, load};
pub use page::{DEFAULT_TIMELINE_CAP, RenderOptions, render};

/// Loads `dirs`, renders and writes the report (default `FIRST_DIR/report.html`); returns
/// the path written and what was loaded, so callers and tests can check both.
pub fn write_report(
    dirs: &[PathBuf],
    output: Option<&Path>,
    options: &RenderOptions,
) -> anyhow::Result<(PathBuf, Report)> {
    ensure!(!dirs.is_empty(), "no result directory given");
    let report = load(dirs)?;
    let html = render(&report, options)?;
    let output = match output {
        Some(path) => path.to_path_buf(),
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

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value};

    use super::*;
    use crate::result_file::ResultFile;
    use llmb_engine::records::RequestRecord;

    fn record(id: u64, sent: u64, deltas: &[u64], success: bool) -> RequestRecord {
        RequestRecord {
            id,
            sent_ns: sent,
            dispatched_ns: sent,
            delta_ns: deltas.to_vec(),
            end_ns: deltas.last().copied().unwrap_or(sent + 1_000_000),
            output_tokens: deltas.len() as u32,
            success,
            error: (!success).then(|| llmb_engine::records::RequestError {
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
                result: ResultFile::from_map(doc).unwrap(),
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
        assert!(
            html.contains(&format::hex(charts::C_FAIL)),
            "failed requests drawn in red"
        );
        // 5 load charts, 2 histograms, throughput and TTFT over time, 1 timeline.
        assert_eq!(html.matches("<svg").count(), 10);
        assert!(html.contains("Output throughput over time"));
    }
}
