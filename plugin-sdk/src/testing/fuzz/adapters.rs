//! [`adapter`]: the properties of a backend adapter, and the strategies for the headers and
//! requests they feed it.

use proptest::prelude::*;
use proptest::sample::Index;

use super::corpus::{Corpus, input};
use super::{DEFAULT_CASES, check, split};
use crate::backend::{
    ChatMessage, Framing, GenRequest, Guest, GuestResponseParser, Headers, Prompt, Role,
};
use crate::testing::{Outcome, run_framed};

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
