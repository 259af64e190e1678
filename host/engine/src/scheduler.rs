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

/// How `--ramp-up-strategy` moves the rate from start to end, as in `vllm bench serve`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RampStrategy {
    Linear,
    Exponential,
}

/// A request rate that changes with each request instead of staying fixed, to find the load a
/// server stops keeping up with in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ramp {
    pub strategy: RampStrategy,
    /// Requests per second for the first request (`--ramp-up-start-rps`).
    pub start_rps: f64,
    /// Requests per second for the last request (`--ramp-up-end-rps`).
    pub end_rps: f64,
}

/// The target rate when request `index` of `n` goes out, as vLLM's `_get_current_request_rate`
/// computes it, so ramped runs are comparable: progress = index / max(n − 1, 1), then
/// start + (end − start) · progress (linear) or start · (end / start)^progress (exponential).
pub fn ramp_rate(ramp: &Ramp, index: usize, n: usize) -> f64 {
    let progress = index as f64 / n.saturating_sub(1).max(1) as f64;
    match ramp.strategy {
        RampStrategy::Linear => ramp.start_rps + (ramp.end_rps - ramp.start_rps) * progress,
        RampStrategy::Exponential => {
            ramp.start_rps * (ramp.end_rps / ramp.start_rps).powf(progress)
        }
    }
}

/// Send offsets for `n` requests whose rate ramps up, with vLLM's `--ramp-up-strategy`
/// semantics: request i waits a gamma(shape = burstiness, scale = 1 / (rate_i · burstiness))
/// gap after the previous one, rate_i = [`ramp_rate`]. Unlike [`arrival_offsets`] nothing is
/// rescaled (vLLM rescales only without a ramp), so the run lasts as long as the gaps add up to.
///
/// A linear ramp from 0 has rate 0 at the first request, where vLLM would divide by zero: that
/// request goes out at offset zero instead.
pub fn ramp_offsets(
    n: usize,
    ramp: &Ramp,
    burstiness: f64,
    seed: u64,
) -> anyhow::Result<Vec<Duration>> {
    validate_ramp(ramp)?;
    validate_burstiness(burstiness)?;
    let gamma = Gamma::new(burstiness, 1.0)
        .map_err(|e| anyhow::anyhow!("invalid arrival distribution: {e}"))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut total = 0.0f64;
    (0..n)
        .map(|i| {
            let rate = ramp_rate(ramp, i, n);
            if rate > 0.0 {
                total += gamma.sample(&mut rng) / (rate * burstiness);
            }
            Duration::try_from_secs_f64(total).map_err(|e| {
                anyhow::anyhow!("request {i} of the ramp would go out after {total} s: {e}")
            })
        })
        .collect()
}

fn validate_ramp(ramp: &Ramp) -> anyhow::Result<()> {
    let (start, end) = (ramp.start_rps, ramp.end_rps);
    anyhow::ensure!(
        start.is_finite() && start >= 0.0,
        "--ramp-up-start-rps must be a finite number >= 0, got {start}"
    );
    anyhow::ensure!(
        ramp.strategy != RampStrategy::Exponential || start > 0.0,
        "--ramp-up-start-rps must be > 0 for an exponential ramp, got {start}"
    );
    anyhow::ensure!(
        end.is_finite() && end > 0.0,
        "--ramp-up-end-rps must be a finite number > 0, got {end}"
    );
    anyhow::ensure!(
        start <= end,
        "--ramp-up-start-rps ({start}) must not exceed --ramp-up-end-rps ({end})"
    );
    Ok(())
}

fn validate_burstiness(burstiness: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        burstiness.is_finite() && burstiness > 0.0,
        "--burstiness must be a finite positive number, got {burstiness}"
    );
    Ok(())
}

/// One row of the report's rate-step list: when the ramp reached a new whole rate.
#[derive(Debug, Clone, PartialEq)]
pub struct RateStep {
    /// Index of the first request sent at this rate.
    pub first_request: usize,
    /// That request's send offset.
    pub at: Duration,
    /// The whole requests-per-second level reached (floor of the rate), as vLLM logs it.
    pub rps: f64,
}

