//! The floor and llmb side by side: at each level of concurrent streams, the bare hyper client
//! and `llmb bench` stream the same requests from the same simulator setup (a fresh child
//! process for each side), and the table shows CPU per streamed token, memory per stream in
//! flight, and the ratio against the targets.

use std::time::Duration;

use super::bare::{self, BareOutcome};
use super::child::{ChildSim, SimTiming};
use crate::args::BenchArgs;
use llmb_engine::memory::{MemoryUse, PeakWatch};

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

/// One row of the table: each side's median round (either side may have failed outright) and
/// the llmb/bare ratio of every round.
struct Level {
    streams: usize,
    requests: usize,
    bare: anyhow::Result<(BareOutcome, MemoryUse)>,
    llmb: anyhow::Result<(LlmbFigures, MemoryUse)>,
    round_ratios: Vec<f64>,
}

/// The round whose CPU per token is the median (the upper one of an even count).
fn median_round<T>(mut rounds: Vec<T>, us: impl Fn(&T) -> f64) -> Option<T> {
    rounds.sort_by(|a, b| us(a).total_cmp(&us(b)));
    let mid = rounds.len() / 2;
    rounds.into_iter().nth(mid)
}

/// `rounds` rounds of one level, bare then llmb in each; stops after the first round in which
/// a side fails: that failure stands for its side, the other side keeps what it measured.
async fn run_level(
    streams: usize,
    rounds: usize,
    output_len: u32,
    sim_cpu: Option<usize>,
) -> Level {
    let requests = requests_for(streams);
    let (mut bares, mut llmbs, mut round_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bare_failed, mut llmb_failed) = (None, None);
    for _ in 0..rounds {
        let bare = run_bare(streams, requests, output_len, sim_cpu).await;
        let llmb = run_llmb(streams, requests, output_len, sim_cpu).await;
        if let (Ok(b), Ok(l)) = (&bare, &llmb) {
            round_ratios
                .push(us_per_token(l.0.cpu, l.0.tokens) / us_per_token(b.0.cpu, b.0.tokens));
        }
        match bare {
            Ok(b) => bares.push(b),
            Err(e) => bare_failed = Some(e),
        }
        match llmb {
            Ok(l) => llmbs.push(l),
            Err(e) => llmb_failed = Some(e),
        }
        if bare_failed.is_some() || llmb_failed.is_some() {
            break;
        }
    }
    let bare = match bare_failed {
        Some(e) => Err(e),
        None => median_round(bares, |(b, _)| us_per_token(b.cpu, b.tokens))
            .ok_or_else(|| anyhow::anyhow!("no round ran")),
    };
    let llmb = match llmb_failed {
        Some(e) => Err(e),
        None => median_round(llmbs, |(l, _)| us_per_token(l.cpu, l.tokens))
            .ok_or_else(|| anyhow::anyhow!("no round ran")),
    };
    Level {
        streams,
        requests,
        bare,
        llmb,
        round_ratios,
    }
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
    let outcome = crate::bench::run(&bench, stop_rx)
        .await
        .map_err(|e| with_sim_log(e, &sim))?;
    // From where the stage's connections open, like the bare side's figure: the plugins,
    // dataset and tokenizer loaded before are the same at every level, not per stream.
    let memory = outcome.client_memory;
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

fn print_header(pinned: &str, rounds: usize) {
    println!(
        "\n== client CPU per streamed token, side by side (simulator in a separate process, pinned: {pinned}) =="
    );
    println!(
        "{rounds} round(s) per level, bare then llmb in each; each side's figures are its median round, \
         `ratios` the lowest and highest llmb/bare of single rounds."
    );
    println!(
        "64-token chat streams unless --output-len says otherwise; simulator TTFT {} ms, ITL {} ms, no batch slowdown.\n\
         bare: one hyper HTTP/1.1 connection per stream, opened before timing (their CPU is the `conn` column, not in `bare`);\n\
         llmb: `client_cpu` as `llmb bench` reports it (session.rs: CPU of runner.execute, after llmb opened (warmed)\n\
         `warm` connections; with `-` it did not warm and connecting is in its figure).\n\
         µs = CPU µs per streamed token; KiB = (peak RSS − RSS before the connections open) / streams (llmb: after it loaded\n\
         plugins, dataset and tokenizer, which are the same at every level); peak MiB = llmb's peak RSS.",
        TIMING.ttft_ms, TIMING.itl_ms
    );
    println!(
        "{:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>11} {:>10} {:>11}",
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
        "failed b/l",
        "ratios"
    );
}

fn print_row(level: &Level) {
    match (&level.bare, &level.llmb) {
        (Ok((bare, bare_mem)), Ok((llmb, llmb_mem))) => {
            let bare_us = us_per_token(bare.cpu, bare.tokens);
            let llmb_us = us_per_token(llmb.cpu, llmb.tokens);
            println!(
                "{:>7} {:>8} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>9.1} {:>9.1} {:>6} {:>11} {:>10} {:>11}",
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
                ratio_range(&level.round_ratios),
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

/// `lo–hi` of the per-round ratios.
fn ratio_range(ratios: &[f64]) -> String {
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if ratios.is_empty() {
        "-".to_string()
    } else {
        format!("{lo:.2}-{hi:.2}")
    }
}

/// Runs every level (`rounds` rounds of bare then llmb, each against a fresh simulator) and
/// prints the table row by row as levels finish.
pub async fn run(
    levels: &[usize],
    rounds: usize,
    output_len: u32,
    sim_cpu: Option<usize>,
    pinned: &str,
) -> anyhow::Result<()> {
    print_header(pinned, rounds);
    let mut done = Vec::new();
    for &streams in levels {
        let level = run_level(streams, rounds.max(1), output_len, sim_cpu).await;
        print_row(&level);
        print_problems(&level);
        done.push(level);
    }
    print_targets(&done);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_round_and_the_ratio_spread() {
        let rounds = vec![(3, 9.0), (1, 7.0), (2, 8.0), (4, 30.0)];
        // Four rounds: the upper of the middle two.
        assert_eq!(median_round(rounds, |r| r.1), Some((3, 9.0)));
        assert_eq!(
            median_round(vec![(1, 7.0), (2, 8.0), (3, 9.0)], |r| r.1),
            Some((2, 8.0))
        );
        assert_eq!(median_round(Vec::<(u8, f64)>::new(), |r| r.1), None);
        assert_eq!(ratio_range(&[1.7, 1.5, 2.1]), "1.50-2.10");
        assert_eq!(ratio_range(&[]), "-");
    }
}
