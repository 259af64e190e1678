//! What parsing costs: the `openai-chat` adapter as a WASM component against the same parser
//! compiled natively, and how many SSE events per second the WASM adapters get through when
//! every core parses at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmb_engine::plugin::backend::{BackendPool, FrameBatch, FrameSpan};
use llmb_plugin_sdk::openai::{Api, OpenAiStream};

/// Events each parser instance takes before it is replaced, as one long stream would be.
const PER_STREAM: usize = 512;

/// The target for WASM event throughput on a 2-core machine.
pub const EVENTS_PER_SECOND_TARGET: f64 = 200_000.0;

/// A vLLM-style chat chunk of about 260 bytes, the commonest frame llmb parses.
fn chat_chunk(i: usize) -> Vec<u8> {
    format!(
        "{{\"id\":\"chatcmpl-3c1a9f7e2b3d4e5f8a7b6c5d4e3f2a1b\",\"object\":\"chat.completion.chunk\",\"created\":1736900000,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}"
    )
    .into_bytes()
}

/// The smallest chunk that still yields a delta: next to nothing to parse, so what a WASM event
/// costs beyond the native parser's is the component-model crossing and the metering checks.
fn minimal_chunk(i: usize) -> Vec<u8> {
    format!("{{\"choices\":[{{\"delta\":{{\"content\":\" t{i}\"}}}}]}}").into_bytes()
}

/// Which chunk a measurement feeds.
type Chunk = fn(usize) -> Vec<u8>;

/// `batch` chunks laid out as the transport hands them to a parser: one buffer and the span of
/// each frame in it.
fn frames(batch: usize, chunk: Chunk) -> (Vec<u8>, Vec<(u32, u32)>) {
    let mut data = Vec::new();
    let mut spans = Vec::new();
    for i in 0..batch {
        let chunk = chunk(i);
        spans.push((data.len() as u32, chunk.len() as u32));
        data.extend_from_slice(&chunk);
    }
    (data, spans)
}

/// The host-side batch the WASM adapter is fed.
fn wasm_batch(batch: usize, chunk: Chunk) -> FrameBatch {
    let (data, spans) = frames(batch, chunk);
    FrameBatch {
        data,
        frames: spans
            .iter()
            .map(|&(start, len)| FrameSpan {
                start,
                len,
                event: None,
            })
            .collect(),
    }
}

/// The same batch for the natively compiled parser.
fn native_batch(batch: usize, chunk: Chunk) -> llmb_plugin_sdk::backend::FrameBatch {
    let (data, spans) = frames(batch, chunk);
    llmb_plugin_sdk::backend::FrameBatch {
        data,
        frames: spans
            .iter()
            .map(|&(start, len)| llmb_plugin_sdk::backend::FrameSpan {
                start,
                len,
                event: None,
            })
            .collect(),
    }
}

/// Nanoseconds per event for the native parser over `calls` calls of `frames`.
fn native_ns(frames: &llmb_plugin_sdk::backend::FrameBatch, calls: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut stream = OpenAiStream::new(Api::Chat);
    let mut produced = 0usize;
    for call in 0..calls {
        if call.is_multiple_of(PER_STREAM) {
            stream = OpenAiStream::new(Api::Chat);
        }
        produced += std::hint::black_box(stream.feed(std::hint::black_box(frames))).len();
    }
    let events = calls * frames.frames.len();
    anyhow::ensure!(
        produced == events,
        "native parser produced {produced} events"
    );
    Ok(start.elapsed().as_nanos() as f64 / events as f64)
}

/// Nanoseconds and fuel per event for the WASM parser over `calls` calls of `frames`.
fn wasm_ns(
    pool: &Arc<BackendPool>,
    frames: &FrameBatch,
    calls: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut adapter = pool.checkout()?;
    let start = Instant::now();
    let mut parser = adapter.new_parser(200, &Vec::new())?;
    let mut produced = 0usize;
    for call in 0..calls {
        if call.is_multiple_of(PER_STREAM) && call > 0 {
            adapter.drop_parser(parser);
            parser = adapter.new_parser(200, &Vec::new())?;
        }
        produced += adapter.feed(parser, frames)?.len();
    }
    adapter.drop_parser(parser);
    let events = calls * frames.frames.len();
    anyhow::ensure!(produced == events, "wasm parser produced {produced} events");
    let ns = start.elapsed().as_nanos() as f64 / events as f64;
    Ok((ns, adapter.take_usage().fuel as f64 / events as f64))
}

/// Nanoseconds per event parsing `events` frames in calls of `batch` frames: (native, wasm),
/// and the fuel (about one unit per wasm instruction) the wasm parser burns per event.
/// Best of three, so a scheduler hiccup does not decide the figure.
fn parse_cost(
    pool: &Arc<BackendPool>,
    events: usize,
    batch: usize,
    chunk: Chunk,
) -> anyhow::Result<(f64, f64, f64)> {
    let wasm_frames = wasm_batch(batch, chunk);
    let native_frames = native_batch(batch, chunk);
    let calls = events.div_ceil(batch);
    let mut best_native = f64::MAX;
    let mut best_wasm = f64::MAX;
    let mut fuel_per_event = 0.0;
    for _ in 0..3 {
        best_native = best_native.min(native_ns(&native_frames, calls)?);
        let (ns, fuel) = wasm_ns(pool, &wasm_frames, calls)?;
        best_wasm = best_wasm.min(ns);
        fuel_per_event = fuel;
    }
    Ok((best_native, best_wasm, fuel_per_event))
}

