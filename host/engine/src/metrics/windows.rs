//! The run over time: fixed windows (`--slice-duration`) with their own statistics, and the
//! steady-state window with ramp-up and drain cut off, so a reader can tell a server's sustained
//! behaviour from the start and end of a run.
//!
//! A request's latencies belong to the window it was *sent* in (what a request sent then
//! experienced); throughput counts each token in the window its chunk *arrived* in and each
//! completion where it ended, so the windows' token counts add up to the run's.
//!
//! The steady state runs from the first send plus the median end-to-end latency (by then the
//! first wave has been answered, and completions balance new sends) to the last send (after it
//! only the drain is left: fewer and fewer requests in flight). A run too short for that window
//! has none, and says so.

use serde::Serialize;

use crate::records::{RequestRecord, ns_to_s};

use super::stats::{MetricStats, percentile, safe_div};

/// One window of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Slice {
    /// Seconds since the run's first send.
    pub start_s: f64,
    pub end_s: f64,
    /// Measured requests sent within the window.
    pub sent: usize,
    /// Of those, how many succeeded and failed.
    pub completed: usize,
    pub failed: usize,
    /// Successful requests that ended within the window, per second.
    pub request_throughput: f64,
    /// Chunks of successful requests that arrived within the window, as tokens per second
    /// (each request's output tokens spread over its chunks).
    pub output_throughput: f64,
    /// Requests in flight, averaged over the window.
    pub mean_in_flight: f64,
    pub ttft: MetricStats,
    pub tpot: MetricStats,
    pub itl: MetricStats,
    pub e2el: MetricStats,
}

/// The steady-state window and its numbers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SteadyState {
    /// Seconds since the run's first send; `None` when the run was too short to have one.
    pub window: Option<(f64, f64)>,
    /// Why there is no window, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The window's statistics (zero when there is no window).
    pub stats: Slice,
}

/// Most windows `slices` makes; past it each window is wider than asked.
pub const MAX_SLICES: u64 = 1000;

/// The windows of `--slice-duration` over the measured records, from the first send to the
/// last chunk.
pub fn slices(records: &[&RequestRecord], slice_s: f64, percentiles: &[f64]) -> Vec<Slice> {
    let Some((origin, end)) = span(records) else {
        return Vec::new();
    };
    let span = end - origin;
    // At most MAX_SLICES windows: a tiny --slice-duration over a long run is widened rather
    // than looping billions of times.
    let width =
        ((slice_s * 1e9).clamp(1.0, u64::MAX as f64 / 2.0) as u64).max(span.div_ceil(MAX_SLICES));
    let count = span.div_ceil(width).max(1);
    (0..count)
        .map(|k| {
            let from = origin + k * width;
            window_stats(
                records,
                origin,
                from,
                from.saturating_add(width),
                percentiles,
            )
        })
        .collect()
}

/// The steady-state window of the measured records and its statistics.
pub fn steady_state(records: &[&RequestRecord], percentiles: &[f64]) -> SteadyState {
    let Some((origin, _)) = span(records) else {
        return SteadyState {
            note: Some("no request was sent".into()),
            ..SteadyState::default()
        };
    };
    let mut e2el: Vec<f64> = records
        .iter()
        .filter(|r| r.success)
        .map(|r| end_of(r).saturating_sub(r.sent_ns) as f64)
        .collect();
    if e2el.is_empty() {
        return SteadyState {
            note: Some("no request succeeded".into()),
            ..SteadyState::default()
        };
    }
    e2el.sort_by(f64::total_cmp);
    let fill = percentile(&e2el, 50.0) as u64;
    let start = origin + fill;
    let last_send = records.iter().map(|r| r.sent_ns).max().unwrap_or(origin);
    if last_send <= start {
        return SteadyState {
            note: Some(format!(
                "the last request went out {:.2} s after the first, before the first wave was \
                 answered ({:.2} s, the median latency): the run never reached a steady state; \
                 pace it (--request-rate, --max-concurrency) and send for longer",
                ns_to_s(last_send - origin),
                ns_to_s(fill)
            )),
            ..SteadyState::default()
        };
    }
    SteadyState {
        window: Some((ns_to_s(start - origin), ns_to_s(last_send - origin))),
        note: None,
        stats: window_stats(records, origin, start, last_send, percentiles),
    }
}

/// First send and last event of the measured records.
fn span(records: &[&RequestRecord]) -> Option<(u64, u64)> {
    let origin = records.iter().map(|r| r.sent_ns).filter(|&t| t > 0).min()?;
    let end = records.iter().map(|r| end_of(r)).max()?;
    Some((origin, end.max(origin + 1)))
}

/// When a request ended: its last chunk, else the end of its body.
fn end_of(r: &RequestRecord) -> u64 {
    r.delta_ns
        .last()
        .copied()
        .unwrap_or(r.end_ns)
        .max(r.sent_ns)
}

