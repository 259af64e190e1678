//! The warmup phase (vLLM's semantics): the first requests of the plan are taken out, sent at
//! once and awaited before measuring starts, and the measured phase's start is placed after
//! them. Kept apart from the measured phase, which it precedes and shares nothing else with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc};

use crate::lifecycle::{Cancel, StopCause};
use crate::plan::{ClientsPlan, LoadPlan, Warmup};
use crate::records::{RecordWriter, RequestRecord};

use super::live::Live;
use super::{FaultWatch, Runner};

impl Runner {
    /// The warmup phase: sends the warmup requests at once (under the concurrency cap, as vLLM
    /// does) and waits for all of them; their records go to the writer marked as warmups. A stop
    /// cuts them off at once (they are not measured). Returns the next free request id.
    pub(super) async fn warm_up(
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
}

/// Takes the first `n` requests of `plan` out as warmups: their samples, and the plan for the
/// rest, whose schedule starts at zero when the warmups are done.
pub(super) fn split_warmups(plan: &LoadPlan, n: usize, pool: usize) -> (Vec<usize>, LoadPlan) {
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
pub(super) fn measured_start(records: &[RequestRecord], warmup: &Warmup) -> Duration {
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
