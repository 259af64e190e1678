//! The load plan: when each request of a stage is released, open loop (a schedule of send
//! offsets) or closed loop (clients that send again when their last request finished).

use std::time::Duration;

use anyhow::Context;

use crate::outcome::LoadPattern;
use crate::plugin::dataset::Sample;
use crate::scheduler::{self, Ramp};

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
    /// Only the clients this shard owns run (`client % count == index`).
    pub shard: Option<crate::shard::Shard>,
}

impl LoadPlan {
    /// `shard`'s part: every `count`-th arrival from `index` on (so the shards' union is the
    /// planned arrival process, offsets and samples unchanged), or every `count`-th client
    /// with the shared request limit divided so the shares add up.
    pub fn for_shard(self, shard: &crate::shard::Shard) -> LoadPlan {
        match self {
            LoadPlan::Schedule(jobs) => LoadPlan::Schedule(
                jobs.into_iter()
                    .enumerate()
                    .filter(|(position, _)| shard.owns(*position))
                    .map(|(_, job)| job)
                    .collect(),
            ),
            LoadPlan::Clients(c) => LoadPlan::Clients(ClientsPlan {
                total: c.total.map(|t| shard.share_of(t)),
                shard: Some(shard.clone()),
                ..c
            }),
        }
    }

    /// A digest of the global plan and what it sends: every shard of one run computes the
    /// same one, and `llmb merge` refuses shards whose digests differ.
    pub fn digest(&self, samples: &[Sample], plugins: &[String]) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        match self {
            LoadPlan::Schedule(jobs) => {
                for (at, sample) in jobs {
                    h.update(at.as_nanos().to_le_bytes());
                    h.update((*sample as u64).to_le_bytes());
                }
            }
            LoadPlan::Clients(c) => h.update(
                format!(
                    "clients {} {:?} {:?} {:?} {:?} {} {} {}",
                    c.clients,
                    c.ramp_up,
                    c.stop_issuing_at,
                    c.per_client,
                    c.total,
                    c.seed,
                    c.first_sample,
                    c.sample_count
                )
                .as_bytes(),
            ),
        }
        // Streamed into the hash, not formatted into a string per sample: a dataset can be
        // large, and every run (sharded or not) computes this before its timed phase.
        struct Feed<'a>(&'a mut Sha256);
        impl std::fmt::Write for Feed<'_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0.update(s.as_bytes());
                Ok(())
            }
        }
        for sample in samples {
            use std::fmt::Write;
            let _ = write!(
                Feed(&mut h),
                "{:?}|{}|{}",
                sample.prompt,
                sample.input_tokens,
                sample.output_tokens
            );
        }
        for plugin in plugins {
            h.update(plugin.as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Which requests are warmups, left out of the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Warmup {
    /// The first this-many requests sent.
    pub requests: usize,
    /// Requests meant to go out before this offset.
    pub until: Option<Duration>,
}

/// The load: the stages of a sweep and how requests are released within each.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Rates × concurrencies × rounds, in order (see [`stage_grid`]).
    pub stages: Vec<Stage>,
    /// End a stage (cutting what is in flight) once it can no longer meet one of these
    /// percentile SLOs: an SLO search needs no more evidence that the load is too high.
    pub stop_on_slos: Vec<crate::slo_search::Slo>,
    pub seed: u64,
    /// Gamma shape of the inter-arrival times (1: Poisson).
    pub burstiness: f64,
    /// Requests (or a time) at the start that are sent but left out of the metrics.
    pub warmup: Warmup,
    /// Stop issuing requests after this long (after the warmup window).
    pub duration: Option<Duration>,
    /// Replay the dataset's own timestamps when it has them.
    pub use_trace_timestamps: bool,
    /// Trace replay speed (2: twice as fast).
    pub trace_speed: f64,
    /// Closed loop: this many clients, each sending its next request when the last finished.
    pub clients: Option<usize>,
    /// Clients start spread over this long (default: 0.1 s per client).
    pub ramp_up_time: Option<Duration>,
    /// Clients send no new request after this offset.
    pub client_stop_time: Option<Duration>,
    /// Requests per client.
    pub turns_per_client: Option<usize>,
    /// A request rate that changes over the run instead of a fixed one.
    pub ramp: Option<Ramp>,
    /// This process's part of a sharded run (`--shard`, or the job engine's environment).
    pub shard: Option<crate::shard::Shard>,
    /// `--start-at`: the timed phase of the first stage starts at this wall-clock time.
    pub start_at: Option<std::time::SystemTime>,
    /// `--allow-late-start`: run even when `start_at` has already passed.
    pub allow_late_start: bool,
    /// `--sync-dir`: a folder every shard sees (the results volume) where shards meet before
    /// each stage, so the stages of a sweep run in lockstep.
    pub sync_dir: Option<std::path::PathBuf>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            stages: Vec::new(),
            stop_on_slos: Vec::new(),
            seed: 0,
            burstiness: 1.0,
            warmup: Warmup::default(),
            duration: None,
            use_trace_timestamps: true,
            trace_speed: 1.0,
            clients: None,
            ramp_up_time: None,
            client_stop_time: None,
            turns_per_client: None,
            ramp: None,
            shard: None,
            start_at: None,
            allow_late_start: false,
            sync_dir: None,
        }
    }
}

