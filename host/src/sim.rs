//! The built-in simulator: an OpenAI-compatible server (vLLM's dialect, byte for byte as in
//! `protocols/vllm.md`) with a timing model, so a benchmark runs with no real server and tests
//! measure llmb against known TTFT and ITL.
//!
//! Cheap on purpose: a tokio task per stream sleeping to absolute deadlines, chunks formatted
//! directly, no per-token JSON serialisation, so it is never the bottleneck it would hide.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::tokenizer::{count_words, word_for};

/// Timing and behaviour of the simulated server.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Request arrival to first chunk, ms.
    pub ttft_ms: f64,
    /// Gap between token chunks, ms.
    pub itl_ms: f64,
    /// Each delay is multiplied by `1 + jitter · u`, u uniform in [−1, 1].
    pub jitter: f64,
    /// Seeds jitter and natural output lengths.
    pub seed: u64,
    /// Continuous-batching model: ITL × (1 + batch_slowdown × (active streams − 1)).
    pub batch_slowdown: f64,
    /// Extra TTFT per prompt token, µs.
    pub prefill_us_per_token: f64,
    /// The served model name.
    pub model: String,
    /// When set, `/v1/*` needs `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
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
        }
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

/// The kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 65_535;

struct SimState {
    config: SimConfig,
    requests: AtomicU64,
    active: AtomicUsize,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    successes: AtomicU64,
}

/// A running simulator. Dropping it does not stop it; call [`SimHandle::shutdown`].
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: tokio::sync::watch::Sender<bool>,
    runner: Runner,
}

