//! Where prompt lengths come from.
//!
//! With `--tokenizer` the dataset readers count with it. Without one, llmb asks the server's
//! tokenize route (the adapter says which, if any) for every prompt before the run, so input
//! lengths are the server's own count of what it will be sent, chat template included. Where
//! the server has no such route the word-tokenizer estimate stays, and the report says so.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::{BodyExt, Limited};
use serde::Serialize;

use crate::plugin::backend::{BackendPool, GenRequest, HttpRequest};
use crate::plugin::dataset::Sample;
use crate::transport::{HttpClient, Target};

/// Tokenize requests in flight at once: enough to count thousands of prompts in seconds
/// without looking like a load test to the server.
const IN_FLIGHT: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REPLY_BYTES: usize = 16 << 20;

/// How the input token counts of a run were obtained, for the report and the result file.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum InputCountSource {
    /// The `--tokenizer` the user gave.
    Tokenizer { id: String },
    /// The server's tokenize route, for every prompt sent before the run.
    Server {
        /// Method and path, e.g. `POST /tokenize`.
        route: String,
        prompts: usize,
        /// Mean of the word-tokenizer estimate the server's counts replaced.
        mean_estimate: f64,
        mean_server: f64,
    },
    /// The word tokenizer (one token per word), and why nothing better was available.
    Estimate { reason: String },
}

impl InputCountSource {
    /// One line for the console report.
    pub fn describe(&self) -> String {
        match self {
            Self::Tokenizer { id } => format!("tokenizer {id}"),
            Self::Server {
                route,
                prompts,
                mean_estimate,
                mean_server,
            } => format!(
                "server {route} for {prompts} prompts (mean {mean_server:.1}; the word estimate was {mean_estimate:.1}, {:+.1})",
                mean_server - mean_estimate
            ),
            Self::Estimate { reason } => {
                format!(
                    "estimate: one token per word ({reason}; give --tokenizer for exact counts)"
                )
            }
        }
    }
}

/// What the tokenize requests need to look like the run's own requests.
pub struct Counting<'a> {
    pub pool: &'a Arc<BackendPool>,
    pub client: &'a HttpClient,
    pub target: &'a Target,
    pub model: &'a str,
}

/// Replaces every sample's `input_tokens` with the server's count, or leaves the estimates and
/// says why. Never fails the run: a server without the route is common.
pub async fn count_with_server(c: &Counting<'_>, samples: &mut [Sample]) -> InputCountSource {
    let backend = c.pool.info().name.clone();
    let requests = match tokenize_requests(c, samples) {
        Ok(r) => r,
        Err(reason) => return InputCountSource::Estimate { reason },
    };
    let Some(route) = requests
        .iter()
        .flatten()
        .next()
        .map(|r| format!("{} {}", r.method, r.path))
    else {
        return InputCountSource::Estimate {
            reason: format!("the {backend} adapter has no tokenize route"),
        };
    };
    if requests.iter().any(Option::is_none) {
        return InputCountSource::Estimate {
            reason: format!("the {backend} adapter cannot count every prompt of this dataset"),
        };
    }
    let requests: Vec<HttpRequest> = requests.into_iter().flatten().collect();

    // One request first: a server without the route says so once, not once per prompt.
    let first = match ask(c, &requests[0]).await {
        Ok(n) => n,
        Err(why) => {
            return InputCountSource::Estimate {
                reason: format!("{route} {why}"),
            };
        }
    };
    let mut counts = vec![first];
    let rest: Vec<Result<u32, String>> = futures_util::stream::iter(&requests[1..])
        .map(|r| ask(c, r))
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    for (i, n) in rest.into_iter().enumerate() {
        match n {
            Ok(n) => counts.push(n),
            Err(why) => {
                return InputCountSource::Estimate {
                    reason: format!("{route} for prompt {} {why}", i + 2),
                };
            }
        }
    }
    let mean = |v: &mut dyn Iterator<Item = u32>, n: usize| {
        v.map(f64::from).sum::<f64>() / n.max(1) as f64
    };
    let mean_estimate = mean(&mut samples.iter().map(|s| s.input_tokens), samples.len());
    for (s, n) in samples.iter_mut().zip(&counts) {
        s.input_tokens = *n;
    }
    InputCountSource::Server {
        route,
        prompts: samples.len(),
        mean_estimate,
        mean_server: mean(&mut counts.iter().copied(), counts.len()),
    }
}

fn tokenize_requests(
    c: &Counting<'_>,
    samples: &[Sample],
) -> Result<Vec<Option<HttpRequest>>, String> {
    let mut adapter = c.pool.checkout().map_err(|e| format!("{e:#}"))?;
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let req = GenRequest {
                id: i as u64,
                model: c.model.to_string(),
                prompt: s.prompt.clone(),
                max_tokens: s.output_tokens,
                ignore_eos: false,
                streaming: false,
                include_usage: false,
                temperature: None,
                extra_body: None,
            };
            adapter
                .tokenize_request(&req)
                .map_err(|f| format!("the adapter failed building a tokenize request: {f}"))
        })
        .collect()
}

/// One tokenize request; the error says what the server answered.
async fn ask(c: &Counting<'_>, http: &HttpRequest) -> Result<u32, String> {
    let request = c
        .target
        .request(&http.path, &http.method, &http.headers, http.body.clone())
        .map_err(|e| e.message)?;
    let response = tokio::time::timeout(TIMEOUT, c.client.request(request))
        .await
        .map_err(|_| format!("did not answer within {TIMEOUT:?}"))?
        .map_err(|e| format!("failed: {e}"))?;
    let status = response.status();
    let body = tokio::time::timeout(
        TIMEOUT,
        Limited::new(response.into_body(), MAX_REPLY_BYTES).collect(),
    )
    .await
    .map_err(|_| format!("did not finish its reply within {TIMEOUT:?}"))?
    .map_err(|e| format!("reply could not be read: {e}"))?
    .to_bytes();
    if !status.is_success() {
        return Err(format!("answered HTTP {}", status.as_u16()));
    }
    let mut adapter = c.pool.checkout().map_err(|e| format!("{e:#}"))?;
    adapter
        .parse_tokenize(&body)
        .map_err(|f| format!("reply made the adapter fail: {f}"))?
        .map_err(|e| format!("reply was not understood: {e}"))
}
