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

/// Four shards started together, merged: the merged result counts every request once, its
/// rate agrees with one process's, and every metric equals the one recomputed from the union
/// of the records; a shard of another plan, a duplicate or a missing shard is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_shards_equal_the_union_of_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 40;
    args.request_rate = vec![200.0];
    args.seed = 11;
    args.save_result = true;
    let whole = bench(&args).await;

    let shards_dir = dir.path().join("shards");
    let at = std::time::SystemTime::now() + std::time::Duration::from_millis(800);
    let runs = (0..4).map(|index| {
        let mut shard = args.clone();
        shard.shard = Some(format!("{index}/4"));
        shard.start_at = Some(at);
        shard.result_dir = shards_dir.join(format!("shard-{index}"));
        async move { bench(&shard).await }
    });
    let parts = futures_util::future::join_all(runs).await;
    assert_eq!(parts.iter().map(|p| p.metrics.completed).sum::<usize>(), 40);

    let out = dir.path().join("merged/run.json");
    llmb::merge::main(&llmb::args::MergeArgs {
        inputs: vec![shards_dir.clone()],
        output: out.clone(),
        allow_missing: false,
    })
    .unwrap();
    let merged: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(merged["completed"], 40);
    assert_eq!(merged["llmb"]["merged_from"]["shards"], 4);
    let records: Vec<llmb_engine::records::RequestRecord> =
        std::fs::read_to_string(out.with_extension("records.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let ids: BTreeSet<u64> = records.iter().map(|r| r.id).collect();
    assert_eq!(ids, sent(&whole).iter().map(|(id, _, _)| *id).collect());
    // Exact: the merged metrics are the union's.
    let duration = merged["duration"].as_f64().unwrap();
    let m = llmb_engine::metrics::compute(&records, duration, &Default::default());
    assert_eq!(merged["total_output_tokens"], m.total_output as u64);
    assert_eq!(merged["mean_ttft_ms"].as_f64().unwrap(), m.ttft.mean);
    assert_eq!(
        merged["p99_ttft_ms"].as_f64().unwrap(),
        m.ttft.percentiles[0].1
    );
    assert_eq!(merged["median_itl_ms"].as_f64().unwrap(), m.itl.median);
    // The merged result reads as a run's: aggregate takes it unchanged.
    let csv = dir.path().join("merged/all.csv");
    llmb::report::aggregate(&llmb::args::AggregateArgs {
        paths: vec![out.parent().unwrap().to_path_buf()],
        output: Some(csv.clone()),
    })
    .unwrap();
    let table = std::fs::read_to_string(&csv).unwrap();
    assert!(
        table.lines().nth(1).is_some_and(|row| row.contains(",40,")),
        "{table}"
    );
    // Started together, the shards' rate is one process's.
    let rate = merged["request_throughput"].as_f64().unwrap();
    let single = whole.metrics.request_throughput;
    assert!(
        (rate / single - 1.0).abs() < 0.35,
        "merged {rate:.1} req/s against {single:.1} in one process"
    );

    // Refusals: a missing shard, a duplicate, another plan.
    std::fs::rename(shards_dir.join("shard-3"), dir.path().join("away")).unwrap();
    let e = llmb::merge::main(&llmb::args::MergeArgs {
        inputs: vec![shards_dir.clone()],
        output: dir.path().join("partial.json"),
        allow_missing: false,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("shards [3] of 4 have no result"), "{e}");
    let e = llmb::merge::main(&llmb::args::MergeArgs {
        inputs: vec![shards_dir.clone(), shards_dir.join("shard-0")],
        output: dir.path().join("dup.json"),
        allow_missing: true,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("shard 0 appears twice"), "{e}");
    let mut other = args.clone();
    other.seed = 12;
    other.shard = Some("3/4".into());
    other.result_dir = shards_dir.join("other");
    bench(&other).await;
    let e = llmb::merge::main(&llmb::args::MergeArgs {
        inputs: vec![shards_dir],
        output: dir.path().join("mixed.json"),
        allow_missing: true,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("ran another plan"), "{e}");
}

/// The stages of a sweep run in lockstep: shards meet in `--sync-dir` before each stage and
/// start it at the same wall-clock time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_stages_start_together_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 8;
    args.request_rate = vec![200.0, 400.0];
    args.sync_dir = Some(dir.path().join("sync"));
    let runs = (0..2).map(|index| {
        let mut shard = args.clone();
        shard.shard = Some(format!("{index}/2"));
        shard.result_dir = dir.path().join(format!("shard-{index}"));
        async move { bench(&shard).await }
    });
    let parts = futures_util::future::join_all(runs).await;
    let starts: Vec<f64> = parts
        .iter()
        .map(|p| {
            p.info
                .start
                .as_ref()
                .expect("the last stage met the others")
                .start_at_unix_s
        })
        .collect();
    assert_eq!(
        starts[0], starts[1],
        "one start time for the stage on every shard"
    );
    for stage in 0..2 {
        for shard in 0..2 {
            assert!(
                dir.path()
                    .join(format!("sync/stage-{stage}/shard-{shard}"))
                    .exists()
            );
        }
    }
    // The same folder again holds the last run's arrivals: refused, not a silent early start.
    let mut again = args.clone();
    again.shard = Some("0/2".into());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let Err(e) = llmb::bench::run(&again, rx).await else {
        panic!("a reused --sync-dir must be refused");
    };
    assert!(
        format!("{e:#}").contains("left from an earlier run"),
        "{e:#}"
    );
}
