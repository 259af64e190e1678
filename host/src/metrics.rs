//! Metrics from request records with `vllm bench serve`'s definitions (vllm/benchmarks/serve.py,
//! `calculate_metrics`; DESIGN.md §4), so every number is comparable line by line with vLLM's.
//!
//! Statistics are computed as numpy computes them (pairwise summation, linear percentiles,
//! population std) on samples in seconds, then scaled to milliseconds, in vLLM's order of
//! operations, so results agree with vLLM's to the last printed digit and usually to the bit.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::records::{RequestRecord, TokenSource};

/// vLLM's `MILLISECONDS_TO_SECONDS_CONVERSION`.
const MS_PER_S: f64 = 1000.0;
const NS_PER_S: u64 = 1_000_000_000;

/// Metrics that `--goodput` accepts SLOs for (vLLM's `VALID_NAMES`).
pub const GOODPUT_METRICS: [&str; 3] = ["ttft", "tpot", "e2el"];

/// Metrics an `--slo-file` may bound: vLLM's plus `itl`, which holds when a request's longest
/// gap between streamed chunks is within the limit.
pub const SLO_METRICS: [&str; 4] = ["ttft", "tpot", "itl", "e2el"];

/// Metrics that can get percentile lines, in the order vLLM prints them.
pub const PERCENTILE_METRICS: [&str; 4] = ["ttft", "tpot", "itl", "e2el"];

/// Which metrics get percentile lines and which percentiles (vLLM's `--percentile-metrics` and
/// `--metric-percentiles`), plus the `--goodput` SLOs; the report and the goodput count need all
/// three.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Subset of `ttft`, `tpot`, `itl`, `e2el`.
    pub percentile_metrics: Vec<String>,
    /// Percentiles in [0, 100].
    pub metric_percentiles: Vec<f64>,
    /// `(metric, milliseconds)` pairs from `--slo-file` and `--goodput ttft:200 tpot:50`.
    pub goodput_slos_ms: Vec<(String, f64)>,
}

impl Default for MetricsConfig {
    /// vLLM's defaults for generative models: `ttft,tpot,itl` at the 99th percentile, no SLO.
    fn default() -> Self {
        Self {
            percentile_metrics: vec!["ttft".into(), "tpot".into(), "itl".into()],
            metric_percentiles: vec![99.0],
            goodput_slos_ms: Vec::new(),
        }
    }
}

impl MetricsConfig {
    /// Parses `--goodput` items such as `ttft:200` with vLLM's rules (one `NAME:MS` per item,
    /// name in ttft/tpot/e2el, non-negative value, a repeated name keeps its last value), naming
    /// the offending item in the error so a typo is obvious.
    pub fn parse_goodput(args: &[String]) -> anyhow::Result<Vec<(String, f64)>> {
        let mut slos: Vec<(String, f64)> = Vec::new();
        for item in args.iter().flat_map(|a| a.split_whitespace()) {
            let (name, value) = item
                .split_once(':')
                .filter(|(_, v)| !v.contains(':'))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--goodput {item:?}: expected METRIC:MILLISECONDS, e.g. ttft:200"
                    )
                })?;
            anyhow::ensure!(
                GOODPUT_METRICS.contains(&name),
                "--goodput {item:?}: unknown metric {name:?} (use ttft, tpot or e2el)"
            );
            let ms: f64 = value.trim().parse().map_err(|_| {
                anyhow::anyhow!("--goodput {item:?}: {value:?} is not a number of milliseconds")
            })?;
            anyhow::ensure!(
                ms >= 0.0,
                "--goodput {item:?}: the SLO must be a non-negative number of milliseconds"
            );
            match slos.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = ms,
                None => slos.push((name.to_string(), ms)),
            }
        }
        Ok(slos)
    }
}

