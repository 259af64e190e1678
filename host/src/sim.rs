//! The built-in simulator: an OpenAI-compatible server speaking vLLM's dialect (byte for byte as
//! in `protocols/vllm.md`), plus the native routes of TGI (`/generate_stream`, `/generate` with
//! `inputs`), llama.cpp (`/completion`) and SGLang (`/generate` with `text`), each as its protocol
//! file shows it, with a timing model, so a benchmark runs with no real server and the tests
//! measure llmb and its adapters against known TTFT and ITL.
//!
//! Cheap on purpose, so it is never the bottleneck it would hide: each streamed response is a
//! small state machine polled by hyper as the body of its connection task, sleeping to absolute
//! deadlines (no drift), and every SSE event is one `Bytes` assembled from precomputed pieces with
//! a single exact-size allocation. No per-token serde and relaxed atomics only; the one lock is
//! the optional prefix cache's, taken once per request.
//!
//! Faults for tests are triggered by markers in the prompt (`__sim_fault:http500__`,
//! `__sim_fault:stall__`, ...), all listed in [`faults`].

use std::borrow::Cow;
use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use crate::tokenizer::{count_words, word_for};

mod faults;
pub mod lifecycle;

use faults::Fault;

pub use lifecycle::ConnectionPolicy;

/// Context length advertised in `/v1/models`; prompt + max_tokens beyond it is a 400 like vLLM.
const MAX_MODEL_LEN: u64 = 131_072;
/// Request bodies larger than this are refused instead of buffered.
const MAX_BODY_BYTES: usize = 64 << 20;
/// A benchmark opens hundreds of connections at once: a short accept queue drops SYNs and the
/// client's retry adds a full second to TTFT. The kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 65_535;
const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";
const MALFORMED_EVENT: &[u8] = b"data: {\"choices\":[{\"text\": BROKEN\n\n";
const ERROR_EVENT: &[u8] = b"data: {\"error\":{\"message\":\"simulated in-stream error\",\"type\":\"InternalServerError\",\"param\":null,\"code\":500}}\n\n";
/// Prompt tokens per prefix-cache block, vLLM's default block size.
/// The simulated chat template, ChatML-like: `<|im_start|>role\n` … `<|im_end|>\n` around every
/// message and `<|im_start|>assistant\n` after the last, so chat prompts cost more tokens than
/// their words, as on a real server, and llmb's template accounting is tested for real.
const CHAT_TEMPLATE_TOKENS_PER_MESSAGE: u32 = 5;
const CHAT_GENERATION_PROMPT_TOKENS: u32 = 3;
/// Token ids of the simulated template's special tokens (past the word vocabulary).
const TEMPLATE_TOKEN_ID: u32 = 1 << 20;
const PREFIX_BLOCK_TOKENS: u32 = 16;
/// How many streams the simulated KV cache holds: `vllm:kv_cache_usage_perc` is active / this.
const SIM_KV_CACHE_SEQUENCES: f64 = 64.0;
/// Blocks the prefix cache remembers before it starts over (about 16 M prompt tokens).
const PREFIX_CACHE_BLOCKS: usize = 1 << 20;
const SSE_CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";
const JSON_CONTENT_TYPE: &str = "application/json";

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
    /// The served model name; requests naming another model get vLLM's 404.
    pub model: String,
    /// When set, `/v1/*` require `Authorization: Bearer KEY` (else 401, like vLLM's `--api-key`).
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
    /// Serve the tokenize routes (vLLM/SGLang/llama.cpp/TGI `/tokenize`, LMDeploy
    /// `/v1/encode`); off imitates a server without one.
    pub tokenize_route: bool,
    /// Keep-alive timeout and max, `Connection: close`, idle close, stale-connection drops.
    pub connections: ConnectionPolicy,
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
            model: "llmb-sim".into(),
            api_key: None,
            prefix_cache: false,
            dialect: None,
            tokenize_route: true,
            max_batch: None,
            connections: ConnectionPolicy::default(),
        }
    }
}

/// A running simulator; dropping it does NOT stop it, call [`SimHandle::shutdown`].
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: Arc<Notify>,
    runner: Runner,
}

/// What to wait for on shutdown: the accept task, or the simulator's own thread.
enum Runner {
    Task(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

impl SimHandle {
    /// The address actually bound (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, ready for `--base-url` (an unspecified bind address becomes the
    /// loopback address).
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            let loopback: std::net::IpAddr = if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            addr.set_ip(loopback);
        }
        format!("http://{addr}")
    }

    /// Requests answered on `/v1/*` so far (errors included), counted when the response head is
    /// ready, so tests can check how many requests a run really sent.
    pub fn requests_served(&self) -> u64 {
        self.state.served.load(Relaxed)
    }

    /// Stops accepting, aborts every open connection (streams in flight end abruptly) and waits
    /// until they are gone.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        match self.runner {
            Runner::Task(task) => {
                let _ = task.await;
            }
            Runner::Thread(thread) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
    }
}

/// Binds `addr` (port 0 = any free port) and serves on the current tokio runtime.
pub async fn start(config: SimConfig, addr: SocketAddr) -> anyhow::Result<SimHandle> {
    let (listener, addr) = bind(addr)?;
    let state = Arc::new(SimState::new(config));
    let stop = Arc::new(Notify::new());
    let task = tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
    Ok(SimHandle {
        addr,
        state,
        stop,
        runner: Runner::Task(task),
    })
}

/// Like [`start`], but on a thread and runtime of its own, so an in-process simulator neither
/// competes with the client's tasks for its scheduler nor perturbs the client's timestamps.
pub fn start_dedicated(config: SimConfig, addr: SocketAddr) -> anyhow::Result<SimHandle> {
    let (ready_tx, ready_rx) =
        std::sync::mpsc::channel::<anyhow::Result<(SocketAddr, Arc<SimState>)>>();
    let stop = Arc::new(Notify::new());
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("llmb-sim".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(
                        anyhow::Error::new(e).context("cannot start the simulator runtime")
                    ));
                    return;
                }
            };
            runtime.block_on(async move {
                match bind(addr) {
                    Ok((listener, addr)) => {
                        let state = Arc::new(SimState::new(config));
                        let _ = ready_tx.send(Ok((addr, state.clone())));
                        accept_loop(listener, state, thread_stop).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })
        .context("cannot start the simulator thread")?;
    let (addr, state) = ready_rx
        .recv()
        .context("the simulator thread ended early")??;
    Ok(SimHandle {
        addr,
        state,
        stop,
        runner: Runner::Thread(thread),
    })
}

/// A listening socket with a deep accept queue, and the address it really got. Must run inside
/// a tokio runtime.
fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("cannot create a socket")?;
    socket
        .set_reuseaddr(true)
        .context("cannot set SO_REUSEADDR")?;
    socket
        .bind(addr)
        .with_context(|| format!("cannot bind {addr}"))?;
    let listener = socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {addr}"))?;
    Ok((listener, bound))
}

/// Shared by every connection; only atomics and the prefix cache change after start.
struct SimState {
    config: SimConfig,
    /// The model name as a JSON string literal (quotes included, escaped).
    model_json: String,
    /// The model name escaped for a Prometheus label value.
    model_label: String,
    /// `Bearer KEY` when an API key is configured.
    expected_auth: Option<String>,
    started_unix: u64,
    served: AtomicU64,
    generations: AtomicU64,
    active: AtomicUsize,
    /// Requests waiting for a batch slot.
    waiting: AtomicUsize,
    batch: Option<Arc<tokio::sync::Semaphore>>,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    successes: AtomicU64,
    /// Chained hashes of the prompt blocks served so far (empty unless `prefix_cache`).
    prefix_blocks: Mutex<HashSet<u64>>,
    /// Prompt tokens looked up in the prefix cache (vLLM counts queries and hits in tokens).
    prefix_queries: AtomicU64,
    /// Prompt tokens found in the prefix cache.
    prefix_hits: AtomicU64,
}