/// Prints the per-event parse cost table (1, 8 and 32 frames per call): the parser compiled
/// into this binary, the WASM adapter, and with `native_adapter` the same adapter as a native
/// library called through its C ABI, as a run would call it.
pub fn print_parse_cost(
    pool: &Arc<BackendPool>,
    native_adapter: Option<&Arc<BackendPool>>,
    events: usize,
) -> anyhow::Result<()> {
    println!("\n== openai-chat adapter: parse cost per event (~260 B chat chunk), best of 3 ==");
    println!(
        "{:<22} {:>12} {:>12} {:>10} {:>12} {:>10} {:>14} {:>12}",
        "frames per call",
        "native ns",
        "wasm ns",
        "wasm/native",
        "fuel/event",
        "fuel/ns",
        "native-lib ns",
        "wasm/lib"
    );
    for batch in [1usize, 8, 32] {
        let (native, wasm, fuel) = parse_cost(pool, events, batch, chat_chunk)?;
        let lib = match native_adapter {
            Some(lib_pool) => {
                let frames = wasm_batch(batch, chat_chunk);
                let calls = events.div_ceil(batch);
                let mut best = f64::MAX;
                for _ in 0..3 {
                    best = best.min(wasm_ns(lib_pool, &frames, calls)?.0);
                }
                Some(best)
            }
            None => None,
        };
        let (lib_ns, ratio) = match lib {
            Some(ns) => (format!("{ns:.0}"), format!("{:.2}", wasm / ns)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<22} {:>12.0} {:>12.0} {:>10.2} {:>12.0} {:>10.2} {:>14} {:>12}",
            batch,
            native,
            wasm,
            wasm / native,
            fuel,
            fuel / wasm,
            lib_ns,
            ratio
        );
    }
    let (native, wasm, _) = parse_cost(pool, events, 32, minimal_chunk)?;
    println!(
        "minimal chunk ({} B, 32 per call): native {native:.0} ns, wasm {wasm:.0} ns per event; \
         the {:.0} ns between them is what a WASM event costs besides parsing (the component-model \
         crossing, metering checks)",
        minimal_chunk(0).len(),
        wasm - native
    );
    if native_adapter.is_none() {
        println!(
            "(native-lib: pass --native-plugin target/release/libllmb_plugin_openai_chat.so, \
             built with `cargo build --release --lib -p llmb-plugin-openai-chat`)"
        );
    }
    let metering = llmb_engine::plugin::metering();
    println!(
        "(plugin metering: {} (`llmb bench` defaults to epoch); LLMB_PLUGIN_METERING=fuel|epoch \
         or LLMB_NO_FUEL=1 (none) to compare; under fuel, {} fuel = 1 µs of --plugin-call-budget)",
        metering.as_str(),
        llmb_engine::plugin::FUEL_PER_US
    );
    Ok(())
}

/// Events one thread parses in `seconds` through its own checked-out adapter, in calls of
/// 32 frames (a busy stream's per-read batch).
fn parse_for(pool: &Arc<BackendPool>, seconds: f64) -> anyhow::Result<u64> {
    let frames = wasm_batch(32, chat_chunk);
    let mut adapter = pool.checkout()?;
    let mut parser = adapter.new_parser(200, &Vec::new())?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut produced = 0u64;
    let mut calls = 0usize;
    while Instant::now() < deadline {
        for _ in 0..16 {
            if calls.is_multiple_of(PER_STREAM) && calls > 0 {
                adapter.drop_parser(parser);
                parser = adapter.new_parser(200, &Vec::new())?;
            }
            produced += adapter.feed(parser, &frames)?.len() as u64;
            calls += 1;
        }
    }
    adapter.drop_parser(parser);
    Ok(produced)
}

/// Aggregate SSE events per second with one parsing OS thread per core, each with its own
/// adapter instance from one pool (the pool hands out instances concurrently, as the runner's
/// tasks use it). Wall time is measured across all threads, so a core that is not really
/// there shows up as a lower figure.
pub fn print_event_throughput(pool: &Arc<BackendPool>, seconds: f64) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    pool.prewarm(threads)?;
    let start = Instant::now();
    let counts: Vec<anyhow::Result<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| parse_for(pool, seconds)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("parser thread panicked")))
            })
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut total = 0u64;
    for count in counts {
        total += count?;
    }
    let rate = total as f64 / wall;
    println!(
        "\n== WASM event throughput: openai-chat adapter, 32 frames per call, {threads} threads at once =="
    );
    println!(
        "{total} events in {wall:.2} s = {rate:.0} events/s ({:.0} per thread); target >= {:.0} events/s on 2 cores: {}",
        rate / threads as f64,
        EVENTS_PER_SECOND_TARGET,
        if rate >= EVENTS_PER_SECOND_TARGET {
            "met"
        } else {
            "MISSED"
        }
    );
    Ok(())
}
