//! Talking to the server outside the measured requests: is it listening, which model does it
//! list and who serves it, is it ready to answer (`--ready-check-timeout-sec`), and vLLM's
//! profiler routes (`--profile`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Limited};

use crate::plugin::backend::{BackendPool, GenRequest};
use crate::transport::{HttpClient, Target};

/// Fails fast, with the address in the message, when nothing listens there.
pub async fn check_reachable(base_url: &str) -> anyhow::Result<()> {
    let uri: hyper::Uri = base_url
        .parse()
        .with_context(|| format!("--base-url {base_url} is not a URL"))?;
    let host = uri
        .host()
        .with_context(|| format!("--base-url {base_url} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!("cannot reach {base_url}: {e} (is the server running?)"),
        Err(_) => bail!("cannot reach {base_url}: no answer within 10 s"),
    }
}

/// What `/v1/models` says: the first model's id and who serves it (`owned_by`: `vllm`,
/// `sglang`, `llamacpp`, ...), which tells adapters the server's dialect.
pub struct ModelListing {
    pub first_id: Option<String>,
    pub owned_by: Option<String>,
}

pub async fn list_models(client: &HttpClient, target: &Target) -> anyhow::Result<ModelListing> {
    let uri: hyper::Uri = format!("{}/v1/models", target.base_url).parse()?;
    let req = target.with_credentials(hyper::Request::get(uri));
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(req.body(Default::default())?),
    )
    .await
    .context("timed out")??;
    anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
    let body = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let first = &v["data"][0];
    Ok(ModelListing {
        first_id: first["id"].as_str().map(str::to_owned),
        owned_by: first["owned_by"]
            .as_str()
            .filter(|o| !o.is_empty())
            .map(str::to_owned),
    })
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
