//! The result file, defined once: [`ResultFile`] is the `--save-result` document with vLLM's
//! keys plus llmb's `"llmb"` object, and every writer ([`result_json_at`], the JSON exporter)
//! and every reader (`llmb report`'s loader, `llmb aggregate`) goes through it, so a key is
//! named, typed and documented in one place.
//!
//! Writing builds a `ResultFile` from a stage's outcome ([`ResultFile::of_stage`]); reading
//! turns a JSON object into one with errors that name the key at fault
//! ([`ResultFile::from_map`]). Readers take vLLM's own result files and older llmb files as
//! they are: every key is optional, numbers keep the form they were written in ([`Num`]), and
//! the diagnostics llmb adds under `"llmb"` are taken when they have the expected shape and
//! ignored otherwise.
//!
//! Here: the shape (the types); `value`: single values ([`Num`], strings, lenient keys);
//! `read` and `write`: the two directions; `server_metrics`: the scraped server metrics.

mod read;
mod server_metrics;
mod value;
mod write;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use llmb_engine::records::TokenSource;

pub use read::FieldError;
pub use server_metrics::ServerMetrics;
pub use value::Num;
pub(crate) use value::{number, short_json};
pub use write::{default_result_filename, result_json, result_json_at};

/// One result: vLLM's keys at the top level, llmb's diagnostics under [`llmb`](Self::llmb).
///
/// The keys are those `vllm bench serve` writes, in its meaning; keys a reader does not know
/// (vLLM's `--metadata`, later additions) are kept in [`other`](Self::other). Serialized with
/// `serde_json` into a `Value` the keys come out sorted, as llmb has always written them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ResultFile {
    /// UTC `YYYYMMDD-HHMMSS` of the run (also in the default file name).
    #[serde(deserialize_with = "value::text")]
    pub date: Option<String>,
    #[serde(deserialize_with = "value::text")]
    pub endpoint_type: Option<String>,
    #[serde(deserialize_with = "value::text")]
    pub backend: Option<String>,
    /// `--label`; written as `null` when not given.
    #[serde(deserialize_with = "value::text")]
    pub label: Option<String>,
    #[serde(deserialize_with = "value::text")]
    pub model_id: Option<String>,
    #[serde(deserialize_with = "value::text")]
    pub tokenizer_id: Option<String>,
    pub num_prompts: Option<Num>,
    /// Requests per second, `"inf"` for no limit.
    pub request_rate: Option<Num>,
    /// `"inf"` when infinite, as vLLM writes it.
    pub burstiness: Option<Num>,
    /// `null` when there was no cap.
    pub max_concurrency: Option<Num>,
    /// `ramp_up_strategy`, `ramp_up_start_rps`, `ramp_up_end_rps`: only for a ramp-up run.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub ramp_up: Option<RampUp>,
    /// Seconds from the first request to the last completion.
    pub duration: Option<Num>,
    pub completed: Option<Num>,
    pub failed: Option<Num>,
    pub total_input_tokens: Option<Num>,
    pub total_output_tokens: Option<Num>,
    pub request_throughput: Option<Num>,
    /// `null` without `--goodput` SLOs.
    pub request_goodput: Option<Num>,
    pub output_throughput: Option<Num>,
    pub total_token_throughput: Option<Num>,
    pub max_output_tokens_per_s: Option<Num>,
    /// The exact peak of requests in flight (vLLM 0.32's per-second count is in
    /// [`LlmbExtras::max_concurrent_requests_per_second`]).
    pub max_concurrent_requests: Option<Num>,
    /// vLLM's real-time factor of audio runs; 0 for text.
    pub rtfx: Option<Num>,
    /// `mean_/median_/std_/p{P}_{metric}_ms` for `ttft`, `tpot`, `itl` and `e2el`.
    #[serde(flatten)]
    pub latency: LatencyKeys,
    /// E2EL of each request in seconds, 0 for failures (by request id).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub latencies: Option<Vec<f64>>,
    /// Seconds each request waited for a concurrency slot.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub queue_times: Option<Vec<f64>>,
    /// `--save-detailed`: per request, by id.
    #[serde(flatten)]
    pub detail: Detail,
    /// llmb's diagnostics; absent in vLLM's files.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub llmb: Option<LlmbExtras>,
    /// The server's metrics over the run (`--server-metrics-url`), as `llmb report` reads them.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "server_metrics::field"
    )]
    pub server_metrics: Option<ServerMetrics>,
    /// Keys this type does not name (vLLM's `--metadata`, keys of other versions), as written.
    #[serde(flatten)]
    pub other: OtherKeys,
}

