//! `llmb sim --send-log FILE`: when each piece of each response was really written, as a
//! reference to check a client's measured TTFT and ITL against (`llmb selfbench` reads it).
//!
//! hyper writes a response in its connection task, after the body handed it a frame, so the body
//! cannot know when its bytes reached the socket. [`LoggedIo`] sits between the socket and hyper
//! and, after every write that returned, follows the HTTP/1.1 response framing over the bytes
//! written (`ResponseFraming`, the same code the client's reads use) and notes the body offset
//! reached and the time (`CLOCK_MONOTONIC`, right after the write returned). The body side
//! ([`PieceLog`], given to a streamed [`Generation`](crate::stream::Generation)) registers each
//! piece it yields with its kind and length, hence its end offset; a piece's time is that of the
//! first write that reached its end. HTTP/1.1 serves one request at a time on a connection, so a
//! connection's current response belongs to its current request ([`ConnSendLog`]). HTTP/2
//! connections are not logged.
//!
//! The lines go over a channel to a thread of their own that writes them through a buffer and
//! flushes at least every [`FLUSH_EVERY`] and on [`SendLog::close`], so the file costs the
//! connection tasks a clock read, an uncontended lock and a channel send per write, never I/O.
//!
//! The file is CSV with the header [`HEADER`] and one line per event:
//!
//! - `request_id`: the request's `x-request-id` header, or `sim-<n>` (n = 1, 2, … per simulator)
//!   when it has none, or one with a comma, a double quote, CR or LF, or over 128 bytes.
//! - `kind`: `request` (the handler got the request; when it started), `head` (the response head
//!   was written), `token` (an event carrying one generated token was written whole), `chunk`
//!   (any other piece of a streamed body: chat's role event, usage, `[DONE]`, …), `end` (the
//!   whole body was written).
//! - `seq`: a token's index (0, 1, …), a chunk's index among the response's chunks, else 0.
//! - `mono_ns`: `CLOCK_MONOTONIC` in ns; for `request` when the handler started, else right
//!   after the write that completed the piece returned.
//! - `body_bytes`: the body offset at the end of the piece (chunked framing not counted); 0 for
//!   `request` and `head`, the body's length for `end`.
//!
//! A piece never written whole (the client left) has no line, and then neither has `end`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::{HeaderMap, Version};
use llmb_engine::clock::monotonic_ns;
use llmb_engine::transport::wire::{ObservedIo, ResponseFraming, WireObserver};

/// The first line of the file.
pub(crate) const HEADER: &str = "request_id,kind,seq,mono_ns,body_bytes\n";
/// Lines reach the file at most this late (and at once on close).
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Longer `x-request-id` values are replaced by `sim-<n>`.
const MAX_ID_BYTES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Head,
    Token,
    Chunk,
    End,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Head => "head",
            Kind::Token => "token",
            Kind::Chunk => "chunk",
            Kind::End => "end",
        }
    }
}

/// One line of the file, formatted by the writer thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) id: Arc<str>,
    pub(crate) kind: Kind,
    pub(crate) seq: u64,
    pub(crate) mono_ns: u64,
    pub(crate) body_bytes: u64,
}

pub(crate) enum Msg {
    Line(Line),
    Close,
}

/// The simulator's send log: the channel to its writer thread, and the `sim-<n>` counter.
pub(crate) struct SendLog {
    tx: mpsc::Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    next_id: AtomicU64,
}

impl SendLog {
    /// Creates (truncates) `path`, writes the header and starts the writer thread.
    pub(crate) fn create(path: &Path) -> anyhow::Result<Arc<Self>> {
        let file = File::create(path)
            .with_context(|| format!("cannot create the send log {}", path.display()))?;
        let (tx, rx) = mpsc::channel();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("llmb-sim-send-log".into())
            .spawn(move || {
                if let Err(e) = write_lines(BufWriter::new(file), &rx) {
                    eprintln!("llmb sim: cannot write the send log {shown}: {e}");
                }
            })
            .context("cannot start the send log's thread")?;
        Ok(Arc::new(Self {
            tx,
            thread: Mutex::new(Some(thread)),
            next_id: AtomicU64::new(0),
        }))
    }

