//! The floor and llmb side by side: at each level of concurrent streams, the bare hyper client
//! and `llmb bench` stream the same requests from the same simulator setup (a fresh child
//! process for each side), and the table shows CPU per streamed token, memory per stream in
//! flight, and the ratio against the targets.

use std::time::Duration;

use super::bare::{self, BareOutcome};
use super::child::{ChildSim, SimTiming};
use super::memory::{MemoryUse, PeakWatch};
use crate::args::BenchArgs;

/// The scenario: 64-token chat streams, TTFT 20 ms, ITL 10 ms (no batch slowdown, so
/// every level sees the same ITL).
const TIMING: SimTiming = SimTiming {
    ttft_ms: 20.0,
    itl_ms: 10.0,
    batch_slowdown: 0.0,
};

/// Targets from issue 14.
const RATIO_TARGET: f64 = 1.5;
const KIB_PER_STREAM_TARGET: f64 = 50.0;
const PEAK_MIB_TARGET_AT_10K: f64 = 500.0;

/// Requests per level: two waves (at least 256) for a stable figure, and a single wave once
/// a level is large enough that one wave is already a long run.
pub fn requests_for(streams: usize) -> usize {
    if streams >= 5_000 {
        streams
    } else {
        (streams * 2).max(256)
    }
}

/// llmb's figures at one level, as `bench` reports them.
struct LlmbFigures {
    cpu: Duration,
    tokens: u64,
    failed: usize,
    first_error: Option<String>,
    wall_s: f64,
    /// Connections llmb opened before its timed phase (`None`: it did not warm).
    warmed: Option<usize>,
}

/// One row of the table; either side may have failed outright.
struct Level {
    streams: usize,
    requests: usize,
    bare: anyhow::Result<(BareOutcome, MemoryUse)>,
    llmb: anyhow::Result<(LlmbFigures, MemoryUse)>,
}

async fn run_bare(
    streams: usize,
    requests: usize,
    output_len: u32,
    sim_cpu: Option<usize>,
) -> anyhow::Result<(BareOutcome, MemoryUse)> {
    let sim = ChildSim::start(TIMING, sim_cpu).await?;
    let watch = PeakWatch::start();
    let outcome = bare::run(sim.addr, streams, requests, output_len).await;
    let memory = watch.finish();
    let mut outcome = outcome.map_err(|e| with_sim_log(e, &sim))?;
    if let Some(first) = &mut outcome.first_error {
        append_sim_log(first, &sim);
    }
    Ok((outcome, memory))
}

async fn run_llmb(
    streams: usize,
    requests: usize,
    output_len: u32,
    sim_cpu: Option<usize>,
) -> anyhow::Result<(LlmbFigures, MemoryUse)> {
    let sim = ChildSim::start(TIMING, sim_cpu).await?;
    let mut bench = BenchArgs::defaults();
    bench.backend = "openai-chat".into();
    bench.base_url = Some(sim.base_url.clone());
    bench.model = Some("llmb-sim".into());
    bench.num_prompts = requests;
    bench.max_concurrency = Some(streams);
    bench.random_input_len = 32;
    bench.random_output_len = output_len;
    bench.ignore_eos = true;
    bench.no_records = true;
    bench.disable_tqdm = true;
    bench.api_key = None;
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watch = PeakWatch::start();
    let outcome = crate::bench::run(&bench, stop_rx).await;
    let memory = watch.finish();
    let outcome = outcome.map_err(|e| with_sim_log(e, &sim))?;
    let figures = LlmbFigures {
        cpu: outcome.client_cpu,
        tokens: outcome.metrics.total_output,
        failed: outcome.metrics.failed,
        first_error: outcome
            .records
            .iter()
            .find(|r| !r.success)
            .map(|r| format!("{:?}", r.error)),
        wall_s: outcome.metrics.duration_s,
        warmed: outcome.metrics.http_phases.connections_warmed,
    };
    let mut figures = figures;
    if let Some(first) = &mut figures.first_error {
        append_sim_log(first, &sim);
    }
    Ok((figures, memory))
}

/// Adds what the simulator said on stderr, if anything, to a failure.
fn append_sim_log(message: &mut String, sim: &ChildSim) {
    let tail = sim.log_tail();
    if !tail.is_empty() {
        message.push_str(&format!(" (simulator stderr: {tail})"));
    }
}

fn with_sim_log(e: anyhow::Error, sim: &ChildSim) -> anyhow::Error {
    let mut message = String::new();
    append_sim_log(&mut message, sim);
    if message.is_empty() {
        e
    } else {
        e.context(message.trim().to_string())
    }
}

fn us_per_token(cpu: Duration, tokens: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / tokens.max(1) as f64
}

fn print_header(pinned: &str) {
    println!(
        "\n== client CPU per streamed token, side by side (simulator in a separate process, pinned: {pinned}) =="
    );
    println!(
        "64-token chat streams unless --output-len says otherwise; simulator TTFT {} ms, ITL {} ms, no batch slowdown.\n\
         bare: one hyper HTTP/1.1 connection per stream, opened before timing (their CPU is the `conn` column, not in `bare`);\n\
         llmb: `client_cpu` as `llmb bench` reports it (session.rs: CPU of runner.execute, after llmb opened (warmed)\n\
         `warm` connections; with `-` it did not warm and connecting is in its figure).\n\
         µs = CPU µs per streamed token; KiB = (peak RSS − RSS before the run) / streams; peak MiB = llmb's peak RSS.",
        TIMING.ttft_ms, TIMING.itl_ms
    );
    println!(
        "{:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>11} {:>10}",
        "streams",
        "requests",
        "tokens",
        "bare µs",
        "conn µs",
        "llmb µs",
        "llmb/bare",
        "bare KiB",
        "llmb KiB",
        "peak MiB",
        "warm",
        "wall s b/l",
        "failed b/l"
    );
}

