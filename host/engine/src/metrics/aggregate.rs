//! [`compute`]: one pass over a run's measured records in dispatch order, collecting vLLM's
//! samples and counts, then assembling [`BenchmarkMetrics`] from them and the derived
//! diagnostics.

use std::collections::BTreeMap;

use crate::records::RequestRecord;

use super::derive::{
    input_counts, is_cancelled, lag_stats, peak_concurrency, per_second_peaks, schedule_stats,
    turn_stats,
};
use super::slo::missed_slos;
use super::stats::{MetricStats, safe_div};
use super::{
    BenchmarkMetrics, Cancellations, HttpPhases, MetricsConfig, PluginTime, ReasoningStats,
    SloOutcome, StageQuantiles,
};

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
    let mut total_input_images = 0u64;
    let mut token_sources = BTreeMap::new();
    let mut errors_by_kind = BTreeMap::new();
    let mut slo_misses = BTreeMap::new();

    let connection_retries = ordered.iter().filter(|r| r.retried).count();
    let http_phases = http_phases(&ordered);
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
        total_input_images += u64::from(r.input_images);
        if let Some(source) = r.token_source {
            *token_sources.entry(source).or_insert(0usize) += 1;
        }
        let ttft = r.ttft_s();
        let e2el = r.e2el_s();
        let tpot = match r.tpot_s() {
            Some(v) => {
                tpots.push(v);
                v
            }
            None => 0.0,
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
        total_input_images,
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
        reasoning: reasoning_stats(&successes, p),
        steady_state: super::steady_state(&ordered, p),
        slices: cfg
            .slice_duration_s
            .map(|s| super::slices(&ordered, s, p))
            .unwrap_or_default(),
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
        cancellations: ordered.iter().filter(|r| r.planned_cancel).fold(
            Cancellations::default(),
            |mut c, r| {
                c.requests += 1;
                c.after_first_token += usize::from(!r.delta_ns.is_empty());
                c.frames_received += r.delta_ns.len() as u64;
                c
            },
        ),
        http_phases,
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

/// TTFO and the reasoning/answer split over the successful requests.
fn reasoning_stats(successes: &[&RequestRecord], p: &[f64]) -> ReasoningStats {
    let mut stats = ReasoningStats::default();
    let mut ttfos = Vec::new();
    let mut thinking = Vec::new();
    for r in successes {
        let reasoning = r.reasoning_tokens.unwrap_or(0);
        stats.total_reasoning_tokens += u64::from(reasoning);
        stats.total_answer_tokens += u64::from(r.answer_tokens());
        if let Some(source) = r.reasoning_token_source {
            *stats.token_sources.entry(source).or_insert(0) += 1;
        }
        let ttfo = r.ttfo_s();
        if let Some(t) = ttfo {
            ttfos.push(t);
        }
        if reasoning > 0 {
            stats.requests += 1;
            match (ttfo, r.ttft_s()) {
                (Some(ttfo), Some(ttft)) => thinking.push(ttfo - ttft),
                (None, Some(_)) => stats.no_answer += 1,
                _ => {}
            }
        }
    }
    stats.ttfo = MetricStats::from_seconds(&ttfos, p);
    stats.thinking = MetricStats::from_seconds(&thinking, p);
    stats
}

/// The HTTP phases of the measured requests (seconds in, milliseconds out, like every latency).
fn http_phases(ordered: &[&RequestRecord]) -> HttpPhases {
    const S: f64 = 1e-9;
    let connect: Vec<f64> = ordered
        .iter()
        .filter_map(|r| r.connect_duration_ns)
        .map(|ns| ns as f64 * S)
        .collect();
    let tls: Vec<f64> = ordered
        .iter()
        .filter_map(|r| r.tls_duration_ns)
        .map(|ns| ns as f64 * S)
        .collect();
    let write: Vec<f64> = ordered
        .iter()
        .filter_map(|r| r.written_ns.map(|w| w.saturating_sub(r.sent_ns) as f64 * S))
        .collect();
    let wait: Vec<f64> = ordered
        .iter()
        .filter_map(|r| {
            let written = r.written_ns?;
            Some(r.first_byte_ns?.saturating_sub(written) as f64 * S)
        })
        .collect();
    let read_wait: Vec<f64> = ordered
        .iter()
        .filter_map(|r| r.read_wait_max_ns.map(|ns| ns as f64 * S))
        .collect();
    let of = |v: &[f64]| MetricStats::from_seconds(v, &[50.0, 99.0]);
    HttpPhases {
        connections_warmed: None,
        new_connections: connect.len(),
        connect: of(&connect),
        tls: of(&tls),
        write: of(&write),
        wait: of(&wait),
        read_wait: of(&read_wait),
    }
}
