//! "What is the highest load that still meets my SLOs?" (`--search rate|concurrency --slo
//! p99_ttft_ms<=500,p99_tpot_ms<=50`): the SLOs, the test of a stage against them, the watch
//! that ends a stage as soon as it can no longer meet them, and the search itself — doubling the
//! load until a stage misses (bracketing), then bisecting between the best passing and the first
//! failing load.
//!
//! A failed request counts as missing every latency SLO (an error is not a fast answer), so a
//! server that sheds load by failing requests does not pass by it.

use std::fmt;

use serde::Serialize;

use crate::records::RequestRecord;

/// The statistic an SLO bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Statistic {
    Mean,
    /// A percentile in (0, 100]; `median` is 50.
    Percentile(f64),
}

/// One SLO: `STAT_METRIC_ms<=LIMIT`, e.g. `p99_ttft_ms<=500`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slo {
    pub statistic: Statistic,
    /// `ttft`, `tpot`, `itl`, `e2el` or `ttfo`.
    pub metric: String,
    pub limit_ms: f64,
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.statistic {
            Statistic::Mean => write!(f, "mean_{}_ms<={}", self.metric, self.limit_ms),
            Statistic::Percentile(50.0) => {
                write!(f, "median_{}_ms<={}", self.metric, self.limit_ms)
            }
            Statistic::Percentile(p) => write!(f, "p{p}_{}_ms<={}", self.metric, self.limit_ms),
        }
    }
}

/// Metrics an SLO may bound.
pub const SEARCH_METRICS: [&str; 5] = ["ttft", "tpot", "itl", "e2el", "ttfo"];

/// Parses `--slo p99_ttft_ms<=500,mean_tpot_ms<=50`: comma-separated items, each
/// `mean|median|pNN` `_` metric `_ms<=` milliseconds; errors name the item.
pub fn parse_slos(text: &str) -> anyhow::Result<Vec<Slo>> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, limit) = item.split_once("<=").ok_or_else(|| {
            anyhow::anyhow!("--slo {item:?}: expected STAT_METRIC_ms<=MS, e.g. p99_ttft_ms<=500")
        })?;
        let limit_ms: f64 = limit.trim().parse().map_err(|_| {
            anyhow::anyhow!("--slo {item:?}: {limit:?} is not a number of milliseconds")
        })?;
        anyhow::ensure!(
            limit_ms.is_finite() && limit_ms > 0.0,
            "--slo {item:?}: the limit must be a positive number of milliseconds"
        );
        let key = key.trim();
        let body = key.strip_suffix("_ms").ok_or_else(|| {
            anyhow::anyhow!("--slo {item:?}: the name must end in _ms (p99_ttft_ms)")
        })?;
        let (stat, metric) = body.split_once('_').ok_or_else(|| {
            anyhow::anyhow!("--slo {item:?}: expected STAT_METRIC_ms, e.g. p99_ttft_ms")
        })?;
        anyhow::ensure!(
            SEARCH_METRICS.contains(&metric),
            "--slo {item:?}: unknown metric {metric:?} (use {})",
            SEARCH_METRICS.join(", ")
        );
        let statistic = match stat {
            "mean" | "avg" => Statistic::Mean,
            "median" => Statistic::Percentile(50.0),
            p => {
                let v: f64 = p
                    .strip_prefix('p')
                    .and_then(|v| v.parse().ok())
                    .filter(|v: &f64| *v > 0.0 && *v <= 100.0)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--slo {item:?}: unknown statistic {stat:?} (use mean, median or p50..p100)"
                        )
                    })?;
                Statistic::Percentile(v)
            }
        };
        out.push(Slo {
            statistic,
            metric: metric.to_string(),
            limit_ms,
        });
    }
    anyhow::ensure!(!out.is_empty(), "--slo is empty (e.g. p99_ttft_ms<=500)");
    Ok(out)
}

