//! Load sweeps: one run split into stages of rising load (`--concurrency 1,2,4-32`, several
//! rates), each summarised, then a verdict on where the server saturates. Pure logic; printing
//! goes to a caller-given writer.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// More stages than this is a typo (`1-100000:1`), not a sweep anyone can wait for.
const MAX_STAGES: usize = 10_000;

/// Parses `--concurrency 1,2,4-32`: comma-separated items, each `n`, `a-b` (doubling from a,
/// with b always included: `3-20` is 3, 6, 12, 20) or `a-b:s` (steps of s, b appended when the
/// last step misses it). Duplicates are dropped, keeping the first occurrence, so the stages run
/// in the order written.
pub fn parse_concurrency_list(s: &str) -> anyhow::Result<Vec<usize>> {
    let mut out: Vec<usize> = Vec::new();
    let mut seen = HashSet::new();
    for item in s.split(',') {
        let item = item.trim();
        ensure!(
            !item.is_empty(),
            "--concurrency {s:?} has an empty item (write values like 1,2,4-32)"
        );
        for value in expand_item(item)? {
            if seen.insert(value) {
                out.push(value);
            }
        }
        ensure!(
            out.len() <= MAX_STAGES,
            "--concurrency item {item:?} makes more than {MAX_STAGES} stages"
        );
    }
    Ok(out)
}

fn expand_item(item: &str) -> anyhow::Result<Vec<usize>> {
    let Some((from, rest)) = item.split_once('-') else {
        return Ok(vec![positive(item, item)?]);
    };
    let (to, step) = match rest.split_once(':') {
        Some((to, step)) => (to, Some(positive(step, item)?)),
        None => (rest, None),
    };
    let (from, to) = (positive(from, item)?, positive(to, item)?);
    ensure!(
        from <= to,
        "--concurrency item {item:?} is a reversed range ({from} > {to})"
    );
    let mut values = Vec::new();
    let mut v = from;
    while v < to {
        values.push(v);
        ensure!(
            values.len() <= MAX_STAGES,
            "--concurrency item {item:?} makes more than {MAX_STAGES} stages"
        );
        v = match step {
            Some(step) => v.saturating_add(step),
            None => v.saturating_mul(2),
        };
    }
    values.push(to);
    Ok(values)
}

/// A concurrency of at least 1, or an error naming the item it came from.
fn positive(text: &str, item: &str) -> anyhow::Result<usize> {
    let n: usize = text.trim().parse().with_context(|| {
        format!("--concurrency item {item:?}: {text:?} is not a whole number (write values like 1,2,4-32 or 8-64:8)")
    })?;
    ensure!(n > 0, "--concurrency item {item:?}: 0 is not a concurrency");
    Ok(n)
}

/// Parses `--duration`: a bare number of seconds (`60`, `1.5`) or numbers with units `h`, `m`,
/// `s`, `ms`, possibly combined (`1m30s`), so run lengths are written as people say them.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let text = s.trim();
    let bad =
        || format!("--duration {s:?}: write a time like 60, 90s, 1.5s, 500ms, 2m, 1h or 1m30s");
    ensure!(!text.is_empty(), "{}", bad());
    let seconds = if let Ok(v) = text.parse::<f64>() {
        ensure!(
            text.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
            "{}",
            bad()
        );
        v
    } else {
        let mut total = 0.0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let unit_len = rest[digits..]
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len() - digits);
            let number: f64 = rest[..digits].parse().ok().with_context(bad)?;
            let scale = match &rest[digits..digits + unit_len] {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 1e-3,
                _ => bail!("{}", bad()),
            };
            total += number * scale;
            rest = &rest[digits + unit_len..];
        }
        total
    };
    ensure!(seconds > 0.0, "--duration {s:?} must be longer than zero");
    Duration::try_from_secs_f64(seconds).with_context(|| format!("--duration {s:?} is too long"))
}

