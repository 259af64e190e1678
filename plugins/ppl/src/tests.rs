//! Tests of the `ppl` adapter: the request encoder against known bytes, stream conformance and
//! split invariance, gRPC status and trailers handling, malformed messages and whole bodies.

use super::*;
use llmb_plugin_sdk::backend_bindings::llmb::plugin::types::AudioClip;

use crate::proto::{put_len, put_tag, put_varint};

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The example request of openppl-grpc.md, byte for byte.
const EXAMPLE_REQUEST: &str = "00 00 00 00 2f 0a 2d 08 07 15 00 00 80 3f
    1a 1e 57 68 61 74 20 69 73 20 74 68 65 20 63 61 70 69 74 61 6c 20 6f 66 20 46 72 61 6e 63 65 3f
    2a 04 08 04 18 01";

/// The example response stream of openppl-grpc.md, byte for byte.
const EXAMPLE_STREAM: &str = "
    00 00 00 00 0c 0a 0a 10 07 1a 06 20 50 61 72 69 73
    00 00 00 00 07 0a 05 10 07 1a 01 2c
    00 00 00 00 0a 0a 08 10 07 1a 04 20 74 68 65
    00 00 00 00 10 0a 0e 08 01 10 07 1a 08 20 63 61 70 69 74 61 6c";

const FAILED_MESSAGE: &str = "00 00 00 00 06 0a 04 08 02 10 07";

fn ok() -> Headers {
    vec![("grpc-status".into(), "0".into())]
}

/// Frames a `Response` as the server does (proto3 defaults left out).
fn rsp_message(status: u64, id: u64, text: &[u8]) -> Vec<u8> {
    let mut rsp = Vec::new();
    if status != 0 {
        put_tag(&mut rsp, 1, 0);
        put_varint(&mut rsp, status);
    }
    if id != 0 {
        put_tag(&mut rsp, 2, 0);
        put_varint(&mut rsp, id);
    }
    if !text.is_empty() {
        put_len(&mut rsp, 3, text);
    }
    let mut batched = Vec::new();
    put_len(&mut batched, 1, &rsp);
    grpc_frame(&batched)
}

fn grpc_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Events reduced to comparable values; delta frames are kept apart because they depend on
/// where the reads split the body.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    deltas: Vec<(String, Option<u32>)>,
    finish: Option<String>,
    usage: Option<(Option<u32>, Option<u32>, Option<u32>)>,
    errors: Vec<(ErrorKind, String)>,
    done: usize,
}

impl Outcome {
    fn text(&self) -> String {
        self.deltas.iter().map(|d| d.0.as_str()).collect()
    }

    fn tokens(&self) -> u32 {
        self.deltas.iter().filter_map(|d| d.1).sum()
    }
}

fn batch_of(chunks: &[&[u8]]) -> FrameBatch {
    let mut data = Vec::new();
    let mut frames = Vec::new();
    for c in chunks {
        frames.push(FrameSpan {
            start: data.len() as u32,
            len: c.len() as u32,
            event: None,
        });
        data.extend_from_slice(c);
    }
    FrameBatch { data, frames }
}

/// Feeds `chunks` as raw frames: each in its own batch (one read each) or all in one batch
/// (one read completing several chunks). Returns the outcome and each delta's chunk index.
fn run_with(
    headers: Headers,
    chunks: &[&[u8]],
    one_batch: bool,
    trailers: Headers,
) -> (Outcome, Vec<u32>) {
    let parser = Parser::new(200, headers);
    let mut out = Outcome::default();
    let mut frames = Vec::new();
    if one_batch {
        collect(parser.feed(batch_of(chunks)), 0, &mut out, &mut frames);
    } else {
        for (i, c) in chunks.iter().enumerate() {
            collect(parser.feed(batch_of(&[c])), i as u32, &mut out, &mut frames);
        }
    }
    collect(parser.finish(trailers), 0, &mut out, &mut frames);
    (out, frames)
}