/// One request's value of `metric` in ms: `None` when it has none (a TPOT of one token),
/// infinity when it failed.
fn value_ms(r: &RequestRecord, metric: &str) -> Option<f64> {
    if !r.success {
        return Some(f64::INFINITY);
    }
    let ms = |s: f64| s * 1e3;
    match metric {
        "ttft" => r.ttft_s().map(ms),
        "ttfo" => r.ttfo_s().map(ms),
        "e2el" => Some(ms(r.e2el_s())),
        "tpot" => r.tpot_s().map(ms),
        "itl" => r.itls_s().map(ms).reduce(f64::max),
        _ => None,
    }
}

/// How one stage fared against one SLO.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloCheck {
    pub slo: String,
    /// The stage's value (infinite when failures decide it; `None` when nothing measured it).
    pub value_ms: Option<f64>,
    pub met: bool,
}

/// Cut off by the client (Ctrl-C, a stage stopped early, `--cancel-rate`): not the server's
/// failure, so not counted against an SLO either way.
fn cut_by_client(r: &RequestRecord) -> bool {
    r.error.as_ref().is_some_and(|e| e.kind == "cancelled")
}

/// The measured records against every SLO. For `itl`, a request's value is its longest gap.
/// Requests the client cut off are left out.
pub fn check(records: &[RequestRecord], slos: &[Slo]) -> Vec<SloCheck> {
    slos.iter()
        .map(|slo| {
            let mut values: Vec<f64> = records
                .iter()
                .filter(|r| !r.warmup && !cut_by_client(r))
                .filter_map(|r| value_ms(r, &slo.metric))
                .collect();
            let value = if values.is_empty() {
                None
            } else {
                Some(match slo.statistic {
                    Statistic::Mean => values.iter().sum::<f64>() / values.len() as f64,
                    Statistic::Percentile(p) => {
                        values.sort_by(f64::total_cmp);
                        percentile_inf(&values, p)
                    }
                })
            };
            SloCheck {
                slo: slo.to_string(),
                value_ms: value,
                met: value.is_some_and(|v| v <= slo.limit_ms),
            }
        })
        .collect()
}

/// numpy's linear percentile over sorted values that may end in infinities.
fn percentile_inf(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = rank - lo as f64;
    if frac == 0.0 || sorted[lo] == sorted[hi] {
        sorted[lo]
    } else {
        sorted[lo] + (sorted[hi] - sorted[lo]) * frac
    }
}

/// Ends a stage once it can no longer meet an SLO. Percentiles: with `planned` requests, more
/// than `(1 − p/100) × (planned − 1)` values above the limit put the p-th percentile above it
/// whatever the rest do. Means: values are never negative, so once their sum passes
/// `limit × planned` the mean over at most `planned` values is above the limit.
#[derive(Debug, Clone)]
pub struct SloWatch {
    slos: Vec<Slo>,
    planned: usize,
    misses: Vec<usize>,
    sums: Vec<f64>,
}

impl SloWatch {
    pub fn new(slos: Vec<Slo>, planned: usize) -> Self {
        let misses = vec![0; slos.len()];
        let sums = vec![0.0; slos.len()];
        SloWatch {
            slos,
            planned,
            misses,
            sums,
        }
    }

    /// Counts `r`; returns the SLO the stage can no longer meet, the first time it happens.
    pub fn observe(&mut self, r: &RequestRecord) -> Option<String> {
        if r.warmup || self.planned < 2 || cut_by_client(r) {
            return None;
        }
        for ((slo, misses), sum) in self.slos.iter().zip(&mut self.misses).zip(&mut self.sums) {
            let Statistic::Percentile(p) = slo.statistic else {
                *sum += value_ms(r, &slo.metric).unwrap_or(0.0);
                if *sum > slo.limit_ms * self.planned as f64 {
                    return Some(format!(
                        "{slo} cannot be met any more: the values so far already sum to more \
                         than the limit times the {} requests planned",
                        self.planned
                    ));
                }
                continue;
            };
            if !value_ms(r, &slo.metric).is_some_and(|v| v > slo.limit_ms) {
                continue;
            }
            *misses += 1;
            // Values sorted ascending: the p-th percentile interpolates between ranks ⌊k⌋ and
            // ⌈k⌉, k = p/100·(n−1); once the misses reach past rank ⌊k⌋ both are misses.
            let k = (p / 100.0 * (self.planned - 1) as f64).floor() as usize;
            if *misses == self.planned - k {
                return Some(format!(
                    "{slo} cannot be met any more: {misses} of {} requests missed it",
                    self.planned
                ));
            }
        }
        None
    }
}

