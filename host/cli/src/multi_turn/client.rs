//! The clients of vLLM's multi-turn benchmark on llmb's engine: each client takes conversations
//! from a shared queue up to its share of `-k`, sends the next turn of one of them (round robin
//! or random) with the history carrying the server's real answers, pauses per `--request-rate`,
//! and stops at its share of `-n`, when the queue runs dry, or when told to (early stop).
//! Requests go through [`Exchange::execute`] with the openai-chat adapter, so every request also
//! leaves a [`RequestRecord`] with host timestamps.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::header::{HeaderName, HeaderValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution as _;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::input::{Conversation, Message};
use super::stats::RequestStats;
use crate::args::multi_turn::ConversationSampling;
use llmb_engine::plugin::backend::{BackendPool, ChatMessage, GenRequest, Prompt, Role};
use llmb_engine::records::{RecordWriter, RequestRecord};
use llmb_engine::tokenizer::HostTokenizer;
use llmb_engine::transport::{Exchange, HttpClient, Target};

/// What every request shares.
pub struct Engine {
    pub pool: Arc<BackendPool>,
    pub client: HttpClient,
    pub target: Target,
    pub tokenizer: Arc<HostTokenizer>,
    /// Time origin of every record and `start_time_ms`.
    pub t0: Instant,
    pub next_id: AtomicU64,
    /// The name sent in requests.
    pub model: String,
    pub stream: bool,
    pub limit_min_tokens: i64,
    pub limit_max_tokens: i64,
    pub timeout_sec: u64,
    pub send_conversation_id: bool,
    pub verify_output: bool,
    pub print_content: bool,
    pub verbose: bool,
}

/// vLLM's `ClientArgs`, per client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub seed: u64,
    /// This client's share of `--max-num-requests`.
    pub max_num_requests: Option<usize>,
    /// Skip the first user turn (it was sent by the warmup step).
    pub skip_first_turn: bool,
    pub max_turns: Option<usize>,
    /// This client's share of `--max-active-conversations`.
    pub max_active: usize,
    pub sampling: ConversationSampling,
    pub request_rate: f64,
    pub max_retries: u32,
    /// Records of this run are warmups.
    pub warmup: bool,
}

/// What one run of all clients produced.
pub struct RunOutput {
    /// Conversations every turn of which was answered, in the order they finished.
    pub finished: Vec<Conversation>,
    /// Successful requests, in the order they were collected.
    pub stats: Vec<RequestStats>,
    /// Every request sent, failed ones and retries included, in completion order.
    pub records: Vec<RequestRecord>,
    pub interrupted: bool,
}

enum Event {
    Record(Box<RequestRecord>),
    Stats(Box<RequestStats>),
    Finished(Conversation),
    Done,
}

/// How one attempt at a turn ended.
enum Turn {
    Ok(Box<RequestStats>),
    /// The server refused it (HTTP error, nothing streamed): try again or drop the conversation.
    Rejected(String),
    /// Timeout, connection failure, failed verification: the client gives up after retries.
    Exception(String),
}