impl SimState {
    fn new(mut config: SimConfig) -> Self {
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
            prefix_blocks: Mutex::new(HashSet::new()),
            prefix_queries: AtomicU64::new(0),
            prefix_hits: AtomicU64::new(0),
        }
    }

    /// Prompt tokens served from the prefix cache, then remembers every block of this prompt.
    ///
    /// As in vLLM, the hit never covers the last prompt token (its logits must be computed), so
    /// a repeated prompt of exactly k blocks hits k − 1 of them.
    fn prefix_lookup(&self, blocks: &[u64], prompt_tokens: u32) -> u32 {
        let usable = (prompt_tokens.saturating_sub(1) / PREFIX_BLOCK_TOKENS) as usize;
        let mut cache = self
            .prefix_blocks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let hit = blocks[..usable.min(blocks.len())]
            .iter()
            .take_while(|h| cache.contains(h))
            .count();
        if cache.len() + blocks.len() > PREFIX_CACHE_BLOCKS {
            cache.clear();
        }
        cache.extend(blocks);
        drop(cache);
        let cached = hit as u32 * PREFIX_BLOCK_TOKENS;
        self.prefix_queries
            .fetch_add(u64::from(prompt_tokens), Relaxed);
        self.prefix_hits.fetch_add(u64::from(cached), Relaxed);
        cached
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<SimState>, stop: Arc<Notify>) {
    let mut connections = JoinSet::new();
    // A permit stored by `notify_one` is not lost even if it comes before this is polled, and
    // dropping the handle does not stop the server (unlike a closed channel would).
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, state.clone()));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// HTTP/1.1, or HTTP/2 when the client opens with the HTTP/2 preface (prior knowledge, as gRPC
/// clients do), on the same port.
async fn serve_connection(stream: TcpStream, state: Arc<SimState>) {
    let _ = stream.set_nodelay(true);
    let (stream, reset) = faults::ResettableStream::new(stream);
    let policy = state.config.connections.clone();
    let tracker = lifecycle::Tracker::new();
    let service = {
        let tracker = tracker.clone();
        let policy = policy.clone();
        service_fn(move |req| {
            let state = state.clone();
            let tracker = tracker.clone();
            let policy = policy.clone();
            let reset = reset.clone();
            async move {
                if tracker.is_stale(&policy) {
                    // hyper closes the connection without an answer when the service fails.
                    return Err(io::Error::other(
                        "stale connection dropped (simulated race)",
                    ));
                }
                let (busy, nth) = tracker.begin();
                let Ok(mut response) = handle(state, req).await;
                if response
                    .extensions()
                    .get::<faults::ResetConnection>()
                    .is_some()
                {
                    reset.store(true, Relaxed);
                    return Err(io::Error::other("connection reset (simulated fault)"));
                }
                lifecycle::announce(&policy, nth, &mut response);
                Ok::<_, io::Error>(response.map(|body| lifecycle::Tracked::new(body, busy)))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .header_read_timeout(None::<Duration>);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    match policy.keep_alive_timeout {
        None => {
            let _ = connection.await;
        }
        Some(timeout) => {
            tokio::select! {
                _ = connection.as_mut() => {}
                () = tracker.idle_elapsed(timeout) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        }
    }
}

async fn handle(
    state: Arc<SimState>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let arrived = Instant::now();
    let path = req.uri().path();
    let response = if path.starts_with("/v1/") {
        let response = v1(&state, req, arrived).await;
        state.served.fetch_add(1, Relaxed);
        response
    } else {
        match (req.method(), path) {
            (&Method::GET, "/health") => full(StatusCode::OK, None, Bytes::new()),
            (&Method::GET, "/metrics") => metrics(&state),
            (&Method::POST, "/tokenize") if state.config.tokenize_route => {
                tokenize(&state, req).await
            }
            (&Method::POST, "/generate_stream" | "/generate" | "/completion") => {
                let response = native(&state, req, arrived).await;
                state.served.fetch_add(1, Relaxed);
                response
            }
            (&Method::POST, PPL_GENERATION) => {
                let response = ppl(&state, req, arrived).await;
                state.served.fetch_add(1, Relaxed);
                response
            }
            (&Method::POST, p) if p.starts_with("/mii/") => {
                let response = native(&state, req, arrived).await;
                state.served.fetch_add(1, Relaxed);
                response
            }
            (&Method::POST, p)
                if p.starts_with("/v2/models/")
                    && (p.ends_with("/generate_stream") || p.ends_with("/generate")) =>
            {
                let response = native(&state, req, arrived).await;
                state.served.fetch_add(1, Relaxed);
                response
            }
            _ => not_found(),
        }
    };
    Ok(response)
}

async fn v1(state: &Arc<SimState>, req: Request<Incoming>, arrived: Instant) -> Response<SimBody> {
    if let Some(expected) = &state.expected_auth {
        let ok = req
            .headers()
            .get(AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
        if !ok {
            return json_response(StatusCode::UNAUTHORIZED, r#"{"error":"Unauthorized"}"#);
        }
    }
    let api = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/completions") => Api::Completions,
        (&Method::POST, "/v1/chat/completions") => Api::Chat,
        (&Method::POST, "/v1/responses") => Api::Responses,
        (&Method::POST, "/v1/llm/chat-completions") => Api::Amsv2,
        (&Method::POST, "/v1/audio/transcriptions") => Api::Transcription,
        (&Method::GET, "/v1/models") => return models(state),
        (&Method::POST, "/v1/encode") if state.config.tokenize_route => {
            return tokenize(state, req).await;
        }
        _ => return not_found(),
    };
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return bad_request(&format!("Cannot read the request body: {e}")),
    };
    let job = if api == Api::Transcription {
        parse_transcription_job(state, &content_type, &bytes)
    } else {
        parse_job(state, api, &bytes)
    };
    match job {
        Ok(job) => generate(state, job, arrived).await,
        Err(response) => response,
    }
}

/// The tokenize routes, told apart by their bodies: vLLM and SGLang (`prompt` or `messages`,
/// answering `count`, `max_model_len` and `tokens`), llama.cpp (`content`, answering `tokens`),
/// TGI (`inputs`, answering a list of token objects) and LMDeploy's `/v1/encode` (`input`,
/// answering `input_ids` and `length`). Counts are the ones usage reports for the same prompt.
async fn tokenize(state: &SimState, req: Request<Incoming>) -> Response<SimBody> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return bad_request(&format!("Cannot read the request body: {e}")),
    };
    let Ok(body @ Value::Object(_)) = serde_json::from_slice::<Value>(&bytes) else {
        return bad_request("The body must be a JSON object.");
    };
    let words = crate::tokenizer::HostTokenizer::Words;
    if state.config.dialect.as_deref() == Some("llama.cpp") {
        // llama.cpp reads only `content` and answers an empty list for anything else (a
        // vLLM-shaped body included), as the real server does.
        let ids = match body.get("content") {
            Some(Value::String(t)) => words.encode(t),
            _ => Vec::new(),
        };
        return json_response(
            StatusCode::OK,
            serde_json::json!({ "tokens": ids }).to_string(),
        );
    }
    let ids = if body.get("messages").is_some() {
        let prompt = match chat_prompt(&body) {
            Ok(p) => p,
            Err(e) => return bad_request(e),
        };
        let mut ids = words.encode(&prompt.text);
        ids.resize(prompt.tokens as usize, TEMPLATE_TOKEN_ID);
        ids
    } else {
        let key = ["prompt", "content", "inputs", "input"]
            .into_iter()
            .find(|k| body.get(*k).is_some())
            .unwrap_or("prompt");
        match body.get(key) {
            Some(Value::String(t)) => words.encode(t),
            _ => return bad_request(&format!("Field `{key}` must be a string.")),
        }
    };
    let json = if body.get("content").is_some() {
        serde_json::json!({ "tokens": ids })
    } else if body.get("inputs").is_some() {
        let words: Vec<&str> = body["inputs"]
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        Value::Array(
            ids.iter()
                .zip(words)
                .map(|(id, w)| serde_json::json!({"id": id, "text": w, "start": 0, "stop": 0}))
                .collect(),
        )
    } else if body.get("input").is_some() {
        serde_json::json!({ "input_ids": ids, "length": ids.len() })
    } else {
        serde_json::json!({ "count": ids.len(), "max_model_len": MAX_MODEL_LEN, "tokens": ids })
    };
    json_response(StatusCode::OK, json.to_string())
}

/// The native routes: TGI, llama.cpp and SGLang (`/generate` is TGI's with `inputs`, SGLang's
/// with `text` or `input_ids`).
async fn native(
    state: &Arc<SimState>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<SimBody> {
    let path = req.uri().path().to_string();
    let authorized = state.expected_auth.as_ref().is_none_or(|expected| {
        req.headers()
            .get(AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes())
    });
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return bad_request(&format!("Cannot read the request body: {e}")),
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                r#"{"error":"Failed to deserialize the JSON body","error_type":"validation"}"#,
            );
        }
    };
    let lightllm = state.config.dialect.as_deref() == Some("lightllm");
    let mii = state.config.dialect.as_deref() == Some("deepspeed-mii");
    let api = match path.as_str() {
        p if p.starts_with("/mii/") => Api::Mii,
        "/generate" if mii => Api::Mii,
        "/generate_stream" | "/generate" if lightllm => Api::LightLlm,
        "/generate_stream" => Api::TgiStream,
        "/completion" => Api::LlamaCpp,
        p if p.starts_with("/v2/models/") => Api::Trtllm,
        _ if body.get("inputs").is_some() => Api::TgiGenerate,
        _ if body.get("prompt").is_some() => Api::Lmdeploy,
        _ => Api::Sglang,
    };
    let triton_streams = path.ends_with("/generate_stream");
    if !authorized {
        return match api {
            Api::TgiStream | Api::TgiGenerate => full(StatusCode::UNAUTHORIZED, None, Bytes::new()),
            _ => native_error(api, StatusCode::UNAUTHORIZED, "Invalid API Key"),
        };
    }
    match parse_native_job(state, api, &body) {
        Ok(mut job) => {
            // Triton and LightLLM stream only on their `generate_stream` routes.
            if matches!(api, Api::Trtllm | Api::LightLlm) && !triton_streams {
                job.stream = false;
            }
            if path.starts_with("/mii/") {
                job.stream = false;
            }
            generate(state, job, arrived).await
        }
        Err(response) => response,
    }
}

/// An error body in the dialect of `api` (protocols/errors.md).
fn native_error(api: Api, status: StatusCode, message: &str) -> Response<SimBody> {
    let message = Value::from(message).to_string();
    let body = match api {
        Api::TgiStream | Api::TgiGenerate => {
            let kind = if status == StatusCode::UNPROCESSABLE_ENTITY {
                "validation"
            } else {
                "generation"
            };
            format!("{{\"error\":{message},\"error_type\":\"{kind}\"}}")
        }
        Api::LlamaCpp => format!(
            "{{\"error\":{{\"code\":{},\"message\":{message},\"type\":\"{}\"}}}}",
            status.as_u16(),
            if status == StatusCode::UNAUTHORIZED {
                "authentication_error"
            } else if status.is_server_error() {
                "server_error"
            } else {
                "invalid_request_error"
            }
        ),
        Api::Trtllm | Api::Mii => format!("{{\"error\":{message}}}"),
        Api::LightLlm => format!("{{\"message\":{message}}}"),
        Api::Lmdeploy => format!(
            "{{\"message\":{message},\"type\":\"internal_error\",\"code\":{},\"param\":null,\"object\":\"error\"}}",
            status.as_u16()
        ),
        _ => format!("{{\"error\":{{\"message\":{message}}}}}"),
    };
    json_response(status, body)
}

// The error is the ready-made response for a bad request: rare, so its size does not matter.
#[allow(clippy::result_large_err)]
fn parse_native_job(state: &SimState, api: Api, body: &Value) -> Result<Job, Response<SimBody>> {
    let invalid = |msg: &str| {
        let status = match api {
            Api::TgiStream | Api::TgiGenerate => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        native_error(api, status, msg)
    };
    let (prompt_key, params, max_key, default_max) = match api {
        Api::TgiStream | Api::TgiGenerate => {
            ("inputs", body.get("parameters"), "max_new_tokens", 100)
        }
        Api::LightLlm => ("inputs", body.get("parameters"), "max_new_tokens", 16),
        Api::LlamaCpp => ("prompt", Some(body), "n_predict", 16),
        Api::Lmdeploy => ("prompt", Some(body), "max_tokens", 128),
        Api::Trtllm => ("text_input", Some(body), "max_tokens", 16),
        Api::Mii if body.get("prompts").is_some() => ("prompts", Some(body), "max_new_tokens", 128),
        Api::Mii => ("prompt", Some(body), "max_tokens", 128),
        _ => ("text", body.get("sampling_params"), "max_new_tokens", 128),
    };
    let prompt = match body.get(prompt_key) {
        Some(p) => completion_prompt(p, false).map_err(invalid)?,
        None if api == Api::Sglang && body.get("input_ids").is_some() => {
            completion_prompt(&body["input_ids"], false).map_err(invalid)?
        }
        None => return Err(invalid(&format!("`{prompt_key}` is required"))),
    };
    let fault = Fault::of(&prompt.text);
    if let Some(refusal) = fault.refusal(|status, _, message| native_error(api, status, message)) {
        return Err(refusal);
    }
    let max_tokens = match params.and_then(|p| p.get(max_key)).filter(|v| !v.is_null()) {
        None => default_max,
        // llama.cpp's -1 means "until EOS": generate the default.
        Some(v) if api == Api::LlamaCpp && v.as_i64() == Some(-1) => default_max,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_MODEL_LEN).contains(&n) => n as u32,
            _ => {
                return Err(invalid(&format!(
                    "`{max_key}` must be a positive integer, got {v}"
                )));
            }
        },
    };
    let flag = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(false);
    let prefix_blocks = match (state.config.prefix_cache, prompt.ids) {
        (false, _) => Vec::new(),
        (true, Some(ids)) => block_hashes(ids.iter().map(|id| id.as_u64().unwrap_or(0))),
        (true, None) => block_hashes(prompt.text.split_whitespace()),
    };
    Ok(Job {
        api,
        prompt_tokens: prompt.tokens,
        prefix_blocks,
        max_tokens,
        stream: match api {
            Api::TgiStream | Api::LightLlm => true,
            Api::TgiGenerate => false,
            _ => flag(body.get("stream")),
        },
        include_usage: true,
        ignore_eos: match api {
            // TGI has no ignore_eos: its outputs end where the model says.
            Api::TgiStream | Api::TgiGenerate => false,
            // Triton has none either; a minimum length as long as the cap forces it.
            // MII keeps going past EOS up to `min_tokens` (capped by the maximum).
            Api::Trtllm | Api::Mii if body.get("ignore_eos").is_none() => {
                ["min_length", "min_tokens"].iter().any(|k| {
                    body.get(*k)
                        .and_then(Value::as_u64)
                        .is_some_and(|n| n >= u64::from(max_tokens))
                })
            }
            _ => flag(params.and_then(|p| p.get("ignore_eos"))),
        },
        fault,
        request_id: 0,
    })
}

/// OpenPPL's one RPC.
const PPL_GENERATION: &str = "/ppl.llm.proto.LLMService/Generation";

/// A gRPC answer with no body: status in the headers ("Trailers-Only").
fn grpc_failure(code: u32, message: &str) -> Response<SimBody> {
    let encoded: String = message
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/grpc")
        .header("grpc-status", code.to_string())
        .header("grpc-message", encoded)
        .body(SimBody::full(Bytes::new()))
        .expect("static headers are valid")
}

/// Reads a protobuf varint at `*at`.
fn pb_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of one protobuf message: `(field number, varint value or bytes)`.
fn pb_fields(buf: &[u8]) -> Option<Vec<(u64, PbValue<'_>)>> {
    let mut at = 0;
    let mut fields = Vec::new();
    while at < buf.len() {
        let key = pb_varint(buf, &mut at)?;
        let value = match key & 7 {
            0 => PbValue::Int(pb_varint(buf, &mut at)?),
            1 => {
                buf.get(at..at + 8)?;
                at += 8;
                PbValue::Fixed
            }
            2 => {
                let len = pb_varint(buf, &mut at)? as usize;
                let bytes = buf.get(at..at + len)?;
                at += len;
                PbValue::Bytes(bytes)
            }
            5 => {
                buf.get(at..at + 4)?;
                at += 4;
                PbValue::Fixed
            }
            _ => return None,
        };
        fields.push((key >> 3, value));
    }
    (at == buf.len()).then_some(fields)
}

#[derive(Clone, Copy)]
enum PbValue<'a> {
    Int(u64),
    /// A 32- or 64-bit fixed field (the temperature): skipped.
    Fixed,
    Bytes(&'a [u8]),
}

fn pb_put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One gRPC message holding `BatchedResponse{rsp: [Response{status, id, generated}]}`.
fn ppl_response(status: u64, id: u64, generated: Option<&str>) -> Bytes {
    let mut rsp = Vec::with_capacity(32);
    if status != 0 {
        rsp.push(0x08);
        pb_put_varint(&mut rsp, status);
    }
    if id != 0 {
        rsp.push(0x10);
        pb_put_varint(&mut rsp, id);
    }
    if let Some(text) = generated {
        rsp.push(0x1a);
        pb_put_varint(&mut rsp, text.len() as u64);
        rsp.extend_from_slice(text.as_bytes());
    }
    let mut batched = vec![0x0a];
    pb_put_varint(&mut batched, rsp.len() as u64);
    batched.extend_from_slice(&rsp);
    let mut out = Vec::with_capacity(batched.len() + 5);
    out.push(0);
    out.extend_from_slice(&(batched.len() as u32).to_be_bytes());
    out.extend_from_slice(&batched);
    Bytes::from(out)
}

