//! The bytes on the connection itself: [`ObservedIo`] sits between the socket (or TLS stream) and
//! hyper, and stamps every successful read and write with the time it returned, so a streamed
//! frame is timed by the read that completed it, not by when hyper's connection task got round
//! to handing it over through its body channel.
//!
//! A read's time is the kernel's receive stamp of the last packet the read copied (Linux,
//! `SO_TIMESTAMPNS`, see `rx_stamp`): when the bytes reached this machine, not when the client
//! got round to reading them, so a busy client (a burst of first tokens over 1,000 streams) does
//! not add its own backlog to TTFT. It excludes the wait in the socket buffer, the read itself,
//! TLS decryption, hyper's decoding, the hand-over to the request's task, framing and the
//! adapter. Where the kernel gives no stamp it is the time the read returned.
//!
//! What it cannot undo: a read later than the gap between two chunks takes both, under the
//! stamp of the last packet (and the kernel coalesces packets queued on a socket, keeping the
//! newer stamp), so the earlier chunk is stamped late by up to the read's wait. The
//! [`WireLog`] keeps the longest wait of each response for its record (`read_wait_max_ns`).
//!
//! To tell which read completed which body bytes, [`ResponseFraming`] follows the HTTP/1.1
//! response framing (head, `Content-Length` or chunked encoding) over the raw bytes, the same way
//! for the client's reads and for the simulator's writes (`llmb sim --send-log`).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::rx_stamp::{Arrival, ReadArrival};

/// Largest response head followed; beyond it the framing is given up (stamps fall back to the
/// time the frame reached the request).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Stamps kept per connection when nobody takes them (a body read by someone else): bounded so a
/// huge non-streaming body cannot grow the log without end.
const MAX_PENDING_STAMPS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize { size: u64, ext: bool },
    ChunkData(u64),
    ChunkEnd,
    Trailers { line: usize },
    UntilClose,
    Done,
    Lost,
}

/// Follows one HTTP/1.1 response after another over a connection's raw bytes and counts the
/// body (payload) bytes seen so far in the current one, so a body offset can be mapped to the
/// read or write that carried it.
#[derive(Debug)]
pub struct ResponseFraming {
    state: State,
    head: Vec<u8>,
    body_bytes: u64,
    head_complete: bool,
}

