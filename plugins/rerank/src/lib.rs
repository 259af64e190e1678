//! Rerank and score APIs: one query against a list of documents, answered with a relevance
//! score per document and no generated text.
//!
//! - `api=rerank` (the default), `POST /v1/rerank`: the Cohere/Jina-style API that vLLM
//!   (`/v1/rerank`, `/rerank`, `/v2/rerank`), SGLang and Cohere serve. Body `{model, query,
//!   documents, top_n?}` (`--plugin-opt top-n=K`); answer `{results: [{index, relevance_score,
//!   document?}], usage: {total_tokens}}` (Cohere's tokens under `meta`; SGLang answers a bare
//!   array of `{index, score}`).
//! - `api=tei`, `POST /rerank`: Hugging Face Text Embeddings Inference. Body `{query, texts}`;
//!   answer a bare array `[{index, score}]`, with no usage.
//! - `api=score`, `POST /v1/score`: vLLM's score API. Body `{model, text_1: query, text_2:
//!   documents}`; answer `{data: [{index, score}], usage: {prompt_tokens, total_tokens}}`.
//!
//! The answer is read by its shape, whichever `api` asked: `results`, `data` or a bare array,
//! scores in `relevance_score` or `score`. Where the query and documents come from: a chat
//! prompt of two messages or more gives its first message as the query and every later one as a
//! document; a text prompt (or a chat of one message) is split on word boundaries into `1 +
//! documents` parts of nearly equal length (`--plugin-opt documents=N`, default 4), the first
//! the query, so the `random` and `sharegpt` datasets work as they are and every word of the
//! prompt is sent once.
//!
//! The answer is one JSON body, never a stream, so the adapter works with and without
//! `--no-stream` alike: with `raw` framing it buffers the body and reads it at its end, reporting
//! the usage (prompt tokens from `prompt_tokens`, else `total_tokens`, else Cohere's
//! `meta.tokens.input_tokens` or `meta.billed_units.input_tokens`; Cohere's search units are not
//! tokens and are left out; none for TEI), no output tokens, and one delta with no text that
//! the host stamps with the arrival of the body's end (TTFT = E2EL). An answer whose results do
//! not match the documents sent (another count than the documents, or `top_n` when one was
//! sent; an index out of range or twice) fails as a protocol error: the parser cannot see its
//! request, so each instance remembers the shapes of the requests it built and not yet saw
//! answered, and an answer must fit one of them.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use llmb_plugin_sdk::backend::*;
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::json::{is_error_object, merge_extra_body};
use llmb_plugin_sdk::openai::{self, AUDIO_NOT_SUPPORTED};
use llmb_plugin_sdk::whole_body::{WholeBody, describe, in_band_error};
use serde_json::{Value, json};

/// Documents a text prompt is split into when `documents` is not given.
const DEFAULT_DOCUMENTS: u32 = 4;
/// The most documents `documents=N` may ask for.
const MAX_DOCUMENTS: u32 = 1000;

/// The API spoken (`--plugin-opt api=`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RerankApi {
    Rerank,
    Tei,
    Score,
}

impl RerankApi {
    fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rerank" => Ok(Self::Rerank),
            "tei" => Ok(Self::Tei),
            "score" => Ok(Self::Score),
            other => Err(format!(
                "api must be rerank (Cohere/Jina/vLLM /v1/rerank), tei (TEI /rerank) or score (vLLM /v1/score), not {other:?}"
            )),
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Rerank => "/v1/rerank",
            Self::Tei => "/rerank",
            Self::Score => "/v1/score",
        }
    }

    /// The body field that carries the documents.
    fn documents_field(self) -> &'static str {
        match self {
            Self::Rerank => "documents",
            Self::Tei => "texts",
            Self::Score => "text_2",
        }
    }
}

