//! Faults for tests, all listed here: a marker `__sim_fault:NAME__` anywhere in a prompt makes
//! the simulator misbehave on that request, in every dialect, while the requests around it are
//! served normally, so one run can mix every failure a client must survive.
//!
//! | marker | what the client sees |
//! |---|---|
//! | `http500` | HTTP 500 with the dialect's error body |
//! | `rate_limited` | HTTP 429 with `Retry-After: 1` |
//! | `overloaded` | HTTP 503 with `Retry-After: 2` |
//! | `reset` | the connection reset (TCP RST) after the request was read, before any response |
//! | `no_answer` | a connection that took the request and never answers |
//! | `slow_headers` | the response head after [`SLOW_HEADERS`], then a normal response |
//! | `malformed` | an event (or a whole body) that is not JSON; a stream goes on after it |
//! | `error_event` | an in-stream error event after the first token (an error status without streaming) |
//! | `drop` | the connection cut after two tokens (before the body without streaming) |
//! | `truncated` | a stream that ends cleanly in the middle of its third event; without streaming, a body cut at half its declared `Content-Length` |
//! | `stall` | two tokens (half a body without streaming), then silence with the connection open |
//! | `huge` | a body of [`HUGE_BODY_BYTES`] as fast as the socket takes it: one endless SSE event when streaming |
//! | `endless` | tokens at the configured pace that never finish (without streaming: no answer, as a server generating forever never sends its head) |
//! | `no_start_event` | an Anthropic stream without its `message_start` (so without the input usage), as llama.cpp sends one whose first token is an incomplete UTF-8 sequence; the other dialects answer normally |
//!
//! This module holds the markers ([`Fault`]), the bodies of the faults that are not a stream
//! ([`FaultBody`]) and the connection a `reset` ends ([`ResettableStream`]); the responses they
//! go into are built in `body` (refusals, `huge`, broken whole bodies) and `stream` (the
//! streaming faults).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How late the `slow_headers` fault sends its response head.
pub const SLOW_HEADERS: Duration = Duration::from_secs(3);
/// Length of the `huge` fault's body: beyond any sane client limit, finite so a client without
/// limits still ends.
pub const HUGE_BODY_BYTES: u64 = 1 << 30;
/// The `huge` body is sent in pieces of this size, all slices of one static buffer.
const HUGE_PIECE: usize = 64 << 10;
static FILL: [u8; HUGE_PIECE] = [b'x'; HUGE_PIECE];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    None,
    Http500,
    RateLimited,
    Overloaded,
    Reset,
    NoAnswer,
    SlowHeaders,
    Malformed,
    Drop,
    ErrorEvent,
    Truncated,
    Stall,
    Huge,
    Endless,
    NoStartEvent,
}

const MARKERS: &[(&str, Fault)] = &[
    ("__sim_fault:http500__", Fault::Http500),
    ("__sim_fault:rate_limited__", Fault::RateLimited),
    ("__sim_fault:overloaded__", Fault::Overloaded),
    ("__sim_fault:reset__", Fault::Reset),
    ("__sim_fault:no_answer__", Fault::NoAnswer),
    ("__sim_fault:slow_headers__", Fault::SlowHeaders),
    ("__sim_fault:malformed__", Fault::Malformed),
    ("__sim_fault:drop__", Fault::Drop),
    ("__sim_fault:error_event__", Fault::ErrorEvent),
    ("__sim_fault:truncated__", Fault::Truncated),
    ("__sim_fault:stall__", Fault::Stall),
    ("__sim_fault:huge__", Fault::Huge),
    ("__sim_fault:endless__", Fault::Endless),
    ("__sim_fault:no_start_event__", Fault::NoStartEvent),
];

impl Fault {
    /// The fault a prompt asks for (the first marker in [`MARKERS`] order when it has several).
    pub fn of(prompt: &str) -> Fault {
        if !prompt.contains("__sim_fault:") {
            return Fault::None;
        }
        MARKERS
            .iter()
            .find(|(marker, _)| prompt.contains(marker))
            .map_or(Fault::None, |&(_, fault)| fault)
    }
}

/// Marks a response that must not be sent: the connection is reset instead.
#[derive(Clone, Copy, Debug)]
pub struct ResetConnection;