impl Default for ResponseFraming {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseFraming {
    pub fn new() -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            body_bytes: 0,
            head_complete: false,
        }
    }

    /// The next bytes begin a new response (HTTP/1.1 without pipelining: called when the next
    /// request is written).
    pub fn reset(&mut self) {
        self.state = State::Head;
        self.head.clear();
        self.body_bytes = 0;
        self.head_complete = false;
    }

    /// Body bytes of the current response seen so far (chunk framing not counted).
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// The current response's head (status line and headers) has been seen whole.
    pub fn head_complete(&self) -> bool {
        self.head_complete
    }

    /// The bytes did not look like HTTP/1.1 framing; offsets are no longer known.
    pub fn lost(&self) -> bool {
        self.state == State::Lost
    }

    /// The current response's body has ended.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Follows what a write that returned `n` wrote: the first `n` bytes across `bufs`.
    pub fn feed_written(&mut self, bufs: &[io::IoSlice<'_>], n: usize) {
        let mut left = n;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(buf.len());
            self.feed(&buf[..take]);
            left -= take;
        }
    }

    /// Follows `bytes`, the next bytes of the connection.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = match self.state {
                State::Done => {
                    // Bytes after the end: a new response without a new request (a 1xx is
                    // handled in `end_head`); follow it from its head.
                    self.reset();
                    0
                }
                State::Lost => return,
                State::UntilClose => {
                    self.body_bytes += bytes.len() as u64;
                    bytes.len()
                }
                State::Head => self.feed_head(bytes),
                State::Length(left) => {
                    let n = left.min(bytes.len() as u64);
                    self.body_bytes += n;
                    self.state = if n == left {
                        State::Done
                    } else {
                        State::Length(left - n)
                    };
                    n as usize
                }
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    self.body_bytes += n;
                    self.state = if n == left {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left - n)
                    };
                    n as usize
                }
                State::ChunkSize { .. } | State::ChunkEnd | State::Trailers { .. } => {
                    self.step(bytes[0]);
                    1
                }
            };
            bytes = &bytes[used..];
        }
    }

    /// One byte of a chunk-size line, the CRLF after chunk data, or the trailer section.
    fn step(&mut self, b: u8) {
        self.state = match self.state {
            State::ChunkSize { size, ext } => match b {
                b'\n' if size == 0 => State::Trailers { line: 0 },
                b'\n' => State::ChunkData(size),
                b'\r' => State::ChunkSize { size, ext },
                _ if ext => State::ChunkSize { size, ext },
                b';' | b' ' | b'\t' => State::ChunkSize { size, ext: true },
                _ => match (b as char).to_digit(16) {
                    Some(d) if size >> 59 == 0 => State::ChunkSize {
                        size: size * 16 + d as u64,
                        ext,
                    },
                    _ => State::Lost,
                },
            },
            State::ChunkEnd => match b {
                b'\n' => State::ChunkSize {
                    size: 0,
                    ext: false,
                },
                b'\r' => State::ChunkEnd,
                _ => State::Lost,
            },
            State::Trailers { line } => match b {
                b'\n' if line == 0 => State::Done,
                b'\n' => State::Trailers { line: 0 },
                b'\r' => State::Trailers { line },
                _ => State::Trailers { line: line + 1 },
            },
            other => other,
        };
    }

    /// Collects head bytes up to the blank line; returns how many of `bytes` it used.
    fn feed_head(&mut self, bytes: &[u8]) -> usize {
        let before = self.head.len();
        // Where the blank line ends, looking back up to 3 bytes already held.
        let look_from = before.saturating_sub(3);
        self.head.extend_from_slice(bytes);
        let end = self.head[look_from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| look_from + i + 4)
            .or_else(|| {
                self.head[before.saturating_sub(1)..]
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .map(|i| before.saturating_sub(1) + i + 2)
            });
        match end {
            Some(end) => {
                self.head.truncate(end);
                self.end_head();
                end - before
            }
            None if self.head.len() > MAX_HEAD_BYTES => {
                self.state = State::Lost;
                bytes.len()
            }
            None => bytes.len(),
        }
    }

    /// Reads the finished head: what framing the body has.
    fn end_head(&mut self) {
        let mut headers = [httparse::EMPTY_HEADER; 96];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(_)) = response.parse(&self.head) else {
            self.state = State::Lost;
            return;
        };
        let code = response.code.unwrap_or(0);
        let mut chunked = false;
        let mut length = None;
        for h in response.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            }
        }
        self.head.clear();
        if (100..200).contains(&code) && code != 101 {
            self.state = State::Head;
            return;
        }
        self.head_complete = true;
        self.state = if code == 204 || code == 304 {
            State::Done
        } else if chunked {
            State::ChunkSize {
                size: 0,
                ext: false,
            }
        } else {
            match length {
                Some(0) => State::Done,
                Some(n) => State::Length(n),
                None => State::UntilClose,
            }
        };
    }
}

/// One read that advanced the response body: when it returned and the body offset it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStamp {
    pub at: Instant,
    /// Body bytes of the response received up to and including this read.
    pub body_end: u64,
}

/// What the connection saw of the current exchange (one request and its response).
#[derive(Debug, Default)]
struct Exchange {
    framing: ResponseFraming,
    /// The last operation was a write: the next read begins the response.
    writing: bool,
    /// When the last write of the request returned.
    request_written: Option<Instant>,
    /// The first read of the response.
    first_byte: Option<Instant>,
    /// The latest read of the response.
    last_read: Option<Instant>,
    /// The longest any read of the response waited in the socket (kernel stamps only).
    longest_wait: Option<Duration>,
    stamps: VecDeque<ReadStamp>,
}

/// The stamps of one connection, shared by its I/O (which writes them) and the request using
/// the connection (which takes them).
#[derive(Debug, Default)]
pub struct WireLog {
    current: Mutex<Exchange>,
}