/// Runs `clients` clients over `conversations` until they are done.
#[allow(clippy::too_many_arguments)]
pub async fn run_clients(
    engine: &Arc<Engine>,
    cfg: &ClientConfig,
    clients: usize,
    early_stop: bool,
    conversations: Vec<Conversation>,
    mut interrupt: watch::Receiver<bool>,
    writer: &mut Option<RecordWriter>,
) -> anyhow::Result<RunOutput> {
    use anyhow::Context;
    let total = conversations.len();
    let queue = Arc::new(Mutex::new(VecDeque::from(conversations)));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let started = Instant::now();
    eprintln!("Starting {clients} clients");
    for i in 0..clients {
        let (engine, cfg, queue, stop, tx) = (
            engine.clone(),
            cfg.clone(),
            queue.clone(),
            stop.clone(),
            tx.clone(),
        );
        tokio::spawn(async move { client_main(&engine, &cfg, i, &queue, &stop, &tx).await });
    }
    drop(tx);

    let mut out = RunOutput {
        finished: Vec::new(),
        stats: Vec::new(),
        records: Vec::new(),
        interrupted: false,
    };
    let mut clients_done = 0usize;
    let print_cycle = (clients / 4).max(3);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                None => break,
                Some(Event::Record(r)) => {
                    if let Some(w) = writer.as_mut() {
                        w.write(&r).with_context(|| format!("cannot write {}", w.path().display()))?;
                    }
                    out.records.push(*r);
                }
                Some(Event::Stats(s)) => out.stats.push(*s),
                Some(Event::Finished(c)) => {
                    out.finished.push(c);
                    let n = out.finished.len();
                    if n.is_multiple_of(print_cycle) {
                        eprintln!(
                            "Finished {n} out of {total} conversations ({:.0}%), {clients_done} out of \
                             {clients} clients finished, collected {} measurements, runtime {:.3} sec",
                            100.0 * n as f64 / total.max(1) as f64,
                            out.stats.len(),
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
                Some(Event::Done) => {
                    clients_done += 1;
                    eprintln!("{clients_done} out of {clients} clients finished");
                    if early_stop && !stop.swap(true, Relaxed) {
                        eprintln!("Sending termination signal to clients");
                    }
                }
            },
            _ = llmb_engine::runner::stop_requested(&mut interrupt), if !out.interrupted => {
                out.interrupted = true;
                stop.store(true, Relaxed);
                eprintln!("Interrupted: clients stop after their current request");
            }
        }
    }
    eprintln!(
        "All {clients} clients exited (successfully finished {} out of {total} conversations)",
        out.finished.len()
    );
    Ok(out)
}

