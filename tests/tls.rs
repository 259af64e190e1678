//! https:// servers: a TLS front (made here, with its own CA) over the simulator on 127.0.0.1.

mod common;

use std::sync::Arc;

use common::*;

/// A CA, a certificate for 127.0.0.1 signed by it, and a TLS acceptor using that certificate.
fn tls_front() -> (String, tokio_rustls::TlsAcceptor) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Terminates TLS on a free port and forwards every connection to `backend`.
async fn tls_proxy(acceptor: tokio_rustls::TlsAcceptor, backend: std::net::SocketAddr) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_servers_are_benchmarked_with_a_given_ca() {
    let config = llmb_sim::SimConfig {
        ttft_ms: 2.0,
        itl_ms: 1.0,
        ..Default::default()
    };
    let sim = llmb_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (ca_pem, acceptor) = tls_front();
    let port = tls_proxy(acceptor, sim.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();

    let mut args = quick_args(dir.path());
    args.base_url = Some(format!("https://127.0.0.1:{port}"));
    args.model = Some("llmb-sim".into());
    args.ca_cert = Some(ca_path);
    let outcome = bench(&args).await;
    assert_eq!(
        outcome.metrics.completed, 8,
        "{:?}",
        outcome.records[0].error
    );
    assert_eq!(outcome.metrics.total_output, 64);

    // Without the CA the certificate is not trusted: the pre-flight request stops the run ...
    args.ca_cert = None;
    args.result_filename = Some("untrusted.json".into());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let stopped = llmb::bench::run(&args, rx).await.err().expect("untrusted");
    assert!(
        format!("{stopped:#}")
            .to_lowercase()
            .contains("certificate"),
        "{stopped:#}"
    );
    // ... and without it every request says so.
    args.no_preflight = true;
    let refused = bench(&args).await;
    assert_eq!(refused.metrics.failed, 8);
    let err = refused.records[0].error.as_ref().unwrap();
    assert_eq!(err.kind, "connect");
    assert!(
        err.message.to_lowercase().contains("certificate"),
        "{}",
        err.message
    );

    // --insecure (vLLM's, curl's -k) accepts the unknown certificate.
    args.vllm.insecure = true;
    args.result_filename = Some("insecure.json".into());
    let insecure = bench(&args).await;
    assert_eq!(insecure.metrics.completed, 8);
    sim.shutdown().await;
}
