//! How exact llmb's stamps are: the simulator logs when it wrote each chunk (`llmb sim
//! --send-log`, `CLOCK_MONOTONIC` after `write()` returned) and llmb's TTFT and ITL are compared
//! with that log, request by request (llmb sends `x-request-id: <record id>`).
//!
//! The TTFT error is llmb's first-delta stamp less the write of the response's first chunk: the
//! loopback delivery, the wake-up of the client's connection task and the read. The ITL error
//! is each measured gap between token deltas less the gap between their writes.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use llmb_engine::records::RequestRecord;

use super::child::{ChildSim, SimTiming};
use crate::args::BenchArgs;

/// A TTFT error beyond this counts as late in the `late/shared` column.
const LATE_TTFT_NS: i64 = 1_000_000;
/// A first-token stamp this close to a later token's write is that token's arrival: the first
/// chunk was read together with it.
const SAME_WRITE_NS: i64 = 50_000;

/// Token indexes past this in a send log are refused rather than allocated for.
const MAX_TOKENS_PER_REQUEST: usize = 1 << 20;

/// What the simulator wrote for one request: its first body piece and each token's write time.
#[derive(Debug, Default)]
struct SentTimes {
    first_piece_ns: Option<u64>,
    tokens_ns: Vec<u64>,
}

/// Reads a send log into per-request write times.
fn read_send_log(path: &Path) -> anyhow::Result<HashMap<String, SentTimes>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut by_request: HashMap<String, SentTimes> = HashMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let [id, kind, seq, mono, _bytes] = fields[..] else {
            anyhow::bail!("{}:{}: expected 5 fields: {line}", path.display(), n + 1);
        };
        let mono: u64 = mono
            .parse()
            .with_context(|| format!("{}:{}: mono_ns {mono:?}", path.display(), n + 1))?;
        let sent = by_request.entry(id.to_string()).or_default();
        match kind {
            "token" | "chunk" => {
                sent.first_piece_ns = Some(sent.first_piece_ns.map_or(mono, |t| t.min(mono)));
                if kind == "token" {
                    let seq: usize = seq
                        .parse()
                        .ok()
                        .filter(|&s| s < MAX_TOKENS_PER_REQUEST)
                        .with_context(|| format!("{}:{}: seq {seq:?}", path.display(), n + 1))?;
                    if sent.tokens_ns.len() <= seq {
                        sent.tokens_ns.resize(seq + 1, 0);
                    }
                    sent.tokens_ns[seq] = mono;
                }
            }
            _ => {}
        }
    }
    Ok(by_request)
}

/// Errors of one run, in nanoseconds (signed: llmb may stamp before `write()` returned).
#[derive(Debug, Default)]
struct Errors {
    ttft: Vec<i64>,
    itl: Vec<i64>,
    /// Requests whose deltas could not be paired with the log's tokens.
    unmatched: usize,
    /// Each request's longest read wait (kernel arrival to read): how far behind llmb was.
    read_wait: Vec<i64>,
    /// TTFT errors over [`LATE_TTFT_NS`], and how many of those stamps are a later token's
    /// write (within [`SAME_WRITE_NS`]): a first chunk read together with the ones after it.
    late_ttft: usize,
    late_ttft_shared: usize,
}