fn grpc_headers() -> Headers {
    vec![("content-type".into(), "application/grpc".into())]
}

fn run(chunks: &[&[u8]], trailers: Headers) -> (Outcome, Vec<u32>) {
    run_with(grpc_headers(), chunks, false, trailers)
}

fn collect(events: Vec<StreamEvent>, base: u32, out: &mut Outcome, frames: &mut Vec<u32>) {
    for e in events {
        match e {
            StreamEvent::Delta(d) => {
                assert!(d.reasoning.is_empty() && d.index == 0);
                frames.push(base + d.frame);
                out.deltas.push((d.text, d.tokens));
            }
            StreamEvent::Finish(r) => out.finish = Some(r),
            StreamEvent::Usage(u) => {
                out.usage = Some((u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens))
            }
            StreamEvent::Error(e) => out.errors.push((e.kind, e.message)),
            StreamEvent::Done => out.done += 1,
        }
    }
}

/// Byte offsets just past each gRPC message of a well-formed stream prefix.
fn message_ends(body: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 0;
    while body.len() - pos >= 5 {
        let len = u32::from_be_bytes(body[pos + 1..pos + 5].try_into().unwrap()) as usize;
        if body.len() - pos - 5 < len {
            break;
        }
        pos += 5 + len;
        ends.push(pos);
    }
    ends
}

