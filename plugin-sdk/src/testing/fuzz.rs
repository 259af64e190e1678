//! Property tests ("fuzzing") for adapters and dataset readers, driven by `proptest`: arbitrary
//! and mutated inputs, split into arbitrary reads, must never panic and must give the same
//! events whatever the read boundaries. Enabled by this crate's `fuzz` feature, which a plugin
//! turns on for its tests only:
//!
//! ```toml
//! [dev-dependencies]
//! llmb-plugin-sdk = { workspace = true, features = ["fuzz"] }
//! ```
//!
//! ```ignore
//! #[test]
//! fn fuzz() {
//!     llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[TRANSCRIPT, BODY]);
//! }
//! ```
//!
//! Each property runs [`DEFAULT_CASES`] cases from a fixed seed, so CI runs are reproducible;
//! `PROPTEST_CASES=N` runs N instead, from a new seed every run (a longer hunt:
//! `PROPTEST_CASES=20000 cargo test -p my-adapter fuzz`; `PROPTEST_RNG_SEED` fixes the seed).
//! A failure panics with the smallest failing input proptest found, bytes shown escaped.

use std::fmt;

pub use proptest;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use serde_json::Value;

use super::{Outcome, run_framed};
use crate::SplitMix64;
use crate::backend::{
    ChatMessage, Framing, GenRequest, Guest, GuestResponseParser, Headers, Prompt, Role,
};
use crate::dataset::DatasetParams;
use crate::framing::{Batch, GrpcFramer, NdjsonFramer, SseFramer};

/// Cases per property when `PROPTEST_CASES` is not set: enough to find shallow bugs on every
/// CI run while keeping a crate's properties to a few seconds.
pub const DEFAULT_CASES: u32 = 128;

/// `PROPTEST_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The runner configuration of these properties: [`cases`], no regression files, and a fixed
/// seed unless `PROPTEST_RNG_SEED` or `PROPTEST_CASES` is set, so the short runs of CI are
/// reproducible while a long hunt explores new inputs on every run.
pub fn config(default_cases: u32) -> Config {
    let base = Config::default();
    let hunting = std::env::var_os("PROPTEST_CASES").is_some();
    let rng_seed = if std::env::var_os("PROPTEST_RNG_SEED").is_some() || hunting {
        base.rng_seed
    } else {
        RngSeed::Fixed(0x11b_f022)
    };
    Config {
        cases: cases(default_cases),
        failure_persistence: None,
        rng_seed,
        ..base
    }
}

/// Bytes shown as an escaped byte string in failure reports.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// `bytes` cut at the positions `cuts` pick (sorted, repeats dropped): the reads of one body.
pub fn split<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for cut in at {
        out.push(&bytes[start..cut]);
        start = cut;
    }
    out.push(&bytes[start..]);
    out
}

/// Runs one property with [`config`]`(default_cases)`; panics naming the property and the
/// smallest failing input.
pub fn check<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: fmt::Debug,
{
    let mut runner = TestRunner::new(config(default_cases));
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => {
            panic!("property {name:?} failed: {why}\nsmallest failing input: {input:#?}")
        }
        Err(TestError::Abort(why)) => panic!("property {name:?} aborted: {why}"),
    }
}

/// Seeded byte and JSON mutations of known-good inputs.
struct Mutator<'a> {
    rng: SplitMix64,
    /// JSON values of the seeds, to graft subtrees from.
    donors: &'a [Value],
    /// Object keys seen in the seeds.
    keys: &'a [String],
}

/// Byte strings that tend to matter to parsers of JSON, SSE and text.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"data: ",
    b"event: error\n",
    b"[DONE]",
    b"null",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\xff",
    b"\xc3",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"\x00",
];