/// Pairs each successful record with the log. A chat stream's deltas are the role chunk, one
/// per token, and the finish chunk; the token deltas are those after the first `extra` ones.
fn compare(records: &[RequestRecord], sent: &HashMap<String, SentTimes>, t0_mono: u64) -> Errors {
    let mut errors = Errors::default();
    for r in records.iter().filter(|r| r.success && !r.warmup) {
        errors
            .read_wait
            .extend(r.read_wait_max_ns.map(|ns| ns as i64));
        let Some(s) = sent.get(&r.id.to_string()) else {
            errors.unmatched += 1;
            continue;
        };
        let (Some(first_piece), Some(&first_delta)) = (s.first_piece_ns, r.delta_ns.first()) else {
            errors.unmatched += 1;
            continue;
        };
        let stamp = (t0_mono + first_delta) as i64;
        let ttft_error = stamp - first_piece as i64;
        errors.ttft.push(ttft_error);
        if ttft_error > LATE_TTFT_NS {
            errors.late_ttft += 1;
            let shared = s
                .tokens_ns
                .iter()
                .skip(1)
                .any(|&w| (stamp - w as i64).abs() <= SAME_WRITE_NS);
            errors.late_ttft_shared += usize::from(shared);
        }
        // The role chunk comes first; the token deltas follow it one for one.
        let tokens = &s.tokens_ns;
        let Some(deltas) = r.delta_ns.get(1..1 + tokens.len()) else {
            errors.unmatched += 1;
            continue;
        };
        for k in 1..tokens.len() {
            let measured = deltas[k] as i64 - deltas[k - 1] as i64;
            let written = tokens[k] as i64 - tokens[k - 1] as i64;
            errors.itl.push(measured - written);
        }
    }
    errors
}

/// `p`-th percentile (nearest rank) of the absolute errors, in µs.
fn abs_percentile_us(values: &[i64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v: Vec<u64> = values.iter().map(|x| x.unsigned_abs()).collect();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1] as f64 / 1e3
}

/// One level: a logging simulator, an llmb run sending request ids, and the comparison.
async fn level(
    streams: usize,
    output_len: u32,
    sim_cpu: Option<usize>,
) -> anyhow::Result<(Errors, usize)> {
    let log = std::env::temp_dir().join(format!(
        "llmb-selfbench-send-log-{}-{streams}.csv",
        std::process::id()
    ));
    let timing = SimTiming {
        ttft_ms: 20.0,
        itl_ms: 10.0,
        batch_slowdown: 0.0,
    };
    let sim = ChildSim::start_logged(timing, sim_cpu, &log).await?;
    let mut bench = BenchArgs::defaults();
    bench.backend = "openai-chat".into();
    bench.base_url = Some(sim.base_url.clone());
    bench.model = Some("llmb-sim".into());
    bench.num_prompts = super::side_by_side::requests_for(streams).min(streams * 2);
    bench.max_concurrency = Some(streams);
    bench.random_input_len = 32;
    bench.random_output_len = output_len;
    bench.ignore_eos = true;
    bench.no_records = true;
    bench.disable_tqdm = true;
    bench.api_key = None;
    bench.vllm.request_id_prefix = Some(String::new());
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let outcome = crate::bench::run(&bench, stop_rx).await?;
    sim.stop_gracefully().await?;
    let sent = read_send_log(&log);
    let _ = std::fs::remove_file(&log);
    let sent = sent?;
    let errors = compare(&outcome.records, &sent, outcome.t0_monotonic_ns);
    Ok((errors, outcome.metrics.failed))
}

