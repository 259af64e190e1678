//! [`SseFramer`]: incremental Server-Sent Events framing.

use super::{Batch, DEFAULT_MAX_FRAME, size};

/// Incremental SSE parser (WHATWG rules: optional space after the colon, `:` comments,
/// multi-line data joined with `\n`, LF / CRLF / CR line ends).
#[derive(Debug)]
pub struct SseFramer {
    /// The partial line carried from earlier reads, without its line end (it has none yet).
    buf: Vec<u8>,
    /// The last read ended with a CR: a LF starting the next read belongs to it.
    cr: bool,
    data: Vec<u8>,
    event: Option<String>,
    has_field: bool,
    max_frame: usize,
    overflow: Option<String>,
}

impl Default for SseFramer {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            cr: false,
            data: Vec::new(),
            event: None,
            has_field: false,
            max_frame: DEFAULT_MAX_FRAME,
            overflow: None,
        }
    }
}

impl SseFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the frame size limit: the longest line, and the most data one event may gather.
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Why framing stopped: a line or an event went past the frame size limit. Once set, `push`
    /// and `finish` frame nothing more; frames completed before it are in the batch as usual.
    pub fn overflowed(&self) -> Option<&str> {
        self.overflow.as_deref()
    }

    /// Feeds bytes as read; complete events are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Batch) {
        if self.overflow.is_some() {
            return;
        }
        let mut rest = bytes;
        if std::mem::take(&mut self.cr) && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', rest) {
            if self.buf.len() + end > self.max_frame {
                return self.overflow_line();
            }
            if self.buf.is_empty() {
                self.line(&rest[..end], out);
            } else {
                let mut line = std::mem::take(&mut self.buf);
                line.extend_from_slice(&rest[..end]);
                self.line(&line, out);
                if self.overflow.is_none() {
                    line.clear();
                    self.buf = line;
                }
            }
            if self.overflow.is_some() {
                return;
            }
            let mut next = end + 1;
            if rest[end] == b'\r' {
                match rest.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    // A CR ending the read may be the first half of CRLF.
                    None => self.cr = true,
                }
            }
            rest = &rest[next..];
        }
        if self.buf.len() + rest.len() > self.max_frame {
            return self.overflow_line();
        }
        self.buf.extend_from_slice(rest);
    }

    /// End of body: a final event without its blank line is still delivered.
    pub fn finish(&mut self, out: &mut Batch) {
        if self.overflow.is_some() {
            return;
        }
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.line(&line, out);
            if self.overflow.is_some() {
                return;
            }
        }
        self.cr = false;
        self.dispatch(out);
    }

    fn overflow_line(&mut self) {
        self.stop(format!(
            "an SSE line is longer than {}, the frame size limit (a corrupt stream, or not SSE)",
            size(self.max_frame)
        ));
    }

    fn stop(&mut self, reason: String) {
        self.overflow = Some(reason);
        self.buf = Vec::new();
        self.data = Vec::new();
        self.event = None;
        self.has_field = false;
    }

    pub(super) fn line(&mut self, line: &[u8], out: &mut Batch) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_field && !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_field = true;
            }
            b"event" => {
                self.event = Some(String::from_utf8_lossy(value).into_owned());
                self.has_field = true;
            }
            b"id" | b"retry" => {}
            other => {
                self.event = Some(String::from_utf8_lossy(other).into_owned());
                self.data.extend_from_slice(value);
                self.has_field = true;
            }
        }
        if self.data.len() > self.max_frame {
            self.stop(format!(
                "an SSE event's data is longer than {}, the frame size limit",
                size(self.max_frame)
            ));
        }
    }

    pub(super) fn dispatch(&mut self, out: &mut Batch) {
        if self.has_field {
            out.push(self.event.take(), &self.data);
            self.data.clear();
            self.has_field = false;
        }
    }
}
