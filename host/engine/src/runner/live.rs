//! What the request tasks of one execution share ([`Live`]) and the path of a single request
//! through it: the `--max-concurrency` slot, an adapter from the pool, the exchange, and the
//! record sent to the writer; plus multi-turn conversations, which feed each reply into the next
//! turn. Used by the pacer, the clients and the warmup alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};

use crate::lifecycle::{Cancel, StopCause};
use crate::plugin::backend::{ChatMessage, GenRequest, Prompt as BPrompt, Role as BRole};
use crate::records::{RequestError, RequestRecord};
use crate::transport::Exchange;

use super::Runner;
use super::request::with_request_id;

/// The record of a request cut off in flight.
fn cut_off_error(cancel: &Cancel) -> RequestError {
    let why = match cancel.cause() {
        Some(StopCause::PluginFaults { .. }) => "--max-plugin-faults",
        _ => "Ctrl-C",
    };
    RequestError {
        kind: "cancelled".into(),
        message: format!("cut off in flight after {why} (partial timings kept)"),
        http_status: None,
    }
}

/// State shared by every task of one execution.
pub(super) struct Live {
    pub(super) runner: Arc<Runner>,
    pub(super) semaphore: Option<Arc<Semaphore>>,
    /// Every record's time origin: the start of the execution, warmups included.
    pub(super) t0: Instant,
    /// Where the plan's offsets count from: the end of the warmup phase.
    pub(super) origin: Instant,
    /// Every request of this execution phase is a warmup.
    pub(super) warming: bool,
    pub(super) next_id: AtomicU64,
    /// Requests taken against the shared limit.
    pub(super) taken: AtomicUsize,
    pub(super) limit: Option<usize>,
    pub(super) stop_issuing_at: Option<Duration>,
    /// The run's cancellation: stopping ends issuing and wakes sleeping clients; cut ends the
    /// requests in flight.
    pub(super) cancel: Cancel,
    pub(super) tx: mpsc::UnboundedSender<RequestRecord>,
}

impl Live {
    pub(super) fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// A plan offset as nanoseconds since `t0`.
    pub(super) fn plan_ns(&self, offset: Duration) -> u64 {
        (self.origin.saturating_duration_since(self.t0) + offset).as_nanos() as u64
    }

    /// Whether another request may start: not stopped, before the stop time, under the limit.
    pub(super) fn may_issue(&self) -> bool {
        if self.cancel.is_stopping() {
            return false;
        }
        if let Some(at) = self.stop_issuing_at
            && self.origin.elapsed() >= at
        {
            return false;
        }
        match self.limit {
            Some(limit) => self.taken.fetch_add(1, Relaxed) < limit,
            None => true,
        }
    }

    /// Sleeps for `d` unless the run stops first; returns whether it slept the whole time.
    pub(super) async fn sleep(&self, d: Duration) -> bool {
        self.sleep_until(tokio::time::Instant::now() + d).await
    }