/// The statistics of the window [from, to).
fn window_stats(
    records: &[&RequestRecord],
    origin: u64,
    from: u64,
    to: u64,
    percentiles: &[f64],
) -> Slice {
    let seconds = ns_to_s(to - from);
    let within = |t: u64| t >= from && t < to;
    let mut slice = Slice {
        start_s: ns_to_s(from - origin),
        end_s: ns_to_s(to - origin),
        ..Slice::default()
    };
    let (mut ttfts, mut tpots, mut itls, mut e2els) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ended = 0usize;
    let mut tokens = 0.0f64;
    let mut busy_ns = 0u128;
    for r in records {
        let end = end_of(r);
        busy_ns += u128::from(end.min(to).saturating_sub(r.sent_ns.max(from)));
        if r.success {
            if within(end) {
                ended += 1;
            }
            if !r.delta_ns.is_empty() {
                let per_chunk = f64::from(r.output_tokens) / r.delta_ns.len() as f64;
                tokens += r.delta_ns.iter().filter(|&&t| within(t)).count() as f64 * per_chunk;
            } else if within(end) {
                tokens += f64::from(r.output_tokens);
            }
        }
        if !within(r.sent_ns) {
            continue;
        }
        slice.sent += 1;
        if !r.success {
            slice.failed += 1;
            continue;
        }
        slice.completed += 1;
        let ttft = r.ttft_s();
        if let Some(t) = ttft {
            ttfts.push(t);
        }
        let e2el = r.e2el_s();
        e2els.push(e2el);
        tpots.extend(r.tpot_s());
        itls.extend(r.itls_s());
    }
    slice.request_throughput = safe_div(ended as f64, seconds);
    slice.output_throughput = safe_div(tokens, seconds);
    slice.mean_in_flight = safe_div(busy_ns as f64 / 1e9, seconds);
    slice.ttft = MetricStats::from_seconds(&ttfts, percentiles);
    slice.tpot = MetricStats::from_seconds(&tpots, percentiles);
    slice.itl = MetricStats::from_seconds(&itls, percentiles);
    slice.e2el = MetricStats::from_seconds(&e2els, percentiles);
    slice
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Request `id` sent at `sent_ms`, first chunk 10 ms later, then 4 more 5 ms apart.
    fn request(id: u64, sent_ms: u64) -> RequestRecord {
        let sent = sent_ms * MS;
        RequestRecord {
            id,
            sent_ns: sent,
            scheduled_ns: sent,
            dispatched_ns: sent,
            delta_ns: (0..5).map(|k| sent + 10 * MS + k * 5 * MS).collect(),
            end_ns: sent + 30 * MS,
            output_tokens: 5,
            success: true,
            ..RequestRecord::default()
        }
    }

    #[test]
    fn slices_split_sends_and_tokens_and_add_up() {
        // One request every 10 ms for a second: 100 requests of 5 tokens.
        let records: Vec<RequestRecord> = (0..100).map(|i| request(i, 1000 + i * 10)).collect();
        let refs: Vec<&RequestRecord> = records.iter().collect();
        let slices = slices(&refs, 0.25, &[99.0]);
        // 1.03 s from the first send to the last chunk: five windows of 250 ms.
        assert_eq!(slices.len(), 5);
        assert_eq!(slices.iter().map(|s| s.sent).sum::<usize>(), 100);
        assert_eq!(slices[0].sent, 25);
        let tokens: f64 = slices.iter().map(|s| s.output_throughput * 0.25).sum();
        assert!((tokens - 500.0).abs() < 1e-6, "{tokens}");
        assert!((slices[1].ttft.mean - 10.0).abs() < 1e-9);
        // Each request is in flight 30 ms, one sent every 10 ms: three at a time.
        assert!(
            (slices[1].mean_in_flight - 3.0).abs() < 0.05,
            "{}",
            slices[1].mean_in_flight
        );
        // A nanosecond window is widened to at most MAX_SLICES windows; a huge one is one.
        let fine = super::slices(&refs, 1e-9, &[99.0]);
        assert!(
            fine.len() as u64 <= MAX_SLICES && fine.len() > 100,
            "{}",
            fine.len()
        );
        assert_eq!(fine.iter().map(|s| s.sent).sum::<usize>(), 100);
        assert_eq!(super::slices(&refs, 1e30, &[99.0]).len(), 1);
    }

    #[test]
    fn the_steady_state_leaves_out_ramp_up_and_drain() {
        let records: Vec<RequestRecord> = (0..100).map(|i| request(i, 1000 + i * 10)).collect();
        let refs: Vec<&RequestRecord> = records.iter().collect();
        let steady = steady_state(&refs, &[99.0]);
        let (start, end) = steady.window.unwrap();
        // Median latency 30 ms; last send at 990 ms.
        assert!((start - 0.030).abs() < 1e-9 && (end - 0.990).abs() < 1e-9);
        assert!((steady.stats.mean_in_flight - 3.0).abs() < 0.05);
        assert!((steady.stats.request_throughput - 100.0).abs() < 2.0);

        let short: Vec<&RequestRecord> = refs[..2].to_vec();
        let none = steady_state(&short, &[99.0]);
        assert!(none.window.is_none());
        assert!(none.note.unwrap().contains("never reached a steady state"));
    }
}
