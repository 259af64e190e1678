//! One run from its shards: their raw records put on one clock, so every metric is computed
//! from the union of requests (percentiles cannot be combined from per-shard summaries).

use anyhow::bail;

use crate::outcome::RunTiming;
use crate::records::RequestRecord;
use crate::shard::Shard;

/// What one shard left: who it was, its plan, its clock and its records.
#[derive(Debug, Clone)]
pub struct ShardRun {
    /// Named in refusals (the result file).
    pub name: String,
    pub shard: Shard,
    pub plan_digest: String,
    pub timing: RunTiming,
    pub records: Vec<RequestRecord>,
}

/// The union, on the earliest shard's clock.
#[derive(Debug, Clone)]
pub struct Merged {
    pub records: Vec<RequestRecord>,
    /// From the earliest shard's measured start to the last shard's last completion.
    pub measured_s: f64,
    pub shard_count: usize,
    /// Shard indexes with no result.
    pub missing: Vec<usize>,
    pub plan_digest: String,
}

/// Checks the shards belong to one run (one plan digest, one shard count, each index once)
/// and puts their records on the earliest shard's clock.
pub fn merge(mut shards: Vec<ShardRun>) -> anyhow::Result<Merged> {
    let Some(first) = shards.first() else {
        bail!("no shard results to merge");
    };
    let (digest, count) = (first.plan_digest.clone(), first.shard.count);
    for s in &shards {
        if s.plan_digest != digest {
            bail!(
                "{} ran another plan (digest {}) than {} ({}): not shards of one run",
                s.name,
                s.plan_digest,
                first.name,
                digest
            );
        }
        if s.shard.count != count {
            bail!(
                "{} is shard {}/{}, but {} says {} shards",
                s.name,
                s.shard.index,
                s.shard.count,
                first.name,
                count
            );
        }
    }
    shards.sort_by_key(|s| s.shard.index);
    for pair in shards.windows(2) {
        if pair[0].shard.index == pair[1].shard.index {
            bail!(
                "shard {} appears twice: {} and {}",
                pair[0].shard.index,
                pair[0].name,
                pair[1].name
            );
        }
    }
    let missing: Vec<usize> = (0..count)
        .filter(|i| !shards.iter().any(|s| s.shard.index == *i))
        .collect();
    let base = shards
        .iter()
        .map(|s| s.timing.t0_unix_ns)
        .min()
        .unwrap_or(0);
    let mut start = u64::MAX;
    let mut end = 0u64;
    let mut records = Vec::new();
    for s in shards {
        let shift = s.timing.t0_unix_ns - base;
        start = start.min(shift + s.timing.measured_from_ns);
        end = end.max(shift + s.timing.elapsed_ns);
        records.extend(s.records.into_iter().map(|r| shifted(r, shift)));
    }
    records.sort_by_key(|r| r.id);
    Ok(Merged {
        records,
        measured_s: end.saturating_sub(start) as f64 / 1e9,
        shard_count: count,
        missing,
        plan_digest: digest,
    })
}

/// `r` with every instant moved `by` ns later (durations unchanged).
fn shifted(mut r: RequestRecord, by: u64) -> RequestRecord {
    r.scheduled_ns += by;
    r.released_ns = r.released_ns.map(|t| t + by);
    r.dispatched_ns += by;
    r.sent_ns += by;
    r.written_ns = r.written_ns.map(|t| t + by);
    r.first_byte_ns = r.first_byte_ns.map(|t| t + by);
    for t in &mut r.delta_ns {
        *t += by;
    }
    r.end_ns += by;
    r
}
