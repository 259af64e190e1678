//! Test helpers shared by the modules' tests: a simulator on a free port, raw HTTP/1.1
//! requests over a socket, and the response parsed back with its chunks, so tests can check
//! the bytes on the wire.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::SimConfig;
use crate::server::{SimHandle, start};
use crate::state::SimState;

/// A response read off the socket, with the chunked encoding undone.
pub(crate) struct Reply {
    pub(crate) status: u16,
    /// Status line and headers, lowercased.
    pub(crate) head: String,
    pub(crate) body: String,
    /// HTTP chunks (the whole body as one element when not chunked).
    pub(crate) chunks: Vec<String>,
    /// The body ended properly (final zero chunk, or a fixed-length body).
    pub(crate) complete: bool,
}

pub(crate) fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head[9..12].parse().expect("a status code");
    let head = head.to_ascii_lowercase();
    let mut chunks = Vec::new();
    let mut complete = false;
    if head.contains("transfer-encoding: chunked") {
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if size == 0 {
                complete = true;
                break;
            }
            if after.len() < size + 2 {
                break;
            }
            chunks.push(after[..size].to_string());
            rest = &after[size + 2..];
        }
    } else {
        chunks.push(rest.to_string());
        complete = true;
    }
    Reply {
        status,
        head,
        body: chunks.concat(),
        chunks,
        complete,
    }
}

pub(crate) fn raw_request(method: &str, path: &str, headers: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
        body.len()
    )
}

pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw_request(method, path, headers, body).as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    // A simulated drop may end in a reset; keep what arrived.
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await;
    parse_reply(&raw)
}

pub(crate) async fn post(sim: &SimHandle, path: &str, body: &str) -> Reply {
    request(sim.addr(), "POST", path, "", body).await
}

pub(crate) async fn get(sim: &SimHandle, path: &str) -> Reply {
    request(sim.addr(), "GET", path, "", "").await
}

pub(crate) fn fast() -> SimConfig {
    SimConfig {
        ttft_ms: 1.0,
        itl_ms: 1.0,
        ..SimConfig::default()
    }
}

pub(crate) async fn sim(config: SimConfig) -> SimHandle {
    start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

pub(crate) fn event_json(chunk: &str) -> Value {
    let data = chunk
        .strip_prefix("data: ")
        .expect("an SSE data line")
        .trim_end();
    serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {chunk:?}"))
}

/// The named SSE events of a body (`event: NAME` + `data: JSON`), in order.
pub(crate) fn named_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e
                .strip_prefix("event: ")
                .and_then(|e| e.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("not a named event: {e:?}"));
            let data = serde_json::from_str(data).unwrap_or_else(|err| panic!("{err}: {e:?}"));
            (name.to_string(), data)
        })
        .collect()
}

/// Reads until `needle` shows up (or panics after 5 s).
pub(crate) async fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut raw = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&raw).contains(needle) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("timely data")
            .unwrap();
        assert!(n > 0, "connection closed before {needle:?}");
        raw.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&raw).into_owned()
}

pub(crate) async fn wait_for_idle(state: &SimState) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while state.active.load(Relaxed) != 0 {
        assert!(
            Instant::now() < deadline,
            "{} streams still active",
            state.active.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
