//! HTTP/1.1 connections that live exactly as long as the server lets them.
//!
//! Real servers close idle keep-alive connections on their own schedule (llama.cpp and uvicorn
//! after 5 s, announced as `Keep-Alive: timeout=5, max=100`), after a number of requests, or
//! after every response (`Connection: close`). A pooled connection the server has just closed
//! makes the next request on it fail before any response byte arrives, although the server
//! never saw it. This pool therefore
//! - keeps an idle connection no longer than the user's idle timeout (short by default) and no
//!   longer than the server's announced `timeout`, with a margin;
//! - retires a connection after the server's announced `max` requests or a `Connection: close`;
//! - retries a request once, on a fresh connection, when it failed on a *reused* connection
//!   before any response arrived (Go's net/http rule), and says so, so the report can count it.
//!
//! hyper-util's pooled client cannot do the last two (it does not say whether a connection was
//! reused, nor retry a request that was written), so the pool sits on hyper's connection API.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, HOST, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower_service::Service;

use super::rx_stamp::{ReadArrival, RxStampedTcp};
use super::wire::{ObservedIo, WireLog};
use tokio::io::{AsyncRead, AsyncWrite};

/// How long idle connections are kept when the user does not say: under the 5 s that
/// llama.cpp, uvicorn (vLLM, SGLang) and Node servers allow, so the client normally gives up an
/// idle connection before the server closes it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Time allowed to open a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The user's connection settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Idle connections kept per server.
    pub max_idle: usize,
    /// Longest an idle connection is kept, whatever the server announces.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Accept any TLS certificate (`--insecure`, as curl's `-k`): for test servers with
    /// self-signed certificates; `--ca-cert` is the safe way.
    pub insecure_tls: bool,
    /// Open the connections a stage will use before its timed phase (`--no-warm-connections`
    /// turns it off).
    pub warm: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_idle: 64,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            insecure_tls: false,
            warm: true,
        }
    }
}

/// Why a request could not be sent or its response head not read.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// The request went out but no response head came within the header timeout.
    #[error("no response head within {0:?}")]
    HeaderTimeout(Duration),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("invalid request URL: {0}")]
    BadUri(String),
}

/// A response head plus how the connection behaved, for the request's record.
pub struct Sent {
    pub response: Response<Incoming>,
    /// The first attempt failed on a reused connection and the request went again on a fresh
    /// one; the request's times still count from the first attempt.
    pub retried: bool,
    /// How the connection the response came on was opened, when this request opened it.
    pub opened: Option<Opened>,
    /// The connection's read and write stamps (HTTP/1.1 only), for the response's frames.
    pub wire: Option<Arc<WireLog>>,
    /// Gives the connection back to the pool once the body has been read (HTTP/1.1, when the
    /// server keeps it open).
    pub checkin: Option<Checkin>,
}

/// A connection lent to one response. [`Checkin::done`] after the body's end puts it back before
/// the request's task goes on, so the next request (released by this one finishing) finds it
/// idle instead of opening another; dropped without `done` (the body was abandoned or failed),
/// a task of its own waits for the connection and keeps it only if it is still usable.
pub struct Checkin {
    pool: Arc<Pool>,
    key: String,
    conn: Option<Conn>,
}

/// How long [`Checkin::done`] waits for hyper to mark a finished connection ready again; past
/// it the wait goes on in the background.
const CHECKIN_WAIT: Duration = Duration::from_millis(50);

impl Checkin {
    /// The body has been read to its end: the connection goes back to the idle list.
    pub async fn done(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        match tokio::time::timeout(CHECKIN_WAIT, conn.sender.ready()).await {
            Ok(Ok(())) => self.pool.put(std::mem::take(&mut self.key), conn),
            Ok(Err(_)) => {}
            Err(_) => self.conn = Some(conn),
        }
    }
}

impl Drop for Checkin {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (pool, key) = (self.pool.clone(), std::mem::take(&mut self.key));
        runtime.spawn(async move {
            // Ready again once the body has been read to its end; an error means the connection
            // closed (or the body was abandoned), so it is not kept.
            if conn.sender.ready().await.is_ok() {
                pool.put(key, conn);
            }
        });
    }
}

/// The time it took to open a connection, in its phases.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    /// Name resolution and the TCP handshake.
    pub connect: Duration,
    /// The TLS handshake (HTTPS only).
    pub tls: Option<Duration>,
}