/// What to wait for on shutdown: the accept task, or the simulator's own thread.
enum Runner {
    Task(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, ready for `--base-url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered on `/v1/*` so far.
    pub fn requests_served(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Stops accepting and aborts open connections.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
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

async fn bind(
    config: SimConfig,
    addr: SocketAddr,
) -> anyhow::Result<(tokio::net::TcpListener, Arc<SimState>)> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .context("cannot create a socket")?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("cannot bind {addr}"))?;
    // A benchmark opens hundreds of connections at once: a short accept queue drops SYNs and
    // the client's retry adds a full second to TTFT.
    let listener = socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("cannot listen on {addr}"))?;
    let state = Arc::new(SimState {
        config,
        requests: AtomicU64::new(0),
        active: AtomicUsize::new(0),
        prompt_tokens: AtomicU64::new(0),
        generation_tokens: AtomicU64::new(0),
        successes: AtomicU64::new(0),
    });
    Ok((listener, state))
}

/// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime.
pub async fn start(config: SimConfig, addr: SocketAddr) -> anyhow::Result<SimHandle> {
    let (listener, state) = bind(config, addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(serve(listener, state.clone(), stopped));
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
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("llmb-sim".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("simulator runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                match bind(config, addr)
                    .await
                    .and_then(|(l, s)| Ok((l.local_addr()?, l, s)))
                {
                    Ok((addr, listener, state)) => {
                        let _ = ready_tx.send(Ok((addr, state.clone())));
                        serve(listener, state, stopped).await;
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

async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<SimState>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body.into())
                .map_err(|e: Infallible| match e {})
                .boxed(),
        )
        .expect("valid response")
}

fn json_error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": status.as_u16()}
    });
    full(status, "application/json", body.to_string())
}

async fn handle(
    state: Arc<SimState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path.starts_with("/v1/")
        && let Some(key) = &state.config.api_key
    {
        let expected = format!("Bearer {key}");
        let ok = req
            .headers()
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
        if !ok {
            return Ok(full(
                StatusCode::UNAUTHORIZED,
                "application/json",
                r#"{"error":"Unauthorized"}"#,
            ));
        }
    }
    let response = match (method, path.as_str()) {
        (Method::POST, "/v1/completions") => generate(state, req, Api::Completions).await,
        (Method::POST, "/v1/chat/completions") => generate(state, req, Api::Chat).await,
        (Method::GET, "/v1/models") => models(&state),
        (Method::GET, "/health") => full(StatusCode::OK, "text/plain", ""),
        (Method::GET, "/metrics") => metrics(&state),
        _ => json_error(StatusCode::NOT_FOUND, "NotFoundError", "Not Found"),
    };
    Ok(response)
}

fn models(state: &SimState) -> Response<Body> {
    let m = &state.config.model;
    let body = serde_json::json!({
        "object": "list",
        "data": [{"id": m, "object": "model", "created": unix_now(), "owned_by": "llmb-sim",
                  "root": m, "parent": null, "max_model_len": 131072}]
    });
    full(StatusCode::OK, "application/json", body.to_string())
}

fn metrics(state: &SimState) -> Response<Body> {
    let m = &state.config.model;
    let mut out = String::new();
    let gauges = [
        (
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            state.active.load(Ordering::Relaxed) as u64,
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            0,
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{model_name=\"{m}\"}} {v}"
        );
    }
    let counters = [
        (
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            state.prompt_tokens.load(Ordering::Relaxed),
        ),
        (
            "vllm:generation_tokens_total",
            "Number of generation tokens processed.",
            state.generation_tokens.load(Ordering::Relaxed),
        ),
        (
            "vllm:request_success_total",
            "Count of successfully processed requests.",
            state.successes.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{model_name=\"{m}\"}} {v}"
        );
    }
    full(StatusCode::OK, "text/plain; version=0.0.4", out)
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Completions,
    Chat,
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    Malformed,
    Drop,
    ErrorEvent,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The prompt text of a request (completions `prompt`, or all chat message contents).
fn prompt_text(api: Api, body: &Value) -> Option<String> {
    match api {
        Api::Completions => match &body["prompt"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        },
        Api::Chat => {
            let messages = body["messages"].as_array()?;
            let mut text = String::new();
            for m in messages {
                match &m["content"] {
                    Value::String(s) => text.push_str(s),
                    Value::Array(parts) => {
                        for p in parts {
                            if let Some(t) = p["text"].as_str() {
                                text.push_str(t);
                                text.push(' ');
                            }
                        }
                    }
                    _ => {}
                }
                text.push(' ');
            }
            Some(text)
        }
    }
}

/// One generation's plan, fixed when the request arrives.
struct Plan {
    api: Api,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: u32,
    output_tokens: u32,
    hit_max: bool,
    include_usage: bool,
    word_offset: u64,
    fault: Fault,
}

async fn generate(state: Arc<SimState>, req: Request<Incoming>, api: Api) -> Response<Body> {
    let arrived = Instant::now();
    let n = state.requests.fetch_add(1, Ordering::Relaxed);
    let bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                "could not read the body",
            );
        }
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                &format!("invalid JSON: {e}"),
            );
        }
    };
    if let Some(model) = body["model"].as_str()
        && model != state.config.model
    {
        return json_error(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            &format!("The model `{model}` does not exist."),
        );
    }
    let Some(prompt) = prompt_text(api, &body) else {
        let field = if api == Api::Chat {
            "messages"
        } else {
            "prompt"
        };
        return json_error(
            StatusCode::BAD_REQUEST,
            "BadRequestError",
            &format!("missing or invalid `{field}`"),
        );
    };
    if prompt.contains("__sim_fault:http500__") {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "simulated internal error",
        );
    }
    let fault = if prompt.contains("__sim_fault:malformed__") {
        Fault::Malformed
    } else if prompt.contains("__sim_fault:drop__") {
        Fault::Drop
    } else if prompt.contains("__sim_fault:error_event__") {
        Fault::ErrorEvent
    } else {
        Fault::None
    };
    let max_tokens = body["max_completion_tokens"]
        .as_u64()
        .or_else(|| body["max_tokens"].as_u64())
        .unwrap_or(16)
        .clamp(1, 1 << 20) as u32;
    let mut rng =
        SmallRng::seed_from_u64(state.config.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let output_tokens = if body["ignore_eos"].as_bool() == Some(true) {
        max_tokens
    } else {
        rng.random_range(max_tokens.div_ceil(2)..=max_tokens)
    };
    let prompt_tokens = count_words(&prompt);
    let prefix = if api == Api::Chat { "chatcmpl" } else { "cmpl" };
    let plan = Plan {
        api,
        id: format!(
            "{prefix}-{:032x}",
            (n as u128) << 64 | state.config.seed as u128
        ),
        created: unix_now(),
        model: state.config.model.clone(),
        prompt_tokens,
        output_tokens,
        hit_max: output_tokens == max_tokens,
        include_usage: body["stream_options"]["include_usage"].as_bool() == Some(true),
        word_offset: n.wrapping_mul(7919),
        fault,
    };
    state
        .prompt_tokens
        .fetch_add(u64::from(prompt_tokens), Ordering::Relaxed);
    let cfg = &state.config;
    let ttft = Duration::from_secs_f64(
        ((cfg.ttft_ms * jitter_of(cfg, &mut rng)) / 1e3
            + cfg.prefill_us_per_token * f64::from(prompt_tokens) / 1e6)
            .max(0.0),
    );

    if body["stream"].as_bool() != Some(true) {
        let _active = ActiveGuard::new(&state);
        let mut total = ttft;
        for _ in 1..plan.output_tokens {
            total += itl(&state, jitter_of(cfg, &mut rng));
        }
        tokio::time::sleep_until(arrived + total).await;
        state
            .generation_tokens
            .fetch_add(u64::from(plan.output_tokens), Ordering::Relaxed);
        state.successes.fetch_add(1, Ordering::Relaxed);
        return full(StatusCode::OK, "application/json", whole_body(&plan));
    }

    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    tokio::spawn(stream(state.clone(), plan, arrived + ttft, rng, tx));
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(body))
        .expect("valid response")
}

fn itl(state: &SimState, jitter: f64) -> Duration {
    let cfg = &state.config;
    let active = state.active.load(Ordering::Relaxed).max(1) as f64;
    Duration::from_secs_f64(
        (cfg.itl_ms * jitter * (1.0 + cfg.batch_slowdown * (active - 1.0)) / 1e3).max(0.0),
    )
}

/// Counts a stream as active for its whole life, aborted ones included.
struct ActiveGuard<'a>(&'a SimState);

impl<'a> ActiveGuard<'a> {
    fn new(state: &'a SimState) -> Self {
        state.active.fetch_add(1, Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

fn event(buf: &mut String) -> Bytes {
    buf.push_str("\n\n");
    Bytes::from(std::mem::take(buf))
}

fn token_chunk(plan: &Plan, k: u32, buf: &mut String) {
    let word = word_for(plan.word_offset.wrapping_add(u64::from(k)));
    let last = k + 1 == plan.output_tokens;
    let finish = match (last, plan.hit_max) {
        (false, _) => "null",
        (true, true) => "\"length\"",
        (true, false) => "\"stop\"",
    };
    let _ = match plan.api {
        Api::Completions => write!(
            buf,
            "data: {{\"id\":\"{}\",\"object\":\"text_completion\",\"created\":{},\"model\":\"{}\",\"choices\":[{{\"index\":0,\"text\":\" {word}\",\"logprobs\":null,\"finish_reason\":{finish},\"stop_reason\":null}}],\"usage\":null}}",
            plan.id, plan.created, plan.model
        ),
        Api::Chat if last => write!(
            buf,
            "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":\"{}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" {word}\"}},\"logprobs\":null,\"finish_reason\":{finish},\"stop_reason\":null}}]}}",
            plan.id, plan.created, plan.model
        ),
        Api::Chat => write!(
            buf,
            "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":\"{}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" {word}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}",
            plan.id, plan.created, plan.model
        ),
    };
}

async fn stream(
    state: Arc<SimState>,
    plan: Plan,
    first_at: Instant,
    mut rng: SmallRng,
    tx: mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
) {
    let _active = ActiveGuard::new(&state);
    let send = |bytes: Bytes| tx.send(Ok(Frame::data(bytes)));
    let mut buf = String::with_capacity(320);
    tokio::time::sleep_until(first_at).await;
    if plan.api == Api::Chat {
        let _ = write!(
            buf,
            "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":\"{}\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}",
            plan.id, plan.created, plan.model
        );
        if send(event(&mut buf)).await.is_err() {
            return;
        }
    }
    let mut due = first_at;
    for k in 0..plan.output_tokens {
        if k > 0 {
            due += itl(&state, jitter_of(&state.config, &mut rng));
            tokio::time::sleep_until(due).await;
        }
        token_chunk(&plan, k, &mut buf);
        if send(event(&mut buf)).await.is_err() {
            return;
        }
        state.generation_tokens.fetch_add(1, Ordering::Relaxed);
        match (plan.fault, k) {
            (Fault::ErrorEvent, 0) => {
                let _ = send(Bytes::from_static(
                    b"data: {\"error\":{\"message\":\"simulated in-stream error\",\"type\":\"InternalServerError\",\"param\":null,\"code\":500}}\n\n",
                ))
                .await;
                let _ = send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                return;
            }
            (Fault::Malformed, 1)
                if send(Bytes::from_static(
                    b"data: {\"choices\":[{\"text\": BROKEN\n\n",
                ))
                .await
                .is_err() =>
            {
                return;
            }
            (Fault::Drop, 1) => {
                let _ = tx
                    .send(Err(std::io::Error::other("simulated connection drop")))
                    .await;
                return;
            }
            _ => {}
        }
    }
    if plan.include_usage {
        let object = if plan.api == Api::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let _ = write!(
            buf,
            "data: {{\"id\":\"{}\",\"object\":\"{object}\",\"created\":{},\"model\":\"{}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{},\"total_tokens\":{},\"completion_tokens\":{}}}}}",
            plan.id,
            plan.created,
            plan.model,
            plan.prompt_tokens,
            plan.prompt_tokens + plan.output_tokens,
            plan.output_tokens
        );
        if send(event(&mut buf)).await.is_err() {
            return;
        }
    }
    if send(Bytes::from_static(b"data: [DONE]\n\n")).await.is_ok() {
        state.successes.fetch_add(1, Ordering::Relaxed);
    }
}

fn jitter_of(cfg: &SimConfig, rng: &mut SmallRng) -> f64 {
    if cfg.jitter > 0.0 {
        1.0 + cfg.jitter * rng.random_range(-1.0..=1.0)
    } else {
        1.0
    }
}

fn whole_body(plan: &Plan) -> String {
    let text: String = (0..plan.output_tokens)
        .map(|k| format!(" {}", word_for(plan.word_offset.wrapping_add(u64::from(k)))))
        .collect();
    let finish = if plan.hit_max { "length" } else { "stop" };
    let usage = serde_json::json!({
        "prompt_tokens": plan.prompt_tokens,
        "total_tokens": plan.prompt_tokens + plan.output_tokens,
        "completion_tokens": plan.output_tokens,
    });
    let body = match plan.api {
        Api::Completions => serde_json::json!({
            "id": plan.id, "object": "text_completion", "created": plan.created, "model": plan.model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish, "stop_reason": null}],
            "usage": usage,
        }),
        Api::Chat => serde_json::json!({
            "id": plan.id, "object": "chat.completion", "created": plan.created, "model": plan.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish}],
            "usage": usage,
        }),
    };
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn raw(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    fn fast() -> SimConfig {
        SimConfig {
            ttft_ms: 1.0,
            itl_ms: 1.0,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn completions_stream_has_tokens_usage_and_done() {
        let sim = start(fast(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let out = raw(
            sim.addr(),
            "POST",
            "/v1/completions",
            r#"{"model":"llmb-sim","prompt":"a b c","max_tokens":5,"stream":true,"ignore_eos":true,"stream_options":{"include_usage":true}}"#,
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert_eq!(out.matches("\"object\":\"text_completion\"").count(), 6);
        assert_eq!(out.matches("\"finish_reason\":\"length\"").count(), 1);
        assert!(out.contains(
            "\"usage\":{\"prompt_tokens\":3,\"total_tokens\":8,\"completion_tokens\":5}"
        ));
        assert!(out.trim_end().ends_with("data: [DONE]") || out.contains("data: [DONE]\n\n"));
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn chat_starts_with_role_chunk_and_unknown_model_is_404() {
        let sim = start(fast(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let out = raw(
            sim.addr(),
            "POST",
            "/v1/chat/completions",
            r#"{"model":"llmb-sim","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true}"#,
        )
        .await;
        let first = out.find("data: ").unwrap();
        assert!(out[first..].starts_with("data: {\"id\":\"chatcmpl-"));
        assert!(
            out[first..]
                .split("\n\n")
                .next()
                .unwrap()
                .contains("\"delta\":{\"role\":\"assistant\",\"content\":\"\"}")
        );
        let missing = raw(
            sim.addr(),
            "POST",
            "/v1/completions",
            r#"{"model":"nope","prompt":"x"}"#,
        )
        .await;
        assert!(missing.starts_with("HTTP/1.1 404"));
        assert!(missing.contains("The model `nope` does not exist."));
        let metrics = raw(sim.addr(), "GET", "/metrics", "").await;
        assert!(metrics.contains("vllm:num_requests_running{model_name=\"llmb-sim\"}"));
        sim.shutdown().await;
    }
}
