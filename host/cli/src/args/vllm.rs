//! The flags of `vllm bench serve` (0.32.0) that `bench` has no own flag for, so a vLLM user's
//! command line parses unchanged (`tests/vllm_flags.rs` checks every flag of vLLM's help).
//!
//! Flags that mean something for llmb are implemented the way vLLM does them: sampling
//! parameters go into every request body (under `--extra-body`, which wins), `--lora-modules`
//! names a LoRA adapter per request as its model, `--request-id-prefix` sends `x-request-id`,
//! `--metadata` lands in the result JSON, `--ready-check-timeout-sec` waits for the server,
//! `--input-len`/`--output-len` set the dataset lengths, `--profile` calls the server's
//! profiler routes, `--random-mm-*` shape the `random-mm` dataset's images. The rest are accepted and [`VllmCompatArgs::notices`] says in one line each
//! why they change nothing here. Every default is neutral: without these flags nothing changes.

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use llmb_engine::runner::Lora;
use serde_json::{Map, Value};

/// `--lora-assignment` (vLLM's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LoraAssignment {
    /// A module drawn at random (seeded by `--seed`) for each request.
    #[default]
    Random,
    /// The modules in turn, by request number.
    RoundRobin,
}

/// `vllm bench serve` flags without an llmb flag of the same name.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "vLLM bench serve compatibility")]
pub struct VllmCompatArgs {
    /// Sampling parameter top_p, sent in every request body (--extra-body wins).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Sampling parameter top_k, sent in every request body (--extra-body wins).
    #[arg(long, allow_negative_numbers = true)]
    pub top_k: Option<i64>,
    /// Sampling parameter min_p, sent in every request body (--extra-body wins).
    #[arg(long)]
    pub min_p: Option<f64>,
    /// Sampling parameter frequency_penalty, sent in every request body (--extra-body wins).
    #[arg(long, allow_negative_numbers = true)]
    pub frequency_penalty: Option<f64>,
    /// Sampling parameter presence_penalty, sent in every request body (--extra-body wins).
    #[arg(long, allow_negative_numbers = true)]
    pub presence_penalty: Option<f64>,
    /// Sampling parameter repetition_penalty, sent in every request body (--extra-body wins).
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
    /// Completions backends (vllm, openai): ask for this many logprobs per token.
    #[arg(long)]
    pub logprobs: Option<u32>,

    /// LoRA adapter names the server was started with: each request names one as its model.
    #[arg(long, num_args = 1.., value_name = "LORA_MODULES")]
    pub lora_modules: Vec<String>,
    /// How requests get their --lora-modules entry: random (seeded) or round-robin.
    #[arg(long)]
    pub lora_assignment: Option<LoraAssignment>,
    /// KEY=VALUE pairs saved as top-level keys of the result JSON.
    #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Send `x-request-id: PREFIX<n>` with every request (n = the request's number in the run).
    #[arg(long)]
    pub request_id_prefix: Option<String>,
    /// Skip TLS certificate verification (as curl -k); `--ca-cert FILE` is the safe way to
    /// trust a self-signed server.
    #[arg(long)]
    pub insecure: bool,
    /// Wait up to this many seconds for the server to answer a first request before the run
    /// (0: only check that it listens).
    #[arg(long, default_value_t = 0)]
    pub ready_check_timeout_sec: u64,
    /// Input length for any dataset: sets --random-input-len and --sonnet-input-len.
    #[arg(long)]
    pub input_len: Option<u32>,
    /// Output length for any dataset: sets the random, sonnet, sharegpt, custom, hf and
    /// shared-prefix output lengths.
    #[arg(long)]
    pub output_len: Option<u32>,
    /// Replay a dataset's recorded timestamps (llmb does so whenever the records have them).
    #[arg(long, overrides_with = "no_self_timed")]
    pub self_timed: bool,
    /// Ignore a dataset's recorded timestamps and use --request-rate instead.
    #[arg(long, overrides_with = "self_timed")]
    pub no_self_timed: bool,
    /// Call the server's /start_profile before the run and /stop_profile after it (vLLM's
    /// profiler; the server needs --profiler-config).
    #[arg(long)]
    pub profile: bool,