/// Response bodies of the faults that are not a stream being generated.
pub enum FaultBody {
    /// `head`, then `left` bytes of filler.
    Huge { head: Option<Bytes>, left: u64 },
    /// `first`, then nothing, ever.
    Stall { first: Option<Bytes> },
    /// Declares `declared` bytes, sends `bytes` (fewer) and ends.
    Short { declared: u64, bytes: Option<Bytes> },
}

impl FaultBody {
    pub fn poll_frame(&mut self) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self {
            FaultBody::Huge { head, left } => {
                if let Some(head) = head.take() {
                    return Poll::Ready(Some(Ok(Frame::data(head))));
                }
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let n = (*left).min(HUGE_PIECE as u64) as usize;
                *left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILL[..n])))))
            }
            // No waker is kept: nothing will ever wake this body, as intended.
            FaultBody::Stall { first } => match first.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => Poll::Pending,
            },
            FaultBody::Short { bytes, .. } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    pub fn is_end_stream(&self) -> bool {
        match self {
            FaultBody::Huge { head, left } => head.is_none() && *left == 0,
            FaultBody::Stall { .. } => false,
            FaultBody::Short { bytes, .. } => bytes.is_none(),
        }
    }

    pub fn size_hint(&self) -> SizeHint {
        match self {
            FaultBody::Short { declared, .. } => SizeHint::with_exact(*declared),
            FaultBody::Huge { .. } | FaultBody::Stall { .. } => SizeHint::default(),
        }
    }
}

/// A server connection that can end with a reset: when `reset` is set, dropping it sends a TCP
/// RST (zero linger) instead of the orderly FIN, and an orderly shutdown is skipped.
pub struct ResettableStream {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

/// The simulator's reads need no arrival stamps (`--send-log` times writes).
impl llmb_engine::transport::rx_stamp::ReadArrival for ResettableStream {}

impl ResettableStream {
    pub fn new(stream: TcpStream) -> (Self, Arc<AtomicBool>) {
        let reset = Arc::new(AtomicBool::new(false));
        (
            Self {
                stream,
                reset: reset.clone(),
            },
            reset,
        )
    }
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Relaxed) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.reset.load(Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_marker_is_recognised() {
        for &(marker, fault) in MARKERS {
            assert_eq!(
                Fault::of(&format!("a prompt {marker} with a marker")),
                fault
            );
        }
        assert_eq!(Fault::of("no marker"), Fault::None);
        assert_eq!(Fault::of("__sim_fault:unknown__"), Fault::None);
    }
}

/// Every fault on the wire, through a running simulator.
#[cfg(test)]
mod wire_tests {
    use std::io;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use crate::testutil::*;

