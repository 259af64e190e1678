//! Sharded runs: N processes of one plan send exactly the requests one process would, each
//! once, numbered fleet-wide; every shard carries the same plan digest; `--start-at` starts
//! them together and a late shard refuses to run.

mod common;

use std::collections::BTreeSet;

use common::*;

/// (request id, sample, intended send offset) of every measured request of a run.
fn sent(outcome: &llmb_engine::outcome::BenchOutcome) -> BTreeSet<(u64, u64, u64)> {
    outcome
        .records
        .iter()
        .filter(|r| !r.warmup)
        .map(|r| (r.id, r.sample, r.scheduled_ns))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_send_exactly_what_one_process_sends() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 40;
    args.request_rate = vec![400.0];
    args.seed = 7;
    let whole = bench(&args).await;
    assert_eq!(whole.metrics.completed, 40);
    assert!(whole.info.shard.is_none());

    let mut union = BTreeSet::new();
    let mut digests = BTreeSet::new();
    let mut completed = 0;
    for index in 0..4 {
        let mut shard = args.clone();
        shard.shard = Some(format!("{index}/4"));
        let part = bench(&shard).await;
        let info = part.info.shard.as_ref().expect("the shard is recorded");
        assert_eq!(
            (info.index, info.count, info.source.as_str()),
            (index, 4, "--shard")
        );
        completed += part.metrics.completed;
        digests.insert(part.info.plan_digest.clone());
        let mine = sent(&part);
        assert_eq!(mine.len(), 10, "every 4th arrival");
        assert!(mine.iter().all(|(id, _, _)| id % 4 == index as u64));
        assert!(union.is_disjoint(&mine), "no request is sent twice");
        union.extend(mine);
    }
    assert_eq!(completed, 40);
    assert_eq!(union, sent(&whole), "the union is the one-process plan");
    assert_eq!(digests.len(), 1, "one plan digest across shards");
    assert!(digests.contains(&whole.info.plan_digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_start_together_and_a_late_one_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 2;
    args.shard = Some("1/2".into());
    let at = std::time::SystemTime::now() + std::time::Duration::from_millis(1500);
    args.start_at = Some(at);
    let outcome = bench(&args).await;
    let start = outcome.info.start.as_ref().expect("the start is recorded");
    assert!(start.waited_ms > 0.0 && start.late_ms == 0.0, "{start:?}");
    assert!(start.clock.contains("CLOCK_REALTIME"));

    args.start_at = Some(std::time::SystemTime::now() - std::time::Duration::from_secs(3));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let Err(e) = llmb::bench::run(&args, rx).await else {
        panic!("a late shard must refuse to run");
    };
    let e = format!("{e:#}");
    assert!(
        e.contains("shard 1/2 is") && e.contains("s late for --start-at"),
        "{e}"
    );
    args.allow_late_start = true;
    let outcome = bench(&args).await;
    assert!(outcome.info.start.as_ref().unwrap().late_ms >= 3000.0);
}