impl Mutator<'_> {
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.rng.next_u64() % n as u64) as usize
        }
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    /// One byte-level change: flip, insert, delete, duplicate or cut.
    fn bytes(&mut self, b: &mut Vec<u8>) {
        let at = self.below(b.len() + 1);
        match self.below(7) {
            0 if !b.is_empty() => {
                let i = self.below(b.len());
                b[i] ^= 1 << self.below(8);
            }
            1 => {
                let byte = self.rng.next_u64() as u8;
                b.insert(at, byte);
            }
            2 | 3 => {
                let token = TOKENS[self.below(TOKENS.len())];
                b.splice(at..at, token.iter().copied());
            }
            4 => {
                let end = (at + 1 + self.below(16)).min(b.len());
                b.drain(at.min(end)..end);
            }
            5 => {
                let end = (at + 1 + self.below(32)).min(b.len());
                let piece = b[at.min(end)..end].to_vec();
                b.splice(end..end, piece);
            }
            _ => b.truncate(at),
        }
    }

    /// A value that is often wrong for whatever field it lands in.
    fn odd_value(&mut self) -> Value {
        let odd = [
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            0.into(),
            1.into(),
            (-1).into(),
            u32::MAX.into(),
            (u64::from(u32::MAX) + 1).into(),
            u64::MAX.into(),
            i64::MIN.into(),
            1.5.into(),
            (-0.0).into(),
            1e308.into(),
            "".into(),
            "x".into(),
            "\u{e9}\u{1F600}\u{0}".into(),
            "[DONE]".into(),
            "a".repeat(300).into(),
            Value::Array(Vec::new()),
            Value::Object(Default::default()),
        ];
        if !self.donors.is_empty() && self.chance(4) {
            let donor = &self.donors[self.below(self.donors.len())];
            return self.pick(donor).clone();
        }
        odd[self.below(odd.len())].clone()
    }

    /// A random node of `v` (the root included).
    fn pick<'v>(&mut self, v: &'v Value) -> &'v Value {
        let mut v = v;
        loop {
            let n = match v {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                _ => 0,
            };
            if n == 0 || self.chance(3) {
                return v;
            }
            let i = self.below(n);
            v = match v {
                Value::Array(a) => &a[i],
                Value::Object(o) => o.values().nth(i).expect("index below len"),
                _ => unreachable!(),
            };
        }
    }

    /// One structural change somewhere in `v`.
    fn json(&mut self, v: &mut Value) {
        let mut v = v;
        loop {
            let n = match &*v {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                _ => 0,
            };
            if n == 0 || self.chance(3) {
                break;
            }
            let i = self.below(n);
            v = match v {
                Value::Array(a) => &mut a[i],
                Value::Object(o) => o.values_mut().nth(i).expect("index below len"),
                _ => unreachable!(),
            };
        }
        match (self.below(6), &mut *v) {
            (0, Value::Object(o)) if !o.is_empty() => {
                let key = o.keys().nth(self.below(o.len())).cloned();
                o.remove(&key.expect("index below len"));
            }
            (1, Value::Object(o)) => {
                let key = if self.keys.is_empty() || self.chance(4) {
                    "x".to_owned()
                } else {
                    self.keys[self.below(self.keys.len())].clone()
                };
                let value = self.odd_value();
                o.insert(key, value);
            }
            (0, Value::Array(a)) if !a.is_empty() => {
                a.remove(self.below(a.len()));
            }
            (1, Value::Array(a)) if !a.is_empty() => {
                let item = a[self.below(a.len())].clone();
                a.push(item);
            }
            (2, node) => *node = Value::Array(vec![node.take()]),
            _ => *v = self.odd_value(),
        }
    }

    /// A mutated copy of a payload: JSON-aware when it is JSON, bytes otherwise.
    fn payload(&mut self, payload: &[u8], grpc: bool) -> Vec<u8> {
        let rounds = 1 + self.below(4);
        if grpc {
            // Keep a consistent prefix so the message reaches the parser as one frame.
            let mut body = payload.get(5..).unwrap_or_default().to_vec();
            for _ in 0..rounds {
                self.bytes(&mut body);
            }
            let mut framed = vec![payload.first().copied().unwrap_or(0)];
            framed.extend((body.len() as u32).to_be_bytes());
            framed.extend(body);
            return framed;
        }
        match serde_json::from_slice::<Value>(payload) {
            Ok(mut v) if !self.chance(4) => {
                for _ in 0..rounds {
                    self.json(&mut v);
                }
                let mut out = serde_json::to_vec(&v).expect("a JSON value serializes");
                if self.chance(4) {
                    self.bytes(&mut out);
                }
                out
            }
            _ => {
                let mut out = payload.to_vec();
                for _ in 0..rounds {
                    self.bytes(&mut out);
                }
                out
            }
        }
    }
}

