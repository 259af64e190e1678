//! Putting load on the server: open-loop schedules paced by a dedicated thread, closed-loop
//! clients, and multi-turn conversations, all producing the same [`RequestRecord`]s.
//!
//! The pacer is an OS thread rather than a tokio timer because tokio's timer wheel has 1 ms
//! granularity: at 1,000 req/s that alone would make every request up to a millisecond late.
//! `std::thread::sleep` wakes within tens of microseconds, then hands the request to the runtime.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::lifecycle::{Cancel, StopCause};
use crate::plugin::backend::{
    BackendPool, ChatMessage, GenRequest, Prompt as BPrompt, Role as BRole,
};
use crate::plugin::dataset::Sample;
use crate::records::{RecordWriter, RequestError, RequestRecord};
use crate::tokenizer::HostTokenizer;
use crate::transport::{self, Exchange, Target};

/// How long in-flight requests may finish after Ctrl-C before they are cut off.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// How requests are released.
#[derive(Debug, Clone)]
pub enum LoadPlan {
    /// Open loop: `(offset, sample index)` in send order; each starts a unit of work at its
    /// offset whether or not earlier ones finished.
    Schedule(Vec<(Duration, usize)>),
    /// Closed loop: each client sends its next request when the previous one finished.
    Clients(ClientsPlan),
}

/// `--num-clients` and friends.
#[derive(Debug, Clone)]
pub struct ClientsPlan {
    pub clients: usize,
    /// Client i starts at `i * ramp_up / clients`.
    pub ramp_up: Duration,
    /// No new request starts after this offset (`--client-stop-time`, `--duration`).
    pub stop_issuing_at: Option<Duration>,
    /// Requests per client (`--num-turns`); `None` = until the shared limit or stop time.
    pub per_client: Option<usize>,
    /// Requests over all clients; `None` = no shared limit.
    pub total: Option<usize>,
    pub seed: u64,
    /// Clients draw from samples `first .. first + len` (wrapping around the pool).
    pub first_sample: usize,
    pub sample_count: usize,
}

/// Which requests are warmups, left out of the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Warmup {
    /// The first this-many requests sent.
    pub requests: usize,
    /// Requests meant to go out before this offset.
    pub until: Option<Duration>,
}

/// Per-request settings that do not change within a run.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub model: String,
    pub ignore_eos: bool,
    pub temperature: Option<f32>,
    pub extra_body: Option<String>,
    /// Pause between the turns of a conversation.
    pub think_time: Duration,
    pub streaming: bool,
    /// `--lora-modules`: each request names one of these adapters as its model instead.
    pub lora: Option<crate::cli_vllm::Lora>,
    /// `--request-id-prefix`: each request carries `x-request-id: PREFIX<id>`.
    pub request_id_prefix: Option<String>,
}

impl RequestTemplate {
    /// The adapter's view of request `id`.
    pub fn request(&self, id: u64, prompt: BPrompt, max_tokens: u32) -> GenRequest {
        GenRequest {
            id,
            model: match &self.lora {
                Some(lora) => lora.pick(id).to_string(),
                None => self.model.clone(),
            },
            prompt,
            max_tokens,
            ignore_eos: self.ignore_eos,
            streaming: self.streaming,
            include_usage: true,
            temperature: self.temperature,
            extra_body: self.extra_body.clone(),
        }
    }
}

/// Everything the request tasks share.
pub struct Runner {
    pub pool: Arc<BackendPool>,
    pub client: transport::HttpClient,
    pub target: Target,
    pub tokenizer: Arc<HostTokenizer>,
    pub samples: Arc<Vec<Sample>>,
    pub template: RequestTemplate,
    pub max_concurrency: Option<usize>,
    pub warmup: Warmup,
    pub show_progress: bool,
    /// `--max-plugin-faults`: stop the run (as Ctrl-C does) once this many requests failed
    /// with a plugin fault.
    pub max_plugin_faults: Option<u64>,
}

/// What one execution produced.
pub struct Executed {
    /// In completion order.
    pub records: Vec<RequestRecord>,
    /// Start of the run to the last completion.
    pub elapsed: Duration,
    /// Where measurement starts (after warmup), from the run's start.
    pub measured_from: Duration,
    pub interrupted: bool,
    /// The phase a stop came in: `warmup` or `measure`.
    pub stopped_in: &'static str,
}

