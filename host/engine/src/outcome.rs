//! What a run produced: the description of the run ([`RunInfo`]), each stage's records and
//! metrics ([`BenchOutcome`]) and a whole sweep ([`SweepOutcome`]). Reports read these; nothing
//! here knows how it will be printed or saved.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::metrics::{BenchmarkMetrics, MetricsConfig};
use crate::records::RequestRecord;
use crate::sweep::{StageSummary, SweepVerdict};

/// A plugin that produced a run's numbers: with its version and sha256 in the result, the run
/// can be reproduced with exactly these plugins months later (`llmb plugin lock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct UsedPlugin {
    pub name: String,
    pub kind: String,
    pub version: String,
    pub sha256: String,
    /// `embedded` or the file it was loaded from.
    pub origin: String,
}

impl From<&crate::plugin::PluginSummary> for UsedPlugin {
    fn from(p: &crate::plugin::PluginSummary) -> Self {
        UsedPlugin {
            name: p.name.clone(),
            kind: p.kind.as_str().into(),
            version: p.version.clone(),
            sha256: p.sha256.clone(),
            origin: p.origin.to_string(),
        }
    }
}

/// What was run, for the report header and the result file.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub backend: String,
    pub endpoint_type: String,
    pub label: Option<String>,
    pub model_id: String,
    pub tokenizer_id: String,
    /// Where the input token counts came from (`--tokenizer`, the server, an estimate).
    pub input_counts: crate::input_tokens::InputCountSource,
    pub base_url: String,
    pub endpoint: String,
    pub dataset_name: String,
    pub num_prompts: usize,
    /// `f64::INFINITY` for "inf".
    pub request_rate: f64,
    pub burstiness: f64,
    pub max_concurrency: Option<usize>,
    /// False when output lengths were not forced to the requested length (EOS not ignored).
    pub output_len_forced: bool,
    /// Whether the adapter could have forced them (`--ignore-eos`).
    pub output_len_forceable: bool,
    /// The run was cut short (Ctrl-C): the numbers cover what finished.
    pub interrupted: bool,
    /// How load was applied beyond vLLM's rate, burstiness and concurrency.
    pub pattern: LoadPattern,
    /// The backend adapter and dataset reader that produced the numbers.
    pub plugins: Vec<UsedPlugin>,
    /// Which shard of a sharded run this is.
    pub shard: Option<crate::shard::Shard>,
    /// The digest of the global plan (arrivals, samples, plugins): equal in every shard of
    /// one run.
    pub plan_digest: String,
    /// When the timed phase started against `--start-at`.
    pub start: Option<StartInfo>,
    /// Where the records' clock starts on the wall clock, and the measured window on it: what
    /// `llmb merge` lines shards up with.
    pub timing: Option<RunTiming>,
}

/// The records' time origin on the wall clock and the measured window, in ns from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RunTiming {
    pub t0_unix_ns: u64,
    pub measured_from_ns: u64,
    pub elapsed_ns: u64,
}

/// How a shard started against `--start-at`, and on what clock.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StartInfo {
    pub start_at_unix_s: f64,
    /// How long it waited for the start (0 when late).
    pub waited_ms: f64,
    /// How late it was (0 when on time).
    pub late_ms: f64,
    /// The clock the start time was read on, and what is known of its offset.
    pub clock: String,
}

/// The load pattern of a run, for the report and the result file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadPattern {
    /// `poisson` (rate and burstiness), `ramp`, `trace`, `clients` or `duration`.
    pub mode: String,
    /// `(strategy, start rps, end rps)` of a `--ramp-up-strategy` run.
    pub ramp: Option<(String, f64, f64)>,
    /// `(first request, offset s, rps)` each time a ramp's whole-number rate changes.
    pub rate_steps: Vec<(usize, f64, f64)>,
    pub num_clients: Option<usize>,
    pub ramp_up_time_s: Option<f64>,
    pub trace_speed: Option<f64>,
    /// `--duration` in seconds, when the run was limited by time.
    pub duration_limit_s: Option<f64>,
    /// 1-based round of a `--rounds` run.
    pub round: u32,
    /// The stage's place in a sweep, e.g. `concurrency 8` (none for a single run).
    pub stage: Option<String>,
    /// `--no-stream`: whole responses, so TTFT, TPOT and ITL do not exist.
    pub no_stream: bool,
}

/// What a finished run produced.
pub struct BenchOutcome {
    pub info: RunInfo,
    pub metrics: BenchmarkMetrics,
    pub metrics_config: MetricsConfig,
    pub records: Vec<RequestRecord>,
    pub records_path: Option<PathBuf>,
    pub result_path: Option<PathBuf>,
    /// CPU time the whole process used while requests were in flight.
    pub client_cpu: Duration,
    /// This process's RSS as the stage's connections were about to open (plugins, dataset and
    /// tokenizer already loaded) and its peak until the last response ended.
    pub client_memory: crate::memory::MemoryUse,
    /// The server's Prometheus metrics over the stage (`--server-metrics-url`).
    pub server_metrics: Option<crate::server_metrics::ServerMetrics>,
    /// Why the stage stopped early (Ctrl-C, `--max-plugin-faults`), and in which phase.
    pub stop_reason: Option<String>,
    /// The stage's time origin (records count nanoseconds from it) on the `CLOCK_MONOTONIC`
    /// scale, to compare records with another process's clock (`llmb sim --send-log`).
    pub t0_monotonic_ns: u64,
}

/// A whole `llmb bench` invocation: every stage (rates × concurrencies × rounds) in order.
pub struct SweepOutcome {
    pub stages: Vec<BenchOutcome>,
    pub summaries: Vec<StageSummary>,
    pub verdict: SweepVerdict,
}