    /// random-mm: images per request around which the count is drawn (default 1).
    #[arg(long)]
    pub random_mm_base_items_per_request: Option<u32>,
    /// random-mm: image sizes and their probabilities, as vLLM writes them:
    /// '{(height, width, 1): p, ...}' (default '{(256, 256, 1): 0.5, (720, 1280, 1): 0.5}';
    /// images only: a num_frames above 1 needs probability 0).
    #[arg(long)]
    pub random_mm_bucket_config: Option<String>,
    /// random-mm: the most images a request may carry, '{"image": N}' (default 255).
    #[arg(long)]
    pub random_mm_limit_mm_per_prompt: Option<String>,
    /// random-mm: images per request are drawn uniformly from [floor(n*(1-r)), ceil(n*(1+r))]
    /// for base n and this r in [0, 1] (default 0).
    #[arg(long)]
    pub random_mm_num_mm_items_range_ratio: Option<f64>,

    // Accepted with a notice (see `notices`): hidden from --help.
    #[arg(long, hide = true)]
    pub tokenizer_mode: Option<String>,
    #[arg(long, hide = true)]
    pub trust_remote_code: bool,
    #[arg(long, hide = true)]
    pub skip_tokenizer_init: bool,
    #[arg(long, hide = true)]
    pub skip_chat_template: bool,
    #[arg(long, hide = true)]
    pub chat_template_kwargs: Option<String>,
    #[arg(long, hide = true)]
    pub use_beam_search: bool,
    #[arg(long, hide = true)]
    pub no_oversample: bool,
    #[arg(long, hide = true)]
    pub enable_multimodal_chat: bool,
    #[arg(long, hide = true)]
    pub plot_timeline: bool,
    #[arg(long, hide = true)]
    pub plot_dataset_stats: bool,
    #[arg(long, hide = true)]
    pub timeline_itl_thresholds: Option<String>,
    #[arg(long, hide = true)]
    pub probe_request_rate: Option<f64>,
    #[arg(long, hide = true)]
    pub hf_name: Option<String>,
    #[arg(long, hide = true)]
    pub custom_ensure_client_side_data: bool,
    #[arg(long, hide = true)]
    pub spec_bench_category: Option<String>,
    #[arg(long, hide = true)]
    pub spec_bench_output_len: Option<i64>,
    #[arg(long, hide = true)]
    pub timed_trace_chunk_hash_size: Option<u32>,
    #[arg(long, hide = true)]
    pub timed_trace_label_hash_ids: Option<String>,
    #[arg(long, hide = true)]
    pub timed_trace_label_input_length: Option<String>,
    #[arg(long, hide = true)]
    pub timed_trace_label_output_length: Option<String>,
    #[arg(long, hide = true)]
    pub timed_trace_label_timestamp: Option<String>,
    #[arg(long, hide = true)]
    pub timed_trace_sec_multiplier: Option<f64>,
    #[arg(long, hide = true)]
    pub blazedit_max_distance: Option<f64>,
    #[arg(long, hide = true)]
    pub blazedit_min_distance: Option<f64>,
    #[arg(long, hide = true)]
    pub asr_max_audio_len_sec: Option<f64>,
    #[arg(long, hide = true)]
    pub asr_min_audio_len_sec: Option<f64>,
    #[arg(long, hide = true)]
    pub no_reranker: bool,
    #[arg(long, hide = true)]
    pub random_batch_size: Option<u32>,
    #[arg(long, hide = true)]
    pub bfcl_categories: Option<String>,
    #[arg(long, hide = true)]
    pub prefix_repetition_num_prefixes: Option<u32>,
    #[arg(long, hide = true)]
    pub prefix_repetition_output_len: Option<u32>,
    #[arg(long, hide = true)]
    pub prefix_repetition_prefix_len: Option<u32>,
    #[arg(long, hide = true)]
    pub prefix_repetition_suffix_len: Option<u32>,
    #[arg(long, hide = true)]
    pub speed_bench_category: Option<String>,
    #[arg(long, hide = true, value_parser = [
        "throughput_32k", "throughput_8k", "throughput_2k", "qualitative", "throughput_16k",
        "throughput_1k",
    ])]
    pub speed_bench_dataset_subset: Option<String>,
    #[arg(long, hide = true)]
    pub speed_bench_output_len: Option<u32>,
}

/// Backends whose APIs take vLLM's sampling parameters at the top level of the body (vLLM
/// allows them only for its OpenAI-compatible backends).
const OPENAI_COMPATIBLE: &[&str] = &[
    "vllm",
    "openai",
    "openai-chat",
    "openai-responses",
    "scalellm",
];
/// Backends speaking `/v1/completions`, where `logprobs` is a count.
const COMPLETIONS: &[&str] = &["vllm", "openai", "scalellm"];

