//! Summary statistics computed exactly as numpy computes them (pairwise summation, linear
//! percentiles, population std), so llmb's numbers match vLLM's to the bit. Pure arithmetic on
//! samples, independent of records.

use serde::Serialize;

use super::MS_PER_S;

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

pub(super) fn safe_div(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}