/// Same events whatever the read boundaries (every two-way split, one byte per chunk, each
/// chunk its own batch or all in one batch), and when every message yields one delta, each
/// delta is stamped with the chunk holding its message's last byte.
fn assert_split_invariant(body: &[u8], trailers: Headers) -> Outcome {
    let (whole, _) = run(&[body], trailers.clone());
    let ends = message_ends(body);
    let check_frames = ends.len() == whole.deltas.len();
    for one_batch in [false, true] {
        for k in 0..=body.len() {
            let (a, b) = body.split_at(k);
            let (out, frames) = run_with(grpc_headers(), &[a, b], one_batch, trailers.clone());
            assert_eq!(out, whole, "split at byte {k}, one batch: {one_batch}");
            if check_frames {
                let want: Vec<u32> = ends.iter().map(|&e| u32::from(e > k)).collect();
                assert_eq!(frames, want, "frames, split at byte {k}");
            }
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        let (out, frames) = run_with(grpc_headers(), &bytes, one_batch, trailers.clone());
        assert_eq!(out, whole, "one byte per chunk, one batch: {one_batch}");
        if check_frames {
            let want: Vec<u32> = ends.iter().map(|&e| e as u32 - 1).collect();
            assert_eq!(frames, want, "frames, one byte per chunk");
        }
    }
    whole
}

fn request(id: u64, prompt: Prompt, temperature: Option<f32>) -> GenRequest {
    GenRequest {
        id,
        model: "m".into(),
        prompt,
        max_tokens: 4,
        ignore_eos: true,
        streaming: true,
        include_usage: true,
        temperature,
        extra_body: None,
    }
}

#[test]
fn encoder_matches_the_example_request() {
    let prompt = Prompt::Text("What is the capital of France?".into());
    let http = Adapter::build_request(request(7, prompt.clone(), Some(1.0))).unwrap();
    assert_eq!(http.body, hex(EXAMPLE_REQUEST));
    assert_eq!(http.body.len(), 52);
    assert_eq!(http.method, "POST");
    assert_eq!(http.path, "/ppl.llm.proto.LLMService/Generation");
    assert_eq!(
        http.headers,
        [
            ("content-type".to_owned(), "application/grpc".to_owned()),
            ("te".to_owned(), "trailers".to_owned())
        ]
    );
    let unspecified = Adapter::build_request(request(7, prompt, None)).unwrap();
    assert_eq!(unspecified.body, hex(EXAMPLE_REQUEST));
}

#[test]
fn simulator_request_bytes() {
    let req = GenRequest {
        max_tokens: 3,
        ..request(3, Prompt::Text("hi".into()), None)
    };
    let http = Adapter::build_request(req).unwrap();
    assert_eq!(
        to_hex(&http.body),
        "00 00 00 00 13 0a 11 08 03 15 00 00 80 3f 1a 02 68 69 2a 04 08 03 18 01"
    );
}

#[test]
fn proto3_defaults_are_left_out() {
    let req = GenRequest {
        max_tokens: 0,
        ignore_eos: false,
        streaming: false,
        ..request(0, Prompt::Text("hi".into()), Some(0.0))
    };
    let http = Adapter::build_request(req).unwrap();
    assert_eq!(to_hex(&http.body), "00 00 00 00 08 0a 06 1a 02 68 69 2a 00");
    let big = encode_request(300, 0.5, "x", 1 << 20, false);
    assert_eq!(
        to_hex(&big),
        "00 00 00 00 13 0a 11 08 ac 02 15 00 00 00 3f 1a 01 78 2a 04 08 80 80 40"
    );
}

#[test]
fn requests_that_cannot_be_sent_are_refused() {
    let text = || Prompt::Text("hi".into());
    let err = Adapter::build_request(GenRequest {
        extra_body: Some("{}".into()),
        ..request(1, text(), None)
    })
    .unwrap_err();
    assert!(
        err.contains("--extra-body") && err.contains("protobuf"),
        "{err}"
    );
    let audio = Prompt::Audio(AudioClip {
        data: vec![1, 2],
        filename: "a.wav".into(),
        reference: None,
        duration_s: None,
    });
    let err = Adapter::build_request(request(1, audio, None)).unwrap_err();
    assert!(err.contains("audio"), "{err}");
    let err = Adapter::build_request(request(1, Prompt::Text(String::new()), None)).unwrap_err();
    assert!(err.contains("empty prompt"), "{err}");
}

#[test]
fn chat_prompt_is_joined() {
    let chat = Prompt::Chat(vec![
        ChatMessage {
            role: Role::System,
            content: "Be brief.".into(),
        },
        ChatMessage {
            role: Role::User,
            content: "Hi".into(),
        },
    ]);
    let http = Adapter::build_request(request(1, chat, None)).unwrap();
    assert_eq!(http.body, encode_request(1, 1.0, "Be brief.\nHi", 4, true));
}

#[test]
fn info_and_options() {
    let info = Adapter::info();
    assert_eq!(info.name, "ppl");
    assert_eq!(
        info.description,
        "OpenPPL ppl.llm.serving over gRPC (LLMService/Generation, HTTP/2)"
    );
    assert_eq!(
        info.default_endpoint,
        "/ppl.llm.proto.LLMService/Generation"
    );
    assert!(matches!(info.framing, Framing::Grpc));
    assert!(info.supports_ignore_eos && info.http2);
    assert!(Adapter::configure(Vec::new()).is_ok());
    assert!(
        Adapter::configure(vec![Kv {
            key: "x".into(),
            value: "1".into()
        }])
        .is_err()
    );
}

#[test]
fn example_stream_conformance() {
    let out = assert_split_invariant(&hex(EXAMPLE_STREAM), ok());
    assert_eq!(
        out.deltas,
        [
            (" Paris".to_owned(), Some(1)),
            (",".to_owned(), Some(1)),
            (" the".to_owned(), Some(1)),
            (" capital".to_owned(), Some(1)),
        ]
    );
    assert_eq!(out.tokens(), 4);
    assert_eq!(out.finish.as_deref(), Some("finished"));
    assert_eq!(out.usage, Some((None, Some(4), None)));
    assert_eq!(out.done, 1);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
}

#[test]
fn simulator_stream_bytes() {
    let stream = [
        rsp_message(0, 3, b" a"),
        rsp_message(0, 3, b" b"),
        rsp_message(1, 3, b" c"),
    ]
    .concat();
    assert_eq!(
        to_hex(&stream),
        "00 00 00 00 08 0a 06 10 03 1a 02 20 61 \
         00 00 00 00 08 0a 06 10 03 1a 02 20 62 \
         00 00 00 00 0a 0a 08 08 01 10 03 1a 02 20 63"
    );
    let out = assert_split_invariant(&stream, ok());
    assert_eq!(out.text(), " a b c");
    assert_eq!(out.usage, Some((None, Some(3), None)));
    assert_eq!((out.done, out.errors.len()), (1, 0));
}

#[test]
fn failed_request() {
    let out = assert_split_invariant(&hex(FAILED_MESSAGE), ok());
    assert!(out.deltas.is_empty());
    assert_eq!(out.done, 0);
    assert_eq!(
        out.errors,
        [(
            ErrorKind::Server,
            "request failed (status FAILED)".to_owned()
        )]
    );
    let mut body = rsp_message(0, 7, b" Paris");
    body.extend(hex(FAILED_MESSAGE));
    body.extend(rsp_message(1, 7, b" late"));
    let out = assert_split_invariant(&body, ok());
    assert_eq!(out.text(), " Paris");
    assert_eq!((out.done, out.usage), (0, None));
    assert_eq!(out.errors.len(), 1);
}

#[test]
fn non_ok_status_in_trailers() {
    let trailers = |code: &str, msg: &str| -> Headers {
        vec![
            ("grpc-status".into(), code.into()),
            ("grpc-message".into(), msg.into()),
        ]
    };
    let body = rsp_message(0, 7, b" Paris");
    let out = assert_split_invariant(
        &body,
        trailers(
            "14",
            "connect%20failed%3A%20upstream%20%E2%9C%93%20100%25%zz",
        ),
    );
    assert_eq!(out.text(), " Paris");
    assert_eq!(out.done, 0);
    assert_eq!(
        out.errors,
        [(
            ErrorKind::Overloaded,
            "connect failed: upstream \u{2713} 100%%zz (grpc-status 14 UNAVAILABLE)".to_owned()
        )]
    );
    for (code, kind) in [
        ("4", ErrorKind::Timeout),
        ("8", ErrorKind::RateLimited),
        ("3", ErrorKind::BadRequest),
        ("1", ErrorKind::Server),
        ("13", ErrorKind::Server),
    ] {
        let e = status_error(code, Some("x")).unwrap();
        assert_eq!(e.kind, kind, "code {code}");
        assert_eq!(
            e.retryable,
            matches!(
                kind,
                ErrorKind::Timeout | ErrorKind::RateLimited | ErrorKind::Overloaded
            )
        );
    }
    let e = status_error("3", Some("prompt exceeds the maximum context length")).unwrap();
    assert_eq!(e.kind, ErrorKind::ContextLength);
    let e = status_error("2", None).unwrap();
    assert_eq!(e.message, "grpc-status 2 (UNKNOWN) without a message");
    assert!(status_error("0", Some("fine")).is_none());
    assert_eq!(status_error("x", None).unwrap().kind, ErrorKind::Protocol);
    let (out, _) = run(&[&hex(EXAMPLE_STREAM)], trailers("13", "boom"));
    assert_eq!((out.done, out.tokens()), (1, 4));
    assert_eq!(out.errors.len(), 1);
}

#[test]
fn trailers_only_failure_arrives_as_headers() {
    let headers = vec![
        ("content-type".into(), "application/grpc".into()),
        ("grpc-status".into(), "14".into()),
        ("grpc-message".into(), "no%20backend".into()),
    ];
    let (out, _) = run_with(headers, &[], false, Vec::new());
    assert_eq!(
        out.errors,
        [(
            ErrorKind::Overloaded,
            "no backend (grpc-status 14 UNAVAILABLE)".to_owned()
        )]
    );
}

#[test]
fn truncated_stream() {
    let body = hex(EXAMPLE_STREAM);
    let cut = message_ends(&body)[2] + 9;
    let out = assert_split_invariant(&body[..cut], ok());
    assert_eq!(out.text(), " Paris, the");
    assert_eq!((out.done, out.finish, out.usage), (0, None, None));
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].0, ErrorKind::Protocol);
    assert!(
        out.errors[0].1.starts_with("stream ended before FINISHED"),
        "{}",
        out.errors[0].1
    );
    let whole_messages = &body[..message_ends(&body)[2]];
    let (out, _) = run(&[whole_messages], Vec::new());
    assert_eq!(
        out.errors,
        [(
            ErrorKind::Protocol,
            "stream ended before FINISHED (and without grpc-status trailers)".to_owned()
        )]
    );
    let (out, _) = run(&[&body], Vec::new());
    assert_eq!(out.done, 1);
    assert_eq!(
        out.errors,
        [(
            ErrorKind::Protocol,
            "the call ended without grpc-status trailers".to_owned()
        )]
    );
}

