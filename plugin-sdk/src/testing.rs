//! Test helpers for adapter authors: frame a transcript exactly as the host does, feed it to a
//! parser and reduce the events to comparable values, so "the same events whatever the read
//! boundaries" is one call. Native only in practice; nothing here runs inside a component.

use crate::backend::{
    ErrorKind, FrameBatch, FrameSpan, Framing, GuestResponseParser, Headers, StreamEvent,
};
use crate::framing::{Batch, BodyFramer, FramingKind};

#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;

/// Events reduced to comparable values; delta frames are numbered across batches.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// `(frame, text, tokens)` per delta.
    pub deltas: Vec<(u32, String, Option<u32>)>,
    /// Reasoning text of all deltas, concatenated.
    pub reasoning: String,
    pub finish: Option<String>,
    /// `(prompt, completion, cached prompt)` tokens of the last usage event.
    pub usage: Option<(Option<u32>, Option<u32>, Option<u32>)>,
    pub errors: Vec<(ErrorKind, String)>,
    /// How many `done` events arrived (exactly one for a well-formed stream).
    pub done: usize,
}

impl Outcome {
    /// The generated text.
    pub fn text(&self) -> String {
        self.deltas.iter().map(|d| d.1.as_str()).collect()
    }

    /// Tokens the deltas said they carried.
    pub fn tokens(&self) -> u32 {
        self.deltas.iter().filter_map(|d| d.2).sum()
    }

    fn collect(&mut self, events: Vec<StreamEvent>, base: u32) {
        for e in events {
            match e {
                StreamEvent::Delta(d) => {
                    self.reasoning.push_str(&d.reasoning);
                    self.deltas.push((base + d.frame, d.text, d.tokens));
                }
                StreamEvent::Finish(r) => self.finish = Some(r),
                StreamEvent::Usage(u) => {
                    self.usage =
                        Some((u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens))
                }
                StreamEvent::Error(e) => self.errors.push((e.kind, e.message)),
                StreamEvent::Done => self.done += 1,
            }
        }
    }
}

/// Frames SSE `chunks` as the host does (one batch per read) and feeds `parser`, then `finish`
/// with no trailers.
pub fn run<P: GuestResponseParser>(parser: P, chunks: &[&[u8]]) -> Outcome {
    run_framed(&parser, Framing::Sse, chunks, Vec::new())
}

/// Frames `chunks` with `framing` as the host does (one batch per read; `raw` passes each read
/// as one frame) and feeds `parser`, then `finish` with `trailers`. A framer that stops on its
/// size limit ends the stream there, as it fails the request in the host.
pub fn run_framed<P: GuestResponseParser>(
    parser: &P,
    framing: Framing,
    chunks: &[&[u8]],
    trailers: Headers,
) -> Outcome {
    let mut framer = BodyFramer::new(kind(framing), crate::framing::DEFAULT_MAX_FRAME);
    let mut out = Outcome::default();
    let mut seen = 0;
    let mut feed = |batch: &mut Batch, out: &mut Outcome| {
        if batch.is_empty() {
            return;
        }
        let wit = FrameBatch {
            data: batch.data.clone(),
            frames: (batch.frames.iter())
                .map(|s| FrameSpan {
                    start: s.start,
                    len: s.len,
                    event: s.event.clone(),
                })
                .collect(),
        };
        out.collect(parser.feed(wit), seen);
        seen += batch.frames.len() as u32;
        batch.clear();
    };
    let mut batch = Batch::default();
    for chunk in chunks {
        framer.push(chunk, &mut batch);
        feed(&mut batch, &mut out);
        if framer.overflowed().is_some() {
            return out;
        }
    }
    framer.finish(&mut batch);
    feed(&mut batch, &mut out);
    out.collect(parser.finish(trailers), seen);
    out
}

/// The guest binding's `framing` as the SDK's framer kind.
fn kind(framing: Framing) -> FramingKind {
    match framing {
        Framing::Sse => FramingKind::Sse,
        Framing::Ndjson => FramingKind::Ndjson,
        Framing::Grpc => FramingKind::Grpc,
        Framing::Raw => FramingKind::Raw,
    }
}

/// The events of `body` must not depend on read boundaries: every two-way split and one byte
/// per read give what the whole body gives, which is returned.
pub fn assert_split_invariant<P: GuestResponseParser>(
    parser: impl Fn() -> P,
    body: &[u8],
) -> Outcome {
    let whole = run(parser(), &[body]);
    for k in 0..=body.len() {
        assert_eq!(
            run(parser(), &[&body[..k], &body[k..]]),
            whole,
            "split at byte {k}"
        );
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(run(parser(), &bytes), whole, "one byte per read");
    whole
}

/// Dataset parameters for a reader's native tests: `options` as `--dataset-opt` pairs and
/// `files` as paths inside `/data`, the way the host hands them over.
pub fn dataset_params(
    seed: u64,
    count: u64,
    options: &[(&str, &str)],
    files: &[&str],
) -> crate::dataset::DatasetParams {
    crate::dataset::DatasetParams {
        seed,
        count,
        options: options
            .iter()
            .map(|(k, v)| crate::dataset::Kv {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        files: files.iter().map(|f| (*f).into()).collect(),
    }
}

/// A reader that hands out at most `step` bytes per read, so records straddle buffer refills
/// in a dataset reader's tests.
pub struct Trickle {
    inner: std::io::Cursor<Vec<u8>>,
    step: usize,
}

impl Trickle {
    pub fn new(text: &str, step: usize) -> Self {
        Self::from_bytes(text.as_bytes(), step)
    }

    /// The same over any bytes (not necessarily UTF-8), for fuzzing a reader.
    pub fn from_bytes(bytes: &[u8], step: usize) -> Self {
        Self {
            inner: std::io::Cursor::new(bytes.to_vec()),
            step: step.max(1),
        }
    }
}

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step);
        self.inner.read(&mut buf[..n])
    }
}

impl std::io::Seek for Trickle {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// One token per whitespace-separated word: the host's default count, for native tests.
pub fn words(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}
