//! `llmb selfbench`: llmb measuring itself, side by side in one run, so overhead claims are
//! printed by a command rather than asserted by timed tests.
//!
//! 1. Per-event parse cost of the `openai-chat` adapter as a WASM component against the same
//!    parser compiled natively, with one event per call and with per-read batches.
//! 2. Client CPU time per streamed token against a simulator in a separate process, at
//!    concurrency 16 and 1,000.

use std::time::{Duration, Instant};

use anyhow::Context;
use llmb_plugin_sdk::openai::{Api, OpenAiStream};

use crate::args::{BenchArgs, SelfbenchArgs};
use llmb_engine::plugin::Registry;
use llmb_engine::plugin::backend::{BackendPool, FrameBatch, FrameSpan};

/// A vLLM-style chat chunk of about 260 bytes, the commonest frame llmb parses.
fn chat_chunk(i: usize) -> Vec<u8> {
    format!(
        "{{\"id\":\"chatcmpl-3c1a9f7e2b3d4e5f8a7b6c5d4e3f2a1b\",\"object\":\"chat.completion.chunk\",\"created\":1736900000,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}"
    )
    .into_bytes()
}

/// Nanoseconds per event parsing `events` frames in calls of `batch` frames: (native, wasm),
/// and the fuel (about one unit per wasm instruction) the wasm parser burns per event.
fn parse_cost(
    pool: &std::sync::Arc<BackendPool>,
    events: usize,
    batch: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut data = Vec::new();
    let mut spans = Vec::new();
    for i in 0..batch {
        let chunk = chat_chunk(i);
        spans.push((data.len() as u32, chunk.len() as u32));
        data.extend_from_slice(&chunk);
    }
    let frames = FrameBatch {
        data: data.clone(),
        frames: spans
            .iter()
            .map(|&(start, len)| FrameSpan {
                start,
                len,
                event: None,
            })
            .collect(),
    };
    let native_frames = llmb_plugin_sdk::backend::FrameBatch {
        data,
        frames: spans
            .iter()
            .map(|&(start, len)| llmb_plugin_sdk::backend::FrameSpan {
                start,
                len,
                event: None,
            })
            .collect(),
    };
    let calls = events.div_ceil(batch);
    const PER_STREAM: usize = 512;

    let mut best_native = f64::MAX;
    let mut best_wasm = f64::MAX;
    let mut fuel_per_event = 0.0;
    for _ in 0..3 {
        let start = Instant::now();
        let mut stream = OpenAiStream::new(Api::Chat);
        let mut produced = 0usize;
        for call in 0..calls {
            if call % PER_STREAM == 0 {
                stream = OpenAiStream::new(Api::Chat);
            }
            produced +=
                std::hint::black_box(stream.feed(std::hint::black_box(&native_frames))).len();
        }
        anyhow::ensure!(
            produced == calls * batch,
            "native parser produced {produced} events"
        );
        best_native = best_native.min(start.elapsed().as_nanos() as f64 / (calls * batch) as f64);

        let mut adapter = pool.checkout()?;
        let start = Instant::now();
        let mut parser = adapter.new_parser(200, &Vec::new())?;
        let mut produced = 0usize;
        for call in 0..calls {
            if call % PER_STREAM == 0 && call > 0 {
                adapter.drop_parser(parser);
                parser = adapter.new_parser(200, &Vec::new())?;
            }
            produced += adapter.feed(parser, &frames)?.len();
        }
        adapter.drop_parser(parser);
        anyhow::ensure!(
            produced == calls * batch,
            "wasm parser produced {produced} events"
        );
        best_wasm = best_wasm.min(start.elapsed().as_nanos() as f64 / (calls * batch) as f64);
        fuel_per_event = adapter.take_usage().fuel as f64 / (calls * batch) as f64;
    }
    Ok((best_native, best_wasm, fuel_per_event))
}

/// A simulator in a child process, so its CPU time is not charged to the client.
struct ChildSim {
    child: std::process::Child,
    base_url: String,
}

impl ChildSim {
    async fn start(itl_ms: f64) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let exe = std::env::current_exe().context("locating the llmb binary")?;
        let child = std::process::Command::new(exe)
            .args([
                "sim",
                "--port",
                &port.to_string(),
                "--sim-ttft-ms",
                "10",
                "--sim-itl-ms",
                &itl_ms.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting `llmb sim`")?;
        let base_url = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(ChildSim { child, base_url });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("the simulator did not start listening on port {port}")
    }
}

impl Drop for ChildSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

    println!("\n== openai-chat adapter: parse cost per event (~260 B chat chunk), best of 3 ==");
    println!(
        "{:<22} {:>12} {:>12} {:>10} {:>12} {:>10}",
        "frames per call", "native ns", "wasm ns", "wasm/native", "fuel/event", "fuel/ns"
    );
    for batch in [1usize, 8, 32] {
        let (native, wasm, fuel) = parse_cost(&pool, args.events, batch)?;
        println!(
            "{:<22} {:>12.0} {:>12.0} {:>10.2} {:>12.0} {:>10.2}",
            batch,
            native,
            wasm,
            wasm / native,
            fuel,
            fuel / wasm
        );
    }
    println!(
        "(plugin work budgets: {} fuel = 1 µs of --plugin-call-budget)",
        llmb_engine::plugin::FUEL_PER_US
    );
    if args.parse_only {
        return Ok(());
    }

    println!("\n== client CPU per streamed token (simulator in a separate process) ==");
    println!(
        "{:<12} {:>10} {:>12} {:>12} {:>14} {:>10}",
        "concurrency", "requests", "tokens", "client CPU s", "µs CPU/token", "failed"
    );
    for concurrency in [16usize, 1000] {
        let sim = ChildSim::start(10.0).await?;
        let mut bench = BenchArgs::defaults();
        bench.backend = "openai-chat".into();
        bench.base_url = Some(sim.base_url.clone());
        bench.model = Some("llmb-sim".into());
        bench.num_prompts = (concurrency * 4).max(256);
        bench.max_concurrency = Some(concurrency);
        bench.random_input_len = 32;
        bench.random_output_len = args.output_len;
        bench.ignore_eos = true;
        bench.no_records = true;
        bench.disable_tqdm = true;
        bench.api_key = None;
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let outcome = crate::bench::run(&bench, stop_rx).await?;
        let tokens = outcome.metrics.total_output.max(1);
        println!(
            "{:<12} {:>10} {:>12} {:>12.3} {:>14.2} {:>10}",
            concurrency,
            outcome.records.len(),
            outcome.metrics.total_output,
            outcome.client_cpu.as_secs_f64(),
            outcome.client_cpu.as_secs_f64() * 1e6 / tokens as f64,
            outcome.metrics.failed
        );
    }

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
        let sim = ChildSim::start(1.0).await?;
        let mut bench = BenchArgs::defaults();
        bench.backend = "openai".into();
        bench.base_url = Some(sim.base_url.clone());
        bench.model = Some("llmb-sim".into());
        bench.num_prompts = (rate * args.schedule_seconds) as usize;
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
        "\nTargets: wasm/native <= 2.0 with per-read batching; <= 10 µs client CPU per streamed token;\n\
         achieved rate within 1 % of target at 1,000 req/s with schedule lag p99 under 1 ms."
    );
    Ok(())
}
