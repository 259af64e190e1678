//! Metrics from request records, with `vllm bench serve`'s definitions (DESIGN.md §4), so
//! numbers are comparable line by line with vLLM's.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::records::{RequestRecord, TokenSource, ns_to_s};

/// Which metrics get percentile lines, which percentiles, and the goodput SLOs.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Subset of `ttft`, `tpot`, `itl`, `e2el` (vLLM's `--percentile-metrics`).
    pub percentile_metrics: Vec<String>,
    /// vLLM's `--metric-percentiles`.
    pub metric_percentiles: Vec<f64>,
    /// `(metric, milliseconds)` from `--goodput ttft:200 tpot:50`.
    pub goodput_slos_ms: Vec<(String, f64)>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            percentile_metrics: vec!["ttft".into(), "tpot".into(), "itl".into()],
            metric_percentiles: vec![99.0],
            goodput_slos_ms: Vec::new(),
        }
    }
}

impl MetricsConfig {
    /// Parses `--goodput` items such as `ttft:200`.
    pub fn parse_goodput(args: &[String]) -> anyhow::Result<Vec<(String, f64)>> {
        args.iter()
            .flat_map(|a| a.split_whitespace())
            .map(|item| {
                let (name, value) = item.split_once(':').ok_or_else(|| {
                    anyhow::anyhow!("--goodput {item:?}: expected METRIC:MS, e.g. ttft:200")
                })?;
                anyhow::ensure!(
                    ["ttft", "tpot", "e2el"].contains(&name),
                    "--goodput {item:?}: the metric must be ttft, tpot or e2el"
                );
                let ms: f64 = value
                    .parse()
                    .ok()
                    .filter(|v: &f64| *v >= 0.0)
                    .ok_or_else(|| {
                        anyhow::anyhow!("--goodput {item:?}: {value:?} is not a number of ms")
                    })?;
                Ok((name.to_string(), ms))
            })
            .collect()
    }
}

/// Summary statistics of one latency metric, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricStats {
    pub mean: f64,
    pub median: f64,
    /// Population standard deviation (numpy's default).
    pub std: f64,
    pub percentiles: Vec<(f64, f64)>,
    pub count: usize,
}

impl MetricStats {
    /// Stats of `values_ms`; all zero when empty (vLLM's `or 0`).
    pub fn of(mut values_ms: Vec<f64>, percentiles: &[f64]) -> Self {
        if values_ms.is_empty() {
            return Self {
                percentiles: percentiles.iter().map(|&p| (p, 0.0)).collect(),
                ..Default::default()
            };
        }
        values_ms.sort_by(f64::total_cmp);
        let n = values_ms.len() as f64;
        let mean = values_ms.iter().sum::<f64>() / n;
        let var = values_ms.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Self {
            mean,
            median: percentile(&values_ms, 50.0),
            std: var.sqrt(),
            percentiles: percentiles
                .iter()
                .map(|&p| (p, percentile(&values_ms, p)))
                .collect(),
            count: values_ms.len(),
        }
    }
}

/// Schedule lag summary (how late requests went out), from an HDR histogram.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LagStats {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Everything the report prints and the result JSON saves.
#[derive(Debug, Clone, Serialize)]
pub struct BenchmarkMetrics {
    pub completed: usize,
    pub failed: usize,
    pub total_input: u64,
    pub total_output: u64,
    pub duration_s: f64,
    pub request_throughput: f64,
    pub request_goodput: Option<f64>,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub max_output_tokens_per_s: f64,
    pub max_concurrent_requests: usize,
    pub ttft: MetricStats,
    pub tpot: MetricStats,
    pub itl: MetricStats,
    pub e2el: MetricStats,
    /// Time spent waiting for a `--max-concurrency` slot, over all requests.
    pub queue: MetricStats,
    pub schedule_lag: LagStats,
    pub token_sources: BTreeMap<TokenSource, usize>,
    pub errors_by_kind: BTreeMap<String, usize>,
}

impl BenchmarkMetrics {
    /// The stats of a metric by its short name (`ttft`, `tpot`, `itl`, `e2el`).
    pub fn stats(&self, metric: &str) -> Option<&MetricStats> {
        match metric {
            "ttft" => Some(&self.ttft),
            "tpot" => Some(&self.tpot),
            "itl" => Some(&self.itl),
            "e2el" => Some(&self.e2el),
            _ => None,
        }
    }
}

/// numpy.percentile's default (linear interpolation) on sorted data; `p` in [0, 100].
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

