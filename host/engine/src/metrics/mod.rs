//! Metrics from request records with `vllm bench serve`'s definitions (vllm/benchmarks/serve.py,
//! `calculate_metrics`; DESIGN.md §4), so every number is comparable line by line with vLLM's.
//!
//! Statistics are computed as numpy computes them (pairwise summation, linear percentiles,
//! population std) on samples in seconds, then scaled to milliseconds, in vLLM's order of
//! operations, so results agree with vLLM's to the last printed digit and usually to the bit.
//!
//! This module holds the configuration and the result types; the work is split by concern:
//! [`compute`] aggregates a run's records, the `derive` module derives the client-side
//! diagnostics (schedule, concurrency, turns, input counts), `stats` holds numpy's statistics and
//! [`percentile`], and `slo` parses `--goodput` and `--slo-file` and tests requests against them.

mod aggregate;
mod derive;
mod slo;
mod stats;
mod windows;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::records::TokenSource;

pub use aggregate::compute;
pub use slo::{GOODPUT_METRICS, SLO_METRICS, parse_slo_file};
pub use stats::{MetricStats, Summary, percentile};
pub use windows::{Slice, SteadyState, slices, steady_state};

/// vLLM's `MILLISECONDS_TO_SECONDS_CONVERSION`.
const MS_PER_S: f64 = 1000.0;
const NS_PER_S: u64 = 1_000_000_000;

/// Metrics that can get percentile lines, in the order vLLM prints them.
pub const PERCENTILE_METRICS: [&str; 4] = ["ttft", "tpot", "itl", "e2el"];

/// Which metrics get percentile lines and which percentiles (vLLM's `--percentile-metrics` and
/// `--metric-percentiles`), plus the `--goodput` SLOs; the report and the goodput count need all
/// three.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Subset of `ttft`, `tpot`, `itl`, `e2el`.
    pub percentile_metrics: Vec<String>,
    /// Percentiles in [0, 100].
    pub metric_percentiles: Vec<f64>,
    /// `(metric, milliseconds)` pairs from `--slo-file` and `--goodput ttft:200 tpot:50`.
    pub goodput_slos_ms: Vec<(String, f64)>,
    /// `--slice-duration`: statistics per window of this many seconds.
    pub slice_duration_s: Option<f64>,
}

impl Default for MetricsConfig {
    /// vLLM's defaults for generative models: `ttft,tpot,itl` at the 99th percentile, no SLO.
    fn default() -> Self {
        Self {
            percentile_metrics: vec!["ttft".into(), "tpot".into(), "itl".into()],
            metric_percentiles: vec![99.0],
            goodput_slos_ms: Vec::new(),
            slice_duration_s: None,
        }
    }
}

/// How late requests went out against the arrival schedule (client health, not a vLLM metric),
/// from an HDR histogram in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LagStats {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Whether the client kept the arrival schedule: the proof a reader needs before trusting
/// latencies at a given rate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScheduleStats {
    /// Requests that went out (warmups excluded).
    pub sent: usize,
    /// The schedule's own rate, `(n - 1) / (last − first intended send)`; `None` when everything
    /// was meant to go at once or requests were paced by closed-loop clients.
    pub requested_rate: Option<f64>,
    /// The same over the actual release times (intended + lag).
    pub achieved_rate: Option<f64>,
    /// False when the client fell behind: lag p99 above max(1 ms, 10 % of the mean gap) or the
    /// achieved rate more than 1 % under the requested one.
    pub kept: bool,
}

/// The quantiles a sweep's stage table shows, whatever `--metric-percentiles` says.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageQuantiles {
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub e2el_p50_ms: f64,
    pub e2el_p95_ms: f64,
    pub e2el_p99_ms: f64,
}