/// vLLM's `client_main`.
async fn client_main(
    engine: &Engine,
    cfg: &ClientConfig,
    client_id: usize,
    queue: &Mutex<VecDeque<Conversation>>,
    stop: &AtomicBool,
    tx: &mpsc::UnboundedSender<Event>,
) {
    let verbose = engine.verbose;
    if verbose {
        eprintln!(
            "Started client {client_id}: max_num_requests={:?}, max_active_conversations={}",
            cfg.max_num_requests, cfg.max_active
        );
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(client_id as u64 + 1));
    // Active conversations in the order they were taken, and the round-robin order of their ids.
    let mut active: Vec<Conversation> = Vec::new();
    let mut order: VecDeque<String> = VecDeque::new();
    // Messages used so far per conversation (the index of its next user message).
    let mut turns: HashMap<String, usize> = HashMap::new();
    let (mut successes, mut failures) = (0usize, 0usize);
    let mut queue_empty = false;
    while !queue_empty {
        if cfg
            .max_num_requests
            .is_some_and(|max| successes + failures == max)
        {
            if verbose {
                eprintln!("Client {client_id} reached request limit");
            }
            break;
        }
        if stop.load(Relaxed) {
            if verbose {
                eprintln!("Client {client_id} received a termination signal");
            }
            break;
        }
        while active.len() < cfg.max_active && !queue_empty {
            let next = queue.lock().expect("queue lock").pop_front();
            let Some(conv) = next else {
                queue_empty = true;
                break;
            };
            let used = turns.entry(conv.id.clone()).or_insert(conv.preamble());
            if cfg.skip_first_turn {
                // The warmup sent the first user turn and got its answer.
                *used += 2;
            }
            if *used < conv.messages.len() {
                if verbose {
                    eprintln!(
                        "Client {client_id} will use conversation ID {} (active conversations {})",
                        conv.id,
                        active.len() + 1
                    );
                }
                if cfg.sampling == ConversationSampling::RoundRobin {
                    order.push_back(conv.id.clone());
                }
                active.push(conv);
            } else if verbose {
                eprintln!(
                    "Client {client_id} will not use conversation ID {} (all {} messages already sent)",
                    conv.id,
                    conv.messages.len()
                );
            }
        }
        // As in vLLM's script, a client whose queue ran dry stops, even with conversations left.
        if active.is_empty() || queue_empty {
            if verbose {
                eprintln!("Client {client_id} has no more work");
            }
            break;
        }
        let idx = match cfg.sampling {
            ConversationSampling::RoundRobin => order
                .pop_back()
                .and_then(|id| active.iter().position(|c| c.id == id))
                .unwrap_or(0),
            ConversationSampling::Random => rng.random_range(0..active.len()),
        };
        let used = turns.get_mut(&active[idx].id).expect("tracked");
        *used += 1;
        let messages_to_use = *used;
        let started = Instant::now();
        if verbose {
            eprintln!(
                "Client {client_id} using conversation ID {} (turn: {messages_to_use})",
                active[idx].id
            );
        }

        let mut stats = None;
        let mut exception = false;
        for attempt in 0..=cfg.max_retries {
            exception = false;
            match engine
                .send_turn(client_id, &mut active[idx], messages_to_use, cfg.warmup, tx)
                .await
            {
                Turn::Ok(s) => {
                    stats = Some(s);
                    break;
                }
                Turn::Rejected(why) => eprintln!(
                    "Client {client_id} - Request rejected during conversation ID {} (turn: \
                     {messages_to_use}): {why}",
                    active[idx].id
                ),
                Turn::Exception(why) => {
                    exception = true;
                    eprintln!(
                        "Client {client_id} - Exception during conversation ID {} (turn: \
                         {messages_to_use}): {why}",
                        active[idx].id
                    );
                }
            }
            if attempt < cfg.max_retries {
                backoff_sleep(attempt, &mut rng, verbose).await;
            }
        }
        match stats {
            None => {
                failures += 1;
                active.remove(idx);
                if exception {
                    break;
                }
            }
            Some(s) => {
                successes += 1;
                let _ = tx.send(Event::Stats(s));
                let conv = &active[idx];
                let used = turns.get_mut(&conv.id).expect("tracked");
                // The answer is now part of the history for the next user turn.
                *used += 1;
                let max_turns = cfg.max_turns.map_or(conv.messages.len(), |m| {
                    (conv.preamble() + m).min(conv.messages.len())
                });
                if *used >= max_turns {
                    let conv = active.remove(idx);
                    if verbose {
                        eprintln!("Client {client_id} finished conversation ID {}", conv.id);
                    }
                    let _ = tx.send(Event::Finished(conv));
                } else if cfg.sampling == ConversationSampling::RoundRobin {
                    order.push_front(conv.id.clone());
                }
            }
        }
        if cfg.request_rate > 0.0 {
            // vLLM's current script: an exponential pause whose mean is the rate's interval less
            // the time the request took.
            let mean = 1.0 / cfg.request_rate - started.elapsed().as_secs_f64();
            if mean > 0.0 {
                let pause = rand_distr::Exp::new(1.0 / mean)
                    .map(|d| d.sample(&mut rng))
                    .unwrap_or(0.0);
                if verbose {
                    eprintln!("Client {client_id} sleeping for {pause:.3} seconds...");
                }
                tokio::time::sleep(Duration::from_secs_f64(pause)).await;
            }
        }
    }
    if verbose {
        eprintln!(
            "Client {client_id} is done (num_successes={successes}, num_failures={failures})"
        );
    }
    let _ = tx.send(Event::Done);
}

/// Exponential backoff with ±10 % jitter: 1 s, 2 s, 4 s, ...
async fn backoff_sleep(attempt: u32, rng: &mut StdRng, verbose: bool) {
    let delay = 2f64.powi(attempt as i32) * (1.0 + rng.random_range(-0.1..0.1));
    if verbose {
        eprintln!("Backoff for {delay:.3} seconds...");
    }
    tokio::time::sleep(Duration::from_secs_f64(delay)).await;
}

fn role(name: &str) -> Role {
    match name {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        _ => Role::System,
    }
}

/// Long answers shortened for error messages, as vLLM's `get_short_string`.
fn short(s: &str) -> String {
    if s.chars().count() < 400 {
        return s.to_string();
    }
    let head: String = s.chars().take(20).collect();
    let tail: String = s
        .chars()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head}...{tail}")
}

