//! Tests of the framers: fixed transcripts, size limits, properties against reference
//! framers, and linear time on long frames.

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

#[test]
fn frames_end_at_the_read_that_completes_them() {
    // A CR ending a read ends the line: the event goes out with that read, not the next.
    let mut f = SseFramer::new();
    let mut out = Batch::default();
    f.push(b"data: a\r\n\r", &mut out);
    assert_eq!(out.frames.len(), 1);
    f.push(b"\ndata: b\r", &mut out);
    f.push(b"\r", &mut out);
    assert_eq!(out.frames.len(), 2);
    assert_eq!(out.get(1).1, b"b");
}

#[test]
fn oversized_frames_stop_the_framer_with_a_reason() {
    // A line over the limit, whether it arrives whole or trickles in.
    for step in [1, 3, 1000] {
        let body = b"data: ok\n\ndata: 0123456789abcdef\n\ndata: late\n\n";
        let mut f = SseFramer::new().with_max_frame(16);
        let mut out = Batch::default();
        for c in body.chunks(step) {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        assert_eq!(out.frames.len(), 1, "step {step}");
        assert_eq!(out.get(0).1, b"ok");
        let why = f.overflowed().unwrap();
        assert!(
            why.contains("SSE line") && why.contains("16 bytes"),
            "{why}"
        );
    }
    // Lines within the limit gathering an event over it.
    let mut f = SseFramer::new().with_max_frame(10);
    let mut out = Batch::default();
    f.push(b"data:12345\ndata:12345\n\n", &mut out);
    assert!(out.is_empty());
    assert!(f.overflowed().unwrap().contains("event"));
    // NDJSON: the line, however it is split.
    let mut f = NdjsonFramer::new().with_max_frame(4);
    let mut out = Batch::default();
    f.push(b"{}\n{\"a\"", &mut out);
    assert!(f.overflowed().is_none());
    f.push(b":1}\n{}\n", &mut out);
    f.finish(&mut out);
    assert_eq!(out.frames.len(), 1);
    assert!(f.overflowed().unwrap().contains("NDJSON line"));
    // gRPC: the declared length is refused before any of the payload arrives.
    let mut f = GrpcFramer::new();
    let mut out = Batch::default();
    f.push(&[0, 0, 0, 0, 1, 7, 0, 0x3c, 0x68], &mut out);
    assert!(f.overflowed().is_none());
    f.push(&[0x74, 0x6d], &mut out);
    let why = f.overflowed().unwrap();
    assert!(
        why.contains("1013478509 bytes") && why.contains("16 MiB"),
        "{why}"
    );
    f.finish(&mut out);
    assert_eq!(out.frames.len(), 1);
    assert!(SseFramer::new().overflowed().is_none());
}

/// The framers before they were made linear, kept as the reference the properties compare
/// with (no size limit).
mod reference {
    use super::super::{Batch, SseFramer};

    pub fn sse(body: &[u8]) -> Batch {
        let mut f = SseFramer::new().with_max_frame(usize::MAX);
        let mut out = Batch::default();
        let mut start = 0;
        while let Some(pos) = body[start..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let end = start + pos;
            let mut next = end + 1;
            if body[end] == b'\r' && body.get(next) == Some(&b'\n') {
                next += 1;
            }
            f.line(&body[start..end], &mut out);
            start = next;
        }
        if start < body.len() {
            f.line(&body[start..], &mut out);
        }
        f.dispatch(&mut out);
        out
    }

    pub fn ndjson(body: &[u8]) -> Batch {
        let mut out = Batch::default();
        for line in body.split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            if !line.is_empty() {
                out.push(None, line);
            }
        }
        out
    }

    pub fn grpc(body: &[u8]) -> Batch {
        let mut out = Batch::default();
        let mut start = 0;
        while let Some(prefix) = body.get(start..start + 5) {
            let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
            let end = start + 5 + len as usize;
            if body.len() < end {
                break;
            }
            out.push(None, &body[start..end]);
            start = end;
        }
        if start < body.len() {
            out.push(None, &body[start..]);
        }
        out
    }
}

/// One framer of each kind behind one face, as the host's `Framer`.
enum AnyFramer {
    Sse(SseFramer),
    Ndjson(NdjsonFramer),
    Grpc(GrpcFramer),
}

impl AnyFramer {
    fn new(kind: u8, max: usize) -> Self {
        match kind {
            0 => Self::Sse(SseFramer::new().with_max_frame(max)),
            1 => Self::Ndjson(NdjsonFramer::new().with_max_frame(max)),
            _ => Self::Grpc(GrpcFramer::new().with_max_frame(max)),
        }
    }

    fn push(&mut self, bytes: &[u8], out: &mut Batch) {
        match self {
            Self::Sse(f) => f.push(bytes, out),
            Self::Ndjson(f) => f.push(bytes, out),
            Self::Grpc(f) => f.push(bytes, out),
        }
    }

    fn finish(&mut self, out: &mut Batch) {
        match self {
            Self::Sse(f) => f.finish(out),
            Self::Ndjson(f) => f.finish(out),
            Self::Grpc(f) => f.finish(out),
        }
    }

    fn overflowed(&self) -> Option<String> {
        match self {
            Self::Sse(f) => f.overflowed(),
            Self::Ndjson(f) => f.overflowed(),
            Self::Grpc(f) => f.overflowed(),
        }
        .map(str::to_owned)
    }
}

