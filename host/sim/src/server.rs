//! Listening and serving: [`start`] and [`start_dedicated`] bind the socket and run the accept
//! loop, each connection is served over HTTP/1.1 or HTTP/2 under the configured
//! [`ConnectionPolicy`](crate::ConnectionPolicy), and [`SimHandle`] reports on the running
//! simulator and shuts it down.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context as _;
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use llmb_engine::clock::monotonic_ns;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::body::SimBody;
use crate::config::SimConfig;
use crate::faults;
use crate::lifecycle;
use crate::routes::handle;
use crate::send_log::{ConnSendLog, LoggedIo, SendLog};
use crate::state::SimState;

/// A benchmark opens hundreds of connections at once: a short accept queue drops SYNs and the
/// client's retry adds a full second to TTFT. The kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 65_535;

/// A running simulator; dropping it does NOT stop it, call [`SimHandle::shutdown`].
pub struct SimHandle {
    addr: SocketAddr,
    pub(crate) state: Arc<SimState>,
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
    /// until they are gone, then writes out and closes the send log, if any.
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
        if let Some(log) = self.state.send_log.clone() {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
    }
}

/// Binds `addr` (port 0 = any free port) and serves on the current tokio runtime.
pub async fn start(config: SimConfig, addr: SocketAddr) -> anyhow::Result<SimHandle> {
    let (listener, addr) = bind(addr)?;
    let send_log = open_send_log(&config)?;
    let state = Arc::new(SimState::new(config, send_log));
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
                match bind(addr).and_then(|bound| Ok((bound, open_send_log(&config)?))) {
                    Ok(((listener, addr), send_log)) => {
                        let state = Arc::new(SimState::new(config, send_log));
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

/// The send log's writer, when the configuration asks for one.
fn open_send_log(config: &SimConfig) -> anyhow::Result<Option<Arc<SendLog>>> {
    config.send_log.as_deref().map(SendLog::create).transpose()
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
/// clients do), on the same port. With a send log, the socket is wrapped to see every write;
/// without, nothing stands between it and hyper.
async fn serve_connection(stream: TcpStream, state: Arc<SimState>) {
    let _ = stream.set_nodelay(true);
    let (stream, reset) = faults::ResettableStream::new(stream);
    match state.send_log.as_ref().map(ConnSendLog::new) {
        None => serve(stream, reset, state, None).await,
        Some(log) => serve(LoggedIo::new(stream, log.clone()), reset, state, Some(log)).await,
    }
}

async fn serve<IO>(
    io: IO,
    reset: Arc<AtomicBool>,
    state: Arc<SimState>,
    send_log: Option<Arc<ConnSendLog>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let policy = state.config.connections.clone();
    let tracker = lifecycle::Tracker::new();
    let service = {
        let tracker = tracker.clone();
        let policy = policy.clone();
        service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            let tracker = tracker.clone();
            let policy = policy.clone();
            let reset = reset.clone();
            let pieces = send_log
                .as_ref()
                .and_then(|log| log.begin(monotonic_ns(), req.version(), req.headers()));
            async move {
                if tracker.is_stale(&policy) {
                    // hyper closes the connection without an answer when the service fails.
                    return Err(io::Error::other(
                        "stale connection dropped (simulated race)",
                    ));
                }
                let (busy, nth) = tracker.begin();
                let Ok(mut response) = handle(state, req).await;
                if let (Some(pieces), SimBody::Stream(generation)) = (pieces, response.body_mut()) {
                    generation.send_log = Some(pieces);
                }
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
    let connection = builder.serve_connection(TokioIo::new(io), service);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::start_dedicated;
    use crate::config::SimConfig;
    use crate::testutil::*;

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