/// A `--ramp-up-strategy` run's ramp: the strategy and the start and end rates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RampUp {
    #[serde(rename = "ramp_up_strategy")]
    pub strategy: String,
    #[serde(rename = "ramp_up_start_rps")]
    pub start_rps: Option<Num>,
    #[serde(rename = "ramp_up_end_rps")]
    pub end_rps: Option<Num>,
}

/// vLLM's `--save-detailed` arrays, one entry per request in id order; absent otherwise.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Detail {
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub input_lens: Option<Vec<u64>>,
    /// 0 for failed requests.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub output_lens: Option<Vec<u64>>,
    /// Send times in seconds since the run started.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub start_times: Option<Vec<f64>>,
    /// Seconds; 0 for failed requests.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub ttfts: Option<Vec<f64>>,
    /// Seconds between streamed chunks; empty for failed requests.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub itls: Option<Vec<Vec<f64>>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub generated_texts: Option<Vec<String>>,
    /// The error message, `""` for successes.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub errors: Option<Vec<String>>,
}

/// llmb's additions under the `"llmb"` key: how the run was set up and how far to trust it.
///
/// Each key is taken when it has the shape below and left out otherwise, so an older llmb
/// file still loads. The objects whose shape the engine defines (schedule lag, input counts,
/// ...) are kept as the engine wrote them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LlmbExtras {
    #[serde(deserialize_with = "value::lenient")]
    pub base_url: Option<String>,
    #[serde(deserialize_with = "value::lenient")]
    pub endpoint: Option<String>,
    #[serde(deserialize_with = "value::lenient")]
    pub dataset_name: Option<String>,
    /// Cut short (Ctrl-C): the numbers cover what finished.
    #[serde(deserialize_with = "value::lenient")]
    pub interrupted: Option<bool>,
    #[serde(deserialize_with = "value::lenient")]
    pub output_len_forced: Option<bool>,
    #[serde(deserialize_with = "value::lenient")]
    pub percentile_metrics: Option<Vec<String>>,
    #[serde(deserialize_with = "value::lenient")]
    pub metric_percentiles: Option<Vec<f64>>,
    /// `--goodput` SLOs by metric, in ms.
    #[serde(deserialize_with = "value::lenient")]
    pub goodput_slos_ms: Option<BTreeMap<String, f64>>,
    /// The engine's `LagStats`: how late requests went out against the schedule.
    pub schedule_lag_ms: Option<Value>,
    /// The engine's `ScheduleStats`: requested and achieved rate, whether the schedule held.
    pub schedule: Option<Value>,
    #[serde(deserialize_with = "value::lenient")]
    pub ttft_from_intended_ms: Option<StatsMs>,
    #[serde(deserialize_with = "value::lenient")]
    pub e2el_from_intended_ms: Option<StatsMs>,
    /// Images in the prompts of successful requests, when there were any.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub total_input_images: Option<u64>,
    /// Time to first answer token and the reasoning/answer split of the output.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub reasoning: Option<ReasoningFile>,
    /// Per conversation turn of a multi-turn run.
    #[serde(deserialize_with = "value::lenient")]
    pub turns: Option<Vec<TurnStats>>,
    #[serde(deserialize_with = "value::lenient")]
    pub warmups: Option<u64>,
    /// The engine's `InputCounts`: client counts against the server's usage.
    pub input_counts: Option<Value>,
    /// The engine's `InputCountSource`: where the input counts came from.
    pub input_count_source: Option<Value>,
    /// The fixed summary (avg, p50, p90, p95, p99, min, max, std, count) by metric.
    #[serde(deserialize_with = "value::lenient")]
    pub latency_stats_ms: Option<BTreeMap<String, LatencySummary>>,
    /// `null` without SLOs.
    #[serde(deserialize_with = "value::lenient")]
    pub slo: Option<Slo>,
    #[serde(deserialize_with = "value::lenient")]
    pub load_pattern: Option<LoadPatternFile>,
    #[serde(deserialize_with = "value::lenient")]
    pub client_queue_ms: Option<StatsMs>,
    /// vLLM 0.32's `max_concurrent_requests` (per-second buckets).
    #[serde(deserialize_with = "value::lenient")]
    pub max_concurrent_requests_per_second: Option<u64>,
    #[serde(deserialize_with = "value::lenient")]
    pub token_sources: Option<BTreeMap<TokenSource, u64>>,
    #[serde(deserialize_with = "value::lenient")]
    pub errors_by_kind: Option<BTreeMap<String, u64>>,
    #[serde(deserialize_with = "value::lenient")]
    pub connection_retries: Option<u64>,
    /// The engine's `SteadyState`: the window without ramp-up and drain, and its numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady_state: Option<Value>,
    /// The engine's `Slice`s (`--slice-duration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slices: Option<Value>,
    /// The engine's `Cancellations`: requests the client cancelled on purpose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancellations: Option<Value>,
    /// The engine's `HttpPhases`: connections opened ahead, and the connect, TLS, write and
    /// first-byte wait times of the measured requests.
    #[serde(deserialize_with = "value::lenient")]
    pub http_phases_ms: Option<HttpPhasesMs>,
    /// The engine's `PluginTime`: time inside backend plugin calls per request.
    pub plugin_time_us: Option<Value>,
    #[serde(deserialize_with = "value::lenient")]
    pub plugin_faults: Option<BTreeMap<String, u64>>,
    /// The plugins that produced the numbers, with version and sha256 (for `llmb plugin lock`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub plugins: Option<Vec<llmb_engine::outcome::UsedPlugin>>,
    /// Which shard of a sharded run this is (`--shard`, or the job engine's environment).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub shard: Option<llmb_engine::shard::Shard>,
    /// The digest of the global plan: equal in every shard of one run.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub plan_digest: Option<String>,
    /// How the timed phase started against `--start-at`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub start: Option<llmb_engine::outcome::StartInfo>,
    /// The records' origin on the wall clock and the measured window (for `llmb merge`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub timing: Option<llmb_engine::outcome::RunTiming>,
    /// Why the stage stopped early; `bench` adds it when it did.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value::lenient"
    )]
    pub stop_reason: Option<String>,
    /// Keys of other llmb versions, as written.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The engine's `ReasoningStats` with its latencies in the result file's `StatsMs` shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReasoningFile {
    /// Successful requests that streamed any reasoning.
    pub requests: u64,
    pub total_reasoning_tokens: u64,
    pub total_answer_tokens: u64,
    /// Successes whose output was all reasoning.
    pub no_answer: u64,
    /// Time to first answer (output) token.
    pub ttfo_ms: StatsMs,
    /// TTFO − TTFT over the requests that reasoned.
    pub thinking_ms: StatsMs,
    #[serde(default)]
    pub token_sources: BTreeMap<TokenSource, u64>,
}

