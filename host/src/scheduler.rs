//! When each request goes out: vLLM's arrival process (Poisson or gamma gaps at a target rate,
//! or everything at once), as absolute offsets from the run's start so sleep overshoot never
//! accumulates.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Gamma};

/// Send offsets for `n` requests.
///
/// Gaps are drawn from gamma(shape = burstiness, scale = 1 / (rate · burstiness)) — burstiness 1
/// is a Poisson process — and, as `vllm bench serve` does, rescaled so the last request goes out
/// at `n / rate`. An infinite rate sends everything at offset zero.
pub fn arrival_offsets(
    n: usize,
    rate: f64,
    burstiness: f64,
    seed: u64,
) -> anyhow::Result<Vec<Duration>> {
    anyhow::ensure!(
        rate > 0.0,
        "--request-rate must be positive (or inf), got {rate}"
    );
    anyhow::ensure!(
        burstiness > 0.0,
        "--burstiness must be positive, got {burstiness}"
    );
    if rate.is_infinite() {
        return Ok(vec![Duration::ZERO; n]);
    }
    let gamma = Gamma::new(burstiness, 1.0 / (rate * burstiness))
        .map_err(|e| anyhow::anyhow!("invalid arrival distribution: {e}"))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut total = 0.0f64;
    let mut offsets: Vec<f64> = (0..n)
        .map(|_| {
            total += gamma.sample(&mut rng);
            total
        })
        .collect();
    if let Some(&last) = offsets.last()
        && last > 0.0
    {
        let factor = (n as f64 / rate) / last;
        for o in &mut offsets {
            *o *= factor;
        }
    }
    Ok(offsets.into_iter().map(Duration::from_secs_f64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinite_rate_sends_at_once() {
        assert!(
            arrival_offsets(5, f64::INFINITY, 1.0, 0)
                .unwrap()
                .iter()
                .all(|d| d.is_zero())
        );
    }

    #[test]
    fn poisson_gaps_have_the_asked_mean_and_end_at_n_over_rate() {
        let n = 20_000;
        let offsets = arrival_offsets(n, 50.0, 1.0, 7).unwrap();
        assert!((offsets[n - 1].as_secs_f64() - n as f64 / 50.0).abs() < 1e-6);
        let gaps: Vec<f64> = offsets
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Exponential: coefficient of variation 1.
        assert!((mean - 0.02).abs() < 0.001, "mean gap {mean}");
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.05,
            "cv {}",
            var.sqrt() / mean
        );
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn same_seed_same_schedule() {
        assert_eq!(
            arrival_offsets(100, 10.0, 0.5, 3).unwrap(),
            arrival_offsets(100, 10.0, 0.5, 3).unwrap()
        );
        assert_ne!(
            arrival_offsets(100, 10.0, 0.5, 3).unwrap(),
            arrival_offsets(100, 10.0, 0.5, 4).unwrap()
        );
    }
}