/// `LLMService/Generation` with one request per call, as a benchmark client sends it.
async fn ppl(state: &Arc<SimState>, req: Request<Incoming>, arrived: Instant) -> Response<SimBody> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return grpc_failure(13, &format!("cannot read the request: {e}")),
    };
    let Some(job) = parse_ppl_request(state, &bytes) else {
        return grpc_failure(
            3,
            "malformed BatchedRequest (expected one uncompressed message)",
        );
    };
    let refusal = job.fault.refusal(|status, _, message| {
        // INTERNAL, RESOURCE_EXHAUSTED, UNAVAILABLE.
        let code = match status {
            StatusCode::TOO_MANY_REQUESTS => 8,
            StatusCode::SERVICE_UNAVAILABLE => 14,
            _ => 13,
        };
        grpc_failure(code, message)
    });
    if let Some(refusal) = refusal {
        return refusal;
    }
    generate(state, job, arrived).await
}

fn parse_ppl_request(state: &SimState, bytes: &[u8]) -> Option<Job> {
    let (&flag, rest) = bytes.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    if flag != 0 || rest.len() != 4 + len {
        return None;
    }
    let batched = pb_fields(&rest[4..])?;
    let [(1, PbValue::Bytes(request))] = batched.as_slice() else {
        return None;
    };
    let mut id = 0;
    let mut prompt = "";
    let mut max_tokens = 16;
    let mut ignore_eos = false;
    for (field, value) in pb_fields(request)? {
        match (field, value) {
            (1, PbValue::Int(v)) => id = v,
            (3, PbValue::Bytes(b)) => prompt = std::str::from_utf8(b).ok()?,
            (5, PbValue::Bytes(b)) => {
                for (f, v) in pb_fields(b)? {
                    match (f, v) {
                        (1, PbValue::Int(n)) => max_tokens = n.clamp(1, MAX_MODEL_LEN) as u32,
                        (3, PbValue::Int(n)) => ignore_eos = n != 0,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let prefix_blocks = if state.config.prefix_cache {
        block_hashes(prompt.split_whitespace())
    } else {
        Vec::new()
    };
    Some(Job {
        api: Api::Ppl,
        prompt_tokens: count_words(prompt),
        prefix_blocks,
        max_tokens,
        stream: true,
        include_usage: true,
        ignore_eos,
        fault: Fault::of(prompt),
        request_id: id,
    })
}

// The error is the ready-made response for a bad request: rare, so its size does not matter.
#[allow(clippy::result_large_err)]
/// `/v1/audio/transcriptions`: a multipart form with the audio `file`; the transcript is as
/// long as the audio (about ten words a second of 16 kHz 16-bit mono) unless
/// `max_completion_tokens` caps it.
fn parse_transcription_job(
    state: &SimState,
    content_type: &str,
    bytes: &[u8],
) -> Result<Job, Response<SimBody>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
        .ok_or_else(|| bad_request("Expected a multipart/form-data body with a boundary."))?;
    let delimiter = format!("--{boundary}");
    let mut fields: Vec<(String, &[u8])> = Vec::new();
    let mut rest = bytes;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let body_start = head_end + 4;
        let body_end = find(&rest[body_start..], delimiter.as_bytes())
            .map_or(rest.len(), |e| body_start + e.saturating_sub(2));
        let name = head
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))
            .map(|n| {
                n.split(['\r', '\n'])
                    .next()
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_string()
            })
            .unwrap_or_default();
        fields.push((name, &rest[body_start..body_end]));
        rest = &rest[body_end..];
    }
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let text = |name: &str| field(name).map(|v| String::from_utf8_lossy(v).trim().to_string());
    let audio = field("file").ok_or_else(|| bad_request("Field `file` is required."))?;
    if let Some(m) = text("model")
        && m != state.config.model
    {
        return Err(api_error(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            &format!("The model `{m}` does not exist."),
            Some("model"),
        ));
    }
    let truthy = |v: Option<String>| v.is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let natural = (audio.len() as u32 / 3200).clamp(4, 64);
    let max_tokens = text("max_completion_tokens")
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(natural, |m| m.clamp(1, natural));
    let marker = String::from_utf8_lossy(&audio[..audio.len().min(256)]).to_string();
    Ok(Job {
        api: Api::Transcription,
        prompt_tokens: (audio.len() / 640) as u32,
        prefix_blocks: Vec::new(),
        max_tokens,
        stream: truthy(text("stream")),
        include_usage: truthy(text("stream_include_usage")),
        ignore_eos: true,
        fault: Fault::of(&marker),
        request_id: 0,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Requests

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Api {
    Completions,
    Chat,
    /// TGI `/generate_stream`: `data:` without a space, one event per token, no `[DONE]`.
    TgiStream,
    /// TGI `/generate`: one JSON body.
    TgiGenerate,
    /// llama.cpp `/completion`: a final `stop: true` event, no `[DONE]`.
    LlamaCpp,
    /// SGLang `/generate`: cumulative text, then `[DONE]`.
    Sglang,
    /// LightLLM `/generate_stream`: `data:` without a space, `finished: true` ends it.
    LightLlm,
    /// LMDeploy `/generate` (a `prompt` body): delta text, then `[DONE]`.
    Lmdeploy,
    /// Triton's generate extension (TensorRT-LLM): `text_output` deltas, no end marker.
    Trtllm,
    /// OpenAI `/v1/responses`: named events, `response.completed` ends it.
    Responses,
    /// DeepSpeed-MII: `/generate` streams `{"text": [delta]}` then `[DONE]`;
    /// `/mii/<deployment>` answers with one JSON array.
    Mii,
    /// SenseTime's serving API (`/v1/llm/chat-completions`): `data:{"data":{...}}`, `data:[DONE]`.
    Amsv2,
    /// OpenPPL's gRPC `LLMService/Generation`: one protobuf message per token, then trailers.
    Ppl,
    /// `/v1/audio/transcriptions` (multipart in), vLLM's `transcription.chunk` stream out.
    Transcription,
}

impl Api {
    fn id_prefix(self) -> &'static str {
        match self {
            Api::Completions => "cmpl",
            Api::Chat => "chatcmpl",
            Api::Transcription => "trsc",
            _ => "gen",
        }
    }

    fn chunk_object(self) -> &'static str {
        match self {
            Api::Chat => "chat.completion.chunk",
            Api::Transcription => "transcription.chunk",
            _ => "text_completion",
        }
    }

    fn object(self) -> &'static str {
        match self {
            Api::Chat => "chat.completion",
            _ => "text_completion",
        }
    }

    fn is_openai(self) -> bool {
        matches!(
            self,
            Api::Completions | Api::Chat | Api::Responses | Api::Transcription
        )
    }
}

/// A token id for the simulated word at `position` (stable, never a special id).
fn token_id(position: u64) -> u64 {
    1000 + position % 30_000
}

/// What one request asks for, validated.
struct Job {
    api: Api,
    prompt_tokens: u32,
    /// Chained hashes of the prompt's whole blocks; empty when the prefix cache is off.
    prefix_blocks: Vec<u64>,
    max_tokens: u32,
    stream: bool,
    include_usage: bool,
    ignore_eos: bool,
    fault: Fault,
    /// The client's id for the request (gRPC `Request.id`), echoed in every response.
    request_id: u64,
}

// The error is the ready-made response for a bad request: rare, so its size does not matter.
#[allow(clippy::result_large_err)]
fn parse_job(state: &SimState, api: Api, bytes: &[u8]) -> Result<Job, Response<SimBody>> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| bad_request(&format!("Invalid JSON in the request body: {e}")))?;
    if !body.is_object() {
        return Err(bad_request("The request body must be a JSON object."));
    }
    match body.get("model") {
        None | Some(Value::Null) => {}
        Some(Value::String(m)) if *m == state.config.model => {}
        Some(Value::String(m)) => {
            return Err(api_error(
                StatusCode::NOT_FOUND,
                "NotFoundError",
                &format!("The model `{m}` does not exist."),
                Some("model"),
            ));
        }
        Some(_) => return Err(bad_request("`model` must be a string.")),
    }
    let prompt = match api {
        Api::Completions => match body.get("prompt") {
            None | Some(Value::Null) => return Err(bad_request("Field `prompt` is required.")),
            Some(p) => completion_prompt(p, false).map_err(bad_request)?,
        },
        Api::Chat | Api::Amsv2 => chat_prompt(&body).map_err(bad_request)?,
        Api::Responses => match body.get("input") {
            Some(Value::String(_)) => {
                completion_prompt(&body["input"], false).map_err(bad_request)?
            }
            Some(Value::Array(items)) => {
                let messages = serde_json::json!({ "messages": items });
                let p = chat_prompt(&messages).map_err(bad_request)?;
                Prompt {
                    text: Cow::Owned(p.text.into_owned()),
                    tokens: p.tokens,
                    ids: None,
                    templated: true,
                }
            }
            _ => {
                return Err(bad_request(
                    "Field `input` is required (a string or a list of messages).",
                ));
            }
        },
        _ => return Err(bad_request("This route serves OpenAI requests only.")),
    };
    let prompt_tokens = prompt.tokens;
    let fault = Fault::of(&prompt.text);
    if let Some(refusal) =
        fault.refusal(|status, kind, message| api_error(status, kind, message, None))
    {
        return Err(refusal);
    }
    let requested = [
        "max_completion_tokens",
        "max_tokens",
        "max_output_tokens",
        "max_new_tokens",
    ]
    .iter()
    .find_map(|k| body.get(*k).filter(|v| !v.is_null()));
    let max_tokens = match requested {
        None => 16,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_MODEL_LEN).contains(&n) => n as u32,
            _ => {
                return Err(bad_request(&format!(
                    "max_tokens must be an integer between 1 and {MAX_MODEL_LEN}, got {v}."
                )));
            }
        },
    };
    let total = u64::from(prompt_tokens) + u64::from(max_tokens);
    if total > MAX_MODEL_LEN {
        return Err(bad_request(&format!(
            "This model's maximum context length is {MAX_MODEL_LEN} tokens. However, you requested {total} \
             tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the \
             length of the messages or completion."
        )));
    }
    let flag = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(false);
    let prefix_blocks = match (state.config.prefix_cache, prompt.ids) {
        (false, _) => Vec::new(),
        (true, Some(ids)) => block_hashes(ids.iter().map(|id| id.as_u64().unwrap_or(0))),
        (true, None) if prompt.templated => {
            block_hashes(std::iter::once("<|im_start|>").chain(prompt.text.split_whitespace()))
        }
        (true, None) => block_hashes(prompt.text.split_whitespace()),
    };
    Ok(Job {
        api,
        prompt_tokens,
        prefix_blocks,
        max_tokens,
        stream: flag(body.get("stream")),
        include_usage: flag(body.pointer("/stream_options/include_usage")),
        ignore_eos: flag(body.get("ignore_eos")),
        fault,
        request_id: 0,
    })
}

/// A request's prompt as the simulator sees it.
struct Prompt<'a> {
    /// The text, searched for fault markers (empty for token ids).
    text: Cow<'a, str>,
    tokens: u32,
    /// The token ids when the prompt was given as ids; else the tokens are the text's words.
    ids: Option<&'a [Value]>,
    /// Chat messages under the simulated template, whose opening token starts every block chain:
    /// a chat prompt never shares cached blocks with a raw prompt of the same words.
    templated: bool,
}

/// A completions `prompt`: a string, a list of token ids, or a one-element list of either.
fn completion_prompt(v: &Value, nested: bool) -> Result<Prompt<'_>, &'static str> {
    match v {
        Value::String(s) => Ok(Prompt {
            text: Cow::Borrowed(s.as_str()),
            tokens: count_words(s),
            ids: None,
            templated: false,
        }),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => Ok(Prompt {
            text: Cow::Borrowed(""),
            tokens: items.len() as u32,
            ids: Some(items),
            templated: false,
        }),
        Value::Array(items) if items.len() == 1 && !nested => completion_prompt(&items[0], true),
        Value::Array(_) => {
            Err("The simulator serves one prompt per request (a string or one list of token ids).")
        }
        _ => Err("`prompt` must be a string or a list of token ids."),
    }
}

