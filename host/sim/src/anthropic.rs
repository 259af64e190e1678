//! Anthropic's Messages API (`POST /v1/messages`) as the simulator writes it: the error
//! envelope, the whole message, and the pieces of its event stream (`message_start`,
//! `content_block_start`, `ping`, `content_block_delta`, `content_block_stop`, `message_delta`,
//! `message_stop`), with a `thinking` block (ended by its `signature_delta`) before the `text`
//! block when the response reasons.
//!
//! Anthropic's `input_tokens` counts only the prompt tokens not read from the prompt cache; the
//! ones read are `cache_read_input_tokens`.

use std::fmt::Write as _;

use hyper::StatusCode;
use serde_json::Value;

/// What a thinking block's `signature_delta` carries (base64 of "simulated thinking").
const SIGNATURE: &str = "c2ltdWxhdGVkIHRoaW5raW5n";

/// The in-stream error of the `error_event` fault.
pub(crate) const STREAM_ERROR: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"simulated in-stream error\"}}\n\n";

/// Anthropic's error type for an HTTP status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type":…,"message":…}}`.
pub(crate) fn error_json(status: StatusCode, message: &str) -> String {
    format!(
        "{{\"type\":\"error\",\"error\":{{\"type\":\"{}\",\"message\":{}}}}}",
        error_type(status),
        Value::from(message)
    )
}

/// Anthropic answers an overloaded service with its own 529, not 503.
pub(crate) fn status(status: StatusCode) -> StatusCode {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        StatusCode::from_u16(529).expect("a valid status code")
    } else {
        status
    }
}

fn usage(prompt_tokens: u32, cached: u32, output_tokens: u32) -> String {
    format!(
        "{{\"input_tokens\":{},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":{cached},\"output_tokens\":{output_tokens}}}",
        prompt_tokens - cached.min(prompt_tokens)
    )
}

fn stop_reason(hit_max: bool) -> &'static str {
    if hit_max { "max_tokens" } else { "end_turn" }
}

/// The non-streaming message: a thinking block when it reasoned, a text block unless every
/// token was reasoning.
#[allow(clippy::too_many_arguments)]
pub(crate) fn whole_body(
    id: &str,
    model_json: &str,
    reasoning: &str,
    text: &str,
    reasoning_tokens: u32,
    output_tokens: u32,
    prompt_tokens: u32,
    cached: u32,
    hit_max: bool,
) -> String {
    let mut content = Vec::with_capacity(2);
    if reasoning_tokens > 0 {
        content.push(format!(
            "{{\"type\":\"thinking\",\"thinking\":\"{reasoning}\",\"signature\":\"{SIGNATURE}\"}}"
        ));
    }
    if output_tokens > reasoning_tokens {
        content.push(format!("{{\"type\":\"text\",\"text\":\"{text}\"}}"));
    }
    format!(
        "{{\"id\":\"{id}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{model_json},\"content\":[{}],\"stop_reason\":\"{}\",\"stop_sequence\":null,\"usage\":{}}}",
        content.join(","),
        stop_reason(hit_max),
        usage(prompt_tokens, cached, output_tokens)
    )
}

/// `message_start` (the input usage, one output token so far), the first block's
/// `content_block_start`, and a `ping`, as the API sends them before the first delta. Without
/// `message_start` when `skip_start` (the `no_start_event` fault): llama.cpp (as
/// llama-cpp-python 0.3.36 vendors it) opens a `/v1/messages` stream with `content_block_start`
/// when its first token is an incomplete UTF-8 sequence (an emoji, Japanese), and its
/// `message_delta` carries only the output count.
pub(crate) fn preamble(
    id: &str,
    model_json: &str,
    prompt_tokens: u32,
    cached: u32,
    thinking: bool,
    skip_start: bool,
) -> String {
    let mut out = if skip_start {
        String::new()
    } else {
        format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"{id}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{model_json},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{}}}}}\n\n",
            usage(prompt_tokens, cached, 1)
        )
    };
    block_start(&mut out, 0, thinking);
    out.push_str("event: ping\ndata: {\"type\":\"ping\"}\n\n");
    out
}

