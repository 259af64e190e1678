//! Putting load on the server: open-loop schedules paced by a dedicated thread, closed-loop
//! clients, and multi-turn conversations, all producing the same [`RequestRecord`]s.
//!
//! The pacer is an OS thread rather than a tokio timer because tokio's timer wheel has 1 ms
//! granularity: at 1,000 req/s that alone would make every request up to a millisecond late.
//! `std::thread::sleep` wakes within tens of microseconds, then hands the request to the runtime.
//!
//! This module holds the [`Runner`] and its measured phase (the receive loop, the drain after a
//! stop); the tasks' shared state and the per-request path are in `live`, the pacer thread and
//! the closed-loop clients in `spawn`, and the warmup phase in `warmup`.

mod live;
mod request;
mod spawn;
mod warmup;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::lifecycle::{Cancel, StopCause};
use crate::plugin::backend::BackendPool;
use crate::plugin::dataset::Sample;
use crate::records::{RecordWriter, RequestRecord};
use crate::tokenizer::HostTokenizer;
use crate::transport::{self, Target};

use live::Live;
use spawn::{spawn_all_now, spawn_clients, spawn_pacer};
use warmup::{measured_start, split_warmups};

pub use crate::lifecycle::INTERRUPT_GRACE;
pub use crate::plan::{ClientsPlan, LoadPlan, Warmup};
pub use request::{
    CancelPlan, Lora, LoraAssignment, RequestDefaults, RequestTemplate, with_request_id,
};
pub use spawn::client_sequence;

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
    /// Sharded runs number requests fleet-wide (`local * count + index`).
    pub shard: Option<crate::shard::Shard>,
    /// Percentile SLOs whose certain miss ends the stage at once (an SLO search).
    pub stop_on_slos: Vec<crate::slo_search::Slo>,
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
    /// The time origin of the records.
    pub t0: Instant,
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

/// Resolves once a stop is requested; never, if the sender is gone without asking.
pub async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Runner {
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

        let mut slo_watch = match expected {
            Some(n) if !self.stop_on_slos.is_empty() => Some(crate::slo_search::SloWatch::new(
                self.stop_on_slos.clone(),
                n,
            )),
            _ => None,
        };
        let mut failed = 0usize;
        let mut last_end_ns: Option<u64> = None;
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
                    // Everything already queued is taken in the same wake-up.
                    let mut next = Some(rec);
                    let mut taken = 0u64;
                    while let Some(rec) = next.take().or_else(|| rx.try_recv().ok()) {
                        taken += 1;
                        faults.observe(&rec, &cancel);
                        if let Some(why) = slo_watch.as_mut().and_then(|w| w.observe(&rec)) {
                            let cause = StopCause::SloMissed(why);
                            if cancel.stop(cause.clone()) {
                                eprintln!("\nStopping the stage: {cause}");
                                cancel.cut(cause);
                            }
                        }
                        if let Some(w) = writer.as_mut() {
                            w.append(&rec).with_context(|| format!("cannot write {}", w.path().display()))?;
                        }
                        failed += usize::from(!rec.success);
                        last_end_ns = last_end_ns.max(Some(rec.end_ns));
                        records.push(rec);
                    }
                    if let Some(w) = writer.as_mut() {
                        w.flush().with_context(|| format!("cannot write {}", w.path().display()))?;
                    }
                    if let Some(bar) = &progress {
                        bar.inc(taken);
                        let rate = records.len() as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                        bar.set_message(format!("{failed} failed, {rate:.1} req/s"));
                    }
                    // Records come in at most once per pause: each wake-up of this loop (on the
                    // thread that called `block_on`, so file writes never hold up a runtime
                    // worker) is a futex wake and a context switch, one per record without it.
                    if !cancel.is_stopping() {
                        tokio::time::sleep(COLLECT_PAUSE).await;
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
        // The run ends with its last response, not when this loop woke to see it (up to a
        // pause later).
        let elapsed = last_end_ns
            .map_or_else(|| t0.elapsed(), Duration::from_nanos)
            .min(t0.elapsed());
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
            t0,
        })
    }
}

/// How long the collector sleeps after taking records in, so a busy run wakes it at most
/// ~500 times a second instead of once per record. Records still reach the file within it.
const COLLECT_PAUSE: Duration = Duration::from_millis(2);

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