impl Engine {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// vLLM's `send_turn`: sends the first `messages_to_use` messages of `conv` (ending with a
    /// user message), measures the answer and puts it into `conv` as the next assistant message.
    async fn send_turn(
        &self,
        client_id: usize,
        conv: &mut Conversation,
        messages_to_use: usize,
        warmup: bool,
        tx: &mpsc::UnboundedSender<Event>,
    ) -> Turn {
        let messages = &conv.messages[..messages_to_use];
        let index = messages_to_use - 1;
        if self.print_content {
            eprintln!(
                "Messages (conversation ID {}, {} turns): {}",
                conv.id,
                messages.len(),
                serde_json::to_string(messages).unwrap_or_default()
            );
        }
        // Output limits: the flags, or (0, the default) the dataset answer's length.
        let limit = |v: i64| (v >= 0).then_some(v as u64);
        let (mut min_tokens, mut max_tokens) =
            (limit(self.limit_min_tokens), limit(self.limit_max_tokens));
        if conv.messages.len() > messages_to_use {
            let answer = u64::from(
                self.tokenizer
                    .count(&conv.messages[messages_to_use].content),
            );
            for t in [&mut min_tokens, &mut max_tokens] {
                if *t == Some(0) {
                    *t = Some(answer.max(1));
                }
            }
        }
        // A last user message has no dataset answer to size it: no limit then.
        let max_tokens = max_tokens.filter(|&n| n > 0);
        let _ = min_tokens; // validated, but not sent: vLLM's script does not send it either

        let mut extra = serde_json::Map::new();
        if max_tokens.is_none() {
            extra.insert("max_tokens".into(), Value::Null);
        }
        let mut target = self.target.clone();
        if self.send_conversation_id {
            extra.insert("conversation_id".into(), Value::String(conv.id.clone()));
            if let Ok(v) = HeaderValue::try_from(conv.id.as_str()) {
                target
                    .headers
                    .insert(0, (HeaderName::from_static("x-session-id"), v));
            }
        }
        // Long outputs get 0.2 s per token when that is more than the timeout.
        let token_timeout = max_tokens.map_or(0, |n| (n as f64 * 0.2) as u64);
        target.timeout = Duration::from_secs(self.timeout_sec.max(token_timeout));

        let id = self.next_id.fetch_add(1, Relaxed);
        let req = GenRequest {
            id,
            model: self.model.clone(),
            prompt: Prompt::Chat(
                messages
                    .iter()
                    .map(|m| ChatMessage {
                        role: role(&m.role),
                        content: m.content.clone(),
                    })
                    .collect(),
            ),
            max_tokens: max_tokens.unwrap_or(0).min(u64::from(u32::MAX)) as u32,
            ignore_eos: false,
            streaming: self.stream,
            // llmb asks for usage (vLLM's script does not), so token counts are the server's.
            include_usage: true,
            temperature: None,
            extra_body: (!extra.is_empty()).then(|| Value::Object(extra).to_string()),
        };
        let input_tokens: u32 = messages
            .iter()
            .map(|m| self.tokenizer.count(&m.content))
            .sum();
        let now = self.now_ns();
        let preamble = conv.preamble();
        let record = RequestRecord {
            id,
            sample: conv.index,
            client: Some(client_id as u32),
            turn: Some((index.saturating_sub(preamble) / 2) as u32),
            warmup,
            scheduled_ns: now,
            released_ns: Some(now),
            dispatched_ns: now,
            prompt_tokens: input_tokens,
            ..Default::default()
        };
        let record = match self.pool.checkout() {
            Ok(mut adapter) => {
                let exchange = Exchange {
                    client: &self.client,
                    target: &target,
                    tokenizer: &self.tokenizer,
                    t0: self.t0,
                };
                exchange.execute(&mut adapter, &req, record).await
            }
            Err(e) => return Turn::Exception(format!("{e:#}")),
        };

        let outcome = if let Some(err) = &record.error {
            let why = format!("{}: {}", err.kind, err.message);
            if err.http_status.is_some() || err.message.contains("never received a valid chunk") {
                Turn::Rejected(why)
            } else {
                Turn::Exception(why)
            }
        } else {
            let stats = self.measure(&record, conv, messages_to_use, input_tokens, client_id);
            if self.print_content {
                eprintln!(
                    "\nResponse ({} tokens): {}",
                    stats.output_num_tokens, record.generated_text
                );
                eprintln!(
                    "Response metrics: ttft_ms {:.2}, tpot_ms {:.2}, latency_ms {:.2}, input_num_tokens {}, \
                     output_num_tokens {} ({} chunks, {} tokens in first chunk), approx_cached_percent {:.2}%",
                    stats.ttft_ms,
                    stats.tpot_ms,
                    stats.latency_ms,
                    stats.input_num_tokens,
                    stats.output_num_tokens,
                    stats.output_num_chunks,
                    stats.output_num_first_chunk_tokens,
                    stats.approx_cached_percent
                );
            }
            let answer = record.generated_text.clone();
            match conv.messages.get_mut(messages_to_use) {
                Some(orig) => {
                    if self.verify_output && orig.content != answer {
                        Turn::Exception(format!(
                            "LLM/dataset answers do not match ({}):\n'{}' (len: {}),\n'{}' (len: {})",
                            conv.id,
                            short(&answer),
                            answer.len(),
                            short(&orig.content),
                            orig.content.len()
                        ))
                    } else {
                        orig.content = answer;
                        Turn::Ok(Box::new(stats))
                    }
                }
                None => {
                    conv.messages.push(Message {
                        role: "assistant".into(),
                        content: answer,
                    });
                    Turn::Ok(Box::new(stats))
                }
            }
        };
        let _ = tx.send(Event::Record(Box::new(record)));
        outcome
    }

