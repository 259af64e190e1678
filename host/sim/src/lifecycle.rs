//! Connection lifecycles of real servers, so CI guards what only real servers showed.
//!
//! llama.cpp's `llama-server` answers `Keep-Alive: timeout=5, max=100`, closes a connection that
//! has been idle for 5 s, and closes after its 100th request; other servers close after every
//! response or close idle connections without announcing when. A client that keeps idle
//! connections longer than the server, or never retries a request the server dropped as it
//! closed the connection, fails requests the server would have served. Each behaviour here is
//! one setting, off by default.

use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::{Response, Version};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How the simulator treats connections between requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionPolicy {
    /// Close a connection idle this long, and announce it as `Keep-Alive: timeout=N, max=M`.
    pub keep_alive_timeout: Option<Duration>,
    /// Answer the Mth request of a connection with `Connection: close` and close it.
    pub keep_alive_max: Option<u32>,
    /// `Connection: close` on every response (a server without keep-alive).
    pub close_every_response: bool,
    /// A request arriving on a connection that has been idle longer than this is dropped
    /// unanswered and the connection closed: the race a client meets when it reuses a
    /// connection at the moment the server closes it. Not announced to the client.
    pub drop_stale_after: Option<Duration>,
}

impl ConnectionPolicy {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// One connection's activity, shared by its requests and its idle watch.
pub struct Tracker {
    busy: AtomicUsize,
    served: AtomicU32,
    last_done: Mutex<Instant>,
    changed: Notify,
}

impl Tracker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            busy: AtomicUsize::new(0),
            served: AtomicU32::new(0),
            last_done: Mutex::new(Instant::now()),
            changed: Notify::new(),
        })
    }

    fn idle_for(&self) -> Option<Duration> {
        (self.busy.load(Relaxed) == 0).then(|| {
            self.last_done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
        })
    }

    /// Whether a request arriving now must be dropped (see
    /// [`ConnectionPolicy::drop_stale_after`]).
    pub fn is_stale(&self, policy: &ConnectionPolicy) -> bool {
        let Some(limit) = policy.drop_stale_after else {
            return false;
        };
        self.served.load(Relaxed) > 0 && self.idle_for().is_some_and(|idle| idle > limit)
    }

    /// Marks a request as begun; the returned guard ends it when the response body is dropped.
    pub fn begin(self: &Arc<Self>) -> (Busy, u32) {
        self.busy.fetch_add(1, Relaxed);
        let n = self.served.fetch_add(1, Relaxed) + 1;
        self.changed.notify_waiters();
        (
            Busy {
                tracker: Arc::clone(self),
            },
            n,
        )
    }

    /// Resolves when the connection has been idle for `timeout` (no request in progress).
    pub async fn idle_elapsed(&self, timeout: Duration) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.idle_for() {
                Some(idle) if idle >= timeout => return,
                Some(idle) => {
                    tokio::select! {
                        () = tokio::time::sleep(timeout - idle) => {}
                        () = &mut notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// A request in progress on a connection; dropping it (with the response body, once sent)
/// starts the connection's idle time.
pub struct Busy {
    tracker: Arc<Tracker>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self
            .tracker
            .last_done
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.tracker.busy.fetch_sub(1, Relaxed);
        self.tracker.changed.notify_waiters();
    }
}

/// Adds the policy's connection headers to the `nth` response of a connection.
pub fn announce<B>(policy: &ConnectionPolicy, nth: u32, response: &mut Response<B>) {
    if response.version() == Version::HTTP_2 {
        return;
    }
    let last = policy.keep_alive_max.is_some_and(|max| nth >= max);
    let headers = response.headers_mut();
    if policy.close_every_response || last {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    } else if let Some(timeout) = policy.keep_alive_timeout {
        let value = format!(
            "timeout={}, max={}",
            timeout.as_secs().max(1),
            policy.keep_alive_max.unwrap_or(100)
        );
        headers.insert(
            "keep-alive",
            HeaderValue::from_str(&value).expect("ASCII header"),
        );
    }
}

/// A response body that holds its request's [`Busy`] guard until hyper drops it.
pub struct Tracked<B> {
    inner: B,
    _busy: Busy,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, busy: Busy) -> Self {
        Self { inner, _busy: busy }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
