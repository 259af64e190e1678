//! The typed configuration of a benchmark run: what [`crate::session::run`] needs, already
//! parsed and checked. The `llmb` CLI turns its flags into a [`RunConfig`] once; a program that
//! embeds the engine builds one directly (see `examples/embed.rs`). Nothing here knows about
//! flags, files of results or how anything is printed.

use std::path::PathBuf;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};

use crate::metrics::MetricsConfig;
pub use crate::plan::LoadConfig;
use crate::plan::Stage;
use crate::plugin::DatasetRequest;
use crate::plugin::backend::ChatMessage;
pub use crate::runner::RequestDefaults;
use crate::transport::{Limits, PoolSettings};

/// One benchmark: which plugins, which server, which prompts, what load, which statistics.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub plugins: PluginConfig,
    pub server: ServerConfig,
    pub dataset: DatasetConfig,
    pub request: RequestDefaults,
    pub load: LoadConfig,
    pub metrics: MetricsConfig,
    /// A name for the run in reports and file names (vLLM's `--label`).
    pub label: Option<String>,
    /// Draw a progress bar on stderr while requests run.
    pub show_progress: bool,
    /// Send one request before the run and check the adapter understands the answer.
    pub preflight: bool,
}

impl RunConfig {
    /// A run of `requests` requests from the `random` reader against `base_url` with the
    /// `backend` adapter, all at once (no rate limit), as `llmb bench` does with no other flags.
    /// Adjust the fields from there.
    pub fn new(base_url: impl Into<String>, backend: impl Into<String>, requests: usize) -> Self {
        RunConfig {
            plugins: PluginConfig {
                paths: Vec::new(),
                backend: backend.into(),
                backend_options: Vec::new(),
                call_budget_us: crate::plugin::DEFAULT_CALL_BUDGET_US,
                max_instances: crate::plugin::backend::DEFAULT_MAX_INSTANCES,
                allow_native: false,
                pins: None,
                max_faults: None,
            },
            server: ServerConfig::new(base_url),
            dataset: DatasetConfig {
                name: "random".into(),
                source: DatasetSource::Reader(DatasetRequest {
                    seed: 0,
                    count: requests as u64,
                    options: Vec::new(),
                    file: None,
                }),
                cycle: false,
                system_prompts: Vec::new(),
                max_tokens: None,
                tokenizer: None,
                input_counts: InputCounting::Server { fit: true },
            },
            request: RequestDefaults {
                streaming: true,
                ..RequestDefaults::default()
            },
            load: LoadConfig {
                stages: vec![Stage::single(f64::INFINITY, None, requests)],
                ..LoadConfig::default()
            },
            metrics: MetricsConfig::default(),
            label: None,
            show_progress: false,
            preflight: true,
        }
    }
}

impl RunConfig {
    /// Refuses values the run cannot use, naming the field, before anything is loaded or sent.
    /// The CLI checks its flags first (with the flag's name); this guards programs that build a
    /// `RunConfig` themselves from a run that would silently measure nothing.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        let load = &self.load;
        ensure!(!load.stages.is_empty(), "load.stages: the run has no stage");
        for (i, s) in load.stages.iter().enumerate() {
            ensure!(
                s.requests > 0,
                "load.stages[{i}].requests: must be at least 1"
            );
            ensure!(
                s.rate > 0.0,
                "load.stages[{i}].rate: must be positive (f64::INFINITY: all at once), got {}",
                s.rate
            );
            ensure!(
                s.concurrency != Some(0),
                "load.stages[{i}].concurrency: must be at least 1"
            );
        }
        ensure!(
            load.burstiness > 0.0 && load.burstiness.is_finite(),
            "load.burstiness: must be a positive number, got {}",
            load.burstiness
        );
        ensure!(
            load.trace_speed > 0.0 && load.trace_speed.is_finite(),
            "load.trace_speed: must be a positive number, got {}",
            load.trace_speed
        );
        ensure!(load.clients != Some(0), "load.clients: must be at least 1");
        ensure!(
            self.plugins.call_budget_us > 0,
            "plugins.call_budget_us: must be at least 1"
        );
        ensure!(
            !self.server.timeout.is_zero(),
            "server.timeout: must be longer than zero"
        );
        Ok(())
    }
}

/// Which plugins to load and how strictly to treat them.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// `.wasm` files to load beside the embedded first-party plugins.
    pub paths: Vec<PathBuf>,
    /// The backend adapter's name.
    pub backend: String,
    /// `KEY=VALUE` options handed to the adapter (`--plugin-opt`).
    pub backend_options: Vec<(String, String)>,
    /// Fuel budget of one plugin call, in microseconds of CPU.
    pub call_budget_us: u64,
    /// Backend instances alive at once; requests past that share one (`--plugin-instances`).
    pub max_instances: usize,
    /// `--allow-native`: native adapter libraries among `paths` may load (unsandboxed).
    pub allow_native: bool,
    /// `--lock`: the only plugins the run may use.
    pub pins: Option<crate::plugin::Pins>,
    /// Stop the run after this many plugin faults (`None`: never).
    pub max_faults: Option<u64>,
}