/// Plugin faults seen in one execution, against `--max-plugin-faults`.
struct FaultWatch {
    limit: Option<u64>,
    seen: u64,
}

impl FaultWatch {
    /// Counts `rec`'s fault; at the limit, stops the run with a message saying why.
    fn observe(&mut self, rec: &RequestRecord, cancel: &Cancel) {
        if rec.plugin_fault.is_none() {
            return;
        }
        self.seen += 1;
        if let Some(limit) = self.limit
            && self.seen >= limit
        {
            let cause = StopCause::PluginFaults {
                limit,
                faults: self.seen,
            };
            if cancel.stop(cause.clone()) {
                eprintln!(
                    "\nStopping: {cause} (the last: {}); no new requests, those in flight get up to {INTERRUPT_GRACE:?}",
                    rec.error.as_ref().map_or("?", |e| e.message.as_str())
                );
            }
        }
    }
}

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
struct Live {
    runner: Arc<Runner>,
    semaphore: Option<Arc<Semaphore>>,
    /// Every record's time origin: the start of the execution, warmups included.
    t0: Instant,
    /// Where the plan's offsets count from: the end of the warmup phase.
    origin: Instant,
    /// Every request of this execution phase is a warmup.
    warming: bool,
    next_id: AtomicU64,
    /// Requests taken against the shared limit.
    taken: AtomicUsize,
    limit: Option<usize>,
    stop_issuing_at: Option<Duration>,
    /// The run's cancellation: stopping ends issuing and wakes sleeping clients; cut ends the
    /// requests in flight.
    cancel: Cancel,
    tx: mpsc::UnboundedSender<RequestRecord>,
}

impl Live {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// A plan offset as nanoseconds since `t0`.
    fn plan_ns(&self, offset: Duration) -> u64 {
        (self.origin.saturating_duration_since(self.t0) + offset).as_nanos() as u64
    }