/// Reads an `--slo-file`: TOML or YAML (`.yaml`/`.yml`, or a file of another name that is not
/// TOML) with `ttft`, `tpot`, `itl` and `e2el` limits in milliseconds, at the top level or under
/// `slo`; the keys may also be spelt `ttft_ms`, `tpot_ms`, `itl_ms`, `e2el_ms` or `latency_ms`.
/// Errors name the file and the key.
pub fn parse_slo_file(path: &std::path::Path) -> anyhow::Result<Vec<(String, f64)>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--slo-file {shown}: cannot read: {e}"))?;
    let doc = slo_document(path, &text)?;
    let table = match doc.get("slo") {
        Some(toml::Value::Table(t)) if doc.len() == 1 => t.clone(),
        Some(_) => anyhow::bail!(
            "--slo-file {shown}: put the limits either at the top level or under slo, not both"
        ),
        None => doc,
    };
    let mut slos: Vec<(String, f64)> = Vec::new();
    for (key, value) in &table {
        let metric = slo_metric(key).ok_or_else(|| {
            anyhow::anyhow!(
                "--slo-file {shown}: unknown key {key:?} (use {}, or {})",
                SLO_METRICS.join(", "),
                SLO_KEY_ALIASES.map(|(alias, _)| alias).join(", ")
            )
        })?;
        anyhow::ensure!(
            !slos.iter().any(|(m, _)| m == metric),
            "--slo-file {shown}: {key} sets the {metric} limit a second time"
        );
        let ms = match value {
            toml::Value::Integer(n) => *n as f64,
            toml::Value::Float(f) => *f,
            other => anyhow::bail!(
                "--slo-file {shown}: {key} must be a number of milliseconds, not a {}",
                other.type_str()
            ),
        };
        anyhow::ensure!(
            ms.is_finite() && ms >= 0.0,
            "--slo-file {shown}: {key} must be a non-negative number of milliseconds"
        );
        slos.push((metric.to_string(), ms));
    }
    anyhow::ensure!(
        !slos.is_empty(),
        "--slo-file {shown}: no limits in the file"
    );
    slos.sort_by_key(|(k, _)| SLO_METRICS.iter().position(|m| m == k));
    Ok(slos)
}

/// Key spellings of SLO files written for other tools, and the metric each means.
const SLO_KEY_ALIASES: [(&str, &str); 5] = [
    ("ttft_ms", "ttft"),
    ("tpot_ms", "tpot"),
    ("itl_ms", "itl"),
    ("e2el_ms", "e2el"),
    ("latency_ms", "e2el"),
];

fn slo_metric(key: &str) -> Option<&'static str> {
    SLO_METRICS.iter().copied().find(|m| *m == key).or_else(|| {
        SLO_KEY_ALIASES
            .iter()
            .find(|(alias, _)| *alias == key)
            .map(|(_, m)| *m)
    })
}

/// The SLO file as a TOML table, from TOML or YAML (by extension, else by content).
fn slo_document(path: &std::path::Path, text: &str) -> anyhow::Result<toml::Table> {
    crate::yaml::parse_toml_or_yaml(path, text, &format!("--slo-file {}", path.display()))
}

/// Summary statistics of one latency metric, in milliseconds: the numbers vLLM prints and saves
/// as `mean_/median_/std_/p{P}_{metric}_ms`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricStats {
    pub mean: f64,
    pub median: f64,
    /// Population standard deviation (numpy's default, ddof = 0).
    pub std: f64,
    /// `(percentile, value)` for each configured percentile, in configuration order.
    pub percentiles: Vec<(f64, f64)>,
    /// Number of samples; 0 means every value is vLLM's `or 0` fallback.
    pub count: usize,
    /// The fixed summary every report shows whatever `--metric-percentiles` selects.
    pub summary: Summary,
}

