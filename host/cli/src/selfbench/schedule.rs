//! Schedule keeping: Poisson arrivals at a fixed rate against a simulator in a separate
//! process, and how closely `llmb bench` kept the schedule.

use super::child::{ChildSim, SimTiming};
use crate::args::BenchArgs;

/// Short streams (TTFT 10 ms, ITL 1 ms), so the arrival rate, not the streams, is the load.
const TIMING: SimTiming = SimTiming {
    ttft_ms: 10.0,
    itl_ms: 1.0,
    batch_slowdown: 0.002,
};

/// Runs 1,000 and 10,000 req/s for `seconds` of arrivals each and prints the table.
pub async fn run(seconds: f64, sim_cpu: Option<usize>) -> anyhow::Result<()> {
    println!("\n== schedule keeping: Poisson arrivals against the simulator (separate process) ==");
    println!(
        "{:<14} {:>9} {:>14} {:>14} {:>9} {:>12} {:>12} {:>8}",
        "target req/s",
        "requests",
        "requested/s",
        "achieved/s",
        "ratio",
        "lag p99 ms",
        "lag max ms",
        "failed"
    );
    for rate in [1_000.0f64, 10_000.0] {
        let sim = ChildSim::start(TIMING, sim_cpu).await?;
        let mut bench = BenchArgs::defaults();
        bench.backend = "openai".into();
        bench.base_url = Some(sim.base_url.clone());
        bench.model = Some("llmb-sim".into());
        bench.num_prompts = (rate * seconds) as usize;
        bench.request_rate = vec![rate];
        bench.random_input_len = 16;
        bench.random_output_len = 4;
        bench.ignore_eos = true;
        bench.no_records = true;
        bench.disable_tqdm = true;
        bench.api_key = None;
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let outcome = crate::bench::run(&bench, stop_rx).await?;
        let s = &outcome.metrics.schedule;
        let requested = s.requested_rate.unwrap_or(f64::NAN);
        let achieved = s.achieved_rate.unwrap_or(f64::NAN);
        println!(
            "{:<14} {:>9} {:>14.1} {:>14.1} {:>9.4} {:>12.3} {:>12.3} {:>8}",
            rate,
            outcome.records.len(),
            requested,
            achieved,
            achieved / requested,
            outcome.metrics.schedule_lag.p99_ms,
            outcome.metrics.schedule_lag.max_ms,
            outcome.metrics.failed
        );
    }
    println!(
        "Targets: achieved rate within 1 % of target at 1,000 req/s with schedule lag p99 under 1 ms."
    );
    Ok(())
}