/// What the search varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchKind {
    Rate,
    Concurrency,
}

/// The search's state: the best load that met every SLO and the lowest that did not.
#[derive(Debug, Clone, Serialize)]
pub struct Search {
    pub kind: SearchKind,
    /// Highest load that met every SLO so far.
    pub best_pass: Option<f64>,
    /// Lowest load that missed one.
    pub first_fail: Option<f64>,
    /// Stop bisecting when the bracket is this narrow relative to its low end (rate).
    pub tolerance: f64,
    /// The lowest load worth trying (rate) before giving up.
    pub floor: f64,
    /// The highest load a stage can apply (a concurrency above the stage's request count is
    /// the same load); the search stops there.
    pub ceiling: Option<f64>,
}

impl Search {
    pub fn new(kind: SearchKind, tolerance: f64) -> Self {
        Search {
            kind,
            best_pass: None,
            first_fail: None,
            tolerance,
            floor: match kind {
                SearchKind::Rate => 0.01,
                SearchKind::Concurrency => 1.0,
            },
            ceiling: None,
        }
    }

    /// Records that `load` met every SLO (`met`) or not.
    pub fn record(&mut self, load: f64, met: bool) {
        if met {
            self.best_pass = Some(self.best_pass.map_or(load, |b| b.max(load)));
        } else {
            self.first_fail = Some(self.first_fail.map_or(load, |f| f.min(load)));
        }
    }

