//! Sending one request and reading its response: hyper over tokio, the host framing the body
//! and stamping each read as its bytes arrive, the adapter parsing the frames of each read in a
//! single call.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use llmb_plugin_sdk::framing::{Batch, BodyFramer, FramingKind};

use crate::plugin::backend::{
    BackendError, ErrorKind, FrameBatch, FrameSpan, Framing, GenRequest, PooledBackend,
    StreamEvent, Usage,
};
use crate::records::{RequestError, RequestRecord, TokenSource};
use crate::tokenizer::HostTokenizer;

pub mod limits;
pub mod pool;
pub mod transcript;

pub use limits::Limits;
pub use pool::{PoolSettings, SendError, Sent};

/// The keep-alive HTTP(S) client shared by all requests of a run: llmb's own HTTP/1.1 pool
/// (server keep-alive honoured, one retry on a stale reused connection), or hyper-util's client
/// for HTTP/2 prior-knowledge servers (gRPC).
#[derive(Clone)]
pub enum HttpClient {
    Http1(std::sync::Arc<pool::Pool>),
    Http2(Box<Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>>),
}

impl HttpClient {
    /// Sends a request with an absolute URI and returns the response head.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Sent, SendError> {
        self.send_within(req, None).await
    }

    /// [`HttpClient::send`] failing with [`SendError::HeaderTimeout`] when the response head
    /// takes longer than `header_timeout` after the request went out (over HTTP/2, where
    /// hyper-util connects inside the same call, connecting counts too).
    pub async fn send_within(
        &self,
        req: Request<Full<Bytes>>,
        header_timeout: Option<Duration>,
    ) -> Result<Sent, SendError> {
        match self {
            HttpClient::Http1(pool) => pool.send_within(req, header_timeout).await,
            HttpClient::Http2(client) => {
                let request = client.request(req);
                let result = match header_timeout {
                    Some(t) => tokio::time::timeout(t, request)
                        .await
                        .map_err(|_| SendError::HeaderTimeout(t))?,
                    None => request.await,
                };
                match result {
                    Ok(response) => Ok(Sent {
                        response,
                        retried: false,
                    }),
                    Err(e) => Err(SendError::Connect(chain(&e))),
                }
            }
        }
    }

    /// [`HttpClient::send`] for callers that only want the response.
    pub async fn request(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, SendError> {
        self.send(req).await.map(|s| s.response)
    }

    /// Requests sent again on a fresh connection so far (HTTP/1.1 pool only).
    pub fn retries(&self) -> u64 {
        match self {
            HttpClient::Http1(pool) => pool
                .counters
                .retries
                .load(std::sync::atomic::Ordering::Relaxed),
            HttpClient::Http2(_) => 0,
        }
    }

    /// Connections opened so far (HTTP/1.1 pool only).
    pub fn connections_opened(&self) -> u64 {
        match self {
            HttpClient::Http1(pool) => pool
                .counters
                .opened
                .load(std::sync::atomic::Ordering::Relaxed),
            HttpClient::Http2(_) => 0,
        }
    }
}

/// Largest error body kept for the error message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A client whose idle pool holds as many connections as requests may be in flight. It speaks
/// plain HTTP and HTTPS (rustls, the Mozilla root store plus `extra_ca`, a PEM file); with
/// `http2` it speaks HTTP/2 from the first byte (prior knowledge), as gRPC servers expect, and
/// multiplexes requests over the connection.
pub fn client(
    pool_size: usize,
    extra_ca: Option<&std::path::Path>,
    http2: bool,
) -> anyhow::Result<HttpClient> {
    client_with(
        PoolSettings {
            max_idle: pool_size.max(1),
            ..PoolSettings::default()
        },
        extra_ca,
        http2,
    )
}

