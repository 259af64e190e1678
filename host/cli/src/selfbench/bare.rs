//! The floor llmb is compared with: a bare hyper/tokio streaming client. Same connections
//! (one HTTP/1.1 connection per stream, opened before timing), same requests (the body the
//! `openai-chat` adapter sends), no plugin, no records, no JSON parsing: it only counts bytes
//! and SSE `data:` lines, and checks each stream ended with `data: [DONE]`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::Rng;

/// `data:` lines in a chat stream besides the tokens: the role-only first chunk, the usage
/// chunk and `[DONE]`.
const NON_TOKEN_DATA_LINES: u64 = 3;

/// What the bare client measured at one level.
#[derive(Debug, Clone, Default)]
pub struct BareOutcome {
    /// Token events received (`data:` lines less the non-token ones), successful requests only.
    pub tokens: u64,
    pub bytes: u64,
    pub failed: usize,
    pub first_error: Option<String>,
    /// CPU opening the connections (not in `cpu`).
    pub connect_cpu: Duration,
    /// CPU of the timed part: every request sent and its stream read to the end.
    pub cpu: Duration,
    pub wall: Duration,
}

/// Counts SSE `data:` lines across body frames, which may split a line anywhere. Keeps only the
/// first bytes of the current line, enough to tell `data:` and `data: [DONE]` apart.
#[derive(Default)]
struct SseCount {
    head: [u8; 16],
    head_len: usize,
    data_lines: u64,
    done: bool,
}

impl SseCount {
    fn feed(&mut self, chunk: &[u8]) {
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', chunk) {
            self.take(&chunk[start..nl]);
            self.end_line();
            start = nl + 1;
        }
        self.take(&chunk[start..]);
    }

    fn take(&mut self, part: &[u8]) {
        let n = part.len().min(self.head.len() - self.head_len);
        self.head[self.head_len..self.head_len + n].copy_from_slice(&part[..n]);
        self.head_len += n;
    }

    fn end_line(&mut self) {
        let line = &self.head[..self.head_len];
        if let Some(value) = line.strip_prefix(b"data:") {
            self.data_lines += 1;
            if value.trim_ascii_start().starts_with(b"[DONE]") {
                self.done = true;
            }
        }
        self.head_len = 0;
    }
}

/// The JSON body `openai-chat` builds for a 32-word random prompt (its defaults:
/// `max_completion_tokens`, usage in the stream, `ignore_eos` for fixed output lengths).
fn chat_body(output_len: u32) -> Bytes {
    let mut rng = rand::rng();
    let prompt: Vec<String> = (0..32)
        .map(|_| format!("w{}", rng.random_range(0..50_000u32)))
        .collect();
    let body = serde_json::json!({
        "model": "llmb-sim",
        "stream": true,
        "messages": [{"role": "user", "content": prompt.join(" ")}],
        "max_completion_tokens": output_len,
        "stream_options": {"include_usage": true},
        "ignore_eos": true,
    });
    Bytes::from(serde_json::to_vec(&body).expect("a JSON value serializes"))
}

/// Opens one HTTP/1.1 connection (TCP_NODELAY) and spawns its connection task.
async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Tally of one connection's requests.
#[derive(Default)]
struct Tally {
    tokens: u64,
    bytes: u64,
    failed: usize,
    first_error: Option<String>,
}

/// One request: send it, read the stream to its end, check it was complete. Returns
/// (token events, body bytes).
async fn one_request(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    body: &Bytes,
    output_len: u32,
) -> anyhow::Result<(u64, u64)> {
    sender.ready().await.context("connection not ready")?;
    let request = hyper::Request::post("/v1/chat/completions")
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status() == 200, "HTTP {}", response.status());
    let mut body = response.into_body();
    let mut sse = SseCount::default();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            bytes += data.len() as u64;
            sse.feed(data);
        }
    }
    let tokens = sse.data_lines.saturating_sub(NON_TOKEN_DATA_LINES);
    anyhow::ensure!(sse.done, "stream ended without data: [DONE]");
    anyhow::ensure!(
        tokens >= u64::from(output_len),
        "{tokens} token events, expected {output_len}"
    );
    Ok((tokens, bytes))
}

/// `count` requests back to back on one connection.
async fn stream_requests(
    mut sender: SendRequest<Full<Bytes>>,
    host: Arc<str>,
    count: usize,
    output_len: u32,
) -> Tally {
    let body = chat_body(output_len);
    let mut tally = Tally::default();
    for _ in 0..count {
        match one_request(&mut sender, &host, &body, output_len).await {
            Ok((tokens, bytes)) => {
                tally.tokens += tokens;
                tally.bytes += bytes;
            }
            Err(e) => {
                tally.failed += 1;
                tally.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    tally
}

/// Runs `requests` requests over `streams` connections opened up front, each connection
/// carrying its share back to back. Only the requests are timed; opening the connections is
/// charged separately to `connect_cpu`.
pub async fn run(
    addr: SocketAddr,
    streams: usize,
    requests: usize,
    output_len: u32,
) -> anyhow::Result<BareOutcome> {
    let streams = streams.clamp(1, requests.max(1));
    let cpu0 = llmb_engine::cpu::process_cpu();
    let mut senders = Vec::with_capacity(streams);
    for i in 0..streams {
        senders.push(
            connect(addr)
                .await
                .with_context(|| format!("bare client, connection {} of {streams}", i + 1))?,
        );
    }
    let host: Arc<str> = addr.to_string().into();
    let cpu1 = llmb_engine::cpu::process_cpu();
    let start = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, sender)| {
            let count = requests / streams + usize::from(i < requests % streams);
            tokio::spawn(stream_requests(sender, host.clone(), count, output_len))
        })
        .collect();
    let mut outcome = BareOutcome::default();
    for task in tasks {
        let tally = task.await.context("bare client task")?;
        outcome.tokens += tally.tokens;
        outcome.bytes += tally.bytes;
        outcome.failed += tally.failed;
        if outcome.first_error.is_none() {
            outcome.first_error = tally.first_error;
        }
    }
    outcome.wall = start.elapsed();
    outcome.cpu = llmb_engine::cpu::process_cpu().saturating_sub(cpu1);
    outcome.connect_cpu = cpu1.saturating_sub(cpu0);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_data_lines_split_anywhere() {
        let stream = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut sse = SseCount::default();
            sse.feed(&stream[..cut]);
            sse.feed(&stream[cut..]);
            assert_eq!(sse.data_lines, 3, "cut at {cut}");
            assert!(sse.done, "cut at {cut}");
        }
    }
}
