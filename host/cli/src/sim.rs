//! `llmb sim`: the built-in simulator as a server of its own, and the simulator settings the
//! `--sim-*` flags give to every command that starts one.

use std::time::Duration;

use anyhow::Context;
use llmb_sim::SimConfig;

use crate::args::{SimArgs, SimTiming};

/// `llmb sim`: serve until Ctrl-C.
pub async fn serve_sim(args: SimArgs) -> anyhow::Result<()> {
    let addr = format!("{}:{}", args.host, args.port)
        .parse()
        .with_context(|| format!("invalid address {}:{}", args.host, args.port))?;
    let mut config = sim_config(&args.timing, args.seed);
    config.model = args.model.clone();
    config.dialect = args.dialect.clone();
    config.api_key = args.api_key.clone();
    config.send_log = args.send_log.clone();
    let handle = llmb_sim::start(config, addr).await?;
    eprintln!(
        "llmb simulator serving model {:?} on {}",
        args.model,
        handle.base_url()
    );
    if let Some(path) = &args.send_log {
        eprintln!("writing the send log to {}", path.display());
    }
    let stopped = tokio::signal::ctrl_c().await;
    // Shutting down also writes out and closes the send log.
    handle.shutdown().await;
    stopped?;
    Ok(())
}

pub fn sim_config(t: &SimTiming, seed: u64) -> SimConfig {
    SimConfig {
        ttft_ms: t.ttft_ms,
        itl_ms: t.itl_ms,
        jitter: t.jitter,
        seed,
        batch_slowdown: t.batch_slowdown,
        prefill_us_per_token: t.prefill_us_per_token,
        reasoning_tokens: t.reasoning_tokens,
        kv_transfer_ms: t.kv_transfer_ms,
        prefix_cache: t.prefix_cache,
        max_batch: t.max_batch,
        max_images_per_prompt: t.max_images_per_prompt,
        connections: llmb_sim::ConnectionPolicy {
            keep_alive_timeout: t.keep_alive_timeout.map(Duration::from_secs_f64),
            keep_alive_max: t.keep_alive_max,
            close_every_response: t.connection_close,
            drop_stale_after: t.drop_stale_after.map(Duration::from_secs_f64),
        },
        ..SimConfig::default()
    }
}