thread_local! {
    static API: Cell<RerankApi> = const { Cell::new(RerankApi::Rerank) };
    static DOCUMENTS: Cell<u32> = const { Cell::new(DEFAULT_DOCUMENTS) };
    static TOP_N: Cell<Option<u32>> = const { Cell::new(None) };
    /// Requests built and not yet answered, by (results expected, documents sent): what an
    /// answer is checked against. A request that failed leaves its entry, which only makes the
    /// check laxer; the entries are as many as the shapes, not the requests.
    static SENT: RefCell<BTreeMap<(usize, usize), u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// The `rerank` adapter.
pub struct Adapter;

/// Per-request state: the body so far, and whether `finish` already answered.
#[derive(Default)]
pub struct Parser {
    body: WholeBody,
}

/// `text` split on word boundaries into a query and up to `documents` documents of nearly
/// equal length (the first parts one word longer when the words do not divide evenly).
fn split_words(text: &str, documents: u32) -> Result<(String, Vec<String>), String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() < 2 {
        return Err(format!(
            "a prompt of {} word(s) cannot be split into a query and documents (at least 2 words)",
            words.len()
        ));
    }
    let parts = (documents as usize + 1).min(words.len());
    let (base, extra) = (words.len() / parts, words.len() % parts);
    let mut rest = &words[..];
    let mut out: Vec<String> = (0..parts)
        .map(|i| {
            let (part, after) = rest.split_at(base + usize::from(i < extra));
            rest = after;
            part.join(" ")
        })
        .collect();
    let query = out.remove(0);
    Ok((query, out))
}

/// The query and documents of a prompt (see the crate's documentation).
fn query_and_documents(prompt: &Prompt, documents: u32) -> Result<(String, Vec<String>), String> {
    match prompt {
        Prompt::Text(t) => split_words(t, documents),
        Prompt::Chat(messages) => match messages.as_slice() {
            [] => Err("an empty chat prompt has no query".into()),
            [only] => split_words(&only.content, documents),
            [query, rest @ ..] => Ok((
                query.content.clone(),
                rest.iter().map(|m| m.content.clone()).collect(),
            )),
        },
        Prompt::Audio(_) => Err(AUDIO_NOT_SUPPORTED.into()),
        Prompt::Multimodal(_) => Err(llmb_plugin_sdk::media::IMAGES_NOT_SUPPORTED.into()),
    }
}

fn as_u32(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_u64)
        .map(|n| n.min(u64::from(u32::MAX)) as u32)
}

/// The prompt tokens an answer reports, where its server puts them.
fn prompt_tokens(v: &Value) -> Option<u32> {
    match v {
        // SGLang: per result, `meta_info.prompt_tokens`; counted only when every result has it.
        Value::Array(items) => items
            .iter()
            .map(|item| as_u32(item.pointer("/meta_info/prompt_tokens")))
            // Huge counts from a broken server saturate instead of overflowing.
            .try_fold(0u32, |total, n| Some(total.saturating_add(n?)))
            .filter(|_| !items.is_empty()),
        _ => [
            "/usage/prompt_tokens",
            "/usage/total_tokens",
            "/meta/tokens/input_tokens",
            "/meta/billed_units/input_tokens",
        ]
        .iter()
        .find_map(|p| as_u32(v.pointer(p))),
    }
}

/// Reads a 2xx body: the documents' indices in the order ranked and the prompt tokens.
fn parse_ranking(status: u16, body: &[u8]) -> Result<(Vec<u64>, Option<u32>), BackendError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        protocol(format!("the rerank body is not JSON ({e}): {shown}"))
    })?;
    if is_error_object(&v) {
        return Err(in_band_error(status, body, &v));
    }
    let items = match &v {
        Value::Array(items) => items,
        Value::Object(o) => match o.get("results").or_else(|| o.get("data")) {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(protocol(format!(
                    "expected rerank results (`results`, `data` or an array of scores), found {}",
                    describe(&v)
                )));
            }
        },
        other => {
            return Err(protocol(format!(
                "expected rerank results (`results`, `data` or an array of scores), found {}",
                describe(other)
            )));
        }
    };
    let mut indices = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let index = item.get("index").and_then(Value::as_u64);
        let scored = item
            .get("relevance_score")
            .or_else(|| item.get("score"))
            .is_some_and(Value::is_number);
        match index {
            Some(index) if scored => indices.push(index),
            _ => {
                return Err(protocol(format!(
                    "result {i} is not a scored document (an `index` and a `relevance_score` or `score`), found {}",
                    describe(item)
                )));
            }
        }
    }
    check_against_sent(&indices)?;
    Ok((indices, prompt_tokens(&v)))
}

