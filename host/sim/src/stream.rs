//! A streamed response: the [`Generation`] state machine hyper polls as the body, which sleeps
//! to each token's deadline and writes every event of every dialect from precomputed pieces, each
//! in one exact-size allocation, and injects the streaming faults.
//! Long because: one generation's bytes for every dialect (OpenAI, Responses with its reasoning
//! item, Anthropic's blocks, the native routes) come from one state machine and its tests.

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context as TaskContext, Poll, ready};

use bytes::Bytes;
use hyper::body::Frame;
use rand::rngs::SmallRng;
use tokio::time::{Instant, Sleep};

use llmb_engine::tokenizer::word_for;

use crate::anthropic;
use crate::api::Api;
use crate::faults::Fault;
use crate::send_log::PieceLog;
use crate::shapes::{
    TRITON_PREFIX, llamacpp_final_fields, ppl_response, responses_incomplete_details,
    responses_message_item, responses_output, responses_reasoning_item, responses_text_part,
    responses_usage, sglang_finish, token_id,
};
use crate::state::SimState;
use crate::timing::{ActiveGuard, itl_s, secs};

const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";
const MALFORMED_EVENT: &[u8] = b"data: {\"choices\":[{\"text\": BROKEN\n\n";
const ERROR_EVENT: &[u8] = b"data: {\"error\":{\"message\":\"simulated in-stream error\",\"type\":\"InternalServerError\",\"param\":null,\"code\":500}}\n\n";

/// One SSE event in one exact-size allocation (so `Bytes::from` does not allocate again).
fn concat(parts: &[&str]) -> Bytes {
    let len = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len);
    for part in parts {
        out.extend_from_slice(part.as_bytes());
    }
    Bytes::from(out)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Step {
    /// Chat's role-only chunk, due at TTFT.
    Role,
    /// Token `sent`, due when `sleep` fires.
    Token,
    Malformed,
    ErrorEvent,
    Usage,
    Done,
    /// End the body with an error: hyper aborts the chunked body and closes the connection.
    Drop,
    /// Send half of the next event, then end the body cleanly.
    Truncated,
    /// Send nothing more, ever, leaving the connection open.
    Stall,
    Finished,
}

/// One streamed response: a state machine hyper polls as the response body. Dropped (and so
/// stopped) as soon as the connection goes away.
pub(crate) struct Generation {
    pub(crate) state: Arc<SimState>,
    /// Released when the stream ends, or when the body is dropped mid-way.
    pub(crate) _active: Option<ActiveGuard>,
    pub(crate) api: Api,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":` shared by every event.
    pub(crate) prefix: String,
    pub(crate) prompt_tokens: u32,
    /// Reported in the usage event when the prefix cache is on.
    pub(crate) cached_tokens: Option<u32>,
    pub(crate) output_tokens: u32,
    /// The first this many tokens are reasoning (0 outside the dialects with a reasoning
    /// channel); at most `output_tokens`.
    pub(crate) reasoning_tokens: u32,
    pub(crate) hit_max: bool,
    pub(crate) include_usage: bool,
    pub(crate) word_offset: u64,
    pub(crate) fault: Fault,
    pub(crate) rng: SmallRng,
    pub(crate) arrived: Instant,
    /// Seconds after `arrived` at which the next token is due (absolute, so no drift).
    pub(crate) offset_s: f64,
    pub(crate) sleep: Pin<Box<Sleep>>,
    /// `sleep` was reset and has not fired yet.
    pub(crate) armed: bool,
    /// The drop fault already returned `Pending` once, letting hyper flush the chunks before it.
    pub(crate) yielded: bool,
    /// Token chunks already produced.
    pub(crate) sent: u32,
    pub(crate) step: Step,
    /// An in-stream error was sent: the request does not count as a success.
    pub(crate) failed: bool,
    pub(crate) id: String,
    /// Echoed in every gRPC response.
    pub(crate) request_id: u64,
    /// The Responses API numbers its events.
    pub(crate) sequence: u32,
    pub(crate) created: u64,
    /// SGLang streams the text and ids generated so far in every event; the Responses API
    /// repeats its answer (and its reasoning) when an item ends.
    pub(crate) text_so_far: String,
    pub(crate) reasoning_so_far: String,
    pub(crate) ids_so_far: String,
    /// Set by the server when the simulator keeps a send log: every piece yielded is registered.
    pub(crate) send_log: Option<PieceLog>,
}

