//! Response shapes shared by the dialects: whole (non-streamed) bodies in each server's key
//! order, and the pieces the streamed events reuse (llama.cpp's final fields, Triton's keys,
//! Responses usage, SGLang's finish reason, token ids, OpenPPL's protobuf response message).

use bytes::Bytes;

use llmb_engine::tokenizer::word_for;

use crate::anthropic;
use crate::api::Api;
use crate::state::SimState;

/// The non-streaming response body, vLLM's key order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn whole_body(
    state: &SimState,
    api: Api,
    id: &str,
    created: u64,
    word_offset: u64,
    prompt_tokens: u32,
    cached_tokens: Option<u32>,
    output_tokens: u32,
    reasoning_tokens: u32,
    hit_max: bool,
) -> String {
    let words = |range: std::ops::Range<u32>| {
        let mut text = String::with_capacity(range.len() * 8);
        for k in range {
            text.push(' ');
            text.push_str(word_for(word_offset.wrapping_add(u64::from(k))));
        }
        text
    };
    // The first `reasoning_tokens` words are reasoning (none outside the dialects with a
    // reasoning channel), the rest the answer.
    let reasoning = words(0..reasoning_tokens);
    let text = words(reasoning_tokens..output_tokens);
    let finish = if hit_max { "length" } else { "stop" };
    let cached = cached_tokens.unwrap_or(0);
    let choice = match api {
        Api::TgiStream | Api::TgiGenerate => {
            let (reason, text) = if hit_max {
                ("length", text)
            } else {
                // The last token is EOS: counted, not in the text.
                let cut = text.rfind(' ').unwrap_or(0);
                ("eos_token", text[..cut].to_string())
            };
            return format!(
                "{{\"generated_text\":\"{text}\",\"details\":{{\"finish_reason\":\"{reason}\",\"generated_tokens\":{output_tokens},\"seed\":null,\"prefill\":[],\"tokens\":[]}}}}"
            );
        }
        Api::LlamaCpp => {
            return format!(
                "{{\"index\":0,\"content\":\"{text}\",\"tokens\":[],\"id_slot\":0,\"stop\":true,\"model\":{},{}}}",
                state.model_json,
                llamacpp_final_fields(prompt_tokens, output_tokens, hit_max, cached)
            );
        }
        Api::Lmdeploy => {
            let reason = if hit_max { "length" } else { "stop" };
            return format!(
                "{{\"text\":\"{text}\",\"output_ids\":[],\"meta_info\":{{\"prompt_tokens\":{prompt_tokens},\"completion_tokens\":{output_tokens},\"finish_reason\":{{\"type\":\"{reason}\"}},\"output_token_logprobs\":null,\"routed_experts\":null}}}}"
            );
        }
        Api::Trtllm => {
            return format!("{TRITON_PREFIX}\"text_output\":\"{text}\"}}");
        }
        Api::Responses => {
            return format!(
                "{{\"id\":\"resp_{id}\",\"object\":\"response\",\"created_at\":{created},\"status\":\"{}\",\"error\":null,\"incomplete_details\":{},\"model\":{},\"output\":{},\"usage\":{}}}",
                if hit_max { "incomplete" } else { "completed" },
                responses_incomplete_details(hit_max),
                state.model_json,
                responses_output(id, &reasoning, &text, reasoning_tokens, output_tokens),
                responses_usage(prompt_tokens, output_tokens, cached, reasoning_tokens)
            );
        }
        Api::Anthropic => {
            return anthropic::whole_body(
                id,
                &state.model_json,
                &reasoning,
                &text,
                reasoning_tokens,
                output_tokens,
                prompt_tokens,
                cached,
                hit_max,
            );
        }
        Api::Transcription => {
            return format!(
                "{{\"text\":\"{text}\",\"usage\":{{\"type\":\"tokens\",\"input_tokens\":{prompt_tokens},\"output_tokens\":{output_tokens},\"total_tokens\":{}}}}}",
                prompt_tokens + output_tokens
            );
        }
        // gRPC always streams.
        Api::Ppl => return String::new(),
        Api::Mii => {
            return format!(
                "[{{\"finish_reason\":\"{}\",\"generated_length\":{output_tokens},\"generated_text\":\"{text}\",\"prompt_length\":{prompt_tokens}}}]",
                if hit_max { "length" } else { "stop" }
            );
        }
        Api::Amsv2 => {
            return format!(
                "{{\"data\":{{\"id\":\"{id}\",\"choices\":[{{\"index\":0,\"role\":\"assistant\",\"message\":\"{text}\",\"finish_reason\":\"{finish}\"}}],\"usage\":{{\"prompt_tokens\":{prompt_tokens},\"completion_tokens\":{output_tokens},\"total_tokens\":{}}}}}}}",
                prompt_tokens + output_tokens
            );
        }
        Api::LightLlm => {
            return format!(
                "{{\"generated_text\":[\"{text}\"],\"count_output_tokens\":{output_tokens},\"finish_reason\":\"{}\"}}",
                if hit_max { "length" } else { "stop" }
            );
        }
        Api::Sglang => {
            let ids: Vec<String> = (0..output_tokens)
                .map(|k| token_id(word_offset.wrapping_add(u64::from(k))).to_string())
                .collect();
            return format!(
                "{{\"text\":\"{text}\",\"output_ids\":[{}],\"meta_info\":{{\"id\":\"{id}\",\"finish_reason\":{},\"prompt_tokens\":{prompt_tokens},\"completion_tokens\":{output_tokens},\"cached_tokens\":{cached},\"e2e_latency\":0.1}}}}",
                ids.join(","),
                sglang_finish(hit_max, output_tokens)
            );
        }
        Api::Completions => format!(
            "{{\"index\":0,\"text\":\"{text}\",\"logprobs\":null,\"finish_reason\":\"{finish}\",\"stop_reason\":null,\"prompt_logprobs\":null}}"
        ),
        Api::Chat if reasoning_tokens > 0 => {
            // A response cut off while reasoning has no answer: `content` is null.
            let content = if text.is_empty() {
                "null".to_string()
            } else {
                format!("\"{text}\"")
            };
            format!(
                "{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":{content},\"reasoning_content\":\"{reasoning}\",\"reasoning\":\"{reasoning}\"}},\"logprobs\":null,\"finish_reason\":\"{finish}\",\"stop_reason\":null}}"
            )
        }
        Api::Chat => format!(
            "{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{text}\"}},\"logprobs\":null,\"finish_reason\":\"{finish}\",\"stop_reason\":null}}"
        ),
    };
    let details = match cached_tokens {
        Some(n) => format!("{{\"cached_tokens\":{n}}}"),
        None => "null".to_string(),
    };
    format!(
        "{{\"id\":\"{id}\",\"object\":\"{}\",\"created\":{created},\"model\":{},\"choices\":[{choice}],\"usage\":{{\"prompt_tokens\":{prompt_tokens},\"total_tokens\":{},\"completion_tokens\":{output_tokens},{}\"prompt_tokens_details\":{details}}}}}",
        api.object(),
        state.model_json,
        prompt_tokens + output_tokens,
        completion_details(reasoning_tokens)
    )
}