/// All message contents of a chat request, one per line, and their tokens under the simulated
/// chat template.
fn chat_prompt(body: &Value) -> Result<Prompt<'_>, &'static str> {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err("Field `messages` is required (a list of messages).");
    };
    let mut text = String::new();
    for message in messages {
        match message.get("content") {
            Some(Value::String(s)) => {
                text.push_str(s);
                text.push('\n');
            }
            Some(Value::Array(parts)) => {
                for part in parts {
                    if let Some(t) = part.get("text").and_then(Value::as_str) {
                        text.push_str(t);
                        text.push('\n');
                    }
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => {
                return Err("Message `content` must be a string or a list of content parts.");
            }
        }
    }
    let tokens = count_words(&text)
        + CHAT_TEMPLATE_TOKENS_PER_MESSAGE * messages.len() as u32
        + CHAT_GENERATION_PROMPT_TOKENS;
    Ok(Prompt {
        text: Cow::Owned(text),
        tokens,
        ids: None,
        templated: true,
    })
}

/// vLLM-style block hashes: one per whole block of [`PREFIX_BLOCK_TOKENS`] tokens, each covering
/// its block and (through the previous hash) everything before it, so equal hashes mean equal
/// prefixes.
fn block_hashes<T: Hash>(tokens: impl Iterator<Item = T>) -> Vec<u64> {
    let mut hashes = Vec::new();
    let mut hasher = DefaultHasher::new();
    let mut in_block = 0;
    for token in tokens {
        token.hash(&mut hasher);
        in_block += 1;
        if in_block == PREFIX_BLOCK_TOKENS {
            let hash = hasher.finish();
            hashes.push(hash);
            hasher = DefaultHasher::new();
            hash.hash(&mut hasher);
            in_block = 0;
        }
    }
    hashes
}

// ---------------------------------------------------------------------------------------------
// Generation

async fn generate(state: &Arc<SimState>, job: Job, arrived: Instant) -> Response<SimBody> {
    match job.fault {
        Fault::NoAnswer => return faults::never().await,
        Fault::Endless if !job.stream => return faults::never().await,
        Fault::Huge => return faults::huge(job.stream),
        Fault::SlowHeaders => tokio::time::sleep(faults::SLOW_HEADERS).await,
        _ => {}
    }
    let (slot, arrived) = admit(state, arrived).await;
    let cfg = &state.config;
    let n = state.generations.fetch_add(1, Relaxed);
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let output_tokens = if job.fault == Fault::Endless {
        u32::MAX
    } else if job.ignore_eos {
        job.max_tokens
    } else {
        rng.random_range(job.max_tokens.div_ceil(2)..=job.max_tokens)
    };
    let hit_max = output_tokens == job.max_tokens;
    let cached_tokens = cfg
        .prefix_cache
        .then(|| state.prefix_lookup(&job.prefix_blocks, job.prompt_tokens));
    let prefilled = job.prompt_tokens - cached_tokens.unwrap_or(0);
    let ttft_s = ((cfg.ttft_ms / 1e3 + cfg.prefill_us_per_token * f64::from(prefilled) / 1e6)
        * jitter(cfg, &mut rng))
    .max(0.0);
    let id = format!(
        "{}-{:016x}{:016x}",
        job.api.id_prefix(),
        splitmix64(cfg.seed ^ n),
        splitmix64(n.wrapping_add(0x5851_F42D_4C95_7F2D))
    );
    let created = unix_now();
    let word_offset = splitmix64(cfg.seed.wrapping_add(n));
    state
        .prompt_tokens
        .fetch_add(u64::from(job.prompt_tokens), Relaxed);
    let active = ActiveGuard::new(state.clone(), slot);

    if !job.stream {
        let mut offset_s = ttft_s;
        for _ in 1..output_tokens {
            offset_s += itl_s(state, &mut rng);
        }
        tokio::time::sleep_until(arrived + secs(offset_s)).await;
        drop(active);
        match job.fault {
            Fault::Malformed => {
                return json_response(StatusCode::OK, "{\"choices\":[{\"text\": BROKEN");
            }
            Fault::ErrorEvent if !job.api.is_openai() => {
                return native_error(
                    job.api,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "simulated in-stream error",
                );
            }
            Fault::ErrorEvent => {
                return api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "simulated in-stream error",
                    None,
                );
            }
            Fault::Drop => {
                return Response::builder()
                    .status(StatusCode::OK)
                    .header(CONTENT_TYPE, JSON_CONTENT_TYPE)
                    .body(SimBody::Fail { yielded: false })
                    .expect("static headers are valid");
            }
            Fault::Truncated | Fault::Stall => {
                let body = whole_body(
                    state,
                    job.api,
                    &id,
                    created,
                    word_offset,
                    job.prompt_tokens,
                    cached_tokens,
                    output_tokens,
                    hit_max,
                );
                return faults::broken_whole(job.fault, body);
            }
            _ => {}
        }
        state
            .generation_tokens
            .fetch_add(u64::from(output_tokens), Relaxed);
        state.successes.fetch_add(1, Relaxed);
        let body = whole_body(
            state,
            job.api,
            &id,
            created,
            word_offset,
            job.prompt_tokens,
            cached_tokens,
            output_tokens,
            hit_max,
        );
        return json_response(StatusCode::OK, body);
    }

    let prefix = format!(
        "data: {{\"id\":\"{id}\",\"object\":\"{}\",\"created\":{created},\"model\":{},\"choices\":",
        job.api.chunk_object(),
        state.model_json
    );
    let generation = Generation {
        state: state.clone(),
        _active: Some(active),
        api: job.api,
        prefix,
        prompt_tokens: job.prompt_tokens,
        cached_tokens,
        output_tokens,
        hit_max,
        include_usage: job.include_usage,
        word_offset,
        fault: job.fault,
        rng,
        arrived,
        offset_s: ttft_s,
        sleep: Box::pin(tokio::time::sleep_until(arrived + secs(ttft_s))),
        armed: true,
        yielded: false,
        sent: 0,
        step: if matches!(job.api, Api::Chat | Api::Responses) {
            Step::Role
        } else {
            Step::Token
        },
        sequence: 0,
        created,
        request_id: job.request_id,
        failed: false,
        id,
        text_so_far: String::new(),
        ids_so_far: String::new(),
    };
    let content_type = if job.api == Api::Ppl {
        "application/grpc"
    } else {
        SSE_CONTENT_TYPE
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, content_type)
        .body(SimBody::Stream(Box::new(generation)))
        .expect("static headers are valid")
}

/// The non-streaming response body, vLLM's key order.
#[allow(clippy::too_many_arguments)]
fn whole_body(
    state: &SimState,
    api: Api,
    id: &str,
    created: u64,
    word_offset: u64,
    prompt_tokens: u32,
    cached_tokens: Option<u32>,
    output_tokens: u32,
    hit_max: bool,
) -> String {
    let mut text = String::with_capacity(output_tokens as usize * 8);
    for k in 0..output_tokens {
        text.push(' ');
        text.push_str(word_for(word_offset.wrapping_add(u64::from(k))));
    }
    let finish = if hit_max { "length" } else { "stop" };
    let cached = cached_tokens.unwrap_or(0);
    let choice = match api {
        Api::TgiStream | Api::TgiGenerate => {
            let (reason, text) = if hit_max {
                ("length", text)
            } else {
                // The last token is EOS: counted, not in the text.
                let cut = text.rfind(' ').unwrap_or(0);
                ("eos_token", text[..cut].to_string())
            };
            return format!(
                "{{\"generated_text\":\"{text}\",\"details\":{{\"finish_reason\":\"{reason}\",\"generated_tokens\":{output_tokens},\"seed\":null,\"prefill\":[],\"tokens\":[]}}}}"
            );
        }
        Api::LlamaCpp => {
            return format!(
                "{{\"index\":0,\"content\":\"{text}\",\"tokens\":[],\"id_slot\":0,\"stop\":true,\"model\":{},{}}}",
                state.model_json,
                llamacpp_final_fields(prompt_tokens, output_tokens, hit_max, cached)
            );
        }
        Api::Lmdeploy => {
            let reason = if hit_max { "length" } else { "stop" };
            return format!(
                "{{\"text\":\"{text}\",\"output_ids\":[],\"meta_info\":{{\"prompt_tokens\":{prompt_tokens},\"completion_tokens\":{output_tokens},\"finish_reason\":{{\"type\":\"{reason}\"}},\"output_token_logprobs\":null,\"routed_experts\":null}}}}"
            );
        }
        Api::Trtllm => {
            return format!("{TRITON_PREFIX}\"text_output\":\"{text}\"}}");
        }
        Api::Responses => {
            return format!(
                "{{\"id\":\"resp_{id}\",\"object\":\"response\",\"created_at\":{created},\"status\":\"completed\",\"error\":null,\"incomplete_details\":null,\"model\":{},\"output\":[{{\"id\":\"msg_{id}\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"{text}\"}}],\"role\":\"assistant\"}}],\"usage\":{}}}",
                state.model_json,
                responses_usage(prompt_tokens, output_tokens, cached)
            );
        }
        Api::Transcription => {
            return format!(
                "{{\"text\":\"{text}\",\"usage\":{{\"type\":\"tokens\",\"input_tokens\":{prompt_tokens},\"output_tokens\":{output_tokens},\"total_tokens\":{}}}}}",
                prompt_tokens + output_tokens
            );
        }
        // gRPC always streams.
        Api::Ppl => return String::new(),
        Api::Mii => {
            return format!(
                "[{{\"finish_reason\":\"{}\",\"generated_length\":{output_tokens},\"generated_text\":\"{text}\",\"prompt_length\":{prompt_tokens}}}]",
                if hit_max { "length" } else { "stop" }
            );
        }
        Api::Amsv2 => {
            return format!(
                "{{\"data\":{{\"id\":\"{id}\",\"choices\":[{{\"index\":0,\"role\":\"assistant\",\"message\":\"{text}\",\"finish_reason\":\"{finish}\"}}],\"usage\":{{\"prompt_tokens\":{prompt_tokens},\"completion_tokens\":{output_tokens},\"total_tokens\":{}}}}}}}",
                prompt_tokens + output_tokens
            );
        }
        Api::LightLlm => {
            return format!(
                "{{\"generated_text\":[\"{text}\"],\"count_output_tokens\":{output_tokens},\"finish_reason\":\"{}\"}}",
                if hit_max { "length" } else { "stop" }
            );
        }
        Api::Sglang => {
            let ids: Vec<String> = (0..output_tokens)
                .map(|k| token_id(word_offset.wrapping_add(u64::from(k))).to_string())
                .collect();
            return format!(
                "{{\"text\":\"{text}\",\"output_ids\":[{}],\"meta_info\":{{\"id\":\"{id}\",\"finish_reason\":{},\"prompt_tokens\":{prompt_tokens},\"completion_tokens\":{output_tokens},\"cached_tokens\":{cached},\"e2e_latency\":0.1}}}}",
                ids.join(","),
                sglang_finish(hit_max, output_tokens)
            );
        }
        Api::Completions => format!(
            "{{\"index\":0,\"text\":\"{text}\",\"logprobs\":null,\"finish_reason\":\"{finish}\",\"stop_reason\":null,\"prompt_logprobs\":null}}"
        ),
        Api::Chat => format!(
            "{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{text}\"}},\"logprobs\":null,\"finish_reason\":\"{finish}\",\"stop_reason\":null}}"
        ),
    };
    let details = match cached_tokens {
        Some(n) => format!("{{\"cached_tokens\":{n}}}"),
        None => "null".to_string(),
    };
    format!(
        "{{\"id\":\"{id}\",\"object\":\"{}\",\"created\":{created},\"model\":{},\"choices\":[{choice}],\"usage\":{{\"prompt_tokens\":{prompt_tokens},\"total_tokens\":{},\"completion_tokens\":{output_tokens},\"prompt_tokens_details\":{details}}}}}",
        api.object(),
        state.model_json,
        prompt_tokens + output_tokens
    )
}

/// The fields of llama.cpp's final event after `model` (protocols/llamacpp.md key order).
fn llamacpp_final_fields(
    prompt_tokens: u32,
    output_tokens: u32,
    hit_max: bool,
    cached: u32,
) -> String {
    let stop_type = if hit_max { "limit" } else { "eos" };
    format!(
        "\"tokens_predicted\":{output_tokens},\"tokens_evaluated\":{prompt_tokens},\"generation_settings\":{{\"n_predict\":{output_tokens},\"seed\":4294967295,\"temperature\":0.800000011920929}},\"prompt\":\"\",\"has_new_line\":false,\"truncated\":false,\"stop_type\":\"{stop_type}\",\"stopping_word\":\"\",\"tokens_cached\":{},\"timings\":{{\"prompt_n\":{},\"predicted_n\":{output_tokens}}}",
        prompt_tokens + output_tokens,
        prompt_tokens - cached.min(prompt_tokens)
    )
}

/// Triton's response keys before `text_output` (alphabetical, compact), as the ensemble sends.
const TRITON_PREFIX: &str = "{\"batch_index\":0,\"context_logits\":0.0,\"cum_log_probs\":0.0,\"generation_logits\":0.0,\"model_name\":\"ensemble\",\"model_version\":\"1\",\"output_log_probs\":[0.0],\"sequence_end\":false,\"sequence_id\":0,\"sequence_index\":0,\"sequence_start\":false,";

/// The Responses API usage object.
fn responses_usage(prompt_tokens: u32, output_tokens: u32, cached: u32) -> String {
    format!(
        "{{\"input_tokens\":{prompt_tokens},\"input_tokens_details\":{{\"cached_tokens\":{cached}}},\"output_tokens\":{output_tokens},\"output_tokens_details\":{{\"reasoning_tokens\":0}},\"total_tokens\":{}}}",
        prompt_tokens + output_tokens
    )
}

/// SGLang's `finish_reason` object.
fn sglang_finish(hit_max: bool, output_tokens: u32) -> String {
    if hit_max {
        format!("{{\"type\":\"length\",\"length\":{output_tokens}}}")
    } else {
        "{\"type\":\"stop\",\"matched\":2}".to_string()
    }
}

