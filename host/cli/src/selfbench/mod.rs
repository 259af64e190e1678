//! `llmb selfbench`: llmb measuring itself, side by side in one run, so overhead claims are
//! printed by a command rather than asserted by timed tests. It prints measured figures next
//! to the targets and marks a missed target as MISSED.
//!
//! 1. Per-event parse cost of the `openai-chat` adapter as a WASM component against the same
//!    parser compiled natively, with one event per call and with per-read batches (`parse`).
//! 2. WASM event throughput with every core parsing at once (`parse`).
//! 3. The floor to compare with: a bare hyper/tokio streaming client (`bare`) and `llmb bench`
//!    at 16, 256, 1,000 and 10,000 concurrent streams, CPU per streamed token and memory per
//!    stream in flight (`side_by_side`, with `llmb_engine::memory`), against a simulator in a
//!    separate process pinned to its own core (`child`).
//! 4. Stamp accuracy: llmb's TTFT and ITL against the simulator's own send log, at up to 1,000
//!    streams (`accuracy`).
//! 5. Schedule keeping at 1,000 and 10,000 req/s (`schedule`).

mod accuracy;
mod bare;
mod child;
mod parse;
mod schedule;
mod side_by_side;

use llmb_engine::plugin::Registry;
use llmb_engine::plugin::backend::BackendPool;

use crate::args::SelfbenchArgs;

/// The side-by-side levels: `--streams`, or 16 and 256 with `--quick`.
fn levels(args: &SelfbenchArgs) -> Vec<usize> {
    if args.quick {
        vec![16, 256]
    } else {
        args.streams.iter().copied().filter(|&s| s > 0).collect()
    }
}

/// Runs the self-benchmark and prints its figures.
pub async fn run(args: SelfbenchArgs) -> anyhow::Result<()> {
    println!(
        "llmb selfbench (build: {})",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let registry = Registry::load(&[])?;
    let pool = BackendPool::new(registry.backend("openai-chat")?, Vec::new())?;
    print_load_time(&registry)?;
    let native_pool = match &args.native_plugin {
        Some(path) => {
            let registry = Registry::load_with(std::slice::from_ref(path), true)?;
            Some(BackendPool::new(
                registry.backend("openai-chat")?,
                Vec::new(),
            )?)
        }
        None => None,
    };
    parse::print_parse_cost(&pool, native_pool.as_ref(), args.events)?;
    parse::print_event_throughput(&pool, args.wasm_seconds)?;
    println!("\nTargets: wasm/native <= 1.5 with per-read batching (32 frames per call).");
    if args.parse_only {
        return Ok(());
    }

    let nofile = llmb_engine::fd_limit::raise()?;
    // Pinned only from here: the parsing sections above want every core.
    let pinning = child::Pinning::apply()?;
    println!(
        "\n(open-file limit {nofile}, for this process and the simulator; pinning {})",
        pinning.describe()
    );
    side_by_side::run(
        &levels(&args),
        if args.quick { 1 } else { args.rounds as usize },
        args.output_len,
        pinning.sim_cpu,
        if pinning.sim_cpu.is_some() {
            "yes"
        } else {
            "no"
        },
    )
    .await?;
    let accuracy_levels: Vec<usize> = levels(&args).into_iter().filter(|&s| s <= 1_000).collect();
    accuracy::run(&accuracy_levels, args.output_len, pinning.sim_cpu).await?;
    if !args.quick {
        schedule::run(args.schedule_seconds, pinning.sim_cpu).await?;
    }
    Ok(())
}

/// Loading the `openai-chat` adapter: compiled afresh, and from the compile cache (target:
/// under 50 ms).
fn print_load_time(registry: &Registry) -> anyhow::Result<()> {
    let summary = registry.backend("openai-chat")?.summary();
    let bytes = llmb_engine::plugin::embedded_bytes(&summary.sha256)
        .ok_or_else(|| anyhow::anyhow!("the embedded openai-chat bytes are missing"))?;
    let dir = std::env::temp_dir().join(format!("llmb-selfbench-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let timing = llmb_engine::plugin::load_timing(bytes, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let (compiled, cached) = timing?;
    println!(
        "\n== plugin load: openai-chat ({} KiB) ==\ncompiled {:.1} ms, from the compile cache {:.1} ms (target < 50 ms: {})",
        bytes.len() / 1024,
        compiled.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3,
        if cached.as_millis() < 50 {
            "met"
        } else {
            "MISSED"
        }
    );
    Ok(())
}