    /// Whether another request may start: not stopped, before the stop time, under the limit.
    fn may_issue(&self) -> bool {
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
    async fn sleep(&self, d: Duration) -> bool {
        self.sleep_until(tokio::time::Instant::now() + d).await
    }

    async fn sleep_until(&self, at: tokio::time::Instant) -> bool {
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
        let req = t.request(id, prompt, s.output_tokens);
        let record = RequestRecord {
            id,
            sample: sample as u64,
            client,
            turn,
            warmup,
            scheduled_ns: intended_ns,
            prompt_tokens,
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
            .request_id_prefix
            .as_deref()
            .map(|prefix| crate::cli_vllm::with_request_id(&self.runner.target, prefix, req.id));
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
        let mut record = exchange
            .execute_until(&mut adapter, &req, record, cut)
            .await;
        record.plugin_ns = adapter.take_usage().ns;
        record.plugin_fault = adapter.fault();
        record
    }

    /// One unit of work from a sample: a single request, or every turn of a conversation with
    /// the server's actual replies in the history. Returns the end of the last request, or
    /// `None` when nothing was sent. `first_id` numbers the first request when the caller
    /// already knows its place in the send order.
    async fn run_sample(
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
                let think = self.runner.template.think_time;
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

/// The same seed gives client `i` the same sequence on every run; clients differ.
fn client_rng(seed: u64, client: usize) -> StdRng {
    let mut z = seed ^ (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// The sample indices client `i` works through, in order (the first `n` of its sequence).
pub fn client_sequence(seed: u64, client: usize, pool: usize, n: usize) -> Vec<usize> {
    let mut rng = client_rng(seed, client);
    (0..n).map(|_| rng.random_range(0..pool)).collect()
}

/// Resolves once a stop is requested; never, if the sender is gone without asking.
pub async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Runner {
    /// The warmup phase: sends the warmup requests at once (under the concurrency cap, as vLLM
    /// does) and waits for all of them; their records go to the writer marked as warmups. A stop
    /// cuts them off at once (they are not measured). Returns the next free request id.
    async fn warm_up(
        self: &Arc<Self>,
        samples: &[usize],
        t0: Instant,
        mut writer: Option<&mut RecordWriter>,
        records: &mut Vec<RequestRecord>,
        cancel: &Cancel,
        faults: &mut FaultWatch,
    ) -> anyhow::Result<u64> {
        eprintln!("llmb: warmup: {} requests", samples.len());
        let (tx, mut rx) = mpsc::unbounded_channel::<RequestRecord>();
        let live = Arc::new(Live {
            runner: self.clone(),
            semaphore: self.max_concurrency.map(|c| Arc::new(Semaphore::new(c))),
            t0,
            origin: t0,
            warming: true,
            next_id: AtomicU64::new(samples.len() as u64),
            taken: AtomicUsize::new(0),
            limit: None,
            stop_issuing_at: None,
            cancel: cancel.clone(),
            tx,
        });
        for (i, &sample) in samples.iter().enumerate() {
            let live = live.clone();
            tokio::spawn(async move {
                live.run_sample(sample, None, 0, &mut || true, Some(i as u64))
                    .await;
            });
        }
        drop(live);
        let mut warm_records = 0u64;
        loop {
            tokio::select! {
                rec = rx.recv() => {
                    let Some(rec) = rec else { break };
                    faults.observe(&rec, cancel);
                    if let Some(w) = writer.as_mut() {
                        w.write(&rec).with_context(|| format!("cannot write {}", w.path().display()))?;
                    }
                    records.push(rec);
                    warm_records += 1;
                }
                _ = cancel.stopped(), if !cancel.is_cut() => {
                    eprintln!("llmb: stopped during warmup: cutting off the warmup requests");
                    cancel.cut(StopCause::Interrupt);
                }
            }
        }
        // Every request took one id: the first turns 0..n, any later turns the ids after.
        Ok(warm_records.max(samples.len() as u64))
    }

    /// Runs `plan` (warmup, then the measured phase, then the drain after a stop), streaming
    /// records to `records_path` as they finish. `cancel` stopping ends issuing, wakes sleeping
    /// clients and starts the grace period; once it is cut, requests in flight end with what
    /// they measured, marked `cancelled`.
    pub async fn execute(
        self: &Arc<Self>,
        plan: &LoadPlan,
        records_path: Option<&Path>,
        cancel: impl Into<Cancel>,
    ) -> anyhow::Result<Executed> {
        let cancel: Cancel = cancel.into();
        let mut writer = records_path.map(RecordWriter::create).transpose()?;
        let t0 = Instant::now();
        // vLLM's semantics: warmup requests go out and finish before the measured phase, whose
        // schedule, duration and throughput start after them.
        let (warmup_samples, plan) = split_warmups(plan, self.warmup.requests, self.samples.len());
        let mut records = Vec::with_capacity(warmup_samples.len() + 1024);
        let mut faults = FaultWatch {
            limit: self.max_plugin_faults,
            seen: 0,
        };
        let mut next_id = 0;
        if !warmup_samples.is_empty() && !cancel.is_stopping() {
            next_id = self
                .warm_up(
                    &warmup_samples,
                    t0,
                    writer.as_mut(),
                    &mut records,
                    &cancel,
                    &mut faults,
                )
                .await?;
        }
        let origin = if warmup_samples.is_empty() {
            t0
        } else {
            Instant::now()
        };
        let stopped_before = cancel.is_stopping();
        let stopped_in = if stopped_before { "warmup" } else { "measure" };
        let (tx, mut rx) = mpsc::unbounded_channel::<RequestRecord>();
        let plan = &plan;
        let (limit, stop_issuing_at, expected) = match plan {
            LoadPlan::Schedule(jobs) => (None, None, Some(jobs.len())),
            LoadPlan::Clients(c) => (
                c.total,
                c.stop_issuing_at,
                c.total.or(c.per_client.map(|n| n * c.clients)),
            ),
        };
        let live = Arc::new(Live {
            runner: self.clone(),
            semaphore: self.max_concurrency.map(|c| Arc::new(Semaphore::new(c))),
            t0,
            origin,
            warming: false,
            next_id: AtomicU64::new(next_id),
            taken: AtomicUsize::new(0),
            limit: if stopped_before { Some(0) } else { limit },
            stop_issuing_at,
            cancel: cancel.clone(),
            tx,
        });
        if !stopped_before {
            eprintln!("llmb: measuring");
        }
        let pacer = match plan {
            _ if stopped_before => None,
            LoadPlan::Schedule(jobs) if jobs.iter().all(|(at, _)| at.is_zero()) => {
                spawn_all_now(&live, jobs);
                None
            }
            LoadPlan::Schedule(jobs) => Some(spawn_pacer(live.clone(), jobs.clone())?),
            LoadPlan::Clients(c) => {
                spawn_clients(&live, c);
                None
            }
        };
        drop(live);

        let mut failed = 0usize;
        let mut grace_deadline: Option<tokio::time::Instant> = None;
        let progress = self.show_progress.then(|| progress_bar(expected));
        loop {
            let grace = async {
                match grace_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                rec = rx.recv() => {
                    let Some(rec) = rec else { break };
                    faults.observe(&rec, &cancel);
                    if let Some(w) = writer.as_mut() {
                        w.write(&rec).with_context(|| format!("cannot write {}", w.path().display()))?;
                    }
                    failed += usize::from(!rec.success);
                    records.push(rec);
                    if let Some(bar) = &progress {
                        bar.inc(1);
                        let rate = records.len() as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                        bar.set_message(format!("{failed} failed, {rate:.1} req/s"));
                    }
                }
                // The drain: what is in flight may finish within the grace period.
                _ = cancel.stopped(), if grace_deadline.is_none() && !cancel.is_cut() => {
                    eprintln!("llmb: drain: up to {INTERRUPT_GRACE:?} for the requests in flight");
                    grace_deadline = Some(tokio::time::Instant::now() + INTERRUPT_GRACE);
                }
                _ = grace => {
                    cancel.cut(StopCause::Interrupt);
                    grace_deadline = None;
                }
            }
        }
        let elapsed = t0.elapsed();
        let interrupted = cancel.is_stopping();
        if let Some(p) = pacer {
            tokio::task::spawn_blocking(move || p.join())
                .await
                .context("request pacer failed")?
                .map_err(|_| anyhow::anyhow!("request pacer panicked"))?;
        }
        if let Some(bar) = progress {
            bar.finish();
            eprintln!();
        }
        // The measured phase starts after the warmup phase, whatever the records say.
        let measured_from =
            measured_start(&records, &self.warmup).max(origin.saturating_duration_since(t0));
        Ok(Executed {
            records,
            elapsed,
            measured_from,
            interrupted,
            stopped_in,
        })
    }
}

/// Takes the first `n` requests of `plan` out as warmups: their samples, and the plan for the
/// rest, whose schedule starts at zero when the warmups are done.
fn split_warmups(plan: &LoadPlan, n: usize, pool: usize) -> (Vec<usize>, LoadPlan) {
    if n == 0 {
        return (Vec::new(), plan.clone());
    }
    match plan {
        LoadPlan::Schedule(jobs) => {
            let n = n.min(jobs.len());
            let warm = jobs[..n].iter().map(|&(_, sample)| sample).collect();
            let start = jobs.get(n).map_or(Duration::ZERO, |&(at, _)| at);
            let rest = jobs[n..]
                .iter()
                .map(|&(at, sample)| (at.saturating_sub(start), sample))
                .collect();
            (warm, LoadPlan::Schedule(rest))
        }
        LoadPlan::Clients(c) => {
            let n = c.total.map_or(n, |t| n.min(t));
            let warm = (0..n)
                .map(|i| (c.first_sample + i % c.sample_count.max(1)) % pool.max(1))
                .collect();
            let rest = ClientsPlan {
                total: c.total.map(|t| t - n),
                ..c.clone()
            };
            (warm, LoadPlan::Clients(rest))
        }
    }
}

/// Measurement starts at the warmup window's end, or at the first measured request's intended
/// send time when warmups were counted in requests; at the run's start without warmups.
fn measured_start(records: &[RequestRecord], warmup: &Warmup) -> Duration {
    if !records.iter().any(|r| r.warmup) {
        return Duration::ZERO;
    }
    let first_measured = records
        .iter()
        .filter(|r| !r.warmup)
        .map(|r| r.scheduled_ns)
        .min()
        .map(Duration::from_nanos);
    match (warmup.until, first_measured) {
        (Some(until), Some(first)) => until.min(first).max(Duration::ZERO),
        (Some(until), None) => until,
        (None, Some(first)) => first,
        (None, None) => Duration::ZERO,
    }
}

/// Everything at once (`--request-rate inf`): spawned from the runtime itself, which is cheaper
/// than handing each request over from the pacer thread.
fn spawn_all_now(live: &Arc<Live>, jobs: &[(Duration, usize)]) {
    for &(_, sample) in jobs {
        let live = live.clone();
        let id = live.next_id.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            let intended = live.plan_ns(Duration::ZERO);
            live.run_sample(sample, None, intended, &mut || true, Some(id))
                .await;
        });
    }
}

/// Sleeps on its own thread to each offset, then starts the request on the runtime.
fn spawn_pacer(
    live: Arc<Live>,
    jobs: Vec<(Duration, usize)>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let handle = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("llmb-pacer".into())
        .spawn(move || {
            for (offset, sample) in jobs {
                let target = live.origin + offset;
                loop {
                    if live.cancel.is_stopping() {
                        return;
                    }
                    let now = Instant::now();
                    if now >= target {
                        break;
                    }
                    // Wake at least every 20 ms so Ctrl-C is seen during long gaps.
                    std::thread::sleep((target - now).min(Duration::from_millis(20)));
                }
                let live = live.clone();
                let intended = live.plan_ns(offset);
                let id = live.next_id.fetch_add(1, Relaxed);
                handle.spawn(async move {
                    live.run_sample(sample, None, intended, &mut || true, Some(id))
                        .await;
                });
            }
        })
        .context("cannot start the request pacer thread")
}

fn spawn_clients(live: &Arc<Live>, plan: &ClientsPlan) {
    let pool = live.runner.samples.len();
    let (first, count) = (plan.first_sample, plan.sample_count.clamp(1, pool));
    for i in 0..plan.clients {
        let live = live.clone();
        let start = plan.ramp_up.mul_f64(i as f64 / plan.clients as f64);
        let per_client = plan.per_client;
        let seed = plan.seed;
        tokio::spawn(async move {
            // Clients asleep in the ramp-up or their think time wake when the run stops.
            let begin = tokio::time::Instant::from_std(live.origin + start);
            if !live.sleep_until(begin).await {
                return;
            }
            let mut rng = client_rng(seed, i);
            let mut sent = 0usize;
            let mut intended = live.plan_ns(start);
            let think = live.runner.template.think_time;
            loop {
                if per_client.is_some_and(|n| sent >= n) {
                    break;
                }
                let sample = (first + rng.random_range(0..count)) % pool;
                let mut budget = || {
                    if per_client.is_some_and(|n| sent >= n) || !live.may_issue() {
                        return false;
                    }
                    sent += 1;
                    true
                };
                let Some(end) = live
                    .run_sample(sample, Some(i as u32), intended, &mut budget, None)
                    .await
                else {
                    break;
                };
                if !think.is_zero() && !live.sleep(think).await {
                    break;
                }
                intended = end.max(live.now_ns());
            }
        });
    }
}

/// The live progress line: completed of expected, failures, rate and elapsed time (indicatif
/// redraws at most 20 times a second, so the receive loop pays only an atomic increment).
fn progress_bar(expected: Option<usize>) -> indicatif::ProgressBar {
    let (bar, template) = match expected {
        Some(n) => (
            indicatif::ProgressBar::new(n as u64),
            "{bar:30.cyan/blue} {pos}/{len} done, {msg}, {elapsed}",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {pos} done, {msg}, {elapsed}",
        ),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_message("0 failed");
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_sequences_are_deterministic_and_differ_between_clients() {
        let a = client_sequence(7, 0, 1000, 50);
        assert_eq!(a, client_sequence(7, 0, 1000, 50));
        assert_ne!(a, client_sequence(7, 1, 1000, 50));
        assert_ne!(a, client_sequence(8, 0, 1000, 50));
    }

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
