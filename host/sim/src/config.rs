//! The simulator's configuration: [`SimConfig`] with its defaults, and the fixed limits of the
//! simulated model and server that no setting changes.

use std::path::PathBuf;

use crate::lifecycle::ConnectionPolicy;

/// Timing and behaviour of the simulated server.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Time from request arrival to the first chunk, ms.
    pub ttft_ms: f64,
    /// Gap between token chunks, ms.
    pub itl_ms: f64,
    /// Each delay is multiplied by `1 + jitter * u`, u uniform in [-1, 1]; 0 disables jitter.
    pub jitter: f64,
    /// Seeds the jitter and the natural output lengths, so runs are reproducible.
    pub seed: u64,
    /// Continuous-batching model: each ITL is multiplied by
    /// `1 + batch_slowdown * (active_streams - 1)`.
    pub batch_slowdown: f64,
    /// Extra TTFT per prompt token, µs (a prefill cost).
    pub prefill_us_per_token: f64,
    /// Output tokens each response spends reasoning before it answers, in the dialects with a
    /// reasoning channel (OpenAI chat, Responses, Anthropic Messages; the others ignore it). The
    /// output length is decided as without it; its first `min(this, length)` tokens are
    /// reasoning, so a response no longer than this is all reasoning, like a model cut off while
    /// thinking.
    pub reasoning_tokens: u32,
    /// Disaggregated serving: each generation waits this long for its KV cache to move from a
    /// prefill worker to a decode worker before its first token, and `/metrics` exposes vLLM's
    /// NIXL transfer histogram (`vllm:nixl_xfer_time_seconds`) with those transfers. 0: off.
    pub kv_transfer_ms: f64,
    /// The served model name; requests naming another model get vLLM's 404.
    pub model: String,
    /// When set, `/v1/*` require `Authorization: Bearer KEY` (else 401, like vLLM's `--api-key`);
    /// `/v1/messages` also takes Anthropic's `x-api-key: KEY`.
    pub api_key: Option<String>,
    /// Automatic prefix caching, so benchmarks of shared-prefix workloads see the TTFT drop a
    /// real server gives: prefill is charged only for prompt tokens past the longest prefix of
    /// whole 16-token blocks served before, and usage reports `cached_tokens`.
    pub prefix_cache: bool,
    /// Which server to imitate where two share a route (`lightllm` on `/generate_stream`,
    /// which TGI also uses); the backend name of an in-process run.
    pub dialect: Option<String>,
    /// Requests generating at once; more wait (counted in `vllm:num_requests_waiting`), and their
    /// wait adds to their TTFT. `None` = unlimited.
    pub max_batch: Option<usize>,
    /// Images one prompt may carry (vLLM's `--limit-mm-per-prompt '{"image": N}'`); a request
    /// with more gets vLLM's 400, "At most N image(s) may be provided in one prompt.".
    /// `None` = unlimited.
    pub max_images_per_prompt: Option<usize>,
    /// Serve the tokenize routes (vLLM/SGLang/llama.cpp/TGI `/tokenize`, LMDeploy
    /// `/v1/encode`); off imitates a server without one.
    pub tokenize_route: bool,
    /// Keep-alive timeout and max, `Connection: close`, idle close, stale-connection drops.
    pub connections: ConnectionPolicy,
    /// Write when each piece of each HTTP/1.1 response was really written to this CSV file
    /// (`request_id,kind,seq,mono_ns,body_bytes`, see `llmb sim --send-log`), created when the
    /// simulator starts and flushed when it shuts down.
    pub send_log: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            ttft_ms: 20.0,
            itl_ms: 5.0,
            jitter: 0.0,
            seed: 0,
            batch_slowdown: 0.0,
            prefill_us_per_token: 0.0,
            reasoning_tokens: 0,
            kv_transfer_ms: 0.0,
            model: "llmb-sim".into(),
            api_key: None,
            prefix_cache: false,
            dialect: None,
            tokenize_route: true,
            max_batch: None,
            max_images_per_prompt: None,
            connections: ConnectionPolicy::default(),
            send_log: None,
        }
    }
}

/// Context length advertised in `/v1/models`; prompt + max_tokens beyond it is a 400 like vLLM.
pub(crate) const MAX_MODEL_LEN: u64 = 131_072;
/// Request bodies larger than this are refused instead of buffered.
pub(crate) const MAX_BODY_BYTES: usize = 64 << 20;
