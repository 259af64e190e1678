//! "Did my change help?": two sets of requests compared metric by metric, each difference with
//! a bootstrap confidence interval over requests and a verdict that accounts for the noise.
//!
//! For each of TTFT, TPOT, ITL and end-to-end latency, and each of mean, median and p99, the
//! requests of both runs are resampled with replacement (ITLs go with their request, so a
//! request's gaps stay together), the statistic's difference B − A is taken each time, and the
//! 2.5th and 97.5th percentiles of those differences bound it. B is better or worse only when
//! that interval excludes zero *and* the difference is at least `min_effect` of A's value: a
//! simulator or a quiet server gives intervals so narrow that a 0.1 % wobble would otherwise
//! count.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::records::RequestRecord;

/// One metric statistic of A and B, their difference and what it means.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// `ttft_ms`, `tpot_ms`, `itl_ms`, `e2el_ms`.
    pub metric: String,
    /// `mean`, `median`, `p99`.
    pub statistic: String,
    pub a: f64,
    pub b: f64,
    /// B − A.
    pub difference: f64,
    /// B − A relative to A, in percent.
    pub difference_pct: f64,
    /// The 95 % bootstrap interval of the difference.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Half the interval's width relative to A, in percent: the smallest change this pair of
    /// runs could resolve.
    pub noise_pct: f64,
    /// `better`, `worse` or `no significant difference` (lower latency is better).
    pub verdict: String,
}

/// How the comparison is made.
#[derive(Debug, Clone, Copy)]
pub struct CompareOptions {
    pub resamples: usize,
    /// The smallest relative difference that counts, as a fraction (0.01: 1 %).
    pub min_effect: f64,
    pub seed: u64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            resamples: 1000,
            min_effect: 0.01,
            seed: 0,
        }
    }
}

/// Per-request samples of one metric, in ms (several per request for ITL).
type Extract = fn(&RequestRecord) -> Vec<f64>;

const METRICS: &[(&str, Extract)] = &[
    ("ttft_ms", |r| {
        r.ttft_s().map(|s| s * 1e3).into_iter().collect()
    }),
    ("tpot_ms", |r| {
        r.tpot_s().map(|s| s * 1e3).into_iter().collect()
    }),
    ("itl_ms", |r| r.itls_s().map(|s| s * 1e3).collect()),
    ("e2el_ms", |r| vec![r.e2el_s() * 1e3]),
    ("ttfo_ms", |r| {
        r.ttfo_s().map(|s| s * 1e3).into_iter().collect()
    }),
];

const STATISTICS: &[&str] = &["mean", "median", "p99"];

fn statistic(name: &str, values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    match name {
        "mean" => values.iter().sum::<f64>() / values.len() as f64,
        "median" => percentile(values, 50.0),
        _ => percentile(values, 99.0),
    }
}