    pub(super) async fn sleep_until(&self, at: tokio::time::Instant) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(at) => true,
            _ = self.cancel.stopped() => false,
        }
    }

    /// Sends one request meant to go out at `slot.intended_ns` and reports its record.
    async fn send(&self, prompt: BPrompt, prompt_tokens: u32, slot: Slot) -> Sent {
        let Slot {
            sample,
            client,
            turn,
            intended_ns,
            id,
        } = slot;
        let id = id.unwrap_or_else(|| self.next_id.fetch_add(1, Relaxed));
        let warmup = self.warming
            || (id as usize) < self.runner.warmup.requests
            || self
                .runner
                .warmup
                .until
                .is_some_and(|d| intended_ns < d.as_nanos() as u64);
        let s = &self.runner.samples[sample];
        let t = &self.runner.template;
        let id = self
            .runner
            .shard
            .as_ref()
            .map_or(id, |shard| shard.global_id(id));
        let input_images = crate::plugin::backend::prompt_images(&prompt).count() as u32;
        let req = t.request(id, prompt, s.output_tokens);
        let record = RequestRecord {
            id,
            sample: sample as u64,
            client,
            turn,
            warmup,
            scheduled_ns: intended_ns,
            prompt_tokens,
            input_images,
            ..Default::default()
        };
        let record = self.one(req, record).await;
        let outcome = Sent {
            end_ns: record.end_ns,
            success: record.success,
            // Only a conversation needs the reply back; a single request hands its record over
            // without copying its text and timestamps.
            reply: turn.is_some().then(|| record.generated_text.clone()),
        };
        let _ = self.tx.send(record);
        outcome
    }

    async fn one(&self, req: GenRequest, mut record: RequestRecord) -> RequestRecord {
        record.released_ns = Some(self.now_ns());
        let _permit = match &self.semaphore {
            Some(s) => tokio::select! {
                permit = s.clone().acquire_owned() => Some(permit.expect("semaphore never closed")),
                // Stopping means no new request goes out, queued ones included: recorded as
                // cancelled, never sent.
                _ = self.cancel.stopped() => {
                    record.end_ns = self.now_ns();
                    record.error = Some(RequestError {
                        kind: "cancelled".into(),
                        message: "never sent: the run stopped while it waited for a --max-concurrency slot".into(),
                        http_status: None,
                    });
                    return record;
                }
            },
            None => None,
        };
        record.dispatched_ns = self.now_ns();
        let mut adapter = match self.runner.pool.checkout() {
            Ok(a) => a,
            Err(e) => {
                record.sent_ns = record.dispatched_ns;
                record.end_ns = record.dispatched_ns;
                record.error = Some(RequestError {
                    kind: "plugin".into(),
                    message: format!("{e:#}"),
                    http_status: None,
                });
                return record;
            }
        };
        let with_id = self
            .runner
            .template
            .defaults
            .request_id_prefix
            .as_deref()
            .map(|prefix| with_request_id(&self.runner.target, prefix, req.id));
        let exchange = Exchange {
            client: &self.runner.client,
            target: with_id.as_ref().unwrap_or(&self.runner.target),
            tokenizer: &self.runner.tokenizer,
            t0: self.t0,
        };
        let cancel = &self.cancel;
        let cut = async move {
            cancel.cut_off().await;
            cut_off_error(cancel)
        };
        let cancel_after = match &self.runner.template.defaults.cancel {
            Some(plan) if !record.warmup => plan.after_for(req.id),
            _ => None,
        };
        let mut record = exchange
            .execute_until(&mut adapter, &req, record, cut, cancel_after)
            .await;
        record.plugin_ns = adapter.take_usage().ns;
        record.plugin_fault = adapter.fault();
        record
    }

    /// One unit of work from a sample: a single request, or every turn of a conversation with
    /// the server's actual replies in the history. Returns the end of the last request, or
    /// `None` when nothing was sent. `first_id` numbers the first request when the caller
    /// already knows its place in the send order.
    pub(super) async fn run_sample(
        &self,
        sample: usize,
        client: Option<u32>,
        mut intended_ns: u64,
        budget: &mut (dyn FnMut() -> bool + Send),
        mut first_id: Option<u64>,
    ) -> Option<u64> {
        let s = &self.runner.samples[sample];
        let Some(turns) = conversation_turns(&s.prompt) else {
            if !budget() {
                return None;
            }
            let r = self
                .send(
                    s.prompt.clone(),
                    s.input_tokens,
                    Slot {
                        sample,
                        client,
                        turn: None,
                        intended_ns,
                        id: first_id,
                    },
                )
                .await;
            return Some(r.end_ns);
        };
        let mut history: Vec<ChatMessage> = turns.preamble;
        let mut last_end = None;
        for (k, user) in turns.users.into_iter().enumerate() {
            if k > 0 {
                let think = self.runner.template.defaults.think_time;
                if !think.is_zero() && !self.sleep(think).await {
                    break;
                }
                // No new turn once the run stops, whatever the caller's budget says.
                if self.cancel.is_stopping() {
                    break;
                }
            }
            if !budget() {
                break;
            }
            history.push(user);
            let tokens = history
                .iter()
                .map(|m| self.runner.tokenizer.count(&m.content))
                .sum();
            let r = self
                .send(
                    BPrompt::Chat(history.clone()),
                    tokens,
                    Slot {
                        sample,
                        client,
                        turn: Some(k as u32),
                        intended_ns,
                        id: first_id.take(),
                    },
                )
                .await;
            last_end = Some(r.end_ns);
            if !r.success {
                break;
            }
            history.push(ChatMessage {
                role: BRole::Assistant,
                content: r.reply.unwrap_or_default(),
            });
            intended_ns = self.now_ns();
        }
        last_end
    }
}

/// What the caller of `send` needs once the record has gone to the writer.
struct Sent {
    end_ns: u64,
    success: bool,
    reply: Option<String>,
}

/// Where a request stands in the run: its sample, sender, turn and intended send time.
struct Slot {
    sample: usize,
    client: Option<u32>,
    turn: Option<u32>,
    intended_ns: u64,
    /// Its number in the send order when the caller fixed it; else the next free one.
    id: Option<u64>,
}

/// A conversation split into what precedes the first user message and the user turns.
struct Turns {
    preamble: Vec<ChatMessage>,
    users: Vec<ChatMessage>,
}

/// A chat prompt with two or more user messages is a conversation; its assistant messages are
/// replaced by the server's replies as it runs.
fn conversation_turns(prompt: &BPrompt) -> Option<Turns> {
    let BPrompt::Chat(messages) = prompt else {
        return None;
    };
    let users: Vec<ChatMessage> = messages
        .iter()
        .filter(|m| matches!(m.role, BRole::User))
        .cloned()
        .collect();
    if users.len() < 2 {
        return None;
    }
    let preamble = messages
        .iter()
        .take_while(|m| !matches!(m.role, BRole::User))
        .cloned()
        .collect();
    Some(Turns { preamble, users })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_split_into_user_turns() {
        let msg = |role, content: &str| ChatMessage {
            role,
            content: content.into(),
        };
        let prompt = BPrompt::Chat(vec![
            msg(BRole::System, "sys"),
            msg(BRole::User, "a"),
            msg(BRole::Assistant, "x"),
            msg(BRole::User, "b"),
        ]);
        let turns = conversation_turns(&prompt).unwrap();
        assert_eq!(turns.preamble.len(), 1);
        assert_eq!(
            turns
                .users
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(conversation_turns(&BPrompt::Chat(vec![msg(BRole::User, "only")])).is_none());
        assert!(conversation_turns(&BPrompt::Text("t".into())).is_none());
    }
}