/// The rate steps of a ramp for the report: a row each time the floor of the rate changes (vLLM
/// logs "Ramping up request rate to X RPS" then), thinned evenly to at most `max_rows` rows so a
/// long ramp stays readable; the first and last rows are always kept (only the first when
/// `max_rows` is 1).
pub fn ramp_steps(ramp: &Ramp, offsets: &[Duration], max_rows: usize) -> Vec<RateStep> {
    let n = offsets.len();
    let mut steps: Vec<RateStep> = Vec::new();
    for (i, &at) in offsets.iter().enumerate() {
        let rps = ramp_rate(ramp, i, n).floor();
        if steps.last().is_none_or(|s| s.rps != rps) {
            steps.push(RateStep {
                first_request: i,
                at,
                rps,
            });
        }
    }
    if steps.len() <= max_rows {
        return steps;
    }
    if max_rows < 2 {
        steps.truncate(max_rows);
        return steps;
    }
    let last = steps.len() - 1;
    let span = max_rows - 1;
    // Rounded even spacing; the picks are distinct because last > span.
    (0..max_rows)
        .map(|k| steps[(k * last + span / 2) / span].clone())
        .collect()
}

/// Open-ended arrivals for `--duration`: gamma gaps at `rate` as in [`arrival_offsets`], but
/// not rescaled since the request count is not known up front. Stops before the first offset
/// that would be at or past `limit`, or after `max` offsets.
pub fn arrivals_within(
    limit: Duration,
    rate: f64,
    burstiness: f64,
    seed: u64,
    max: usize,
) -> anyhow::Result<Vec<Duration>> {
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "--request-rate must be finite and positive to schedule arrivals within --duration, got {rate}"
    );
    validate_burstiness(burstiness)?;
    let gamma = Gamma::new(burstiness, 1.0 / (rate * burstiness))
        .map_err(|e| anyhow::anyhow!("invalid arrival distribution: {e}"))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let limit_s = limit.as_secs_f64();
    let mut total = 0.0f64;
    let mut offsets = Vec::new();
    while offsets.len() < max {
        total += gamma.sample(&mut rng);
        if total >= limit_s {
            break;
        }
        let offset = Duration::from_secs_f64(total);
        if offset >= limit {
            break;
        }
        offsets.push(offset);
    }
    Ok(offsets)
}