/// A frame of a seed: an SSE event name and its payload (a gRPC frame keeps its prefix).
#[derive(Clone, Debug)]
struct Piece {
    event: Option<String>,
    payload: Vec<u8>,
}

/// Frames `body` whole with the host's framer for `framing`.
fn frame_all(framing: Framing, body: &[u8]) -> Batch {
    let mut out = Batch::default();
    match framing {
        Framing::Sse => {
            let mut f = SseFramer::new();
            f.push(body, &mut out);
            f.finish(&mut out);
        }
        Framing::Ndjson => {
            let mut f = NdjsonFramer::new();
            f.push(body, &mut out);
            f.finish(&mut out);
        }
        Framing::Grpc => {
            let mut f = GrpcFramer::new();
            f.push(body, &mut out);
            f.finish(&mut out);
        }
        Framing::Raw => out.push(None, body),
    }
    out
}

/// What the seeds offer the mutator.
struct Corpus {
    framing: Framing,
    seeds: Vec<Vec<u8>>,
    pieces: Vec<Piece>,
    donors: Vec<Value>,
    keys: Vec<String>,
}

fn keys_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                out.push(k.clone());
                keys_of(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys_of(v, out)),
        _ => {}
    }
}

impl Corpus {
    fn new(framing: Framing, seeds: &[&[u8]]) -> Self {
        let mut pieces = Vec::new();
        for seed in seeds {
            let batch = frame_all(framing, seed);
            for i in 0..batch.frames.len() {
                let (event, payload) = batch.get(i);
                pieces.push(Piece {
                    event: event.map(str::to_owned),
                    payload: payload.to_vec(),
                });
            }
            if framing != Framing::Grpc {
                pieces.push(Piece {
                    event: None,
                    payload: seed.to_vec(),
                });
            }
        }
        let donors: Vec<Value> = pieces
            .iter()
            .filter_map(|p| serde_json::from_slice(&p.payload).ok())
            .collect();
        let mut keys = Vec::new();
        donors.iter().for_each(|v| keys_of(v, &mut keys));
        keys.sort();
        keys.dedup();
        Self {
            framing,
            seeds: seeds.iter().map(|s| s.to_vec()).collect(),
            pieces,
            donors,
            keys,
        }
    }