/// One stage of a sweep: the load it applies.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Requests per second (`f64::INFINITY`: all at once).
    pub rate: f64,
    pub concurrency: Option<usize>,
    /// 1-based round of a repeated load level.
    pub round: u32,
    pub requests: usize,
    /// Which load level (rate × concurrency) this is. Each level sends its own slice of the
    /// dataset, so a server's prefix cache warmed by one level does not flatter the next;
    /// the rounds of a level send the same slice.
    pub level: usize,
    /// `concurrency 8`, `rate 4 req/s, round 2`: empty for a single run.
    pub label: String,
    /// Appended to file names so every stage keeps its own files.
    pub suffix: String,
}

impl Stage {
    /// The only stage of a run that is not a sweep.
    pub fn single(rate: f64, concurrency: Option<usize>, requests: usize) -> Stage {
        Stage {
            rate,
            concurrency,
            round: 1,
            requests,
            level: 0,
            label: String::new(),
            suffix: String::new(),
        }
    }
}

/// Every stage of a sweep in order: each rate with each concurrency, each `rounds` times.
/// Labels and file suffixes name only what varies.
pub fn stage_grid(
    rates: &[f64],
    concurrencies: &[Option<usize>],
    rounds: u32,
    requests: usize,
) -> Vec<Stage> {
    let many_rates = rates.len() > 1;
    let many_conc = concurrencies.len() > 1;
    let mut stages = Vec::new();
    let mut level = 0;
    for &rate in rates {
        for &concurrency in concurrencies {
            level += 1;
            for round in 1..=rounds {
                let mut label = Vec::new();
                let mut suffix = String::new();
                if many_rates {
                    label.push(format!("rate {rate} req/s"));
                    suffix.push_str(&format!("-rate{rate}"));
                }
                if many_conc {
                    let c = concurrency.unwrap_or(0);
                    label.push(format!("concurrency {c}"));
                    suffix.push_str(&format!("-c{c}"));
                }
                if rounds > 1 {
                    label.push(format!("round {round}"));
                    suffix.push_str(&format!("-round{round}"));
                }
                stages.push(Stage {
                    rate,
                    concurrency,
                    round,
                    requests,
                    level: level - 1,
                    label: label.join(", "),
                    suffix,
                });
            }
        }
    }
    stages
}

