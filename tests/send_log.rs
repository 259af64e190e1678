//! `llmb sim --send-log`: the simulator's record of when each piece of each response was
//! written, checked against what a real client received on one kept-alive connection (body
//! offsets byte for byte, times on the same `CLOCK_MONOTONIC`), and written out on Ctrl-C by a
//! real `llmb sim` process.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use llmb_engine::clock::monotonic_ns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER: &str = "request_id,kind,seq,mono_ns,body_bytes";

#[derive(Debug, Clone, PartialEq)]
struct Line {
    id: String,
    kind: String,
    seq: u64,
    mono_ns: u64,
    body_bytes: u64,
}

/// The file's lines grouped by request id, in file order.
fn read_log(path: &Path) -> BTreeMap<String, Vec<Line>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(HEADER), "{text}");
    let mut by_id: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 5, "{line}");
        let l = Line {
            id: f[0].to_string(),
            kind: f[1].to_string(),
            seq: f[2].parse().unwrap(),
            mono_ns: f[3].parse().unwrap(),
            body_bytes: f[4].parse().unwrap(),
        };
        by_id.entry(l.id.clone()).or_default().push(l);
    }
    by_id
}

/// One SSE event as the client received it: where it ends in the body, whether it carries a
/// token, and when the frame that completed it arrived.
#[derive(Debug)]
struct Event {
    end: u64,
    token: bool,
    received_ns: u64,
}

fn events(body: &[u8], frames: &[(u64, u64)]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(i) = body[start..].windows(2).position(|w| w == b"\n\n") {
        let end = (start + i + 2) as u64;
        let text = std::str::from_utf8(&body[start..end as usize]).unwrap();
        // The role event has `"delta":{"role":…`, usage `"choices":[]`: only tokens have this.
        let token = text.contains("\"delta\":{\"content\":\"");
        let received_ns = frames.iter().find(|f| f.0 >= end).unwrap().1;
        out.push(Event {
            end,
            token,
            received_ns,
        });
        start = end as usize;
    }
    assert_eq!(start, body.len(), "the body ends with a whole event");
    out
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_log_matches_what_the_client_received() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("send.csv");
    let sim = llmb_sim::start_dedicated(
        llmb_sim::SimConfig {
            ttft_ms: 20.0,
            itl_ms: 5.0,
            batch_slowdown: 0.0,
            send_log: Some(path.clone()),
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let t0 = monotonic_ns();
    let tcp = TcpStream::connect(sim.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let driver = tokio::spawn(connection);

    const MAX_TOKENS: u64 = 12;
    let ids = ["req-1", "req-2", "req-3"];
    let mut received = BTreeMap::new();
    for id in ids {
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"hello there"}}],"max_tokens":{MAX_TOKENS},"ignore_eos":true,"stream":true,"stream_options":{{"include_usage":true}}}}"#
        );
        let request = Request::post("/v1/chat/completions")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .header("x-request-id", id)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        // (body offset after the frame, when it arrived)
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            let at = monotonic_ns();
            if let Ok(data) = frame.into_data() {
                bytes.extend_from_slice(&data);
                frames.push((bytes.len() as u64, at));
            }
        }
        received.insert(id, (bytes.len() as u64, events(&bytes, &frames)));
    }
    drop(sender);
    let _ = driver.await;
    let t1 = monotonic_ns();
    sim.shutdown().await;

    let log = read_log(&path);
    assert_eq!(
        log.keys().map(String::as_str).collect::<Vec<_>>(),
        ids,
        "{log:#?}"
    );
    for id in ids {
        let lines = &log[id];
        let (body_len, events) = &received[id];
        let kinds: Vec<&str> = lines.iter().map(|l| l.kind.as_str()).collect();
        assert_eq!(kinds.first(), Some(&"request"), "{id}: {kinds:?}");
        assert_eq!(kinds.get(1), Some(&"head"), "{id}: {kinds:?}");
        assert_eq!(kinds.last(), Some(&"end"), "{id}: {kinds:?}");
        for kind in ["request", "head", "end"] {
            assert_eq!(kinds.iter().filter(|k| **k == kind).count(), 1, "{id}");
        }
        // Every line lies in the run, and the file is in time order for a request.
        for pair in lines.windows(2) {
            assert!(pair[0].mono_ns <= pair[1].mono_ns, "{id}: {pair:?}");
        }
        assert!(lines.iter().all(|l| (t0..=t1).contains(&l.mono_ns)));
        assert!(lines[0].mono_ns < lines[1].mono_ns);
        let end = lines.last().unwrap();
        assert_eq!(end.body_bytes, *body_len, "{id}");

        let tokens: Vec<&Line> = lines.iter().filter(|l| l.kind == "token").collect();
        let chunks: Vec<&Line> = lines.iter().filter(|l| l.kind == "chunk").collect();
        assert_eq!(tokens.len() as u64, MAX_TOKENS, "{id}");
        assert_eq!(
            tokens.iter().map(|l| l.seq).collect::<Vec<_>>(),
            (0..MAX_TOKENS).collect::<Vec<_>>()
        );
        // Role, usage, [DONE].
        assert_eq!(
            chunks.iter().map(|l| l.seq).collect::<Vec<_>>(),
            [0, 1, 2],
            "{id}"
        );
        for pair in tokens.windows(2) {
            assert!(pair[0].mono_ns < pair[1].mono_ns, "{id}: {pair:?}");
            assert!(pair[0].body_bytes < pair[1].body_bytes, "{id}: {pair:?}");
        }

        // The offsets are the ones the client saw, event by event, and nothing arrived long
        // before its write returned (on loopback the reader can wake a few µs before the writer's
        // `write()` returns, and the writer can be preempted before it reads the clock).
        let client_tokens: Vec<&Event> = events.iter().filter(|e| e.token).collect();
        let client_chunks: Vec<&Event> = events.iter().filter(|e| !e.token).collect();
        assert_eq!(
            tokens.iter().map(|l| l.body_bytes).collect::<Vec<_>>(),
            client_tokens.iter().map(|e| e.end).collect::<Vec<_>>(),
            "{id}"
        );
        assert_eq!(
            chunks.iter().map(|l| l.body_bytes).collect::<Vec<_>>(),
            client_chunks.iter().map(|e| e.end).collect::<Vec<_>>(),
            "{id}"
        );
        for (sent, got) in tokens.iter().zip(&client_tokens) {
            assert!(
                got.received_ns + 2_000_000 >= sent.mono_ns,
                "{id}: token {} received {} ms before it was written",
                sent.seq,
                ms(sent.mono_ns - got.received_ns)
            );
            assert!(
                got.received_ns.saturating_sub(sent.mono_ns) < 1_000_000_000,
                "{id}"
            );
        }

        // Token gaps follow the configured 5 ms ITL: bounded, not exact.
        let gaps: Vec<f64> = tokens
            .windows(2)
            .map(|p| ms(p[1].mono_ns - p[0].mono_ns))
            .collect();
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        assert!((4.0..50.0).contains(&median), "{id}: gaps {gaps:?}");
        assert!(
            gaps.iter().all(|g| (1.0..100.0).contains(g)),
            "{id}: gaps {gaps:?}"
        );
        // TTFT: the first token follows the request by about the configured 20 ms.
        let ttft = ms(tokens[0].mono_ns - lines[0].mono_ns);
        assert!((15.0..200.0).contains(&ttft), "{id}: ttft {ttft} ms");
    }
}