    fn mutator(&self, seed: u64) -> Mutator<'_> {
        Mutator {
            rng: SplitMix64::new(seed),
            donors: &self.donors,
            keys: &self.keys,
        }
    }

    /// A stream body: a seed with byte changes, or seed frames (changed or not) framed anew.
    fn stream(&self, seed: u64) -> Vec<u8> {
        let mut m = self.mutator(seed);
        if self.seeds.is_empty() || m.chance(3) {
            let mut body = if self.seeds.is_empty() {
                Vec::new()
            } else {
                self.seeds[m.below(self.seeds.len())].clone()
            };
            for _ in 0..1 + m.below(6) {
                m.bytes(&mut body);
            }
            return body;
        }
        const EOLS: [&[u8]; 3] = [b"\n", b"\r\n", b"\r"];
        let eol = EOLS[m.below(3)];
        let mut body = Vec::new();
        for _ in 0..1 + m.below(8) {
            let piece = &self.pieces[m.below(self.pieces.len())];
            let grpc = self.framing == Framing::Grpc;
            let payload = if m.chance(2) {
                m.payload(&piece.payload, grpc)
            } else {
                piece.payload.clone()
            };
            match self.framing {
                Framing::Sse => {
                    if let Some(event) = &piece.event {
                        body.extend_from_slice(b"event: ");
                        body.extend_from_slice(event.as_bytes());
                        body.extend_from_slice(eol);
                    }
                    for line in payload.split(|&b| b == b'\n') {
                        body.extend_from_slice(b"data: ");
                        body.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
                        body.extend_from_slice(eol);
                    }
                    body.extend_from_slice(eol);
                }
                Framing::Ndjson => {
                    body.extend(payload.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
                    body.push(b'\n');
                }
                Framing::Grpc | Framing::Raw => body.extend_from_slice(&payload),
            }
        }
        body
    }

    /// A whole response body: a seed or one of its frames, changed.
    fn body(&self, seed: u64) -> Vec<u8> {
        let mut m = self.mutator(seed);
        if self.pieces.is_empty() {
            return Vec::new();
        }
        let piece = &self.pieces[m.below(self.pieces.len())];
        let payload = match self.framing {
            Framing::Grpc => piece.payload.get(5..).unwrap_or_default(),
            _ => &piece.payload[..],
        };
        if m.chance(5) {
            payload.to_vec()
        } else {
            m.payload(payload, false)
        }
    }
}

/// Arbitrary bytes, or (more often) inputs made from the corpus by `make`.
fn input(
    corpus: &std::rc::Rc<Corpus>,
    make: fn(&Corpus, u64) -> Vec<u8>,
) -> impl Strategy<Value = Bytes> + use<> {
    let corpus = corpus.clone();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes),
        3 => any::<u64>().prop_map(move |seed| Bytes(make(&corpus, seed))),
    ]
}

/// Headers of the kinds adapters read, with odd values.
fn headers() -> impl Strategy<Value = Headers> {
    let name = prop::sample::select(vec![
        "content-type",
        "Content-Type",
        "x-prompt-tokens",
        "x-generated-tokens",
        "grpc-status",
        "grpc-message",
        "x-request-id",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec![
            "application/json",
            "text/event-stream",
            "application/grpc",
            "text/plain; charset=utf-8",
            "multipart/form-data; boundary=x",
            "0",
            "1",
            "13",
            "-1",
            "4294967296",
            "",
            " 7 ",
            "%E2%82%AC",
            "%",
        ])
        .prop_map(str::to_owned),
        ".{0,12}",
    ];
    prop::collection::vec((name.prop_map(str::to_owned), value), 0..4)
}

fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(vec![Role::System, Role::User, Role::Assistant, Role::Tool])
}

fn gen_request() -> impl Strategy<Value = GenRequest> {
    let prompt = prop_oneof![
        ".{0,40}".prop_map(Prompt::Text),
        prop::collection::vec(
            (role(), ".{0,20}").prop_map(|(role, content)| ChatMessage { role, content }),
            0..4
        )
        .prop_map(Prompt::Chat),
    ];
    let extra = prop_oneof![
        Just(None),
        ".{0,20}".prop_map(Some),
        prop::sample::select(vec![
            r#"{"temperature":0}"#,
            r#"{"stream":false,"max_tokens":null}"#,
            r#"{"parameters":[1],"messages":"x","prompt":{}}"#,
            "[]",
            "null",
        ])
        .prop_map(|s| Some(s.to_owned())),
    ];
    (
        (any::<u64>(), ".{0,12}", prompt, any::<u32>()),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<Option<f32>>(),
            extra,
        ),
    )
        .prop_map(
            |((id, model, prompt, max_tokens), (ignore_eos, streaming, include_usage, t, e))| {
                GenRequest {
                    id,
                    model,
                    prompt,
                    max_tokens,
                    ignore_eos,
                    streaming,
                    include_usage,
                    temperature: t,
                    extra_body: e,
                }
            },
        )
}

