//! Incremental stream framing: Server-Sent Events and newline-delimited JSON.
//!
//! The host frames responses natively with these same types, so each frame can be stamped with
//! the arrival time of the read that completed it; adapters that ask for `raw` framing can use
//! them to do the framing themselves. Both accept arbitrary split points, including a split inside
//! a multi-byte UTF-8 character or between `\r` and `\n`. Frames are appended to a [`Batch`]:
//! one buffer for all frames of a read, so framing allocates nothing per frame.

/// Where one frame lies in [`Batch::data`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub len: u32,
    /// The SSE `event:` name, or a non-standard field carrying the payload (llama.cpp's `error:`).
    pub event: Option<String>,
}

/// Frames completed by one or more reads, back to back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub data: Vec<u8>,
    pub frames: Vec<Span>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.frames.clear();
    }

    /// Frame `i` as (event name, payload).
    pub fn get(&self, i: usize) -> (Option<&str>, &[u8]) {
        let span = &self.frames[i];
        let start = span.start as usize;
        (
            span.event.as_deref(),
            &self.data[start..start + span.len as usize],
        )
    }

    /// Appends one frame.
    pub fn push(&mut self, event: Option<String>, data: &[u8]) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(data);
        self.frames.push(Span {
            start,
            len: data.len() as u32,
            event,
        });
    }
}

/// Incremental SSE parser (WHATWG rules: optional space after the colon, `:` comments,
/// multi-line data joined with `\n`, LF / CRLF / CR line ends).
#[derive(Debug, Default)]
pub struct SseFramer {
    buf: Vec<u8>,
    data: Vec<u8>,
    event: Option<String>,
    has_field: bool,
}

impl SseFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes as read; complete events are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Batch) {
        if self.buf.is_empty() {
            let used = self.lines(bytes, out);
            self.buf.extend_from_slice(&bytes[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(bytes);
            let used = self.lines(&buf, out);
            buf.drain(..used);
            self.buf = buf;
        }
    }

    /// Handles every complete line of `bytes`; returns how many bytes were consumed.
    fn lines(&mut self, bytes: &[u8], out: &mut Batch) -> usize {
        let mut start = 0;
        while let Some(pos) = bytes[start..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let end = start + pos;
            let mut next = end + 1;
            if bytes[end] == b'\r' {
                if next == bytes.len() {
                    // A CR ending the read may be the first half of CRLF: wait for more.
                    break;
                }
                if bytes[next] == b'\n' {
                    next += 1;
                }
            }
            self.line(&bytes[start..end], out);
            start = next;
        }
        start
    }

    /// End of body: a final event without its blank line is still delivered.
    pub fn finish(&mut self, out: &mut Batch) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.line(line.strip_suffix(b"\r").unwrap_or(&line), out);
        }
        self.dispatch(out);
    }

    fn line(&mut self, line: &[u8], out: &mut Batch) {
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
    }

    fn dispatch(&mut self, out: &mut Batch) {
        if self.has_field {
            out.push(self.event.take(), &self.data);
            self.data.clear();
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

    pub fn push(&mut self, bytes: &[u8], out: &mut Batch) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let line = self.buf[start..start + pos].trim_ascii();
            if !line.is_empty() {
                out.push(None, line);
            }
            start += pos + 1;
        }
        self.buf.drain(..start);
    }

    pub fn finish(&mut self, out: &mut Batch) {
        let line = self.buf.trim_ascii();
        if !line.is_empty() {
            out.push(None, line);
        }
        self.buf.clear();
    }
}

/// Incremental gRPC framer: one frame per length-prefixed message (flag, 4-byte big-endian
/// length, payload), prefix included, however the body was split into reads.
#[derive(Debug, Default)]
pub struct GrpcFramer {
    buf: Vec<u8>,
}

impl GrpcFramer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8], out: &mut Batch) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(prefix) = self.buf.get(start..start + 5) {
            let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
            let end = start + 5 + len;
            if self.buf.len() < end {
                break;
            }
            out.push(None, &self.buf[start..end]);
            start = end;
        }
        self.buf.drain(..start);
    }

    /// A message cut off by the end of the body is passed on as it is, so the plugin can say so.
    pub fn finish(&mut self, out: &mut Batch) {
        if !self.buf.is_empty() {
            out.push(None, &self.buf);
        }
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_framed_whole_across_reads() {
        let stream: Vec<u8> = [
            &[0u8, 0, 0, 0, 2, 0xaa, 0xbb][..],
            &[0, 0, 0, 0, 0],
            &[0, 0, 0, 0, 1, 0xcc],
        ]
        .concat();
        for split in 0..=stream.len() {
            let mut framer = GrpcFramer::new();
            let mut out = Batch::default();
            framer.push(&stream[..split], &mut out);
            framer.push(&stream[split..], &mut out);
            framer.finish(&mut out);
            let frames: Vec<&[u8]> = (0..out.frames.len()).map(|i| out.get(i).1).collect();
            assert_eq!(
                frames,
                [&stream[..7], &stream[7..12], &stream[12..]],
                "split {split}"
            );
        }
        let mut framer = GrpcFramer::new();
        let mut out = Batch::default();
        framer.push(&[0, 0, 0, 0, 9, 1, 2], &mut out);
        assert!(out.frames.is_empty());
        framer.finish(&mut out);
        assert_eq!(out.get(0).1, &[0, 0, 0, 0, 9, 1, 2]);
    }

    fn frame_all(chunks: &[&[u8]]) -> Vec<(Option<String>, Vec<u8>)> {
        let mut f = SseFramer::new();
        let mut out = Batch::default();
        for c in chunks {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        (0..out.frames.len())
            .map(|i| out.get(i))
            .map(|(e, d)| (e.map(str::to_owned), d.to_vec()))
            .collect()
    }

    #[test]
    fn sse_split_at_every_byte_gives_same_events() {
        let body = b": ping\n\ndata: {\"a\":1}\n\ndata:{\"b\":2}\r\n\r\nevent: response.done\ndata: x\ndata: y\n\nerror: {\"code\":500}\n\ndata: [DONE]\n\n";
        let whole = frame_all(&[body]);
        assert_eq!(whole.len(), 5);
        assert_eq!(whole[0].1, b"{\"a\":1}");
        assert_eq!(whole[1].1, b"{\"b\":2}");
        assert_eq!(whole[2].0.as_deref(), Some("response.done"));
        assert_eq!(whole[2].1, b"x\ny");
        assert_eq!(whole[3].0.as_deref(), Some("error"));
        assert_eq!(whole[4].1, b"[DONE]");
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
        let mut out = Batch::default();
        f.push(b"{\"a\":1}\n\n{\"b\"", &mut out);
        f.push(b":2}\n{\"c\":3}", &mut out);
        f.finish(&mut out);
        let got: Vec<&[u8]> = (0..out.frames.len()).map(|i| out.get(i).1).collect();
        assert_eq!(got, vec![&b"{\"a\":1}"[..], b"{\"b\":2}", b"{\"c\":3}"]);
    }
}
