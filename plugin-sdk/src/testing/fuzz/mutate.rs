//! [`Mutator`]: seeded byte and JSON mutations of known-good inputs.

use serde_json::Value;

use crate::SplitMix64;

/// Seeded byte and JSON mutations of known-good inputs.
pub(super) struct Mutator<'a> {
    pub(super) rng: SplitMix64,
    /// JSON values of the seeds, to graft subtrees from.
    pub(super) donors: &'a [Value],
    /// Object keys seen in the seeds.
    pub(super) keys: &'a [String],
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
    pub(super) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.rng.next_u64() % n as u64) as usize
        }
    }

    pub(super) fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    /// One byte-level change: flip, insert, delete, duplicate or cut.
    pub(super) fn bytes(&mut self, b: &mut Vec<u8>) {
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
    pub(super) fn payload(&mut self, payload: &[u8], grpc: bool) -> Vec<u8> {
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
