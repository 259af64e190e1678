//! The flags of `vllm bench serve` (0.32.0) that `bench` has no own flag for, so a vLLM user's
//! command line parses unchanged (`tests/vllm_flags.rs` checks every flag of vLLM's help).
//!
//! Flags that mean something for llmb are implemented the way vLLM does them: sampling
//! parameters go into every request body (under `--extra-body`, which wins), `--lora-modules`
//! names a LoRA adapter per request as its model, `--request-id-prefix` sends `x-request-id`,
//! `--metadata` lands in the result JSON, `--ready-check-timeout-sec` waits for the server,
//! `--input-len`/`--output-len` set the dataset lengths, `--profile` calls the server's
//! profiler routes. The rest are accepted and [`VllmCompatArgs::notices`] says in one line each
//! why they change nothing here. Every default is neutral: without these flags nothing changes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Limited};
use hyper::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::cli::{BenchArgs, split_kv};
use crate::plugin::backend::{BackendPool, GenRequest};
use crate::transport::{HttpClient, Target};

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
    pub random_mm_base_items_per_request: Option<u32>,
    #[arg(long, hide = true)]
    pub random_mm_bucket_config: Option<String>,
    #[arg(long, hide = true)]
    pub random_mm_limit_mm_per_prompt: Option<String>,
    #[arg(long, hide = true)]
    pub random_mm_num_mm_items_range_ratio: Option<f64>,
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
            ] {
                options.push((key.into(), n.to_string()));
            }
        }
    }

    /// The sampling parameters vLLM puts in every request body.
    fn sampling(&self, backend: &str) -> Map<String, Value> {
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
        (!self.lora_modules.is_empty()).then(|| Lora {
            modules: self.lora_modules.clone().into(),
            assignment: self.lora_assignment.unwrap_or_default(),
            seed,
        })
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
            "the datasets send text (and audio files) only",
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
            "there are no image datasets",
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
            self.random_mm_base_items_per_request.is_some()
                || self.random_mm_bucket_config.is_some()
                || self.random_mm_limit_mm_per_prompt.is_some()
                || self.random_mm_num_mm_items_range_ratio.is_some(),
            "--random-mm-*",
            &no_dataset("random-mm"),
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

    /// Fails on values the run cannot use, before anything is sent.
    pub fn validate(&self, args: &BenchArgs) -> anyhow::Result<()> {
        parse_metadata(&self.metadata)?;
        request_extra_body(args)?;
        if let Some(prefix) = &self.request_id_prefix {
            HeaderValue::try_from(format!("{prefix}0"))
                .ok()
                .with_context(|| {
                    format!("--request-id-prefix {prefix:?} is not usable in a header")
                })?;
        }
        anyhow::ensure!(
            self.lora_modules.iter().all(|m| !m.trim().is_empty()),
            "--lora-modules: a module name is empty"
        );
        Ok(())
    }
}

/// What goes in every request's `extra-body`: the sampling parameters, then `--extra-body`'s
/// keys over them (vLLM: `{**sampling_params, **extra_body}`). `--extra-body` alone passes
/// through as given.
pub fn request_extra_body(args: &BenchArgs) -> anyhow::Result<Option<String>> {
    let mut body = args.vllm.sampling(&args.backend);
    if body.is_empty() {
        return Ok(args.extra_body.clone());
    }
    if let Some(extra) = &args.extra_body {
        let v: Value = serde_json::from_str(extra).context("--extra-body is not valid JSON")?;
        let Value::Object(extra) = v else {
            anyhow::bail!("--extra-body must be a JSON object");
        };
        body.extend(extra);
    }
    Ok(Some(Value::Object(body).to_string()))
}

/// `--lora-modules`: which adapter each request names as its model.
#[derive(Debug, Clone)]
pub struct Lora {
    modules: Arc<[String]>,
    assignment: LoraAssignment,
    seed: u64,
}

impl Lora {
    /// The model name for request number `id`: a pure function of the id, so a run repeats.
    pub fn pick(&self, id: u64) -> &str {
        let n = self.modules.len() as u64;
        let i = match self.assignment {
            LoraAssignment::RoundRobin => id % n,
            LoraAssignment::Random => splitmix(self.seed ^ splitmix(id ^ 0x4c6f_5241)) % n,
        };
        &self.modules[i as usize]
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The target of one request with `x-request-id: PREFIX<id>` added last, so it overrides a
/// `--header` of the same name as in vLLM.
pub fn with_request_id(target: &Target, prefix: &str, id: u64) -> Target {
    let mut t = target.clone();
    if let Ok(v) = HeaderValue::try_from(format!("{prefix}{id}")) {
        t.headers.push((HeaderName::from_static("x-request-id"), v));
    }
    t
}

fn parse_metadata(items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|item| {
            let (k, v) = split_kv("--metadata", item)?;
            Ok((k, v.trim().to_string()))
        })
        .collect()
}

/// `--metadata KEY=VALUE`: top-level string keys of the result JSON, as vLLM saves them. A key
/// the result already has keeps llmb's value.
pub fn add_metadata(json: &mut Value, items: &[String]) -> anyhow::Result<()> {
    let pairs = parse_metadata(items)?;
    if let Some(obj) = json.as_object_mut() {
        for (k, v) in pairs {
            obj.entry(k).or_insert(Value::String(v));
        }
    }
    Ok(())
}

/// Retries `attempt` (each try cut off at the deadline) until it succeeds, pausing a second
/// between tries; past `deadline` the last error is returned.
pub async fn retry_until<F, Fut>(deadline: Instant, mut attempt: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let result =
            match tokio::time::timeout(left.max(Duration::from_millis(100)), attempt()).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("no answer in time")),
            };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() + Duration::from_secs(1) >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Sends `req` once and reads the whole answer; any 2xx status is success.
pub async fn try_request(
    pool: &Arc<BackendPool>,
    client: &HttpClient,
    target: &Target,
    req: &GenRequest,
) -> anyhow::Result<()> {
    let http = pool
        .checkout()?
        .build_request(req)
        .map_err(|f| anyhow::anyhow!("{f}"))?
        .map_err(|e| anyhow::anyhow!("the adapter refused the request: {e}"))?;
    let path = target.endpoint.as_deref().unwrap_or(&http.path);
    let request = target
        .request(path, &http.method, &http.headers, http.body)
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let response = client.request(request).await?;
    let status = response.status();
    Limited::new(response.into_body(), 16 << 20)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reply could not be read: {e}"))?;
    anyhow::ensure!(status.is_success(), "answered HTTP {}", status.as_u16());
    Ok(())
}

/// `--profile`: POST `path` (/start_profile, /stop_profile) under the base URL.
pub async fn profiler(client: &HttpClient, target: &Target, path: &str) {
    let outcome = async {
        let request = target
            .request(path, "POST", &[], Vec::new())
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let response =
            tokio::time::timeout(Duration::from_secs(60), client.request(request)).await??;
        let status = response.status();
        let _ = response.into_body().collect().await;
        anyhow::ensure!(status.is_success(), "HTTP {}", status.as_u16());
        anyhow::Ok(())
    }
    .await;
    match outcome {
        Ok(()) => eprintln!("profiler: {path} done"),
        Err(e) => eprintln!("profiler: {path} failed: {e:#}"),
    }
}