/// Frames `chunks` (one read each), checking the limit after every read as the host does.
fn frame(kind: u8, max: usize, chunks: &[&[u8]]) -> (Batch, Option<String>) {
    let mut f = AnyFramer::new(kind, max);
    let mut out = Batch::default();
    for c in chunks {
        f.push(c, &mut out);
        if f.overflowed().is_some() {
            break;
        }
    }
    f.finish(&mut out);
    (out, f.overflowed())
}

use crate::testing::fuzz::{config, split};
use proptest::prelude::*;

/// Bytes that look like a stream of `kind` often enough to reach every branch.
fn stream(kind: u8) -> BoxedStrategy<Vec<u8>> {
    let piece = match kind {
        0 => prop_oneof![
            4 => prop::sample::select(vec![
                &b"data:"[..], b"data: ", b"event: e\n", b"error: ", b": c", b"id: 1",
                b"retry: 9", b"x", b"{\"a\":1}", b"\xc3\xa9", b"\xf0\x9f\x98", b"[DONE]",
                b"\n", b"\n", b"\r", b"\r\n", b"\n\n", b"\r\n\r\n",
            ])
            .prop_map(<[u8]>::to_vec),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ]
        .boxed(),
        1 => prop_oneof![
            4 => prop::sample::select(vec![
                &b"{\"a\":1}"[..], b" ", b"\t", b"\r", b"\n", b"\n\n", b"\xc3\xa9", b"x",
            ])
            .prop_map(<[u8]>::to_vec),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ]
        .boxed(),
        _ => prop_oneof![
            3 => (any::<bool>(), prop::collection::vec(any::<u8>(), 0..24)).prop_map(
                |(flag, payload)| {
                    let mut m = vec![u8::from(flag)];
                    m.extend((payload.len() as u32).to_be_bytes());
                    m.extend(payload);
                    m
                }
            ),
            1 => prop::collection::vec(any::<u8>(), 1..6),
        ]
        .boxed(),
    };
    prop_oneof![
        3 => prop::collection::vec(piece, 0..48).prop_map(|p| p.concat()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
    .boxed()
}

fn frames(b: &Batch) -> Vec<(Option<&str>, &[u8])> {
    (0..b.frames.len()).map(|i| b.get(i)).collect()
}

proptest! {
    #![proptest_config(config(256))]

    /// Any bytes, any reads: no panic, the frames of one read, and the reference's frames.
    #[test]
    fn any_split_gives_the_frames_of_one_read(
        (kind, body) in (0u8..3).prop_flat_map(|k| (Just(k), stream(k))),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let (whole, none) = frame(kind, usize::MAX, &[&body]);
        prop_assert_eq!(none, None);
        let expected = match kind {
            0 => reference::sse(&body),
            1 => reference::ndjson(&body),
            _ => reference::grpc(&body),
        };
        prop_assert_eq!(frames(&whole), frames(&expected));
        let chunks = split(&body, &cuts);
        let (parts, none) = frame(kind, usize::MAX, &chunks);
        prop_assert_eq!(none, None);
        prop_assert_eq!(frames(&parts), frames(&whole));
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        let (each, _) = frame(kind, usize::MAX, &bytes);
        prop_assert_eq!(frames(&each), frames(&whole));
    }

    /// With a small limit the split does not change which frames come out before the framer
    /// stops, nor whether and why it stops; the frames that come out are within the limit.
    #[test]
    fn the_limit_does_not_depend_on_the_split(
        (kind, body) in (0u8..3).prop_flat_map(|k| (Just(k), stream(k))),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        max in 0usize..40,
    ) {
        let (whole, why) = frame(kind, max, &[&body]);
        let (parts, why_parts) = frame(kind, max, &split(&body, &cuts));
        prop_assert_eq!(frames(&parts), frames(&whole));
        prop_assert_eq!(&why_parts, &why);
        let unlimited = frame(kind, usize::MAX, &[&body]).0;
        let n = whole.frames.len();
        prop_assert_eq!(frames(&whole), frames(&unlimited)[..n].to_vec());
        if why.is_none() {
            prop_assert_eq!(n, unlimited.frames.len());
        }
        for (_, data) in frames(&whole) {
            // A gRPC frame carries its 5-byte prefix; a cut-off one at the end may be shorter.
            let prefix = if kind == 2 { 5 } else { 0 };
            prop_assert!(data.len() <= max + prefix);
        }
    }
}

/// A 32 MiB frame trickling in 4 KiB reads (8192 of them): framed whole, in time linear in
/// its size. Rescanning the carried line on every read would scan 128 GiB here, minutes
/// instead of well under a second.
#[test]
fn a_long_frame_in_many_reads_is_framed_in_linear_time() {
    let len = 32 << 20;
    let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    let mut grpc = vec![0u8];
    grpc.extend((len as u32).to_be_bytes());
    grpc.extend(&payload);
    let bodies = [
        [&b"data: "[..], &payload, b"\r\n\r\n"].concat(),
        [&payload[..], b"\n"].concat(),
        grpc,
    ];
    for (kind, body) in bodies.iter().enumerate() {
        let started = std::time::Instant::now();
        let chunks: Vec<&[u8]> = body.chunks(4096).collect();
        let (out, why) = frame(kind as u8, 64 << 20, &chunks);
        let took = started.elapsed();
        assert_eq!(why, None);
        assert_eq!(out.frames.len(), 1, "kind {kind}");
        let data = out.get(0).1;
        assert_eq!(&data[data.len() - len..], &payload[..], "kind {kind}");
        assert!(took.as_secs() < 10, "kind {kind}: {took:?}");
        // The default limit stops the same frame instead.
        let (out, why) = frame(kind as u8, DEFAULT_MAX_FRAME, &chunks);
        assert!(out.is_empty() && why.unwrap().contains("16 MiB"));
    }
}