    /// A log whose lines arrive on the returned receiver instead of a file.
    #[cfg(test)]
    pub(crate) fn capture() -> (Arc<Self>, mpsc::Receiver<Msg>) {
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Self {
            tx,
            thread: Mutex::new(None),
            next_id: AtomicU64::new(0),
        });
        (log, rx)
    }

    /// Writes out every line sent so far, flushes and stops the writer thread; later lines are
    /// dropped. Blocks until the file is written.
    pub(crate) fn close(&self) {
        let _ = self.tx.send(Msg::Close);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    fn send(&self, line: Line) {
        // After `close` the receiver is gone and the line is dropped, as documented.
        let _ = self.tx.send(Msg::Line(line));
    }

    /// The request's `x-request-id` when it can go in the file as is, else `sim-<n>`.
    fn request_id(&self, headers: &HeaderMap) -> Arc<str> {
        let given = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|id| usable_id(id));
        match given {
            Some(id) => Arc::from(id),
            None => Arc::from(format!("sim-{}", self.next_id.fetch_add(1, Relaxed) + 1)),
        }
    }
}

fn usable_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && !id.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
}

/// The writer thread: lines as they come, flushed at least every [`FLUSH_EVERY`] and at the end.
fn write_lines(mut out: BufWriter<File>, rx: &mpsc::Receiver<Msg>) -> io::Result<()> {
    out.write_all(HEADER.as_bytes())?;
    out.flush()?;
    // When the oldest line not yet flushed was written into the buffer.
    let mut unflushed: Option<Instant> = None;
    loop {
        let msg = match unflushed {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(since) => rx.recv_timeout(FLUSH_EVERY.saturating_sub(since.elapsed())),
        };
        match msg {
            Ok(Msg::Line(l)) => {
                writeln!(
                    out,
                    "{},{},{},{},{}",
                    l.id,
                    l.kind.name(),
                    l.seq,
                    l.mono_ns,
                    l.body_bytes
                )?;
                unflushed.get_or_insert_with(Instant::now);
            }
            Ok(Msg::Close) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if unflushed.is_some_and(|since| since.elapsed() >= FLUSH_EVERY) {
            out.flush()?;
            unflushed = None;
        }
    }
    out.flush()
}

/// A body piece registered by the response, waiting for the write that completes it.
#[derive(Debug)]
struct Piece {
    kind: Kind,
    seq: u64,
    /// Body offset at the piece's end.
    end: u64,
}

/// The connection's current request and response.
#[derive(Debug)]
struct Exchange {
    number: u64,
    id: Arc<str>,
    pieces: VecDeque<Piece>,
    /// Body bytes of the pieces registered so far.
    registered: u64,
    tokens: u64,
    chunks: u64,
    head_logged: bool,
    ended: bool,
}

#[derive(Debug, Default)]
struct Wire {
    framing: ResponseFraming,
    /// The last operation was a write: the next read begins the next request.
    writing: bool,
    /// The connection speaks HTTP/2: not followed.
    http2: bool,
    exchanges: u64,
    current: Option<Exchange>,
}

/// One connection's half of the send log, shared by its I/O ([`LoggedIo`]) and its requests.
pub(crate) struct ConnSendLog {
    log: Arc<SendLog>,
    wire: Mutex<Wire>,
}

impl ConnSendLog {
    pub(crate) fn new(log: &Arc<SendLog>) -> Arc<Self> {
        Arc::new(Self {
            log: log.clone(),
            wire: Mutex::new(Wire::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Wire> {
        self.wire.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request reached the handler at `at` (`CLOCK_MONOTONIC` ns): logs its `request` line and
    /// makes it the connection's current exchange. `None` over HTTP/2, which is not logged.
    pub(crate) fn begin(
        self: &Arc<Self>,
        at: u64,
        version: Version,
        headers: &HeaderMap,
    ) -> Option<PieceLog> {
        let mut wire = self.lock();
        if version == Version::HTTP_2 || wire.http2 {
            wire.http2 = true;
            return None;
        }
        let id = self.log.request_id(headers);
        wire.exchanges += 1;
        let number = wire.exchanges;
        wire.current = Some(Exchange {
            number,
            id: id.clone(),
            pieces: VecDeque::new(),
            registered: 0,
            tokens: 0,
            chunks: 0,
            head_logged: false,
            ended: false,
        });
        drop(wire);
        self.log.send(Line {
            id,
            kind: Kind::Request,
            seq: 0,
            mono_ns: at,
            body_bytes: 0,
        });
        Some(PieceLog {
            conn: self.clone(),
            exchange: number,
        })
    }

    /// Bytes were read: the first read after writes is the next request.
    fn read_request_bytes(&self) {
        let mut wire = self.lock();
        if wire.writing {
            wire.writing = false;
            wire.framing.reset();
        }
    }

    /// A write returned at `at`; `feed` gives the framing the bytes it wrote.
    fn wrote_at(&self, at: u64, feed: impl FnOnce(&mut ResponseFraming)) {
        let mut guard = self.lock();
        let wire = &mut *guard;
        if wire.http2 {
            return;
        }
        wire.writing = true;
        feed(&mut wire.framing);
        let framing = &wire.framing;
        let Some(x) = wire.current.as_mut() else {
            return;
        };
        if framing.lost() || !framing.head_complete() {
            return;
        }
        let line = |kind, seq, body_bytes| Line {
            id: x.id.clone(),
            kind,
            seq,
            mono_ns: at,
            body_bytes,
        };
        let mut lines = Vec::new();
        if !x.head_logged {
            x.head_logged = true;
            lines.push(line(Kind::Head, 0, 0));
        }
        let body = framing.body_bytes();
        while let Some(piece) = x.pieces.front()
            && piece.end <= body
        {
            lines.push(line(piece.kind, piece.seq, piece.end));
            x.pieces.pop_front();
        }
        if framing.done() && !x.ended {
            x.ended = true;
            lines.push(line(Kind::End, 0, body));
        }
        drop(guard);
        for l in lines {
            self.log.send(l);
        }
    }
}

/// The body side of one exchange: registers the pieces a streamed response yields.
pub(crate) struct PieceLog {
    conn: Arc<ConnSendLog>,
    exchange: u64,
}

impl PieceLog {
    /// The body yields a piece of `len` bytes: one event carrying a token, or another chunk.
    pub(crate) fn piece(&self, token: bool, len: usize) {
        if len == 0 {
            return;
        }
        let mut wire = self.conn.lock();
        let Some(x) = wire.current.as_mut().filter(|x| x.number == self.exchange) else {
            return;
        };
        let counter = if token { &mut x.tokens } else { &mut x.chunks };
        let seq = *counter;
        *counter += 1;
        x.registered += len as u64;
        let end = x.registered;
        x.pieces.push_back(Piece {
            kind: if token { Kind::Token } else { Kind::Chunk },
            seq,
            end,
        });
    }
}

/// The connection's I/O reports here (through the engine's `ObservedIo`, as the client's
/// stamps do).
impl WireObserver for ConnSendLog {
    fn read(&self, _bytes: &[u8], _arrival: Option<llmb_engine::transport::rx_stamp::Arrival>) {
        self.read_request_bytes();
    }

    fn wrote(&self, bufs: &[io::IoSlice<'_>], n: usize) {
        self.wrote_at(monotonic_ns(), |f| f.feed_written(bufs, n));
    }
}

/// A connection's I/O that reports every read and write to its [`ConnSendLog`].
pub(crate) type LoggedIo<T> = ObservedIo<T, Arc<ConnSendLog>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mpsc::Receiver<Msg>) -> Vec<(String, Kind, u64, u64, u64)> {
        rx.try_iter()
            .filter_map(|m| match m {
                Msg::Line(l) => Some((l.id.to_string(), l.kind, l.seq, l.mono_ns, l.body_bytes)),
                Msg::Close => None,
            })
            .collect()
    }

    #[test]
    fn pieces_map_to_the_write_that_completed_them() {
        let (log, rx) = SendLog::capture();
        let conn = ConnSendLog::new(&log);
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "r-7".parse().unwrap());
        conn.read_request_bytes();
        let pieces = conn.begin(1, Version::HTTP_11, &headers).unwrap();
        // The role chunk (5 bytes), two tokens (3 and 4 bytes), then [DONE] (2 bytes).
        pieces.piece(false, 5);
        pieces.piece(true, 3);
        pieces.piece(true, 4);
        pieces.piece(false, 0);
        pieces.piece(false, 2);
        let writes: [&[u8]; 7] = [
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
            b"cde\r\n",
            b"3\r\nxyz\r\n4\r\nw",
            b"xy",
            b"z\r\n2\r\nDN\r\n0\r",
            b"\n",
            b"\r\n",
        ];
        for (t, w) in writes.iter().enumerate() {
            conn.wrote_at(10 + t as u64, |f| f.feed(w));
        }
        let id = || "r-7".to_string();
        assert_eq!(
            drain(&rx),
            vec![
                (id(), Kind::Request, 0, 1, 0),
                (id(), Kind::Head, 0, 10, 0),
                (id(), Kind::Chunk, 0, 11, 5),
                (id(), Kind::Token, 0, 12, 8),
                (id(), Kind::Token, 1, 14, 12),
                (id(), Kind::Chunk, 1, 14, 14),
                (id(), Kind::End, 0, 16, 14),
            ]
        );

        // The next request on the connection: a vectored write cut short, no id of its own.
        conn.read_request_bytes();
        let pieces = conn.begin(20, Version::HTTP_11, &HeaderMap::new()).unwrap();
        pieces.piece(true, 4);
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n";
        let slices = [io::IoSlice::new(head), io::IoSlice::new(b"abcd")];
        conn.wrote_at(21, |f| f.feed_written(&slices, head.len() + 3));
        conn.wrote_at(22, |f| f.feed(b"d"));
        let id = || "sim-1".to_string();
        assert_eq!(
            drain(&rx),
            vec![
                (id(), Kind::Request, 0, 20, 0),
                (id(), Kind::Head, 0, 21, 0),
                (id(), Kind::Token, 0, 22, 4),
                (id(), Kind::End, 0, 22, 4),
            ]
        );
    }

    #[test]
    fn unusable_ids_and_http2_are_replaced_or_skipped() {
        let (log, rx) = SendLog::capture();
        let conn = ConnSendLog::new(&log);
        for bad in ["a,b", "a\"b", &"x".repeat(129)] {
            let mut headers = HeaderMap::new();
            headers.insert("x-request-id", bad.parse().unwrap());
            conn.begin(0, Version::HTTP_11, &headers).unwrap();
        }
        let ids: Vec<String> = drain(&rx).into_iter().map(|l| l.0).collect();
        assert_eq!(ids, ["sim-1", "sim-2", "sim-3"]);
        assert!(usable_id(&"x".repeat(128)));
        let h2 = ConnSendLog::new(&log);
        assert!(h2.begin(0, Version::HTTP_2, &HeaderMap::new()).is_none());
        h2.wrote_at(1, |f| f.feed(b"\0\0\0\x04\0\0\0\0\0"));
        assert!(drain(&rx).is_empty());
    }

    #[test]
    fn the_file_has_the_header_and_every_line_after_close() {
        let dir = std::env::temp_dir().join(format!("llmb-send-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("send.csv");
        let log = SendLog::create(&path).unwrap();
        let conn = ConnSendLog::new(&log);
        conn.begin(42, Version::HTTP_11, &HeaderMap::new()).unwrap();
        log.close();
        log.send(Line {
            id: Arc::from("late"),
            kind: Kind::End,
            seq: 0,
            mono_ns: 0,
            body_bytes: 0,
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{HEADER}sim-1,request,0,42,0\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