#[test]
fn compressed_and_invalid_flags_are_refused() {
    let mut body = rsp_message(0, 7, b" Paris");
    let mut compressed = rsp_message(1, 7, b",");
    compressed[0] = 1;
    body.extend(compressed);
    let out = assert_split_invariant(&body, ok());
    assert_eq!(out.text(), " Paris");
    assert_eq!(out.done, 0);
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].0, ErrorKind::Protocol);
    assert!(
        out.errors[0].1.contains("compressed"),
        "{}",
        out.errors[0].1
    );
    let out = assert_split_invariant(b"HTTP/1.1 200 OK\r\n\r\n", ok());
    assert!(out.errors[0].1.contains("invalid gRPC message flag 0x48"));
    let (out, _) = run(&[&hex("00 7f ff ff ff 0a")], ok());
    assert!(out.errors[0].1.contains("exceeds"), "{:?}", out.errors);
}

#[test]
fn unknown_fields_are_skipped_and_absent_fields_default() {
    let mut rsp = Vec::new();
    put_tag(&mut rsp, 9, 0);
    put_varint(&mut rsp, 150);
    put_tag(&mut rsp, 10, 1);
    rsp.extend_from_slice(&[1; 8]);
    put_tag(&mut rsp, 11, 5);
    rsp.extend_from_slice(&[2; 4]);
    put_tag(&mut rsp, 12, 3);
    put_tag(&mut rsp, 1, 0);
    put_varint(&mut rsp, 2);
    put_tag(&mut rsp, 13, 3);
    put_tag(&mut rsp, 13, 4);
    put_tag(&mut rsp, 12, 4);
    put_len(&mut rsp, 4, &[0x0a, 0x01, 0x05]);
    put_len(&mut rsp, 200, b"ignored");
    put_tag(&mut rsp, 1, 5);
    rsp.extend_from_slice(&[2, 0, 0, 0]);
    put_tag(&mut rsp, 2, 0);
    put_varint(&mut rsp, 7);
    put_len(&mut rsp, 3, b" Paris");
    let mut batched = Vec::new();
    put_tag(&mut batched, 2, 0);
    put_varint(&mut batched, 5);
    put_len(&mut batched, 15, b"xyz");
    put_len(&mut batched, 1, &rsp);
    put_tag(&mut batched, 3, 1);
    batched.extend_from_slice(&[0; 8]);
    let mut body = grpc_frame(&batched);
    body.extend(grpc_frame(&[]));
    body.extend(grpc_frame(&hex("0a 02 10 07")));
    body.extend(rsp_message(1, 7, b""));
    let out = assert_split_invariant(&body, ok());
    assert_eq!(
        out.deltas,
        [
            (" Paris".to_owned(), Some(1)),
            (String::new(), Some(1)),
            (String::new(), Some(1)),
        ]
    );
    assert_eq!(out.usage, Some((None, Some(3), None)));
    assert_eq!((out.done, out.errors.len()), (1, 0));

    let zero = assert_split_invariant(
        &hex("00 00 00 00 02 0a 00 00 00 00 00 04 0a 02 08 01"),
        ok(),
    );
    assert_eq!(zero.tokens(), 2);
    assert_eq!(zero.done, 1);
    assert!(zero.errors.is_empty());
}

