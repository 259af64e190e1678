//! [`Corpus`]: the frames, JSON values and keys of an adapter's seeds, and the stream and body
//! inputs made from them.

use proptest::prelude::*;
use serde_json::Value;

use super::Bytes;
use super::mutate::Mutator;
use crate::SplitMix64;
use crate::backend::Framing;
use crate::framing::{Batch, GrpcFramer, NdjsonFramer, SseFramer};

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
pub(super) struct Corpus {
    framing: Framing,
    seeds: Vec<Vec<u8>>,
    pieces: Vec<Piece>,
    donors: Vec<Value>,
    pub(super) keys: Vec<String>,
}

pub(super) fn keys_of(v: &Value, out: &mut Vec<String>) {
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
    pub(super) fn new(framing: Framing, seeds: &[&[u8]]) -> Self {
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
    pub(super) fn stream(&self, seed: u64) -> Vec<u8> {
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
    pub(super) fn body(&self, seed: u64) -> Vec<u8> {
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
pub(super) fn input(
    corpus: &std::rc::Rc<Corpus>,
    make: fn(&Corpus, u64) -> Vec<u8>,
) -> impl Strategy<Value = Bytes> + use<> {
    let corpus = corpus.clone();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes),
        3 => any::<u64>().prop_map(move |seed| Bytes(make(&corpus, seed))),
    ]
}
