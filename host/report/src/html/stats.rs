//! The numbers of each table row and chart point: a run's from its result file, recomputed
//! from its records when they are there, a sweep stage's from the stage table; and the rows
//! grouped by sweep, with the sweep's verdict.

use std::path::Path;

use llmb_engine::metrics::{MetricsConfig, PERCENTILE_METRICS};
use llmb_engine::records::RequestRecord;

use super::format::{file_name, fmt_num, fmt_rate};
use super::load::{Report, Run, StageRow};
use crate::result_file::{Num, ResultFile};

/// What one table row and one chart point show; `None` is an unknown value, shown as `–`.
#[derive(Debug, Clone, Default)]
pub(super) struct Stats {
    pub(super) concurrency: Option<usize>,
    pub(super) rate: f64,
    pub(super) completed: Option<f64>,
    pub(super) failed: Option<f64>,
    pub(super) req_s: Option<f64>,
    pub(super) out_tok_s: Option<f64>,
    pub(super) goodput: Option<f64>,
    /// p50, p95, p99 in ms.
    pub(super) ttft: [Option<f64>; 3],
    pub(super) e2el: [Option<f64>; 3],
    pub(super) tpot_mean: Option<f64>,
    pub(super) itl_mean: Option<f64>,
    pub(super) itl_p99: Option<f64>,
}

impl Stats {
    /// From the result file's own keys (vLLM writes only the configured percentiles).
    fn from_result(r: &ResultFile) -> Self {
        let get = |v: &Option<Num>| v.as_ref().and_then(Num::as_f64).filter(|v| !v.is_nan());
        let stat = |stat: &str, metric: &str| r.latency.get(stat, metric).filter(|v| !v.is_nan());
        let no_stream = r.no_stream();
        let streamed = |v: Option<f64>| if no_stream { None } else { v };
        Stats {
            concurrency: get(&r.max_concurrency).map(|c| c as usize),
            rate: get(&r.request_rate).unwrap_or(f64::INFINITY),
            completed: get(&r.completed),
            failed: get(&r.failed),
            req_s: get(&r.request_throughput),
            out_tok_s: get(&r.output_throughput),
            goodput: get(&r.request_goodput),
            ttft: [
                streamed(stat("median", "ttft").or(stat("p50", "ttft"))),
                streamed(stat("p95", "ttft")),
                streamed(stat("p99", "ttft")),
            ],
            e2el: [
                stat("median", "e2el").or(stat("p50", "e2el")),
                stat("p95", "e2el"),
                stat("p99", "e2el"),
            ],
            tpot_mean: streamed(stat("mean", "tpot")),
            itl_mean: streamed(stat("mean", "itl")),
            itl_p99: streamed(stat("p99", "itl")),
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
            slice_duration_s: None,
        };
        let m = llmb_engine::metrics::compute(records, duration_s, &cfg);
        let q = |s: &llmb_engine::metrics::MetricStats| -> [Option<f64>; 3] {
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
pub(super) struct Row {
    pub(super) label: String,
    pub(super) stats: Stats,
    /// Index into `Report::runs`, when the row has a result file.
    pub(super) run: Option<usize>,
    pub(super) best: bool,
    pub(super) knee: bool,
    pub(super) flat: bool,
}

/// Rows that belong together: one sweep, or the runs no stage summary claims.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) title: String,
    pub(super) rows: Vec<Row>,
    pub(super) verdict: Vec<String>,
}

fn run_stats(run: &Run) -> Stats {
    let mut stats = Stats::from_result(&run.result);
    if let Some(records) = &run.records {
        let duration = run
            .result
            .duration
            .as_ref()
            .and_then(Num::as_f64)
            .unwrap_or(0.0);
        stats.overlay_records(records, duration);
    }
    stats
}

pub(super) fn groups_of(report: &Report) -> Vec<Group> {
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
                .result
                .stage()
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
                .and_then(|k| report.runs[k].result.date.as_deref())
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