/// min, p50, p90, p95, p99 and max of one metric, in milliseconds (numpy's linear percentiles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl MetricStats {
    /// Stats of samples given in seconds (in the order vLLM would collect them), reported in
    /// milliseconds exactly as vLLM derives them: `np.mean(samples) * 1000` and so on; all zero
    /// when there are no samples.
    pub fn from_seconds(samples_s: &[f64], percentiles: &[f64]) -> Self {
        if samples_s.is_empty() {
            return Self {
                percentiles: percentiles.iter().map(|&p| (p, 0.0)).collect(),
                ..Self::default()
            };
        }
        let mut sorted = samples_s.to_vec();
        sorted.sort_by(f64::total_cmp);
        Self {
            mean: numpy_mean(samples_s) * MS_PER_S,
            median: numpy_median(&sorted) * MS_PER_S,
            std: numpy_std(samples_s) * MS_PER_S,
            percentiles: percentiles
                .iter()
                .map(|&p| (p, percentile(&sorted, p) * MS_PER_S))
                .collect(),
            count: samples_s.len(),
            summary: Summary {
                min: sorted[0] * MS_PER_S,
                p50: percentile(&sorted, 50.0) * MS_PER_S,
                p90: percentile(&sorted, 90.0) * MS_PER_S,
                p95: percentile(&sorted, 95.0) * MS_PER_S,
                p99: percentile(&sorted, 99.0) * MS_PER_S,
                max: sorted[sorted.len() - 1] * MS_PER_S,
            },
        }
    }

    /// The value at percentile `p` if it was configured.
    pub fn at(&self, p: f64) -> Option<f64> {
        self.percentiles
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, v)| *v)
    }
}

/// How late requests went out against the arrival schedule (client health, not a vLLM metric),
/// from an HDR histogram in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LagStats {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Whether the client kept the arrival schedule: the proof a reader needs before trusting
/// latencies at a given rate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScheduleStats {
    /// Requests that went out (warmups excluded).
    pub sent: usize,
    /// The schedule's own rate, `(n - 1) / (last − first intended send)`; `None` when everything
    /// was meant to go at once or requests were paced by closed-loop clients.
    pub requested_rate: Option<f64>,
    /// The same over the actual release times (intended + lag).
    pub achieved_rate: Option<f64>,
    /// False when the client fell behind: lag p99 above max(1 ms, 10 % of the mean gap) or the
    /// achieved rate more than 1 % under the requested one.
    pub kept: bool,
}

/// The quantiles a sweep's stage table shows, whatever `--metric-percentiles` says.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageQuantiles {
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub e2el_p50_ms: f64,
    pub e2el_p95_ms: f64,
    pub e2el_p99_ms: f64,
}

/// Where input token counts came from, and how far the client's count is from the server's
/// when both exist (a different tokenizer or an unaccounted chat template shows here).
#[derive(Debug, Clone, Default, Serialize)]
pub struct InputCounts {
    /// Successful requests whose server reported `prompt_tokens`.
    pub server_reported: usize,
    pub mean_client: f64,
    /// Over the requests with a server count.
    pub mean_server: f64,
    /// Mean of server − client over the requests with a server count.
    pub mean_difference: f64,
    /// Smallest and largest server − client: equal when the server adds the same tokens to
    /// every prompt (a chat template), which is not a disagreement about the prompts.
    pub min_difference: f64,
    pub max_difference: f64,
}

/// How a run fared against its SLOs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SloOutcome {
    /// Successful requests within every SLO (goodput × duration).
    pub good_requests: usize,
    /// Successful requests that missed each SLO (a request may miss several), in SLO order.
    pub misses: Vec<(String, usize)>,
}

/// Wall time each request spent inside backend plugin calls (building it, parsing the reply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PluginTime {
    /// Measured requests with a recorded time.
    pub requests: usize,
    pub mean_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl PluginTime {
    fn of(records: &[&RequestRecord]) -> Self {
        let mut us: Vec<f64> = records
            .iter()
            .filter(|r| r.plugin_ns > 0)
            .map(|r| r.plugin_ns as f64 / 1e3)
            .collect();
        if us.is_empty() {
            return Self::default();
        }
        us.sort_by(f64::total_cmp);
        PluginTime {
            requests: us.len(),
            mean_us: us.iter().sum::<f64>() / us.len() as f64,
            p99_us: percentile(&us, 99.0),
            max_us: us[us.len() - 1],
        }
    }
}