/// Prints llmb's TTFT and ITL error against the simulator's send log at each level.
pub async fn run(levels: &[usize], output_len: u32, sim_cpu: Option<usize>) -> anyhow::Result<()> {
    println!(
        "\n== stamp accuracy: llmb's TTFT and ITL against the simulator's send log (µs, |error|) =="
    );
    println!(
        "{:<8} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>11} {:>12} {:>9} {:>7}",
        "streams",
        "requests",
        "TTFT p50",
        "TTFT p99",
        "TTFT max",
        "ITL p50",
        "ITL p99",
        "ITL max",
        "wait p99",
        "late/shared",
        "unpaired",
        "failed"
    );
    for &streams in levels {
        let (e, failed) = level(streams, output_len, sim_cpu)
            .await
            .with_context(|| format!("stamp accuracy at {streams} streams"))?;
        println!(
            "{:<8} {:>9} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>11.1} {:>12} {:>9} {:>7}",
            streams,
            e.ttft.len(),
            abs_percentile_us(&e.ttft, 50.0),
            abs_percentile_us(&e.ttft, 99.0),
            abs_percentile_us(&e.ttft, 100.0),
            abs_percentile_us(&e.itl, 50.0),
            abs_percentile_us(&e.itl, 99.0),
            abs_percentile_us(&e.itl, 100.0),
            abs_percentile_us(&e.read_wait, 99.0),
            format!("{}/{}", e.late_ttft, e.late_ttft_shared),
            e.unmatched,
            failed
        );
    }
    println!(
        "wait p99: each request's longest read wait (kernel receive stamp to llmb's read), p99 \
         over requests. Stamps are arrival times, but chunks that arrived closer together than \
         the wait can share one read and the last one's stamp: errors above a token gap come \
         from a client that fell behind, not from a late stamp. late/shared: TTFT errors over \
         1 ms, and how many of those stamps fall within 50 µs of a later token's write (the first \
         chunk read together with it)."
    );
    println!(
        "Targets: TTFT error p99 < 200 µs at 16 streams, < 1,000 µs at 256 and 1,000; \
         ITL error p99 < 100 µs at 16 streams."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_pair_with_the_send_log_by_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("send.csv");
        // Request 7: role chunk and token 0 in one write at 1,000 µs, tokens 10 ms apart.
        std::fs::write(
            &log,
            "request_id,kind,seq,mono_ns,body_bytes\n\
             7,request,0,0,0\n7,head,0,500000,0\n7,chunk,0,1000000,10\n\
             7,token,0,1000000,20\n7,token,1,11000000,30\n7,token,2,21000000,40\n\
             7,chunk,1,21000000,50\n7,end,0,21000000,60\n",
        )
        .unwrap();
        let sent = read_send_log(&log).unwrap();
        let t0_mono = 100_000;
        let record = |id, delta_ns: &[u64]| RequestRecord {
            id,
            success: true,
            delta_ns: delta_ns.to_vec(),
            ..Default::default()
        };
        // Mapped onto the monotonic clock: 1,030 µs, then 11,020 and 21,050 µs.
        let on_time = record(7, &[930_000, 930_000, 10_920_000, 20_950_000]);
        let e = compare(&[on_time, record(8, &[1])], &sent, t0_mono);
        assert_eq!(e.ttft, vec![30_000]);
        assert_eq!(e.itl, vec![-10_000, 30_000]);
        assert_eq!(e.unmatched, 1);
        assert_eq!(abs_percentile_us(&e.itl, 100.0), 30.0);
        assert_eq!((e.late_ttft, e.late_ttft_shared), (0, 0));

        // Read late with token 2 (written at 21,000 µs): all deltas carry its arrival.
        let shared = record(7, &[20_905_000, 20_905_000, 20_905_000, 20_905_000]);
        let e = compare(&[shared], &sent, t0_mono);
        assert_eq!(e.ttft, vec![20_005_000]);
        assert_eq!((e.late_ttft, e.late_ttft_shared), (1, 1));
        // Late, but at no token's write: late, not shared.
        let late = record(7, &[15_900_000, 15_900_000, 15_900_000, 20_950_000]);
        let e = compare(&[late], &sent, t0_mono);
        assert_eq!((e.late_ttft, e.late_ttft_shared), (1, 0));
    }

    #[test]
    fn a_bad_send_log_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("send.csv");
        std::fs::write(
            &log,
            "request_id,kind,seq,mono_ns,body_bytes\n1,token,x,5,0\n",
        )
        .unwrap();
        let e = read_send_log(&log).unwrap_err().to_string();
        assert!(e.contains("send.csv:2") && e.contains("seq"), "{e}");
        std::fs::write(&log, "h\n1,token,0\n").unwrap();
        let e = read_send_log(&log).unwrap_err().to_string();
        assert!(e.contains("send.csv:2: expected 5 fields"), "{e}");
    }
}
