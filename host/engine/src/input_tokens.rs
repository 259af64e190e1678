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
    /// `random` prompts fitted to their asked length in the server's own tokens, through its
    /// tokenize route, before the run (no local tokenizer needed).
    ServerFitted {
        route: String,
        prompts: usize,
        /// Prompts whose content is exactly the asked length.
        exact: usize,
        /// Tokens the server adds around the content (chat template, BOS), counted in each
        /// prompt's length but not in the asked length.
        overhead: u32,
        /// Tokenize requests the fitting took.
        requests: usize,
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
            Self::ServerFitted {
                route,
                prompts,
                exact,
                overhead,
                requests,
            } => format!(
                "server {route}: {exact} of {prompts} prompts fitted to exactly the asked length in server tokens \
                 (+{overhead} template/special tokens per prompt, counted apart; {requests} tokenize requests)"
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
    // A count of 0 for a prompt with words in it is a server that read another field (llama.cpp
    // answers `{"tokens": []}` to vLLM's body): never use it.
    if let Some(i) = samples
        .iter()
        .zip(&counts)
        .position(|(s, &n)| n == 0 && s.input_tokens > 0)
    {
        return InputCountSource::Estimate {
            reason: format!(
                "{route} answered 0 tokens for prompt {} (not empty): the server does not read this tokenize body; the {backend} adapter may need --plugin-opt server=NAME",
                i + 1
            ),
        };
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
            let mut req = counting_request(c, s.prompt.clone());
            req.id = i as u64;
            req.max_tokens = s.output_tokens;
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

/// Makes every text prompt's content exactly its asked length (`input_tokens` as the reader
/// made it, one word per token) in the server's own tokens: the longest word prefix within the
/// length, then one-token filler words up to it, each step checked with the server's tokenize
/// route. Chat templates and special tokens the server adds are measured once (an empty
/// prompt) and kept apart. Deterministic for a seed and a server.
pub async fn fit_to_server(
    c: &Counting<'_>,
    samples: &mut [Sample],
) -> Result<InputCountSource, String> {
    let probe = text_request(c, "")?.ok_or_else(|| {
        format!(
            "the {} adapter has no tokenize route for these prompts",
            c.pool.info().name
        )
    })?;
    let route = format!("{} {}", probe.method, probe.path);
    let overhead = ask(c, &probe).await.unwrap_or(0);
    let requests = std::sync::atomic::AtomicUsize::new(1);
    let jobs: Vec<(usize, String, u32)> = samples
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match &s.prompt {
            crate::plugin::backend::Prompt::Text(t) => Some((i, t.clone(), s.input_tokens)),
            _ => None,
        })
        .collect();
    let fitted: Vec<Result<(usize, String, u32, bool), String>> = futures_util::stream::iter(jobs)
        .map(|(i, words, target)| {
            let requests = &requests;
            async move {
                let (text, count, exact) = fit_one(c, &words, target + overhead, requests).await?;
                Ok((i, text, count, exact))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut exact_n = 0;
    let mut prompts = 0;
    for f in fitted {
        let (i, text, count, exact) = f?;
        samples[i].prompt = crate::plugin::backend::Prompt::Text(text);
        samples[i].input_tokens = count;
        exact_n += usize::from(exact);
        prompts += 1;
    }
    Ok(InputCountSource::ServerFitted {
        route,
        prompts,
        exact: exact_n,
        overhead,
        requests: requests.into_inner(),
    })
}

/// A filler word that is one token in the tokenizers of common models (and a word for the
/// simulator's).
const FILLER: &str = "a";

/// The longest word prefix of `text` (cut at a word's end, so lines and spacing stay as the
/// reader made them) whose server count is at most `goal`, padded with [`FILLER`] words to
/// exactly `goal` where the server's counts allow.
async fn fit_one(
    c: &Counting<'_>,
    text: &str,
    goal: u32,
    requests: &std::sync::atomic::AtomicUsize,
) -> Result<(String, u32, bool), String> {
    let count = |text: String| async move {
        requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = text_request(c, &text)?.ok_or("no tokenize route")?;
        let n = ask(c, &req).await?;
        Ok::<(String, u32), String>((text, n))
    };
    // Byte offsets where each word ends.
    let ends: Vec<usize> = text
        .char_indices()
        .zip(text.chars().skip(1).map(Some).chain([None]))
        .filter(|((_, ch), next)| !ch.is_whitespace() && next.is_none_or(char::is_whitespace))
        .map(|((at, ch), _)| at + ch.len_utf8())
        .collect();
    let words = &ends;
    let join = |k: usize| {
        if k == 0 {
            String::new()
        } else {
            text[..ends[k - 1]].to_string()
        }
    };
    let (mut lo, mut hi) = (0usize, words.len());
    let mut best = (String::new(), 0u32);
    let (full, n_full) = count(join(hi)).await?;
    if n_full == 0 && !words.is_empty() {
        return Err(
            "the server answered 0 tokens for a prompt with words in it (it does not read this tokenize body)"
                .into(),
        );
    }
    if n_full <= goal {
        best = (full, n_full);
    } else {
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let (text, n) = count(join(mid)).await?;
            if n <= goal {
                lo = mid;
                best = (text, n);
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            best = count(String::new()).await.unwrap_or((String::new(), 0));
        }
    }
    let (base, mut n) = best;
    let mut fillers = 0usize;
    for _ in 0..4 {
        if n == goal {
            break;
        }
        if n < goal {
            fillers += (goal - n) as usize;
        } else if fillers > 0 {
            fillers = fillers.saturating_sub((n - goal) as usize);
        } else {
            break;
        }
        let text = padded(&base, fillers);
        n = count(text).await?.1;
    }
    let text = padded(&base, fillers);
    Ok((text, n, n == goal))
}

fn padded(base: &str, fillers: usize) -> String {
    let mut text = base.to_string();
    for _ in 0..fillers {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(FILLER);
    }
    text
}

/// The adapter's tokenize request for a plain text prompt.
fn text_request(c: &Counting<'_>, text: &str) -> Result<Option<HttpRequest>, String> {
    let mut adapter = c.pool.checkout().map_err(|e| format!("{e:#}"))?;
    let req = counting_request(c, crate::plugin::backend::Prompt::Text(text.to_string()));
    adapter
        .tokenize_request(&req)
        .map_err(|f| format!("the adapter failed building a tokenize request: {f}"))
}

/// The request an adapter is asked to count: the prompt as the run would send it.
fn counting_request(c: &Counting<'_>, prompt: crate::plugin::backend::Prompt) -> GenRequest {
    GenRequest {
        id: 0,
        model: c.model.to_string(),
        prompt,
        max_tokens: 1,
        ignore_eos: false,
        streaming: false,
        include_usage: false,
        temperature: None,
        extra_body: None,
    }
}