fn block_start(out: &mut String, index: u32, thinking: bool) {
    let block = if thinking {
        "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}"
    } else {
        "{\"type\":\"text\",\"text\":\"\"}"
    };
    let _ = write!(
        out,
        "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{index},\"content_block\":{block}}}\n\n"
    );
}

fn block_stop(out: &mut String, index: u32) {
    let _ = write!(
        out,
        "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{index}}}\n\n"
    );
}

/// The thinking block's end: its `signature_delta` and `content_block_stop`.
fn thinking_end(out: &mut String) {
    let _ = write!(
        out,
        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"signature_delta\",\"signature\":\"{SIGNATURE}\"}}}}\n\n"
    );
    block_stop(out, 0);
}

/// One token's `content_block_delta`: `thinking_delta` in the thinking block (index 0), else
/// `text_delta` in the text block (index 1 after a thinking block). The first answer token of
/// a response that reasoned first ends the thinking block and starts the text block.
pub(crate) fn token(reasoning: bool, first_answer: bool, text_index: u32, word: &str) -> String {
    let mut out = String::with_capacity(320);
    if reasoning {
        let _ = write!(
            out,
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"thinking_delta\",\"thinking\":\" {word}\"}}}}\n\n"
        );
        return out;
    }
    if first_answer {
        thinking_end(&mut out);
        block_start(&mut out, text_index, false);
    }
    let _ = write!(
        out,
        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{text_index},\"delta\":{{\"type\":\"text_delta\",\"text\":\" {word}\"}}}}\n\n"
    );
    out
}

