//! How the measured phase's requests are started: all at once from the runtime, from a
//! dedicated pacer thread that sleeps to each scheduled offset, or by closed-loop clients with
//! their own seeded sample sequences. Separate from [`super::Runner::execute`], which only
//! collects what these tasks report.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::plan::ClientsPlan;

use super::live::Live;

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

/// Everything at once (`--request-rate inf`): spawned from the runtime itself, which is cheaper
/// than handing each request over from the pacer thread.
pub(super) fn spawn_all_now(live: &Arc<Live>, jobs: &[(Duration, usize)]) {
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
pub(super) fn spawn_pacer(
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

pub(super) fn spawn_clients(live: &Arc<Live>, plan: &ClientsPlan) {
    let pool = live.runner.samples.len();
    let (first, count) = (plan.first_sample, plan.sample_count.clamp(1, pool));
    for i in 0..plan.clients {
        if plan.shard.as_ref().is_some_and(|s| !s.owns(i)) {
            continue;
        }
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
            let think = live.runner.template.defaults.think_time;
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
}