fn safe_div(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Computes the metrics of a run lasting `duration_s` (first dispatch to last completion).
pub fn compute(
    records: &[RequestRecord],
    duration_s: f64,
    cfg: &MetricsConfig,
) -> BenchmarkMetrics {
    let ms = 1e3;
    let mut ttfts = Vec::new();
    let mut tpots = Vec::new();
    let mut itls = Vec::new();
    let mut e2els = Vec::new();
    let mut completed = 0usize;
    let mut good = 0usize;
    let mut total_input = 0u64;
    let mut total_output = 0u64;
    let mut token_sources = BTreeMap::new();
    let mut errors_by_kind = BTreeMap::new();

    for r in records {
        if !r.success {
            let kind = r
                .error
                .as_ref()
                .map(|e| e.kind.clone())
                .unwrap_or_else(|| "unknown".into());
            *errors_by_kind.entry(kind).or_insert(0) += 1;
            continue;
        }
        completed += 1;
        let output = r.output_tokens;
        total_output += u64::from(output);
        total_input += u64::from(r.input_tokens());
        if let Some(src) = r.token_source {
            *token_sources.entry(src).or_insert(0) += 1;
        }
        let e2el = r.e2el_s();
        let ttft = r.ttft_s();
        let tpot = match ttft {
            Some(t) if output > 1 => {
                let v = (e2el - t) / f64::from(output - 1);
                tpots.push(v * ms);
                v
            }
            _ => 0.0,
        };
        if let Some(t) = ttft {
            ttfts.push(t * ms);
        }
        itls.extend(r.itls_s().map(|v| v * ms));
        e2els.push(e2el * ms);
        if !cfg.goodput_slos_ms.is_empty() {
            let ok = cfg
                .goodput_slos_ms
                .iter()
                .all(|(metric, slo)| match metric.as_str() {
                    "ttft" => ttft.unwrap_or(0.0) * ms <= *slo,
                    "tpot" => tpot * ms <= *slo,
                    "e2el" => e2el * ms <= *slo,
                    _ => true,
                });
            good += usize::from(ok);
        }
    }

    let (max_output_tokens_per_s, max_concurrent_requests) = peaks(records);
    let p = &cfg.metric_percentiles;
    BenchmarkMetrics {
        completed,
        failed: records.len() - completed,
        total_input,
        total_output,
        duration_s,
        request_throughput: safe_div(completed as f64, duration_s),
        request_goodput: (!cfg.goodput_slos_ms.is_empty())
            .then(|| safe_div(good as f64, duration_s)),
        output_throughput: safe_div(total_output as f64, duration_s),
        total_token_throughput: safe_div((total_input + total_output) as f64, duration_s),
        max_output_tokens_per_s,
        max_concurrent_requests,
        ttft: MetricStats::of(ttfts, p),
        tpot: MetricStats::of(tpots, p),
        itl: MetricStats::of(itls, p),
        e2el: MetricStats::of(e2els, p),
        queue: MetricStats::of(records.iter().map(|r| r.queue_s() * ms).collect(), p),
        schedule_lag: lag_stats(records),
        token_sources,
        errors_by_kind,
    }
}

/// vLLM's peak output tokens/s and peak concurrency: per-second buckets over successful
/// requests that streamed at least two deltas (tokens counted as delta frames, as vLLM does).
fn peaks(records: &[RequestRecord]) -> (f64, usize) {
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.success).collect();
    if ok.is_empty() {
        return (0.0, 0);
    }
    let start = ok
        .iter()
        .map(|r| ns_to_s(r.sent_ns))
        .fold(f64::INFINITY, f64::min);
    let end = ok
        .iter()
        .map(|r| ns_to_s(r.sent_ns) + r.e2el_s())
        .fold(f64::NEG_INFINITY, f64::max);
    let buckets = (end - start).ceil().max(0.0) as usize + 1;
    let mut tokens = vec![0u64; buckets];
    let mut concurrent = vec![0usize; buckets];
    for r in ok.iter().filter(|r| r.delta_ns.len() > 1) {
        for &t in &r.delta_ns {
            let b = (ns_to_s(t) - start).floor();
            if b >= 0.0 && (b as usize) < buckets {
                tokens[b as usize] += 1;
            }
        }
        let sent = ns_to_s(r.sent_ns);
        let first = (sent - start).floor().max(0.0) as usize;
        let last = ((sent + r.e2el_s()) - start).floor().max(0.0) as usize;
        for slot in concurrent
            .iter_mut()
            .take(last.min(buckets - 1) + 1)
            .skip(first)
        {
            *slot += 1;
        }
    }
    (
        tokens.iter().copied().max().unwrap_or(0) as f64,
        concurrent.iter().copied().max().unwrap_or(0),
    )
}

fn lag_stats(records: &[RequestRecord]) -> LagStats {
    let Ok(mut hist) = hdrhistogram::Histogram::<u64>::new(3) else {
        return LagStats::default();
    };
    hist.auto(true);
    for r in records.iter().filter(|r| r.sent_ns > 0) {
        let _ = hist.record((r.schedule_lag_s() * 1e6).round() as u64);
    }
    if hist.is_empty() {
        return LagStats::default();
    }
    LagStats {
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1e3,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1e3,
        max_ms: hist.max() as f64 / 1e3,
        mean_ms: hist.mean() / 1e3,
    }
}