    /// vLLM's per-request numbers from a successful record. TTFT is llmb's: the first frame
    /// carrying a choice (a chat stream's role-only first chunk included, as `vllm bench serve`
    /// counts it); the first chunk is taken to hold one token, so TPOT is
    /// (latency − TTFT) / (output tokens − 1), latency runs to the end of the body (`[DONE]`),
    /// and output tokens are the server's usage count when it reports one.
    fn measure(
        &self,
        record: &RequestRecord,
        conv: &Conversation,
        messages_to_use: usize,
        input_tokens: u32,
        client_id: usize,
    ) -> RequestStats {
        let ms = |ns: u64| ns as f64 / 1e6;
        let latency_ms = ms(record.end_ns.saturating_sub(record.sent_ns));
        let streamed = self.stream && !record.delta_ns.is_empty();
        let ttft_ms = if streamed {
            ms(record.delta_ns[0].saturating_sub(record.sent_ns))
        } else {
            latency_ms
        };
        let output = u64::from(record.output_tokens);
        let first_chunk_tokens = u64::from(streamed && output > 0);
        let tpot_ms = if output > 1 && output > first_chunk_tokens {
            (latency_ms - ttft_ms) / (output - first_chunk_tokens) as f64
        } else {
            0.0
        };
        let question = u64::from(
            self.tokenizer
                .count(&conv.messages[messages_to_use - 1].content),
        );
        let host_input = u64::from(input_tokens);
        let history = host_input.saturating_sub(question);
        RequestStats {
            ttft_ms,
            tpot_ms,
            latency_ms,
            start_time_ms: ms(record.sent_ns),
            input_num_turns: messages_to_use as u64,
            input_num_tokens: record.server_prompt_tokens.map_or(host_input, u64::from),
            output_num_tokens: output,
            output_num_chunks: if streamed {
                record.delta_ns.len() as u64 - 1
            } else {
                0
            },
            output_num_first_chunk_tokens: first_chunk_tokens,
            approx_cached_percent: if host_input > 0 {
                100.0 * history as f64 / host_input as f64
            } else {
                0.0
            },
            conversation_id: conv.id.clone(),
            client_id: client_id as u64,
            record_id: record.id,
        }
    }
}