/// Counters over a run, for the report.
#[derive(Debug, Default)]
pub struct PoolCounters {
    pub opened: AtomicU64,
    pub retries: AtomicU64,
    /// Connections retired because the server asked (`Connection: close`, `max` reached).
    pub closed_by_server: AtomicU64,
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A connection's byte stream: plain TCP or TLS over it, with the kernel's receive stamps.
trait Connection: AsyncRead + AsyncWrite + ReadArrival + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + ReadArrival + Send + Unpin> Connection for T {}

struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    wire: Arc<WireLog>,
    /// Set until the connection's first request reports how it was opened.
    opened: Option<Opened>,
    /// Requests sent on this connection so far.
    uses: u32,
    /// The server's `Keep-Alive: max=` (requests per connection).
    max_uses: Option<u32>,
    /// The server's `Keep-Alive: timeout=` less a margin.
    server_idle: Option<Duration>,
}

struct Idle {
    conn: Conn,
    until: Instant,
}

/// Keep-alive HTTP/1.1 connections per scheme and authority.
pub struct Pool {
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
    settings: PoolSettings,
    idle: std::sync::Mutex<HashMap<String, Vec<Idle>>>,
    pub counters: PoolCounters,
}

impl Pool {
    /// `tcp` opens connections (resolution, timeouts, `TCP_NODELAY`); `tls` is the TLS
    /// configuration for `https` URLs (its ALPN is set to HTTP/1.1 here).
    pub fn new(
        tcp: HttpConnector,
        mut tls: rustls::ClientConfig,
        settings: PoolSettings,
    ) -> Arc<Self> {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(Self {
            tcp,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            settings,
            idle: Default::default(),
            counters: Default::default(),
        })
    }

    /// Sends `req` (absolute URI) and returns its response head. A request that failed on a
    /// reused connection before its response began is sent once more on a new connection.
    pub async fn send(self: &Arc<Self>, req: Request<Full<Bytes>>) -> Result<Sent, SendError> {
        self.send_within(req, None).await
    }

    /// [`Pool::send`] giving up on a response head that takes longer than `header_timeout`
    /// from writing the request (connecting not included; each attempt has its own).
    pub async fn send_within(
        self: &Arc<Self>,
        req: Request<Full<Bytes>>,
        header_timeout: Option<Duration>,
    ) -> Result<Sent, SendError> {
        let (parts, body) = req.into_parts();
        let watch = parts.extensions.get::<super::wire::WireWatch>().cloned();
        let body = {
            use http_body_util::BodyExt;
            body.collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default()
        };
        let key = pool_key(&parts.uri)?;
        let origin_form: Uri = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| SendError::BadUri(e.to_string()))?;
        let host = parts
            .uri
            .authority()
            .map(|a| HeaderValue::from_str(a.as_str()))
            .transpose()
            .map_err(|e| SendError::BadUri(e.to_string()))?;
        let build = || {
            let mut r = Request::new(Full::new(body.clone()));
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = origin_form.clone();
            *r.headers_mut() = parts.headers.clone();
            if let Some(host) = &host {
                r.headers_mut().entry(HOST).or_insert_with(|| host.clone());
            }
            r
        };

