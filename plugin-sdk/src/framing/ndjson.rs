//! [`NdjsonFramer`]: incremental newline-delimited JSON framing.

use super::{Batch, DEFAULT_MAX_FRAME, size};

/// Incremental newline-delimited JSON framer: one frame per non-blank line, trimmed.
#[derive(Debug)]
pub struct NdjsonFramer {
    /// The partial line carried from earlier reads (it has no `\n` yet).
    buf: Vec<u8>,
    max_frame: usize,
    overflow: Option<String>,
}

impl Default for NdjsonFramer {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            max_frame: DEFAULT_MAX_FRAME,
            overflow: None,
        }
    }
}

impl NdjsonFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the frame size limit: the longest line, blanks around it included.
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Why framing stopped: a line went past the frame size limit (see [`SseFramer::overflowed`](super::SseFramer::overflowed)).
    pub fn overflowed(&self) -> Option<&str> {
        self.overflow.as_deref()
    }

    pub fn push(&mut self, bytes: &[u8], out: &mut Batch) {
        if self.overflow.is_some() {
            return;
        }
        let mut rest = bytes;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            if self.buf.len() + end > self.max_frame {
                return self.overflow_line();
            }
            if self.buf.is_empty() {
                emit_line(&rest[..end], out);
            } else {
                self.buf.extend_from_slice(&rest[..end]);
                emit_line(&self.buf, out);
                self.buf.clear();
            }
            rest = &rest[end + 1..];
        }
        if self.buf.len() + rest.len() > self.max_frame {
            return self.overflow_line();
        }
        self.buf.extend_from_slice(rest);
    }

    pub fn finish(&mut self, out: &mut Batch) {
        if self.overflow.is_none() {
            emit_line(&self.buf, out);
        }
        self.buf.clear();
    }

    fn overflow_line(&mut self) {
        self.buf = Vec::new();
        self.overflow = Some(format!(
            "an NDJSON line is longer than {}, the frame size limit (a corrupt stream, or not NDJSON)",
            size(self.max_frame)
        ));
    }
}

fn emit_line(line: &[u8], out: &mut Batch) {
    let line = line.trim_ascii();
    if !line.is_empty() {
        out.push(None, line);
    }
}