    /// The next load to try after `last`, or `None` when the answer is known: doubling while
    /// every stage passes, halving while every stage fails, then bisecting the bracket until it
    /// is narrower than the tolerance (rate) or adjacent (concurrency).
    pub fn next(&self, last: f64) -> Option<f64> {
        let round = |v: f64| match self.kind {
            SearchKind::Rate => (v * 1000.0).round() / 1000.0,
            SearchKind::Concurrency => v.round(),
        };
        match (self.best_pass, self.first_fail) {
            (Some(_), None) => match self.ceiling {
                Some(top) if last >= top => None,
                Some(top) => Some(round(last * 2.0).min(top)),
                None => Some(round(last * 2.0)),
            },
            (None, Some(fail)) => {
                let half = round(fail / 2.0);
                (half >= self.floor && half < fail).then_some(half)
            }
            (Some(pass), Some(fail)) => {
                let narrow = match self.kind {
                    SearchKind::Rate => fail - pass <= self.tolerance * pass,
                    SearchKind::Concurrency => fail - pass <= 1.0,
                };
                if narrow {
                    return None;
                }
                let mid = round((pass + fail) / 2.0);
                (mid > pass && mid < fail).then_some(mid)
            }
            (None, None) => Some(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ttft_ms: u64, success: bool) -> RequestRecord {
        RequestRecord {
            sent_ns: 0,
            delta_ns: vec![ttft_ms * 1_000_000, ttft_ms * 1_000_000 + 5_000_000],
            end_ns: ttft_ms * 1_000_000 + 5_000_000,
            output_tokens: 2,
            success,
            ..RequestRecord::default()
        }
    }

    #[test]
    fn slos_parse_and_name_bad_items() {
        let slos = parse_slos("p99_ttft_ms<=500, mean_tpot_ms<=50,median_e2el_ms<=900").unwrap();
        assert_eq!(slos.len(), 3);
        assert_eq!(slos[0].statistic, Statistic::Percentile(99.0));
        assert_eq!(slos[1].statistic, Statistic::Mean);
        assert_eq!(slos[2].to_string(), "median_e2el_ms<=900");
        for bad in [
            "p99_ttft<=5",
            "p99_foo_ms<=5",
            "q9_ttft_ms<=5",
            "p99_ttft_ms<=x",
            "p99_ttft_ms",
        ] {
            let e = parse_slos(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn failures_count_as_misses() {
        let slos = parse_slos("p50_ttft_ms<=100").unwrap();
        let mut records: Vec<RequestRecord> = (0..10).map(|_| request(20, true)).collect();
        assert!(check(&records, &slos)[0].met);
        for r in records.iter_mut().take(6) {
            r.success = false;
        }
        let c = &check(&records, &slos)[0];
        assert!(!c.met && c.value_ms == Some(f64::INFINITY), "{c:?}");
    }

    #[test]
    fn the_watch_stops_when_the_percentile_is_lost() {
        let slos = parse_slos("p90_ttft_ms<=100").unwrap();
        // 21 planned: p90 is rank 18 of 0..20, so a third miss (ranks 18..20) settles it.
        let mut watch = SloWatch::new(slos.clone(), 21);
        assert!(watch.observe(&request(500, true)).is_none());
        assert!(watch.observe(&request(20, true)).is_none());
        assert!(watch.observe(&request(500, false)).is_none());
        let why = watch.observe(&request(500, true)).unwrap();
        assert!(why.contains("3 of 21"), "{why}");
        // And indeed: 18 fast and 3 slow give a p90 over the limit.
        let mut records: Vec<RequestRecord> = (0..18).map(|_| request(20, true)).collect();
        records.extend((0..3).map(|_| request(500, true)));
        assert!(!check(&records, &slos)[0].met);
        // Two slow ones still pass.
        records.pop();
        records.push(request(20, true));
        assert!(check(&records, &slos)[0].met);
    }

    #[test]
    fn the_watch_stops_when_the_mean_is_lost() {
        let slos = parse_slos("mean_ttft_ms<=100").unwrap();
        // 10 planned, limit 100: a total above 1000 ms cannot average 100 or less.
        let mut watch = SloWatch::new(slos, 10);
        for _ in 0..4 {
            assert!(watch.observe(&request(240, true)).is_none());
        }
        let why = watch.observe(&request(100, true)).unwrap();
        assert!(why.contains("mean_ttft_ms<=100"), "{why}");
        // A failure is an infinite latency: the mean is lost at once.
        let mut strict = SloWatch::new(parse_slos("mean_e2el_ms<=100").unwrap(), 10);
        assert!(strict.observe(&request(5, false)).is_some());
    }

    #[test]
    fn the_search_brackets_then_bisects() {
        // The true capacity is 37 req/s.
        let mut s = Search::new(SearchKind::Rate, 0.05);
        let mut load = 1.0;
        let mut tried = Vec::new();
        loop {
            tried.push(load);
            s.record(load, load <= 37.0);
            match s.next(load) {
                Some(next) => load = next,
                None => break,
            }
            assert!(tried.len() < 30);
        }
        let best = s.best_pass.unwrap();
        assert!(
            (37.0 / 1.05..=37.0).contains(&best),
            "{best} after {tried:?}"
        );
        let mut c = Search::new(SearchKind::Concurrency, 0.0);
        let mut load = 1.0;
        loop {
            c.record(load, load <= 12.0);
            match c.next(load) {
                Some(next) => load = next,
                None => break,
            }
        }
        assert_eq!(c.best_pass, Some(12.0));
        assert_eq!(c.first_fail, Some(13.0));
    }

    #[test]
    fn the_search_stops_at_its_ceiling() {
        let mut s = Search::new(SearchKind::Concurrency, 0.0);
        s.ceiling = Some(12.0);
        let mut load = 1.0;
        let mut tried = vec![load];
        s.record(load, true);
        while let Some(next) = s.next(load) {
            load = next;
            tried.push(load);
            s.record(load, true);
        }
        assert_eq!(tried, [1.0, 2.0, 4.0, 8.0, 12.0]);
    }

    #[test]
    fn a_load_too_high_from_the_start_is_halved() {
        let mut s = Search::new(SearchKind::Concurrency, 0.0);
        s.record(64.0, false);
        assert_eq!(s.next(64.0), Some(32.0));
        let mut never = Search::new(SearchKind::Concurrency, 0.0);
        never.record(1.0, false);
        assert_eq!(never.next(1.0), None);
    }
}