/// `"completion_tokens_details":{"reasoning_tokens":R},` when the response reasoned, else
/// nothing (OpenAI usage; the reasoning tokens are part of `completion_tokens`).
pub(crate) fn completion_details(reasoning_tokens: u32) -> String {
    if reasoning_tokens == 0 {
        return String::new();
    }
    format!("\"completion_tokens_details\":{{\"reasoning_tokens\":{reasoning_tokens}}},")
}

/// The Responses API's reasoning output item (`rs_<id>`): in progress without content, or
/// completed with its `reasoning_text`.
pub(crate) fn responses_reasoning_item(id: &str, text: Option<&str>) -> String {
    match text {
        None => format!(
            "{{\"id\":\"rs_{id}\",\"type\":\"reasoning\",\"summary\":[],\"content\":[],\"status\":\"in_progress\"}}"
        ),
        Some(text) => format!(
            "{{\"id\":\"rs_{id}\",\"type\":\"reasoning\",\"summary\":[],\"content\":[{{\"type\":\"reasoning_text\",\"text\":\"{text}\"}}],\"status\":\"completed\"}}"
        ),
    }
}

/// The Responses API's completed message output item (`msg_<id>`) with its `output_text` part.
pub(crate) fn responses_message_item(id: &str, text: &str) -> String {
    format!(
        "{{\"id\":\"msg_{id}\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{}],\"role\":\"assistant\"}}",
        responses_text_part(text)
    )
}

/// An `output_text` content part.
pub(crate) fn responses_text_part(text: &str) -> String {
    format!("{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"{text}\"}}")
}