/// Fuzzes every entry point of adapter `A` that reads what a server sent, plus
/// `build_request`. `seeds` are real responses (the transcripts and bodies of the adapter's
/// own tests): most inputs are mutations of them, framed as `A::info().framing` says. Checks:
/// no panic anywhere; the stream parser's events do not depend on how the body is split into
/// reads; `map_error` always has a message.
pub fn adapter<A: Guest>(seeds: &[&[u8]]) {
    let framing = A::info().framing;
    let corpus = std::rc::Rc::new(Corpus::new(framing, seeds));

    check(
        "stream parser: any reads, same events, no panic",
        DEFAULT_CASES,
        (
            input(&corpus, Corpus::stream),
            prop::collection::vec(any::<Index>(), 0..6),
            200u16..300,
            headers(),
            headers(),
        ),
        |(body, cuts, status, headers, trailers)| {
            let body = &body.0;
            let run = |chunks: &[&[u8]]| -> Outcome {
                let parser = A::ResponseParser::new(status, headers.clone());
                run_framed(&parser, framing, chunks, trailers.clone())
            };
            let whole = run(&[body]);
            if framing != Framing::Raw {
                prop_assert_eq!(&run(&split(body, &cuts)), &whole, "split reads");
                if body.len() <= 512 {
                    let bytes: Vec<&[u8]> = body.chunks(1).collect();
                    prop_assert_eq!(&run(&bytes), &whole, "one byte per read");
                }
            }
            Ok(())
        },
    );

    check(
        "parse_body, map_error and parse_tokenize: no panic",
        DEFAULT_CASES,
        (input(&corpus, Corpus::body), any::<u16>(), headers()),
        |(body, status, headers)| {
            let _ = A::parse_body(status, headers.clone(), body.0.clone());
            let _ = A::parse_body(200, headers.clone(), body.0.clone());
            let err = A::map_error(status, headers, body.0.clone());
            prop_assert!(!err.message.trim().is_empty(), "map_error gave no message");
            let _ = A::parse_tokenize(body.0);
            Ok(())
        },
    );

    check(
        "build_request and tokenize_request: no panic",
        DEFAULT_CASES / 2,
        gen_request(),
        |req| {
            let _ = A::build_request(req.clone());
            let _ = A::tokenize_request(req);
            Ok(())
        },
    );
}

/// The line count of a dataset file, for readers' error checks.
fn lines(content: &[u8]) -> u64 {
    content.iter().filter(|&&b| b == b'\n').count() as u64 + 1
}

/// Arbitrary file contents for a dataset reader: random bytes, or a seed file changed byte by
/// byte, line by line or (for JSON and JSON Lines) value by value.
fn file_content(seeds: &[&[u8]], seed: u64) -> Vec<u8> {
    let donors: Vec<Value> = seeds
        .iter()
        .flat_map(|s| {
            let whole = serde_json::from_slice::<Value>(s).ok();
            let lines = s
                .split(|&b| b == b'\n')
                .filter_map(|l| serde_json::from_slice::<Value>(l).ok());
            whole.into_iter().chain(lines)
        })
        .collect();
    let mut keys = Vec::new();
    donors.iter().for_each(|v| keys_of(v, &mut keys));
    keys.sort();
    keys.dedup();
    let mut m = Mutator {
        rng: SplitMix64::new(seed),
        donors: &donors,
        keys: &keys,
    };
    let Some(&file) = seeds.get(m.below(seeds.len())) else {
        return Vec::new();
    };
    let rounds = 1 + m.below(4);
    match m.below(4) {
        // Whole-file JSON (an array, an object).
        0 if serde_json::from_slice::<Value>(file).is_ok() => m.payload(file, false),
        // Line by line: change some lines, drop, repeat or swap others.
        0 | 1 => {
            let mut lines: Vec<Vec<u8>> = file.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            for _ in 0..rounds {
                let i = m.below(lines.len());
                match m.below(5) {
                    0 => {
                        lines.remove(i);
                    }
                    1 => {
                        let line = lines[i].clone();
                        lines.insert(i, line);
                    }
                    2 => {
                        let j = m.below(lines.len());
                        lines.swap(i, j);
                    }
                    _ => lines[i] = m.payload(&lines[i], false),
                }
                if lines.is_empty() {
                    break;
                }
            }
            lines.join(&b'\n')
        }
        _ => {
            let mut out = file.to_vec();
            for _ in 0..rounds {
                m.bytes(&mut out);
            }
            out
        }
    }
}

