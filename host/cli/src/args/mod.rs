//! Command-line interface: every subcommand's flags, and nothing else (what they mean is in
//! [`crate::config`] and the subcommand modules). `bench` takes `vllm bench serve`'s flag
//! names ([`vllm`]) and the concurrency-sweep scripts' ([`sweep`]), so their command lines
//! work unchanged; `multi-turn` takes vLLM's multi-turn benchmark's ([`multi_turn`]).
//! Long because: `BenchArgs` is one clap struct of `vllm bench serve`'s ~100 flags plus llmb's,
//! each with the doc its `--help` prints; splitting it would change every flag's field path.

pub mod multi_turn;
pub mod sweep;
pub mod vllm;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "llmb",
    version,
    about = "Benchmark LLM inference servers; adapters are WebAssembly plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Parses the command line with `bench` as the default command: `llmb --plugin tgi.wasm
/// --base-url URL ...` is `llmb bench --plugin tgi.wasm --base-url URL ...`.
pub fn parse_command_line() -> Cli {
    use clap::Parser;
    Cli::parse_from(with_default_command(std::env::args_os().collect()))
}

/// `args` with `bench` inserted when the first argument is an option other than help or
/// version.
pub fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let is_global = matches!(first, "-h" | "--help" | "-V" | "--version");
    if first.starts_with('-') && !is_global {
        args.insert(1, "bench".into());
    }
    args
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a benchmark (against the built-in simulator when no --base-url/--port is given).
    Bench(Box<BenchArgs>),
    /// Serve the built-in OpenAI-compatible simulator.
    Sim(SimArgs),
    /// List embedded and loaded plugins.
    Plugins(PluginsArgs),
    /// Work on plugins: `llmb plugin new NAME` scaffolds an adapter crate.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Measure llmb's own overhead: WASM vs native parse cost, client CPU per streamed token.
    Selfbench(SelfbenchArgs),
    /// Inspect or convert datasets: `stats` shows the lengths a run would use, `convert` writes
    /// them as the JSONL the custom reader takes.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// One CSV table over result files from many runs (files or folders, searched recursively).
    Aggregate(AggregateArgs),
    /// One result from the shards of a sharded run (`--shard`): every metric recomputed from
    /// the union of their raw records, on one clock; written with its records like a run's.
    Merge(MergeArgs),
    /// Did B change anything against A? Per metric (TTFT, TPOT, ITL, E2EL; mean, median,
    /// p99) the difference with a 95 % bootstrap interval over requests and a verdict.
    Compare(CompareArgs),
    /// Run a recipe: `bench` options plus a matrix of values expanded as a cartesian product,
    /// one result file per case and an aggregate table at the end (see examples/).
    Run(RunArgs),
    /// Write one self-contained HTML report (stage table, SVG charts, per-request timelines,
    /// server metrics) from the files `bench --save-result` left in DIR.
    Report(ReportArgs),
    /// vLLM's multi-turn benchmark (benchmark_serving_multi_turn.py), same flags.
    MultiTurn(Box<multi_turn::MultiTurnArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The recipe (TOML or YAML), or a YAML sweep config (`input_output`, `concurrency_prompts`).
    pub recipe: PathBuf,
    /// Print each case's `llmb bench` command line instead of running it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The baseline: a result file (with its .records.jsonl) or a folder of them.
    pub a: PathBuf,
    /// The candidate, the same way.
    pub b: PathBuf,
    /// Also write the comparison as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write a self-contained HTML page here: verdicts with their intervals, and A's and
    /// B's latency distributions overlaid.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// The smallest difference, in % of A, that can count as better or worse.
    #[arg(long, default_value_t = 1.0)]
    pub min_effect_pct: f64,
}