impl VllmCompatArgs {
    /// `--self-timed` / `--no-self-timed`: `Some(false)` ignores a dataset's timestamps.
    pub fn self_timed(&self) -> Option<bool> {
        match (self.self_timed, self.no_self_timed) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }

    /// When to give up waiting for the server (`--ready-check-timeout-sec`), counted from now.
    pub fn ready_deadline(&self) -> Option<Instant> {
        (self.ready_check_timeout_sec > 0)
            .then(|| Instant::now() + Duration::from_secs(self.ready_check_timeout_sec))
    }

    /// `--input-len`/`--output-len` over the per-dataset lengths, as vLLM maps them. The
    /// options are read last-wins, so `--dataset-opt` items pushed after these still win.
    pub fn override_lengths(&self, options: &mut Vec<(String, String)>) {
        if let Some(n) = self.input_len {
            for key in ["random-input-len", "sonnet-input-len"] {
                options.push((key.into(), n.to_string()));
            }
        }
        if let Some(n) = self.output_len {
            for key in [
                "random-output-len",
                "sonnet-output-len",
                "sharegpt-output-len",
                "custom-output-len",
                "hf-output-len",
                "shared-prefix-output-len",
                "images-output-len",
            ] {
                options.push((key.into(), n.to_string()));
            }
        }
    }

    /// `--random-mm-*`, for the `random-mm` reader as options of the same names (given ones
    /// only: the reader has vLLM's defaults).
    pub fn random_mm_options(&self, options: &mut Vec<(String, String)>) {
        for (key, value) in [
            (
                "random-mm-base-items-per-request",
                self.random_mm_base_items_per_request.map(|n| n.to_string()),
            ),
            (
                "random-mm-bucket-config",
                self.random_mm_bucket_config.clone(),
            ),
            (
                "random-mm-limit-mm-per-prompt",
                self.random_mm_limit_mm_per_prompt.clone(),
            ),
            (
                "random-mm-num-mm-items-range-ratio",
                self.random_mm_num_mm_items_range_ratio
                    .map(|r| r.to_string()),
            ),
        ] {
            if let Some(value) = value {
                options.push((key.into(), value));
            }
        }
    }

    /// The sampling parameters vLLM puts in every request body.
    pub fn sampling(&self, backend: &str) -> Map<String, Value> {
        let mut body = Map::new();
        let mut put = |key: &str, v: Option<Value>| {
            if let Some(v) = v {
                body.insert(key.into(), v);
            }
        };
        put("top_p", self.top_p.map(Value::from));
        put("top_k", self.top_k.map(Value::from));
        put("min_p", self.min_p.map(Value::from));
        put("frequency_penalty", self.frequency_penalty.map(Value::from));
        put("presence_penalty", self.presence_penalty.map(Value::from));
        put(
            "repetition_penalty",
            self.repetition_penalty.map(Value::from),
        );
        if COMPLETIONS.contains(&backend) {
            put("logprobs", self.logprobs.map(Value::from));
        }
        body
    }

    /// The LoRA plan for the run, if `--lora-modules` was given.
    pub fn lora(&self, seed: u64) -> Option<Lora> {
        let assignment = match self.lora_assignment.unwrap_or_default() {
            LoraAssignment::Random => llmb_engine::runner::LoraAssignment::Random,
            LoraAssignment::RoundRobin => llmb_engine::runner::LoraAssignment::RoundRobin,
        };
        Lora::new(self.lora_modules.clone(), assignment, seed)
    }

