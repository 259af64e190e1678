//! Incremental stream framing: Server-Sent Events and newline-delimited JSON.
//!
//! The host frames responses natively with these same types so each frame can be stamped with
//! the arrival time of the read that completed it; adapters that ask for `raw` framing can use
//! them to do the framing themselves. Both accept arbitrary split points, including a split inside
//! a multi-byte UTF-8 character or between `\r` and `\n`.

/// One complete SSE event: its `event:` name (or a non-`data` field name such as llama.cpp's
/// `error:`) and its `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: Vec<u8>,
}

/// Incremental SSE parser (WHATWG rules: optional space after the colon, `:` comments,
/// multi-line data joined with `\n`, LF / CRLF / CR line ends).
#[derive(Debug, Default)]
pub struct SseFramer {
    buf: Vec<u8>,
    pending: SseEvent,
    has_field: bool,
}

impl SseFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes as read; complete events are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let end = start + pos;
            let mut next = end + 1;
            if buf[end] == b'\r' {
                if next == buf.len() {
                    // A lone CR at the end of the read: wait, it may be the first half of CRLF.
                    break;
                }
                if buf[next] == b'\n' {
                    next += 1;
                }
            }
            self.line(&buf[start..end], out);
            start = next;
        }
        buf.drain(..start);
        self.buf = buf;
    }

    /// End of body: a final event without its blank line is still delivered.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            let line = line.strip_suffix(b"\r").unwrap_or(&line).to_vec();
            self.line(&line, out);
        }
        self.dispatch(out);
    }

    /// Bytes received but not yet part of a complete line.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_field && !self.pending.data.is_empty() {
                    self.pending.data.push(b'\n');
                }
                self.pending.data.extend_from_slice(value);
                self.has_field = true;
            }
            b"event" => {
                self.pending.event = Some(String::from_utf8_lossy(value).into_owned());
                self.has_field = true;
            }
            b"id" | b"retry" => {}
            other => {
                // Non-standard field carrying a payload (llama.cpp sends `error: {...}`).
                self.pending.event = Some(String::from_utf8_lossy(other).into_owned());
                self.pending.data.extend_from_slice(value);
                self.has_field = true;
            }
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_field {
            out.push(std::mem::take(&mut self.pending));
            self.has_field = false;
        }
    }
}

/// Incremental newline-delimited JSON framer: one frame per non-blank line.
#[derive(Debug, Default)]
pub struct NdjsonFramer {
    buf: Vec<u8>,
}

impl NdjsonFramer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let line = trim(&self.buf[start..start + pos]);
            if !line.is_empty() {
                out.push(line.to_vec());
            }
            start += pos + 1;
        }
        self.buf.drain(..start);
    }

    pub fn finish(&mut self, out: &mut Vec<Vec<u8>>) {
        let line = trim(&self.buf).to_vec();
        if !line.is_empty() {
            out.push(line);
        }
        self.buf.clear();
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut f = SseFramer::new();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        out
    }

    #[test]
    fn sse_split_at_every_byte_gives_same_events() {
        let body = b": ping\n\ndata: {\"a\":1}\n\ndata:{\"b\":2}\r\n\r\nevent: response.done\ndata: x\ndata: y\n\nerror: {\"code\":500}\n\ndata: [DONE]\n\n";
        let whole = frame_all(&[body]);
        assert_eq!(whole.len(), 5);
        assert_eq!(whole[0].data, b"{\"a\":1}");
        assert_eq!(whole[1].data, b"{\"b\":2}");
        assert_eq!(whole[2].event.as_deref(), Some("response.done"));
        assert_eq!(whole[2].data, b"x\ny");
        assert_eq!(whole[3].event.as_deref(), Some("error"));
        assert_eq!(whole[4].data, b"[DONE]");
        for i in 0..body.len() {
            let (a, b) = body.split_at(i);
            assert_eq!(frame_all(&[a, b]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(frame_all(&bytes), whole);
    }

    #[test]
    fn ndjson_lines() {
        let mut f = NdjsonFramer::new();
        let mut out = Vec::new();
        f.push(b"{\"a\":1}\n\n{\"b\"", &mut out);
        f.push(b":2}\n{\"c\":3}", &mut out);
        f.finish(&mut out);
        assert_eq!(out, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec(), b"{\"c\":3}".to_vec()]);
    }
}