/// [`client`] with the user's connection settings.
pub fn client_with(
    settings: PoolSettings,
    extra_ca: Option<&std::path::Path>,
    http2: bool,
) -> anyhow::Result<HttpClient> {
    use anyhow::Context;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("--ca-cert {}: cannot read", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("--ca-cert {}: not PEM certificates", path.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "--ca-cert {}: no certificate in the file",
            path.display()
        );
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("--ca-cert {}: unusable certificate", path.display()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS configuration")?;
    let tls = if settings.insecure_tls {
        builder
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(settings.connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(if http2 {
        HttpClient::Http2(Box::new(pool::http2_client(connector, settings)))
    } else {
        HttpClient::Http1(pool::Pool::new(connector, settings))
    })
}

/// `--insecure`: accepts any server certificate, still checking that the handshake is signed by
/// the key in it.
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where and how requests are sent. The API key lives only here, as a sensitive header value
/// that is never formatted into records, logs or errors.
#[derive(Clone)]
pub struct Target {
    /// Scheme and authority plus any path prefix of `--base-url`, without a trailing slash.
    pub base_url: String,
    /// `--endpoint`, replacing the adapter's default path.
    pub endpoint: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub authorization: Option<HeaderValue>,
    pub timeout: Duration,
    pub framing: Framing,
    /// Bounds on each response: head and idle timeouts, body, frame and output sizes.
    pub limits: Limits,
}

impl Target {
    /// An HTTP request to `path` under `--base-url`, with the adapter's headers, then the user's
    /// `--header`s and the API key on top.
    ///
    /// The boundary a plugin cannot cross: the URL is the parsed `--base-url` (scheme, host,
    /// port, path prefix) plus a checked path ([`checked_path`]), and the adapter may not set
    /// the headers that carry identity or framing ([`HOST_ONLY_HEADERS`]); on a header the user
    /// gave with `--header` the user's value wins. A refusal fails the request as a `plugin`
    /// error naming what was refused; nothing is sent.
    pub fn request(
        &self,
        path: &str,
        method: &str,
        adapter_headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, RequestError> {
        let (uri, userinfo) = self.url(path).map_err(|why| {
            if self.endpoint.as_deref() == Some(path) {
                fail("bad-request", format!("--endpoint {path:?} refused: {why}"))
            } else {
                fail(
                    "plugin",
                    format!("the adapter's path {path:?} refused: {why}"),
                )
            }
        })?;
        let mut builder = Request::builder().method(method).uri(uri);
        let headers = builder.headers_mut().expect("valid builder");
        for (k, v) in adapter_headers {
            let name = HeaderName::try_from(k.as_str()).map_err(|_| {
                fail(
                    "plugin",
                    format!("the adapter's header name {k:?} is not a valid header name"),
                )
            })?;
            if HOST_ONLY_HEADERS.contains(&name.as_str()) {
                return Err(fail(
                    "plugin",
                    format!(
                        "the adapter may not set the {name} header (llmb sets it from --base-url, \
                         --api-key and --header)"
                    ),
                ));
            }
            if self.headers.iter().any(|(user, _)| *user == name) {
                continue;
            }
            let value = HeaderValue::try_from(v.as_str()).map_err(|_| {
                fail(
                    "plugin",
                    format!("the adapter's {name} header value is not a valid header value"),
                )
            })?;
            headers.insert(name, value);
        }
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        if let Some(auth) = &self.authorization {
            headers.insert(hyper::header::AUTHORIZATION, auth.clone());
        } else if let Some(info) = userinfo
            && !headers.contains_key(hyper::header::AUTHORIZATION)
        {
            headers.insert(hyper::header::AUTHORIZATION, basic_auth(&info));
        }
        builder.body(Full::new(Bytes::from(body))).map_err(|e| {
            fail(
                "plugin",
                format!("the adapter built an invalid request: {e}"),
            )
        })
    }

    /// The absolute URL for `path` (path and optional query) under `--base-url`, without the
    /// base's user-info (returned apart, percent-decoded, for Basic authentication).
    pub fn url(&self, path: &str) -> Result<(Uri, Option<String>), String> {
        let shown = || crate::secrets::redact_url(&self.base_url);
        let base: Uri = self
            .base_url
            .parse()
            .map_err(|e| format!("--base-url {} is not a URL: {e}", shown()))?;
        let scheme = base
            .scheme()
            .filter(|s| matches!(s.as_str(), "http" | "https"))
            .ok_or_else(|| format!("--base-url {} is not an http(s) URL", shown()))?
            .clone();
        let authority = base
            .authority()
            .ok_or_else(|| format!("--base-url {} has no host", shown()))?;
        let (userinfo, host_port) = match authority.as_str().rsplit_once('@') {
            Some((info, host)) => (Some(info), host),
            None => (None, authority.as_str()),
        };
        let (path, query) = checked_path(path)?;
        let prefix = base.path().trim_end_matches('/');
        let mut path_and_query = format!("{prefix}{path}");
        for q in [query, base.query()].into_iter().flatten() {
            if !q.is_empty() {
                path_and_query.push(if path_and_query.contains('?') {
                    '&'
                } else {
                    '?'
                });
                path_and_query.push_str(q);
            }
        }
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(host_port)
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| format!("not a valid URL path: {e}"))?;
        // Belt and braces: whatever the path held, the request goes where --base-url says.
        if uri.scheme() != base.scheme()
            || uri.host() != base.host()
            || uri.port_u16() != base.port_u16()
        {
            return Err("it would change the scheme, host or port of --base-url".into());
        }
        let userinfo = userinfo
            .filter(|i| !i.is_empty())
            .map(|i| crate::secrets::percent_decode(i).unwrap_or_else(|| i.to_string()));
        Ok((uri, userinfo))
    }

    /// Builds the `Authorization: Bearer` value, marked sensitive so hyper never logs it.
    /// The key is registered as a secret, so no output of this process shows it.
    pub fn bearer(api_key: &str) -> anyhow::Result<HeaderValue> {
        crate::secrets::register(api_key);
        let mut v = HeaderValue::from_str(&format!("Bearer {api_key}")).map_err(|_| {
            anyhow::anyhow!("the API key contains characters not allowed in a header")
        })?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// Headers only llmb sets: where the request goes and who sends it (`Host`, credentials), and
/// how its body is framed on a pooled connection (a plugin-chosen length could smuggle a second
/// request).
pub const HOST_ONLY_HEADERS: [&str; 9] = [
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "proxy-connection",
];

/// Splits a request path into path and query after checking that it can only name a resource
/// under `--base-url`: it starts with one `/`, has no scheme or authority (`//host`,
/// `http://`), no `.`/`..` segments, no backslash, whitespace, control character or fragment,
/// and percent-decoding it changes none of that.
pub fn checked_path(path: &str) -> Result<(&str, Option<&str>), String> {
    if !path.starts_with('/') {
        return Err("a path must start with / (it is joined to --base-url)".into());
    }
    if let Some(c) = path
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '\\' | '#'))
    {
        return Err(format!("it contains {c:?}"));
    }
    let (p, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let decoded = crate::secrets::percent_decode(p);
    for (form, how) in [(Some(p), ""), (decoded.as_deref(), " once percent-decoded")] {
        let Some(form) = form else { continue };
        if form.starts_with("//") {
            return Err(format!("it names a host (starts with //){how}"));
        }
        if form.contains("://") {
            return Err(format!("it holds a URL (\"://\"){how}"));
        }
        if form.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(format!(
                "it has a \".\" or \"..\" segment{how}, which would leave the --base-url path"
            ));
        }
        if let Some(c) = form.chars().find(|c| c.is_control() || matches!(c, '\\')) {
            return Err(format!("it contains {c:?}{how}"));
        }
    }
    Ok((p, query))
}

/// `Authorization: Basic` for the user-info of `--base-url` (`user:password`), marked sensitive.
fn basic_auth(userinfo: &str) -> HeaderValue {
    let encoded = crate::secrets::base64(userinfo.as_bytes());
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

/// Per-request accumulation of what the adapter's events say.
#[derive(Default)]
struct StreamOutcome {
    text: String,
    reasoning: String,
    usage: Option<Usage>,
    server_tokens: Option<u32>,
    /// Frames whose deltas carried text: the last-resort output count, which must not count a
    /// chat stream's role-only first chunk or its empty finish chunk.
    text_frames: u32,
    finish_reason: Option<String>,
    error: Option<RequestError>,
    /// The exchange being recorded (`LLMB_RECORD_TRANSCRIPTS`).
    transcript: Option<transcript::Transcript>,
}

impl StreamOutcome {
    /// Applies events from one read, all of whose frames arrived at `now_ns`.
    fn apply(&mut self, events: Vec<StreamEvent>, now_ns: u64, delta_ns: &mut Vec<u64>) {
        let mut stamped_frame: Option<u32> = None;
        let mut text_frame: Option<u32> = None;
        for event in events {
            match event {
                StreamEvent::Delta(d) => {
                    if stamped_frame != Some(d.frame) {
                        delta_ns.push(now_ns);
                        stamped_frame = Some(d.frame);
                    }
                    if (!d.text.is_empty() || !d.reasoning.is_empty())
                        && text_frame != Some(d.frame)
                    {
                        self.text_frames += 1;
                        text_frame = Some(d.frame);
                    }
                    self.text.push_str(&d.text);
                    self.reasoning.push_str(&d.reasoning);
                    if let Some(t) = d.tokens {
                        *self.server_tokens.get_or_insert(0) += t;
                    }
                }
                StreamEvent::Finish(reason) => self.finish_reason = Some(reason),
                StreamEvent::Usage(u) => self.usage = Some(merge_usage(self.usage.take(), u)),
                StreamEvent::Error(e) => {
                    if self.error.is_none() {
                        self.error = Some(backend_error(e));
                    }
                }
                StreamEvent::Done => {}
            }
        }
    }

    /// The failure when the output kept for this request (text, reasoning and `stamps` chunk
    /// timestamps) is over `max` bytes (`--max-text-bytes`).
    fn over_budget(&self, stamps: usize, max: usize) -> Option<RequestError> {
        let text = self.text.len() + self.reasoning.len();
        let used = text.saturating_add(stamps.saturating_mul(limits::STAMP_BYTES));
        (used > max).then(|| {
            fail(
                "too-large",
                format!(
                    "the output passed --max-text-bytes {} ({text} bytes of text and {stamps} \
                     chunk timestamps of {} bytes each)",
                    limits::size(max as u64),
                    limits::STAMP_BYTES
                ),
            )
        })
    }
}

fn merge_usage(old: Option<Usage>, new: Usage) -> Usage {
    match old {
        None => new,
        Some(o) => Usage {
            prompt_tokens: new.prompt_tokens.or(o.prompt_tokens),
            completion_tokens: new.completion_tokens.or(o.completion_tokens),
            cached_prompt_tokens: new.cached_prompt_tokens.or(o.cached_prompt_tokens),
        },
    }
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadRequest => "bad-request",
        ErrorKind::ContextLength => "context-length",
        ErrorKind::Unauthorized => "unauthorized",
        ErrorKind::NotFound => "not-found",
        ErrorKind::RateLimited => "rate-limited",
        ErrorKind::Overloaded => "overloaded",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Server => "server",
        ErrorKind::Protocol => "protocol",
        ErrorKind::Unknown => "unknown",
    }
}

fn backend_error(e: BackendError) -> RequestError {
    RequestError {
        kind: kind_name(e.kind).into(),
        message: e.message,
        http_status: e.http_status,
    }
}

fn fail(kind: &str, message: impl Into<String>) -> RequestError {
    RequestError {
        kind: kind.into(),
        message: message.into(),
        http_status: None,
    }
}

/// Formats an error with its sources ("client error (Connect): tcp connect error: Connection refused").
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// The host binding's `framing` as the SDK's framer kind.
fn framing_kind(framing: Framing) -> FramingKind {
    match framing {
        Framing::Sse => FramingKind::Sse,
        Framing::Ndjson => FramingKind::Ndjson,
        Framing::Grpc => FramingKind::Grpc,
        Framing::Raw => FramingKind::Raw,
    }
}

/// Moves a framed batch into the plugin's type (the data buffer is moved, not copied).
fn to_plugin_batch(batch: &mut Batch) -> FrameBatch {
    FrameBatch {
        data: std::mem::take(&mut batch.data),
        frames: batch
            .frames
            .drain(..)
            .map(|s| FrameSpan {
                start: s.start,
                len: s.len,
                event: s.event,
            })
            .collect(),
    }
}

/// Everything `execute` needs besides the request itself.
pub struct Exchange<'a> {
    pub client: &'a HttpClient,
    pub target: &'a Target,
    pub tokenizer: &'a HostTokenizer,
    /// The run's time origin: every timestamp is nanoseconds since this instant.
    pub t0: Instant,
}

impl Exchange<'_> {
    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_nanos() as u64
    }

    /// The body's next frame, waiting no later than `deadline` (`--timeout`) and, once the body
    /// has `begun`, no longer than `--read-idle-timeout`; `whole` words the `--timeout` failure.
    async fn next_frame(
        &self,
        body: &mut hyper::body::Incoming,
        deadline: tokio::time::Instant,
        begun: bool,
        whole: impl FnOnce() -> RequestError,
    ) -> Result<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>, RequestError> {
        let idle = self.target.limits.read_idle_timeout;
        let stall_at = tokio::time::Instant::now() + idle;
        let until = if begun {
            deadline.min(stall_at)
        } else {
            deadline
        };
        match tokio::time::timeout_at(until, body.frame()).await {
            Ok(frame) => Ok(frame),
            Err(_) if begun && stall_at <= deadline => Err(fail(
                "timeout",
                format!("the response stalled: no bytes for {idle:?} (--read-idle-timeout)"),
            )),
            Err(_) => Err(whole()),
        }
    }

    /// The failure for a body past `--max-response-bytes`.
    fn too_large(&self, what: &str) -> RequestError {
        fail(
            "too-large",
            format!(
                "{what} passed --max-response-bytes {}",
                limits::size(self.target.limits.max_response_bytes)
            ),
        )
    }

    /// Sends `req` and measures it. Never fails: every problem becomes a failed record.
    pub async fn execute(
        &self,
        adapter: &mut PooledBackend,
        req: &GenRequest,
        record: RequestRecord,
    ) -> RequestRecord {
        self.execute_until(adapter, req, record, std::future::pending())
            .await
    }

    /// [`Self::execute`], cut off when `cancel` resolves (to the error to record, e.g. kind
    /// `cancelled`). A cut-off request keeps what was measured until then: its send time,
    /// response head and every delta frame, and the text received.
    pub async fn execute_until(
        &self,
        adapter: &mut PooledBackend,
        req: &GenRequest,
        mut record: RequestRecord,
        cancel: impl std::future::Future<Output = RequestError>,
    ) -> RequestRecord {
        record.requested_output_tokens = req.max_tokens;
        let mut outcome = StreamOutcome::default();
        let result = tokio::select! {
            biased;
            r = self.exchange(adapter, req, &mut record, &mut outcome) => r,
            e = cancel => Err(e),
        };
        if let Err(e) = result {
            outcome.error.get_or_insert(e);
        }
        if record.end_ns == 0 {
            record.end_ns = self.ns(Instant::now());
        }
        if outcome.error.is_none() && req.streaming && record.delta_ns.is_empty() {
            outcome.error = Some(fail(
                "protocol",
                "never received a valid chunk to calculate TTFT (no delta in the stream)",
            ));
        }
        self.resolve_tokens(&mut record, &outcome);
        record.success = outcome.error.is_none();
        record.error = outcome.error;
        record.finish_reason = outcome.finish_reason;
        record.generated_text = outcome.text;
        record.reasoning_text = outcome.reasoning;
        record
    }

    /// Output tokens: server usage, else server per-delta counts, else a real tokenizer, else
    /// the number of frames that carried text, else the word estimate over the text. The label
    /// says which, truthfully: "tokenizer" only when a real tokenizer counted.
    fn resolve_tokens(&self, record: &mut RequestRecord, outcome: &StreamOutcome) {
        if let Some(u) = &outcome.usage {
            record.server_prompt_tokens = u.prompt_tokens;
            record.cached_prompt_tokens = u.cached_prompt_tokens;
        }
        let text = || format!("{}{}", outcome.text, outcome.reasoning);
        let (tokens, source) =
            if let Some(n) = outcome.usage.as_ref().and_then(|u| u.completion_tokens) {
                (n, TokenSource::Usage)
            } else if let Some(n) = outcome.server_tokens {
                (n, TokenSource::ServerDeltas)
            } else if matches!(self.tokenizer, HostTokenizer::HuggingFace { .. }) {
                (self.tokenizer.count(&text()), TokenSource::Tokenizer)
            } else if outcome.text_frames > 0 {
                (outcome.text_frames, TokenSource::DeltaCount)
            } else {
                (self.tokenizer.count(&text()), TokenSource::WordEstimate)
            };
        record.output_tokens = tokens;
        record.token_source = Some(source);
    }

    async fn exchange(
        &self,
        adapter: &mut PooledBackend,
        req: &GenRequest,
        record: &mut RequestRecord,
        outcome: &mut StreamOutcome,
    ) -> Result<(), RequestError> {
        let http = adapter
            .build_request(req)
            .map_err(|f| fail("plugin", f.to_string()))?
            .map_err(|e| {
                fail(
                    "plugin",
                    format!("the adapter refused request {}: {e}", req.id),
                )
            })?;
        let path = self.target.endpoint.as_deref().unwrap_or(&http.path);
        let mut transcript = transcript::enabled().then(|| transcript::Transcript {
            method: http.method.clone(),
            path: path.to_string(),
            request_body: String::from_utf8_lossy(&http.body).into_owned(),
            status: 0,
            headers: Vec::new(),
            reads: Vec::new(),
        });
        let request = self
            .target
            .request(path, &http.method, &http.headers, http.body)?;

        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent + self.target.timeout);
        record.sent_ns = self.ns(sent);
        let timeout_error = || {
            fail(
                "timeout",
                format!("no complete response within {:?}", self.target.timeout),
            )
        };

        let send = self
            .client
            .send_within(request, self.target.limits.header_timeout);
        let response = match tokio::time::timeout_at(deadline, send).await {
            Err(_) => return Err(timeout_error()),
            Ok(Err(SendError::HeaderTimeout(t))) => {
                return Err(fail(
                    "timeout",
                    format!(
                        "no response head within {t:?} of sending the request (--header-timeout)"
                    ),
                ));
            }
            Ok(Err(e)) => return Err(fail("connect", chain(&e))),
            Ok(Ok(sent)) => {
                record.retried = sent.retried;
                sent.response
            }
        };
        record.first_byte_ns = Some(self.ns(Instant::now()));
        let status = response.status().as_u16();
        let resp_headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = response.into_body();
        if let Some(t) = transcript.as_mut() {
            t.status = status;
            t.headers = resp_headers.clone();
        }

        if !(200..300).contains(&status) {
            let mut bytes = Vec::new();
            // Best effort: what arrives within the idle timeout, up to MAX_ERROR_BODY.
            while let Ok(Some(Ok(frame))) = self
                .next_frame(&mut body, deadline, true, timeout_error)
                .await
            {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data[..data.len().min(MAX_ERROR_BODY - bytes.len())]);
                    if bytes.len() >= MAX_ERROR_BODY {
                        break;
                    }
                }
            }
            record.end_ns = self.ns(Instant::now());
            let err = adapter
                .map_error(status, &resp_headers, &bytes)
                .map_err(|f| fail("plugin", f.to_string()))?;
            let mut err = backend_error(err);
            err.http_status = Some(status);
            // 429 and 503 say when to come back; the request is not retried (nor by curl or
            // Go's net/http), as a retry would hide the overload the benchmark measures.
            if let Some((_, after)) = resp_headers.iter().find(|(k, _)| k == "retry-after") {
                err.message = format!("{} (Retry-After: {after})", err.message);
            }
            return Err(err);
        }

        if !req.streaming {
            let max = self.target.limits.max_response_bytes;
            let declared = resp_headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return Err(self.too_large(&format!(
                    "the response body ({} bytes by its Content-Length)",
                    declared.unwrap_or_default()
                )));
            }
            let mut collected = Vec::with_capacity(declared.unwrap_or(0) as usize);
            let mut begun = false;
            while let Some(frame) = self
                .next_frame(&mut body, deadline, begun, timeout_error)
                .await?
            {
                let frame = frame.map_err(|e| {
                    fail(
                        "connection",
                        format!("connection error while reading the body: {}", chain(&e)),
                    )
                })?;
                if let Ok(data) = frame.into_data() {
                    begun = true;
                    if (collected.len() + data.len()) as u64 > max {
                        return Err(self.too_large("the response body"));
                    }
                    collected.extend_from_slice(&data);
                }
            }
            record.end_ns = self.ns(Instant::now());
            if let Some(mut t) = transcript.take() {
                t.reads
                    .push(String::from_utf8_lossy(&collected).into_owned());
                transcript::save(&t);
            }
            let completion = adapter
                .parse_body(status, &resp_headers, &collected)
                .map_err(|f| fail("plugin", f.to_string()))?
                .map_err(backend_error)?;
            outcome.text = completion.text;
            outcome.finish_reason = completion.finish;
            outcome.usage = completion.usage;
            if let Some(e) = outcome.over_budget(0, self.target.limits.max_text_bytes) {
                outcome.text.clear();
                return Err(e);
            }
            return Ok(());
        }

        let parser = adapter
            .new_parser(status, &resp_headers)
            .map_err(|f| fail("plugin", f.to_string()))?;
        outcome.transcript = transcript;
        let result = self
            .read_stream(adapter, parser, &mut body, deadline, record, outcome)
            .await;
        if let Some(t) = outcome.transcript.take() {
            transcript::save(&t);
        }
        adapter.drop_parser(parser);
        result
    }

    async fn read_stream(
        &self,
        adapter: &mut PooledBackend,
        parser: crate::plugin::ParserHandle,
        body: &mut hyper::body::Incoming,
        deadline: tokio::time::Instant,
        record: &mut RequestRecord,
        outcome: &mut StreamOutcome,
    ) -> Result<(), RequestError> {
        let limits = self.target.limits;
        // `--max-frame-bytes`: the SDK framers' own limit (raw framing buffers nothing).
        let mut framer = BodyFramer::new(framing_kind(self.target.framing), limits.max_frame_bytes);
        let mut overflow: Option<RequestError> = None;
        let mut frames = Batch::default();
        let mut trailers: Vec<(String, String)> = Vec::new();
        let mut ended = false;
        let mut received: u64 = 0;
        while !ended {
            let whole = || {
                fail(
                    "timeout",
                    format!("stream incomplete after {:?}", self.target.timeout),
                )
            };
            let first = self.next_frame(body, deadline, received > 0, whole).await?;
            let now_ns = self.ns(Instant::now());
            // Everything already buffered arrived with this read: frame it all, one plugin call.
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    None => ended = true,
                    Some(Err(e)) => {
                        return Err(fail(
                            "connection",
                            format!("the connection failed mid-stream: {}", chain(&e)),
                        ));
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            received += data.len() as u64;
                            if received > limits.max_response_bytes {
                                return Err(self.too_large("the stream"));
                            }
                            if let Some(t) = outcome.transcript.as_mut() {
                                t.reads.push(String::from_utf8_lossy(&data).into_owned());
                            }
                            framer.push(&data, &mut frames);
                            if let Some(why) = framer.overflowed() {
                                // Frames completed before the oversized one still go to the
                                // adapter, so what it sees does not depend on read splits.
                                overflow =
                                    Some(fail("too-large", format!("{why} (--max-frame-bytes)")));
                                ended = true;
                            }
                        }
                        Err(frame) => {
                            if let Ok(map) = frame.into_trailers() {
                                trailers.extend(map.iter().map(|(k, v)| {
                                    (
                                        k.as_str().to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                }));
                            }
                        }
                    },
                }
                if !ended {
                    next = body.frame().now_or_never();
                }
            }
            if ended && overflow.is_none() {
                framer.finish(&mut frames);
            }
            if !frames.is_empty() {
                let batch = to_plugin_batch(&mut frames);
                let events = adapter
                    .feed(parser, &batch)
                    .map_err(|f| fail("plugin", f.to_string()))?;
                frames.data = batch.data;
                frames.data.clear();
                outcome.apply(events, now_ns, &mut record.delta_ns);
                if outcome.error.is_some() {
                    record.end_ns = now_ns;
                    return Ok(());
                }
                if let Some(e) = outcome.over_budget(record.delta_ns.len(), limits.max_text_bytes) {
                    return Err(e);
                }
            }
            if let Some(e) = overflow {
                return Err(e);
            }
        }
        let events = adapter
            .finish(parser, &trailers)
            .map_err(|f| fail("plugin", f.to_string()))?;
        let now_ns = self.ns(Instant::now());
        outcome.apply(events, now_ns, &mut record.delta_ns);
        record.end_ns = now_ns;
        if let Some(e) = outcome.over_budget(record.delta_ns.len(), limits.max_text_bytes) {
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::backend::Delta;

    fn delta(frame: u32, text: &str) -> StreamEvent {
        StreamEvent::Delta(Delta {
            frame,
            text: text.into(),
            reasoning: String::new(),
            tokens: None,
            index: 0,
        })
    }

    #[test]
    fn role_and_finish_chunks_are_stamped_but_not_counted_as_tokens() {
        let mut outcome = StreamOutcome::default();
        let mut stamps = Vec::new();
        // A chat stream: role-only chunk, two tokens in one read, an empty finish chunk.
        outcome.apply(vec![delta(0, "")], 10, &mut stamps);
        outcome.apply(vec![delta(0, "Hello"), delta(1, " world")], 20, &mut stamps);
        outcome.apply(
            vec![delta(0, ""), StreamEvent::Finish("length".into())],
            30,
            &mut stamps,
        );
        assert_eq!(stamps, vec![10, 20, 20, 30]);
        assert_eq!(outcome.text_frames, 2);
        assert_eq!(outcome.text, "Hello world");
    }
}