    #[tokio::test]
    async fn faults_on_demand() {
        let sim = sim(fast()).await;
        let ask = |fault: &str| {
            format!(
                r#"{{"prompt":"x __sim_fault:{fault}__","max_tokens":4,"ignore_eos":true,"stream":true}}"#
            )
        };
        let r = post(&sim, "/v1/completions", &ask("http500")).await;
        assert_eq!(r.status, 500);
        assert_eq!(
            r.body,
            r#"{"error":{"message":"simulated internal error","type":"InternalServerError","param":null,"code":500}}"#
        );

        let r = post(&sim, "/v1/completions", &ask("malformed")).await;
        assert!(r.complete);
        assert_eq!(r.chunks.len(), 6, "{:?}", r.chunks);
        assert_eq!(r.chunks[2], "data: {\"choices\":[{\"text\": BROKEN\n\n");
        assert_eq!(
            r.chunks
                .iter()
                .filter(|c| c.contains("\"text\":\" "))
                .count(),
            4
        );
        assert_eq!(r.chunks[5], "data: [DONE]\n\n");

        let r = post(&sim, "/v1/completions", &ask("error_event")).await;
        assert!(r.complete);
        assert_eq!(r.chunks.len(), 3, "{:?}", r.chunks);
        assert!(r.chunks[0].contains("\"text\":\" "));
        assert_eq!(
            r.chunks[1],
            "data: {\"error\":{\"message\":\"simulated in-stream error\",\"type\":\"InternalServerError\",\"param\":null,\"code\":500}}\n\n"
        );
        assert_eq!(r.chunks[2], "data: [DONE]\n\n");

        let r = post(&sim, "/v1/completions", &ask("drop")).await;
        assert_eq!(r.status, 200);
        assert!(!r.complete, "{:?}", r.chunks);
        assert_eq!(r.chunks.len(), 2, "{:?}", r.chunks);
        assert!(!r.body.contains("[DONE]"));

        let r = post(
            &sim,
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"__sim_fault:http500__"}]}"#,
        )
        .await;
        assert_eq!(r.status, 500);
        wait_for_idle(&sim.state).await;
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn fault_matrix_modes_on_the_wire() {
        let sim = sim(fast()).await;
        let ask = |fault: &str, stream: bool| {
            format!(
                r#"{{"prompt":"x __sim_fault:{fault}__","max_tokens":4,"ignore_eos":true,"stream":{stream}}}"#
            )
        };
        let r = post(&sim, "/v1/completions", &ask("rate_limited", true)).await;
        assert_eq!(r.status, 429);
        assert!(r.head.contains("retry-after: 1"), "{}", r.head);
        let r = post(&sim, "/v1/completions", &ask("overloaded", false)).await;
        assert_eq!(r.status, 503);
        assert!(r.head.contains("retry-after: 2"), "{}", r.head);

        // Reset: the request is read, then the connection is reset without a byte of answer.
        let mut s = TcpStream::connect(sim.addr()).await.unwrap();
        let body = ask("reset", true);
        s.write_all(raw_request("POST", "/v1/completions", "", &body).as_bytes())
            .await
            .unwrap();
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
            .await
            .expect("the reset comes at once");
        assert!(raw.is_empty(), "{:?}", String::from_utf8_lossy(&raw));
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset)
        );

        // Truncated: two tokens, half an event, then a proper end of body.
        let r = post(&sim, "/v1/completions", &ask("truncated", true)).await;
        assert!(r.complete, "{:?}", r.chunks);
        assert_eq!(r.chunks.len(), 3, "{:?}", r.chunks);
        assert!(!r.chunks[2].ends_with("\n\n") && r.chunks[2].starts_with("data: {"));
        // Without streaming: a body shorter than its Content-Length.
        let r = post(&sim, "/v1/completions", &ask("truncated", false)).await;
        let declared: usize = r
            .head
            .split("content-length: ")
            .nth(1)
            .and_then(|v| v.lines().next())
            .and_then(|v| v.trim().parse().ok())
            .expect("a content-length");
        assert_eq!(r.body.len(), declared / 2, "{}", r.body);

        // Silent ones: nothing (more) arrives, the connection stays open.
        let silent = |fault: &'static str, stream: bool, expect: &'static str| {
            let addr = sim.addr();
            let body = ask(fault, stream);
            async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(raw_request("POST", "/v1/completions", "", &body).as_bytes())
                    .await
                    .unwrap();
                if !expect.is_empty() {
                    read_until(&mut s, expect).await;
                }
                let mut buf = vec![0u8; 64 << 10];
                // Drain what was sent with the expected part, then expect silence.
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await
                {
                    assert!(n > 0, "{fault}: the connection closed");
                }
            }
        };
        silent("no_answer", true, "").await;
        silent("endless", false, "").await;
        silent("stall", true, "\"text\":\" ").await;
        silent("stall", false, "{\"id\"").await;

        // Endless: far more tokens than asked for.
        let mut s = TcpStream::connect(sim.addr()).await.unwrap();
        s.write_all(raw_request("POST", "/v1/completions", "", &ask("endless", true)).as_bytes())
            .await
            .unwrap();
        let mut seen = String::new();
        while seen.matches("\"text\":\" ").count() < 40 {
            seen = read_until(&mut s, "\n\n").await + &seen;
        }
        assert!(!seen.contains("[DONE]") && !seen.contains("\"length\""));
        drop(s);

        // Huge: megabytes of one JSON string, as fast as they are read.
        for stream in [true, false] {
            let mut s = TcpStream::connect(sim.addr()).await.unwrap();
            s.write_all(
                raw_request("POST", "/v1/completions", "", &ask("huge", stream)).as_bytes(),
            )
            .await
            .unwrap();
            let mut got = 0;
            let mut buf = vec![0u8; 64 << 10];
            while got < 8 << 20 {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got += n;
            }
        }
        sim.shutdown().await;
    }
}
