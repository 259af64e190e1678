//! Incremental stream framing: Server-Sent Events, newline-delimited JSON and gRPC messages.
//!
//! The host frames responses natively with these same types, so each frame can be stamped with
//! the arrival time of the read that completed it; adapters that ask for `raw` framing can use
//! them to do the framing themselves. All accept arbitrary split points, including a split inside
//! a multi-byte UTF-8 character or between `\r` and `\n`, and give the same frames whatever the
//! split. Frames are appended to a [`Batch`]: one buffer for all frames of a read, so framing
//! allocates nothing per frame.
//!
//! Work is linear in the bytes read: a partial line or message carried from one read to the next
//! holds no line end, so a read only scans its own bytes, and each byte is copied at most once
//! into the carry. A frame may not grow past a limit ([`DEFAULT_MAX_FRAME`] unless set with
//! `with_max_frame`): a longer one stops the framer, which then frames nothing more, and
//! `overflowed()` says why, so the caller can fail the request with that reason instead of
//! buffering an endless line or trusting a garbage gRPC length prefix.

/// The default frame size limit, 16 MiB, for SSE lines and events, NDJSON lines and gRPC
/// messages. A frame is copied into the adapter's sandbox (64 MiB of memory) and parsed there,
/// often into a JSON tree a few times its size, so a quarter of the sandbox is about the most a
/// frame can take; it is 4x gRPC's own default receive limit (4 MiB) and far above any real
/// event (a token chunk is well under 1 KiB, a final event with the whole text a few MB).
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

mod batch;
mod body;
mod grpc;
mod ndjson;
mod sse;
#[cfg(test)]
mod tests;

pub use batch::{Batch, Span};
pub use body::{BodyFramer, FramingKind};
pub use grpc::GrpcFramer;
pub use ndjson::NdjsonFramer;
pub use sse::SseFramer;

/// `16 MiB`, `1 KiB` or `100 bytes`.
fn size(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}