    /// One line for each given flag that changes nothing in llmb, saying why.
    pub fn notices(&self, backend: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut note = |given: bool, flag: &str, why: &str| {
            if given {
                out.push(format!("note: {flag} has no effect in llmb: {why}"));
            }
        };
        let no_dataset =
            |name: &str| format!("llmb has no {name} dataset (see --dataset-name in the README)");
        note(
            self.tokenizer_mode
                .as_deref()
                .is_some_and(|m| !matches!(m, "auto" | "hf")),
            "--tokenizer-mode",
            "--tokenizer reads a Hugging Face tokenizer.json; other tokenizer kinds are not available",
        );
        note(
            self.trust_remote_code,
            "--trust-remote-code",
            "no model code is ever run; tokenizers are read from tokenizer.json",
        );
        note(
            self.skip_tokenizer_init,
            "--skip-tokenizer-init",
            "a tokenizer is loaded only with --tokenizer",
        );
        note(
            self.skip_chat_template,
            "--skip-chat-template",
            "prompts are never wrapped in a chat template client-side (chat backends send messages)",
        );
        note(
            self.chat_template_kwargs.is_some(),
            "--chat-template-kwargs",
            "no chat template is rendered client-side; for the server's, use --extra-body '{\"chat_template_kwargs\":{...}}'",
        );
        note(
            self.use_beam_search,
            "--use-beam-search",
            "beam search is never asked for; put your server's beam-search parameters in --extra-body",
        );
        note(
            self.no_oversample,
            "--no-oversample",
            "a short dataset is never oversampled unless --dataset-cycle is given",
        );
        note(
            self.enable_multimodal_chat,
            "--enable-multimodal-chat",
            "the image datasets (random-mm, images) always send chat messages with their images",
        );
        note(
            self.plot_timeline || self.timeline_itl_thresholds.is_some(),
            "--plot-timeline/--timeline-itl-thresholds",
            "`llmb report DIR` draws per-request timelines from the saved records",
        );
        note(
            self.plot_dataset_stats,
            "--plot-dataset-stats",
            "`llmb dataset stats` shows the length distributions (a summary is printed before every run)",
        );
        note(
            self.probe_request_rate.is_some_and(|r| r > 0.0),
            "--probe-request-rate",
            "probe requests alongside the workload are not supported",
        );
        note(
            self.hf_name.is_some(),
            "--hf-name",
            "the hf reader reads local files and finds the columns itself (--hf-prompt-column etc.)",
        );
        note(
            self.custom_ensure_client_side_data,
            "--custom-ensure-client-side-data",
            "the images dataset sends the bytes of the files it reads, and image_url entries as URLs",
        );
        note(
            self.spec_bench_category.is_some() || self.spec_bench_output_len.is_some(),
            "--spec-bench-*",
            &no_dataset("spec_bench"),
        );
        note(
            self.speed_bench_category.is_some()
                || self.speed_bench_dataset_subset.is_some()
                || self.speed_bench_output_len.is_some(),
            "--speed-bench-*",
            &no_dataset("speed_bench"),
        );
        note(
            self.timed_trace_chunk_hash_size.is_some()
                || self.timed_trace_label_hash_ids.is_some()
                || self.timed_trace_label_input_length.is_some()
                || self.timed_trace_label_output_length.is_some()
                || self.timed_trace_label_timestamp.is_some()
                || self.timed_trace_sec_multiplier.is_some(),
            "--timed-trace-*",
            "llmb has no timed_trace dataset; a custom JSONL with `timestamp` per line is replayed as a trace",
        );
        note(
            self.blazedit_max_distance.is_some() || self.blazedit_min_distance.is_some(),
            "--blazedit-*",
            &no_dataset("blazedit"),
        );
        note(
            self.asr_max_audio_len_sec.is_some() || self.asr_min_audio_len_sec.is_some(),
            "--asr-*",
            "the audio dataset sends every file its JSONL lists, whatever its length",
        );
        note(
            self.no_reranker || self.random_batch_size.is_some(),
            "--no-reranker/--random-batch-size",
            "embedding and rerank benchmarks are not supported",
        );
        note(
            self.bfcl_categories.is_some(),
            "--bfcl-categories",
            &no_dataset("BFCL"),
        );
        note(
            self.prefix_repetition_num_prefixes.is_some()
                || self.prefix_repetition_output_len.is_some()
                || self.prefix_repetition_prefix_len.is_some()
                || self.prefix_repetition_suffix_len.is_some(),
            "--prefix-repetition-*",
            "the same workload is --dataset-name shared-prefix --dataset-opt shared-prefix-groups=N shared-prefix-len=L shared-prefix-suffix-len=S",
        );
        note(
            self.lora_assignment.is_some() && self.lora_modules.is_empty(),
            "--lora-assignment",
            "no --lora-modules to assign",
        );
        note(
            self.logprobs.is_some() && !COMPLETIONS.contains(&backend),
            "--logprobs",
            &format!("it is sent only by completions backends (vllm, openai), not {backend}"),
        );
        let sampling_given = !self.sampling("").is_empty();
        if sampling_given && !OPENAI_COMPATIBLE.contains(&backend) {
            out.push(format!(
                "note: sampling parameters go to the top level of the {backend} request body, \
                 where its API may not read them (vLLM allows them only for OpenAI-compatible backends)"
            ));
        }
        out
    }
}
