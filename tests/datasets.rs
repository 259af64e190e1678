//! Dataset readers and tools end to end: what a run would send, written back as JSONL and read
//! again; system prompts; input counts checked against the simulator's.

mod common;

use common::*;
use llmb::plugin::Registry;
use llmb::plugin::backend::Prompt;

fn samples(args: &llmb::cli::BenchArgs) -> Vec<llmb::plugin::dataset::Sample> {
    let registry = Registry::load(&args.plugins).unwrap();
    let tokenizer = std::sync::Arc::new(llmb::tokenizer::HostTokenizer::load(None).unwrap());
    llmb::datasets::load_samples(args, &registry, &tokenizer, args.num_prompts).unwrap()
}

#[test]
fn converted_datasets_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.dataset_name = "custom".into();
    args.dataset_path = Some(workspace_root().join("datasets/conversations.jsonl"));
    args.num_prompts = 5;
    args.disable_shuffle = true;
    let original = samples(&args);
    let out = dir.path().join("clean.jsonl");
    llmb::datasets::convert(&llmb::cli::ConvertArgs {
        output: out.clone(),
        bench: args.clone(),
    })
    .unwrap();
    args.dataset_path = Some(out);
    let again = samples(&args);
    assert_eq!(again.len(), original.len());
    for (a, b) in original.iter().zip(&again) {
        assert_eq!(a.input_tokens, b.input_tokens);
        assert_eq!(a.output_tokens, b.output_tokens);
        assert_eq!(format!("{:?}", a.prompt), format!("{:?}", b.prompt));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_prompt_reaches_the_server_and_counts_match() {
    let dir = tempfile::tempdir().unwrap();
    let system = dir.path().join("system.txt");
    std::fs::write(&system, "You are a terse assistant for benchmark runs.\n").unwrap();
    let mut args = quick_args(dir.path());
    args.system_prompt_file = Some(system);
    args.num_prompts = 4;
    let plain = samples(&{
        let mut a = args.clone();
        a.system_prompt_file = None;
        a
    });
    let with_system = samples(&args);
    for (p, s) in plain.iter().zip(&with_system) {
        assert_eq!(s.input_tokens, p.input_tokens + 8);
        assert!(matches!(&s.prompt, Prompt::Text(t) if t.starts_with("You are a terse")));
    }
    let outcome = bench(&args).await;
    let ic = &outcome.metrics.input_counts;
    assert_eq!(ic.server_reported, 4);
    // The simulator counts words like the built-in tokenizer: no difference.
    assert!(ic.mean_difference.abs() < 1e-9, "{ic:?}");
    assert!((ic.mean_client - 24.0).abs() < 1e-9, "{ic:?}");

    args.backend = "openai-chat".into();
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.completed, 4);
}

#[test]
fn a_short_dataset_says_so_and_cycles_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.dataset_name = "custom".into();
    args.dataset_path = Some(workspace_root().join("datasets/trace.jsonl"));
    args.num_prompts = 100;
    // A trace is never cycled: its timestamps would repeat.
    assert_eq!(samples(&args).len(), 24);
    let bad = {
        let mut a = args.clone();
        a.dataset_opts = vec!["no-equals-sign".into()];
        a
    };
    let registry = Registry::load(&[]).unwrap();
    let tokenizer = std::sync::Arc::new(llmb::tokenizer::HostTokenizer::load(None).unwrap());
    let err = llmb::datasets::load_samples(&bad, &registry, &tokenizer, 4).unwrap_err();
    assert!(format!("{err:#}").contains("--dataset-opt"), "{err:#}");
}

