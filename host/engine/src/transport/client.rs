//! The HTTP(S) client every request of a run shares: llmb's HTTP/1.1 pool or hyper-util's
//! HTTP/2 client, behind rustls with the Mozilla roots, an extra CA file or, with `--insecure`,
//! no certificate check. Kept apart from sending and reading so connection setup is in one place.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::errors::chain;
use super::pool::{self, PoolSettings, SendError, Sent};

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
                        opened: None,
                        wire: None,
                        checkin: None,
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

    /// Opens up to `count` connections to `url` ahead of the timed phase ([`pool::Pool::warm`]);
    /// HTTP/2 multiplexes on one connection that opens with the first request, so nothing is
    /// opened there. Returns how many were opened.
    pub async fn warm(&self, url: &str, count: usize) -> Result<usize, SendError> {
        match self {
            HttpClient::Http1(pool) => pool.warm(url, count, WARM_PARALLEL).await,
            HttpClient::Http2(_) => Ok(0),
        }
    }

    /// Closes the idle connections (HTTP/1.1 pool only), for a cold start.
    pub fn drop_idle(&self) {
        if let HttpClient::Http1(pool) = self {
            pool.drop_idle();
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
/// Connections opened at once when warming: enough that 10,000 open in about a second on
/// loopback, few enough not to overflow a server's accept queue.
const WARM_PARALLEL: usize = 256;

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
    Ok(if http2 {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        HttpClient::Http2(Box::new(pool::http2_client(connector, settings)))
    } else {
        HttpClient::Http1(pool::Pool::new(http, tls, settings))
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