/// A latency metric's `mean_ms`, `median_ms`, `std_ms`, `p{P}_ms` (the configured percentiles)
/// and sample `count`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsMs {
    pub mean_ms: f64,
    pub median_ms: f64,
    pub std_ms: f64,
    /// `p{P}_ms` keys.
    #[serde(flatten)]
    pub percentiles: BTreeMap<String, f64>,
    pub count: u64,
}

/// The HTTP phases of a stage, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpPhasesMs {
    /// Connections opened before the timed phase; absent with `--no-warm-connections`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connections_warmed: Option<u64>,
    /// Measured requests that opened their own connection.
    pub new_connections: u64,
    pub connect: StatsMs,
    pub tls: StatsMs,
    /// Sent to the request's last byte written.
    pub write: StatsMs,
    /// Request written to the first response byte read.
    pub wait: StatsMs,
    /// Each request's longest read wait, kernel arrival to the read; absent where reads carry
    /// no kernel stamp (and in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_wait: Option<StatsMs>,
}

/// One conversation turn of a multi-turn run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnStats {
    /// 0-based.
    pub turn: u32,
    pub completed: u64,
    pub failed: u64,
    pub mean_input_tokens: f64,
    pub ttft_ms: StatsMs,
    pub e2el_ms: StatsMs,
}

