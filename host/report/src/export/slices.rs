//! `NAME.slices.csv` beside the records: one row per `--slice-duration` window, marked when it
//! lies inside the steady state, for plotting a run over time in a spreadsheet.

use std::path::Path;

use anyhow::Context;
use llmb_engine::metrics::BenchmarkMetrics;

/// Writes the windows of `m` to `path` (nothing to write without `--slice-duration`).
pub fn write_slices_csv(path: &Path, m: &BenchmarkMetrics) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut w = csv::Writer::from_writer(file);
    w.write_record([
        "start_s",
        "end_s",
        "steady_state",
        "sent",
        "completed",
        "failed",
        "request_throughput",
        "output_throughput",
        "mean_in_flight",
        "mean_ttft_ms",
        "p99_ttft_ms",
        "mean_tpot_ms",
        "mean_itl_ms",
        "p99_itl_ms",
        "mean_e2el_ms",
        "p99_e2el_ms",
    ])?;
    let steady = m.steady_state.window;
    for s in &m.slices {
        let inside = steady.is_some_and(|(a, b)| s.start_s >= a - 1e-9 && s.end_s <= b + 1e-9);
        let f = |v: f64| format!("{v:.3}");
        // A window with no samples has no latency (not 0 ms).
        let ms = |stats: &llmb_engine::metrics::MetricStats, v: f64| {
            if stats.count == 0 {
                String::new()
            } else {
                f(v)
            }
        };
        w.write_record([
            f(s.start_s),
            f(s.end_s),
            inside.to_string(),
            s.sent.to_string(),
            s.completed.to_string(),
            s.failed.to_string(),
            f(s.request_throughput),
            f(s.output_throughput),
            f(s.mean_in_flight),
            ms(&s.ttft, s.ttft.mean),
            ms(&s.ttft, s.ttft.summary.p99),
            ms(&s.tpot, s.tpot.mean),
            ms(&s.itl, s.itl.mean),
            ms(&s.itl, s.itl.summary.p99),
            ms(&s.e2el, s.e2el.mean),
            ms(&s.e2el, s.e2el.summary.p99),
        ])?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}
