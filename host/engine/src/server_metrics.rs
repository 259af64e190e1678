//! The server's own view of a run: its Prometheus endpoint scraped before, during (every
//! `--server-metrics-interval`) and after each stage, on a connection of its own.
//!
//! Gauges become time series, counters become deltas, and the names vLLM, SGLang, TGI and
//! LMDeploy use for running and waiting requests, KV-cache use and prefix-cache hits are read
//! into one summary, so a report can say "the server queued requests" or "the prefix cache hit
//! 48 %" whatever served them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;

use crate::transport::HttpClient;

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_SCRAPE_BYTES: usize = 32 << 20;

/// Metric names per concept, in the order they are tried (see protocols/metrics.md).
const RUNNING: [&str; 5] = [
    "vllm:num_requests_running",
    "sglang:num_running_reqs",
    "tgi_batch_current_size",
    "lmdeploy:num_requests_running",
    "llamacpp:requests_processing",
];
const WAITING: [&str; 5] = [
    "vllm:num_requests_waiting",
    "sglang:num_queue_reqs",
    "tgi_queue_size",
    "lmdeploy:num_requests_waiting",
    "llamacpp:requests_deferred",
];
const KV_CACHE_USAGE: [&str; 5] = [
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "sglang:token_usage",
    "lmdeploy:gpu_cache_usage_perc",
    "llamacpp:kv_cache_usage_ratio",
];
/// Counter pairs (hits, queries) whose deltas give the hit rate over the stage.
const PREFIX_COUNTERS: [(&str, &str); 3] = [
    (
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_queries_total",
    ),
    (
        "vllm:gpu_prefix_cache_hits_total",
        "vllm:gpu_prefix_cache_queries_total",
    ),
    (
        "lmdeploy:cached_tokens_total",
        "lmdeploy:prompt_tokens_total",
    ),
];
/// Servers' own running estimates, used when no counters exist.
const PREFIX_GAUGES: [&str; 3] = [
    "sglang:cache_hit_rate",
    "lmdeploy:prefix_cache_hit_rate",
    "vllm:gpu_prefix_cache_hit_rate",
];
const TOKEN_COUNTERS: [&str; 8] = [
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "sglang:prompt_tokens_total",
    "sglang:generation_tokens_total",
    "lmdeploy:prompt_tokens_total",
    "lmdeploy:generation_tokens_total",
    "vllm:num_preemptions_total",
    "vllm:request_success_total",
];

/// KV-cache transfer histograms of disaggregated serving (prefill and decode on different
/// workers): base name, the factor to the unit shown, and that unit. vLLM's NIXL connector and
/// SGLang's disaggregation name them so; any other `*kv_transfer*` or `*nixl*` histogram is
/// kept too, in its own unit.
const KV_TRANSFER_HISTOGRAMS: [(&str, f64, &str); 8] = [
    ("vllm:nixl_xfer_time_seconds", 1e3, "ms"),
    ("vllm:nixl_post_time_seconds", 1e3, "ms"),
    ("vllm:nixl_bytes_transferred", 1.0 / (1 << 20) as f64, "MiB"),
    ("sglang:kv_transfer_latency_ms", 1.0, "ms"),
    ("sglang:kv_transfer_bootstrap_ms", 1.0, "ms"),
    ("sglang:kv_transfer_alloc_ms", 1.0, "ms"),
    ("sglang:kv_transfer_total_mb", 1.0, "MB"),
    ("sglang:kv_transfer_speed_gb_s", 1.0, "GB/s"),
];

/// Whether `name` is part of a KV-transfer metric (a histogram's sum or count, a counter).
fn is_kv_transfer(name: &str) -> bool {
    (name.contains("kv_transfer") || name.contains("nixl"))
        && (name.ends_with("_sum") || name.ends_with("_count") || name.ends_with("_total"))
}

/// Every known name, the default selection.
fn known_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = RUNNING
        .iter()
        .chain(&WAITING)
        .chain(&KV_CACHE_USAGE)
        .chain(&PREFIX_GAUGES)
        .chain(&TOKEN_COUNTERS)
        .copied()
        .collect();
    for (hits, queries) in PREFIX_COUNTERS {
        names.push(hits);
        names.push(queries);
    }
    names.sort_unstable();
    names.dedup();
    names
}