/// Latencies of the k-th turn of multi-turn conversations.
#[derive(Debug, Clone, Serialize)]
pub struct TurnStats {
    /// 0-based turn index.
    pub turn: u32,
    pub completed: usize,
    pub failed: usize,
    pub mean_input_tokens: f64,
    pub ttft: MetricStats,
    pub e2el: MetricStats,
}

/// Everything the console report prints and the result JSON saves, vLLM's
/// `BenchmarkMetrics` plus llmb's client-side diagnostics.
#[derive(Debug, Clone, Serialize)]
pub struct BenchmarkMetrics {
    pub completed: usize,
    pub failed: usize,
    pub total_input: u64,
    pub total_output: u64,
    pub duration_s: f64,
    pub request_throughput: f64,
    /// `None` when no `--goodput` SLO was given.
    pub request_goodput: Option<f64>,
    /// Good requests and how often each SLO was missed; `None` without SLOs.
    pub slo: Option<SloOutcome>,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    /// Most delta frames received within one whole second since the first send.
    pub max_output_tokens_per_s: f64,
    /// Most requests in flight at any instant: the exact peak, never above `--max-concurrency`.
    /// Deliberately not vLLM 0.32's `max_concurrent_requests`, which is
    /// [`Self::max_concurrent_requests_per_second`].
    pub max_concurrent_requests: usize,
    /// vLLM 0.32's `max_concurrent_requests`: the most requests active during some part of one
    /// whole-second bucket. A request counts in every bucket from the one it was sent in to the
    /// one it ended in, so requests that follow each other within a second all count and the
    /// value can exceed the concurrency cap (27 for a run capped at 8). Kept so a result can be
    /// compared with vLLM's; `max_concurrent_requests` is the number to read.
    pub max_concurrent_requests_per_second: usize,
    pub ttft: MetricStats,
    pub tpot: MetricStats,
    pub itl: MetricStats,
    pub e2el: MetricStats,
    /// Time spent waiting for a `--max-concurrency` slot, over every request that got one.
    pub queue: MetricStats,
    pub schedule_lag: LagStats,
    pub schedule: ScheduleStats,
    /// TTFT and E2EL counted from the intended send time (coordinated-omission corrected).
    pub ttft_from_intended: MetricStats,
    pub e2el_from_intended: MetricStats,
    pub stage_quantiles: StageQuantiles,
    /// Per-turn latencies; empty unless the run had multi-turn conversations.
    pub turns: Vec<TurnStats>,
    /// Warmup requests sent before measuring (excluded from everything else).
    pub warmups: usize,
    pub input_counts: InputCounts,
    /// Successful requests per origin of their output token count.
    pub token_sources: BTreeMap<TokenSource, usize>,
    /// Failed requests per `RequestError::kind`.
    pub errors_by_kind: BTreeMap<String, usize>,
    /// Measured requests sent again on a fresh connection after the server closed the reused
    /// one under them (counted whether they then succeeded or not).
    pub connection_retries: usize,
    /// Time inside backend plugin calls per measured request.
    pub plugin_time: PluginTime,
    /// Requests failed by a plugin fault, by kind (`trap`, `deadline`, `memory`), warmups
    /// included: a fault is about the plugin, not the server.
    pub plugin_faults: BTreeMap<String, usize>,
}

impl BenchmarkMetrics {
    /// The stats of a metric by its short name (`ttft`, `tpot`, `itl`, `e2el`), so reports can
    /// walk [`PERCENTILE_METRICS`].
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

/// `numpy.percentile` with its default (`linear`) method on ascending data; `p` in [0, 100];
/// 0.0 for no data (vLLM's `or 0`). Interpolates as numpy's `_lerp` does, from the upper
/// neighbour when the fraction is at least one half, so results match numpy's bit for bit.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let last = (n - 1) as f64;
    let index = last * (p.clamp(0.0, 100.0) / 100.0);
    if index >= last {
        return sorted[n - 1];
    }
    if index <= 0.0 {
        return sorted[0];
    }
    let below = index.floor();
    let t = index - below;
    let a = sorted[below as usize];
    let b = sorted[below as usize + 1];
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// numpy's `pairwise_sum` for float64 (8 accumulators, blocks of 128), the summation behind
/// `np.sum`/`np.mean`/`np.std`.
fn pairwise_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |acc, &v| acc + v)
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        for chunk in a[8..whole].chunks_exact(8) {
            for (acc, v) in r.iter_mut().zip(chunk) {
                *acc += v;
            }
        }
        let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        a[whole..].iter().fold(res, |acc, &v| acc + v)
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise_sum(&a[..half]) + pairwise_sum(&a[half..])
    }
}

