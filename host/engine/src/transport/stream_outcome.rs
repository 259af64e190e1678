//! What one request's response said, accumulated from the adapter's events: text, reasoning,
//! usage, finish reason and the first error, plus the per-read timestamps of the delta frames.
//! Shared by the non-streaming and streaming reads, so neither depends on the other.

use crate::plugin::backend::{StreamEvent, Usage};
use crate::records::RequestError;

use super::errors::{backend_error, fail};
use super::{limits, transcript};

/// Per-request accumulation of what the adapter's events say.
#[derive(Default)]
pub(super) struct StreamOutcome {
    pub(super) text: String,
    pub(super) reasoning: String,
    pub(super) usage: Option<Usage>,
    pub(super) server_tokens: Option<u32>,
    /// Frames whose deltas carried text: the last-resort output count, which must not count a
    /// chat stream's role-only first chunk or its empty finish chunk.
    pub(super) text_frames: u32,
    /// Frames whose deltas carried reasoning: the last-resort reasoning token count.
    pub(super) reasoning_frames: u32,
    /// Arrival of the first frame whose delta carried answer text (TTFO).
    pub(super) first_answer_ns: Option<u64>,
    pub(super) finish_reason: Option<String>,
    pub(super) error: Option<RequestError>,
    /// The exchange being recorded (`LLMB_RECORD_TRANSCRIPTS`).
    pub(super) transcript: Option<transcript::Transcript>,
    /// The stream's parser while it is alive (dropped by whoever ends the exchange).
    pub(super) parser: Option<crate::plugin::ParserHandle>,
    /// Frames read but not yet parsed.
    pub(super) pending: super::stream::PendingFrames,
    /// HTTP trailers of the stream, for the adapter's `finish`.
    pub(super) trailers: Vec<(String, String)>,
    /// The body was read to its end (not cut short by an error or the adapter).
    pub(super) body_ended: bool,
}

impl StreamOutcome {
    /// Applies the events of one adapter call: frame `i` of the call arrived at `frame_ns[i]`
    /// (a frame without a stamp, at `now_ns`).
    pub(super) fn apply(
        &mut self,
        events: Vec<StreamEvent>,
        frame_ns: &[u64],
        now_ns: u64,
        delta_ns: &mut Vec<u64>,
    ) {
        let mut stamped_frame: Option<u32> = None;
        let mut text_frame: Option<u32> = None;
        let mut reasoning_frame: Option<u32> = None;
        for event in events {
            match event {
                StreamEvent::Delta(d) => {
                    let at = frame_ns.get(d.frame as usize).copied().unwrap_or(now_ns);
                    if stamped_frame != Some(d.frame) {
                        delta_ns.push(at);
                        stamped_frame = Some(d.frame);
                    }
                    if (!d.text.is_empty() || !d.reasoning.is_empty())
                        && text_frame != Some(d.frame)
                    {
                        self.text_frames += 1;
                        text_frame = Some(d.frame);
                    }
                    if !d.reasoning.is_empty() && reasoning_frame != Some(d.frame) {
                        self.reasoning_frames += 1;
                        reasoning_frame = Some(d.frame);
                    }
                    if !d.text.is_empty() && self.first_answer_ns.is_none() {
                        self.first_answer_ns = Some(at);
                    }
                    self.text.push_str(&d.text);
                    self.reasoning.push_str(&d.reasoning);
                    if let Some(t) = d.tokens {
                        *self.server_tokens.get_or_insert(0) += t;
                    }
                }
                StreamEvent::Finish(reason) => self.finish_reason = Some(reason),
                StreamEvent::Usage(u) => self.usage = Some(merge_usage(self.usage.take(), u)),
                StreamEvent::Error(e) => {
                    if self.error.is_none() {
                        self.error = Some(backend_error(e));
                    }
                }
                StreamEvent::Done => {}
            }
        }
    }

    /// The failure when the output kept for this request (text, reasoning and `stamps` chunk
    /// timestamps) is over `max` bytes (`--max-text-bytes`).
    pub(super) fn over_budget(&self, stamps: usize, max: usize) -> Option<RequestError> {
        let text = self.text.len() + self.reasoning.len();
        let used = text.saturating_add(stamps.saturating_mul(limits::STAMP_BYTES));
        (used > max).then(|| {
            fail(
                "too-large",
                format!(
                    "the output passed --max-text-bytes {} ({text} bytes of text and {stamps} \
                     chunk timestamps of {} bytes each)",
                    limits::size(max as u64),
                    limits::STAMP_BYTES
                ),
            )
        })
    }
}

fn merge_usage(old: Option<Usage>, new: Usage) -> Usage {
    match old {
        None => new,
        Some(o) => Usage {
            prompt_tokens: new.prompt_tokens.or(o.prompt_tokens),
            completion_tokens: new.completion_tokens.or(o.completion_tokens),
            cached_prompt_tokens: new.cached_prompt_tokens.or(o.cached_prompt_tokens),
            reasoning_tokens: new.reasoning_tokens.or(o.reasoning_tokens),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::backend::Delta;

    fn delta(frame: u32, text: &str) -> StreamEvent {
        StreamEvent::Delta(Delta {
            frame,
            text: text.into(),
            reasoning: String::new(),
            tokens: None,
            index: 0,
        })
    }

    #[test]
    fn role_and_finish_chunks_are_stamped_but_not_counted_as_tokens() {
        let mut outcome = StreamOutcome::default();
        let mut stamps = Vec::new();
        // A chat stream: role-only chunk, two tokens in one read, an empty finish chunk.
        outcome.apply(vec![delta(0, "")], &[10], 99, &mut stamps);
        outcome.apply(
            vec![delta(0, "Hello"), delta(1, " world")],
            &[18, 20],
            99,
            &mut stamps,
        );
        outcome.apply(
            vec![delta(0, ""), StreamEvent::Finish("length".into())],
            &[],
            30,
            &mut stamps,
        );
        assert_eq!(stamps, vec![10, 18, 20, 30]);
        assert_eq!(outcome.text_frames, 2);
        assert_eq!(outcome.text, "Hello world");
        assert_eq!(outcome.first_answer_ns, Some(18));
        assert_eq!(outcome.reasoning_frames, 0);
    }

    #[test]
    fn the_first_answer_frame_follows_the_reasoning() {
        let thinking = |frame: u32, text: &str| {
            StreamEvent::Delta(Delta {
                frame,
                text: String::new(),
                reasoning: text.into(),
                tokens: None,
                index: 0,
            })
        };
        let mut outcome = StreamOutcome::default();
        let mut stamps = Vec::new();
        outcome.apply(vec![delta(0, "")], &[10], 99, &mut stamps);
        outcome.apply(
            vec![thinking(0, "Let"), thinking(1, " me")],
            &[12, 14],
            99,
            &mut stamps,
        );
        outcome.apply(
            vec![thinking(0, " see"), delta(1, "Yes")],
            &[16, 19],
            99,
            &mut stamps,
        );
        assert_eq!(stamps, vec![10, 12, 14, 16, 19]);
        assert_eq!(outcome.reasoning_frames, 3);
        assert_eq!(outcome.text_frames, 4);
        assert_eq!(outcome.first_answer_ns, Some(19));
        assert_eq!(outcome.reasoning, "Let me see");
        assert_eq!(outcome.text, "Yes");
    }
}
