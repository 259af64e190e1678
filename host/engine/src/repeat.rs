//! Repeated runs (`--num-runs N`): the same benchmark N times with the same seed, each metric's
//! spread across the runs, and which metrics vary too much from run to run to compare.
//!
//! A run's mean TTFT is one number; the runs' values are a small sample of what this setup
//! gives. Their mean, sample standard deviation, coefficient of variation and Student-t 95 %
//! confidence interval say how far a single run can be trusted, which no bootstrap over one
//! run's requests can tell (the server's warm state, the machine's neighbours, the clock).

use serde::Serialize;

use crate::metrics::BenchmarkMetrics;

/// A metric is too noisy to compare when its runs vary by more than this share of their mean:
/// a change smaller than about twice this would hide in the noise.
pub const NOISY_CV: f64 = 0.05;

/// A number read from one run's metrics.
type Read = fn(&BenchmarkMetrics) -> Option<f64>;

/// The metrics summarised across runs: name, unit, whether higher is better, and how to read
/// it from a run.
pub const REPEATED_METRICS: &[(&str, &str, bool, Read)] = &[
    ("request_throughput", "req/s", true, |m| {
        Some(m.request_throughput)
    }),
    ("output_throughput", "tok/s", true, |m| {
        Some(m.output_throughput)
    }),
    ("mean_ttft", "ms", false, |m| finite(m.ttft.mean)),
    ("median_ttft", "ms", false, |m| finite(m.ttft.median)),
    ("p99_ttft", "ms", false, |m| {
        finite(m.stage_quantiles.ttft_p99_ms)
    }),
    ("mean_tpot", "ms", false, |m| finite(m.tpot.mean)),
    ("mean_itl", "ms", false, |m| finite(m.itl.mean)),
    ("mean_e2el", "ms", false, |m| finite(m.e2el.mean)),
    ("p99_e2el", "ms", false, |m| {
        finite(m.stage_quantiles.e2el_p99_ms)
    }),
    ("mean_ttfo", "ms", false, |m| {
        (m.reasoning.requests > 0)
            .then_some(m.reasoning.ttfo.mean)
            .and_then(finite)
    }),
];

fn finite(v: f64) -> Option<f64> {
    (v.is_finite() && v != 0.0).then_some(v)
}

/// One metric across the runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub metric: String,
    pub unit: String,
    /// Each run's value, in run order.
    pub values: Vec<f64>,
    pub mean: f64,
    /// Sample standard deviation (n − 1).
    pub std: f64,
    /// `std / mean`.
    pub cv: f64,
    /// Student-t 95 % confidence interval of the mean.
    pub ci_low: f64,
    pub ci_high: f64,
    /// The coefficient of variation is above [`NOISY_CV`].
    pub noisy: bool,
}

impl Spread {
    /// The spread of `values` (at least two).
    pub fn of(metric: &str, unit: &str, values: Vec<f64>) -> Option<Self> {
        let n = values.len();
        if n < 2 {
            return None;
        }
        let (mean, std) = mean_std(&values);
        let half = t_975(n - 1) * std / (n as f64).sqrt();
        let cv = if mean != 0.0 { std / mean.abs() } else { 0.0 };
        Some(Spread {
            metric: metric.into(),
            unit: unit.into(),
            values,
            mean,
            std,
            cv,
            ci_low: mean - half,
            ci_high: mean + half,
            noisy: cv > NOISY_CV,
        })
    }
}

/// Every [`REPEATED_METRICS`] entry that all runs have, across `runs`.
pub fn spreads(runs: &[&BenchmarkMetrics]) -> Vec<Spread> {
    REPEATED_METRICS
        .iter()
        .filter_map(|(name, unit, _, read)| {
            let values: Option<Vec<f64>> = runs.iter().map(|m| read(m)).collect();
            Spread::of(name, unit, values?)
        })
        .collect()
}

/// Mean and sample standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The 97.5th percentile of Student's t with `df` degrees of freedom (two-sided 95 %).
pub fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        31..=60 => 2.042 - (df - 30) as f64 * (2.042 - 2.000) / 30.0,
        61..=120 => 2.000 - (df - 60) as f64 * (2.000 - 1.980) / 60.0,
        _ => 1.960,
    }
}

/// Welch's difference of means B − A with its 95 % interval (Welch–Satterthwaite degrees of
/// freedom), for metrics measured once per run on each side.
pub fn welch(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let (ma, sa) = mean_std(a);
    let (mb, sb) = mean_std(b);
    let (va, vb) = (sa * sa / a.len() as f64, sb * sb / b.len() as f64);
    let se = (va + vb).sqrt();
    let df = if se == 0.0 {
        usize::MAX
    } else {
        let num = (va + vb).powi(2);
        let den =
            va * va / (a.len() as f64 - 1.0).max(1.0) + vb * vb / (b.len() as f64 - 1.0).max(1.0);
        (num / den).floor().max(1.0) as usize
    };
    let half = t_975(df) * se;
    let d = mb - ma;
    (d, d - half, d + half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_known_values() {
        let s = Spread::of("x", "ms", vec![10.0, 12.0, 14.0]).unwrap();
        assert!((s.mean - 12.0).abs() < 1e-12);
        assert!((s.std - 2.0).abs() < 1e-12);
        // t(2) = 4.303; half-width 4.303 * 2 / sqrt(3).
        assert!((s.ci_high - (12.0 + 4.303 * 2.0 / 3f64.sqrt())).abs() < 1e-9);
        assert!(s.noisy, "cv {}", s.cv);
        let quiet = Spread::of("x", "ms", vec![100.0, 101.0, 99.0, 100.0]).unwrap();
        assert!(!quiet.noisy);
        assert!(Spread::of("x", "ms", vec![1.0]).is_none());
    }

    #[test]
    fn welch_finds_a_shift_and_not_noise() {
        let a = [100.0, 101.0, 99.0, 100.5, 99.5];
        let b = [110.0, 111.0, 109.0, 110.5, 109.5];
        let (d, lo, hi) = welch(&a, &b);
        assert!((d - 10.0).abs() < 1e-9);
        assert!(lo > 8.0 && hi < 12.0, "{lo}..{hi}");
        let c = [100.2, 100.9, 99.1, 100.4, 99.6];
        let (_, lo, hi) = welch(&a, &c);
        assert!(lo < 0.0 && hi > 0.0);
    }
}
