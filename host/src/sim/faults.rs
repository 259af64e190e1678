//! Faults for tests, all in one place: a marker `__sim_fault:NAME__` anywhere in a prompt makes
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

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::SimBody;

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

    /// The answer of a fault that refuses the request before generating: an error status in the
    /// dialect `error(status, type, message)` writes, or a connection reset. `None` for the
    /// others.
    pub fn refusal(
        self,
        error: impl FnOnce(StatusCode, &str, &str) -> Response<SimBody>,
    ) -> Option<Response<SimBody>> {
        let (status, kind, message, retry_after) = match self {
            Fault::Http500 => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "simulated internal error",
                None,
            ),
            Fault::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "RateLimitError",
                "simulated rate limit",
                Some("1"),
            ),
            Fault::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableError",
                "simulated overload",
                Some("2"),
            ),
            Fault::Reset => {
                let mut response = Response::new(SimBody::full(Bytes::new()));
                response.extensions_mut().insert(ResetConnection);
                return Some(response);
            }
            _ => return None,
        };
        let mut response = error(status, kind, message);
        if let Some(after) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(after));
        }
        Some(response)
    }
}

/// Marks a response that must not be sent: the connection is reset instead.
#[derive(Clone, Copy, Debug)]
pub struct ResetConnection;

/// Waits forever: a request the server took and never answers. The connection's task drops it
/// when the connection closes, or the simulator's shutdown does.
pub async fn never() -> Response<SimBody> {
    std::future::pending().await
}

/// The `huge` fault's response: JSON, or with `stream` one SSE event that never ends.
pub fn huge(stream: bool) -> Response<SimBody> {
    let (content_type, head) = if stream {
        (
            super::SSE_CONTENT_TYPE,
            &b"data: {\"choices\":[{\"index\":0,\"text\":\""[..],
        )
    } else {
        (
            super::JSON_CONTENT_TYPE,
            &b"{\"choices\":[{\"index\":0,\"text\":\""[..],
        )
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, content_type)
        .body(SimBody::Fault(FaultBody::Huge {
            head: Some(Bytes::from_static(head)),
            left: HUGE_BODY_BYTES,
        }))
        .expect("static headers are valid")
}

/// A non-streaming response with a faulty body: `stall` sends the first half of `body` and
/// nothing more; `truncated` declares the length of `body` and ends after its first half.
pub fn broken_whole(fault: Fault, body: String) -> Response<SimBody> {
    let bytes = Bytes::from(body);
    let half = bytes.slice(..bytes.len() / 2);
    let body = if fault == Fault::Truncated {
        FaultBody::Short {
            declared: bytes.len() as u64,
            bytes: Some(half),
        }
    } else {
        FaultBody::Stall { first: Some(half) }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, super::JSON_CONTENT_TYPE)
        .body(SimBody::Fault(body))
        .expect("static headers are valid")
}

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
