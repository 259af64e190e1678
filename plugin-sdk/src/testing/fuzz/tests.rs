//! Tests of the harness itself: splitting, mutation, and adapters with planted bugs it must find.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;
use serde_json::Value;

use super::corpus::Corpus;
use super::*;
use crate::backend::{Framing, GenRequest, Guest, GuestResponseParser, Headers};

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
            api_key_header: None,
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