#[test]
fn llmb_sim_writes_the_send_log_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("send.csv");
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmb"))
        .args([
            "sim",
            "--port",
            "0",
            "--sim-ttft-ms",
            "5",
            "--sim-itl-ms",
            "2",
        ])
        .arg("--send-log")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start llmb sim");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "llmb sim ended early"
        );
        if let Some(url) = line.split(" on ").nth(1) {
            break url.trim().to_string();
        }
        assert!(Instant::now() < deadline, "llmb sim did not start");
    };
    let addr = url.trim_start_matches("http://").to_string();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body_len = runtime.block_on(async {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let body = r#"{"prompt":"p","max_tokens":4,"ignore_eos":true,"stream":true}"#;
        let request = format!(
            "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        // Four tokens and [DONE]: the SSE text without the chunked framing.
        let (_, chunked) = text.split_once("\r\n\r\n").unwrap();
        let mut rest = chunked;
        let mut len = 0;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            len += size;
            rest = &after[size + 2..];
        }
        len as u64
    });
    // SAFETY: kill only sends a signal to the child this test started.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("llmb sim did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");

    let log = read_log(&path);
    let lines = &log["sim-1"];
    let kinds: Vec<&str> = lines.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "request", "head", "token", "token", "token", "token", "chunk", "end"
        ]
    );
    assert_eq!(lines.last().unwrap().body_bytes, body_len);
    assert_eq!(log.len(), 1, "{log:?}");
}