/// Which metrics to keep.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// The running/waiting/KV-cache/prefix-cache/token names of the servers llmb knows.
    Known,
    /// Every metric the endpoint serves (histogram buckets excluded).
    All,
    Names(Vec<String>),
}

impl Selection {
    /// `known` (default), `all`, or a comma-separated list of names.
    pub fn parse(spec: Option<&str>) -> Self {
        match spec.map(str::trim) {
            None | Some("") | Some("known") => Selection::Known,
            Some("all") => Selection::All,
            Some(list) => Selection::Names(
                list.split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect(),
            ),
        }
    }

    fn keeps(&self, name: &str) -> bool {
        match self {
            Selection::All => !name.ends_with("_bucket") && !name.ends_with("_created"),
            Selection::Known => known_names().contains(&name) || is_kv_transfer(name),
            Selection::Names(names) => names.iter().any(|n| n == name),
        }
    }
}

/// One scrape: metric name to value, summed over label sets (engines, ranks); fractions
/// (`*_perc`, `*usage*`, `*_ratio`, `*_rate`) averaged instead.
pub type Scrape = BTreeMap<String, f64>;

/// Parses the Prometheus text exposition format, keeping the selected names.
pub fn parse(text: &str, selection: &Selection) -> Scrape {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => continue,
        };
        let value_part = match rest.strip_prefix('{') {
            Some(labels) => match labels.rfind('}') {
                Some(end) => &labels[end + 1..],
                None => continue,
            },
            None => rest,
        };
        let Some(value) = value_part
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if !value.is_finite() || !selection.keeps(name) {
            continue;
        }
        let slot = sums.entry(name.to_string()).or_insert((0.0, 0));
        slot.0 += value;
        slot.1 += 1;
    }
    sums.into_iter()
        .map(|(name, (sum, n))| {
            let v = if is_fraction(&name) {
                sum / n as f64
            } else {
                sum
            };
            (name, v)
        })
        .collect()
}

fn is_fraction(name: &str) -> bool {
    name.ends_with("_perc")
        || name.contains("usage")
        || name.ends_with("_ratio")
        || name.ends_with("_rate")
}

fn is_counter(name: &str) -> bool {
    name.ends_with("_total") || name.ends_with("_count") || name.ends_with("_sum")
}

/// Mean and maximum of a gauge over the stage.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct GaugeSummary {
    pub metric: &'static str,
    pub mean: f64,
    pub max: f64,
}

/// What a report says about the server.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Highlights {
    pub running: Option<GaugeSummary>,
    pub waiting: Option<GaugeSummary>,
    pub kv_cache_usage: Option<GaugeSummary>,
    /// Prefix-cache hits over the stage, 0–1, and where it came from.
    pub prefix_cache_hit_rate: Option<(f64, String)>,
    /// KV-cache transfers over the stage (disaggregated prefill/decode), one per histogram.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kv_transfer: Vec<KvTransfer>,
}

/// One KV-transfer histogram over a stage: how many transfers and their mean, from the
/// deltas of its `_count` and `_sum`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KvTransfer {
    /// The histogram's name (without `_sum`/`_count`).
    pub metric: String,
    pub transfers: f64,
    /// Mean per transfer, in `unit`.
    pub mean: f64,
    pub unit: String,
}

/// The KV-transfer histograms whose `_count` grew over the stage.
fn kv_transfers(delta: &Scrape) -> Vec<KvTransfer> {
    delta
        .iter()
        .filter_map(|(name, count)| {
            let base = name.strip_suffix("_count")?;
            if !is_kv_transfer(name) || *count <= 0.0 {
                return None;
            }
            let sum = delta.get(&format!("{base}_sum"))?;
            let (scale, unit) = KV_TRANSFER_HISTOGRAMS
                .iter()
                .find(|(known, _, _)| *known == base)
                .map(|(_, scale, unit)| (*scale, unit.to_string()))
                .unwrap_or_else(|| match base {
                    b if b.ends_with("_seconds") => (1e3, "ms".into()),
                    b if b.ends_with("_ms") => (1.0, "ms".into()),
                    _ => (1.0, String::new()),
                });
            Some(KvTransfer {
                metric: base.to_string(),
                transfers: *count,
                mean: sum / count * scale,
                unit,
            })
        })
        .collect()
}