/// The server and how to talk to it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `http://host:port` without a trailing slash.
    pub base_url: String,
    /// The server is llmb's own simulator, started for this run: it is known to listen and be
    /// ready, so those checks are skipped.
    pub simulated: bool,
    /// A request path that replaces the adapter's own.
    pub endpoint: Option<String>,
    /// Headers sent with every request; secret values are already registered for masking.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Sent as `Authorization: Bearer ...` (or in `api_key_header`) and masked in every output.
    pub api_key: Option<String>,
    /// `--api-key-header`: the header that carries the key as it is, instead of
    /// `Authorization: Bearer`.
    pub api_key_header: Option<String>,
    /// Longest a whole request may take.
    pub timeout: Duration,
    /// Per-request bounds on headers, idle reads and sizes.
    pub limits: Limits,
    /// Connection pool settings (`max_idle` is raised to the run's widest concurrency).
    pub pool: PoolSettings,
    /// A PEM file of extra certificate authorities to trust.
    pub ca_cert: Option<PathBuf>,
    /// The model to ask for; `None`: the first one `/v1/models` lists.
    pub model: Option<String>,
    /// The model name results carry instead of `model` (vLLM's `--served-model-name`).
    pub served_model_name: Option<String>,
    /// Wait up to this long for the server to answer a first request before the run.
    pub ready_timeout: Option<Duration>,
    /// Call vLLM's `/start_profile` and `/stop_profile` around the run.
    pub profile: bool,
    /// Scrape the server's Prometheus metrics during each stage.
    pub metrics: Option<ServerMetricsConfig>,
}

impl ServerConfig {
    /// `base_url` with the defaults of `llmb bench`.
    pub fn new(base_url: impl Into<String>) -> Self {
        ServerConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            simulated: false,
            endpoint: None,
            headers: Vec::new(),
            api_key: None,
            api_key_header: None,
            timeout: Duration::from_secs(600),
            limits: Limits::default(),
            pool: PoolSettings::default(),
            ca_cert: None,
            model: None,
            served_model_name: None,
            ready_timeout: None,
            profile: false,
            metrics: None,
        }
    }
}

/// Where and how often to scrape the server's Prometheus metrics.
#[derive(Debug, Clone)]
pub struct ServerMetricsConfig {
    /// The full URL (a path given on the command line is already joined to the base URL).
    pub url: String,
    pub interval: Duration,
    /// Which metric families to keep (`None`: the default selection).
    pub selection: Option<String>,
}

/// Where the prompts come from and how their input lengths are counted.
#[derive(Debug, Clone)]
pub struct DatasetConfig {
    /// The name results carry (`random`, `sharegpt`, `mixed`, `user-prompt`, ...).
    pub name: String,
    pub source: DatasetSource,
    /// The reader may cycle a small dataset (`--dataset-cycle`); only changes the shortfall note.
    pub cycle: bool,
    /// System prompts put before every prompt, in order (each counted with the host tokenizer).
    pub system_prompts: Vec<String>,
    /// Every sample's output length, whatever the reader said.
    pub max_tokens: Option<u32>,
    /// A `tokenizer.json` (or a name the host tokenizer loader knows); `None`: word counts.
    pub tokenizer: Option<PathBuf>,
    pub input_counts: InputCounting,
}

/// The readers that make the prompts.
#[derive(Debug, Clone)]
pub enum DatasetSource {
    /// The reader plugin named by [`DatasetConfig::name`].
    Reader(DatasetRequest),
    /// Several readers, each a weighted share of the prompts, shuffled together with the seed or,
    /// with `shuffle` off, interleaved in proportion keeping each reader's order.
    Mixed {
        parts: Vec<MixPart>,
        /// The options every part is read with (each part's own file replaces `file`).
        request: DatasetRequest,
        shuffle: bool,
    },
    /// Fixed conversations (`--user`, `--prompt-file`), cycled, each asking `output_tokens`.
    Fixed {
        prompts: Vec<Vec<ChatMessage>>,
        output_tokens: u32,
    },
}

/// One `WEIGHT:DATASET[:PATH]` part of a mixed dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct MixPart {
    pub weight: f64,
    pub dataset: String,
    pub path: Option<PathBuf>,
    /// The part as the user wrote it, for error messages.
    pub spec: String,
}

/// Where input token counts come from when no tokenizer file is given.
#[derive(Debug, Clone, PartialEq)]
pub enum InputCounting {
    /// Ask the server to tokenize each prompt; with `fit`, also make generated prompts the
    /// asked length in the server's tokens (readers that make prompts of a length).
    Server { fit: bool },
    /// Keep the readers' own estimate, saying why.
    Estimate { reason: String },
}