/// The wire times of one request, for its record.
#[derive(Debug, Clone, Copy, Default)]
pub struct WireTimes {
    pub request_written: Option<Instant>,
    pub first_byte: Option<Instant>,
    pub last_read: Option<Instant>,
    /// The longest time a read's bytes waited in the socket before the read (from the kernel's
    /// receive stamp); `None` where reads carry no kernel stamp.
    pub longest_read_wait: Option<Duration>,
}

impl WireLog {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Exchange> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wrote_at(&self, at: Instant) {
        let mut x = self.lock();
        if !x.writing {
            x.writing = true;
            x.framing.reset();
            x.stamps.clear();
            x.first_byte = None;
            x.last_read = None;
            x.longest_wait = None;
        }
        x.request_written = Some(at);
    }

    fn read_at(&self, at: Instant, waited: Option<Duration>, bytes: &[u8]) {
        let mut x = self.lock();
        x.writing = false;
        if let Some(w) = waited {
            x.longest_wait = Some(x.longest_wait.map_or(w, |l| l.max(w)));
        }
        x.first_byte.get_or_insert(at);
        x.last_read = Some(at);
        let before = x.framing.body_bytes();
        x.framing.feed(bytes);
        let body_end = x.framing.body_bytes();
        if body_end > before && !x.framing.lost() {
            if x.stamps.len() >= MAX_PENDING_STAMPS {
                x.stamps.pop_front();
            }
            x.stamps.push_back(ReadStamp { at, body_end });
        }
    }

    /// The request's write and first-read times so far.
    pub fn times(&self) -> WireTimes {
        let x = self.lock();
        WireTimes {
            request_written: x.request_written,
            first_byte: x.first_byte,
            last_read: x.last_read,
            longest_read_wait: x.longest_wait,
        }
    }

    /// When the read that completed body byte `body_end` (exclusive end offset) returned,
    /// dropping the stamps of earlier reads. `None` when the framing was not followed (then the
    /// caller's own clock is the best there is).
    pub fn arrival_of(&self, body_end: u64) -> Option<Instant> {
        let mut x = self.lock();
        if x.framing.lost() {
            return None;
        }
        while let Some(s) = x.stamps.front().copied() {
            if s.body_end >= body_end {
                return Some(s.at);
            }
            x.stamps.pop_front();
        }
        None
    }
}

impl WireObserver for WireLog {
    fn read(&self, bytes: &[u8], arrival: Option<Arrival>) {
        match arrival {
            Some(a) => self.read_at(a.at, Some(a.waited), bytes),
            None => self.read_at(Instant::now(), None, bytes),
        }
    }

    fn wrote(&self, _bufs: &[io::IoSlice<'_>], _n: usize) {
        self.wrote_at(Instant::now());
    }
}

/// Where a request's caller can see the connection its request goes out on, as soon as the pool
/// has chosen it (before the write), so a timer running beside the request (`--cancel-after`)
/// learns when the write ended. Put in the request's extensions; the pool fills it per attempt.
#[derive(Debug, Clone, Default)]
pub struct WireWatch(Arc<Mutex<Option<Arc<WireLog>>>>);

impl WireWatch {
    /// The connection of the latest attempt.
    pub fn set(&self, wire: Arc<WireLog>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(wire);
    }