#[test]
fn sonnet_prompts_share_their_prefix_and_fit_the_asked_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.dataset_name = "sonnet".into();
    args.dataset_path = Some(workspace_root().join("datasets/sonnet.txt"));
    args.num_prompts = 6;
    args.sonnet_input_len = 120;
    args.sonnet_prefix_len = 40;
    args.sonnet_output_len = 20;
    let got = samples(&args);
    assert_eq!(got.len(), 6);
    let texts: Vec<&str> = got
        .iter()
        .map(|s| match &s.prompt {
            Prompt::Text(t) => t.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    let shared = texts
        .iter()
        .map(|t| t.lines().take(4).collect::<Vec<_>>())
        .collect::<Vec<_>>();
    assert!(shared.windows(2).all(|w| w[0] == w[1]), "a common prefix");
    for s in &got {
        assert!(
            s.input_tokens <= 120 && s.input_tokens > 60,
            "{}",
            s.input_tokens
        );
        assert_eq!(s.output_tokens, 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burstgpt_rows_are_replayed_as_a_trace_with_their_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.dataset_name = "burstgpt".into();
    args.dataset_path = Some(workspace_root().join("datasets/burstgpt-sample.csv"));
    args.num_prompts = 1000;
    args.trace_speed = 50.0;
    args.ignore_eos = true;
    let outcome = bench(&args).await;
    assert_eq!(outcome.info.pattern.mode, "trace");
    assert_eq!(
        outcome.records.len(),
        20,
        "conversation-log rows with output"
    );
    assert_eq!(outcome.metrics.failed, 0);
    for r in &outcome.records {
        assert_eq!(r.server_prompt_tokens, Some(r.prompt_tokens));
        assert_eq!(r.output_tokens, r.requested_output_tokens);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_prefix_groups_hit_the_prefix_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.dataset_name = "shared-prefix".into();
    args.dataset_opts = [
        "shared-prefix-groups=2",
        "shared-prefix-prompts=4",
        "shared-prefix-len=64",
        "shared-prefix-suffix-len=16",
        "shared-prefix-output-len=4",
    ]
    .map(String::from)
    .to_vec();
    args.disable_shuffle = true;
    args.num_prompts = 8;
    args.max_concurrency = Some(1);
    args.sim.prefix_cache = true;
    let got = samples(&args);
    assert!(got.iter().all(|s| s.input_tokens == 80));
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.completed, 8);
    // Within each group, the first prompt sent pays for the prefix; the others find it cached.
    for group in 0..2u64 {
        let mut members: Vec<_> = outcome
            .records
            .iter()
            .filter(|r| r.sample / 4 == group)
            .collect();
        members.sort_by_key(|r| r.sent_ns);
        let cached: Vec<u32> = members
            .iter()
            .map(|r| r.cached_prompt_tokens.unwrap_or(0))
            .collect();
        assert_eq!(cached.len(), 4);
        assert_eq!(cached[0], 0, "group {group}: {cached:?}");
        assert!(
            cached[1..].iter().all(|&c| c >= 64),
            "group {group}: {cached:?}"
        );
    }
}

#[test]
fn sharegpt_follows_vllms_filters_and_longbench_deduplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.dataset_name = "sharegpt".into();
    args.dataset_path = Some(workspace_root().join("datasets/sharegpt-sample.json"));
    args.num_prompts = 0;
    let all = samples(&args);
    assert!(!all.is_empty() && all.len() < 12, "{} usable", all.len());
    assert!(
        all.iter()
            .all(|s| s.input_tokens >= 4 && s.output_tokens >= 4)
    );
    assert!(
        all.iter()
            .all(|s| s.input_tokens <= 1024 && s.input_tokens + s.output_tokens <= 2048)
    );
    args.sharegpt_output_len = Some(7);
    assert!(samples(&args).iter().all(|s| s.output_tokens == 7));
    // Same seed, same order; another seed, another.
    let order = |seed| {
        let mut a = args.clone();
        a.seed = seed;
        samples(&a)
            .iter()
            .map(|s| format!("{:?}", s.prompt))
            .collect::<Vec<_>>()
    };
    assert_eq!(order(1), order(1));
    assert_ne!(order(1), order(2));

    args.dataset_name = "longbench".into();
    args.dataset_path = Some(workspace_root().join("datasets/longbench-sample.jsonl"));
    let lines = std::fs::read_to_string(args.dataset_path.as_ref().unwrap())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let unique = samples(&args);
    assert_eq!(unique.len(), lines - 1, "one duplicate _id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharegpt_conversations_run_turn_by_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.backend = "openai-chat".into();
    args.dataset_name = "conversations".into();
    args.dataset_path = Some(workspace_root().join("datasets/sharegpt-sample.json"));
    args.dataset_opts = vec!["conversation-output-len=4".into()];
    args.num_prompts = 6;
    args.num_clients = Some(2);
    args.num_turns = Some(4);
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.failed, 0);
    assert_eq!(outcome.records.len(), 8);
    assert!(
        outcome.records.iter().any(|r| r.turn == Some(1)),
        "multi-turn entries ran"
    );
}
