//! Load patterns against the real simulator on 127.0.0.1: closed-loop clients, sweeps, dual
//! rounds, multi-turn conversations, trace replay, duration limits, warmups and ramps.

mod common;

use std::collections::BTreeMap;

use common::*;
use llmb::bench::run_all;
use llmb_engine::records::RequestRecord;

/// Sample indices each client sent, in send order.
fn per_client(records: &[RequestRecord]) -> BTreeMap<u32, Vec<u64>> {
    let mut sorted: Vec<&RequestRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.id);
    let mut map: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for r in sorted {
        map.entry(r.client.expect("client-sent"))
            .or_default()
            .push(r.sample);
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_clients_send_deterministic_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 40;
    args.num_clients = Some(3);
    args.num_turns = Some(4);
    args.ramp_up_time = Some(0.09);
    args.seed = 11;
    let first = bench(&args).await;
    assert_eq!(first.records.len(), 12);
    assert_eq!(first.metrics.completed, 12);
    let a = per_client(&first.records);
    assert_eq!(a.len(), 3);
    assert!(a.values().all(|seq| seq.len() == 4), "{a:?}");
    // Each client waits for its previous request: never two of its requests in flight.
    for c in 0..3u32 {
        let mut mine: Vec<&RequestRecord> = first
            .records
            .iter()
            .filter(|r| r.client == Some(c))
            .collect();
        mine.sort_by_key(|r| r.sent_ns);
        assert!(mine.windows(2).all(|w| w[1].sent_ns >= w[0].end_ns));
    }
    // Client i starts at i * ramp-up / clients.
    let start_of = |c: u32| {
        first
            .records
            .iter()
            .filter(|r| r.client == Some(c))
            .map(|r| r.sent_ns)
            .min()
            .unwrap()
    };
    assert!(
        start_of(2) >= 60_000_000,
        "client 2 started at {} ns",
        start_of(2)
    );

    let second = bench(&args).await;
    assert_eq!(per_client(&second.records), a, "same seed, same sequences");
    assert_ne!(a[&0], a[&1], "clients draw different sequences");
    args.seed = 12;
    let other = bench(&args).await;
    assert_ne!(
        per_client(&other.records),
        a,
        "another seed, other sequences"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_sweep_gives_one_result_per_stage_and_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.concurrency = Some("1-4".into());
    args.requests_per_stage = Some(6);
    args.save_result = true;
    args.result_filename = Some("sweep.json".into());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let mut seen = Vec::new();
    let sweep = run_all(&args, rx, &mut |o| {
        seen.push(o.info.max_concurrency);
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(seen, [Some(1), Some(2), Some(4)]);
    assert_eq!(sweep.stages.len(), 3);
    assert_eq!(sweep.summaries.len(), 3);
    for (stage, c) in sweep.stages.iter().zip([1, 2, 4]) {
        assert_eq!(stage.metrics.completed, 6);
        assert!(stage.metrics.max_concurrent_requests <= c);
        let result = stage.result_path.as_ref().unwrap();
        assert!(result.ends_with(format!("sweep-c{c}.json")), "{result:?}");
        assert!(result.exists());
        let records = stage.records_path.as_ref().unwrap();
        assert_eq!(
            llmb_engine::records::read_records(records).unwrap().len(),
            6
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("sweep-stages.json")).unwrap())
            .unwrap();
    assert_eq!(summary["stages"].as_array().unwrap().len(), 3);
    // Throughput grows with concurrency against a simulator with fixed latencies.
    assert!(sweep.summaries[2].request_throughput > sweep.summaries[0].request_throughput);
    let mut table = Vec::new();
    llmb_report::stages::print_stage_table(&sweep.summaries, &sweep.verdict, &mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(table.contains("Best throughput"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_round_hits_the_prefix_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 6;
    args.max_concurrency = Some(2);
    args.random_input_len = 256;
    args.rounds = 2;
    args.sim.prefix_cache = true;
    args.sim.prefill_us_per_token = 300.0;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let sweep = run_all(&args, rx, &mut |_| Ok(())).await.unwrap();
    assert_eq!(sweep.stages.len(), 2);
    let (r1, r2) = (&sweep.stages[0], &sweep.stages[1]);
    assert_eq!(r1.info.pattern.round, 1);
    assert_eq!(r2.info.pattern.round, 2);
    // The same samples in the same order.
    let samples = |o: &llmb_engine::outcome::BenchOutcome| {
        let mut v: Vec<(u64, u64)> = o.records.iter().map(|r| (r.id, r.sample)).collect();
        v.sort();
        v
    };
    assert_eq!(samples(r1), samples(r2));
    // 256 tokens × 0.3 ms of prefill in round 1; cached in round 2.
    assert!(
        r1.metrics.ttft.mean > 60.0,
        "round 1 TTFT {}",
        r1.metrics.ttft.mean
    );
    assert!(
        r2.metrics.ttft.mean < r1.metrics.ttft.mean - 40.0,
        "round 2 TTFT {} vs round 1 {}",
        r2.metrics.ttft.mean,
        r1.metrics.ttft.mean
    );
    assert!(
        r2.records
            .iter()
            .all(|r| r.cached_prompt_tokens.unwrap_or(0) > 0)
    );
    let mut text = Vec::new();
    let rounds: Vec<_> = sweep.stages.iter().map(|o| &o.metrics).collect();
    llmb_report::console::print_rounds("same batch", &rounds, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("Mean TTFT (ms)") && text.contains('%'),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_carry_the_servers_replies_turn_by_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.backend = "openai-chat".into();
    args.dataset_name = "custom".into();
    args.dataset_path = Some(workspace_root().join("datasets/conversations.jsonl"));
    args.disable_shuffle = true;
    args.num_prompts = 5;
    args.num_clients = Some(2);
    args.num_turns = Some(3);
    args.custom_output_len = 6;
    args.think_time = 0.02;
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.failed, 0);
    assert_eq!(outcome.records.len(), 6);
    let m = &outcome.metrics;
    assert!(m.turns.len() >= 2, "{:?}", m.turns);
    for c in 0..2u32 {
        let mut mine: Vec<&RequestRecord> = outcome
            .records
            .iter()
            .filter(|r| r.client == Some(c))
            .collect();
        mine.sort_by_key(|r| r.id);
        for w in mine.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b.turn == Some(a.turn.unwrap() + 1) {
                // The next turn's prompt holds the previous prompt, the reply and a new question.
                let reply = llmb_engine::tokenizer::count_words(&a.generated_text);
                assert!(reply > 0);
                assert!(
                    b.prompt_tokens > a.prompt_tokens + reply,
                    "turn {:?}: {} vs {} + {reply}",
                    b.turn,
                    b.prompt_tokens,
                    a.prompt_tokens
                );
                // Think time passes between turns.
                assert!(b.sent_ns >= a.end_ns + 20_000_000);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_is_replayed_at_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.dataset_name = "custom".into();
    let trace = workspace_root().join("datasets/trace.jsonl");
    args.dataset_path = Some(trace.clone());
    args.num_prompts = 1000;
    args.trace_speed = 4.0;
    let outcome = bench(&args).await;
    let stamps: Vec<f64> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["timestamp"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(outcome.records.len(), stamps.len());
    assert_eq!(outcome.info.pattern.mode, "trace");
    let t0 = stamps.iter().cloned().fold(f64::INFINITY, f64::min);
    for r in &outcome.records {
        let want = (stamps[r.sample as usize] - t0) / 4.0;
        let got = r.scheduled_ns as f64 / 1e9;
        assert!(
            (want - got).abs() < 1e-6,
            "sample {}: {got} vs {want}",
            r.sample
        );
        // Sent on time (generous bound for a loaded CI machine).
        assert!(r.sent_ns as f64 / 1e9 - got < 0.05);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_warmups_and_schedule_proof() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.request_rate = vec![40.0];
    args.duration = Some(std::time::Duration::from_millis(1000));
    args.num_warmups = 3;
    let outcome = bench(&args).await;
    let n = outcome.records.len();
    assert!((20..=70).contains(&n), "{n} requests in 1 s at 40 req/s");
    assert!(
        outcome
            .records
            .iter()
            .all(|r| r.scheduled_ns < 1_000_000_000)
    );
    assert_eq!(outcome.records.iter().filter(|r| r.warmup).count(), 3);
    let m = &outcome.metrics;
    assert_eq!(m.warmups, 3);
    assert_eq!(m.completed, n - 3);
    let s = &m.schedule;
    let (want, got) = (s.requested_rate.unwrap(), s.achieved_rate.unwrap());
    assert!(
        (got / want - 1.0).abs() < 0.05,
        "requested {want}, achieved {got}"
    );
    // Typical lag is far under a millisecond; the tail is left to `llmb selfbench`, since a
    // loaded CI machine can stall any one request.
    assert!(m.schedule_lag.p50_ms < 2.0, "lag {:?}", m.schedule_lag);
    // Latencies from the intended send time are never shorter than service-time ones.
    assert!(m.e2el_from_intended.mean >= m.e2el.mean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linear_ramp_speeds_up_and_lists_its_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 40;
    args.ramp_up_strategy = Some(llmb::args::RampUpStrategy::Linear);
    args.ramp_up_start_rps = Some(20.0);
    args.ramp_up_end_rps = Some(200.0);
    args.save_result = true;
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.completed, 40);
    let p = &outcome.info.pattern;
    assert_eq!(p.mode, "ramp");
    assert!(p.rate_steps.len() >= 2);
    assert!(p.rate_steps.first().unwrap().2 < p.rate_steps.last().unwrap().2);
    let mut sched: Vec<u64> = outcome.records.iter().map(|r| r.scheduled_ns).collect();
    sched.sort();
    let first_half = sched[19] - sched[0];
    let second_half = sched[39] - sched[20];
    assert!(second_half < first_half, "{first_half} vs {second_half}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outcome.result_path.unwrap()).unwrap()).unwrap();
    assert_eq!(json["ramp_up_strategy"], "linear");
    assert_eq!(json["ramp_up_end_rps"], 200.0);
}