#[test]
fn garbled_messages_fail() {
    for (payload, why) in [
        ("0a 05 10 07", "runs past the end"),
        ("0a 02 10", "runs past the end"),
        ("0a 02 10 ff", "truncated varint"),
        ("0f", "wire type 7"),
        ("0c", "end-group"),
        ("0a 04 63 08 01 6c", "closed by end tag"),
        ("00", "field number 0"),
        (
            "10 ff ff ff ff ff ff ff ff ff ff 01",
            "longer than 10 bytes",
        ),
    ] {
        let body = grpc_frame(&hex(payload));
        let out = assert_split_invariant(&body, ok());
        assert_eq!(out.errors.len(), 1, "{payload}");
        assert_eq!(out.errors[0].0, ErrorKind::Protocol);
        assert!(
            out.errors[0].1.starts_with("malformed BatchedResponse")
                && out.errors[0].1.contains(why),
            "{payload}: {}",
            out.errors[0].1
        );
    }
}

#[test]
fn responses_for_another_id_fail() {
    let body = [rsp_message(0, 7, b" a"), rsp_message(1, 8, b" b")].concat();
    let out = assert_split_invariant(&body, ok());
    assert_eq!(out.text(), " a");
    assert_eq!(out.errors.len(), 1);
    assert!(out.errors[0].1.contains("id 8"), "{}", out.errors[0].1);
}

