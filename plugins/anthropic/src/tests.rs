//! The adapter against recorded-style streams and bodies.

use super::*;
use llmb_plugin_sdk::testing::{self, Outcome};

/// A streamed answer as Anthropic's streaming documentation shows it (spaces after colons
/// included), with a ping after the first block starts.
const TEXT: &[u8] = br#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"#;

/// Extended thinking: a thinking block with its signature, then the text block; the prompt
/// partly read from the cache.
const THINKING: &[u8] = br#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":5,"cache_creation_input_tokens":3,"cache_read_input_tokens":20,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"1071 = 2 x 462 + 147"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"\n462 = 3 x 147 + 21"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"The GCD is **21**."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":66}}

event: message_stop
data: {"type":"message_stop"}

"#;

/// A tool call: its JSON arrives as `input_json_delta`, which is no output text.
const TOOL: &[u8] = br#"event: message_start
data: {"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

const BODY: &[u8] = br#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"thinking","thinking":"Let me see.","signature":"EqQB"},{"type":"text","text":"The GCD"},{"type":"text","text":" is 21."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":4,"output_tokens":40}}"#;

const OVERLOADED: &[u8] =
    br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;

/// Frames `chunks` as the host does (one batch per read) and feeds one parser; this adapter
/// never says how many tokens a delta carried.
fn run(chunks: &[&[u8]]) -> Outcome {
    let out = testing::run(Parser::new(200, Vec::new()), chunks);
    assert_eq!(out.tokens(), 0);
    out
}

fn split_invariant(body: &[u8]) -> Outcome {
    testing::assert_split_invariant(|| Parser::new(200, Vec::new()), body)
}

/// `TEXT` up to its second delta, then `tail`.
fn text_then(tail: &str) -> Vec<u8> {
    let stop = TEXT
        .windows(26)
        .position(|w| w == b"event: content_block_stop\n")
        .unwrap();
    [&TEXT[..stop], tail.as_bytes()].concat()
}

fn request(req: impl FnOnce(&mut GenRequest)) -> Result<HttpRequest, String> {
    let mut r = GenRequest {
        id: 1,
        model: "claude-sonnet-4-5".into(),
        prompt: Prompt::Text("What is the GCD of 1071 and 462?".into()),
        max_tokens: 64,
        ignore_eos: false,
        streaming: true,
        include_usage: true,
        temperature: None,
        extra_body: None,
    };
    req(&mut r);
    Adapter::build_request(r)
}

fn body_of(http: &HttpRequest) -> Value {
    serde_json::from_slice(&http.body).unwrap()
}

#[test]
fn text_stream() {
    let out = split_invariant(TEXT);
    let texts: Vec<&str> = out.deltas.iter().map(|d| d.1.as_str()).collect();
    assert_eq!(texts, ["Hello", "!"]);
    // Frames: message_start, content_block_start, ping, then the deltas.
    assert_eq!(out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(out.reasoning, "");
    assert_eq!(out.finish.as_deref(), Some("end_turn"));
    assert_eq!(out.usage, Some((Some(25), Some(15), None)));
    assert_eq!(out.done, 1);
    assert!(out.errors.is_empty());
}

#[test]
fn thinking_is_reasoning_and_cached_tokens_count_as_prompt() {
    let out = split_invariant(THINKING);
    assert_eq!(out.reasoning, "1071 = 2 x 462 + 147\n462 = 3 x 147 + 21");
    assert_eq!(out.text(), "The GCD is **21**.");
    // Two thinking deltas (empty text), the signature left out, one text delta.
    assert_eq!(
        out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
        [2, 3, 7]
    );
    assert_eq!(out.finish.as_deref(), Some("max_tokens"));
    assert_eq!(out.usage, Some((Some(28), Some(66), Some(20))));
    assert_eq!(out.done, 1);
    let out = split_invariant(TOOL);
    assert_eq!(out.text(), "Checking");
    assert_eq!(out.deltas.len(), 1);
    assert_eq!(out.finish.as_deref(), Some("tool_use"));
    assert_eq!(out.usage, Some((Some(472), Some(89), None)));
}

#[test]
fn unnamed_events_and_usage_without_message_delta() {
    // A server that sends only `data:` lines (the type in the payload), and no usage in
    // message_delta: the input usage is still reported at message_stop.
    let body = b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\ndata: {\"type\":\"message_stop\"}\n\n";
    let out = split_invariant(body);
    assert_eq!(out.text(), "Hi");
    assert_eq!(out.finish.as_deref(), Some("end_turn"));
    assert_eq!(out.usage, Some((Some(7), Some(1), None)));
    assert_eq!(out.done, 1);
}

#[test]
fn a_stream_without_message_start_keeps_its_output_and_no_prompt_count() {
    // llama.cpp leaves `message_start` out when the first token is an incomplete UTF-8
    // sequence (recorded with Hebrew and Japanese output, `LLMB_RECORD_TRANSCRIPTS`): the answer
    // and its output count stand, and no prompt count is made up.
    let body = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\u{5e7}\u{5d5}\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":16}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let out = split_invariant(body.as_bytes());
    assert_eq!(out.text(), "\u{5e7}\u{5d5}");
    assert_eq!(out.usage, Some((None, Some(16), None)));
    assert_eq!(out.done, 1);
}

#[test]
fn in_stream_errors_fail_the_request_with_their_kind() {
    for (kind, expected) in [
        ("overloaded_error", ErrorKind::Overloaded),
        ("rate_limit_error", ErrorKind::RateLimited),
        ("invalid_request_error", ErrorKind::BadRequest),
        ("authentication_error", ErrorKind::Unauthorized),
        ("not_found_error", ErrorKind::NotFound),
        ("api_error", ErrorKind::Server),
    ] {
        let body = text_then(&format!(
            "event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"{kind}\", \"message\": \"went wrong: {kind}\"}}}}\n\n"
        ));
        let out = split_invariant(&body);
        assert_eq!((out.text().as_str(), out.done), ("Hello!", 0));
        assert_eq!(
            out.errors,
            [(expected, format!("went wrong: {kind}"))],
            "{kind}"
        );
        assert_eq!((out.finish, out.usage), (None, None));
    }
    // A proxy's error event that is not Anthropic's JSON still fails with its own words.
    for data in [
        "upstream connect error",
        "{\"message\":\"gateway timeout\"}",
    ] {
        let out = run(&[&text_then(&format!("event: error\ndata: {data}\n\n"))]);
        assert_eq!(out.errors.len(), 1, "{data}");
        assert!(!out.errors[0].1.contains("malformed"), "{:?}", out.errors);
        assert!(
            out.errors[0].1.contains("upstream") || out.errors[0].1.contains("gateway"),
            "{:?}",
            out.errors
        );
    }
}

#[test]
fn broken_streams_fail() {
    let out = split_invariant(&text_then(""));
    assert_eq!((out.text().as_str(), out.done), ("Hello!", 0));
    assert_eq!(out.errors.len(), 1);
    assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
    assert!(out.errors[0].1.contains("before message_stop"));
    let out = run(&[&text_then(
        "event: content_block_delta\ndata: {\"type\": BROKEN\n\n",
    )]);
    assert_eq!(out.errors.len(), 1);
    assert!(out.errors[0].1.contains("malformed"), "{:?}", out.errors);
    // Whatever follows message_stop is ignored.
    let after = [TEXT, b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"late\"}}\n\n"].concat();
    let out = run(&[&after]);
    assert!(out.errors.is_empty());
    assert_eq!(out.done, 1);
}

#[test]
fn request_body() {
    let http = request(|_| {}).unwrap();
    assert_eq!(
        (http.method.as_str(), http.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(http.path, Adapter::info().default_endpoint);
    assert!(
        http.headers
            .contains(&("anthropic-version".into(), "2023-06-01".into()))
    );
    assert!(
        http.headers
            .contains(&("content-type".into(), "application/json".into()))
    );
    assert_eq!(
        body_of(&http),
        json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true,
               "messages": [{"role": "user", "content": "What is the GCD of 1071 and 462?"}]})
    );
    let http = request(|r| {
        r.streaming = false;
        r.ignore_eos = true;
        r.temperature = Some(0.5);
        r.extra_body = Some(r#"{"metadata":{"user_id":"u1"},"max_tokens":32}"#.into());
        r.prompt = Prompt::Chat(vec![
            ChatMessage {
                role: Role::System,
                content: "Be brief.".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "Hi".into(),
            },
            ChatMessage {
                role: Role::Assistant,
                content: "Hello.".into(),
            },
            ChatMessage {
                role: Role::System,
                content: "Answer in French.".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "GCD?".into(),
            },
        ]);
    })
    .unwrap();
    assert_eq!(
        body_of(&http),
        json!({"model": "claude-sonnet-4-5", "max_tokens": 32, "stream": false, "temperature": 0.5,
               "system": "Be brief.\n\nAnswer in French.",
               "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                            {"role": "user", "content": "GCD?"}],
               "metadata": {"user_id": "u1"}})
    );
    assert!(request(|r| r.extra_body = Some("[1]".into())).is_err());
    assert!(!Adapter::info().supports_ignore_eos);

    // The thinking budget is process-wide state: only this test sets it, after the checks
    // of the bodies without it.
    let opt = |k: &str, v: &str| {
        vec![Kv {
            key: k.into(),
            value: v.into(),
        }]
    };
    assert!(Adapter::configure(opt("thinking-budget", "0")).is_err());
    assert!(Adapter::configure(opt("thinking-budget", "1023")).is_err());
    assert!(Adapter::configure(opt("thinking-budget", "lots")).is_err());
    assert!(Adapter::configure(opt("budget", "1024")).is_err());
    Adapter::configure(opt("thinking-budget", "2048")).unwrap();
    let v = body_of(&request(|_| {}).unwrap());
    assert_eq!(
        v["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    *THINKING_BUDGET.lock().unwrap() = None;
}

#[test]
fn non_streaming_body() {
    let c = Adapter::parse_body(200, Vec::new(), BODY.to_vec()).unwrap();
    assert_eq!(c.text, "The GCD is 21.");
    assert_eq!(c.finish.as_deref(), Some("end_turn"));
    let u = c.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens),
        (Some(16), Some(40), Some(4))
    );
    let e = Adapter::parse_body(200, Vec::new(), OVERLOADED.to_vec()).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Overloaded) && e.retryable);
    assert!(Adapter::parse_body(200, Vec::new(), b"{\"content\": 3}".to_vec()).is_err());
    // A 200 that is an error, or another API's body, is not an empty answer.
    let e = Adapter::parse_body(
        200,
        Vec::new(),
        br#"{"error":{"message":"quota"}}"#.to_vec(),
    )
    .unwrap_err();
    assert!(e.message.contains("quota"), "{e:?}");
    let chat = br#"{"object":"chat.completion","choices":[{"message":{"content":"hi"}}]}"#;
    let e = Adapter::parse_body(200, Vec::new(), chat.to_vec()).unwrap_err();
    assert!(e.message.contains("not a Messages body"), "{e:?}");
}

#[test]
fn http_errors_carry_the_server_message() {
    let e = Adapter::map_error(529, Vec::new(), OVERLOADED.to_vec());
    assert_eq!(e.message, "Overloaded");
    assert_eq!(e.http_status, Some(529));
    assert!(matches!(e.kind, ErrorKind::Overloaded) && e.retryable);
    let e = Adapter::map_error(
        401,
        Vec::new(),
        br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#.to_vec(),
    );
    assert_eq!(e.message, "invalid x-api-key");
    assert!(matches!(e.kind, ErrorKind::Unauthorized) && !e.retryable);
    let e = Adapter::map_error(
        400,
        Vec::new(),
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#.to_vec(),
    );
    assert!(matches!(e.kind, ErrorKind::ContextLength));
    let e = Adapter::map_error(
        404,
        Vec::new(),
        br#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-nope"}}"#
            .to_vec(),
    );
    assert!(matches!(e.kind, ErrorKind::NotFound));
    assert_eq!(e.message, "model: claude-nope");
    let e = Adapter::map_error(429, Vec::new(), br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#.to_vec());
    assert!(matches!(e.kind, ErrorKind::RateLimited) && e.retryable);
    let e = Adapter::map_error(502, Vec::new(), b"<html>Bad Gateway</html>".to_vec());
    assert!(matches!(e.kind, ErrorKind::Server));
    assert!(e.message.contains("Bad Gateway"), "{}", e.message);
}

/// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
#[test]
fn fuzz() {
    llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[TEXT, THINKING, TOOL, BODY, OVERLOADED]);
}

#[test]
fn images_are_image_blocks_and_data_urls_become_base64_sources() {
    let image = |url: Option<&str>| {
        ContentPart::Image(Image {
            data: b"abc".to_vec(),
            mime_type: "image/png".into(),
            url: url.map(Into::into),
            width: None,
            height: None,
        })
    };
    let mut r = GenRequest {
        id: 1,
        model: "claude".into(),
        prompt: Prompt::Multimodal(vec![MultimodalMessage {
            role: Role::User,
            parts: vec![
                ContentPart::Text("Compare.".into()),
                image(None),
                image(Some("data:image/jpeg;base64,/9j/AA==")),
                image(Some("https://example.com/cat.jpg")),
            ],
        }]),
        max_tokens: 8,
        ignore_eos: false,
        streaming: true,
        include_usage: true,
        temperature: None,
        extra_body: None,
    };
    let v = body_of(&Adapter::build_request(r.clone()).unwrap());
    assert_eq!(
        v["messages"][0]["content"],
        serde_json::json!([
            {"type": "text", "text": "Compare."},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "YWJj"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/AA=="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ])
    );
    // The API key's header is Anthropic's.
    assert_eq!(Adapter::info().api_key_header.as_deref(), Some("x-api-key"));
    r.prompt = Prompt::Text("t".into());
    assert!(Adapter::build_request(r).is_ok());
}