/// What the stage table and the verdict need of one finished stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    /// The caller's name for the stage, carried into the JSON report.
    #[serde(default)]
    pub label: String,
    /// The stage's concurrency cap, if it had one.
    pub concurrency: Option<usize>,
    /// The stage's request rate; `f64::INFINITY` (written `"inf"` as vLLM does) for no limit.
    #[serde(
        serialize_with = "number_or_inf",
        deserialize_with = "number_or_inf_de",
        default = "unlimited"
    )]
    pub request_rate: f64,
    /// Which repetition of this load the stage is (1-based).
    #[serde(default = "first_round")]
    pub round: u32,
    pub completed: usize,
    pub failed: usize,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub e2el_p50_ms: f64,
    pub e2el_p95_ms: f64,
    pub e2el_p99_ms: f64,
}

impl StageSummary {
    /// Failed requests as a fraction of all finished ones (0 when none finished), since
    /// overload shows as errors as well as latency.
    pub fn error_rate(&self) -> f64 {
        let total = self.completed + self.failed;
        if total == 0 {
            0.0
        } else {
            self.failed as f64 / total as f64
        }
    }
}

fn number_or_inf<S: Serializer>(v: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        serializer.serialize_f64(*v)
    } else if v.is_nan() {
        serializer.serialize_str("nan")
    } else if *v > 0.0 {
        serializer.serialize_str("inf")
    } else {
        serializer.serialize_str("-inf")
    }
}

/// Reads what [`number_or_inf`] writes (and plain numbers).
fn number_or_inf_de<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| serde::de::Error::custom("not a rate")),
        serde_json::Value::String(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("not a rate: {s:?}"))),
        other => Err(serde::de::Error::custom(format!("not a rate: {other}"))),
    }
}

fn unlimited() -> f64 {
    f64::INFINITY
}

fn first_round() -> u32 {
    1
}

/// Where more load stopped buying throughput and started costing latency or errors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Saturation {
    /// Index of the last stage whose load still raised throughput.
    pub knee: usize,
    /// Index of the first stage after it that did not.
    pub flat: usize,
    /// Output throughput of `flat` relative to `knee` (0.02 = 2% more).
    pub throughput_gain: f64,
    /// p99 E2EL of `flat` relative to `knee` (0.5 = 50% slower).
    pub p99_e2el_rise: f64,
    /// Error rate of `flat` minus that of `knee` (0.01 = one percentage point).
    pub error_rate_rise: f64,
}

/// The sweep's answer: which load to run at, and where the server stops keeping up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepVerdict {
    /// Index of the stage with the highest output throughput (the first of equals).
    pub best: Option<usize>,
    pub saturation: Option<Saturation>,
}

/// Throughput must grow by at least this much over the best so far to count as growth.
const MIN_GAIN: f64 = 0.05;
/// A p99 E2EL rise above this, against the previous stage, means requests queue up.
const P99_RISE: f64 = 0.10;
/// An error-rate rise above this (absolute), against the previous stage, means overload.
const ERROR_RISE: f64 = 0.01;

/// Judges a sweep whose stages are in order of increasing load. Saturation is the first stage
/// k > 0 whose output throughput is less than 5% above the best of the stages before it while
/// its p99 E2EL rose more than 10% or its error rate more than 1 percentage point against stage
/// k − 1; the knee is the best stage before k. Stalling throughput alone (noise, a plateau at
/// flat latency) is not saturation: only paying for it is.
pub fn verdict(stages: &[StageSummary]) -> SweepVerdict {
    let best = best_index(stages);
    let mut saturation = None;
    for k in 1..stages.len() {
        let Some(knee) = best_index(&stages[..k]) else {
            continue;
        };
        let (stage, prev, top) = (&stages[k], &stages[k - 1], &stages[knee]);
        let stalled = stage.output_throughput < top.output_throughput * (1.0 + MIN_GAIN);
        let slower = relative(stage.e2el_p99_ms, prev.e2el_p99_ms) > P99_RISE;
        let failing = stage.error_rate() - prev.error_rate() > ERROR_RISE;
        if stalled && (slower || failing) {
            saturation = Some(Saturation {
                knee,
                flat: k,
                throughput_gain: relative(stage.output_throughput, top.output_throughput),
                p99_e2el_rise: relative(stage.e2el_p99_ms, top.e2el_p99_ms),
                error_rate_rise: stage.error_rate() - top.error_rate(),
            });
            break;
        }
    }
    SweepVerdict { best, saturation }
}