/// Records a request's shape: how many results its answer must hold for how many documents.
fn remember(expected: usize, documents: usize) {
    SENT.with(|s| *s.borrow_mut().entry((expected, documents)).or_default() += 1);
}

/// The ranked indices must be distinct and fit a request this instance sent and has not seen
/// answered: as many results as it expected, every index among its documents. With no request
/// on record (an answer parsed on its own), only distinctness is checked.
fn check_against_sent(indices: &[u64]) -> Result<(), BackendError> {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(protocol(format!(
            "the answer ranks document {} twice",
            w[0]
        )));
    }
    SENT.with(|sent| {
        let mut sent = sent.borrow_mut();
        if sent.is_empty() {
            return Ok(());
        }
        let fits = |&(expected, documents): &(usize, usize)| {
            expected == indices.len() && sorted.last().is_none_or(|&m| m < documents as u64)
        };
        let key = sent.keys().copied().find(fits);
        let (key, found) = match key {
            Some(key) => (Some(key), true),
            // The only shape in flight is the one answered, wrongly.
            None if sent.len() == 1 => (sent.keys().next().copied(), false),
            None => (None, false),
        };
        if let Some(key) = key
            && let Some(n) = sent.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                sent.remove(&key);
            }
        }
        if found {
            return Ok(());
        }
        let shown: Vec<String> = sorted.iter().take(12).map(u64::to_string).collect();
        let ellipsis = if sorted.len() > 12 { ", ..." } else { "" };
        let wanted = match key {
            Some((expected, documents)) => {
                format!("the request sent {documents} documents and expects {expected} results")
            }
            None => "no request in flight sent that".into(),
        };
        Err(protocol(format!(
            "the answer's results do not match the documents sent: {} results with indices [{}{ellipsis}], but {wanted}",
            indices.len(),
            shown.join(", "),
        )))
    })
}

/// The usage of a ranking: its prompt tokens, nothing generated.
fn usage(prompt_tokens: Option<u32>) -> Usage {
    Usage {
        reasoning_tokens: None,
        prompt_tokens,
        completion_tokens: Some(0),
        cached_prompt_tokens: None,
    }
}

impl Guest for Adapter {
    type ResponseParser = Parser;

    fn info() -> BackendInfo {
        BackendInfo {
            api_key_header: None,
            name: "rerank".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Rerank APIs: Cohere/Jina-style POST /v1/rerank (vLLM, SGLang, Cohere; option top-n=K), api=tei for TEI's /rerank, api=score for vLLM's /v1/score; a chat prompt's first message is the query and the others the documents, a text prompt is split into a query and documents=N parts (default 4); one JSON body read at its end with or without --no-stream (TTFT = E2EL, no output tokens)".into(),
            // Once configured, the chosen api's path (the host reads it again after configure).
            default_endpoint: API.with(Cell::get).path().into(),
            framing: Framing::Raw,
            supports_ignore_eos: false,
            http2: false,
        }
    }

