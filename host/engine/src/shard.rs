//! Running one plan as N shards with no coordinator: which shard this process is (from the
//! command line or the job engine's environment), and its part of the plan.
//!
//! Every shard builds the same global plan from the same options and seed, then keeps every
//! N-th arrival (open loop) or every N-th client (closed loop), as k6-operator splits work by
//! execution segment. Request ids stay global (`local * N + index`), so shards' records never
//! collide and `x-request-id`s are unique across the fleet.

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

/// This process's shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
    /// Where it came from: `--shard`, or the environment variables that said so.
    pub source: String,
}

/// Job engines that tell a process its rank: (index variable, count variable). Kubernetes
/// Indexed Jobs export only the index, so the count comes from `--shards N`.
const RANK_VARIABLES: &[(&str, Option<&str>)] = &[
    ("JOB_COMPLETION_INDEX", None),
    ("SLURM_PROCID", Some("SLURM_NTASKS")),
    ("OMPI_COMM_WORLD_RANK", Some("OMPI_COMM_WORLD_SIZE")),
    ("PMI_RANK", Some("PMI_SIZE")),
];

impl Shard {
    /// `--shard i/N` when given; else the first job engine's variables found in `env`, with
    /// `--shards N` for the count where the engine does not export one. `None`: one process.
    pub fn detect(
        flag: Option<&str>,
        shards: Option<usize>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Shard>> {
        if let Some(text) = flag {
            let (i, n) = text
                .split_once('/')
                .with_context(|| format!("--shard {text}: expected INDEX/COUNT, e.g. 0/4"))?;
            let shard = Shard {
                index: i
                    .trim()
                    .parse()
                    .with_context(|| format!("--shard {text}: index"))?,
                count: n
                    .trim()
                    .parse()
                    .with_context(|| format!("--shard {text}: count"))?,
                source: "--shard".into(),
            };
            return shard.checked().map(Some);
        }
        for (index_var, count_var) in RANK_VARIABLES {
            let Some(index) = env(index_var) else {
                continue;
            };
            let index: usize = index
                .trim()
                .parse()
                .with_context(|| format!("{index_var}={index:?} is not a shard index"))?;
            let (count, source) = match (count_var.and_then(|v| env(v).map(|c| (v, c))), shards) {
                (_, Some(n)) => (n, format!("{index_var} and --shards")),
                (Some((var, c)), None) => (
                    c.trim()
                        .parse()
                        .with_context(|| format!("{var}={c:?} is not a shard count"))?,
                    format!("{index_var} and {var}"),
                ),
                (None, None) => bail!(
                    "{index_var} is set (shard {index}) but the number of shards is not: pass \
                     --shards N (Kubernetes does not export it)"
                ),
            };
            if count <= 1 && shards.is_none() {
                // A single-task job step: one process, no sharding.
                return Ok(None);
            }
            return Shard {
                index,
                count,
                source,
            }
            .checked()
            .map(Some);
        }
        match shards {
            Some(n) if n > 1 => bail!(
                "--shards {n} but no shard index: pass --shard i/{n}, or run under a Kubernetes \
                 Indexed Job or Slurm, which set it"
            ),
            _ => Ok(None),
        }
    }

    fn checked(self) -> anyhow::Result<Shard> {
        ensure!(self.count >= 1, "a run needs at least one shard");
        ensure!(
            self.index < self.count,
            "shard index {} is not below the shard count {} ({})",
            self.index,
            self.count,
            self.source
        );
        Ok(self)
    }

    /// Whether the plan's `position`-th arrival (or client) is this shard's.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }

    /// How many of the first `n` positions are this shard's.
    pub fn share_of(&self, n: usize) -> usize {
        n / self.count + usize::from(self.index < n % self.count)
    }

    /// The fleet-wide id of this shard's `local`-th request.
    pub fn global_id(&self, local: u64) -> u64 {
        local * self.count as u64 + self.index as u64
    }
}

/// How long shards wait for each other at a stage before giving up.
const BARRIER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Meets the other shards before stage `stage` through files in `dir` (a folder they all
/// see): each writes when it arrived, waits until all `count` have, and every shard returns
/// the same start time, one second after the last arrival. No coordinator, only a shared
/// folder, which Indexed Jobs and Slurm jobs have for their results anyway.
pub async fn stage_barrier(
    dir: &std::path::Path,
    stage: usize,
    shard: &Shard,
) -> anyhow::Result<std::time::SystemTime> {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let folder = dir.join(format!("stage-{stage}"));
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("--sync-dir: cannot create {}", folder.display()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let mine = folder.join(format!("shard-{}", shard.index));
    // A marker of ours already there is an earlier run's: its arrival times would start this
    // stage at once, out of step with the other shards.
    if mine.exists() {
        bail!(
            "--sync-dir {}: {} is left from an earlier run; give each run a fresh --sync-dir",
            dir.display(),
            mine.display()
        );
    }
    let tmp = folder.join(format!(".shard-{}.tmp", shard.index));
    std::fs::write(&tmp, now.to_string())?;
    std::fs::rename(&tmp, &mine)?;
    let deadline = tokio::time::Instant::now() + BARRIER_TIMEOUT;
    loop {
        let mut arrivals = Vec::new();
        for i in 0..shard.count {
            let text = std::fs::read_to_string(folder.join(format!("shard-{i}"))).ok();
            arrivals.push(text.and_then(|t| t.trim().parse::<u128>().ok()));
        }
        if arrivals.iter().all(Option::is_some) {
            let last = arrivals.into_iter().flatten().max().unwrap_or(now);
            let at = UNIX_EPOCH + Duration::from_nanos(last as u64) + Duration::from_secs(1);
            return Ok(at);
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<usize> = (0..shard.count)
                .filter(|&i| arrivals[i].is_none())
                .collect();
            bail!(
                "--sync-dir {}: shards {missing:?} did not reach stage {stage} within {} s",
                dir.display(),
                BARRIER_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn shards_come_from_the_flag_or_the_job_engine() {
        let none = env(&[]);
        assert_eq!(Shard::detect(None, None, &none).unwrap(), None);
        let s = Shard::detect(Some("2/4"), None, &none).unwrap().unwrap();
        assert_eq!((s.index, s.count, s.source.as_str()), (2, 4, "--shard"));
        assert!(Shard::detect(Some("4/4"), None, &none).is_err());
        let k8s = env(&[("JOB_COMPLETION_INDEX", "3")]);
        let e = Shard::detect(None, None, &k8s).unwrap_err().to_string();
        assert!(e.contains("--shards"), "{e}");
        let s = Shard::detect(None, Some(8), &k8s).unwrap().unwrap();
        assert_eq!((s.index, s.count), (3, 8));
        let slurm = env(&[("SLURM_PROCID", "1"), ("SLURM_NTASKS", "2")]);
        let s = Shard::detect(None, None, &slurm).unwrap().unwrap();
        assert_eq!((s.index, s.count), (1, 2));
        assert!(s.source.contains("SLURM_NTASKS"));
        let single = env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]);
        assert_eq!(Shard::detect(None, None, &single).unwrap(), None);
    }

    #[test]
    fn shares_add_up_and_ids_never_collide() {
        let shards: Vec<Shard> = (0..3)
            .map(|index| Shard {
                index,
                count: 3,
                source: String::new(),
            })
            .collect();
        assert_eq!(shards.iter().map(|s| s.share_of(10)).sum::<usize>(), 10);
        let mut ids: Vec<u64> = shards
            .iter()
            .flat_map(|s| (0..4).map(|k| s.global_id(k)))
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..12).collect::<Vec<u64>>());
    }
}