/// The server's metrics over one stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerMetrics {
    pub url: String,
    pub interval_s: f64,
    /// Metric names seen.
    pub names: Vec<String>,
    pub start: Scrape,
    pub end: Scrape,
    /// `end − start` for counters.
    pub delta: Scrape,
    /// `(seconds since the first scrape, value)` for every name, start and end included.
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
    pub highlights: Highlights,
    /// Scrapes that failed (the run goes on without them).
    pub failed_scrapes: usize,
    pub last_error: Option<String>,
}

impl ServerMetrics {
    fn from_scrapes(
        url: String,
        interval: Duration,
        scrapes: Vec<(f64, Scrape)>,
        failed: usize,
        last_error: Option<String>,
    ) -> Self {
        let start = scrapes.first().map(|(_, s)| s.clone()).unwrap_or_default();
        let end = scrapes.last().map(|(_, s)| s.clone()).unwrap_or_default();
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (t, scrape) in &scrapes {
            for (name, v) in scrape {
                series.entry(name.clone()).or_default().push((*t, *v));
            }
        }
        let delta: Scrape = end
            .iter()
            .filter(|(name, _)| is_counter(name))
            .map(|(name, v)| (name.clone(), v - start.get(name).copied().unwrap_or(0.0)))
            .collect();
        let gauge = |names: &[&'static str]| {
            names.iter().find_map(|&metric| {
                let points = series.get(metric)?;
                let values: Vec<f64> = points.iter().map(|(_, v)| *v).collect();
                Some(GaugeSummary {
                    metric,
                    mean: values.iter().sum::<f64>() / values.len() as f64,
                    max: values.iter().copied().fold(f64::MIN, f64::max),
                })
            })
        };
        let prefix = PREFIX_COUNTERS
            .iter()
            .find_map(|(hits, queries)| {
                let q = *delta.get(*queries)?;
                let h = *delta.get(*hits)?;
                (q > 0.0).then(|| (h / q, format!("{hits} / {queries} over the stage")))
            })
            .or_else(|| {
                PREFIX_GAUGES
                    .iter()
                    .find_map(|g| end.get(*g).map(|v| (*v, format!("{g} at the end"))))
            });
        Self {
            url,
            interval_s: interval.as_secs_f64(),
            names: series.keys().cloned().collect(),
            highlights: Highlights {
                running: gauge(&RUNNING),
                waiting: gauge(&WAITING),
                kv_cache_usage: gauge(&KV_CACHE_USAGE),
                prefix_cache_hit_rate: prefix,
                kv_transfer: kv_transfers(&delta),
            },
            start,
            end,
            delta,
            series,
            failed_scrapes: failed,
            last_error,
        }
    }

    /// The console section.
    pub fn print(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(out, "{:-^50}", " Server metrics ")?;
        writeln!(
            out,
            "{:<40} {} ({} scrapes every {} s{})",
            "Scraped:",
            self.url,
            self.series.values().map(Vec::len).max().unwrap_or(0),
            self.interval_s,
            if self.failed_scrapes > 0 {
                format!(
                    ", {} failed: {}",
                    self.failed_scrapes,
                    self.last_error.as_deref().unwrap_or("")
                )
            } else {
                String::new()
            }
        )?;
        let h = &self.highlights;
        for (title, g, scale, unit) in [
            ("Running requests", &h.running, 1.0, ""),
            ("Waiting requests", &h.waiting, 1.0, ""),
            ("KV cache usage", &h.kv_cache_usage, 100.0, " %"),
        ] {
            if let Some(g) = g {
                writeln!(
                    out,
                    "{:<40} mean {:.1}{unit}, max {:.1}{unit} ({})",
                    format!("{title}:"),
                    g.mean * scale,
                    g.max * scale,
                    g.metric
                )?;
            }
        }
        if let Some((rate, source)) = &h.prefix_cache_hit_rate {
            writeln!(
                out,
                "{:<40} {:.1} % ({source})",
                "Prefix cache hit rate:",
                rate * 100.0
            )?;
        }
        for t in &h.kv_transfer {
            writeln!(
                out,
                "{:<40} {} transfers, mean {:.3} {} ({})",
                "KV transfer (disaggregated):", t.transfers, t.mean, t.unit, t.metric
            )?;
        }
        for (name, d) in &self.delta {
            if TOKEN_COUNTERS.contains(&name.as_str()) {
                writeln!(out, "{:<40} +{d}", format!("{name}:"))?;
            }
        }
        if self.names.is_empty() {
            writeln!(out, "no selected metric was found at {}", self.url)?;
        }
        Ok(())
    }
}