fn print_row(level: &Level) {
    match (&level.bare, &level.llmb) {
        (Ok((bare, bare_mem)), Ok((llmb, llmb_mem))) => {
            let bare_us = us_per_token(bare.cpu, bare.tokens);
            let llmb_us = us_per_token(llmb.cpu, llmb.tokens);
            println!(
                "{:>7} {:>8} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>9.1} {:>9.1} {:>6} {:>11} {:>10}",
                level.streams,
                level.requests,
                llmb.tokens,
                bare_us,
                us_per_token(bare.connect_cpu, bare.tokens),
                llmb_us,
                llmb_us / bare_us,
                bare_mem.kib_per_stream(level.streams),
                llmb_mem.kib_per_stream(level.streams),
                llmb_mem.peak_mib(),
                llmb.warmed.map_or("-".to_string(), |n| n.to_string()),
                format!("{:.1}/{:.1}", bare.wall.as_secs_f64(), llmb.wall_s),
                format!("{}/{}", bare.failed, llmb.failed),
            );
        }
        _ => println!(
            "{:>7} {:>8}  (a side failed, see below)",
            level.streams, level.requests
        ),
    }
}

/// The errors and first failures behind a row, so nothing is hidden.
fn print_problems(level: &Level) {
    match &level.bare {
        Err(e) => println!(
            "        bare client at {} streams failed: {e:#}",
            level.streams
        ),
        Ok((b, _)) if b.failed > 0 => println!(
            "        bare client at {} streams: {} failed requests, first: {}",
            level.streams,
            b.failed,
            b.first_error.as_deref().unwrap_or("?")
        ),
        Ok(_) => {}
    }
    match &level.llmb {
        Err(e) => println!("        llmb at {} streams failed: {e:#}", level.streams),
        Ok((l, _)) if l.failed > 0 => println!(
            "        llmb at {} streams: {} failed requests, first: {}",
            level.streams,
            l.failed,
            l.first_error.as_deref().unwrap_or("?")
        ),
        Ok(_) => {}
    }
}

/// Verdicts against the targets; a missed target is printed as MISSED with the figure.
fn print_targets(levels: &[Level]) {
    let mut ratio_misses = Vec::new();
    let mut memory_misses = Vec::new();
    for level in levels {
        let (Ok((bare, _)), Ok((llmb, mem))) = (&level.bare, &level.llmb) else {
            ratio_misses.push(format!("{} (not measured)", level.streams));
            continue;
        };
        let ratio = us_per_token(llmb.cpu, llmb.tokens) / us_per_token(bare.cpu, bare.tokens);
        if ratio > RATIO_TARGET {
            ratio_misses.push(format!("{} ({ratio:.2}x)", level.streams));
        }
        let kib = mem.kib_per_stream(level.streams);
        if level.streams >= 1_000 && kib > KIB_PER_STREAM_TARGET {
            memory_misses.push(format!("{} ({kib:.1} KiB)", level.streams));
        }
    }
    let verdict = |misses: &[String]| {
        if misses.is_empty() {
            "met".to_string()
        } else {
            format!("MISSED at {}", misses.join(", "))
        }
    };
    println!(
        "Targets: llmb/bare <= {RATIO_TARGET}x at every level: {}",
        verdict(&ratio_misses)
    );
    let memory_verdict = if levels.iter().any(|l| l.streams >= 1_000) {
        verdict(&memory_misses)
    } else {
        "not measured (no level >= 1,000)".to_string()
    };
    println!(
        "         llmb <= {KIB_PER_STREAM_TARGET} KiB per in-flight stream (levels >= 1,000; smaller ones are dominated by fixed costs): {memory_verdict}"
    );
    let at_10k = levels.iter().find(|l| l.streams >= 10_000);
    match at_10k.map(|l| &l.llmb) {
        Some(Ok((_, mem))) => println!(
            "         10,000 streams under {PEAK_MIB_TARGET_AT_10K} MiB RSS: peak {:.1} MiB at {} streams: {}",
            mem.peak_mib(),
            at_10k.map_or(0, |l| l.streams),
            if mem.peak_mib() < PEAK_MIB_TARGET_AT_10K {
                "met"
            } else {
                "MISSED"
            }
        ),
        Some(Err(_)) => println!(
            "         10,000 streams under {PEAK_MIB_TARGET_AT_10K} MiB RSS: not measured (llmb failed)"
        ),
        None => println!(
            "         10,000 streams under {PEAK_MIB_TARGET_AT_10K} MiB RSS: level not run"
        ),
    }
}

/// Runs every level (bare first, then llmb, each against a fresh simulator) and prints the
/// table row by row as levels finish.
pub async fn run(
    levels: &[usize],
    output_len: u32,
    sim_cpu: Option<usize>,
    pinned: &str,
) -> anyhow::Result<()> {
    print_header(pinned);
    let mut done = Vec::new();
    for &streams in levels {
        let requests = requests_for(streams);
        let level = Level {
            streams,
            requests,
            bare: run_bare(streams, requests, output_len, sim_cpu).await,
            llmb: run_llmb(streams, requests, output_len, sim_cpu).await,
        };
        print_row(&level);
        print_problems(&level);
        done.push(level);
    }
    print_targets(&done);
    Ok(())
}