#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Folders (searched recursively) or result files of the shards.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The merged result file (its records go beside it as .records.jsonl).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Merge even when some shards' results are missing (they are named in the result).
    #[arg(long)]
    pub allow_missing: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AggregateArgs {
    /// Result files or folders holding them.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Write the CSV here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Directories holding result JSON files, their .records.jsonl and any -stages.json
    /// (not searched recursively); single files are taken as given.
    #[arg(required_unless_present = "indir", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// The same as DIR, as report scripts spell it (`--indir results/`); repeatable.
    #[arg(long = "indir", value_name = "DIR")]
    pub indir: Vec<PathBuf>,
    /// Where to write the report (default: DIR/report.html, in the first DIR).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Per-request charts for the runs whose file name contains this (repeatable). Default:
    /// every run when there are at most 4, else the last one.
    #[arg(long = "run", value_name = "TEXT")]
    pub runs: Vec<String>,
    /// Requests drawn in each request timeline at most (the first ones by send time).
    #[arg(long, default_value_t = llmb_report::html::DEFAULT_TIMELINE_CAP)]
    pub max_timeline_requests: usize,
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Input/output length distributions of the prompts a `bench` with these flags would send.
    Stats(Box<BenchArgs>),
    /// Write the prompts a `bench` with these flags would send as clean JSONL (`--output`).
    Convert(Box<ConvertArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct ConvertArgs {
    /// Where to write the JSONL.
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create an adapter crate on plugin-sdk that builds to a .wasm with `cargo build --release`.
    New(PluginNewArgs),
    /// Write a plugin (embedded, installed or given with --plugin) out as its .wasm.
    Export(PluginExportArgs),
    /// Plugins in a registry index whose name or description holds TERM.
    Search(PluginSearchArgs),
    /// Install NAME[@VERSION] from a registry index, or a manifest (.json) or .wasm by path or
    /// URL. Refused before anything is stored: a wrong sha256, a missing, invalid or untrusted
    /// signature, a WIT version this llmb does not speak, imports it does not provide.
    Install(PluginInstallArgs),
    /// Installed plugins.
    List,
    /// Install the newest version of installed plugins from the index they came from.
    Update(PluginUpdateArgs),
    /// Remove an installed plugin: every version, or NAME@VERSION.
    Remove(PluginRemoveArgs),
    /// Check installed plugins again: sha256, signature, and that this llmb loads them.
    Verify(PluginVerifyArgs),
    /// Trust a publisher's ed25519 public key for signed plugins.
    Trust(PluginTrustArgs),
    /// Create a publisher key pair: the secret key goes to a file, the public key is printed.
    Keygen(PluginKeygenArgs),
    /// Add a .wasm to a registry index folder: its manifest (signed with --key) and the file.
    Publish(PluginPublishArgs),
    /// Write (or --check) the registry index of the first-party plugins, `registry/`.
    Index(PluginIndexArgs),
    /// Pin the plugins a run uses (the backend and dataset reader) in a lock file.
    Lock(PluginLockArgs),
}

/// Where a registry index is: a folder, a file:// or an http(s):// URL.
#[derive(Debug, Clone, Args)]
pub struct IndexArg {
    /// The registry index (a folder, file:// or http(s):// URL).
    #[arg(long, env = "LLMB_PLUGIN_INDEX", value_name = "DIR|URL")]
    pub index: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PluginExportArgs {
    /// The plugin's name.
    pub name: String,
    /// Where to write the .wasm.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Also consider these plugin files.
    #[arg(long = "plugin", value_name = "PATH.wasm")]
    pub plugins: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct PluginSearchArgs {
    /// Part of a name or description (all plugins when omitted).
    #[arg(default_value = "")]
    pub term: String,
    #[command(flatten)]
    pub index: IndexArg,
}

#[derive(Debug, Clone, Args)]
pub struct PluginInstallArgs {
    /// NAME[@VERSION] from the index, or a manifest (.json) or .wasm path or URL.
    pub spec: String,
    #[command(flatten)]
    pub index: IndexArg,
    /// Accept a plugin with no signature (a signature that is present must still verify
    /// under a trusted key). A bare .wasm has none.
    #[arg(long)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PluginUpdateArgs {
    /// Only this plugin (default: every installed plugin that came from an index).
    pub name: Option<String>,
    #[arg(long)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PluginRemoveArgs {
    /// NAME or NAME@VERSION.
    pub spec: String,
}

#[derive(Debug, Clone, Args)]
pub struct PluginVerifyArgs {
    /// Only this plugin (default: all installed).
    pub name: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PluginTrustArgs {
    /// The publisher's public key (base64, as `llmb plugin keygen` prints it).
    pub key: String,
    /// A name to remember it by.
    #[arg(long, default_value = "")]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct PluginKeygenArgs {
    /// File for the secret key (created with mode 0600; never share it).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct PluginPublishArgs {
    /// The plugin's .wasm.
    pub wasm: PathBuf,
    /// The index folder to add it to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// Sign with this secret key file (from `llmb plugin keygen`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Where users download it from; default: the .wasm is copied beside its manifest.
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long, default_value = "")]
    pub author: String,
    #[arg(long, default_value = "")]
    pub license: String,
    #[arg(long, default_value = "")]
    pub homepage: String,
}

#[derive(Debug, Clone, Args)]
pub struct PluginIndexArgs {
    /// The index folder.
    #[arg(default_value = "registry")]
    pub dir: PathBuf,
    /// Compare the folder with the embedded plugins instead of writing it; fails on any
    /// difference.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PluginLockArgs {
    /// The lock file.
    #[arg(long, default_value = "llmb.lock")]
    pub lock: PathBuf,
    /// The backend adapter to pin.
    #[arg(long, default_value = "openai")]
    pub backend: String,
    /// The dataset reader to pin.
    #[arg(long, default_value = "random")]
    pub dataset_name: String,
    /// Plugin files the run loads.
    #[arg(long = "plugin", value_name = "PATH.wasm")]
    pub plugins: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct PluginNewArgs {
    /// The adapter's name (what users pass to --backend).
    pub name: String,
    /// Directory to create (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Depend on plugin-sdk at this path (a checkout, or a vendored copy of the package)
    /// instead of by version from crates.io.
    #[arg(long)]
    pub sdk_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct PluginsArgs {
    /// Load a plugin component (repeatable).
    #[arg(long = "plugin", value_name = "PATH.wasm")]
    pub plugins: Vec<PathBuf>,
    /// Let --plugin load native adapter libraries (shown as `native (unsandboxed)`).
    #[arg(long)]
    pub allow_native: bool,
}

/// The simulator's timing model, shared by `llmb sim` and the in-process simulator of `bench`.
#[derive(Debug, Clone, Args)]
pub struct SimTiming {
    /// Time to first token, ms.
    #[arg(long = "sim-ttft-ms", default_value_t = 20.0)]
    pub ttft_ms: f64,
    /// Inter-token latency, ms.
    #[arg(long = "sim-itl-ms", default_value_t = 5.0)]
    pub itl_ms: f64,
    /// Jitter as a fraction of each delay (0.1 = ±10 %).
    #[arg(long = "sim-jitter", default_value_t = 0.0)]
    pub jitter: f64,
    /// Continuous-batching slowdown: ITL × (1 + this × (active streams − 1)).
    #[arg(long = "sim-batch-slowdown", default_value_t = 0.002)]
    pub batch_slowdown: f64,
    /// Extra TTFT per prompt token, µs (prefill cost).
    #[arg(long = "sim-prefill-us-per-token", default_value_t = 0.0)]
    pub prefill_us_per_token: f64,
    /// Output tokens each response spends reasoning before its answer, streamed in the reasoning
    /// channel of OpenAI chat (`reasoning_content`/`reasoning`), the Responses API (a reasoning
    /// item) and Anthropic Messages (a thinking block); other routes ignore it. Output lengths
    /// are unchanged: a response no longer than this is all reasoning.
    #[arg(long = "sim-reasoning-tokens", default_value_t = 0)]
    pub reasoning_tokens: u32,
    /// Disaggregated serving: each request's KV cache takes this long to reach the decode
    /// worker (added to TTFT), shown in /metrics as vLLM's `vllm:nixl_xfer_time_seconds`.
    #[arg(long = "sim-kv-transfer-ms", default_value_t = 0.0)]
    pub kv_transfer_ms: f64,
    /// Model a prefix cache: prompt prefixes seen before (16-token blocks) skip the prefill cost.
    #[arg(long = "sim-prefix-cache")]
    pub prefix_cache: bool,
    /// Requests the simulator generates at once; the rest wait in its queue (shown by its
    /// /metrics as waiting requests) and the wait adds to their TTFT.
    #[arg(long = "sim-max-batch")]
    pub max_batch: Option<usize>,
    /// Images one prompt may carry; a request with more gets vLLM's 400 ("At most N image(s)
    /// may be provided in one prompt."). Unlimited by default.
    #[arg(long = "sim-max-images-per-prompt", value_name = "N")]
    pub max_images_per_prompt: Option<usize>,
    /// Close connections idle this many seconds and announce `Keep-Alive: timeout=N` (llama.cpp
    /// and uvicorn use 5).
    #[arg(long = "sim-keep-alive-timeout", value_name = "SECS")]
    pub keep_alive_timeout: Option<f64>,
    /// Close each connection after this many requests (`Connection: close` on the last one).
    #[arg(long = "sim-keep-alive-max", value_name = "N")]
    pub keep_alive_max: Option<u32>,
    /// Answer every request with `Connection: close` (no keep-alive).
    #[arg(long = "sim-connection-close")]
    pub connection_close: bool,
    /// Drop, unanswered, a request arriving on a connection idle longer than this (the race of
    /// a server closing a connection just as the client reuses it).
    #[arg(long = "sim-drop-stale-after", value_name = "SECS")]
    pub drop_stale_after: Option<f64>,
}

/// `--ramp-up-strategy` (vLLM's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RampUpStrategy {
    Linear,
    Exponential,
}

#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Served model name.
    #[arg(long, default_value = "llmb-sim")]
    pub model: String,
    /// Require this API key (Authorization: Bearer).
    #[arg(long, env = "LLMB_SIM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where two servers share a route, which to imitate (`lightllm` for /generate_stream).
    #[arg(long)]
    pub dialect: Option<String>,
    /// Log when each piece of each response was really written, as a reference for a client's
    /// TTFT and ITL. CSV `request_id,kind,seq,mono_ns,body_bytes`: request_id is the request's
    /// `x-request-id` (else `sim-N`); kind is `request` (handler started), `head`, `token` (one
    /// streamed event carrying token number `seq`), `chunk` (any other streamed event: role,
    /// usage, [DONE]; `seq` counts them), `end` (whole body written); mono_ns is
    /// CLOCK_MONOTONIC in ns right after the write that completed the piece returned; body_bytes
    /// is the body offset at the piece's end (chunked framing not counted). Tokens and chunks are
    /// logged for every streamed route, other responses get request, head and end. HTTP/1.1 only:
    /// HTTP/2 connections are not logged. Flushed every 100 ms and on Ctrl-C.
    #[arg(long, value_name = "FILE")]
    pub send_log: Option<PathBuf>,
    #[command(flatten)]
    pub timing: SimTiming,
}

#[derive(Debug, Clone, Args)]
pub struct SelfbenchArgs {
    /// Events parsed per measurement.
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Output tokens per request in the side-by-side scenarios (64-token chat streams).
    #[arg(long, default_value_t = 64)]
    pub output_len: u32,
    /// Concurrent streams of the side-by-side levels (bare hyper client against llmb).
    #[arg(long, value_delimiter = ',', default_value = "16,256,1000,10000")]
    pub streams: Vec<usize>,
    /// A short run: side-by-side levels 16 and 256 only, one round, and no schedule-keeping
    /// section.
    #[arg(long)]
    pub quick: bool,
    /// Rounds of each side-by-side level (bare then llmb, each against a fresh simulator); the
    /// table shows each side's median round and the spread of the per-round ratio. One run on
    /// a shared machine moves the ratio by ±0.3 or more at low concurrency.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Seconds each WASM event-throughput thread parses.
    #[arg(long, default_value_t = 1.0)]
    pub wasm_seconds: f64,
    /// Seconds of arrivals in each schedule-keeping scenario.
    #[arg(long, default_value_t = 3.0)]
    pub schedule_seconds: f64,
    /// Only the parse-cost sections (WASM vs native, WASM events/s).
    #[arg(long)]
    pub parse_only: bool,
    /// The openai-chat adapter built as a native library (`cargo build --release --lib -p
    /// llmb-plugin-openai-chat`): its parse cost through the native C ABI is measured beside
    /// the WASM build's.
    #[arg(long, value_name = "LIB")]
    pub native_plugin: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Backend adapter (an embedded or --plugin one): vllm, openai, openai-chat, ...
    #[arg(long, default_value = "vllm")]
    pub backend: String,
    /// Server base URL, e.g. http://127.0.0.1:8000. Without it (and without --port) llmb starts
    /// its simulator in-process.
    #[arg(long)]
    pub base_url: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port (with --host) when --base-url is not given.
    #[arg(long)]
    pub port: Option<u16>,
    /// Request path; defaults to the adapter's (e.g. /v1/completions).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Model name sent to the server; asked from /v1/models when omitted.
    #[arg(long)]
    pub model: Option<String>,
    /// Model name shown in reports, when it differs from --model.
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Tokenizer: a tokenizer.json or a folder holding one (no downloads).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Without --tokenizer, keep the word-count estimate of input lengths instead of asking the
    /// server's tokenize route for every prompt before the run.
    #[arg(long)]
    pub no_server_tokenize: bool,

    /// Dataset plugin: random, random-mm (random text with random images, see --random-mm-*),
    /// custom, sharegpt, sonnet, burstgpt, hf, longbench, conversations, shared-prefix, audio,
    /// images (local image files), or mixed (several, see --mix).
    #[arg(long, default_value = "random")]
    pub dataset_name: String,
    /// The dataset's file; for `hf` also a folder holding a downloaded dataset snapshot, for
    /// `images` a folder of images.
    #[arg(long)]
    pub dataset_path: Option<PathBuf>,
    /// With `--dataset-name mixed`: WEIGHT:DATASET[:PATH], repeatable, e.g.
    /// `--mix 3:sharegpt:ShareGPT.json --mix 1:random` sends three ShareGPT prompts per random one.
    #[arg(long = "mix", value_name = "WEIGHT:DATASET[:PATH]")]
    pub mix: Vec<String>,
    /// hf: the split to read from a dataset folder (files or folders named after it).
    #[arg(long)]
    pub hf_split: Option<String>,
    /// hf: the subset (config) folder of a dataset folder.
    #[arg(long)]
    pub hf_subset: Option<String>,
    /// hf: fixed output length for every prompt.
    #[arg(long)]
    pub hf_output_len: Option<u32>,
    /// hf: column holding the prompt text (default: the first of prompt, question, instruction, ...).
    #[arg(long)]
    pub hf_prompt_column: Option<String>,
    /// hf: column holding chat messages (default: messages, conversations, ...).
    #[arg(long)]
    pub hf_messages_column: Option<String>,
    /// hf: column holding each row's output length in tokens.
    #[arg(long)]
    pub hf_output_len_column: Option<String>,
    /// hf: column holding a reference answer whose token count is the output length.
    #[arg(long)]
    pub hf_output_column: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub num_prompts: usize,
    #[arg(long, default_value_t = 1024)]
    pub random_input_len: u32,
    #[arg(long, default_value_t = 128)]
    pub random_output_len: u32,
    #[arg(long, default_value_t = 0.0)]
    pub random_range_ratio: f64,
    #[arg(long, default_value_t = 0)]
    pub random_prefix_len: u32,
    #[arg(long, default_value_t = 256)]
    pub custom_output_len: u32,
    /// Keep the dataset's order instead of shuffling it with --seed.
    #[arg(long)]
    pub disable_shuffle: bool,
    /// ShareGPT: fixed output length instead of the recorded completion's length.
    #[arg(long)]
    pub sharegpt_output_len: Option<u32>,
    #[arg(long, default_value_t = 550)]
    pub sonnet_input_len: u32,
    #[arg(long, default_value_t = 150)]
    pub sonnet_output_len: u32,
    #[arg(long, default_value_t = 200)]
    pub sonnet_prefix_len: u32,
    /// Option for the dataset reader KEY=VALUE (repeatable), e.g. shared-prefix-groups=8.
    #[arg(long = "dataset-opt", value_name = "KEY=VALUE")]
    pub dataset_opts: Vec<String>,
    /// When the dataset has fewer usable samples than asked, reuse them instead of stopping short.
    #[arg(long)]
    pub dataset_cycle: bool,
    /// Prepend this file's text to every request: a system message for chat prompts, the
    /// start of the prompt otherwise.
    #[arg(long)]
    pub system_prompt_file: Option<PathBuf>,

    /// Requests per second ("inf" sends all at once); a list (1,2,4) runs one stage per rate.
    #[arg(long, default_value = "inf", value_parser = parse_rate, value_delimiter = ',')]
    pub request_rate: Vec<f64>,
    /// Gamma shape of the gaps: 1 = Poisson, < 1 burstier, > 1 more regular.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Cap on requests in flight; the wait is recorded as client queue time, not TTFT.
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Ramp the request rate from --ramp-up-start-rps to --ramp-up-end-rps over the run.
    #[arg(long, requires_all = ["ramp_up_start_rps", "ramp_up_end_rps"])]
    pub ramp_up_strategy: Option<RampUpStrategy>,
    #[arg(long)]
    pub ramp_up_start_rps: Option<f64>,
    #[arg(long)]
    pub ramp_up_end_rps: Option<f64>,
    /// Closed loop: N clients, each sending its next request when the previous one finished.
    #[arg(long)]
    pub num_clients: Option<usize>,
    /// Start the clients evenly over this many seconds (default: 0.1 s per client).
    #[arg(long)]
    pub ramp_up_time: Option<f64>,
    /// Clients issue no new request after this many seconds.
    #[arg(long)]
    pub client_stop_time: Option<f64>,
    /// Requests per client sequence (closed loop); turns per conversation at most.
    #[arg(long)]
    pub num_turns: Option<usize>,
    /// Seconds a client waits between the turns of a conversation.
    #[arg(long, default_value_t = 0.0)]
    pub think_time: f64,
    /// Share of requests the client cancels on purpose (0.1 or 10%), picked by --seed, each
    /// --cancel-after ms after it was written: as users who close a chat mid-answer. Cancelled
    /// requests are recorded (kind `cancelled`) with what arrived before.
    #[arg(long, value_parser = parse_share, value_name = "P")]
    pub cancel_rate: Option<f64>,
    /// Milliseconds from a request written to its cancellation (with --cancel-rate).
    #[arg(long, value_name = "MS")]
    pub cancel_after: Option<f64>,
    /// AIPerf's name for --cancel-rate, in percent (10 = 10 % of requests).
    #[arg(long, value_name = "PCT", conflicts_with = "cancel_rate")]
    pub request_cancellation_rate: Option<f64>,
    /// AIPerf's name for --cancel-after, in seconds.
    #[arg(long, value_name = "SECONDS", conflicts_with = "cancel_after")]
    pub request_cancellation_delay: Option<f64>,
    /// Statistics per window of this length (e.g. 5s) in the console, result JSON
    /// (`llmb.slices`), a `.slices.csv` beside the records and the HTML report.
    #[arg(long, value_parser = parse_duration_arg, value_name = "DURATION")]
    pub slice_duration: Option<Duration>,
    /// Send for this long (e.g. 60s, 2m) instead of a fixed --num-prompts.
    #[arg(long, value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Requests sent first and left out of the statistics.
    #[arg(long, default_value_t = 0)]
    pub num_warmups: usize,
    /// Requests meant to go out in this first period are left out of the statistics.
    #[arg(long, value_parser = parse_duration_arg)]
    pub warmup_duration: Option<Duration>,
    /// Concurrency sweep: a list such as 1,2,4-32 (a-b doubles, a-b:s steps by s), one stage each.
    #[arg(long)]
    pub concurrency: Option<String>,
    /// Requests per sweep stage (default: --num-prompts).
    #[arg(long)]
    pub requests_per_stage: Option<usize>,
    /// Send the same batch this many times (2 = dual round, for prefix/KV-cache effects).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Repeat the whole benchmark this many times with the same seed (each run saved with a
    /// `-runK` suffix), then give each metric's mean, std, CV and 95 % interval across runs and
    /// name the metrics too noisy to compare.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub num_runs: u32,
    /// Pause between repeated runs (e.g. 10s), so one run's tail does not load the next.
    #[arg(long, value_parser = parse_duration_arg, value_name = "DURATION")]
    pub run_cooldown: Option<Duration>,
    /// The file-name suffix of the current repeated run (`-run2`), set by `--num-runs`.
    #[arg(skip)]
    pub run_suffix: String,
    /// Find the highest load that meets every --slo: `rate` (req/s) or `concurrency`. Doubles
    /// the load from --search-start until a stage misses, then bisects; each stage is a full
    /// run of --num-prompts (or --duration) saved like any other, and a stage that can no
    /// longer meet a percentile SLO stops early.
    /// (`--sla-variable request_rate|max_concurrency`, vLLM's `bench sweep serve_sla` names,
    /// means the same.)
    #[arg(
        long,
        alias = "sla-variable",
        value_parser = ["rate", "concurrency", "request_rate", "max_concurrency"]
    )]
    pub search: Option<String>,
    /// The SLOs of --search: `p99_ttft_ms<=500,mean_tpot_ms<=50` (mean, median or pNN of ttft,
    /// tpot, itl, e2el, ttfo; a failed request misses every SLO).
    #[arg(
        long,
        value_name = "LIST",
        requires = "search",
        conflicts_with = "sla_params"
    )]
    pub slo: Option<String>,
    /// The SLOs of --search from a vLLM `bench sweep serve_sla --sla-params` file: a JSON list
    /// holding one object such as `{"p99_ttft_ms": "<=200", "p99_tpot_ms": "<=20"}`.
    #[arg(long, value_name = "FILE", requires = "search")]
    pub sla_params: Option<PathBuf>,
    /// The first load --search tries (default 1).
    #[arg(long, default_value_t = 1.0, value_name = "LOAD")]
    pub search_start: f64,
    /// Most stages --search runs.
    #[arg(long, default_value_t = 12, value_name = "N")]
    pub search_max_stages: usize,
    /// --search rate stops bisecting when the bracket is narrower than this percentage.
    #[arg(long, default_value_t = 10.0, value_name = "PCT")]
    pub search_tolerance: f64,
    /// Percentile SLOs that end a stage as soon as it cannot meet them (set by --search).
    #[arg(skip)]
    pub stop_on_slos: Vec<llmb_engine::slo_search::Slo>,
    /// Trace replay speed: 2 sends a recorded trace twice as fast.
    #[arg(long, default_value_t = 1.0)]
    pub trace_speed: f64,

    /// Extra request header KEY=VALUE (repeatable). Values of credential-like names
    /// (Authorization, Cookie, *-key, *-token, ...) are secret: never printed or saved.
    #[arg(long = "header", value_name = "KEY=VALUE", num_args = 0..)]
    pub headers: Vec<String>,
    /// A request header whose value is secret whatever its name (repeatable): sent like
    /// --header, never printed or saved.
    #[arg(long = "secret-header", value_name = "KEY=VALUE")]
    pub secret_headers: Vec<String>,
    /// JSON object merged into every request body.
    #[arg(long)]
    pub extra_body: Option<String>,
    /// Extra CA certificates (PEM) to trust for https:// servers, besides the Mozilla roots.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// Seconds an idle connection is kept for the next request. Shorter when the server
    /// announces less (`Keep-Alive: timeout=N`); the default stays under the 5 s of llama.cpp,
    /// uvicorn (vLLM, SGLang) and Node servers.
    #[arg(long, default_value_t = llmb_engine::transport::pool::DEFAULT_IDLE_TIMEOUT.as_secs_f64())]
    pub pool_idle_timeout: f64,
    /// Skip the one request sent before the timed run, which stops a run the server cannot
    /// serve (wrong model, route or key) with the server's own message.
    #[arg(long)]
    pub no_preflight: bool,
    /// Start cold: do not open the run's connections before the timed phase. By default llmb
    /// opens as many as the run will use at once (the concurrency, the number of clients, or
    /// the rate times an assumed 2 s latency), so the first wave's TTFT does not include a
    /// connection storm.
    #[arg(long)]
    pub no_warm_connections: bool,
    /// Seconds allowed to open a connection (TCP and TLS).
    #[arg(long, default_value_t = llmb_engine::transport::pool::DEFAULT_CONNECT_TIMEOUT.as_secs_f64())]
    pub connect_timeout: f64,
    /// Seconds to wait for the response head once the request is sent. Unset (as in curl and
    /// Go): --timeout bounds it, since a non-streaming head carries the whole generation and
    /// some servers send a stream's head with its first token, after the queue.
    #[arg(long, value_name = "SECS")]
    pub header_timeout: Option<f64>,
    /// Seconds of silence allowed between two reads of a response body once it has begun (a
    /// stalled stream fails with kind `timeout`); 60 is nginx's proxy_read_timeout. The wait for
    /// the first bytes (queue and prefill) is bounded by --timeout alone.
    #[arg(long, value_name = "SECS", default_value_t = llmb_engine::transport::limits::DEFAULT_READ_IDLE_TIMEOUT.as_secs_f64())]
    pub read_idle_timeout: f64,
    /// Most bytes read for one response body, streamed or not (65536, 64KiB, 256MiB, 1GiB).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = llmb_engine::transport::limits::parse_size)]
    pub max_response_bytes: u64,
    /// Most output kept per request: generated text plus reasoning, each chunk timestamp
    /// counting 8 bytes.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = llmb_engine::transport::limits::parse_size)]
    pub max_text_bytes: u64,
    /// Largest frame the host framer gathers: an SSE event or line, an NDJSON line, a gRPC
    /// message.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = llmb_engine::transport::limits::parse_size)]
    pub max_frame_bytes: u64,
    /// API key (or OPENAI_API_KEY); sent as a bearer token, or in the header the adapter names
    /// (the anthropic adapter: `x-api-key`); never printed or saved.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Send --api-key as it is in this header instead of `Authorization: Bearer` (Azure
    /// OpenAI's `api-key`); `authorization` sends it as Bearer even where the adapter names
    /// another header (vLLM's Anthropic route).
    #[arg(long, value_name = "HEADER")]
    pub api_key_header: Option<String>,
    /// Ask the server to ignore EOS so outputs have exactly the requested length.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Ask for whole responses instead of streams: only end-to-end latency is measured.
    #[arg(long)]
    pub no_stream: bool,
    #[arg(long)]
    pub temperature: Option<f32>,

    /// Metrics with percentile lines: ttft,tpot,itl,e2el.
    #[arg(long, default_value = "ttft,tpot,itl")]
    pub percentile_metrics: String,
    /// Percentiles to report, e.g. 50,90,99.
    #[arg(long, default_value = "99")]
    pub metric_percentiles: String,
    /// SLOs from a TOML file: ttft, tpot, itl (a request's longest chunk gap) and e2el in ms;
    /// --goodput items override the file's.
    #[arg(long)]
    pub slo_file: Option<PathBuf>,
    /// SLOs for goodput, e.g. ttft:200 tpot:50 (ms).
    #[arg(long, num_args = 1..)]
    pub goodput: Vec<String>,

    /// Save the result JSON (vLLM's keys).
    #[arg(long)]
    pub save_result: bool,
    /// Add per-request arrays (ttfts, itls, generated_texts, errors) to the result JSON.
    #[arg(long)]
    pub save_detailed: bool,
    /// Scrape the server's Prometheus metrics before, during and after each stage: a URL, or a
    /// path under --base-url such as /metrics.
    #[arg(long)]
    pub server_metrics_url: Option<String>,
    /// Seconds between scrapes during a stage.
    #[arg(long, default_value_t = 1.0)]
    pub server_metrics_interval: f64,
    /// Which metrics to keep: `known` (running/waiting requests, KV cache, prefix cache, token
    /// counters of vLLM, SGLang, TGI, LMDeploy, llama.cpp), `all`, or a comma-separated list.
    #[arg(long, value_name = "known|all|NAME,...")]
    pub server_metrics: Option<String>,
    /// Append the result to the result file as one more JSON line instead of replacing it
    /// (vLLM's --append-result; `llmb aggregate` reads such files).
    #[arg(long)]
    pub append_result: bool,
    /// Directory for the result JSON and the per-request records.
    #[arg(long, default_value = "results")]
    pub result_dir: PathBuf,
    #[arg(long)]
    pub result_filename: Option<String>,
    /// Label for the result (defaults to the backend name).
    #[arg(long)]
    pub label: Option<String>,
    /// Do not write per-request records (JSONL).
    #[arg(long)]
    pub no_records: bool,
    /// No progress line.
    #[arg(long)]
    pub disable_tqdm: bool,

    /// Load a plugin component (repeatable).
    #[arg(long = "plugin", value_name = "PATH.wasm")]
    pub plugins: Vec<PathBuf>,
    /// Threads for the client's runtime (default: one core left to the OS and an in-process
    /// simulator: 1 on a 2-core machine). Fewer threads means fewer cross-thread wakeups per token.
    #[arg(long)]
    pub client_threads: Option<usize>,
    /// Option for the backend adapter KEY=VALUE (repeatable).
    #[arg(long = "plugin-opt", value_name = "KEY=VALUE")]
    pub plugin_opts: Vec<String>,
    /// Time one backend plugin call may take, in microseconds (see --plugin-metering); a call
    /// that uses it up fails its request as a `deadline` plugin fault.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = llmb_engine::plugin::DEFAULT_CALL_BUDGET_US)]
    pub plugin_call_budget: u64,
    /// How a call past --plugin-call-budget is caught: `epoch` (wall clock, checked at every
    /// function entry and loop head, ticking every 50 ms: the fastest) or `fuel` (instructions
    /// counted: a budget means the same on a loaded machine, but parsing costs ~40% more).
    #[arg(long, value_name = "epoch|fuel", default_value = "epoch", value_parser = ["epoch", "fuel"])]
    pub plugin_metering: String,
    /// Let --plugin load native adapter libraries (.so, .dylib, .dll built with plugin-sdk's
    /// export_backend_native!). They run unsandboxed, with your rights and no time or memory
    /// limit: only for libraries you trust.
    #[arg(long)]
    pub allow_native: bool,
    /// Run as shard INDEX of COUNT (`0/4`): this process sends every COUNT-th arrival of the
    /// plan (or runs every COUNT-th client) and numbers requests fleet-wide. Without it, the
    /// shard comes from JOB_COMPLETION_INDEX (Kubernetes Indexed Job, with --shards),
    /// SLURM_PROCID/SLURM_NTASKS, OMPI_COMM_WORLD_RANK/SIZE or PMI_RANK/PMI_SIZE.
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<String>,
    /// The number of shards when the environment gives only the index (Kubernetes).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Start the timed phase at this wall-clock time (RFC 3339, e.g. 2026-12-06T21:00:00Z, or
    /// Unix seconds), so shards on several machines start together. A process that is late
    /// refuses to run unless --allow-late-start.
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    pub start_at: Option<std::time::SystemTime>,
    /// Run even when --start-at has already passed (says how late in the result).
    #[arg(long)]
    pub allow_late_start: bool,
    /// A folder every shard sees (e.g. the results volume): shards meet there before each
    /// stage of a sweep, so stages run in lockstep across machines.
    #[arg(long, value_name = "DIR")]
    pub sync_dir: Option<PathBuf>,
    /// A lock file (`llmb plugin lock` writes one): the run refuses any plugin it would use
    /// that the lock does not pin by name, version and sha256.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Backend adapter instances alive at once (~66 KiB each). Up to this many in-flight
    /// requests get an instance each, so a plugin fault fails only its own request; past it,
    /// requests share the least-loaded instance and a fault fails every request sharing it.
    #[arg(long, value_name = "N", default_value_t = llmb_engine::plugin::backend::DEFAULT_MAX_INSTANCES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub plugin_instances: usize,
    /// Stop the run (as Ctrl-C does: no new requests, a grace period, everything written) once
    /// this many requests have failed with a plugin fault (trap, deadline, memory).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_plugin_faults: Option<u64>,

    #[command(flatten)]
    pub sim: SimTiming,
    #[command(flatten)]
    pub vllm: crate::args::vllm::VllmCompatArgs,
    #[command(flatten)]
    pub sweep_compat: crate::args::sweep::SweepCompatArgs,
}