/// The `output` list of a finished response: the reasoning item when it reasoned, then the
/// message item unless every token was reasoning.
pub(crate) fn responses_output(
    id: &str,
    reasoning: &str,
    text: &str,
    reasoning_tokens: u32,
    output_tokens: u32,
) -> String {
    let mut items = Vec::with_capacity(2);
    if reasoning_tokens > 0 {
        items.push(responses_reasoning_item(id, Some(reasoning)));
    }
    if output_tokens > reasoning_tokens {
        items.push(responses_message_item(id, text));
    }
    format!("[{}]", items.join(","))
}

/// The fields of llama.cpp's final event after `model` (protocols/llamacpp.md key order).
pub(crate) fn llamacpp_final_fields(
    prompt_tokens: u32,
    output_tokens: u32,
    hit_max: bool,
    cached: u32,
) -> String {
    let stop_type = if hit_max { "limit" } else { "eos" };
    format!(
        "\"tokens_predicted\":{output_tokens},\"tokens_evaluated\":{prompt_tokens},\"generation_settings\":{{\"n_predict\":{output_tokens},\"seed\":4294967295,\"temperature\":0.800000011920929}},\"prompt\":\"\",\"has_new_line\":false,\"truncated\":false,\"stop_type\":\"{stop_type}\",\"stopping_word\":\"\",\"tokens_cached\":{},\"timings\":{{\"prompt_n\":{},\"predicted_n\":{output_tokens}}}",
        prompt_tokens + output_tokens,
        prompt_tokens - cached.min(prompt_tokens)
    )
}

/// Triton's response keys before `text_output` (alphabetical, compact), as the ensemble sends.
pub(crate) const TRITON_PREFIX: &str = "{\"batch_index\":0,\"context_logits\":0.0,\"cum_log_probs\":0.0,\"generation_logits\":0.0,\"model_name\":\"ensemble\",\"model_version\":\"1\",\"output_log_probs\":[0.0],\"sequence_end\":false,\"sequence_id\":0,\"sequence_index\":0,\"sequence_start\":false,";

/// The Responses API usage object.
pub(crate) fn responses_usage(
    prompt_tokens: u32,
    output_tokens: u32,
    cached: u32,
    reasoning_tokens: u32,
) -> String {
    format!(
        "{{\"input_tokens\":{prompt_tokens},\"input_tokens_details\":{{\"cached_tokens\":{cached}}},\"output_tokens\":{output_tokens},\"output_tokens_details\":{{\"reasoning_tokens\":{reasoning_tokens}}},\"total_tokens\":{}}}",
        prompt_tokens + output_tokens
    )
}

/// SGLang's `finish_reason` object.
pub(crate) fn sglang_finish(hit_max: bool, output_tokens: u32) -> String {
    if hit_max {
        format!("{{\"type\":\"length\",\"length\":{output_tokens}}}")
    } else {
        "{\"type\":\"stop\",\"matched\":2}".to_string()
    }
}

/// A token id for the simulated word at `position` (stable, never a special id).
pub(crate) fn token_id(position: u64) -> u64 {
    1000 + position % 30_000
}

fn pb_put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One gRPC message holding `BatchedResponse{rsp: [Response{status, id, generated}]}`.
pub(crate) fn ppl_response(status: u64, id: u64, generated: Option<&str>) -> Bytes {
    let mut rsp = Vec::with_capacity(32);
    if status != 0 {
        rsp.push(0x08);
        pb_put_varint(&mut rsp, status);
    }
    if id != 0 {
        rsp.push(0x10);
        pb_put_varint(&mut rsp, id);
    }
    if let Some(text) = generated {
        rsp.push(0x1a);
        pb_put_varint(&mut rsp, text.len() as u64);
        rsp.extend_from_slice(text.as_bytes());
    }
    let mut batched = vec![0x0a];
    pb_put_varint(&mut batched, rsp.len() as u64);
    batched.extend_from_slice(&rsp);
    let mut out = Vec::with_capacity(batched.len() + 5);
    out.push(0);
    out.extend_from_slice(&(batched.len() as u32).to_be_bytes());
    out.extend_from_slice(&batched);
    Bytes::from(out)
}

/// The Responses API's `incomplete_details`: why a response stopped short (the cap), or null.
pub(crate) fn responses_incomplete_details(hit_max: bool) -> &'static str {
    if hit_max {
        "{\"reason\":\"max_output_tokens\"}"
    } else {
        "null"
    }
}