/// numpy's linear percentile, without sorting everything.
fn percentile(values: &mut [f64], p: f64) -> f64 {
    let rank = p / 100.0 * (values.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let (_, low, rest) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let low = *low;
    let high = rest.iter().copied().fold(f64::INFINITY, f64::min);
    if rest.is_empty() {
        low
    } else {
        low + (high - low) * (rank - lo as f64)
    }
}

/// The measured, successful requests' samples, one list per request.
fn per_request(records: &[RequestRecord], extract: Extract) -> Vec<Vec<f64>> {
    records
        .iter()
        .filter(|r| r.success && !r.warmup)
        .map(extract)
        .filter(|v| !v.is_empty())
        .collect()
}

fn flatten(groups: &[Vec<f64>]) -> Vec<f64> {
    groups.iter().flatten().copied().collect()
}

fn resample(groups: &[Vec<f64>], rng: &mut StdRng) -> Vec<f64> {
    let mut out = Vec::new();
    for _ in 0..groups.len() {
        out.extend_from_slice(&groups[rng.random_range(0..groups.len())]);
    }
    out
}

/// The comparison row for A and B with the 95 % interval `(low, high)` of B − A: better or
/// worse only when the interval excludes zero and the change is at least `min_effect` of A.
fn judged(
    metric: &str,
    stat: &str,
    va: f64,
    vb: f64,
    (low, high): (f64, f64),
    min_effect: f64,
) -> Comparison {
    let difference = vb - va;
    let scale = va.abs().max(f64::MIN_POSITIVE);
    let big_enough = difference.abs() >= min_effect * scale;
    let verdict = if low > 0.0 && big_enough {
        "worse"
    } else if high < 0.0 && big_enough {
        "better"
    } else {
        "no significant difference"
    };
    Comparison {
        metric: metric.to_string(),
        statistic: stat.to_string(),
        a: va,
        b: vb,
        difference,
        difference_pct: difference / scale * 100.0,
        ci_low: low,
        ci_high: high,
        noise_pct: (high - low) / 2.0 / scale * 100.0,
        verdict: verdict.into(),
    }
}

/// A against B from repeated runs (each side a list of runs' records): every statistic is
/// taken per run, and the runs' values are compared by Welch's difference of means, so the
/// interval holds the run-to-run noise a bootstrap over one run's requests cannot see. A is the
/// mean over A's runs.
pub fn compare_runs(
    a: &[Vec<RequestRecord>],
    b: &[Vec<RequestRecord>],
    min_effect: f64,
) -> Vec<Comparison> {
    let mut out = Vec::new();
    let reasoned = a
        .iter()
        .chain(b)
        .flatten()
        .any(|r| r.reasoning_tokens.is_some());
    for (metric, extract) in METRICS {
        if *metric == "ttfo_ms" && !reasoned {
            continue;
        }
        for stat in STATISTICS {
            let per_run = |runs: &[Vec<RequestRecord>]| -> Vec<f64> {
                runs.iter()
                    .map(|r| statistic(stat, &mut flatten(&per_request(r, *extract))))
                    .filter(|v| v.is_finite())
                    .collect()
            };
            let (ra, rb) = (per_run(a), per_run(b));
            if ra.len() < 2 || rb.len() < 2 {
                continue;
            }
            let (_, low, high) = crate::repeat::welch(&ra, &rb);
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            out.push(judged(
                metric,
                stat,
                mean(&ra),
                mean(&rb),
                (low, high),
                min_effect,
            ));
        }
    }
    out
}

/// A against B, every metric and statistic.
pub fn compare(a: &[RequestRecord], b: &[RequestRecord], opts: CompareOptions) -> Vec<Comparison> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut out = Vec::new();
    // TTFO is TTFT again (or its role-only first chunk later) when no request reasoned.
    let reasoned = a.iter().chain(b).any(|r| r.reasoning_tokens.is_some());
    for (metric, extract) in METRICS {
        if *metric == "ttfo_ms" && !reasoned {
            continue;
        }
        let (ga, gb) = (per_request(a, *extract), per_request(b, *extract));
        if ga.is_empty() || gb.is_empty() {
            continue;
        }
        for stat in STATISTICS {
            let va = statistic(stat, &mut flatten(&ga));
            let vb = statistic(stat, &mut flatten(&gb));
            let mut diffs: Vec<f64> = (0..opts.resamples.max(1))
                .map(|_| {
                    statistic(stat, &mut resample(&gb, &mut rng))
                        - statistic(stat, &mut resample(&ga, &mut rng))
                })
                .collect();
            let (low, high) = (percentile(&mut diffs, 2.5), percentile(&mut diffs, 97.5));
            out.push(judged(metric, stat, va, vb, (low, high), opts.min_effect));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ttft_ms: u64, n: u64, jitter: u64) -> Vec<RequestRecord> {
        (0..n)
            .map(|i| {
                let first = (ttft_ms + i % jitter) * 1_000_000;
                RequestRecord {
                    id: i,
                    success: true,
                    sent_ns: 0,
                    delta_ns: vec![first, first + 10_000_000, first + 20_000_000],
                    output_tokens: 3,
                    ..Default::default()
                }
            })
            .collect()
    }

    #[test]
    fn a_real_change_is_found_and_noise_is_not() {
        let slow = compare(
            &run(20, 200, 5),
            &run(30, 200, 5),
            CompareOptions::default(),
        );
        let ttft = slow
            .iter()
            .find(|c| c.metric == "ttft_ms" && c.statistic == "mean")
            .unwrap();
        assert_eq!(ttft.verdict, "worse");
        assert!(ttft.ci_low > 5.0 && ttft.ci_high < 15.0, "{ttft:?}");
        let itl = slow
            .iter()
            .find(|c| c.metric == "itl_ms" && c.statistic == "mean")
            .unwrap();
        assert_eq!(itl.verdict, "no significant difference");
        let same = compare(
            &run(20, 200, 5),
            &run(20, 200, 5),
            CompareOptions::default(),
        );
        assert!(
            same.iter()
                .all(|c| c.verdict == "no significant difference")
        );
        let faster = compare(
            &run(30, 200, 5),
            &run(20, 200, 5),
            CompareOptions::default(),
        );
        assert!(
            faster
                .iter()
                .any(|c| c.metric == "ttft_ms" && c.verdict == "better")
        );
    }
}