    /// When the request's last byte was written, if it was written after `not_before` (an
    /// earlier exchange on a reused connection left its own stamp).
    pub fn written_after(&self, not_before: Instant) -> Option<Instant> {
        let wire = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        wire.times().request_written.filter(|&t| t >= not_before)
    }
}

/// What a connection's I/O reports to whoever follows it: the client's [`WireLog`], the
/// simulator's send log (`llmb sim --send-log`).
pub trait WireObserver {
    /// `bytes` were read; `arrival` is when they reached the machine, if the socket knows.
    fn read(&self, bytes: &[u8], arrival: Option<Arrival>);
    /// The first `n` bytes across `bufs` were written (a plain write is one slice).
    fn wrote(&self, bufs: &[io::IoSlice<'_>], n: usize);
}

impl<O: WireObserver + ?Sized> WireObserver for Arc<O> {
    fn read(&self, bytes: &[u8], arrival: Option<Arrival>) {
        (**self).read(bytes, arrival)
    }

    fn wrote(&self, bufs: &[io::IoSlice<'_>], n: usize) {
        (**self).wrote(bufs, n)
    }
}

/// A connection's I/O that reports every read and write that moved bytes to an observer.
pub struct ObservedIo<T, O> {
    inner: T,
    observer: O,
}

impl<T, O> ObservedIo<T, O> {
    pub fn new(inner: T, observer: O) -> Self {
        Self { inner, observer }
    }
}

impl<T: AsyncRead + ReadArrival + Unpin, O: WireObserver + Unpin> AsyncRead for ObservedIo<T, O> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let got = &buf.filled()[before..];
            if !got.is_empty() {
                this.observer.read(got, this.inner.take_arrival());
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin, O: WireObserver + Unpin> AsyncWrite for ObservedIo<T, O> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.observer.wrote(&[io::IoSlice::new(buf)], n);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.observer.wrote(bufs, n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(reads: &[&[u8]]) -> Vec<(u64, bool)> {
        let mut f = ResponseFraming::new();
        reads
            .iter()
            .map(|r| {
                f.feed(r);
                (f.body_bytes(), f.done())
            })
            .collect()
    }

    #[test]
    fn chunked_body_offsets_follow_each_read() {
        let head: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(
            offsets(&[head, b"5\r\nhel", b"lo\r\n3;x=1\r\nabc\r\n", b"0\r\n\r\n"]),
            vec![(0, false), (3, false), (8, false), (8, true)]
        );
        // The same bytes split anywhere give the same end.
        let all = [
            head,
            b"5\r\nhello\r\n3;x=1\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n",
        ]
        .concat();
        for cut in 1..all.len() {
            let got = offsets(&[&all[..cut], &all[cut..]]);
            assert_eq!(got[1], (8, true), "cut at {cut}");
        }
    }

    #[test]
    fn length_bodies_informational_heads_and_reuse() {
        let mut f = ResponseFraming::new();
        f.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab");
        assert_eq!(
            (f.body_bytes(), f.done(), f.head_complete()),
            (2, false, true)
        );
        f.feed(b"cd");
        assert!(f.done());
        f.reset();
        f.feed(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert!(f.done() && f.body_bytes() == 0);
        f.reset();
        f.feed(b"HTTP/1.0 200 OK\r\n\r\nuntil close");
        assert_eq!(f.body_bytes(), 11);
        f.reset();
        f.feed(b"garbage\r\n\r\n");
        assert!(f.lost());
    }

    #[test]
    fn a_frame_maps_to_the_read_that_completed_it() {
        let log = WireLog::new();
        let t = Instant::now();
        let later = |ms| t + std::time::Duration::from_millis(ms);
        let waited = |ms| Some(Duration::from_millis(ms));
        log.wrote_at(later(0));
        log.read_at(
            later(1),
            waited(0),
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        log.read_at(later(2), waited(7), b"4\r\nab");
        log.read_at(later(3), waited(2), b"cd\r\n2\r\nef\r\n");
        let times = log.times();
        assert_eq!(times.first_byte, Some(later(1)));
        assert_eq!(times.longest_read_wait, waited(7));
        assert_eq!(log.arrival_of(4), Some(later(3)));
        assert_eq!(log.arrival_of(6), Some(later(3)));
        assert_eq!(log.arrival_of(7), None);
        // The next request on the connection starts a fresh exchange, its waits too.
        log.wrote_at(later(4));
        assert_eq!(log.times().longest_read_wait, None);
        log.read_at(
            later(5),
            None,
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx",
        );
        assert_eq!(log.arrival_of(1), Some(later(5)));
        assert_eq!(log.times().request_written, Some(later(4)));
        assert_eq!(log.times().longest_read_wait, None);
    }
}