/// The client runtime's worker count: `requested`, else all cores but one.
pub fn client_threads(requested: Option<usize>) -> usize {
    requested.filter(|n| *n > 0).unwrap_or_else(|| {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        cores.saturating_sub(1).max(1)
    })
}

/// `--start-at`: RFC 3339, or Unix seconds (fractions allowed).
fn parse_start_at(s: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(secs) = s.trim().parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    humantime::parse_rfc3339_weak(s.trim()).map_err(|e| {
        format!("{s:?} is neither RFC 3339 (2026-12-06T21:00:00Z) nor Unix seconds: {e}")
    })
}

/// A share in [0, 1], written as a fraction (`0.1`) or a percentage (`10%`).
fn parse_share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let value = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a share (write 0.1 or 10%)"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{s:?} is not between 0 and 1 (0 % and 100 %)"))
    }
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    llmb_engine::sweep::parse_duration(s).map_err(|e| format!("{e:#}"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "inf" | "infinity" => Ok(f64::INFINITY),
        other => other
            .parse::<f64>()
            .ok()
            .filter(|r| *r > 0.0)
            .ok_or_else(|| format!("expected a positive number or inf, got {s:?}")),
    }
}

/// Splits `KEY=VALUE`, naming the flag in the error.
pub fn split_kv(flag: &str, item: &str) -> anyhow::Result<(String, String)> {
    match item.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => anyhow::bail!("{flag} expects KEY=VALUE, got {item:?}"),
    }
}

impl BenchArgs {
    /// Defaults for library callers and tests (the same as the command line's).
    pub fn defaults() -> Self {
        let cli = Cli::parse_from(["llmb", "bench"]);
        match cli.command {
            Command::Bench(args) => *args,
            _ => unreachable!(),
        }
    }
}