/// Trace replay: sends each sample when its `timestamps` entry (seconds, any origin) says,
/// compressed or stretched by `speed` (`--trace-speed` 2 replays twice as fast). Returns
/// (sample index, offset) pairs in send order, ties kept in sample order; the earliest
/// timestamp is offset zero.
pub fn trace_schedule(timestamps: &[f64], speed: f64) -> anyhow::Result<Vec<(usize, Duration)>> {
    anyhow::ensure!(
        speed.is_finite() && speed > 0.0,
        "--trace-speed must be a finite positive number, got {speed}"
    );
    if let Some((i, t)) = timestamps.iter().enumerate().find(|(_, t)| !t.is_finite()) {
        anyhow::bail!("trace timestamp of sample {i} is {t}, not a finite number of seconds");
    }
    let Some(min) = timestamps.iter().copied().reduce(f64::min) else {
        return Ok(Vec::new());
    };
    let mut order: Vec<usize> = (0..timestamps.len()).collect();
    order.sort_by(|&a, &b| {
        timestamps[a]
            .partial_cmp(&timestamps[b])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    order
        .into_iter()
        .map(|i| {
            let s = (timestamps[i] - min) / speed;
            Duration::try_from_secs_f64(s).map(|d| (i, d)).map_err(|e| {
                anyhow::anyhow!(
                    "trace timestamp of sample {i} ({}) is {s} s after the first at --trace-speed {speed}: {e}",
                    timestamps[i]
                )
            })
        })
        .collect()
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

    /// Gaps between consecutive offsets, the first measured from zero.
    fn gaps(offsets: &[Duration]) -> Vec<f64> {
        let mut prev = 0.0;
        offsets
            .iter()
            .map(|o| {
                let t = o.as_secs_f64();
                let gap = t - prev;
                prev = t;
                gap
            })
            .collect()
    }

    /// ln Γ(x) for x >= 0.5 (Lanczos, g = 7, n = 9; relative error ~1e-15).
    fn ln_gamma(x: f64) -> f64 {
        const C: [f64; 9] = [
            0.999_999_999_999_809_9,
            676.520_368_121_885_1,
            -1_259.139_216_722_402_8,
            771.323_428_777_653_1,
            -176.615_029_162_140_6,
            12.507_343_278_686_905,
            -0.138_571_095_265_720_12,
            9.984_369_578_019_572e-6,
            1.505_632_735_149_311_6e-7,
        ];
        assert!(x >= 0.5, "{x}");
        let x = x - 1.0;
        let a = C[0]
            + C[1..]
                .iter()
                .enumerate()
                .map(|(i, c)| c / (x + i as f64 + 1.0))
                .sum::<f64>();
        let t = x + 7.5;
        0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
    }

    /// The regularized lower incomplete gamma function P(a, x): series below a + 1, Lentz's
    /// continued fraction for Q = 1 − P above (Numerical Recipes' gser/gcf).
    fn gamma_p(a: f64, x: f64) -> f64 {
        if x <= 0.0 {
            return 0.0;
        }
        let front = (-x + a * x.ln() - ln_gamma(a)).exp();
        if x < a + 1.0 {
            let (mut term, mut sum) = (1.0 / a, 1.0 / a);
            for n in 1..1000 {
                term *= x / (a + n as f64);
                sum += term;
                if term.abs() < sum.abs() * 1e-16 {
                    break;
                }
            }
            sum * front
        } else {
            const TINY: f64 = 1e-300;
            let mut b = x + 1.0 - a;
            let mut c = 1.0 / TINY;
            let mut d = 1.0 / b;
            let mut h = d;
            for i in 1..1000 {
                let an = -(i as f64) * (i as f64 - a);
                b += 2.0;
                d = an * d + b;
                if d.abs() < TINY {
                    d = TINY;
                }
                c = b + an / c;
                if c.abs() < TINY {
                    c = TINY;
                }
                d = 1.0 / d;
                let delta = d * c;
                h *= delta;
                if (delta - 1.0).abs() < 1e-16 {
                    break;
                }
            }
            1.0 - front * h
        }
    }

    /// CDF of the unit-mean gamma distribution with this shape (scale 1 / shape).
    fn unit_gamma_cdf(shape: f64, x: f64) -> f64 {
        gamma_p(shape, shape * x)
    }

    /// Kolmogorov–Smirnov statistic of `sample` against `cdf`.
    fn ks_statistic(sample: &[f64], cdf: impl Fn(f64) -> f64) -> f64 {
        let mut sorted = sample.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        sorted
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let f = cdf(x);
                (f - i as f64 / n).max((i + 1) as f64 / n - f)
            })
            .fold(0.0, f64::max)
    }

    /// Gaps divided by their mean, which undoes `arrival_offsets`' rescaling.
    fn unit_mean(gaps: &[f64]) -> Vec<f64> {
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        gaps.iter().map(|g| g / mean).collect()
    }

    #[test]
    fn incomplete_gamma_matches_closed_forms() {
        for x in [0.01, 0.3, 1.0, 2.5, 7.0, 30.0] {
            assert!((gamma_p(1.0, x) - (1.0 - (-x).exp())).abs() < 1e-12, "{x}");
            let p3 = 1.0 - (-x).exp() * (1.0 + x + x * x / 2.0);
            assert!((gamma_p(3.0, x) - p3).abs() < 1e-12, "{x}");
        }
        // P(1/2, x) = erf(√x).
        assert!((gamma_p(0.5, 1.0) - 0.842_700_792_949_714_9).abs() < 1e-12);
        assert!((gamma_p(0.5, 4.0) - 0.995_322_265_018_952_7).abs() < 1e-12);
    }

    #[test]
    fn arrival_gaps_fit_their_distribution() {
        let n = 5_000;
        let critical = 1.63 / (n as f64).sqrt();
        for (burstiness, seed) in [(1.0, 11), (0.5, 12), (3.0, 13)] {
            let offsets = arrival_offsets(n, 20.0, burstiness, seed).unwrap();
            let sample = unit_mean(&gaps(&offsets));
            let d = ks_statistic(&sample, |x| unit_gamma_cdf(burstiness, x));
            assert!(
                d < critical,
                "burstiness {burstiness}: D = {d} >= {critical}"
            );
        }
    }

    #[test]
    fn goodness_of_fit_rejects_the_wrong_distribution() {
        let n = 5_000;
        let critical = 1.63 / (n as f64).sqrt();
        let sample = unit_mean(&gaps(&arrival_offsets(n, 20.0, 1.0, 11).unwrap()));
        let d = ks_statistic(&sample, |x| unit_gamma_cdf(3.0, x));
        assert!(d > critical, "D = {d} <= {critical}");
    }

    fn linear(start_rps: f64, end_rps: f64) -> Ramp {
        Ramp {
            strategy: RampStrategy::Linear,
            start_rps,
            end_rps,
        }
    }

    fn exponential(start_rps: f64, end_rps: f64) -> Ramp {
        Ramp {
            strategy: RampStrategy::Exponential,
            start_rps,
            end_rps,
        }
    }

    #[test]
    fn ramp_rates_go_from_start_to_end() {
        for ramp in [linear(0.0, 50.0), linear(2.0, 9.0), exponential(0.5, 64.0)] {
            let n = 200;
            let rates: Vec<f64> = (0..n).map(|i| ramp_rate(&ramp, i, n)).collect();
            assert_eq!(rates[0], ramp.start_rps, "{ramp:?}");
            assert!((rates[n - 1] - ramp.end_rps).abs() < 1e-9, "{ramp:?}");
            assert!(rates.windows(2).all(|w| w[0] <= w[1]), "{ramp:?}");
        }
        assert_eq!(ramp_rate(&linear(0.0, 10.0), 50, 101), 5.0);
        // Exponential: the geometric mean halfway.
        assert!((ramp_rate(&exponential(1.0, 100.0), 50, 101) - 10.0).abs() < 1e-9);
        // A single request runs at the start rate, as in vLLM.
        assert_eq!(ramp_rate(&linear(3.0, 10.0), 0, 1), 3.0);
    }

    #[test]
    fn ramp_offsets_follow_the_rate_without_rescaling() {
        let n = 20_000;
        let flat = ramp_offsets(n, &linear(40.0, 40.0), 1.0, 5).unwrap();
        let mean = flat[n - 1].as_secs_f64() / n as f64;
        assert!((mean - 0.025).abs() < 0.001, "mean gap {mean}");
        assert!((flat[n - 1].as_secs_f64() - n as f64 / 40.0).abs() > 1e-6);

        let ramp = linear(10.0, 1000.0);
        let offsets = ramp_offsets(n, &ramp, 1.0, 5).unwrap();
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
        let g = gaps(&offsets);
        // Each gap scaled by its own rate is unit-mean exponential.
        let scaled: Vec<f64> = g
            .iter()
            .enumerate()
            .map(|(i, g)| g * ramp_rate(&ramp, i, n))
            .collect();
        let d = ks_statistic(&scaled, |x| 1.0 - (-x).exp());
        assert!(d < 1.63 / (n as f64).sqrt(), "D = {d}");
        assert_eq!(offsets, ramp_offsets(n, &ramp, 1.0, 5).unwrap());
        assert_ne!(offsets, ramp_offsets(n, &ramp, 1.0, 6).unwrap());

        let from_zero = ramp_offsets(10, &linear(0.0, 5.0), 2.0, 1).unwrap();
        assert_eq!(from_zero[0], Duration::ZERO);
        assert!(from_zero[1] > Duration::ZERO);
    }

    #[test]
    fn ramp_offsets_reject_bad_flags() {
        let err = |ramp: Ramp, b: f64| ramp_offsets(3, &ramp, b, 0).unwrap_err().to_string();
        assert!(err(exponential(0.0, 5.0), 1.0).contains("--ramp-up-start-rps"));
        assert!(err(linear(-1.0, 5.0), 1.0).contains("--ramp-up-start-rps"));
        assert!(err(linear(f64::NAN, 5.0), 1.0).contains("--ramp-up-start-rps"));
        assert!(err(linear(1.0, 0.0), 1.0).contains("--ramp-up-end-rps"));
        assert!(err(linear(1.0, f64::INFINITY), 1.0).contains("--ramp-up-end-rps"));
        assert!(err(linear(9.0, 5.0), 1.0).contains("(9)"));
        assert!(err(linear(1.0, 5.0), 0.0).contains("--burstiness"));
    }

    #[test]
    fn ramp_steps_mark_each_whole_rate() {
        let ramp = linear(0.0, 10.0);
        let offsets: Vec<Duration> = (0..101).map(Duration::from_millis).collect();
        let steps = ramp_steps(&ramp, &offsets, 100);
        assert_eq!(steps.len(), 11);
        for (k, step) in steps.iter().enumerate() {
            assert_eq!(step.rps, k as f64);
            assert_eq!(step.first_request, 10 * k);
            assert_eq!(step.at, offsets[10 * k]);
        }

        let thinned = ramp_steps(&ramp, &offsets, 4);
        let levels: Vec<f64> = thinned.iter().map(|s| s.rps).collect();
        assert_eq!(levels, [0.0, 3.0, 7.0, 10.0]);
        assert_eq!(thinned[3].first_request, 100);
        assert_eq!(ramp_steps(&ramp, &offsets, 1).len(), 1);
        assert!(ramp_steps(&ramp, &offsets, 0).is_empty());
        assert!(ramp_steps(&ramp, &[], 10).is_empty());

        // Below 1 req/s the level stays 0 until the rate reaches 1.
        let slow = ramp_steps(&exponential(0.25, 4.0), &offsets, 10);
        let levels: Vec<f64> = slow.iter().map(|s| s.rps).collect();
        assert_eq!(levels, [0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(slow[1].first_request, 50);
    }

    #[test]
    fn arrivals_within_stay_inside_the_limit() {
        let limit = Duration::from_secs(100);
        let offsets = arrivals_within(limit, 50.0, 1.0, 9, usize::MAX).unwrap();
        assert!(offsets.iter().all(|&o| o < limit));
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
        let mean = offsets.last().unwrap().as_secs_f64() / offsets.len() as f64;
        assert!((mean - 0.02).abs() < 0.001, "mean gap {mean}");
        assert!(
            (offsets.len() as f64 - 5_000.0).abs() < 300.0,
            "{}",
            offsets.len()
        );

        assert_eq!(
            arrivals_within(limit, 50.0, 1.0, 9, 10).unwrap(),
            offsets[..10]
        );
        assert!(
            arrivals_within(Duration::ZERO, 50.0, 1.0, 9, 10)
                .unwrap()
                .is_empty()
        );
        for bad in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            let e = arrivals_within(limit, bad, 1.0, 9, 10).unwrap_err();
            assert!(e.to_string().contains("--request-rate"), "{e}");
        }
    }

    #[test]
    fn trace_schedule_sorts_and_scales() {
        let schedule = trace_schedule(&[105.0, 100.0, 102.0, 100.0], 2.0).unwrap();
        assert_eq!(
            schedule,
            [
                (1, Duration::ZERO),
                (3, Duration::ZERO),
                (2, Duration::from_secs(1)),
                (0, Duration::from_secs_f64(2.5)),
            ]
        );
        let slow = trace_schedule(&[-1.0, 0.5], 0.5).unwrap();
        assert_eq!(slow, [(0, Duration::ZERO), (1, Duration::from_secs(3))]);
        assert!(trace_schedule(&[], 1.0).unwrap().is_empty());

        let e = trace_schedule(&[1.0, f64::NAN, 2.0], 1.0).unwrap_err();
        assert!(e.to_string().contains("sample 1"), "{e}");
        let e = trace_schedule(&[1.0, 2.0, f64::INFINITY], 1.0).unwrap_err();
        assert!(e.to_string().contains("sample 2"), "{e}");
        for bad in [0.0, -2.0, f64::NAN, f64::INFINITY] {
            let e = trace_schedule(&[1.0], bad).unwrap_err();
            assert!(e.to_string().contains("--trace-speed"), "{e}");
        }
    }
}
