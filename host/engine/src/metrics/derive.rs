//! Client-side diagnostics derived from the records beyond vLLM's latency statistics: per-second
//! token and request peaks, exact peak concurrency, schedule lag and kept rate, per-turn
//! latencies, input token counts and plugin time. Each helper reads records and returns one
//! part of [`super::BenchmarkMetrics`].

use std::collections::BTreeMap;

use crate::records::RequestRecord;

use super::stats::{MetricStats, percentile, safe_div};
use super::{InputCounts, LagStats, NS_PER_S, PluginTime, ScheduleStats, TurnStats};

impl PluginTime {
    pub(super) fn of(records: &[&RequestRecord]) -> Self {
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

pub(super) fn is_cancelled(r: &RequestRecord) -> bool {
    r.error.as_ref().is_some_and(|e| e.kind == "cancelled")
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
pub(super) struct PerSecondPeaks {
    /// `max_output_tokens_per_s`.
    pub(super) tokens: f64,
    /// vLLM 0.32's `max_concurrent_requests`.
    pub(super) requests: usize,
}

/// vLLM 0.32's per-second buckets (vllm/benchmarks/serve.py, `calculate_metrics`), over the
/// successful requests only: `ceil(max_end − min_start) + 1` buckets of one second from the
/// earliest send. Every delta frame is one token in the bucket of its arrival (vLLM rebuilds the
/// arrival times as `start + ttft + Σ itl`, one per chunk whatever the chunk holds); a success
/// with no frames puts its single "token" at its send time (TTFT 0). A request is active in
/// every bucket from `floor(send − min_start)` to `floor(end − min_start)`, both included.
/// Times are whole nanoseconds here where vLLM has float seconds, so a bucket could differ only
/// for a frame within about a picosecond of a bucket edge.
pub(super) fn per_second_peaks(successes: &[&RequestRecord]) -> PerSecondPeaks {
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
pub(super) fn peak_concurrency(successes: &[&RequestRecord]) -> usize {
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
pub(super) fn lag_stats(records: &[&RequestRecord]) -> LagStats {
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
pub(super) fn schedule_stats(records: &[&RequestRecord], lag: &LagStats) -> ScheduleStats {
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
pub(super) fn turn_stats(records: &[&RequestRecord], percentiles: &[f64]) -> Vec<TurnStats> {
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

pub(super) fn input_counts(records: &[&RequestRecord]) -> InputCounts {
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