/// After the last token: the open block's end, `message_delta` with the stop reason and the
/// output tokens, `message_stop`.
pub(crate) fn end(
    reasoning_tokens: u32,
    output_tokens: u32,
    text_index: u32,
    hit_max: bool,
) -> String {
    let mut out = String::with_capacity(400);
    if output_tokens > reasoning_tokens {
        block_stop(&mut out, text_index);
    } else {
        thinking_end(&mut out);
    }
    let _ = write!(
        out,
        "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{output_tokens}}}}}\n\n\
         event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n",
        stop_reason(hit_max)
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::config::SimConfig;
    use crate::testutil::*;

    fn body(max_tokens: u32, stream: bool) -> String {
        format!(
            r#"{{"model":"llmb-sim","max_tokens":{max_tokens},"system":"be brief","messages":[{{"role":"user","content":"hi there"}}],"stream":{stream}}}"#
        )
    }

    /// `(event name, its data's type, the delta's type when it has one)` of every event.
    fn shape(events: &[(String, Value)]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|(name, v)| {
                assert_eq!(v["type"], name.as_str());
                let detail = v["delta"]["type"]
                    .as_str()
                    .or(v["content_block"]["type"].as_str())
                    .unwrap_or_default();
                (name.clone(), detail.to_string())
            })
            .collect()
    }

    fn expected(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn streams_a_thinking_block_then_the_text_block() {
        let sim = sim(SimConfig {
            reasoning_tokens: 2,
            ..fast()
        })
        .await;
        for _ in 0..4 {
            let r = post(&sim, "/v1/messages", &body(6, true)).await;
            assert_eq!(r.status, 200);
            assert!(
                r.head.contains("content-type: text/event-stream"),
                "{}",
                r.head
            );
            assert!(r.complete);
            let events = named_events(&r.body);
            let n = events[events.len() - 2].1["usage"]["output_tokens"]
                .as_u64()
                .unwrap() as usize;
            // Natural lengths: between half and all of max_tokens.
            assert!((3..=6).contains(&n), "{n}");
            // The preamble, one write per token, the end.
            assert_eq!(r.chunks.len(), n + 2);
            let mut want = vec![
                ("message_start", ""),
                ("content_block_start", "thinking"),
                ("ping", ""),
                ("content_block_delta", "thinking_delta"),
                ("content_block_delta", "thinking_delta"),
                ("content_block_delta", "signature_delta"),
                ("content_block_stop", ""),
                ("content_block_start", "text"),
            ];
            want.extend(std::iter::repeat_n(
                ("content_block_delta", "text_delta"),
                n - 2,
            ));
            want.extend([
                ("content_block_stop", ""),
                ("message_delta", ""),
                ("message_stop", ""),
            ]);
            assert_eq!(shape(&events), expected(&want));
            let message = &events[0].1["message"];
            assert!(message["id"].as_str().unwrap().starts_with("msg_"));
            assert_eq!(message["model"], "llmb-sim");
            // Two messages under the template (5 each), four words, the generation prompt (3).
            assert_eq!(message["usage"]["input_tokens"], 17);
            assert_eq!(message["usage"]["output_tokens"], 1);
            for (_, v) in &events[3..5] {
                assert_eq!(v["index"], 0);
                assert_eq!(
                    llmb_engine::tokenizer::count_words(v["delta"]["thinking"].as_str().unwrap()),
                    1
                );
            }
            assert_eq!(events[6].1["index"], 0);
            assert_eq!(events[7].1["index"], 1);
            for (_, v) in &events[8..8 + n - 2] {
                assert_eq!(v["index"], 1);
                assert!(v["delta"]["text"].as_str().unwrap().starts_with(' '));
            }
            let end = &events[events.len() - 2].1["delta"];
            assert_eq!(
                end["stop_reason"],
                if n == 6 { "max_tokens" } else { "end_turn" }
            );
        }
        // Cut off while thinking: the thinking block ends, no text block.
        let r = post(&sim, "/v1/messages", &body(1, true)).await;
        assert_eq!(
            shape(&named_events(&r.body)),
            expected(&[
                ("message_start", ""),
                ("content_block_start", "thinking"),
                ("ping", ""),
                ("content_block_delta", "thinking_delta"),
                ("content_block_delta", "signature_delta"),
                ("content_block_stop", ""),
                ("message_delta", ""),
                ("message_stop", ""),
            ])
        );
        sim.shutdown().await;

        // Without reasoning: one text block.
        let plain = crate::testutil::sim(fast()).await;
        let r = post(&plain, "/v1/messages", &body(2, true)).await;
        let shape = shape(&named_events(&r.body));
        assert_eq!(shape[1], ("content_block_start".into(), "text".into()));
        assert!(!r.body.contains("thinking") && !r.body.contains("signature"));
        assert_eq!(shape.last().unwrap().0, "message_stop");
        plain.shutdown().await;
    }

    #[tokio::test]
    async fn whole_messages_and_cached_prompts() {
        let sim = sim(SimConfig {
            reasoning_tokens: 1,
            prefix_cache: true,
            ..fast()
        })
        .await;
        let words = vec!["w"; 40].join(" ");
        let request = format!(
            r#"{{"model":"llmb-sim","max_tokens":4,"messages":[{{"role":"user","content":[{{"type":"text","text":"{words}"}}]}}]}}"#
        );
        let first: Value =
            serde_json::from_str(&post(&sim, "/v1/messages", &request).await.body).unwrap();
        assert_eq!(first["type"], "message");
        assert_eq!(first["role"], "assistant");
        let content = first["content"].as_array().unwrap();
        assert_eq!(content[0]["type"], "thinking");
        assert_eq!(
            llmb_engine::tokenizer::count_words(content[0]["thinking"].as_str().unwrap()),
            1
        );
        assert!(!content[0]["signature"].as_str().unwrap().is_empty());
        assert_eq!(content[1]["type"], "text");
        let n = first["usage"]["output_tokens"].as_u64().unwrap();
        assert!((2..=4).contains(&n));
        assert_eq!(
            llmb_engine::tokenizer::count_words(content[1]["text"].as_str().unwrap()) as u64,
            n - 1
        );
        assert_eq!(
            first["stop_reason"],
            if n == 4 { "max_tokens" } else { "end_turn" }
        );
        // 40 words, one message (5), the generation prompt (3).
        assert_eq!(first["usage"]["input_tokens"], 48);
        assert_eq!(first["usage"]["cache_read_input_tokens"], 0);
        // The same prompt again: its two whole 16-token blocks come from the cache, and
        // input_tokens counts only the rest.
        let again: Value =
            serde_json::from_str(&post(&sim, "/v1/messages", &request).await.body).unwrap();
        let usage = &again["usage"];
        assert_eq!(usage["cache_read_input_tokens"], 32);
        assert_eq!(usage["input_tokens"], 16);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn errors_in_anthropics_envelope() {
        let sim = sim(SimConfig {
            api_key: Some("k3y".into()),
            ..fast()
        })
        .await;
        let error = |r: &Reply| -> (u16, String, String) {
            let v: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(v["type"], "error", "{}", r.body);
            (
                r.status,
                v["error"]["type"].as_str().unwrap().to_string(),
                v["error"]["message"].as_str().unwrap().to_string(),
            )
        };
        let send = |headers: &'static str, body: String| {
            let addr = sim.addr();
            async move { request(addr, "POST", "/v1/messages", headers, &body).await }
        };
        let r = send("", body(2, false)).await;
        assert_eq!(
            error(&r),
            (
                401,
                "authentication_error".into(),
                "invalid x-api-key".into()
            )
        );
        let r = send("x-api-key: nope\r\n", body(2, false)).await;
        assert_eq!(r.status, 401);
        // Anthropic's header or the Bearer token the other routes take.
        assert_eq!(send("x-api-key: k3y\r\n", body(2, false)).await.status, 200);
        let bearer = "authorization: Bearer k3y\r\n";
        assert_eq!(send(bearer, body(2, false)).await.status, 200);
        // The key header of Anthropic is not one for the OpenAI routes.
        let r = request(
            sim.addr(),
            "POST",
            "/v1/completions",
            "x-api-key: k3y\r\n",
            r#"{"prompt":"p"}"#,
        )
        .await;
        assert_eq!(r.status, 401);

        let r = send(bearer, body(2, false).replace("llmb-sim", "claude-nope")).await;
        assert_eq!(
            error(&r),
            (404, "not_found_error".into(), "model: claude-nope".into())
        );
        let r = send(bearer, r#"{"model":"llmb-sim","messages":[]}"#.into()).await;
        assert_eq!(
            error(&r),
            (
                400,
                "invalid_request_error".into(),
                "max_tokens: Field required".into()
            )
        );
        let r = send(bearer, r#"{"model":"llmb-sim","max_tokens":4}"#.into()).await;
        assert_eq!(error(&r).0, 400);
        let faulty = |fault: &str, stream: bool| {
            body(4, stream).replace("hi there", &format!("hi __sim_fault:{fault}__"))
        };
        let r = send(bearer, faulty("http500", true)).await;
        assert_eq!(
            error(&r),
            (500, "api_error".into(), "simulated internal error".into())
        );
        let r = send(bearer, faulty("overloaded", false)).await;
        let (status, kind, _) = error(&r);
        assert_eq!((status, kind.as_str()), (529, "overloaded_error"));
        assert!(r.head.contains("retry-after: 2"), "{}", r.head);
        let r = send(bearer, faulty("rate_limited", false)).await;
        assert_eq!(error(&r).1, "rate_limit_error");
        // In the stream: an `error` event after the first token, then the body ends.
        let r = send(bearer, faulty("error_event", true)).await;
        let events = named_events(&r.body);
        let (name, v) = events.last().unwrap();
        assert_eq!(name, "error");
        assert_eq!(v["error"]["type"], "api_error");
        assert_eq!(v["error"]["message"], "simulated in-stream error");
        assert_eq!(events[events.len() - 2].1["delta"]["type"], "text_delta");
        let r = send(bearer, faulty("error_event", false)).await;
        assert_eq!(
            error(&r),
            (500, "api_error".into(), "simulated in-stream error".into())
        );
        sim.shutdown().await;
    }
}