/// Arbitrary file contents for a dataset reader: random bytes, or (more often) one of `seeds`
/// changed byte by byte, line by line or, for JSON and JSON Lines, value by value.
pub fn contents(seeds: &[&[u8]]) -> impl Strategy<Value = Bytes> + use<> {
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Bytes),
        4 => any::<u64>().prop_map(move |seed| {
            let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
            Bytes(file_content(&seeds, seed))
        }),
    ]
}

/// Fuzzes a dataset reader's input parsing: `read` runs the reader over a file of the given
/// contents named `name` (natively, as its tests do) and returns its error, if any. Checks: no
/// panic; an error names the file, and any `name:LINE` in it is a line of the file. `seeds`
/// are sample files of the format; most contents are mutations of them ([`contents`]).
pub fn reader(name: &str, seeds: &[&[u8]], read: impl Fn(&[u8]) -> Result<(), String>) {
    check(
        "dataset reader: any file, no panic, errors name the file and line",
        DEFAULT_CASES,
        contents(seeds),
        |content| {
            let Err(e) = read(&content.0) else {
                return Ok(());
            };
            prop_assert!(e.contains(name), "the error does not name {name}: {e}");
            let prefix = format!("{name}:");
            let last = lines(&content.0);
            for (at, _) in e.match_indices(&prefix) {
                let digits: String = e[at + prefix.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(line) = digits.parse::<u64>() {
                    prop_assert!(
                        (1..=last).contains(&line),
                        "line {line} of a {last}-line file: {e}"
                    );
                }
            }
            Ok(())
        },
    );
}

/// Fuzzes a reader's options: `open` reads `--dataset-opt` pairs giving some of `keys` odd
/// values (negative, fractional, huge, not numbers; never huge valid sizes, which a reader
/// rightly tries to honour), with any seed and a small count. Checks: no panic; an error names
/// one of the options it was given.
pub fn options(keys: &[&str], open: impl Fn(&DatasetParams) -> Result<(), String>) {
    let value = prop_oneof![
        3 => prop::sample::select(vec![
            "0", "1", "2", "7", "16", "100", "-1", "-0", "1.5", "0.5", "0.99", "1e3", "nan", "inf",
            "-inf", "", " 3 ", "true", "false", "yes", "x", "4294967296",
            "18446744073709551616", "\u{0}",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,6}",
    ];
    let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    let pairs = prop::collection::vec((prop::sample::select(keys), value), 0..4);
    check(
        "dataset options: odd values, no panic, errors name the option",
        DEFAULT_CASES,
        (pairs, any::<u64>(), 0u64..40),
        |(pairs, seed, count)| {
            let options: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let params = super::dataset_params(seed, count, &options, &["data.txt"]);
            if let Err(e) = open(&params) {
                prop_assert!(
                    pairs.iter().any(|(k, _)| e.contains(&format!("--{k}"))),
                    "the error names none of the options given: {e}"
                );
            }
            Ok(())
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_body_in_order() {
        use proptest::strategy::ValueTree;
        let body = b"0123456789";
        let mut runner = TestRunner::deterministic();
        for n in 0..50 {
            let cuts: Vec<Index> = (0..n % 7)
                .map(|_| any::<Index>().new_tree(&mut runner).unwrap().current())
                .collect();
            let parts = split(body, &cuts);
            assert_eq!(parts.concat(), body);
            assert!(parts.len() <= cuts.len() + 1);
        }
    }

    #[test]
    fn mutations_stay_near_the_seed() {
        let seed = br#"{"choices":[{"text":"hi","index":0}],"usage":{"prompt_tokens":3}}"#;
        let corpus = Corpus::new(Framing::Sse, &[b"data: {\"a\":1}\n\n", seed]);
        assert!(corpus.keys.contains(&"prompt_tokens".to_owned()));
        let mut json = 0;
        for s in 0..200 {
            let body = corpus.body(s);
            json += usize::from(serde_json::from_slice::<Value>(&body).is_ok());
        }
        assert!(json > 50, "{json} of 200 mutated bodies are JSON");
        assert_eq!(
            format!("{:?}", Bytes(b"a\"\n\xff".to_vec())),
            r#"b"a\"\n\xff""#
        );
    }

    /// An adapter with two planted bugs: its parser panics on a non-integer `n`, and, when
    /// `BATCHY` is set, it emits one delta per batch instead of one per frame.
    struct Planted;
    struct PlantedParser;
    thread_local! {
        static BATCHY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    impl Guest for Planted {
        type ResponseParser = PlantedParser;

        fn info() -> crate::backend::BackendInfo {
            crate::backend::BackendInfo {
                name: "planted".into(),
                version: "0".into(),
                description: String::new(),
                default_endpoint: "/".into(),
                framing: Framing::Sse,
                supports_ignore_eos: false,
                http2: false,
            }
        }

        fn configure(_: Vec<crate::backend::Kv>) -> Result<(), String> {
            Ok(())
        }

        fn build_request(_: GenRequest) -> Result<crate::backend::HttpRequest, String> {
            Err("no".into())
        }

        fn parse_body(
            status: u16,
            _: Headers,
            _: Vec<u8>,
        ) -> Result<crate::backend::Completion, crate::backend::BackendError> {
            Err(crate::openai::classify(Some(status), String::new()))
        }

        fn map_error(status: u16, _: Headers, _: Vec<u8>) -> crate::backend::BackendError {
            crate::openai::classify(Some(status), String::new())
        }

        fn tokenize_request(_: GenRequest) -> Option<crate::backend::HttpRequest> {
            None
        }

        fn parse_tokenize(_: Vec<u8>) -> Result<u32, String> {
            Err("no".into())
        }
    }

    impl GuestResponseParser for PlantedParser {
        fn new(_: u16, _: Headers) -> Self {
            PlantedParser
        }

        fn feed(&self, batch: crate::backend::FrameBatch) -> Vec<crate::backend::StreamEvent> {
            let delta = |frame| {
                crate::backend::StreamEvent::Delta(crate::backend::Delta {
                    frame,
                    text: String::new(),
                    reasoning: String::new(),
                    tokens: None,
                    index: 0,
                })
            };
            if BATCHY.get() {
                return vec![delta(0)];
            }
            let mut events = Vec::new();
            for (frame, _, data) in batch.iter() {
                if let Ok(v) = serde_json::from_slice::<Value>(data)
                    && let Some(n) = v.get("n")
                {
                    n.as_u64().expect("n is an integer");
                }
                events.push(delta(frame));
            }
            events
        }

        fn finish(&self, _: Headers) -> Vec<crate::backend::StreamEvent> {
            Vec::new()
        }
    }

    const PLANTED_SEED: &[u8] = b"data: {\"text\":\"a\",\"n\":1}\n\ndata: {\"n\":2}\n\n";

    #[test]
    #[should_panic(expected = "n is an integer")]
    fn the_harness_finds_a_panicking_parser() {
        adapter::<Planted>(&[PLANTED_SEED]);
    }

    #[test]
    #[should_panic(expected = "same events")]
    fn the_harness_finds_a_parser_that_depends_on_the_reads() {
        BATCHY.set(true);
        adapter::<Planted>(&[PLANTED_SEED]);
    }
}