/// Where input token counts came from, and how far the client's count is from the server's
/// when both exist (a different tokenizer or an unaccounted chat template shows here).
#[derive(Debug, Clone, Default, Serialize)]
pub struct InputCounts {
    /// Successful requests whose server reported `prompt_tokens`.
    pub server_reported: usize,
    pub mean_client: f64,
    /// Over the requests with a server count.
    pub mean_server: f64,
    /// Mean of server − client over the requests with a server count.
    pub mean_difference: f64,
    /// Smallest and largest server − client: equal when the server adds the same tokens to
    /// every prompt (a chat template), which is not a disagreement about the prompts.
    pub min_difference: f64,
    pub max_difference: f64,
}

/// How a run fared against its SLOs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SloOutcome {
    /// Successful requests within every SLO (goodput × duration).
    pub good_requests: usize,
    /// Successful requests that missed each SLO (a request may miss several), in SLO order.
    pub misses: Vec<(String, usize)>,
}

/// Wall time each request spent inside backend plugin calls (building it, parsing the reply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PluginTime {
    /// Measured requests with a recorded time.
    pub requests: usize,
    pub mean_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// Latencies of the k-th turn of multi-turn conversations.
#[derive(Debug, Clone, Serialize)]
pub struct TurnStats {
    /// 0-based turn index.
    pub turn: u32,
    pub completed: usize,
    pub failed: usize,
    pub mean_input_tokens: f64,
    pub ttft: MetricStats,
    pub e2el: MetricStats,
}

/// AIPerf's HTTP phases over a stage's measured requests, so a user sees which part of TTFT is
/// the network and the client rather than the server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HttpPhases {
    /// Connections opened before the timed phase (`None`: `--no-warm-connections`); set by
    /// the session, which opened them.
    pub connections_warmed: Option<usize>,
    /// Requests that opened their own connection (not a reused or pre-opened one).
    pub new_connections: usize,
    /// Name resolution and TCP connect, over the requests that opened a connection.
    pub connect: MetricStats,
    /// TLS handshake, over the requests that opened an HTTPS connection.
    pub tls: MetricStats,
    /// From just before sending (`sent_ns`, after any connect) to the request's last byte
    /// written to the connection.
    pub write: MetricStats,
    /// From the request written to the first response byte read: the server's time to answer
    /// plus the network both ways.
    pub wait: MetricStats,
    /// Each request's longest read wait (`read_wait_max_ns`): how far behind the client was
    /// reading its response. Chunks that arrived closer together than this may share a stamp.
    pub read_wait: MetricStats,
}

/// How much of the output was thinking and how long it delayed the answer, for models that
/// reason before they answer (reasoning streamed apart from the answer, as vLLM's
/// `reasoning_content`, the Responses API's reasoning events or Anthropic's `thinking` blocks).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReasoningStats {
    /// Successful requests that streamed any reasoning.
    pub requests: usize,
    /// Reasoning tokens over the successes (part of `total_output`).
    pub total_reasoning_tokens: u64,
    /// `total_output` less the reasoning tokens.
    pub total_answer_tokens: u64,
    /// Requests per origin of their reasoning count (a tokenizer, else one per frame).
    pub token_sources: BTreeMap<TokenSource, usize>,
    /// Time to first output (answer) token, over the successes with an answer token.
    pub ttfo: MetricStats,
    /// TTFO − TTFT of the requests that reasoned: how long the thinking held the answer back.
    pub thinking: MetricStats,
    /// Successful streamed requests whose output was all reasoning (no answer token).
    pub no_answer: usize,
}

/// Requests the client cancelled on purpose (`--cancel-rate`), counted among the failures
/// (kind `cancelled`) and described here: how far each had got.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cancellations {
    pub requests: usize,
    /// Cancelled after their first token had arrived.
    pub after_first_token: usize,
    /// Delta frames received before the cut, over all cancelled requests.
    pub frames_received: u64,
}