impl Generation {
    pub(crate) fn poll_event(
        &mut self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let token = self.step == Step::Token;
        let event = match self.step {
            Step::Role if self.api == Api::Responses => {
                ready!(self.wait(cx));
                self.step = Step::Token;
                self.responses_preamble()
            }
            Step::Role if self.api == Api::Anthropic => {
                ready!(self.wait(cx));
                self.step = Step::Token;
                Bytes::from(anthropic::preamble(
                    &self.id,
                    &self.state.model_json,
                    self.prompt_tokens,
                    self.cached_tokens.unwrap_or(0),
                    self.reasoning_tokens > 0,
                    self.fault == Fault::NoStartEvent,
                ))
            }
            Step::Role => {
                ready!(self.wait(cx));
                self.step = Step::Token;
                concat(&[
                    self.prefix.as_str(),
                    "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
                ])
            }
            Step::Token => {
                ready!(self.wait(cx));
                let event = self.token_event();
                self.sent += 1;
                self.state.generation_tokens.fetch_add(1, Relaxed);
                self.step = self.after_token();
                event
            }
            Step::Malformed => {
                self.step = self.next_token();
                Bytes::from_static(MALFORMED_EVENT)
            }
            Step::ErrorEvent if self.api == Api::Ppl => {
                self.failed = true;
                self.step = Step::Done;
                ppl_response(2, self.request_id, None)
            }
            Step::ErrorEvent => {
                self.failed = true;
                self.step = Step::Done;
                Bytes::from_static(match self.api {
                    Api::TgiStream | Api::TgiGenerate => {
                        b"data:{\"error\":\"simulated in-stream error\",\"error_type\":\"generation\"}\n\n"
                    }
                    Api::LlamaCpp => {
                        b"error: {\"code\":500,\"message\":\"simulated in-stream error\",\"type\":\"server_error\"}\n\n"
                    }
                    Api::Sglang => b"data: {\"error\":{\"message\":\"simulated in-stream error\"}}\n\n",
                    Api::Lmdeploy => b"data: {\"error\":{\"message\":\"simulated in-stream error\",\"type\":\"internal_error\",\"code\":500,\"param\":null,\"object\":\"error\"}}\n\n",
                    Api::Trtllm => b"data: {\"error\":\"simulated in-stream error\"}\n\n",
                    Api::Responses => b"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"simulated in-stream error\",\"param\":null,\"sequence_number\":99}\n\n",
                    Api::Amsv2 => b"data:{\"error\":{\"code\":\"internal_error\",\"message\":\"simulated in-stream error\"}}\n\n",
                    Api::Anthropic => anthropic::STREAM_ERROR,
                    // LightLLM and MII have no in-stream error: the body just ends.
                    Api::LightLlm | Api::Mii => b"",
                    Api::Completions | Api::Chat | Api::Transcription | Api::Ppl => ERROR_EVENT,
                })
            }
            Step::Usage => {
                self.step = Step::Done;
                self.usage_event()
            }
            Step::Done => {
                if !self.failed {
                    self.state.successes.fetch_add(1, Relaxed);
                }
                self._active = None;
                self.step = Step::Finished;
                // Only OpenAI chat/completions, SGLang and LMDeploy end with `[DONE]`.
                match self.api {
                    Api::Completions
                    | Api::Chat
                    | Api::Sglang
                    | Api::Lmdeploy
                    | Api::Transcription => Bytes::from_static(DONE_EVENT),
                    Api::Ppl => {
                        let mut trailers = hyper::HeaderMap::new();
                        trailers
                            .insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Api::Mii if !self.failed => Bytes::from_static(DONE_EVENT),
                    Api::Amsv2 => Bytes::from_static(b"data:[DONE]\n\n"),
                    _ => return Poll::Ready(None),
                }
            }
            Step::Drop => {
                // hyper polls the body again right after buffering a chunk and drops its write
                // buffer on a body error: yield once so the chunks before the cut reach the client.
                if !std::mem::replace(&mut self.yielded, true) {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self._active = None;
                self.step = Step::Finished;
                return Poll::Ready(Some(Err(io::Error::other("simulated connection drop"))));
            }
            Step::Truncated => {
                let event = self.token_event();
                self._active = None;
                self.step = Step::Finished;
                event.slice(..event.len() / 2)
            }
            // Nothing will wake this body again, as intended.
            Step::Stall => return Poll::Pending,
            Step::Finished => return Poll::Ready(None),
        };
        if let Some(log) = &self.send_log {
            log.piece(token, event.len());
        }
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    fn wait(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.armed {
            ready!(self.sleep.as_mut().poll(cx));
            self.armed = false;
        }
        Poll::Ready(())
    }

    fn token_event(&mut self) -> Bytes {
        let position = self.word_offset.wrapping_add(u64::from(self.sent));
        let word = word_for(position);
        let last = self.sent + 1 == self.output_tokens;
        let reasoning = self.sent < self.reasoning_tokens;
        match self.api {
            Api::TgiStream | Api::TgiGenerate => {
                let index = self.sent + 1;
                let token = if last && !self.hit_max {
                    "{\"id\":2,\"text\":\"</s>\",\"logprob\":-0.01,\"special\":true}".to_string()
                } else {
                    format!(
                        "{{\"id\":{},\"text\":\" {word}\",\"logprob\":-0.25,\"special\":false}}",
                        token_id(position)
                    )
                };
                if !last {
                    self.text_so_far.push(' ');
                    self.text_so_far.push_str(word);
                    return Bytes::from(format!(
                        "data:{{\"index\":{index},\"token\":{token},\"generated_text\":null,\"details\":null}}\n\n"
                    ));
                }
                let reason = if self.hit_max {
                    self.text_so_far.push(' ');
                    self.text_so_far.push_str(word);
                    "length"
                } else {
                    "eos_token"
                };
                Bytes::from(format!(
                    "data:{{\"index\":{index},\"token\":{token},\"generated_text\":\"{}\",\"details\":{{\"finish_reason\":\"{reason}\",\"generated_tokens\":{},\"seed\":null,\"input_length\":{}}}}}\n\n",
                    self.text_so_far, self.output_tokens, self.prompt_tokens
                ))
            }
            Api::LightLlm => {
                let finish = match (last, self.hit_max) {
                    (false, _) => "\"finished\":false,\"finish_reason\":null",
                    (true, true) => "\"finished\":true,\"finish_reason\":\"length\"",
                    (true, false) => "\"finished\":true,\"finish_reason\":\"stop\"",
                };
                Bytes::from(format!(
                    "data:{{\"token\":{{\"id\":{},\"text\":\" {word}\",\"logprob\":-0.25,\"special\":false,\"count_output_tokens\":{},\"prompt_tokens\":{}}},\"generated_text\":null,{finish},\"details\":null}}\n\n",
                    token_id(position),
                    self.sent + 1,
                    self.prompt_tokens
                ))
            }
            Api::Lmdeploy => {
                let finish = match (last, self.hit_max) {
                    (false, _) => "null",
                    (true, true) => "{\"type\":\"length\"}",
                    (true, false) => "{\"type\":\"stop\"}",
                };
                Bytes::from(format!(
                    "data: {{\"text\":\" {word}\",\"output_ids\":[{}],\"meta_info\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\"finish_reason\":{finish},\"output_token_logprobs\":null,\"routed_experts\":null}}}}\n\n",
                    token_id(position),
                    self.prompt_tokens,
                    self.sent + 1
                ))
            }
            Api::Mii => Bytes::from(format!("data: {{\"text\": [\" {word}\"]}}\n\n")),
            Api::Ppl => {
                let status = if last { 1 } else { 0 };
                ppl_response(status, self.request_id, Some(&format!(" {word}")))
            }
            Api::Transcription => {
                let finish = if last {
                    ",\"finish_reason\":\"stop\",\"stop_reason\":null"
                } else {
                    ""
                };
                concat(&[
                    self.prefix.as_str(),
                    "[{\"delta\":{\"content\":\" ",
                    word,
                    "\"}",
                    finish,
                    "}]}\n\n",
                ])
            }
            Api::Amsv2 => {
                let tail = if last {
                    format!(
                        "\"{}\"}}],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{}}}}}}}",
                        if self.hit_max { "length" } else { "stop" },
                        self.prompt_tokens,
                        self.output_tokens,
                        self.prompt_tokens + self.output_tokens
                    )
                } else {
                    "\"\"}]}}".to_string()
                };
                Bytes::from(format!(
                    "data:{{\"data\":{{\"id\":\"{}\",\"choices\":[{{\"index\":0,\"delta\":\" {word}\",\"finish_reason\":{tail}\n\n",
                    self.id
                ))
            }
            Api::Trtllm => Bytes::from(format!(
                "data: {TRITON_PREFIX}\"text_output\":\" {word}\"}}\n\n"
            )),
            Api::Responses if reasoning => {
                self.reasoning_so_far.push(' ');
                self.reasoning_so_far.push_str(word);
                let seq = self.next_sequence();
                Bytes::from(format!(
                    "event: response.reasoning_text.delta\ndata: {{\"type\":\"response.reasoning_text.delta\",\"sequence_number\":{seq},\"item_id\":\"rs_{}\",\"output_index\":0,\"content_index\":0,\"delta\":\" {word}\"}}\n\n",
                    self.id
                ))
            }
            Api::Responses => {
                let mut out = String::new();
                if self.reasoning_tokens > 0 && self.sent == self.reasoning_tokens {
                    // The first answer token: the reasoning item ends and the message item
                    // starts, in the same write.
                    self.responses_reasoning_done(&mut out);
                    self.responses_message_added(&mut out);
                }
                self.text_so_far.push(' ');
                self.text_so_far.push_str(word);
                let seq = self.next_sequence();
                let _ = write!(
                    out,
                    "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":{seq},\"item_id\":\"msg_{}\",\"output_index\":{},\"content_index\":0,\"delta\":\" {word}\",\"logprobs\":[]}}\n\n",
                    self.id,
                    self.message_index()
                );
                Bytes::from(out)
            }
            Api::Anthropic => Bytes::from(anthropic::token(
                reasoning,
                self.reasoning_tokens > 0 && self.sent == self.reasoning_tokens,
                self.message_index(),
                word,
            )),
            Api::LlamaCpp => Bytes::from(format!(
                "data: {{\"index\":0,\"content\":\" {word}\",\"tokens\":[{}],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":{},\"tokens_evaluated\":{}}}\n\n",
                token_id(position),
                self.sent + 1,
                self.prompt_tokens
            )),
            Api::Sglang => {
                self.text_so_far.push(' ');
                self.text_so_far.push_str(word);
                if !self.ids_so_far.is_empty() {
                    self.ids_so_far.push(',');
                }
                let _ = write!(self.ids_so_far, "{}", token_id(position));
                let finish = if last {
                    sglang_finish(self.hit_max, self.output_tokens)
                } else {
                    "null".to_string()
                };
                Bytes::from(format!(
                    "data: {{\"text\":\"{}\",\"output_ids\":[{}],\"meta_info\":{{\"id\":\"{}\",\"finish_reason\":{finish},\"prompt_tokens\":{},\"completion_tokens\":{},\"cached_tokens\":{}}}}}\n\n",
                    self.text_so_far,
                    self.ids_so_far,
                    self.id,
                    self.prompt_tokens,
                    self.sent + 1,
                    self.cached_tokens.unwrap_or(0)
                ))
            }
            Api::Completions => {
                let finish = match (last, self.hit_max) {
                    (false, _) => "null",
                    (true, true) => "\"length\"",
                    (true, false) => "\"stop\"",
                };
                concat(&[
                    self.prefix.as_str(),
                    "[{\"index\":0,\"text\":\" ",
                    word,
                    "\",\"logprobs\":null,\"finish_reason\":",
                    finish,
                    ",\"stop_reason\":null}],\"usage\":null}\n\n",
                ])
            }
            Api::Chat => {
                let tail = match (last, self.hit_max) {
                    (false, _) => "null}]}\n\n",
                    (true, true) => "\"length\",\"stop_reason\":null}]}\n\n",
                    (true, false) => "\"stop\",\"stop_reason\":null}]}\n\n",
                };
                if reasoning {
                    // vLLM < 0.11 and DeepSeek name it `reasoning_content`, vLLM >= 0.11
                    // `reasoning`: both, as a server in between would send.
                    return concat(&[
                        self.prefix.as_str(),
                        "[{\"index\":0,\"delta\":{\"reasoning_content\":\" ",
                        word,
                        "\",\"reasoning\":\" ",
                        word,
                        "\"},\"logprobs\":null,\"finish_reason\":",
                        tail,
                    ]);
                }
                concat(&[
                    self.prefix.as_str(),
                    "[{\"index\":0,\"delta\":{\"content\":\" ",
                    word,
                    "\"},\"logprobs\":null,\"finish_reason\":",
                    tail,
                ])
            }
        }
    }

    /// `response.created`, `response.in_progress`, then the first output item: the reasoning
    /// item when the response reasons first, else the message item and its text part.
    fn responses_preamble(&mut self) -> Bytes {
        let response = self.responses_object("in_progress", "[]", "null");
        let mut out = String::with_capacity(1024);
        for (seq, kind) in [(0, "response.created"), (1, "response.in_progress")] {
            let _ = write!(
                out,
                "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{seq},\"response\":{response}}}\n\n"
            );
        }
        self.sequence = 1;
        if self.reasoning_tokens > 0 {
            let seq = self.next_sequence();
            let _ = write!(
                out,
                "event: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"sequence_number\":{seq},\"output_index\":0,\"item\":{}}}\n\n",
                responses_reasoning_item(&self.id, None)
            );
        } else {
            self.responses_message_added(&mut out);
        }
        Bytes::from(out)
    }

    /// The Responses API numbers its events from 0; the number of the next one.
    fn next_sequence(&mut self) -> u32 {
        self.sequence += 1;
        self.sequence
    }

    /// The message item's `output_index` (Responses) or the text block's `index` (Anthropic):
    /// after the reasoning item or thinking block when there is one.
    fn message_index(&self) -> u32 {
        u32::from(self.reasoning_tokens > 0)
    }

    /// `response.output_item.added` for the message item and `response.content_part.added`
    /// for its text part.
    fn responses_message_added(&mut self, out: &mut String) {
        let (added, part) = (self.next_sequence(), self.next_sequence());
        let _ = write!(
            out,
            "event: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"sequence_number\":{added},\"output_index\":{index},\"item\":{{\"id\":\"msg_{id}\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}}}\n\n\
             event: response.content_part.added\ndata: {{\"type\":\"response.content_part.added\",\"sequence_number\":{part},\"item_id\":\"msg_{id}\",\"output_index\":{index},\"content_index\":0,\"part\":{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"\"}}}}\n\n",
            id = self.id,
            index = self.message_index()
        );
    }

    /// `response.reasoning_text.done` and `response.output_item.done` for the reasoning item.
    fn responses_reasoning_done(&mut self, out: &mut String) {
        let (text_done, item_done) = (self.next_sequence(), self.next_sequence());
        let _ = write!(
            out,
            "event: response.reasoning_text.done\ndata: {{\"type\":\"response.reasoning_text.done\",\"sequence_number\":{text_done},\"item_id\":\"rs_{id}\",\"output_index\":0,\"content_index\":0,\"text\":\"{text}\"}}\n\n\
             event: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"sequence_number\":{item_done},\"output_index\":0,\"item\":{item}}}\n\n",
            id = self.id,
            text = self.reasoning_so_far,
            item = responses_reasoning_item(&self.id, Some(&self.reasoning_so_far))
        );
    }

    fn responses_object(&self, status: &str, output: &str, usage: &str) -> String {
        let incomplete = responses_incomplete_details(status == "incomplete");
        format!(
            "{{\"id\":\"resp_{}\",\"object\":\"response\",\"created_at\":{},\"status\":\"{status}\",\"error\":null,\"incomplete_details\":{incomplete},\"instructions\":null,\"max_output_tokens\":{},\"model\":{},\"output\":{output},\"parallel_tool_calls\":true,\"temperature\":1.0,\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,\"usage\":{usage}}}",
            self.id, self.created, self.output_tokens, self.state.model_json
        )
    }

    /// The end of the open item (`response.output_text.done` … `response.output_item.done` of
    /// the message, or the reasoning item's end when every token was reasoning), then
    /// `response.completed` with the usage.
    fn responses_completion(&mut self) -> Bytes {
        let mut out = String::with_capacity(2048);
        if self.output_tokens > self.reasoning_tokens {
            let (text_done, part_done, item_done) = (
                self.next_sequence(),
                self.next_sequence(),
                self.next_sequence(),
            );
            let text = &self.text_so_far;
            let _ = write!(
                out,
                "event: response.output_text.done\ndata: {{\"type\":\"response.output_text.done\",\"sequence_number\":{text_done},\"item_id\":\"msg_{id}\",\"output_index\":{index},\"content_index\":0,\"text\":\"{text}\",\"logprobs\":[]}}\n\n\
                 event: response.content_part.done\ndata: {{\"type\":\"response.content_part.done\",\"sequence_number\":{part_done},\"item_id\":\"msg_{id}\",\"output_index\":{index},\"content_index\":0,\"part\":{part}}}\n\n\
                 event: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"sequence_number\":{item_done},\"output_index\":{index},\"item\":{item}}}\n\n",
                id = self.id,
                index = self.message_index(),
                part = responses_text_part(text),
                item = responses_message_item(&self.id, text)
            );
        } else {
            self.responses_reasoning_done(&mut out);
        }
        let usage = responses_usage(
            self.prompt_tokens,
            self.output_tokens,
            self.cached_tokens.unwrap_or(0),
            self.reasoning_tokens,
        );
        let output = responses_output(
            &self.id,
            &self.reasoning_so_far,
            &self.text_so_far,
            self.reasoning_tokens,
            self.output_tokens,
        );
        // OpenAI ends a response cut by max_output_tokens with `response.incomplete`.
        let (status, event) = if self.hit_max {
            ("incomplete", "response.incomplete")
        } else {
            ("completed", "response.completed")
        };
        let response = self.responses_object(status, &output, &usage);
        let seq = self.next_sequence();
        let _ = write!(
            out,
            "event: {event}\ndata: {{\"type\":\"{event}\",\"sequence_number\":{seq},\"response\":{response}}}\n\n"
        );
        Bytes::from(out)
    }

    fn usage_event(&mut self) -> Bytes {
        if self.api == Api::Responses {
            return self.responses_completion();
        }
        if self.api == Api::Anthropic {
            return Bytes::from(anthropic::end(
                self.reasoning_tokens,
                self.output_tokens,
                self.message_index(),
                self.hit_max,
            ));
        }
        if self.api == Api::LlamaCpp {
            return Bytes::from(format!(
                "data: {{\"index\":0,\"content\":\"\",\"tokens\":[],\"id_slot\":0,\"stop\":true,\"model\":{},{}}}\n\n",
                self.state.model_json,
                llamacpp_final_fields(
                    self.prompt_tokens,
                    self.output_tokens,
                    self.hit_max,
                    self.cached_tokens.unwrap_or(0)
                )
            ));
        }
        let mut event = String::with_capacity(self.prefix.len() + 160);
        let _ = write!(
            event,
            "{}[],\"usage\":{{\"prompt_tokens\":{},\"total_tokens\":{},\"completion_tokens\":{}",
            self.prefix,
            self.prompt_tokens,
            self.prompt_tokens + self.output_tokens,
            self.output_tokens
        );
        if self.reasoning_tokens > 0 {
            let _ = write!(
                event,
                ",\"completion_tokens_details\":{{\"reasoning_tokens\":{}}}",
                self.reasoning_tokens
            );
        }
        // vLLM leaves unset fields out of stream chunks, so the details appear only with a cache.
        if let Some(n) = self.cached_tokens {
            let _ = write!(
                event,
                ",\"prompt_tokens_details\":{{\"cached_tokens\":{n}}}"
            );
        }
        event.push_str("}}\n\n");
        Bytes::from(event)
    }

    /// What follows the token just sent: an injected fault, the next token or the end.
    fn after_token(&mut self) -> Step {
        match self.fault {
            Fault::ErrorEvent if self.sent == 1 => Step::ErrorEvent,
            Fault::Malformed if self.sent == self.output_tokens.min(2) => Step::Malformed,
            Fault::Drop if self.sent == self.output_tokens.min(2) => Step::Drop,
            Fault::Truncated if self.sent == self.output_tokens.min(2) => Step::Truncated,
            Fault::Stall if self.sent == self.output_tokens.min(2) => Step::Stall,
            _ => self.next_token(),
        }
    }

    fn next_token(&mut self) -> Step {
        if self.sent < self.output_tokens {
            self.offset_s += itl_s(&self.state, &mut self.rng);
            let deadline = self.arrived + secs(self.offset_s);
            self.sleep.as_mut().reset(deadline);
            self.armed = true;
            Step::Token
        } else if matches!(self.api, Api::LlamaCpp | Api::Responses | Api::Anthropic)
            || (self.api.is_openai() && self.include_usage)
        {
            Step::Usage
        } else {
            Step::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use llmb_engine::tokenizer::count_words;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    use crate::config::SimConfig;
    use crate::testutil::*;

    #[tokio::test]
    async fn completions_stream_is_byte_exact_vllm() {
        let sim = sim(fast()).await;
        let r = post(
            &sim,
            "/v1/completions",
            r#"{"model":"llmb-sim","prompt":"one two three","max_tokens":5,"stream":true,"ignore_eos":true,"stream_options":{"include_usage":true}}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(
            r.head
                .contains("content-type: text/event-stream; charset=utf-8"),
            "{}",
            r.head
        );
        assert!(r.complete);
        // One HTTP chunk per SSE event: 5 tokens, usage, [DONE].
        assert_eq!(r.chunks.len(), 7, "{:?}", r.chunks);
        assert!(r.chunks.iter().all(|c| c.starts_with("data: ")
            && c.ends_with("\n\n")
            && c.matches("data: ").count() == 1));
        let first = event_json(&r.chunks[0]);
        let id = first["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("cmpl-") && id.len() == 5 + 32, "{id}");
        assert!(id[5..].bytes().all(|b| b.is_ascii_hexdigit()));
        let created = first["created"].as_u64().unwrap();
        for (k, chunk) in r.chunks[..5].iter().enumerate() {
            let text = event_json(chunk)["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(text.starts_with(' ') && count_words(&text) == 1, "{text:?}");
            let finish = if k == 4 { "\"length\"" } else { "null" };
            assert_eq!(
                *chunk,
                format!(
                    "data: {{\"id\":\"{id}\",\"object\":\"text_completion\",\"created\":{created},\"model\":\"llmb-sim\",\"choices\":[{{\"index\":0,\"text\":\"{text}\",\"logprobs\":null,\"finish_reason\":{finish},\"stop_reason\":null}}],\"usage\":null}}\n\n"
                )
            );
        }
        assert_eq!(
            r.chunks[5],
            format!(
                "data: {{\"id\":\"{id}\",\"object\":\"text_completion\",\"created\":{created},\"model\":\"llmb-sim\",\"choices\":[],\"usage\":{{\"prompt_tokens\":3,\"total_tokens\":8,\"completion_tokens\":5}}}}\n\n"
            )
        );
        assert!(r.body.ends_with("data: [DONE]\n\n"));
        assert_eq!(sim.requests_served(), 1);
        let metrics = get(&sim, "/metrics").await.body;
        assert!(
            metrics.contains("vllm:generation_tokens_total{model_name=\"llmb-sim\"} 5\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("vllm:prompt_tokens_total{model_name=\"llmb-sim\"} 3\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("vllm:request_success_total{model_name=\"llmb-sim\"} 1\n"),
            "{metrics}"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn chat_stream_starts_with_the_role_chunk() {
        let sim = sim(fast()).await;
        let r = post(
            &sim,
            "/v1/chat/completions",
            r#"{"model":"llmb-sim","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi there"}]}],"max_completion_tokens":3,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(r.complete);
        // role, 3 content chunks, usage, [DONE]
        assert_eq!(r.chunks.len(), 6, "{:?}", r.chunks);
        let first = event_json(&r.chunks[0]);
        let id = first["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("chatcmpl-") && id.len() == 9 + 32, "{id}");
        let created = first["created"].as_u64().unwrap();
        let prefix = format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"llmb-sim\",\"choices\":"
        );
        assert_eq!(
            r.chunks[0],
            format!(
                "{prefix}[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
            )
        );
        for (k, chunk) in r.chunks[1..4].iter().enumerate() {
            let text = event_json(chunk)["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(text.starts_with(' ') && count_words(&text) == 1);
            let tail = if k == 2 {
                "\"length\",\"stop_reason\":null"
            } else {
                "null"
            };
            assert_eq!(
                *chunk,
                format!(
                    "{prefix}[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"logprobs\":null,\"finish_reason\":{tail}}}]}}\n\n"
                )
            );
        }
        assert_eq!(
            r.chunks[4],
            format!(
                "{prefix}[],\"usage\":{{\"prompt_tokens\":17,\"total_tokens\":20,\"completion_tokens\":3}}}}\n\n"
            )
        );
        assert_eq!(r.chunks[5], "data: [DONE]\n\n");
        sim.shutdown().await;
    }

    /// The text of `key` in every chunk's first choice's delta, in order (absent ones skipped).
    fn deltas(chunks: &[String], key: &str) -> Vec<String> {
        chunks
            .iter()
            .filter(|c| c.starts_with("data: {"))
            .filter_map(|c| {
                event_json(c)["choices"][0]["delta"][key]
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    }

    #[tokio::test]
    async fn chat_streams_reasoning_before_the_answer() {
        let thinking = sim(SimConfig {
            reasoning_tokens: 2,
            ..fast()
        })
        .await;
        let plain = sim(fast()).await;
        let body = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}"#;
        let r = post(&thinking, "/v1/chat/completions", body).await;
        assert!(r.complete);
        // role, 2 reasoning chunks, 3 answer chunks, usage, [DONE]
        assert_eq!(r.chunks.len(), 8, "{:?}", r.chunks);
        assert_eq!(
            event_json(&r.chunks[0])["choices"][0]["delta"]["role"],
            "assistant"
        );
        for chunk in &r.chunks[1..3] {
            let choice = &event_json(chunk)["choices"][0];
            let delta = choice["delta"].as_object().unwrap();
            let text = delta["reasoning_content"].as_str().unwrap();
            assert!(text.starts_with(' ') && count_words(text) == 1, "{chunk}");
            assert_eq!(delta["reasoning"], delta["reasoning_content"]);
            assert!(!delta.contains_key("content"), "{chunk}");
            assert!(choice["finish_reason"].is_null());
        }
        for chunk in &r.chunks[3..6] {
            let delta = event_json(chunk)["choices"][0]["delta"].clone();
            let delta = delta.as_object().unwrap();
            assert_eq!(count_words(delta["content"].as_str().unwrap()), 1);
            assert!(!delta.contains_key("reasoning") && !delta.contains_key("reasoning_content"));
        }
        assert_eq!(
            event_json(&r.chunks[5])["choices"][0]["finish_reason"],
            "length"
        );
        let usage = &event_json(&r.chunks[6])["usage"];
        assert_eq!(usage["completion_tokens"], 5);
        assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 2);
        assert_eq!(r.chunks[7], "data: [DONE]\n\n");
        // The reasoning is the start of the same output: reasoning and answer together are
        // what a server without reasoning sends.
        let reasoning = deltas(&r.chunks, "reasoning").concat();
        let answer = deltas(&r.chunks[1..], "content").concat();
        let whole = deltas(
            &post(&plain, "/v1/chat/completions", body).await.chunks[1..],
            "content",
        );
        assert_eq!(reasoning + &answer, whole.concat());
        let r = post(&plain, "/v1/chat/completions", body).await;
        assert!(!r.body.contains("reasoning"), "{}", r.body);

        // Cut off while thinking: all reasoning, the last chunk carries the finish reason.
        let r = post(
            &thinking,
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .await;
        assert_eq!(r.chunks.len(), 4, "{:?}", r.chunks);
        assert_eq!(deltas(&r.chunks, "reasoning").len(), 1);
        assert_eq!(deltas(&r.chunks[1..], "content"), Vec::<String>::new());
        assert_eq!(
            event_json(&r.chunks[1])["choices"][0]["finish_reason"],
            "length"
        );
        let usage = &event_json(&r.chunks[2])["usage"];
        assert_eq!(usage["completion_tokens"], 1);
        assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 1);

        // Completions have no reasoning channel: the setting changes nothing.
        let r = post(
            &thinking,
            "/v1/completions",
            r#"{"prompt":"p","max_tokens":4,"ignore_eos":true,"stream":true}"#,
        )
        .await;
        assert_eq!(r.chunks.len(), 5);
        assert!(!r.body.contains("reasoning"), "{}", r.body);
        thinking.shutdown().await;
        plain.shutdown().await;
    }

    #[tokio::test]
    async fn responses_stream_a_reasoning_item_before_the_message() {
        let sim = sim(SimConfig {
            reasoning_tokens: 3,
            ..fast()
        })
        .await;
        let r = post(
            &sim,
            "/v1/responses",
            r#"{"model":"llmb-sim","input":"hi there","max_output_tokens":5,"ignore_eos":true,"stream":true}"#,
        )
        .await;
        assert!(r.complete);
        // The preamble, one write per token (the first answer token's also ends the reasoning
        // item and opens the message item), the end.
        assert_eq!(r.chunks.len(), 7, "{:?}", r.chunks);
        let events = named_events(&r.body);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_text.delta",
                "response.reasoning_text.delta",
                "response.reasoning_text.delta",
                "response.reasoning_text.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                // max_output_tokens was reached: OpenAI says so with `response.incomplete`.
                "response.incomplete",
            ]
        );
        for (k, (name, v)) in events.iter().enumerate() {
            assert_eq!(v["type"], name.as_str());
            assert_eq!(v["sequence_number"], k as u64, "{name}");
        }
        let id = events[0].1["response"]["id"].as_str().unwrap()["resp_".len()..].to_string();
        assert_eq!(events[2].1["item"]["type"], "reasoning");
        assert_eq!(events[2].1["item"]["id"], format!("rs_{id}"));
        assert_eq!(events[2].1["output_index"], 0);
        let mut reasoning = String::new();
        for (_, v) in &events[3..6] {
            assert_eq!(v["item_id"], format!("rs_{id}"));
            assert_eq!(
                (v["output_index"].as_u64(), v["content_index"].as_u64()),
                (Some(0), Some(0))
            );
            let delta = v["delta"].as_str().unwrap();
            assert_eq!(count_words(delta), 1);
            reasoning.push_str(delta);
        }
        assert_eq!(events[6].1["text"], reasoning.as_str());
        assert_eq!(
            events[7].1["item"]["content"][0]["text"],
            reasoning.as_str()
        );
        assert_eq!(events[7].1["item"]["status"], "completed");
        assert_eq!(events[8].1["item"]["type"], "message");
        for (_, v) in &events[8..15] {
            assert_eq!(v["output_index"], 1);
        }
        let answer: String = events[10..12]
            .iter()
            .map(|(_, v)| v["delta"].as_str().unwrap())
            .collect();
        assert_eq!(count_words(&answer), 2);
        assert_eq!(events[12].1["text"], answer.as_str());
        let response = &events[15].1["response"];
        assert_eq!(response["status"], "incomplete");
        assert_eq!(
            response["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(response["output"][0]["type"], "reasoning");
        assert_eq!(
            response["output"][0]["content"][0]["text"],
            reasoning.as_str()
        );
        assert_eq!(response["output"][1]["content"][0]["text"], answer.as_str());
        assert_eq!(response["usage"]["output_tokens"], 5);
        assert_eq!(
            response["usage"]["output_tokens_details"]["reasoning_tokens"],
            3
        );

        // Cut off while thinking: the reasoning item ends, no message item.
        let r = post(
            &sim,
            "/v1/responses",
            r#"{"input":"hi","max_output_tokens":2,"ignore_eos":true,"stream":true}"#,
        )
        .await;
        let events = named_events(&r.body);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_text.delta",
                "response.reasoning_text.delta",
                "response.reasoning_text.done",
                "response.output_item.done",
                "response.incomplete",
            ]
        );
        let response = &events[7].1["response"];
        assert_eq!(response["output"].as_array().unwrap().len(), 1);
        assert_eq!(
            response["usage"]["output_tokens_details"]["reasoning_tokens"],
            2
        );
        assert_eq!(events[7].1["sequence_number"], 7);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn reasoning_tokens_are_logged_as_tokens() {
        let path = std::env::temp_dir().join(format!(
            "llmb-sim-reasoning-send-log-{}.csv",
            std::process::id()
        ));
        let sim = sim(SimConfig {
            reasoning_tokens: 2,
            send_log: Some(path.clone()),
            ..fast()
        })
        .await;
        let r = post(
            &sim,
            "/v1/responses",
            r#"{"input":"hi","max_output_tokens":4,"ignore_eos":true,"stream":true}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        sim.shutdown().await;
        let log = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let kinds: Vec<&str> = log
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "request", "head", "chunk", "token", "token", "token", "token", "chunk", "end"
            ],
            "{log}"
        );
    }

    #[tokio::test]
    async fn a_client_that_leaves_stops_its_stream() {
        let sim = sim(SimConfig {
            ttft_ms: 1.0,
            itl_ms: 10.0,
            ..SimConfig::default()
        })
        .await;
        let mut s = TcpStream::connect(sim.addr()).await.unwrap();
        let body = r#"{"prompt":"p","max_tokens":1000,"ignore_eos":true,"stream":true}"#;
        s.write_all(raw_request("POST", "/v1/completions", "", body).as_bytes())
            .await
            .unwrap();
        read_until(&mut s, "\"text\":\" ").await;
        let metrics = get(&sim, "/metrics").await.body;
        assert!(
            metrics.contains("vllm:num_requests_running{model_name=\"llmb-sim\"} 1\n"),
            "{metrics}"
        );
        drop(s);
        wait_for_idle(&sim.state).await;
        assert!(sim.state.generation_tokens.load(Relaxed) < 1000);
        sim.shutdown().await;
    }
}
