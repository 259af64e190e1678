//! [`FramingKind`] and [`BodyFramer`]: one face over the framers, as the host runs them.

use super::{Batch, GrpcFramer, NdjsonFramer, SseFramer};

/// Which framer a response body needs. It mirrors the WIT `framing` enum, which the host and
/// the guest bindings each generate as their own type, so both map onto this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingKind {
    Sse,
    Ndjson,
    Grpc,
    Raw,
}

/// The framers behind one face: what the host runs on every response body, and what the
/// adapter test harness runs to frame bodies exactly as the host does.
#[derive(Debug)]
pub enum BodyFramer {
    Sse(SseFramer),
    Ndjson(NdjsonFramer),
    Grpc(GrpcFramer),
    /// Each read is one frame; nothing is buffered, so nothing can overflow.
    Raw,
}

impl BodyFramer {
    /// A framer gathering frames of at most `max_frame` bytes.
    pub fn new(kind: FramingKind, max_frame: usize) -> Self {
        match kind {
            FramingKind::Sse => Self::Sse(SseFramer::new().with_max_frame(max_frame)),
            FramingKind::Ndjson => Self::Ndjson(NdjsonFramer::new().with_max_frame(max_frame)),
            FramingKind::Grpc => Self::Grpc(GrpcFramer::new().with_max_frame(max_frame)),
            FramingKind::Raw => Self::Raw,
        }
    }

    /// Feeds bytes as read; complete frames are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Batch) {
        match self {
            Self::Sse(f) => f.push(bytes, out),
            Self::Ndjson(f) => f.push(bytes, out),
            Self::Grpc(f) => f.push(bytes, out),
            Self::Raw => out.push(None, bytes),
        }
    }

    /// End of body: whatever the framing allows to complete without a terminator.
    pub fn finish(&mut self, out: &mut Batch) {
        match self {
            Self::Sse(f) => f.finish(out),
            Self::Ndjson(f) => f.finish(out),
            Self::Grpc(f) => f.finish(out),
            Self::Raw => {}
        }
    }

    /// Why framing stopped: a frame went past the size limit.
    pub fn overflowed(&self) -> Option<&str> {
        match self {
            Self::Sse(f) => f.overflowed(),
            Self::Ndjson(f) => f.overflowed(),
            Self::Grpc(f) => f.overflowed(),
            Self::Raw => None,
        }
    }
}