        let (mut conn, reused) = match self.checkout(&key) {
            Some(conn) => (conn, true),
            None => (self.connect(&parts.uri).await?, false),
        };
        let mut retried = false;
        let mut opened = conn.opened.take();
        let response = loop {
            conn.uses += 1;
            if let Some(watch) = &watch {
                watch.set(conn.wire.clone());
            }
            let attempt = conn.sender.send_request(build());
            let result = match header_timeout {
                // Dropping the attempt drops the connection: the server's answer, if it ever
                // comes, is not mistaken for the next request's.
                Some(t) => tokio::time::timeout(t, attempt)
                    .await
                    .map_err(|_| SendError::HeaderTimeout(t))?,
                None => attempt.await,
            };
            match result {
                Ok(response) => break response,
                Err(e) if reused && !retried && retryable(&e) => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    retried = true;
                    conn = self.connect(&parts.uri).await?;
                    opened = conn.opened.take();
                }
                Err(e) => return Err(SendError::Http(e)),
            }
        };
        let wire = conn.wire.clone();
        let checkin = self.recycle(key, conn, &response);
        Ok(Sent {
            response,
            retried,
            opened,
            wire: Some(wire),
            checkin,
        })
    }

    /// Opens up to `count` connections to `url`'s server, `parallel` at a time, and keeps them
    /// idle for the requests to come, so the first wave of a run does not pay (and measure) the
    /// connection storm. Returns how many were opened; a failure stops the warming and is
    /// returned only when no connection could be opened at all.
    pub async fn warm(
        self: &Arc<Self>,
        url: &str,
        count: usize,
        parallel: usize,
    ) -> Result<usize, SendError> {
        use futures_util::StreamExt;
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| SendError::BadUri(e.to_string()))?;
        let key = pool_key(&uri)?;
        let count = count.min(self.settings.max_idle.max(1));
        let mut opening = futures_util::stream::iter(0..count)
            .map(|_| self.connect(&uri))
            .buffer_unordered(parallel.max(1));
        let mut opened = 0;
        let mut first_error = None;
        while let Some(result) = opening.next().await {
            match result {
                Ok(mut conn) => {
                    // Opened ahead: its requests did not pay for it.
                    conn.opened = None;
                    self.put(key.clone(), conn);
                    opened += 1;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                    break;
                }
            }
        }

        match first_error {
            Some(e) if opened == 0 => Err(e),
            _ => Ok(opened),
        }
    }

    /// Closes every idle connection: a cold start (`--no-warm-connections`) must not reuse the
    /// connections that preparing the run (model listing, tokenize requests) left open.
    pub fn drop_idle(&self) {
        self.idle.lock().expect("pool lock").clear();
    }

    /// The newest idle connection that is still usable; expired and closed ones are dropped.
    fn checkout(&self, key: &str) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.get_mut(key)?;
        while let Some(entry) = list.pop() {
            if entry.until > now && !entry.conn.sender.is_closed() && entry.conn.sender.is_ready() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Opens a connection, timing the TCP connect and the TLS handshake apart.
    async fn connect(&self, uri: &Uri) -> Result<Conn, SendError> {
        let limit = self.settings.connect_timeout;
        let started = Instant::now();
        let mut tcp = self.tcp.clone();
        let tcp = match tokio::time::timeout(limit, tcp.call(uri.clone())).await {
            Err(_) => return Err(SendError::ConnectTimeout(limit)),
            Ok(Err(e)) => return Err(SendError::Connect(super::errors::chain(&e))),
            Ok(Ok(io)) => RxStampedTcp::new(io.into_inner()),
        };
        let connected = Instant::now();
        let (stream, tls) = if uri.scheme_str() == Some("https") {
            let host = uri.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| SendError::BadUri(format!("{host}: {e}")))?;
            let left = limit.saturating_sub(connected - started);
            let tls = match tokio::time::timeout(left, self.tls.connect(name, tcp)).await {
                Err(_) => return Err(SendError::ConnectTimeout(limit)),
                Ok(Err(e)) => {
                    return Err(SendError::Connect(format!(
                        "TLS handshake: {}",
                        super::errors::chain(&e)
                    )));
                }
                Ok(Ok(tls)) => tls,
            };
            let tls: Box<dyn Connection> = Box::new(tls);
            (tls, Some(connected.elapsed()))
        } else {
            let plain: Box<dyn Connection> = Box::new(tcp);
            (plain, None)
        };
        let wire = WireLog::new();
        let io = TokioIo::new(ObservedIo::new(stream, wire.clone()));
        let (mut sender, connection) = http1::handshake(io).await?;
        tokio::spawn(async move {
            // The connection's own task: it ends when either side closes.
            let _ = connection.await;
        });
        sender.ready().await?;
        self.counters.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            sender,
            wire,
            opened: Some(Opened {
                connect: connected - started,
                tls,
            }),
            uses: 0,
            max_uses: None,
            server_idle: None,
        })
    }

    /// Reads what the server says about the connection's future and, if it has one, returns
    /// what gives it back to the idle list once the response body has been read.
    fn recycle(
        self: &Arc<Self>,
        key: String,
        mut conn: Conn,
        response: &Response<Incoming>,
    ) -> Option<Checkin> {
        let headers = response.headers();
        let close = headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), "close"))
            || response.version() == hyper::Version::HTTP_10
                && !headers
                    .get_all(CONNECTION)
                    .iter()
                    .any(|v| has_token(v.as_bytes(), "keep-alive"));
        if let Some(ka) = headers.get("keep-alive").and_then(|v| v.to_str().ok()) {
            let (timeout, max) = parse_keep_alive(ka);
            if let Some(t) = timeout {
                conn.server_idle = Some(usable_idle(t));
            }
            if let Some(m) = max {
                conn.max_uses = Some(conn.max_uses.map_or(m, |old| old.min(m)));
            }
        }
        let spent = conn.max_uses.is_some_and(|m| conn.uses >= m);
        if close || spent || conn.server_idle == Some(Duration::ZERO) {
            self.counters
                .closed_by_server
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Checkin {
            pool: Arc::clone(self),
            key,
            conn: Some(conn),
        })
    }

    fn put(&self, key: String, conn: Conn) {
        let now = Instant::now();
        let keep = conn.server_idle.map_or(self.settings.idle_timeout, |s| {
            s.min(self.settings.idle_timeout)
        });
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.entry(key).or_default();
        // Pruned only when full: a sweep on every return costs O(idle) per request, quadratic
        // with 10,000 connections; `checkout` skips dead entries anyway.
        if list.len() >= self.settings.max_idle.max(1) {
            list.retain(|e| e.until > now && !e.conn.sender.is_closed());
        }
        if list.len() < self.settings.max_idle.max(1) {
            list.push(Idle {
                conn,
                until: now + keep,
            });
        }
    }
}