/// Everything the console report prints and the result JSON saves, vLLM's
/// `BenchmarkMetrics` plus llmb's client-side diagnostics.
#[derive(Debug, Clone, Serialize)]
pub struct BenchmarkMetrics {
    pub completed: usize,
    pub failed: usize,
    pub total_input: u64,
    pub total_output: u64,
    /// Images in the prompts of successful requests (vision models).
    pub total_input_images: u64,
    pub duration_s: f64,
    pub request_throughput: f64,
    /// `None` when no `--goodput` SLO was given.
    pub request_goodput: Option<f64>,
    /// Good requests and how often each SLO was missed; `None` without SLOs.
    pub slo: Option<SloOutcome>,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    /// Most delta frames received within one whole second since the first send.
    pub max_output_tokens_per_s: f64,
    /// Most requests in flight at any instant: the exact peak, never above `--max-concurrency`.
    /// Deliberately not vLLM 0.32's `max_concurrent_requests`, which is
    /// [`Self::max_concurrent_requests_per_second`].
    pub max_concurrent_requests: usize,
    /// vLLM 0.32's `max_concurrent_requests`: the most requests active during some part of one
    /// whole-second bucket. A request counts in every bucket from the one it was sent in to the
    /// one it ended in, so requests that follow each other within a second all count and the
    /// value can exceed the concurrency cap (27 for a run capped at 8). Kept so a result can be
    /// compared with vLLM's; `max_concurrent_requests` is the number to read.
    pub max_concurrent_requests_per_second: usize,
    pub ttft: MetricStats,
    pub tpot: MetricStats,
    pub itl: MetricStats,
    pub e2el: MetricStats,
    /// Time to first answer token and the reasoning/answer split of the output.
    pub reasoning: ReasoningStats,
    /// The run without its ramp-up and drain.
    pub steady_state: SteadyState,
    /// Statistics per `--slice-duration` window; empty without it.
    pub slices: Vec<Slice>,
    /// Time spent waiting for a `--max-concurrency` slot, over every request that got one.
    pub queue: MetricStats,
    pub schedule_lag: LagStats,
    pub schedule: ScheduleStats,
    /// TTFT and E2EL counted from the intended send time (coordinated-omission corrected).
    pub ttft_from_intended: MetricStats,
    pub e2el_from_intended: MetricStats,
    pub stage_quantiles: StageQuantiles,
    /// Per-turn latencies; empty unless the run had multi-turn conversations.
    pub turns: Vec<TurnStats>,
    /// Warmup requests sent before measuring (excluded from everything else).
    pub warmups: usize,
    pub input_counts: InputCounts,
    /// Successful requests per origin of their output token count.
    pub token_sources: BTreeMap<TokenSource, usize>,
    /// Failed requests per `RequestError::kind`.
    pub errors_by_kind: BTreeMap<String, usize>,
    /// Requests cancelled by the client on purpose.
    pub cancellations: Cancellations,
    /// Measured requests sent again on a fresh connection after the server closed the reused
    /// one under them (counted whether they then succeeded or not).
    pub connection_retries: usize,
    /// Where the time before the response went on the wire: connect, TLS, writing the request,
    /// waiting for its first byte.
    pub http_phases: HttpPhases,
    /// Time inside backend plugin calls per measured request.
    pub plugin_time: PluginTime,
    /// Requests failed by a plugin fault, by kind (`trap`, `deadline`, `memory`), warmups
    /// included: a fault is about the plugin, not the server.
    pub plugin_faults: BTreeMap<String, usize>,
}

impl BenchmarkMetrics {
    /// The stats of a metric by its short name (`ttft`, `tpot`, `itl`, `e2el`, and `ttfo`), so
    /// reports can walk [`PERCENTILE_METRICS`].
    pub fn stats(&self, metric: &str) -> Option<&MetricStats> {
        match metric {
            "ttft" => Some(&self.ttft),
            "tpot" => Some(&self.tpot),
            "itl" => Some(&self.itl),
            "e2el" => Some(&self.e2el),
            "ttfo" => Some(&self.reasoning.ttfo),
            _ => None,
        }
    }
}