/// Keeps `vllm:num_requests_running` and the batching model honest: counted from arrival until
/// the response ends or is dropped (client gone, connection aborted).
/// A request in the running batch, holding its batch slot (with `max_batch`) until its
/// response ends.
struct ActiveGuard {
    state: Arc<SimState>,
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ActiveGuard {
    fn new(state: Arc<SimState>, slot: Option<tokio::sync::OwnedSemaphorePermit>) -> Self {
        state.active.fetch_add(1, Relaxed);
        Self { state, _slot: slot }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.state.active.fetch_sub(1, Relaxed);
    }
}

/// Waits for a batch slot when the batch is full, counted as waiting; the request's clock
/// (TTFT and every token) starts when it is admitted, as a real server's queue time adds to TTFT.
async fn admit(
    state: &Arc<SimState>,
    arrived: Instant,
) -> (Option<tokio::sync::OwnedSemaphorePermit>, Instant) {
    let Some(batch) = &state.batch else {
        return (None, arrived);
    };
    if let Ok(permit) = batch.clone().try_acquire_owned() {
        return (Some(permit), arrived);
    }
    state.waiting.fetch_add(1, Relaxed);
    let permit = batch.clone().acquire_owned().await.ok();
    state.waiting.fetch_sub(1, Relaxed);
    (permit, Instant::now())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    /// Chat's role-only chunk, due at TTFT.
    Role,
    /// Token `sent`, due when `sleep` fires.
    Token,
    Malformed,
    ErrorEvent,
    Usage,
    Done,
    /// End the body with an error: hyper aborts the chunked body and closes the connection.
    Drop,
    /// Send half of the next event, then end the body cleanly.
    Truncated,
    /// Send nothing more, ever, leaving the connection open.
    Stall,
    Finished,
}

/// One streamed response: a state machine hyper polls as the response body. Dropped (and so
/// stopped) as soon as the connection goes away.
struct Generation {
    state: Arc<SimState>,
    /// Released when the stream ends, or when the body is dropped mid-way.
    _active: Option<ActiveGuard>,
    api: Api,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":` shared by every event.
    prefix: String,
    prompt_tokens: u32,
    /// Reported in the usage event when the prefix cache is on.
    cached_tokens: Option<u32>,
    output_tokens: u32,
    hit_max: bool,
    include_usage: bool,
    word_offset: u64,
    fault: Fault,
    rng: SmallRng,
    arrived: Instant,
    /// Seconds after `arrived` at which the next token is due (absolute, so no drift).
    offset_s: f64,
    sleep: Pin<Box<Sleep>>,
    /// `sleep` was reset and has not fired yet.
    armed: bool,
    /// The drop fault already returned `Pending` once, letting hyper flush the chunks before it.
    yielded: bool,
    /// Token chunks already produced.
    sent: u32,
    step: Step,
    /// An in-stream error was sent: the request does not count as a success.
    failed: bool,
    id: String,
    /// Echoed in every gRPC response.
    request_id: u64,
    /// The Responses API numbers its events.
    sequence: u32,
    created: u64,
    /// SGLang streams the text and ids generated so far in every event.
    text_so_far: String,
    ids_so_far: String,
}

impl Generation {
    fn poll_event(
        &mut self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let event = match self.step {
            Step::Role if self.api == Api::Responses => {
                ready!(self.wait(cx));
                self.step = Step::Token;
                self.responses_preamble()
            }
            Step::Role => {
                ready!(self.wait(cx));
                self.step = Step::Token;
                concat(&[
                    self.prefix.as_str(),
                    "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
                ])
            }
            Step::Token => {
                ready!(self.wait(cx));
                let event = self.token_event();
                self.sent += 1;
                self.state.generation_tokens.fetch_add(1, Relaxed);
                self.step = self.after_token();
                event
            }
            Step::Malformed => {
                self.step = self.next_token();
                Bytes::from_static(MALFORMED_EVENT)
            }
            Step::ErrorEvent if self.api == Api::Ppl => {
                self.failed = true;
                self.step = Step::Done;
                ppl_response(2, self.request_id, None)
            }
            Step::ErrorEvent => {
                self.failed = true;
                self.step = Step::Done;
                Bytes::from_static(match self.api {
                    Api::TgiStream | Api::TgiGenerate => {
                        b"data:{\"error\":\"simulated in-stream error\",\"error_type\":\"generation\"}\n\n"
                    }
                    Api::LlamaCpp => {
                        b"error: {\"code\":500,\"message\":\"simulated in-stream error\",\"type\":\"server_error\"}\n\n"
                    }
                    Api::Sglang => b"data: {\"error\":{\"message\":\"simulated in-stream error\"}}\n\n",
                    Api::Lmdeploy => b"data: {\"error\":{\"message\":\"simulated in-stream error\",\"type\":\"internal_error\",\"code\":500,\"param\":null,\"object\":\"error\"}}\n\n",
                    Api::Trtllm => b"data: {\"error\":\"simulated in-stream error\"}\n\n",
                    Api::Responses => b"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"simulated in-stream error\",\"param\":null,\"sequence_number\":99}\n\n",
                    Api::Amsv2 => b"data:{\"error\":{\"code\":\"internal_error\",\"message\":\"simulated in-stream error\"}}\n\n",
                    // LightLLM and MII have no in-stream error: the body just ends.
                    Api::LightLlm | Api::Mii => b"",
                    Api::Completions | Api::Chat | Api::Transcription | Api::Ppl => ERROR_EVENT,
                })
            }
            Step::Usage => {
                self.step = Step::Done;
                self.usage_event()
            }
            Step::Done => {
                if !self.failed {
                    self.state.successes.fetch_add(1, Relaxed);
                }
                self._active = None;
                self.step = Step::Finished;
                // Only OpenAI chat/completions, SGLang and LMDeploy end with `[DONE]`.
                match self.api {
                    Api::Completions
                    | Api::Chat
                    | Api::Sglang
                    | Api::Lmdeploy
                    | Api::Transcription => Bytes::from_static(DONE_EVENT),
                    Api::Ppl => {
                        let mut trailers = hyper::HeaderMap::new();
                        trailers
                            .insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Api::Mii if !self.failed => Bytes::from_static(DONE_EVENT),
                    Api::Amsv2 => Bytes::from_static(b"data:[DONE]\n\n"),
                    _ => return Poll::Ready(None),
                }
            }
            Step::Drop => {
                // hyper polls the body again right after buffering a chunk and drops its write
                // buffer on a body error: yield once so the chunks before the cut reach the client.
                if !std::mem::replace(&mut self.yielded, true) {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self._active = None;
                self.step = Step::Finished;
                return Poll::Ready(Some(Err(io::Error::other("simulated connection drop"))));
            }
            Step::Truncated => {
                let event = self.token_event();
                self._active = None;
                self.step = Step::Finished;
                event.slice(..event.len() / 2)
            }
            // Nothing will wake this body again, as intended.
            Step::Stall => return Poll::Pending,
            Step::Finished => return Poll::Ready(None),
        };
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    fn wait(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.armed {
            ready!(self.sleep.as_mut().poll(cx));
            self.armed = false;
        }
        Poll::Ready(())
    }

    fn token_event(&mut self) -> Bytes {
        let position = self.word_offset.wrapping_add(u64::from(self.sent));
        let word = word_for(position);
        let last = self.sent + 1 == self.output_tokens;
        match self.api {
            Api::TgiStream | Api::TgiGenerate => {
                let index = self.sent + 1;
                let token = if last && !self.hit_max {
                    "{\"id\":2,\"text\":\"</s>\",\"logprob\":-0.01,\"special\":true}".to_string()
                } else {
                    format!(
                        "{{\"id\":{},\"text\":\" {word}\",\"logprob\":-0.25,\"special\":false}}",
                        token_id(position)
                    )
                };
                if !last {
                    self.text_so_far.push(' ');
                    self.text_so_far.push_str(word);
                    return Bytes::from(format!(
                        "data:{{\"index\":{index},\"token\":{token},\"generated_text\":null,\"details\":null}}\n\n"
                    ));
                }
                let reason = if self.hit_max {
                    self.text_so_far.push(' ');
                    self.text_so_far.push_str(word);
                    "length"
                } else {
                    "eos_token"
                };
                Bytes::from(format!(
                    "data:{{\"index\":{index},\"token\":{token},\"generated_text\":\"{}\",\"details\":{{\"finish_reason\":\"{reason}\",\"generated_tokens\":{},\"seed\":null,\"input_length\":{}}}}}\n\n",
                    self.text_so_far, self.output_tokens, self.prompt_tokens
                ))
            }
            Api::LightLlm => {
                let finish = match (last, self.hit_max) {
                    (false, _) => "\"finished\":false,\"finish_reason\":null",
                    (true, true) => "\"finished\":true,\"finish_reason\":\"length\"",
                    (true, false) => "\"finished\":true,\"finish_reason\":\"stop\"",
                };
                Bytes::from(format!(
                    "data:{{\"token\":{{\"id\":{},\"text\":\" {word}\",\"logprob\":-0.25,\"special\":false,\"count_output_tokens\":{},\"prompt_tokens\":{}}},\"generated_text\":null,{finish},\"details\":null}}\n\n",
                    token_id(position),
                    self.sent + 1,
                    self.prompt_tokens
                ))
            }
            Api::Lmdeploy => {
                let finish = match (last, self.hit_max) {
                    (false, _) => "null",
                    (true, true) => "{\"type\":\"length\"}",
                    (true, false) => "{\"type\":\"stop\"}",
                };
                Bytes::from(format!(
                    "data: {{\"text\":\" {word}\",\"output_ids\":[{}],\"meta_info\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\"finish_reason\":{finish},\"output_token_logprobs\":null,\"routed_experts\":null}}}}\n\n",
                    token_id(position),
                    self.prompt_tokens,
                    self.sent + 1
                ))
            }
            Api::Mii => Bytes::from(format!("data: {{\"text\": [\" {word}\"]}}\n\n")),
            Api::Ppl => {
                let status = if last { 1 } else { 0 };
                ppl_response(status, self.request_id, Some(&format!(" {word}")))
            }
            Api::Transcription => {
                let finish = if last {
                    ",\"finish_reason\":\"stop\",\"stop_reason\":null"
                } else {
                    ""
                };
                concat(&[
                    self.prefix.as_str(),
                    "[{\"delta\":{\"content\":\" ",
                    word,
                    "\"}",
                    finish,
                    "}]}\n\n",
                ])
            }
            Api::Amsv2 => {
                let tail = if last {
                    format!(
                        "\"{}\"}}],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{}}}}}}}",
                        if self.hit_max { "length" } else { "stop" },
                        self.prompt_tokens,
                        self.output_tokens,
                        self.prompt_tokens + self.output_tokens
                    )
                } else {
                    "\"\"}]}}".to_string()
                };
                Bytes::from(format!(
                    "data:{{\"data\":{{\"id\":\"{}\",\"choices\":[{{\"index\":0,\"delta\":\" {word}\",\"finish_reason\":{tail}\n\n",
                    self.id
                ))
            }
            Api::Trtllm => Bytes::from(format!(
                "data: {TRITON_PREFIX}\"text_output\":\" {word}\"}}\n\n"
            )),
            Api::Responses => {
                self.text_so_far.push(' ');
                self.text_so_far.push_str(word);
                self.sequence += 1;
                Bytes::from(format!(
                    "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":{},\"item_id\":\"msg_{}\",\"output_index\":0,\"content_index\":0,\"delta\":\" {word}\",\"logprobs\":[]}}\n\n",
                    self.sequence, self.id
                ))
            }
            Api::LlamaCpp => Bytes::from(format!(
                "data: {{\"index\":0,\"content\":\" {word}\",\"tokens\":[{}],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":{},\"tokens_evaluated\":{}}}\n\n",
                token_id(position),
                self.sent + 1,
                self.prompt_tokens
            )),
            Api::Sglang => {
                self.text_so_far.push(' ');
                self.text_so_far.push_str(word);
                if !self.ids_so_far.is_empty() {
                    self.ids_so_far.push(',');
                }
                let _ = write!(self.ids_so_far, "{}", token_id(position));
                let finish = if last {
                    sglang_finish(self.hit_max, self.output_tokens)
                } else {
                    "null".to_string()
                };
                Bytes::from(format!(
                    "data: {{\"text\":\"{}\",\"output_ids\":[{}],\"meta_info\":{{\"id\":\"{}\",\"finish_reason\":{finish},\"prompt_tokens\":{},\"completion_tokens\":{},\"cached_tokens\":{}}}}}\n\n",
                    self.text_so_far,
                    self.ids_so_far,
                    self.id,
                    self.prompt_tokens,
                    self.sent + 1,
                    self.cached_tokens.unwrap_or(0)
                ))
            }
            Api::Completions => {
                let finish = match (last, self.hit_max) {
                    (false, _) => "null",
                    (true, true) => "\"length\"",
                    (true, false) => "\"stop\"",
                };
                concat(&[
                    self.prefix.as_str(),
                    "[{\"index\":0,\"text\":\" ",
                    word,
                    "\",\"logprobs\":null,\"finish_reason\":",
                    finish,
                    ",\"stop_reason\":null}],\"usage\":null}\n\n",
                ])
            }
            Api::Chat => {
                let tail = match (last, self.hit_max) {
                    (false, _) => "null}]}\n\n",
                    (true, true) => "\"length\",\"stop_reason\":null}]}\n\n",
                    (true, false) => "\"stop\",\"stop_reason\":null}]}\n\n",
                };
                concat(&[
                    self.prefix.as_str(),
                    "[{\"index\":0,\"delta\":{\"content\":\" ",
                    word,
                    "\"},\"logprobs\":null,\"finish_reason\":",
                    tail,
                ])
            }
        }
    }

    /// `response.created` … `response.content_part.added`, before the first delta.
    fn responses_preamble(&mut self) -> Bytes {
        let response = self.responses_object("in_progress", "[]", "null");
        let mut out = String::with_capacity(1024);
        for (seq, kind) in [(0, "response.created"), (1, "response.in_progress")] {
            let _ = write!(
                out,
                "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{seq},\"response\":{response}}}\n\n"
            );
        }
        let _ = write!(
            out,
            "event: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{{\"id\":\"msg_{id}\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}}}\n\n\
             event: response.content_part.added\ndata: {{\"type\":\"response.content_part.added\",\"sequence_number\":3,\"item_id\":\"msg_{id}\",\"output_index\":0,\"content_index\":0,\"part\":{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"\"}}}}\n\n",
            id = self.id
        );
        self.sequence = 3;
        Bytes::from(out)
    }

    fn responses_object(&self, status: &str, output: &str, usage: &str) -> String {
        format!(
            "{{\"id\":\"resp_{}\",\"object\":\"response\",\"created_at\":{},\"status\":\"{status}\",\"error\":null,\"incomplete_details\":null,\"instructions\":null,\"max_output_tokens\":{},\"model\":{},\"output\":{output},\"parallel_tool_calls\":true,\"temperature\":1.0,\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,\"usage\":{usage}}}",
            self.id, self.created, self.output_tokens, self.state.model_json
        )
    }

    /// `response.output_text.done` … `response.completed` with the usage.
    fn responses_completion(&self) -> Bytes {
        let text = &self.text_so_far;
        let part = format!(
            "{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"{text}\"}}"
        );
        let item = format!(
            "{{\"id\":\"msg_{}\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{part}],\"role\":\"assistant\"}}",
            self.id
        );
        let usage = responses_usage(
            self.prompt_tokens,
            self.output_tokens,
            self.cached_tokens.unwrap_or(0),
        );
        let response = self.responses_object("completed", &format!("[{item}]"), &usage);
        let s = self.sequence;
        Bytes::from(format!(
            "event: response.output_text.done\ndata: {{\"type\":\"response.output_text.done\",\"sequence_number\":{},\"item_id\":\"msg_{id}\",\"output_index\":0,\"content_index\":0,\"text\":\"{text}\",\"logprobs\":[]}}\n\n\
             event: response.content_part.done\ndata: {{\"type\":\"response.content_part.done\",\"sequence_number\":{},\"item_id\":\"msg_{id}\",\"output_index\":0,\"content_index\":0,\"part\":{part}}}\n\n\
             event: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"sequence_number\":{},\"output_index\":0,\"item\":{item}}}\n\n\
             event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":{},\"response\":{response}}}\n\n",
            s + 1,
            s + 2,
            s + 3,
            s + 4,
            id = self.id
        ))
    }

    fn usage_event(&self) -> Bytes {
        if self.api == Api::Responses {
            return self.responses_completion();
        }
        if self.api == Api::LlamaCpp {
            return Bytes::from(format!(
                "data: {{\"index\":0,\"content\":\"\",\"tokens\":[],\"id_slot\":0,\"stop\":true,\"model\":{},{}}}\n\n",
                self.state.model_json,
                llamacpp_final_fields(
                    self.prompt_tokens,
                    self.output_tokens,
                    self.hit_max,
                    self.cached_tokens.unwrap_or(0)
                )
            ));
        }
        let mut event = String::with_capacity(self.prefix.len() + 160);
        let _ = write!(
            event,
            "{}[],\"usage\":{{\"prompt_tokens\":{},\"total_tokens\":{},\"completion_tokens\":{}",
            self.prefix,
            self.prompt_tokens,
            self.prompt_tokens + self.output_tokens,
            self.output_tokens
        );
        // vLLM leaves unset fields out of stream chunks, so the details appear only with a cache.
        if let Some(n) = self.cached_tokens {
            let _ = write!(
                event,
                ",\"prompt_tokens_details\":{{\"cached_tokens\":{n}}}"
            );
        }
        event.push_str("}}\n\n");
        Bytes::from(event)
    }

    /// What follows the token just sent: an injected fault, the next token or the end.
    fn after_token(&mut self) -> Step {
        match self.fault {
            Fault::ErrorEvent if self.sent == 1 => Step::ErrorEvent,
            Fault::Malformed if self.sent == self.output_tokens.min(2) => Step::Malformed,
            Fault::Drop if self.sent == self.output_tokens.min(2) => Step::Drop,
            Fault::Truncated if self.sent == self.output_tokens.min(2) => Step::Truncated,
            Fault::Stall if self.sent == self.output_tokens.min(2) => Step::Stall,
            _ => self.next_token(),
        }
    }

    fn next_token(&mut self) -> Step {
        if self.sent < self.output_tokens {
            self.offset_s += itl_s(&self.state, &mut self.rng);
            let deadline = self.arrived + secs(self.offset_s);
            self.sleep.as_mut().reset(deadline);
            self.armed = true;
            Step::Token
        } else if matches!(self.api, Api::LlamaCpp | Api::Responses)
            || (self.api.is_openai() && self.include_usage)
        {
            Step::Usage
        } else {
            Step::Done
        }
    }
}

/// A response body: a fixed buffer, a stream being generated, or an injected failure.
enum SimBody {
    Full(Option<Bytes>),
    Stream(Box<Generation>),
    /// The non-streaming drop fault: headers, then an aborted body.
    Fail {
        yielded: bool,
    },
    /// The other faults' bodies: huge, stalled, shorter than declared.
    Fault(faults::FaultBody),
}

impl SimBody {
    fn full(bytes: Bytes) -> Self {
        SimBody::Full(if bytes.is_empty() { None } else { Some(bytes) })
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.get_mut() {
            SimBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Stream(generation) => generation.poll_event(cx),
            SimBody::Fail { yielded } => {
                if !std::mem::replace(yielded, true) {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(io::Error::other("simulated connection drop"))))
            }
            SimBody::Fault(body) => body.poll_frame(),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SimBody::Full(bytes) => bytes.is_none(),
            SimBody::Stream(generation) => generation.step == Step::Finished,
            SimBody::Fail { .. } => false,
            SimBody::Fault(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            SimBody::Stream(_) | SimBody::Fail { .. } => SizeHint::default(),
            SimBody::Fault(body) => body.size_hint(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Other routes and helpers

fn models(state: &SimState) -> Response<SimBody> {
    let body = format!(
        "{{\"object\":\"list\",\"data\":[{{\"id\":{m},\"object\":\"model\",\"created\":{t},\"owned_by\":{owner},\"root\":{m},\"parent\":null,\"max_model_len\":{MAX_MODEL_LEN}}}]}}",
        m = state.model_json,
        t = state.started_unix,
        // llama.cpp names itself here; clients use it to pick its tokenize dialect.
        owner = if state.config.dialect.as_deref() == Some("llama.cpp") {
            "\"llamacpp\""
        } else {
            "\"llmb-sim\""
        }
    );
    json_response(StatusCode::OK, body)
}

fn metrics(state: &SimState) -> Response<SimBody> {
    let rows = [
        (
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            state.active.load(Relaxed) as f64,
        ),
        (
            "vllm:num_requests_waiting",
            "gauge",
            "Number of requests waiting to be processed.",
            state.waiting.load(Relaxed) as f64,
        ),
        (
            "vllm:kv_cache_usage_perc",
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            (state.active.load(Relaxed) as f64 / SIM_KV_CACHE_SEQUENCES).min(1.0),
        ),
        (
            "vllm:prompt_tokens_total",
            "counter",
            "Number of prefill tokens processed.",
            state.prompt_tokens.load(Relaxed) as f64,
        ),
        (
            "vllm:generation_tokens_total",
            "counter",
            "Number of generation tokens processed.",
            state.generation_tokens.load(Relaxed) as f64,
        ),
        (
            "vllm:request_success_total",
            "counter",
            "Count of successfully processed requests.",
            state.successes.load(Relaxed) as f64,
        ),
        (
            "vllm:prefix_cache_queries_total",
            "counter",
            "Prefix cache queries, in terms of number of queried tokens.",
            state.prefix_queries.load(Relaxed) as f64,
        ),
        (
            "vllm:prefix_cache_hits_total",
            "counter",
            "Prefix cache hits, in terms of number of cached tokens.",
            state.prefix_hits.load(Relaxed) as f64,
        ),
    ];
    let mut out = String::with_capacity(2048);
    for (name, kind, help, value) in rows {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{model_name=\"{}\"}} {value}\n",
            state.model_label
        );
    }
    full(
        StatusCode::OK,
        Some("text/plain; version=0.0.4; charset=utf-8"),
        out,
    )
}

fn full(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: impl Into<Bytes>,
) -> Response<SimBody> {
    let mut builder = Response::builder().status(status);
    if let Some(content_type) = content_type {
        builder = builder.header(CONTENT_TYPE, content_type);
    }
    builder
        .body(SimBody::full(body.into()))
        .expect("static headers are valid")
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<SimBody> {
    full(status, Some(JSON_CONTENT_TYPE), body)
}

/// vLLM's (≥ 0.10.1) error envelope.
fn api_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    param: Option<&str>,
) -> Response<SimBody> {
    let message = Value::from(message).to_string();
    let param = param.map_or_else(|| "null".to_string(), |p| Value::from(p).to_string());
    json_response(
        status,
        format!(
            "{{\"error\":{{\"message\":{message},\"type\":\"{kind}\",\"param\":{param},\"code\":{}}}}}",
            status.as_u16()
        ),
    )
}

fn bad_request(message: &str) -> Response<SimBody> {
    api_error(StatusCode::BAD_REQUEST, "BadRequestError", message, None)
}

fn not_found() -> Response<SimBody> {
    api_error(StatusCode::NOT_FOUND, "NotFoundError", "Not Found", None)
}

/// One SSE event in one exact-size allocation (so `Bytes::from` does not allocate again).
fn concat(parts: &[&str]) -> Bytes {
    let len = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len);
    for part in parts {
        out.extend_from_slice(part.as_bytes());
    }
    Bytes::from(out)
}

/// The next inter-token gap in seconds: jittered, and slowed by the other active streams.
fn itl_s(state: &SimState, rng: &mut SmallRng) -> f64 {
    let cfg = &state.config;
    let active = state.active.load(Relaxed).max(1) as f64;
    (cfg.itl_ms / 1e3 * (1.0 + cfg.batch_slowdown * (active - 1.0)) * jitter(cfg, rng)).max(0.0)
}

fn jitter(cfg: &SimConfig, rng: &mut SmallRng) -> f64 {
    if cfg.jitter > 0.0 {
        (1.0 + cfg.jitter * rng.random_range(-1.0..=1.0)).max(0.0)
    } else {
        1.0
    }
}

/// Seconds to a `Duration`, tolerating negative, NaN and absurd values from the configuration.
fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s.min(365.0 * 86_400.0))
    } else {
        Duration::ZERO
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A response read off the socket, with the chunked encoding undone.
    struct Reply {
        status: u16,
        /// Status line and headers, lowercased.
        head: String,
        body: String,
        /// HTTP chunks (the whole body as one element when not chunked).
        chunks: Vec<String>,
        /// The body ended properly (final zero chunk, or a fixed-length body).
        complete: bool,
    }

    fn parse_reply(raw: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").expect("a response head");
        let status = head[9..12].parse().expect("a status code");
        let head = head.to_ascii_lowercase();
        let mut chunks = Vec::new();
        let mut complete = false;
        if head.contains("transfer-encoding: chunked") {
            let mut rest = rest;
            while let Some((size, after)) = rest.split_once("\r\n") {
                let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
                    break;
                };
                if size == 0 {
                    complete = true;
                    break;
                }
                if after.len() < size + 2 {
                    break;
                }
                chunks.push(after[..size].to_string());
                rest = &after[size + 2..];
            }
        } else {
            chunks.push(rest.to_string());
            complete = true;
        }
        Reply {
            status,
            head,
            body: chunks.concat(),
            chunks,
            complete,
        }
    }

    fn raw_request(method: &str, path: &str, headers: &str, body: &str) -> String {
        format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
            body.len()
        )
    }

    async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &str,
        body: &str,
    ) -> Reply {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw_request(method, path, headers, body).as_bytes())
            .await
            .unwrap();
        let mut raw = Vec::new();
        // A simulated drop may end in a reset; keep what arrived.
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await;
        parse_reply(&raw)
    }