fn pool_key(uri: &Uri) -> Result<String, SendError> {
    match (uri.scheme_str(), uri.authority()) {
        (Some(s), Some(a)) => Ok(format!("{s}://{a}")),
        _ => Err(SendError::BadUri(
            "the URL needs a scheme and a host".to_string(),
        )),
    }
}

/// Failures after which the request may go again on a new connection: it was never sent (the
/// connection was found closed), or the server closed the connection cleanly before sending any
/// response byte (Go's `errServerClosedIdle`: a keep-alive close racing the request). A reset
/// is not among them: the server may have read the request, and a POST must not be doubled.
fn retryable(e: &hyper::Error) -> bool {
    e.is_incomplete_message() || e.is_canceled() || e.is_closed()
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// `Keep-Alive: timeout=5, max=100` (RFC 2068 §19.7.1.1; what Apache, httplib and others send).
pub fn parse_keep_alive(value: &str) -> (Option<Duration>, Option<u32>) {
    let mut timeout = None;
    let mut max = None;
    for part in value.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "timeout" => {
                timeout = v
                    .parse::<f64>()
                    .ok()
                    .filter(|t| *t >= 0.0)
                    .map(Duration::from_secs_f64)
            }
            "max" => max = v.parse().ok(),
            _ => {}
        }
    }
    (timeout, max)
}

/// How long to keep a connection the server will close after `announced` idle time: a second
/// less (half for very short timeouts), so a request never races the server's close.
fn usable_idle(announced: Duration) -> Duration {
    if announced > Duration::from_secs(2) {
        announced - Duration::from_secs(1)
    } else {
        announced / 2
    }
}

/// Builds the HTTP/2 client for servers spoken to with prior knowledge (gRPC); those multiplex
/// on one long-lived connection, whose lifecycle hyper-util's client handles.
pub fn http2_client(
    connector: Connector,
    settings: PoolSettings,
) -> hyper_util::client::legacy::Client<Connector, Full<Bytes>> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .pool_max_idle_per_host(settings.max_idle.max(1))
        .pool_idle_timeout(settings.idle_timeout)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_header_forms() {
        assert_eq!(
            parse_keep_alive("timeout=5, max=100"),
            (Some(Duration::from_secs(5)), Some(100))
        );
        assert_eq!(
            parse_keep_alive("max=3,timeout=\"2\""),
            (Some(Duration::from_secs(2)), Some(3))
        );
        assert_eq!(parse_keep_alive("junk"), (None, None));
        assert_eq!(usable_idle(Duration::from_secs(5)), Duration::from_secs(4));
        assert_eq!(
            usable_idle(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn connection_tokens() {
        assert!(has_token(b"keep-alive, Close", "close"));
        assert!(!has_token(b"keep-alive", "close"));
    }
}
