//! [`GrpcFramer`]: incremental framing of length-prefixed gRPC messages.

use super::{Batch, DEFAULT_MAX_FRAME, size};

/// Incremental gRPC framer: one frame per length-prefixed message (flag, 4-byte big-endian
/// length, payload), prefix included, however the body was split into reads.
#[derive(Debug)]
pub struct GrpcFramer {
    /// The start of a message carried from earlier reads: its prefix, or part of it.
    buf: Vec<u8>,
    max_frame: usize,
    overflow: Option<String>,
}

impl Default for GrpcFramer {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            max_frame: DEFAULT_MAX_FRAME,
            overflow: None,
        }
    }
}

/// The whole length (prefix included) of the message starting at `bytes`, once its 5-byte
/// prefix is there.
fn grpc_len(bytes: &[u8]) -> Option<usize> {
    let p = bytes.get(..5)?;
    // Saturating: `usize` is 32 bits inside a plugin.
    Some((u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize).saturating_add(5))
}

impl GrpcFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the frame size limit: the largest message payload (the 5-byte prefix not counted).
    /// A prefix declaring more stops the framer at once, before any of the payload is buffered.
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Why framing stopped: a message declared a length over the frame size limit (see
    /// [`SseFramer::overflowed`](super::SseFramer::overflowed)).
    pub fn overflowed(&self) -> Option<&str> {
        self.overflow.as_deref()
    }

    pub fn push(&mut self, bytes: &[u8], out: &mut Batch) {
        if self.overflow.is_some() {
            return;
        }
        let mut rest = bytes;
        if !self.buf.is_empty() {
            // Complete the carried prefix, then the carried message.
            let want = 5usize.saturating_sub(self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..want]);
            rest = &rest[want..];
            let Some(total) = grpc_len(&self.buf) else {
                return;
            };
            if self.too_long(total) {
                return;
            }
            let want = (total - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..want]);
            rest = &rest[want..];
            if self.buf.len() < total {
                return;
            }
            out.push(None, &self.buf);
            self.buf.clear();
        }
        while let Some(total) = grpc_len(rest) {
            if self.too_long(total) {
                return;
            }
            if rest.len() < total {
                break;
            }
            out.push(None, &rest[..total]);
            rest = &rest[total..];
        }
        self.buf.extend_from_slice(rest);
    }

    /// A message cut off by the end of the body is passed on as it is, so the plugin can say so.
    pub fn finish(&mut self, out: &mut Batch) {
        if self.overflow.is_none() && !self.buf.is_empty() {
            out.push(None, &self.buf);
        }
        self.buf.clear();
    }

    /// Stops the framer when a message of `total` bytes (prefix included) is over the limit.
    fn too_long(&mut self, total: usize) -> bool {
        let len = total - 5;
        if len <= self.max_frame {
            return false;
        }
        self.buf = Vec::new();
        self.overflow = Some(format!(
            "a gRPC message declares {len} bytes, more than {}, the frame size limit (a corrupt stream, or not gRPC)",
            size(self.max_frame)
        ));
        true
    }
}