#[test]
fn characters_split_across_tokens_are_rejoined() {
    let body = [
        rsp_message(0, 7, b" caf"),
        rsp_message(0, 7, b"\xc3"),
        rsp_message(0, 7, b"\xa9 \xff!\xe2\x9c"),
        rsp_message(1, 7, b"\xe2"),
    ]
    .concat();
    let out = assert_split_invariant(&body, ok());
    let texts: Vec<&str> = out.deltas.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(texts, [" caf", "", "\u{e9} \u{fffd}!", "\u{fffd}\u{fffd}"]);
    assert_eq!(out.tokens(), 4);
}

#[test]
fn non_grpc_content_type_fails() {
    let headers = vec![("content-type".into(), "text/html".into())];
    let (out, _) = run_with(headers.clone(), &[&hex(EXAMPLE_STREAM)], false, ok());
    assert!(out.deltas.is_empty());
    assert_eq!(out.errors.len(), 1);
    assert!(out.errors[0].1.contains("text/html"));
    let (out, _) = run_with(headers, &[], false, ok());
    assert_eq!(out.errors.len(), 1);
}

#[test]
fn whole_bodies_and_http_errors() {
    let e = Adapter::parse_body(200, Vec::new(), hex(EXAMPLE_STREAM)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.message.contains("only streams"));
    let e = Adapter::map_error(404, Vec::new(), b"Not Found\n".to_vec());
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::NotFound, "Not Found")
    );
    assert_eq!(e.http_status, Some(404));
    let headers = vec![("grpc-message".into(), "invalid%20content-type".into())];
    let e = Adapter::map_error(415, headers, Vec::new());
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert_eq!(e.message, "invalid content-type");
    assert_eq!(e.http_status, Some(415));
    let e = Adapter::map_error(503, Vec::new(), br#"{"error":"busy"}"#.to_vec());
    assert!(e.kind == ErrorKind::Overloaded && e.retryable && e.message == "busy");
    let e = Adapter::map_error(502, Vec::new(), Vec::new());
    assert_eq!(e.message, "HTTP 502 with an empty body");
}

/// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
#[test]
fn fuzz() {
    llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
        &hex(EXAMPLE_STREAM),
        &hex(FAILED_MESSAGE),
        &rsp_message(1, 8, b" b"),
    ]);
}