/// A scrape loop running beside a stage.
pub struct Scraper {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<ServerMetrics>,
}

impl Scraper {
    /// Scrapes once (the stage's start) and keeps scraping every `interval` until
    /// [`Scraper::finish`]. A server that cannot be scraped at the start is an error, so a wrong
    /// URL is found before the run rather than after.
    pub async fn start(
        client: HttpClient,
        url: String,
        interval: Duration,
        selection: Selection,
    ) -> anyhow::Result<Self> {
        let t0 = Instant::now();
        let first = scrape(&client, &url, &selection)
            .await
            .map_err(|e| anyhow::anyhow!("--server-metrics-url {url}: {e}"))?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut scrapes = vec![(0.0, first)];
            let mut failed = 0;
            let mut last_error = None;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            ticker.tick().await;
            loop {
                let finishing = tokio::select! {
                    _ = ticker.tick() => false,
                    _ = stopped.changed() => true,
                };
                match scrape(&client, &url, &selection).await {
                    Ok(s) => scrapes.push((t0.elapsed().as_secs_f64(), s)),
                    Err(e) => {
                        failed += 1;
                        last_error = Some(e);
                    }
                }
                if finishing {
                    break;
                }
            }
            ServerMetrics::from_scrapes(url, interval, scrapes, failed, last_error)
        });
        Ok(Self { stop, task })
    }

    /// Takes the last scrape and returns everything.
    pub async fn finish(self) -> anyhow::Result<ServerMetrics> {
        let _ = self.stop.send(true);
        Ok(self.task.await?)
    }
}