/// The plan for one stage and how to describe it.
pub fn plan_for(
    load: &LoadConfig,
    streaming: bool,
    stage: &Stage,
    samples: &[Sample],
) -> anyhow::Result<(LoadPlan, LoadPattern)> {
    let pool = samples.len();
    let first = stage.level * stage.requests;
    let pick = |i: usize| (first + i) % pool;
    let mut pattern = LoadPattern {
        no_stream: !streaming,
        round: stage.round,
        stage: (!stage.label.is_empty()).then(|| stage.label.clone()),
        duration_limit_s: load.duration.map(|d| d.as_secs_f64()),
        ..LoadPattern::default()
    };
    let warmup_window = load.warmup.until.unwrap_or(Duration::ZERO);
    let send_window = load.duration.map(|d| warmup_window + d);
    let n = stage.requests + load.warmup.requests;
    let timestamps: Option<Vec<f64>> = samples
        .iter()
        .map(|s| s.timestamp)
        .collect::<Option<_>>()
        .filter(|_| load.use_trace_timestamps);
    if let Some(ts) = timestamps {
        let schedule = scheduler::trace_schedule(&ts, load.trace_speed)?;
        pattern.mode = "trace".into();
        pattern.trace_speed = Some(load.trace_speed);
        let jobs = schedule
            .into_iter()
            .filter(|(_, at)| send_window.is_none_or(|w| *at < w))
            .map(|(i, at)| (at, i))
            .collect();
        return Ok((LoadPlan::Schedule(jobs), pattern));
    }
    let clients_from = |clients: usize, ramp_up: Duration| {
        let stop = [load.client_stop_time, send_window]
            .into_iter()
            .flatten()
            .min();
        ClientsPlan {
            clients,
            ramp_up,
            stop_issuing_at: stop,
            per_client: load.turns_per_client,
            total: (stop.is_none() && load.turns_per_client.is_none()).then_some(n),
            seed: load.seed,
            first_sample: first,
            sample_count: stage.requests,
            shard: None,
        }
    };
    if let Some(clients) = load.clients {
        let ramp_up = load
            .ramp_up_time
            .unwrap_or_else(|| Duration::from_secs_f64(0.1 * clients as f64));
        pattern.mode = "clients".into();
        pattern.num_clients = Some(clients);
        pattern.ramp_up_time_s = Some(ramp_up.as_secs_f64());
        return Ok((LoadPlan::Clients(clients_from(clients, ramp_up)), pattern));
    }
    if let Some(window) = send_window {
        if stage.rate.is_infinite() {
            let c = stage.concurrency.context(
                "--duration with an unlimited --request-rate needs --max-concurrency (or --num-clients): \
                 that many requests are kept in flight until the time is up",
            )?;
            pattern.mode = "duration".into();
            pattern.num_clients = Some(c);
            return Ok((LoadPlan::Clients(clients_from(c, Duration::ZERO)), pattern));
        }
        let offsets =
            scheduler::arrivals_within(window, stage.rate, load.burstiness, load.seed, 10_000_000)?;
        pattern.mode = "duration".into();
        let jobs = offsets
            .into_iter()
            .enumerate()
            .map(|(i, at)| (at, pick(i)))
            .collect();
        return Ok((LoadPlan::Schedule(jobs), pattern));
    }
    let offsets = if let Some(ramp) = load.ramp {
        let offsets = scheduler::ramp_offsets(n, &ramp, load.burstiness, load.seed)?;
        pattern.mode = "ramp".into();
        pattern.ramp = Some((
            format!("{:?}", ramp.strategy).to_lowercase(),
            ramp.start_rps,
            ramp.end_rps,
        ));
        pattern.rate_steps = scheduler::ramp_steps(&ramp, &offsets, 20)
            .into_iter()
            .map(|s| (s.first_request, s.at.as_secs_f64(), s.rps))
            .collect();
        offsets
    } else {
        pattern.mode = "poisson".into();
        scheduler::arrival_offsets(n, stage.rate, load.burstiness, load.seed)?
    };
    let jobs = offsets
        .into_iter()
        .enumerate()
        .map(|(i, at)| (at, pick(i)))
        .collect();
    Ok((LoadPlan::Schedule(jobs), pattern))
}