/// The summary every report shows for a metric, whatever `--metric-percentiles` selects.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencySummary {
    pub avg: Option<Num>,
    pub p50: Option<Num>,
    pub p90: Option<Num>,
    pub p95: Option<Num>,
    pub p99: Option<Num>,
    pub min: Option<Num>,
    pub max: Option<Num>,
    pub std: Option<Num>,
    pub count: Option<Num>,
}

/// How the run fared against its `--goodput` SLOs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Slo {
    pub limits_ms: Option<BTreeMap<String, f64>>,
    /// Successful requests within every SLO.
    pub good_requests: Option<Num>,
    /// Successful requests that missed each SLO.
    pub misses: Option<BTreeMap<String, u64>>,
}

/// The run's load pattern: the engine's `LoadPattern`, with the two keys the report reads
/// typed and the rest as the engine wrote it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadPatternFile {
    /// The stage's place in a sweep, e.g. `concurrency 8`.
    #[serde(deserialize_with = "value::lenient")]
    pub stage: Option<String>,
    /// `--no-stream`: TTFT, TPOT and ITL were not measured.
    #[serde(deserialize_with = "value::lenient")]
    pub no_stream: Option<bool>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The latency keys of a result, `{stat}_{metric}_ms` for the metrics `ttft`, `tpot`, `itl` and
/// `e2el` (vLLM writes `mean`, `median`, `std` and `p{P}`); each a number or `null`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct LatencyKeys(pub BTreeMap<String, Option<Num>>);

impl LatencyKeys {
    /// Whether `key` is one of these: ends in `_ttft_ms`, `_tpot_ms`, `_itl_ms` or `_e2el_ms`.
    pub fn is_latency_key(key: &str) -> bool {
        llmb_engine::metrics::PERCENTILE_METRICS.iter().any(|m| {
            key.strip_suffix("_ms")
                .and_then(|k| k.strip_suffix(m))
                .is_some_and(|k| k.ends_with('_'))
        })
    }

    /// `{stat}_{metric}_ms` (`stat`: `mean`, `median`, `std`, `p99`, ...), when a number.
    pub fn get(&self, stat: &str, metric: &str) -> Option<f64> {
        self.0
            .get(&format!("{stat}_{metric}_ms"))
            .and_then(Option::as_ref)
            .and_then(Num::as_f64)
    }
}

/// The keys of a result that [`ResultFile`] does not name, as written.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct OtherKeys(pub Map<String, Value>);

impl ResultFile {
    /// The load pattern llmb recorded, if any.
    pub fn load_pattern(&self) -> Option<&LoadPatternFile> {
        self.llmb.as_ref()?.load_pattern.as_ref()
    }

    /// Whether the run was `--no-stream` (no TTFT, TPOT or ITL).
    pub fn no_stream(&self) -> bool {
        self.load_pattern()
            .and_then(|p| p.no_stream)
            .unwrap_or(false)
    }

    /// The stage's name in a sweep (`concurrency 8`), if llmb recorded one.
    pub fn stage(&self) -> Option<&str> {
        self.load_pattern()?.stage.as_deref()
    }

    /// Every top-level key whose value is a number, in key order, as written (the numbers
    /// `llmb aggregate` puts in columns).
    pub fn numbers(&self) -> Vec<(String, serde_json::Number)> {
        match serde_json::to_value(self) {
            Ok(Value::Object(doc)) => doc
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::Number(n) => Some((k, n)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}
