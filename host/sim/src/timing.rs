//! The timing pieces a response shares with its stream: the [`ActiveGuard`] that counts a
//! request in the running batch, jittered and batch-slowed inter-token gaps, and seconds to a
//! `Duration` for absolute deadlines.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rand::Rng as _;
use rand::rngs::SmallRng;

use crate::config::SimConfig;
use crate::state::SimState;

/// Keeps `vllm:num_requests_running` and the batching model honest: counted from arrival until
/// the response ends or is dropped (client gone, connection aborted).
/// A request in the running batch, holding its batch slot (with `max_batch`) until its
/// response ends.
pub(crate) struct ActiveGuard {
    state: Arc<SimState>,
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ActiveGuard {
    pub(crate) fn new(
        state: Arc<SimState>,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        state.active.fetch_add(1, Relaxed);
        Self { state, _slot: slot }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.state.active.fetch_sub(1, Relaxed);
    }
}

/// The next inter-token gap in seconds: jittered, and slowed by the other active streams.
pub(crate) fn itl_s(state: &SimState, rng: &mut SmallRng) -> f64 {
    let cfg = &state.config;
    let active = state.active.load(Relaxed).max(1) as f64;
    (cfg.itl_ms / 1e3 * (1.0 + cfg.batch_slowdown * (active - 1.0)) * jitter(cfg, rng)).max(0.0)
}

pub(crate) fn jitter(cfg: &SimConfig, rng: &mut SmallRng) -> f64 {
    if cfg.jitter > 0.0 {
        (1.0 + cfg.jitter * rng.random_range(-1.0..=1.0)).max(0.0)
    } else {
        1.0
    }
}

/// Seconds to a `Duration`, tolerating negative, NaN and absurd values from the configuration.
pub(crate) fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s.min(365.0 * 86_400.0))
    } else {
        Duration::ZERO
    }
}