/// The first stage with the highest output throughput; NaN never wins.
fn best_index(stages: &[StageSummary]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, s) in stages.iter().enumerate() {
        if s.output_throughput.is_nan() {
            continue;
        }
        if best.is_none_or(|b| s.output_throughput > stages[b].output_throughput) {
            best = Some(i);
        }
    }
    best
}

/// `new / old − 1`; a rise from zero is infinite, zero to zero is no change.
fn relative(new: f64, old: f64) -> f64 {
    if old > 0.0 {
        new / old - 1.0
    } else if new > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_lists_expand_ranges() {
        let p = |s: &str| parse_concurrency_list(s).unwrap();
        assert_eq!(p("1,2,4-32"), [1, 2, 4, 8, 16, 32]);
        assert_eq!(p("3-20"), [3, 6, 12, 20]);
        assert_eq!(p("8-64:8"), [8, 16, 24, 32, 40, 48, 56, 64]);
        assert_eq!(p("1-10:4"), [1, 5, 9, 10]);
        assert_eq!(p("5-5"), [5]);
        assert_eq!(p(" 16 , 1-4 , 2"), [16, 1, 2, 4]);
        assert_eq!(p("7"), [7]);
    }

    #[test]
    fn concurrency_list_errors_name_the_item() {
        let e = |s: &str| parse_concurrency_list(s).unwrap_err().to_string();
        assert!(e("1,0,4").contains("\"0\""), "{}", e("1,0,4"));
        assert!(e("32-4").contains("\"32-4\""), "{}", e("32-4"));
        assert!(e("32-4").contains("reversed"), "{}", e("32-4"));
        assert!(e("1,x").contains("\"x\""), "{}", e("1,x"));
        assert!(e("4-8:0").contains("\"4-8:0\""), "{}", e("4-8:0"));
        assert!(e("0-8").contains("\"0-8\""), "{}", e("0-8"));
        assert!(e("1-").contains("\"1-\""), "{}", e("1-"));
        assert!(e("1,,2").contains("empty"), "{}", e("1,,2"));
        assert!(e("-3").contains("\"-3\""), "{}", e("-3"));
        assert!(e("1-1000000:1").contains("stages"), "{}", e("1-1000000:1"));
    }

    #[test]
    fn durations_read_like_people_write_them() {
        let p = |s: &str| parse_duration(s).unwrap();
        assert_eq!(p("60"), Duration::from_secs(60));
        assert_eq!(p("60s"), Duration::from_secs(60));
        assert_eq!(p("1.5s"), Duration::from_millis(1500));
        assert_eq!(p("0.25"), Duration::from_millis(250));
        assert_eq!(p("500ms"), Duration::from_millis(500));
        assert_eq!(p("2m"), Duration::from_secs(120));
        assert_eq!(p("1h"), Duration::from_secs(3600));
        assert_eq!(p("1m30s"), Duration::from_secs(90));
        assert_eq!(p("1h2m3s4ms"), Duration::from_millis(3_723_004));
        for bad in [
            "", "abc", "10x", "-5", "5 s", "1.2.3s", "s", "0", "0s", "inf", "NaN", "1e3", "m30",
            "1d",
        ] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    fn stage(concurrency: usize, tok_s: f64, p99: f64, failed: usize) -> StageSummary {
        StageSummary {
            label: format!("c{concurrency}"),
            concurrency: Some(concurrency),
            request_rate: f64::INFINITY,
            round: 1,
            completed: 100 - failed,
            failed,
            request_throughput: tok_s / 100.0,
            output_throughput: tok_s,
            ttft_p50_ms: p99 / 10.0,
            ttft_p99_ms: p99 / 5.0,
            e2el_p50_ms: p99 / 2.0,
            e2el_p95_ms: p99 * 0.9,
            e2el_p99_ms: p99,
        }
    }

    fn saturating() -> Vec<StageSummary> {
        vec![
            stage(1, 100.0, 1000.0, 0),
            stage(2, 190.0, 1050.0, 0),
            stage(4, 360.0, 1100.0, 0),
            stage(8, 370.0, 2000.0, 0),
            stage(16, 380.0, 4000.0, 3),
        ]
    }

    #[test]
    fn a_saturating_sweep_has_a_knee() {
        let v = verdict(&saturating());
        assert_eq!(v.best, Some(4));
        let sat = v.saturation.expect("saturation");
        assert_eq!((sat.knee, sat.flat), (2, 3));
        assert!((sat.throughput_gain - (370.0 / 360.0 - 1.0)).abs() < 1e-12);
        assert!((sat.p99_e2el_rise - (2000.0 / 1100.0 - 1.0)).abs() < 1e-12);
        assert_eq!(sat.error_rate_rise, 0.0);
    }

    #[test]
    fn errors_alone_mark_saturation() {
        let stages = vec![
            stage(1, 100.0, 1000.0, 0),
            stage(2, 200.0, 1000.0, 0),
            stage(4, 201.0, 1000.0, 5),
        ];
        let sat = verdict(&stages).saturation.expect("saturation");
        assert_eq!((sat.knee, sat.flat), (1, 2));
        assert!((sat.error_rate_rise - 0.05).abs() < 1e-12);
    }

    #[test]
    fn growth_or_cheap_plateaus_are_not_saturation() {
        let growing = vec![
            stage(1, 100.0, 1000.0, 0),
            stage(2, 200.0, 1500.0, 0),
            stage(4, 400.0, 3000.0, 0),
        ];
        let v = verdict(&growing);
        assert_eq!(v.best, Some(2));
        assert_eq!(v.saturation, None);

        // Flat throughput at flat latency and no new errors: nothing is paid for the load.
        let plateau = vec![stage(1, 100.0, 1000.0, 0), stage(2, 101.0, 1050.0, 1)];
        assert_eq!(verdict(&plateau).saturation, None);

        let empty = verdict(&[]);
        assert_eq!(empty.best, None);
        assert_eq!(empty.saturation, None);
        assert_eq!(verdict(&growing[..1]).saturation, None);
    }

    #[test]
    fn the_knee_is_the_best_stage_before_the_stall() {
        // Stage 2 dips without a latency rise; stage 3 stalls against stage 1, the best so far.
        let stages = vec![
            stage(1, 100.0, 1000.0, 0),
            stage(2, 300.0, 1000.0, 0),
            stage(4, 280.0, 1000.0, 0),
            stage(8, 310.0, 1500.0, 0),
        ];
        let sat = verdict(&stages).saturation.expect("saturation");
        assert_eq!((sat.knee, sat.flat), (1, 3));
        assert!((sat.p99_e2el_rise - 0.5).abs() < 1e-12);
    }

    #[test]
    fn error_rate_counts_failures_among_finished() {
        let mut s = stage(1, 1.0, 1.0, 25);
        assert_eq!(s.error_rate(), 0.25);
        s.completed = 0;
        s.failed = 0;
        assert_eq!(s.error_rate(), 0.0);
    }

    #[test]
    fn summaries_serialize_an_infinite_rate_as_inf() {
        let s = stage(4, 10.0, 100.0, 0);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["request_rate"], "inf");
        assert_eq!(v["concurrency"], 4);
        let finite = StageSummary {
            request_rate: 2.5,
            ..s
        };
        assert_eq!(serde_json::to_value(&finite).unwrap()["request_rate"], 2.5);
        let verdict = serde_json::to_value(verdict(&saturating())).unwrap();
        assert_eq!(verdict["saturation"]["knee"], 2);
    }
}