fn numpy_mean(a: &[f64]) -> f64 {
    pairwise_sum(a) / a.len() as f64
}

fn numpy_std(a: &[f64]) -> f64 {
    let mean = numpy_mean(a);
    let squares: Vec<f64> = a
        .iter()
        .map(|&v| {
            let d = v - mean;
            d * d
        })
        .collect();
    (pairwise_sum(&squares) / a.len() as f64).sqrt()
}

/// `np.median`: the middle element, or the mean of the two middle ones.
fn numpy_median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn safe_div(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn is_cancelled(r: &RequestRecord) -> bool {
    r.error.as_ref().is_some_and(|e| e.kind == "cancelled")
}

/// vLLM's `good_completed` test: every SLO holds (`slo_s >= value_s`), with values in seconds.
/// The SLOs a successful request misses; vLLM's goodput counts requests missing none.
fn missed_slos(
    slos_ms: &[(String, f64)],
    ttft_s: f64,
    tpot_s: f64,
    itl_max_s: f64,
    e2el_s: f64,
) -> impl Iterator<Item = &str> {
    slos_ms.iter().filter_map(move |(metric, slo_ms)| {
        let value = match metric.as_str() {
            "ttft" => ttft_s,
            "tpot" => tpot_s,
            "itl" => itl_max_s,
            "e2el" => e2el_s,
            _ => return None,
        };
        (slo_ms / MS_PER_S < value).then_some(metric.as_str())
    })
}

/// Computes the metrics of a run that lasted `duration_s` (first dispatch to last completion).
///
/// Follows vLLM's `calculate_metrics`: only successes enter the statistics; TPOT exists only for
/// outputs longer than one token (and counts as 0 for goodput otherwise); ITLs are pooled over
/// all successes. One deliberate difference: a success without delta frames (not streamed) has
/// no TTFT sample, where vLLM would record 0; it still counts as TTFT 0 for goodput and TPOT,
/// as in vLLM.
pub fn compute(
    records: &[RequestRecord],
    duration_s: f64,
    cfg: &MetricsConfig,
) -> BenchmarkMetrics {
    // vLLM's outputs come back in dispatch order; numpy's sums depend on the order.
    let warmups = records.iter().filter(|r| r.warmup).count();
    let mut ordered: Vec<&RequestRecord> = records.iter().filter(|r| !r.warmup).collect();
    ordered.sort_by_key(|r| r.id);

    let mut ttfts = Vec::new();
    let mut intended_ttfts = Vec::new();
    let mut intended_e2els = Vec::new();
    let mut tpots = Vec::new();
    let mut itls = Vec::new();
    let mut e2els = Vec::new();
    let mut completed = 0usize;
    let mut good = 0usize;
    let mut total_input = 0u64;
    let mut total_output = 0u64;
    let mut token_sources = BTreeMap::new();
    let mut errors_by_kind = BTreeMap::new();
    let mut slo_misses = BTreeMap::new();

    let connection_retries = ordered.iter().filter(|r| r.retried).count();
    for r in &ordered {
        if !r.success {
            let kind = r
                .error
                .as_ref()
                .map_or_else(|| "unknown".to_string(), |e| e.kind.clone());
            *errors_by_kind.entry(kind).or_insert(0usize) += 1;
            continue;
        }
        completed += 1;
        let output_len = r.output_tokens;
        total_output += u64::from(output_len);
        total_input += u64::from(r.input_tokens());
        if let Some(source) = r.token_source {
            *token_sources.entry(source).or_insert(0usize) += 1;
        }
        let ttft = r.ttft_s();
        let e2el = r.e2el_s();
        let tpot = if output_len > 1 {
            let v = (e2el - ttft.unwrap_or(0.0)) / f64::from(output_len - 1);
            tpots.push(v);
            v
        } else {
            0.0
        };
        if let Some(t) = ttft {
            ttfts.push(t);
        }
        if let Some(t) = r.ttft_from_intended_s() {
            intended_ttfts.push(t);
        }
        intended_e2els.push(r.e2el_from_intended_s());
        let itl_max = r.itls_s().fold(0.0, f64::max);
        itls.extend(r.itls_s());
        e2els.push(e2el);
        let mut missed_any = false;
        for metric in missed_slos(
            &cfg.goodput_slos_ms,
            ttft.unwrap_or(0.0),
            tpot,
            itl_max,
            e2el,
        ) {
            *slo_misses.entry(metric.to_string()).or_insert(0usize) += 1;
            missed_any = true;
        }
        if !missed_any {
            good += 1;
        }
    }

    let successes: Vec<&RequestRecord> = ordered.iter().copied().filter(|r| r.success).collect();
    let queue_s: Vec<f64> = ordered
        .iter()
        .filter(|r| r.dispatched_ns > 0 || !is_cancelled(r))
        .map(|r| r.queue_s())
        .collect();
    let p = &cfg.metric_percentiles;
    let per_second = per_second_peaks(&successes);
    let schedule_lag = lag_stats(&ordered);
    let stage_ttft = MetricStats::from_seconds(&ttfts, &[50.0, 99.0]);
    let stage_e2el = MetricStats::from_seconds(&e2els, &[50.0, 95.0, 99.0]);
    BenchmarkMetrics {
        completed,
        failed: ordered.len() - completed,
        total_input,
        total_output,
        duration_s,
        request_throughput: safe_div(completed as f64, duration_s),
        request_goodput: (!cfg.goodput_slos_ms.is_empty())
            .then(|| safe_div(good as f64, duration_s)),
        slo: (!cfg.goodput_slos_ms.is_empty()).then(|| SloOutcome {
            good_requests: good,
            misses: cfg
                .goodput_slos_ms
                .iter()
                .map(|(m, _)| (m.clone(), slo_misses.get(m).copied().unwrap_or(0)))
                .collect(),
        }),
        output_throughput: safe_div(total_output as f64, duration_s),
        total_token_throughput: safe_div((total_input + total_output) as f64, duration_s),
        max_output_tokens_per_s: per_second.tokens,
        max_concurrent_requests: peak_concurrency(&successes),
        max_concurrent_requests_per_second: per_second.requests,
        ttft: MetricStats::from_seconds(&ttfts, p),
        tpot: MetricStats::from_seconds(&tpots, p),
        itl: MetricStats::from_seconds(&itls, p),
        e2el: MetricStats::from_seconds(&e2els, p),
        queue: MetricStats::from_seconds(&queue_s, p),
        schedule: schedule_stats(&ordered, &schedule_lag),
        schedule_lag,
        ttft_from_intended: MetricStats::from_seconds(&intended_ttfts, p),
        e2el_from_intended: MetricStats::from_seconds(&intended_e2els, p),
        stage_quantiles: StageQuantiles {
            ttft_p50_ms: stage_ttft.percentiles[0].1,
            ttft_p99_ms: stage_ttft.percentiles[1].1,
            e2el_p50_ms: stage_e2el.percentiles[0].1,
            e2el_p95_ms: stage_e2el.percentiles[1].1,
            e2el_p99_ms: stage_e2el.percentiles[2].1,
        },
        turns: turn_stats(&ordered, p),
        warmups,
        input_counts: input_counts(&ordered),
        token_sources,
        errors_by_kind,
        connection_retries,
        plugin_time: PluginTime::of(&ordered),
        plugin_faults: records.iter().filter_map(|r| r.plugin_fault).fold(
            BTreeMap::new(),
            |mut by_kind, kind| {
                *by_kind.entry(kind.as_str().to_string()).or_insert(0) += 1;
                by_kind
            },
        ),
    }
}

/// When a successful request ended for vLLM: send time + latency (last delta frame, or the end
/// of the body when nothing streamed).
fn end_of(r: &RequestRecord) -> u64 {
    r.delta_ns
        .last()
        .copied()
        .unwrap_or(r.end_ns)
        .max(r.sent_ns)
}

/// The peaks vLLM 0.32's `calculate_metrics` reads from whole-second buckets of the timeline.
struct PerSecondPeaks {
    /// `max_output_tokens_per_s`.
    tokens: f64,
    /// vLLM 0.32's `max_concurrent_requests`.
    requests: usize,
}

/// vLLM 0.32's per-second buckets (vllm/benchmarks/serve.py, `calculate_metrics`), over the
/// successful requests only: `ceil(max_end − min_start) + 1` buckets of one second from the
/// earliest send. Every delta frame is one token in the bucket of its arrival (vLLM rebuilds the
/// arrival times as `start + ttft + Σ itl`, one per chunk whatever the chunk holds); a success
/// with no frames puts its single "token" at its send time (TTFT 0). A request is active in
/// every bucket from `floor(send − min_start)` to `floor(end − min_start)`, both included.
/// Times are whole nanoseconds here where vLLM has float seconds, so a bucket could differ only
/// for a frame within about a picosecond of a bucket edge.
fn per_second_peaks(successes: &[&RequestRecord]) -> PerSecondPeaks {
    let Some(start) = successes.iter().map(|r| r.sent_ns).min() else {
        return PerSecondPeaks {
            tokens: 0.0,
            requests: 0,
        };
    };
    let end = successes.iter().map(|r| end_of(r)).max().unwrap_or(start);
    let buckets = (end - start).div_ceil(NS_PER_S) as usize + 1;
    let bucket_of = |t: u64| (t.saturating_sub(start) / NS_PER_S) as usize;
    let mut tokens = vec![0u64; buckets];
    let mut requests = vec![0usize; buckets];
    for r in successes {
        let sent = [r.sent_ns];
        let times = if r.delta_ns.is_empty() {
            &sent[..]
        } else {
            &r.delta_ns[..]
        };
        for &t in times {
            if let Some(slot) = tokens.get_mut(bucket_of(t)) {
                *slot += 1;
            }
        }
        for slot in requests
            .iter_mut()
            .take(bucket_of(end_of(r)) + 1)
            .skip(bucket_of(r.sent_ns))
        {
            *slot += 1;
        }
    }
    PerSecondPeaks {
        tokens: tokens.iter().copied().max().unwrap_or(0) as f64,
        requests: requests.iter().copied().max().unwrap_or(0),
    }
}

/// llmb's `max_concurrent_requests`, the exact peak of requests in flight: a sweep over the
/// half-open intervals `[send, send + latency)` of successful requests, a departure counted
/// before an arrival at the same instant (as newer vLLM sources compute it). vLLM 0.32 reports
/// the per-second count of [`per_second_peaks`] under that name instead, which overstates the
/// concurrency a server saw whenever requests last less than a second.
fn peak_concurrency(successes: &[&RequestRecord]) -> usize {
    let mut events: Vec<(u64, i8)> = successes
        .iter()
        .flat_map(|r| [(r.sent_ns, 1i8), (end_of(r), -1i8)])
        .collect();
    events.sort_unstable();
    let mut current = 0i64;
    let mut peak = 0i64;
    for (_, delta) in events {
        current += i64::from(delta);
        peak = peak.max(current);
    }
    peak as usize
}

/// Schedule lag of every request that went out (3 significant digits, microseconds).
fn lag_stats(records: &[&RequestRecord]) -> LagStats {
    let Ok(mut hist) = hdrhistogram::Histogram::<u64>::new(3) else {
        return LagStats::default();
    };
    hist.auto(true);
    for r in records.iter().filter(|r| went_out(r)) {
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

/// Requests that actually went out (a request cancelled before sending has no send time).
fn went_out(r: &RequestRecord) -> bool {
    r.sent_ns > 0 || !is_cancelled(r)
}

/// Requested vs achieved rate over the intended and actual release times.
fn schedule_stats(records: &[&RequestRecord], lag: &LagStats) -> ScheduleStats {
    let out: Vec<&&RequestRecord> = records.iter().filter(|r| went_out(r)).collect();
    let span = |times: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = times.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
            (lo.min(t), hi.max(t))
        });
        hi - lo
    };
    let n = out.len();
    let intended_span = span(&mut out.iter().map(|r| r.scheduled_ns as f64 / 1e9));
    let paced_by_schedule = out.iter().all(|r| r.client.is_none());
    let requested_rate = (n >= 2 && intended_span > 0.0 && paced_by_schedule)
        .then(|| (n - 1) as f64 / intended_span);
    let achieved_rate = requested_rate.map(|_| {
        let actual_span = span(
            &mut out
                .iter()
                .map(|r| r.scheduled_ns as f64 / 1e9 + r.schedule_lag_s()),
        );
        safe_div((n - 1) as f64, actual_span)
    });
    let mean_gap_ms = requested_rate.map_or(f64::INFINITY, |r| 1e3 / r);
    let lag_ok = lag.p99_ms <= (0.1 * mean_gap_ms).max(1.0);
    let rate_ok = match (requested_rate, achieved_rate) {
        (Some(want), Some(got)) if n >= 10 => got >= 0.99 * want,
        _ => true,
    };
    ScheduleStats {
        sent: n,
        requested_rate,
        achieved_rate,
        kept: lag_ok && rate_ok,
    }
}

