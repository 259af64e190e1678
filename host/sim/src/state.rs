//! The state every connection shares: the configuration, precomputed strings, and the counters
//! the metrics route reports. Only atomics and the prefix cache change after start. Also
//! [`unix_now`], the clock behind its start time and every response's `created`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::config::SimConfig;
use crate::lifecycle::ConnectionPolicy;
use crate::send_log::SendLog;

/// Shared by every connection; only atomics and the prefix cache change after start.
pub(crate) struct SimState {
    pub(crate) config: SimConfig,
    /// The model name as a JSON string literal (quotes included, escaped).
    pub(crate) model_json: String,
    /// The model name escaped for a Prometheus label value.
    pub(crate) model_label: String,
    /// `Bearer KEY` when an API key is configured.
    pub(crate) expected_auth: Option<String>,
    pub(crate) started_unix: u64,
    pub(crate) served: AtomicU64,
    pub(crate) generations: AtomicU64,
    pub(crate) active: AtomicUsize,
    /// Requests waiting for a batch slot.
    pub(crate) waiting: AtomicUsize,
    pub(crate) batch: Option<Arc<tokio::sync::Semaphore>>,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) generation_tokens: AtomicU64,
    pub(crate) successes: AtomicU64,
    /// Images in the prompts of the requests generated for.
    pub(crate) images: AtomicU64,
    /// Chained hashes of the prompt blocks served so far (empty unless `prefix_cache`).
    pub(crate) prefix_blocks: Mutex<HashSet<u64>>,
    /// Prompt tokens looked up in the prefix cache (vLLM counts queries and hits in tokens).
    pub(crate) prefix_queries: AtomicU64,
    /// Prompt tokens found in the prefix cache.
    pub(crate) prefix_hits: AtomicU64,
    /// Simulated KV-cache transfers (`kv_transfer_ms`) and their total time in µs.
    pub(crate) kv_transfers: AtomicU64,
    pub(crate) kv_transfer_us: AtomicU64,
    /// The send log's writer when `config.send_log` is set.
    pub(crate) send_log: Option<Arc<SendLog>>,
}

impl SimState {
    pub(crate) fn new(mut config: SimConfig, send_log: Option<Arc<SendLog>>) -> Self {
        if config.dialect.as_deref() == Some("llama.cpp") && config.connections.is_default() {
            // What the real llama-server does: `Keep-Alive: timeout=5, max=100`, idle close.
            config.connections = ConnectionPolicy {
                keep_alive_timeout: Some(Duration::from_secs(5)),
                keep_alive_max: Some(100),
                ..ConnectionPolicy::default()
            };
        }
        let model_json = Value::from(config.model.as_str()).to_string();
        let model_label = config
            .model
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let expected_auth = config.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let batch = config
            .max_batch
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1))));
        Self {
            config,
            model_json,
            model_label,
            expected_auth,
            started_unix: unix_now(),
            served: AtomicU64::new(0),
            generations: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            batch,
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            images: AtomicU64::new(0),
            prefix_blocks: Mutex::new(HashSet::new()),
            prefix_queries: AtomicU64::new(0),
            prefix_hits: AtomicU64::new(0),
            kv_transfers: AtomicU64::new(0),
            kv_transfer_us: AtomicU64::new(0),
            send_log,
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