    fn configure(options: Vec<Kv>) -> Result<(), String> {
        for kv in options {
            let positive = |max: u32| {
                kv.value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "{} must be a number from 1 to {max}, not {:?}",
                            kv.key, kv.value
                        )
                    })
            };
            match kv.key.as_str() {
                "api" => API.with(|a| RerankApi::parse(&kv.value).map(|v| a.set(v)))?,
                "documents" => DOCUMENTS.with(|d| positive(MAX_DOCUMENTS).map(|n| d.set(n)))?,
                "top-n" => TOP_N.with(|t| positive(u32::MAX).map(|n| t.set(Some(n))))?,
                other => {
                    return Err(format!(
                        "unknown option {other:?} for the rerank adapter (known: api, documents, top-n)"
                    ));
                }
            }
        }
        if TOP_N.with(Cell::get).is_some() && API.with(Cell::get) != RerankApi::Rerank {
            return Err(
                "top-n is an option of api=rerank only (TEI and score answer every document)"
                    .into(),
            );
        }
        Ok(())
    }

    fn build_request(req: GenRequest) -> Result<HttpRequest, String> {
        let api = API.with(Cell::get);
        let (query, documents) = query_and_documents(&req.prompt, DOCUMENTS.with(Cell::get))?;
        let mut body = match api {
            RerankApi::Rerank => {
                json!({"model": req.model, "query": query, "documents": documents})
            }
            RerankApi::Tei => json!({"query": query, "texts": documents}),
            RerankApi::Score => json!({"model": req.model, "text_1": query, "text_2": documents}),
        };
        if let Some(n) = TOP_N.with(Cell::get) {
            body["top_n"] = json!(n);
        }
        merge_extra_body(&mut body, req.extra_body.as_deref())?;
        // What was sent after --extra-body, which may replace the documents or add top_n.
        let sent = match body.get(api.documents_field()) {
            Some(Value::Array(items)) => items.len(),
            Some(_) => 1,
            None => 0,
        };
        let top_n = body
            .get("top_n")
            .and_then(Value::as_u64)
            .filter(|&n| n > 0 && api == RerankApi::Rerank);
        let expected = top_n.map_or(sent, |n| sent.min(usize::try_from(n).unwrap_or(usize::MAX)));
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        remember(expected, sent);
        Ok(HttpRequest {
            method: "POST".into(),
            path: api.path().into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: bytes,
        })
    }

    fn parse_body(
        status: u16,
        _headers: Headers,
        body: Vec<u8>,
    ) -> Result<Completion, BackendError> {
        let (_, prompt_tokens) = parse_ranking(status, &body)?;
        Ok(Completion {
            reasoning: String::new(),
            text: String::new(),
            finish: None,
            usage: Some(usage(prompt_tokens)),
        })
    }

    fn map_error(status: u16, _headers: Headers, body: Vec<u8>) -> BackendError {
        openai::map_error(status, &body)
    }

    /// A rerank request is query-document pairs under the model's template, which no tokenize
    /// route counts in one request.
    fn tokenize_request(_req: GenRequest) -> Option<HttpRequest> {
        None
    }

    fn parse_tokenize(_body: Vec<u8>) -> Result<u32, String> {
        Err(llmb_plugin_sdk::tokenize::NO_ROUTE.into())
    }
}

impl GuestResponseParser for Parser {
    fn new(_status: u16, _headers: Headers) -> Self {
        Self::default()
    }

    fn feed(&self, batch: FrameBatch) -> Vec<StreamEvent> {
        self.body.feed(&batch)
    }