    async fn post(sim: &SimHandle, path: &str, body: &str) -> Reply {
        request(sim.addr(), "POST", path, "", body).await
    }

    async fn get(sim: &SimHandle, path: &str) -> Reply {
        request(sim.addr(), "GET", path, "", "").await
    }

    fn fast() -> SimConfig {
        SimConfig {
            ttft_ms: 1.0,
            itl_ms: 1.0,
            ..SimConfig::default()
        }
    }

    async fn sim(config: SimConfig) -> SimHandle {
        start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap()
    }

    fn event_json(chunk: &str) -> Value {
        let data = chunk
            .strip_prefix("data: ")
            .expect("an SSE data line")
            .trim_end();
        serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {chunk:?}"))
    }

    /// Reads until `needle` shows up (or panics after 5 s).
    async fn read_until(s: &mut TcpStream, needle: &str) -> String {
        let mut raw = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !String::from_utf8_lossy(&raw).contains(needle) {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
                .await
                .expect("timely data")
                .unwrap();
            assert!(n > 0, "connection closed before {needle:?}");
            raw.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&raw).into_owned()
    }

    async fn wait_for_idle(state: &SimState) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while state.active.load(Relaxed) != 0 {
            assert!(
                Instant::now() < deadline,
                "{} streams still active",
                state.active.load(Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn completions_stream_is_byte_exact_vllm() {
        let sim = sim(fast()).await;
        let r = post(
            &sim,
            "/v1/completions",
            r#"{"model":"llmb-sim","prompt":"one two three","max_tokens":5,"stream":true,"ignore_eos":true,"stream_options":{"include_usage":true}}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(
            r.head
                .contains("content-type: text/event-stream; charset=utf-8"),
            "{}",
            r.head
        );
        assert!(r.complete);
        // One HTTP chunk per SSE event: 5 tokens, usage, [DONE].
        assert_eq!(r.chunks.len(), 7, "{:?}", r.chunks);
        assert!(r.chunks.iter().all(|c| c.starts_with("data: ")
            && c.ends_with("\n\n")
            && c.matches("data: ").count() == 1));
        let first = event_json(&r.chunks[0]);
        let id = first["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("cmpl-") && id.len() == 5 + 32, "{id}");
        assert!(id[5..].bytes().all(|b| b.is_ascii_hexdigit()));
        let created = first["created"].as_u64().unwrap();
        for (k, chunk) in r.chunks[..5].iter().enumerate() {
            let text = event_json(chunk)["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(text.starts_with(' ') && count_words(&text) == 1, "{text:?}");
            let finish = if k == 4 { "\"length\"" } else { "null" };
            assert_eq!(
                *chunk,
                format!(
                    "data: {{\"id\":\"{id}\",\"object\":\"text_completion\",\"created\":{created},\"model\":\"llmb-sim\",\"choices\":[{{\"index\":0,\"text\":\"{text}\",\"logprobs\":null,\"finish_reason\":{finish},\"stop_reason\":null}}],\"usage\":null}}\n\n"
                )
            );
        }
        assert_eq!(
            r.chunks[5],
            format!(
                "data: {{\"id\":\"{id}\",\"object\":\"text_completion\",\"created\":{created},\"model\":\"llmb-sim\",\"choices\":[],\"usage\":{{\"prompt_tokens\":3,\"total_tokens\":8,\"completion_tokens\":5}}}}\n\n"
            )
        );
        assert!(r.body.ends_with("data: [DONE]\n\n"));
        assert_eq!(sim.requests_served(), 1);
        let metrics = get(&sim, "/metrics").await.body;
        assert!(
            metrics.contains("vllm:generation_tokens_total{model_name=\"llmb-sim\"} 5\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("vllm:prompt_tokens_total{model_name=\"llmb-sim\"} 3\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("vllm:request_success_total{model_name=\"llmb-sim\"} 1\n"),
            "{metrics}"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn tokenize_routes_count_what_usage_reports() {
        let sim = sim(fast()).await;
        let json = |body: &str| serde_json::from_str::<Value>(body).unwrap();
        let v = json(
            &post(
                &sim,
                "/tokenize",
                r#"{"model":"llmb-sim","prompt":"a b c"}"#,
            )
            .await
            .body,
        );
        assert_eq!(v["count"], 3);
        assert_eq!(v["tokens"].as_array().unwrap().len(), 3);
        let chat =
            r#"{"model":"llmb-sim","messages":[{"role":"user","content":"a b c"}],"max_tokens":1}"#;
        let v = json(&post(&sim, "/tokenize", chat).await.body);
        let usage = json(&post(&sim, "/v1/chat/completions", chat).await.body);
        assert_eq!(v["count"], 11);
        assert_eq!(v["count"], usage["usage"]["prompt_tokens"]);
        let v = json(
            &post(&sim, "/tokenize", r#"{"content":"a b c d"}"#)
                .await
                .body,
        );
        assert_eq!(v["tokens"].as_array().unwrap().len(), 4);
        let v = json(&post(&sim, "/tokenize", r#"{"inputs":"a b"}"#).await.body);
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["text"], "b");
        let v = json(
            &post(&sim, "/v1/encode", r#"{"input":"a b c d e"}"#)
                .await
                .body,
        );
        assert_eq!(v["length"], 5);
        assert_eq!(post(&sim, "/tokenize", r#"{"prompt":7}"#).await.status, 400);
        sim.shutdown().await;

        let without = super::start(
            SimConfig {
                tokenize_route: false,
                ..fast()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            post(&without, "/tokenize", r#"{"prompt":"a"}"#)
                .await
                .status,
            404
        );
        assert_eq!(
            post(&without, "/v1/encode", r#"{"input":"a"}"#)
                .await
                .status,
            404
        );
        without.shutdown().await;
    }

    #[tokio::test]
    async fn chat_stream_starts_with_the_role_chunk() {
        let sim = sim(fast()).await;
        let r = post(
            &sim,
            "/v1/chat/completions",
            r#"{"model":"llmb-sim","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi there"}]}],"max_completion_tokens":3,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(r.complete);
        // role, 3 content chunks, usage, [DONE]
        assert_eq!(r.chunks.len(), 6, "{:?}", r.chunks);
        let first = event_json(&r.chunks[0]);
        let id = first["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("chatcmpl-") && id.len() == 9 + 32, "{id}");
        let created = first["created"].as_u64().unwrap();
        let prefix = format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"llmb-sim\",\"choices\":"
        );
        assert_eq!(
            r.chunks[0],
            format!(
                "{prefix}[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
            )
        );
        for (k, chunk) in r.chunks[1..4].iter().enumerate() {
            let text = event_json(chunk)["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(text.starts_with(' ') && count_words(&text) == 1);
            let tail = if k == 2 {
                "\"length\",\"stop_reason\":null"
            } else {
                "null"
            };
            assert_eq!(
                *chunk,
                format!(
                    "{prefix}[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"logprobs\":null,\"finish_reason\":{tail}}}]}}\n\n"
                )
            );
        }
        assert_eq!(
            r.chunks[4],
            format!(
                "{prefix}[],\"usage\":{{\"prompt_tokens\":17,\"total_tokens\":20,\"completion_tokens\":3}}}}\n\n"
            )
        );
        assert_eq!(r.chunks[5], "data: [DONE]\n\n");
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn non_streaming_responses_carry_text_and_usage() {
        let sim = sim(fast()).await;
        let r = post(
            &sim,
            "/v1/completions",
            r#"{"prompt":"a b","max_tokens":4,"ignore_eos":true}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(r.head.contains("content-type: application/json"));
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(count_words(v["choices"][0]["text"].as_str().unwrap()), 4);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["prompt_tokens"], 2);
        assert_eq!(v["usage"]["completion_tokens"], 4);
        assert_eq!(v["usage"]["total_tokens"], 6);

        let r = post(
            &sim,
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"x y z"}],"max_tokens":2,"ignore_eos":true}"#,
        )
        .await;
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(
            count_words(v["choices"][0]["message"]["content"].as_str().unwrap()),
            2
        );
        // Three words, one message under the template (5) and the generation prompt (3).
        assert_eq!(v["usage"]["prompt_tokens"], 11);

        // Natural lengths: between half and all of max_tokens, "stop" unless the cap was hit.
        for _ in 0..8 {
            let r = post(&sim, "/v1/completions", r#"{"prompt":"p","max_tokens":10}"#).await;
            let v: Value = serde_json::from_str(&r.body).unwrap();
            let n = v["usage"]["completion_tokens"].as_u64().unwrap();
            assert!((5..=10).contains(&n), "{n}");
            assert_eq!(
                count_words(v["choices"][0]["text"].as_str().unwrap()) as u64,
                n
            );
            assert_eq!(
                v["choices"][0]["finish_reason"],
                if n == 10 { "length" } else { "stop" }
            );
        }
        // Default max_tokens is 16.
        let r = post(
            &sim,
            "/v1/completions",
            r#"{"prompt":"p","ignore_eos":true}"#,
        )
        .await;
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["usage"]["completion_tokens"], 16);
        assert_eq!(sim.requests_served(), 11);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn same_seed_same_lengths_and_text() {
        let body = r#"{"prompt":"p","max_tokens":12}"#;
        let mut runs = Vec::new();
        for _ in 0..2 {
            let sim = sim(SimConfig { seed: 7, ..fast() }).await;
            let mut texts = Vec::new();
            for _ in 0..4 {
                let v: Value =
                    serde_json::from_str(&post(&sim, "/v1/completions", body).await.body).unwrap();
                texts.push((v["id"].clone(), v["choices"][0]["text"].clone()));
            }
            runs.push(texts);
            sim.shutdown().await;
        }
        assert_eq!(runs[0], runs[1]);
    }

    #[tokio::test]
    async fn errors_look_like_vllm() {
        let sim = sim(fast()).await;
        let r = post(&sim, "/v1/completions", r#"{"model":"nope","prompt":"x"}"#).await;
        assert_eq!(r.status, 404);
        assert_eq!(
            r.body,
            r#"{"error":{"message":"The model `nope` does not exist.","type":"NotFoundError","param":"model","code":404}}"#
        );
        let r = post(&sim, "/v1/completions", "{not json").await;
        assert_eq!(r.status, 400);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"]["type"], "BadRequestError");
        assert_eq!(v["error"]["code"], 400);
        assert!(v["error"]["param"].is_null());
        let r = post(
            &sim,
            "/v1/chat/completions",
            r#"{"model":"llmb-sim","prompt":"x"}"#,
        )
        .await;
        assert_eq!(r.status, 400);
        let r = post(&sim, "/v1/completions", r#"{"prompt":"x","max_tokens":0}"#).await;
        assert_eq!(r.status, 400);
        let r = get(&sim, "/nowhere").await;
        assert_eq!(r.status, 404);
        assert_eq!(
            r.body,
            r#"{"error":{"message":"Not Found","type":"NotFoundError","param":null,"code":404}}"#
        );
        let r = get(&sim, "/health").await;
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        let r = get(&sim, "/v1/models").await;
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][0]["id"], "llmb-sim");
        assert_eq!(v["data"][0]["max_model_len"], 131072);
        let r = get(&sim, "/metrics").await;
        assert!(
            r.body.contains("# TYPE vllm:num_requests_running gauge\n"),
            "{}",
            r.body
        );
        assert!(
            r.body
                .contains("vllm:num_requests_running{model_name=\"llmb-sim\"} 0\n"),
            "{}",
            r.body
        );
        assert!(
            r.body
                .contains("vllm:num_requests_waiting{model_name=\"llmb-sim\"} 0\n")
        );
        assert!(
            r.body
                .contains("# TYPE vllm:request_success_total counter\n")
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn api_key_guards_v1_only() {
        let sim = sim(SimConfig {
            api_key: Some("k3y".into()),
            ..fast()
        })
        .await;
        let denied = get(&sim, "/v1/models").await;
        assert_eq!(denied.status, 401);
        assert_eq!(denied.body, r#"{"error":"Unauthorized"}"#);
        let wrong = request(
            sim.addr(),
            "GET",
            "/v1/models",
            "authorization: Bearer nope\r\n",
            "",
        )
        .await;
        assert_eq!(wrong.status, 401);
        let ok = request(
            sim.addr(),
            "GET",
            "/v1/models",
            "authorization: Bearer k3y\r\n",
            "",
        )
        .await;
        assert_eq!(ok.status, 200);
        assert_eq!(get(&sim, "/health").await.status, 200);
        assert_eq!(get(&sim, "/metrics").await.status, 200);
        assert_eq!(sim.requests_served(), 3);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn faults_on_demand() {
        let sim = sim(fast()).await;
        let ask = |fault: &str| {
            format!(
                r#"{{"prompt":"x __sim_fault:{fault}__","max_tokens":4,"ignore_eos":true,"stream":true}}"#
            )
        };
        let r = post(&sim, "/v1/completions", &ask("http500")).await;
        assert_eq!(r.status, 500);
        assert_eq!(
            r.body,
            r#"{"error":{"message":"simulated internal error","type":"InternalServerError","param":null,"code":500}}"#
        );

        let r = post(&sim, "/v1/completions", &ask("malformed")).await;
        assert!(r.complete);
        assert_eq!(r.chunks.len(), 6, "{:?}", r.chunks);
        assert_eq!(r.chunks[2], "data: {\"choices\":[{\"text\": BROKEN\n\n");
        assert_eq!(
            r.chunks
                .iter()
                .filter(|c| c.contains("\"text\":\" "))
                .count(),
            4
        );
        assert_eq!(r.chunks[5], "data: [DONE]\n\n");

        let r = post(&sim, "/v1/completions", &ask("error_event")).await;
        assert!(r.complete);
        assert_eq!(r.chunks.len(), 3, "{:?}", r.chunks);
        assert!(r.chunks[0].contains("\"text\":\" "));
        assert_eq!(
            r.chunks[1],
            "data: {\"error\":{\"message\":\"simulated in-stream error\",\"type\":\"InternalServerError\",\"param\":null,\"code\":500}}\n\n"
        );
        assert_eq!(r.chunks[2], "data: [DONE]\n\n");

        let r = post(&sim, "/v1/completions", &ask("drop")).await;
        assert_eq!(r.status, 200);
        assert!(!r.complete, "{:?}", r.chunks);
        assert_eq!(r.chunks.len(), 2, "{:?}", r.chunks);
        assert!(!r.body.contains("[DONE]"));

        let r = post(
            &sim,
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"__sim_fault:http500__"}]}"#,
        )
        .await;
        assert_eq!(r.status, 500);
        wait_for_idle(&sim.state).await;
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn fault_matrix_modes_on_the_wire() {
        let sim = sim(fast()).await;
        let ask = |fault: &str, stream: bool| {
            format!(
                r#"{{"prompt":"x __sim_fault:{fault}__","max_tokens":4,"ignore_eos":true,"stream":{stream}}}"#
            )
        };
        let r = post(&sim, "/v1/completions", &ask("rate_limited", true)).await;
        assert_eq!(r.status, 429);
        assert!(r.head.contains("retry-after: 1"), "{}", r.head);
        let r = post(&sim, "/v1/completions", &ask("overloaded", false)).await;
        assert_eq!(r.status, 503);
        assert!(r.head.contains("retry-after: 2"), "{}", r.head);

        // Reset: the request is read, then the connection is reset without a byte of answer.
        let mut s = TcpStream::connect(sim.addr()).await.unwrap();
        let body = ask("reset", true);
        s.write_all(raw_request("POST", "/v1/completions", "", &body).as_bytes())
            .await
            .unwrap();
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
            .await
            .expect("the reset comes at once");
        assert!(raw.is_empty(), "{:?}", String::from_utf8_lossy(&raw));
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset)
        );

        // Truncated: two tokens, half an event, then a proper end of body.
        let r = post(&sim, "/v1/completions", &ask("truncated", true)).await;
        assert!(r.complete, "{:?}", r.chunks);
        assert_eq!(r.chunks.len(), 3, "{:?}", r.chunks);
        assert!(!r.chunks[2].ends_with("\n\n") && r.chunks[2].starts_with("data: {"));
        // Without streaming: a body shorter than its Content-Length.
        let r = post(&sim, "/v1/completions", &ask("truncated", false)).await;
        let declared: usize = r
            .head
            .split("content-length: ")
            .nth(1)
            .and_then(|v| v.lines().next())
            .and_then(|v| v.trim().parse().ok())
            .expect("a content-length");
        assert_eq!(r.body.len(), declared / 2, "{}", r.body);

        // Silent ones: nothing (more) arrives, the connection stays open.
        let silent = |fault: &'static str, stream: bool, expect: &'static str| {
            let addr = sim.addr();
            let body = ask(fault, stream);
            async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(raw_request("POST", "/v1/completions", "", &body).as_bytes())
                    .await
                    .unwrap();
                if !expect.is_empty() {
                    read_until(&mut s, expect).await;
                }
                let mut buf = vec![0u8; 64 << 10];
                // Drain what was sent with the expected part, then expect silence.
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await
                {
                    assert!(n > 0, "{fault}: the connection closed");
                }
            }
        };
        silent("no_answer", true, "").await;
        silent("endless", false, "").await;
        silent("stall", true, "\"text\":\" ").await;
        silent("stall", false, "{\"id\"").await;

        // Endless: far more tokens than asked for.
        let mut s = TcpStream::connect(sim.addr()).await.unwrap();
        s.write_all(raw_request("POST", "/v1/completions", "", &ask("endless", true)).as_bytes())
            .await
            .unwrap();
        let mut seen = String::new();
        while seen.matches("\"text\":\" ").count() < 40 {
            seen = read_until(&mut s, "\n\n").await + &seen;
        }
        assert!(!seen.contains("[DONE]") && !seen.contains("\"length\""));
        drop(s);

        // Huge: megabytes of one JSON string, as fast as they are read.
        for stream in [true, false] {
            let mut s = TcpStream::connect(sim.addr()).await.unwrap();
            s.write_all(
                raw_request("POST", "/v1/completions", "", &ask("huge", stream)).as_bytes(),
            )
            .await
            .unwrap();
            let mut got = 0;
            let mut buf = vec![0u8; 64 << 10];
            while got < 8 << 20 {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got += n;
            }
        }
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn timing_follows_absolute_deadlines() {
        let sim = sim(SimConfig {
            ttft_ms: 30.0,
            itl_ms: 10.0,
            ..SimConfig::default()
        })
        .await;
        let t0 = std::time::Instant::now();
        let r = post(
            &sim,
            "/v1/completions",
            r#"{"prompt":"p","max_tokens":5,"ignore_eos":true,"stream":true}"#,
        )
        .await;
        let streamed = t0.elapsed();
        assert_eq!(r.chunks.len(), 6);
        assert!(
            streamed >= Duration::from_millis(70) && streamed < Duration::from_millis(1000),
            "{streamed:?}"
        );
        let t0 = std::time::Instant::now();
        let r = post(
            &sim,
            "/v1/completions",
            r#"{"prompt":"p","max_tokens":5,"ignore_eos":true}"#,
        )
        .await;
        let whole = t0.elapsed();
        assert_eq!(r.status, 200);
        assert!(
            whole >= Duration::from_millis(70) && whole < Duration::from_millis(1000),
            "{whole:?}"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_client_that_leaves_stops_its_stream() {
        let sim = sim(SimConfig {
            ttft_ms: 1.0,
            itl_ms: 10.0,
            ..SimConfig::default()
        })
        .await;
        let mut s = TcpStream::connect(sim.addr()).await.unwrap();
        let body = r#"{"prompt":"p","max_tokens":1000,"ignore_eos":true,"stream":true}"#;
        s.write_all(raw_request("POST", "/v1/completions", "", body).as_bytes())
            .await
            .unwrap();
        read_until(&mut s, "\"text\":\" ").await;
        let metrics = get(&sim, "/metrics").await.body;
        assert!(
            metrics.contains("vllm:num_requests_running{model_name=\"llmb-sim\"} 1\n"),
            "{metrics}"
        );
        drop(s);
        wait_for_idle(&sim.state).await;
        assert!(sim.state.generation_tokens.load(Relaxed) < 1000);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_aborts_streams_and_stops_listening() {
        let sim = sim(SimConfig {
            ttft_ms: 1.0,
            itl_ms: 200.0,
            ..SimConfig::default()
        })
        .await;
        let addr = sim.addr();
        assert_eq!(sim.base_url(), format!("http://127.0.0.1:{}", addr.port()));
        let state = sim.state.clone();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let body = r#"{"prompt":"p","max_tokens":100,"ignore_eos":true,"stream":true}"#;
        s.write_all(raw_request("POST", "/v1/completions", "", body).as_bytes())
            .await
            .unwrap();
        read_until(&mut s, "\"text\":\" ").await;
        tokio::time::timeout(Duration::from_secs(5), sim.shutdown())
            .await
            .expect("prompt shutdown");
        assert_eq!(state.active.load(Relaxed), 0);
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(ended.is_ok(), "the connection stayed open");
        assert!(!String::from_utf8_lossy(&rest).contains("[DONE]"));
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn prefix_cache_skips_prefill_of_served_prefixes() {
        let sim = sim(SimConfig {
            prefill_us_per_token: 500.0,
            prefix_cache: true,
            ..fast()
        })
        .await;
        let words: Vec<&str> = (0..400).map(word_for).collect();
        let prompt = words.join(" ");
        let body = |stream: bool| {
            format!(
                r#"{{"prompt":"{prompt}","max_tokens":1,"ignore_eos":true,"stream":{stream},"stream_options":{{"include_usage":true}}}}"#
            )
        };
        let t0 = std::time::Instant::now();
        let first = post(&sim, "/v1/completions", &body(false)).await;
        let cold = t0.elapsed();
        let v: Value = serde_json::from_str(&first.body).unwrap();
        assert_eq!(v["usage"]["prompt_tokens"], 400);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

        let t0 = std::time::Instant::now();
        let second = post(&sim, "/v1/completions", &body(true)).await;
        let warm = t0.elapsed();
        // 400 tokens at 500 µs is 200 ms of prefill; 384 cached tokens leave 8 ms.
        assert!(cold >= Duration::from_millis(200), "{cold:?}");
        assert!(
            warm < Duration::from_millis(100),
            "cold {cold:?}, warm {warm:?}"
        );
        let usage = event_json(&second.chunks[1]);
        assert_eq!(
            usage["usage"],
            serde_json::json!({"prompt_tokens":400,"total_tokens":401,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":384}})
        );

        // The same words as a chat message start with the template's tokens: no shared blocks
        // with the raw prompt, but the next identical chat request hits.
        let chat =
            format!(r#"{{"messages":[{{"role":"user","content":"{prompt}"}}],"max_tokens":1}}"#);
        let v: Value =
            serde_json::from_str(&post(&sim, "/v1/chat/completions", &chat).await.body).unwrap();
        assert_eq!(v["usage"]["prompt_tokens"], 408);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        let v: Value =
            serde_json::from_str(&post(&sim, "/v1/chat/completions", &chat).await.body).unwrap();
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 400);
        let half = format!("{} zzz", words[..200].join(" "));
        let v: Value = serde_json::from_str(
            &post(
                &sim,
                "/v1/completions",
                &format!(r#"{{"prompt":"{half}","max_tokens":1}}"#),
            )
            .await
            .body,
        )
        .unwrap();
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 192);

        let metrics = get(&sim, "/metrics").await.body;
        assert!(
            metrics.contains("vllm:prefix_cache_queries_total{model_name=\"llmb-sim\"} 1817\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("vllm:prefix_cache_hits_total{model_name=\"llmb-sim\"} 976\n"),
            "{metrics}"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn prefix_cache_is_off_by_default() {
        let sim = sim(SimConfig {
            prefill_us_per_token: 1.0,
            ..fast()
        })
        .await;
        let prompt: Vec<&str> = (0..40).map(word_for).collect();
        let body = format!(
            r#"{{"prompt":"{}","max_tokens":1,"ignore_eos":true}}"#,
            prompt.join(" ")
        );
        for _ in 0..2 {
            let v: Value =
                serde_json::from_str(&post(&sim, "/v1/completions", &body).await.body).unwrap();
            assert!(v["usage"]["prompt_tokens_details"].is_null(), "{v}");
        }
        let metrics = get(&sim, "/metrics").await.body;
        assert!(
            metrics.contains("vllm:prefix_cache_hits_total{model_name=\"llmb-sim\"} 0\n"),
            "{metrics}"
        );
        sim.shutdown().await;
    }

    #[test]
    fn block_hashes_chain_whole_blocks() {
        let words: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
        let all = block_hashes(words.iter());
        assert_eq!(all.len(), 2);
        assert_eq!(block_hashes(words[..35].iter()), all);
        assert_eq!(block_hashes(words[..31].iter()), all[..1]);
        let mut changed = words.clone();
        changed[0] = "other".into();
        let other = block_hashes(changed.iter());
        // A different first block changes every later hash too.
        assert!(other[0] != all[0] && other[1] != all[1]);
    }

    #[tokio::test]
    async fn dedicated_simulator_serves_and_shuts_down() {
        let sim = start_dedicated(fast(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let r = post(
            &sim,
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"ignore_eos":true,"stream":true}"#,
        )
        .await;
        assert!(r.complete);
        assert_eq!(r.chunks.len(), 5, "{:?}", r.chunks);
        assert_eq!(sim.requests_served(), 1);
        let addr = sim.addr();
        tokio::time::timeout(Duration::from_secs(5), sim.shutdown())
            .await
            .expect("prompt shutdown");
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