/// Latencies grouped by conversation turn.
fn turn_stats(records: &[&RequestRecord], percentiles: &[f64]) -> Vec<TurnStats> {
    let mut by_turn: BTreeMap<u32, Vec<&RequestRecord>> = BTreeMap::new();
    for r in records {
        if let Some(t) = r.turn {
            by_turn.entry(t).or_default().push(r);
        }
    }
    by_turn
        .into_iter()
        .map(|(turn, rs)| {
            let ok: Vec<&&RequestRecord> = rs.iter().filter(|r| r.success).collect();
            let ttfts: Vec<f64> = ok.iter().filter_map(|r| r.ttft_s()).collect();
            let e2els: Vec<f64> = ok.iter().map(|r| r.e2el_s()).collect();
            TurnStats {
                turn,
                completed: ok.len(),
                failed: rs.len() - ok.len(),
                mean_input_tokens: safe_div(
                    ok.iter().map(|r| f64::from(r.input_tokens())).sum::<f64>(),
                    ok.len() as f64,
                ),
                ttft: MetricStats::from_seconds(&ttfts, percentiles),
                e2el: MetricStats::from_seconds(&e2els, percentiles),
            }
        })
        .collect()
}

fn input_counts(records: &[&RequestRecord]) -> InputCounts {
    let ok: Vec<&&RequestRecord> = records.iter().filter(|r| r.success).collect();
    let both: Vec<(f64, f64)> = ok
        .iter()
        .filter_map(|r| {
            r.server_prompt_tokens
                .map(|s| (f64::from(r.prompt_tokens), f64::from(s)))
        })
        .collect();
    let n = both.len() as f64;
    InputCounts {
        server_reported: both.len(),
        mean_client: safe_div(
            ok.iter().map(|r| f64::from(r.prompt_tokens)).sum(),
            ok.len() as f64,
        ),
        mean_server: safe_div(both.iter().map(|(_, s)| s).sum(), n),
        mean_difference: safe_div(both.iter().map(|(c, s)| s - c).sum(), n),
        min_difference: both
            .iter()
            .map(|(c, s)| s - c)
            .reduce(f64::min)
            .unwrap_or(0.0),
        max_difference: both
            .iter()
            .map(|(c, s)| s - c)
            .reduce(f64::max)
            .unwrap_or(0.0),
    }
}
