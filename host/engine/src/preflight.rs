//! One request before the timed run, as `vllm bench serve` sends its initial test prompt: a
//! server that cannot serve the run (wrong model name, wrong endpoint, missing key) stops it at
//! once with the server's own words and what would fix it, instead of a report of zeros.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use crate::plugin::backend::BackendPool;
use crate::plugin::dataset::Sample;
use crate::records::RequestRecord;
use crate::runner::RequestTemplate;
use crate::tokenizer::HostTokenizer;
use crate::transport::{Exchange, HttpClient, Target};

/// What the pre-flight request is sent with: the run's own adapter, connection and settings.
pub struct Preflight<'a> {
    pub pool: &'a Arc<BackendPool>,
    pub client: &'a HttpClient,
    pub target: &'a Target,
    pub tokenizer: &'a HostTokenizer,
    pub template: &'a RequestTemplate,
}

/// Sends the run's first prompt once; an error names the request, the server's answer and,
/// where it can tell, the fix.
pub async fn check(p: &Preflight<'_>, first: &Sample) -> anyhow::Result<()> {
    let mut adapter = p.pool.checkout()?;
    let req = p
        .template
        .request(0, marked(&first.prompt), first.output_tokens);
    let exchange = Exchange {
        client: p.client,
        target: p.target,
        tokenizer: p.tokenizer,
        t0: Instant::now(),
    };
    eprintln!("pre-flight: one request before the timed run ...");
    let record = exchange
        .execute(&mut adapter, &req, RequestRecord::default())
        .await;
    if record.success {
        return Ok(());
    }
    let error = record
        .error
        .unwrap_or_else(|| crate::records::RequestError {
            kind: "unknown".into(),
            message: "the request failed without a recorded reason".into(),
            http_status: None,
        });
    let status = error
        .http_status
        .map(|s| format!("HTTP {s}, "))
        .unwrap_or_default();
    let mut message = format!(
        "the pre-flight request failed ({status}{}): {}",
        error.kind, error.message
    );
    let model_trouble =
        error.http_status == Some(404) || error.message.to_ascii_lowercase().contains("model");
    if model_trouble && let Some(models) = served_models(p).await {
        message.push_str(&format!(
            "\n  --model {} is not among the models the server lists at /v1/models: {}; pass one of them with --model",
            p.template.model,
            models.join(", ")
        ));
    } else if error.http_status == Some(404) {
        message.push_str("\n  the server has no such route: check --endpoint and --backend");
    } else if error.http_status == Some(401) || error.http_status == Some(403) {
        message.push_str(
            "\n  the server refused the credentials: check --api-key (or OPENAI_API_KEY)",
        );
    } else if error.kind == "connect" {
        message.push_str("\n  check --base-url (or --host/--port) and that the server is up");
    }
    anyhow::bail!(message)
}

/// The prompt with a marker in front, so the pre-flight request shares no prefix with the
/// measured ones and cannot warm the server's prefix cache for them.
fn marked(prompt: &crate::plugin::backend::Prompt) -> crate::plugin::backend::Prompt {
    use crate::plugin::backend::Prompt;
    const MARK: &str = "(llmb pre-flight check) ";
    match prompt {
        Prompt::Text(t) => Prompt::Text(format!("{MARK}{t}")),
        Prompt::Chat(messages) => {
            let mut messages = messages.clone();
            if let Some(m) = messages.first_mut() {
                m.content.insert_str(0, MARK);
            }
            Prompt::Chat(messages)
        }
        Prompt::Multimodal(messages) => {
            let mut messages = messages.clone();
            if let Some(m) = messages.first_mut() {
                m.parts
                    .insert(0, crate::plugin::backend::ContentPart::Text(MARK.into()));
            }
            Prompt::Multimodal(messages)
        }
        other => other.clone(),
    }
}

/// The model ids at `/v1/models`, when the server lists any.
async fn served_models(p: &Preflight<'_>) -> Option<Vec<String>> {
    let uri: hyper::Uri = format!("{}/v1/models", p.target.base_url).parse().ok()?;
    let req = p.target.with_credentials(hyper::Request::get(uri));
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        p.client.request(req.body(Default::default()).ok()?),
    )
    .await
    .ok()?
    .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let ids: Vec<String> = v["data"]
        .as_array()?
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect();
    (!ids.is_empty()).then_some(ids)
}