async fn scrape(client: &HttpClient, url: &str, selection: &Selection) -> Result<Scrape, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let request = hyper::Request::get(uri)
        .body(Full::default())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(SCRAPE_TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("no answer within {SCRAPE_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let status = response.status();
    let body = tokio::time::timeout(
        SCRAPE_TIMEOUT,
        Limited::new(response.into_body(), MAX_SCRAPE_BYTES).collect(),
    )
    .await
    .map_err(|_| format!("the body did not arrive within {SCRAPE_TIMEOUT:?}"))?
    .map_err(|e| format!("cannot read the body: {e}"))?
    .to_bytes();
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    Ok(parse(&String::from_utf8_lossy(&body), selection))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 12.0
vllm:num_requests_running{engine="1",model_name="m"} 3.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 250.0
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 4.0
vllm:request_success_total{finished_reason="stop",model_name="m"} 7
vllm:request_success_total{finished_reason="length",model_name="m"} 3
"#;

    #[test]
    fn label_sets_are_summed_and_fractions_averaged() {
        let s = parse(VLLM, &Selection::Known);
        assert_eq!(s["vllm:num_requests_running"], 15.0);
        assert_eq!(s["vllm:kv_cache_usage_perc"], 0.375);
        assert_eq!(s["vllm:request_success_total"], 10.0);
        assert!(!s.contains_key("vllm:time_to_first_token_seconds_bucket"));
        let all = parse(VLLM, &Selection::All);
        assert!(!all.contains_key("vllm:time_to_first_token_seconds_bucket"));
        let one = parse(VLLM, &Selection::parse(Some("vllm:kv_cache_usage_perc")));
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn kv_transfer_histograms_give_per_stage_means() {
        let before = "vllm:nixl_xfer_time_seconds_sum{engine=\"0\"} 1.5\nvllm:nixl_xfer_time_seconds_count{engine=\"0\"} 100\nvllm:nixl_xfer_time_seconds_bucket{le=\"0.01\"} 90\nsglang:kv_transfer_latency_ms_sum 400\nsglang:kv_transfer_latency_ms_count 50\nsglang:kv_transfer_speed_gb_s_sum 10\nsglang:kv_transfer_speed_gb_s_count 5\n";
        let after = "vllm:nixl_xfer_time_seconds_sum{engine=\"0\"} 2.5\nvllm:nixl_xfer_time_seconds_count{engine=\"0\"} 150\nsglang:kv_transfer_latency_ms_sum 1000\nsglang:kv_transfer_latency_ms_count 80\nsglang:kv_transfer_speed_gb_s_sum 10\nsglang:kv_transfer_speed_gb_s_count 5\n";
        let m = ServerMetrics::from_scrapes(
            "u".into(),
            Duration::from_secs(1),
            vec![
                (0.0, parse(before, &Selection::Known)),
                (1.0, parse(after, &Selection::Known)),
            ],
            0,
            None,
        );
        let kv = &m.highlights.kv_transfer;
        // Transfers during the stage only; an unchanged histogram is left out.
        assert_eq!(kv.len(), 2, "{kv:?}");
        let nixl = kv
            .iter()
            .find(|t| t.metric == "vllm:nixl_xfer_time_seconds")
            .unwrap();
        assert_eq!(nixl.transfers, 50.0);
        assert!((nixl.mean - 20.0).abs() < 1e-9 && nixl.unit == "ms");
        let sglang = kv
            .iter()
            .find(|t| t.metric == "sglang:kv_transfer_latency_ms")
            .unwrap();
        assert!((sglang.mean - 20.0).abs() < 1e-9);
        assert!(!m.names.iter().any(|n| n.ends_with("_bucket")));
        let mut out = Vec::new();
        m.print(&mut out).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("KV transfer (disaggregated):")
        );
    }

    #[test]
    fn highlights_read_each_servers_names() {
        let later = VLLM
            .replace("} 1000.0", "} 3000.0")
            .replace("} 250.0", "} 1250.0")
            .replace("} 12.0", "} 40.0");
        let m = ServerMetrics::from_scrapes(
            "u".into(),
            Duration::from_secs(1),
            vec![
                (0.0, parse(VLLM, &Selection::Known)),
                (1.0, parse(&later, &Selection::Known)),
            ],
            0,
            None,
        );
        let h = &m.highlights;
        assert_eq!(h.running.unwrap().max, 43.0);
        assert_eq!(h.running.unwrap().mean, 29.0);
        // (1250 − 250) / (3000 − 1000) over the stage, not the lifetime 1250 / 3000.
        assert_eq!(h.prefix_cache_hit_rate.as_ref().unwrap().0, 0.5);
        assert_eq!(m.delta["vllm:prefix_cache_queries_total"], 2000.0);
        assert_eq!(m.series["vllm:num_requests_running"].len(), 2);

        let sglang = "sglang:num_running_reqs{model_name=\"m\"} 5\nsglang:num_queue_reqs{model_name=\"m\"} 2\nsglang:token_usage{model_name=\"m\"} 0.8\nsglang:cache_hit_rate{model_name=\"m\"} 0.6\n";
        let tgi = "tgi_queue_size 4\ntgi_batch_current_size 9\n";
        let lmdeploy = "lmdeploy:num_requests_waiting 1\nlmdeploy:gpu_cache_usage_perc 0.3\nlmdeploy:prefix_cache_hit_rate 0.1\n";
        for (text, running, waiting, kv, hit) in [
            (sglang, Some(5.0), Some(2.0), Some(0.8), Some(0.6)),
            (tgi, Some(9.0), Some(4.0), None, None),
            (lmdeploy, None, Some(1.0), Some(0.3), Some(0.1)),
        ] {
            let s = parse(text, &Selection::Known);
            let m = ServerMetrics::from_scrapes(
                "u".into(),
                Duration::from_secs(1),
                vec![(0.0, s.clone()), (1.0, s)],
                0,
                None,
            );
            let h = &m.highlights;
            assert_eq!(h.running.map(|g| g.max), running, "{text}");
            assert_eq!(h.waiting.map(|g| g.max), waiting, "{text}");
            assert_eq!(h.kv_cache_usage.map(|g| g.max), kv, "{text}");
            assert_eq!(h.prefix_cache_hit_rate.as_ref().map(|p| p.0), hit, "{text}");
        }
    }
}