    fn finish(&self, _trailers: Headers) -> Vec<StreamEvent> {
        self.body
            .finish(|body| parse_ranking(200, body).map(|(_, prompt_tokens)| usage(prompt_tokens)))
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;
    use llmb_plugin_sdk::testing::{Outcome, run_framed};

    /// vLLM's `/v1/rerank` (Jina's shape): sorted by relevance, documents echoed.
    const VLLM: &[u8] = br#"{"id":"rerank-9c1","model":"BAAI/bge-reranker-base","usage":{"total_tokens":42},"results":[{"index":1,"document":{"text":"The giant panda is a bear."},"relevance_score":0.998},{"index":0,"document":{"text":"hi"},"relevance_score":0.0001}]}"#;
    /// Cohere v2: no usage tokens but the billed search units and `meta.tokens`.
    const COHERE: &[u8] = br#"{"id":"07734bd2","results":[{"index":1,"relevance_score":0.99},{"index":0,"relevance_score":0.01}],"meta":{"api_version":{"version":"2"},"billed_units":{"search_units":1},"tokens":{"input_tokens":38,"output_tokens":0}}}"#;
    /// TEI's `/rerank`: a bare array.
    const TEI: &[u8] = br#"[{"index":1,"score":0.9987},{"index":0,"score":0.0002}]"#;
    /// SGLang's `/v1/rerank`: a bare array with per-result meta.
    const SGLANG: &[u8] = br#"[{"score":0.99,"document":"The giant panda","index":1,"meta_info":{"id":"a","prompt_tokens":20}},{"score":0.02,"document":"hi","index":0,"meta_info":{"id":"b","prompt_tokens":9}}]"#;
    /// vLLM's `/v1/score`: input order.
    const SCORE: &[u8] = br#"{"id":"score-1","object":"list","created":1,"model":"m","data":[{"index":0,"object":"score","score":0.0001},{"index":1,"object":"score","score":0.998}],"usage":{"prompt_tokens":40,"total_tokens":40,"completion_tokens":0,"prompt_tokens_details":null}}"#;
    const VLLM_ERROR: &[u8] = br#"{"object":"error","message":"The model `nope` does not exist.","type":"NotFoundError","param":null,"code":404}"#;
    const TEI_ERROR: &[u8] =
        br#"{"error":"Input validation error: `texts` cannot be empty","error_type":"empty"}"#;

    fn run(chunks: &[&[u8]]) -> Outcome {
        run_framed(
            &Parser::new(200, Vec::new()),
            Framing::Raw,
            chunks,
            Vec::new(),
        )
    }

    fn gen_request(prompt: Prompt, extra: Option<&str>) -> GenRequest {
        GenRequest {
            id: 1,
            model: "bge".into(),
            prompt,
            max_tokens: 16,
            ignore_eos: true,
            streaming: true,
            include_usage: true,
            temperature: None,
            extra_body: extra.map(str::to_owned),
        }
    }

    fn build(prompt: Prompt, extra: Option<&str>) -> Result<(String, Value), String> {
        let http = Adapter::build_request(gen_request(prompt, extra))?;
        assert_eq!(http.method, "POST");
        Ok((http.path, serde_json::from_slice(&http.body).unwrap()))
    }

    fn text(t: &str) -> Prompt {
        Prompt::Text(t.into())
    }

    fn opt(k: &str, v: &str) -> Vec<Kv> {
        vec![Kv {
            key: k.into(),
            value: v.into(),
        }]
    }

    /// Options and requests on record live in this thread (one per component instance in
    /// WebAssembly): each test starts from the defaults.
    fn reset() {
        API.with(|a| a.set(RerankApi::Rerank));
        DOCUMENTS.with(|d| d.set(DEFAULT_DOCUMENTS));
        TOP_N.with(|t| t.set(None));
        SENT.with(|s| s.borrow_mut().clear());
    }

    #[test]
    fn text_prompts_split_into_a_query_and_documents() {
        assert_eq!(
            split_words("a b c d e f g h i j k", 4).unwrap(),
            (
                "a b c".into(),
                vec!["d e".into(), "f g".into(), "h i".into(), "j k".into()]
            )
        );
        // Every word sent once, whatever the spacing.
        let (q, d) = split_words("  one\ttwo\n three  ", 4).unwrap();
        assert_eq!((q.as_str(), d), ("one", vec!["two".into(), "three".into()]));
        assert_eq!(
            split_words("a b c d e f", 1).unwrap(),
            ("a b c".into(), vec!["d e f".into()])
        );
        assert!(split_words("lonely", 4).unwrap_err().contains("1 word"));
        assert!(split_words("", 4).is_err());
    }

    #[test]
    fn request_bodies_for_each_api() {
        reset();
        let (path, v) = build(text("what is a panda the bear of china"), None).unwrap();
        assert_eq!(path, "/v1/rerank");
        assert_eq!(path, Adapter::info().default_endpoint);
        assert_eq!(
            v,
            json!({"model": "bge", "query": "what is",
                   "documents": ["a panda", "the bear", "of", "china"]})
        );
        let chat = Prompt::Chat(vec![
            ChatMessage {
                role: Role::User,
                content: "what is a panda?".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "hi".into(),
            },
            ChatMessage {
                role: Role::Assistant,
                content: "The giant panda is a bear.".into(),
            },
        ]);
        let (_, v) = build(chat.clone(), Some(r#"{"return_documents":false}"#)).unwrap();
        assert_eq!(
            v,
            json!({"model": "bge", "query": "what is a panda?", "return_documents": false,
                   "documents": ["hi", "The giant panda is a bear."]})
        );
        // One message: split like a text prompt.
        let one = Prompt::Chat(vec![ChatMessage {
            role: Role::User,
            content: "q d".into(),
        }]);
        assert_eq!(build(one, None).unwrap().1["documents"], json!(["d"]));
        assert!(build(Prompt::Chat(Vec::new()), None).is_err());
        assert!(build(text("x"), None).is_err());
        assert!(build(text("a b"), Some("[]")).is_err());

        Adapter::configure(opt("api", "tei")).unwrap();
        let (path, v) = build(chat.clone(), None).unwrap();
        assert_eq!(path, "/rerank");
        assert_eq!(
            v,
            json!({"query": "what is a panda?", "texts": ["hi", "The giant panda is a bear."]})
        );
        Adapter::configure(opt("api", "score")).unwrap();
        Adapter::configure(opt("documents", "2")).unwrap();
        let (path, v) = build(text("a b c d e"), None).unwrap();
        assert_eq!(path, "/v1/score");
        assert_eq!(
            v,
            json!({"model": "bge", "text_1": "a b", "text_2": ["c d", "e"]})
        );
        reset();
    }

    #[test]
    fn options_are_checked() {
        reset();
        assert!(Adapter::configure(opt("api", "cohere2")).is_err());
        assert!(Adapter::configure(opt("documents", "0")).is_err());
        assert!(Adapter::configure(opt("documents", "1001")).is_err());
        assert!(Adapter::configure(opt("top-n", "x")).is_err());
        let e = Adapter::configure(opt("docs", "3")).unwrap_err();
        assert!(e.contains("known: api, documents, top-n"), "{e}");
        Adapter::configure(opt("top-n", "2")).unwrap();
        let (_, v) = build(text("a b c d e"), None).unwrap();
        assert_eq!(v["top_n"], 2);
        // TEI and score have no top_n.
        assert!(Adapter::configure(opt("api", "tei")).is_err());
        reset();
    }

    #[test]
    fn answers_in_every_shape_give_the_usage_and_one_delta_at_the_end() {
        reset();
        for (body, prompt) in [
            (VLLM, Some(42)),
            (COHERE, Some(38)),
            (TEI, None),
            (SGLANG, Some(29)),
            (SCORE, Some(40)),
        ] {
            let whole = run(&[body]);
            assert_eq!(whole.errors, [], "{}", String::from_utf8_lossy(body));
            assert_eq!(whole.usage, Some((prompt, Some(0), None)));
            assert_eq!(whole.deltas.len(), 1);
            assert_eq!(whole.deltas[0].1, "");
            assert_eq!(whole.done, 1);
            for k in [1, body.len() / 2, body.len() - 1] {
                let split = run(&[&body[..k], &body[k..]]);
                assert_eq!((split.usage, split.done), (whole.usage, 1), "split at {k}");
            }
            let c = Adapter::parse_body(200, Vec::new(), body.to_vec()).unwrap();
            assert_eq!(c.text, "");
            let u = c.usage.unwrap();
            assert_eq!((u.prompt_tokens, u.completion_tokens), (prompt, Some(0)));
        }
    }

    #[test]
    fn answers_must_match_the_documents_sent() {
        reset();
        // Two documents sent: the two-result answers fit, once each.
        build(text("q d1 d2"), None).unwrap();
        assert_eq!(run(&[VLLM]).errors, []);
        // Nothing on record any more: only distinctness is checked.
        assert_eq!(run(&[TEI]).errors, []);

        // Four documents sent, two ranked.
        build(text("q a b c d"), None).unwrap();
        let out = run(&[VLLM]);
        assert_eq!(out.errors.len(), 1);
        assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
        assert!(
            out.errors[0]
                .1
                .contains("2 results with indices [0, 1], but the request sent 4 documents and expects 4 results"),
            "{}",
            out.errors[0].1
        );
        assert_eq!((out.deltas.len(), out.done), (0, 0));

        // Two sent, an index out of range.
        build(text("q a b"), None).unwrap();
        let e = Adapter::parse_body(
            200,
            Vec::new(),
            br#"{"results":[{"index":0,"relevance_score":0.5},{"index":2,"relevance_score":0.4}]}"#
                .to_vec(),
        )
        .unwrap_err();
        assert!(e.message.contains("indices [0, 2]"), "{}", e.message);
        // The same document twice.
        let e = Adapter::parse_body(
            200,
            Vec::new(),
            br#"[{"index":0,"score":0.5},{"index":0,"score":0.4}]"#.to_vec(),
        )
        .unwrap_err();
        assert!(
            e.message.contains("ranks document 0 twice"),
            "{}",
            e.message
        );

        // top_n (from the option or --extra-body) makes fewer results right.
        build(text("q a b c d"), Some(r#"{"top_n":2}"#)).unwrap();
        assert_eq!(run(&[COHERE]).errors, []);
        // Two requests of other shapes in flight: the answer fits one of them.
        build(text("q a b c d"), None).unwrap();
        build(text("q a b"), None).unwrap();
        assert_eq!(run(&[SCORE]).errors, []);
        let e = run(&[SCORE]).errors;
        assert!(e[0].1.contains("sent 4 documents"), "{e:?}");
        reset();
    }

    #[test]
    fn what_is_not_a_ranking_fails_and_says_what_it_was() {
        reset();
        for (body, says) in [
            (
                &br#"{"object":"list","data":[{"object":"embedding","embedding":[0.1]}]}"#[..],
                "result 0 is not a scored document",
            ),
            (br#"{"choices":[]}"#, "found an object with keys [choices]"),
            (
                br#"{"object":"chat.completion"}"#,
                "found an object of type \"chat.completion\"",
            ),
            (br#""ok""#, "found a JSON string"),
            (
                br#"[{"index":"0","score":1}]"#,
                "result 0 is not a scored document",
            ),
            (b"<html>", "not JSON"),
        ] {
            let out = run(&[body]);
            assert_eq!(out.errors.len(), 1);
            assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
            assert!(out.errors[0].1.contains(says), "{}", out.errors[0].1);
        }
        let out = run(&[VLLM_ERROR]);
        assert_eq!(
            out.errors,
            [(
                ErrorKind::NotFound,
                "The model `nope` does not exist.".into()
            )]
        );
    }

    #[test]
    fn errors_by_kind_with_the_servers_message() {
        let e = Adapter::map_error(404, Vec::new(), VLLM_ERROR.to_vec());
        assert!(matches!(e.kind, ErrorKind::NotFound));
        assert_eq!(e.message, "The model `nope` does not exist.");
        let e = Adapter::map_error(400, Vec::new(), TEI_ERROR.to_vec());
        assert!(matches!(e.kind, ErrorKind::BadRequest));
        assert_eq!(e.message, "Input validation error: `texts` cannot be empty");
        let e = Adapter::map_error(429, Vec::new(), br#"{"message":"You are using a Trial key, which is limited to 10 API calls / minute."}"#.to_vec());
        assert!(matches!(e.kind, ErrorKind::RateLimited) && e.retryable);
        assert!(e.message.starts_with("You are using a Trial key"));
        let e = Adapter::map_error(500, Vec::new(), Vec::new());
        assert!(matches!(e.kind, ErrorKind::Server));
        assert_eq!(e.message, "HTTP 500 with an empty body");
        assert!(Adapter::tokenize_request(gen_request(text("a b"), None)).is_none());
    }

    /// Arbitrary and mutated responses in arbitrary reads: no panic.
    #[test]
    fn fuzz() {
        reset();
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            VLLM, COHERE, TEI, SGLANG, SCORE, VLLM_ERROR, TEI_ERROR,
        ]);
    }
}
