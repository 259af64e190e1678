//! Dataset readers and tools end to end: what a run would send, written back as JSONL and read
//! again; system prompts; input counts checked against the simulator's.

mod common;

use common::*;
use llmb_engine::plugin::Registry;
use llmb_engine::plugin::backend::Prompt;

fn samples(args: &llmb::args::BenchArgs) -> Vec<llmb_engine::plugin::dataset::Sample> {
    let registry = Registry::load(&args.plugins).unwrap();
    let tokenizer = std::sync::Arc::new(
        llmb_engine::tokenizer::HostTokenizer::load(args.tokenizer.as_deref()).unwrap(),
    );
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
    llmb::datasets::convert(&llmb::args::ConvertArgs {
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
    let tokenizer = std::sync::Arc::new(llmb_engine::tokenizer::HostTokenizer::load(None).unwrap());
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

/// A byte-level BPE trained here on the shipped sample texts, shaped like a model's
/// tokenizer.json (merges that join across spaces and punctuation, special tokens).
fn trained_bpe(dir: &std::path::Path) -> std::path::PathBuf {
    use tokenizers::models::TrainerWrapper;
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, Tokenizer};

    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::default()));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(600)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![
            AddedToken::from("<s>", true),
            AddedToken::from("</s>", true),
        ])
        .build()
        .into();
    let corpus: Vec<String> = ["datasets/sonnet.txt", "datasets/sharegpt-sample.json"]
        .iter()
        .map(|p| workspace_root().join(p).display().to_string())
        .collect();
    tokenizer.train_from_files(&mut trainer, corpus).unwrap();
    let path = dir.join("tokenizer.json");
    tokenizer.save(&path, false).unwrap();
    path
}

#[test]
fn generated_prompts_have_the_exact_token_count_of_a_real_bpe() {
    let dir = tempfile::tempdir().unwrap();
    let path = trained_bpe(dir.path());
    let bpe = tokenizers::Tokenizer::from_file(&path).unwrap();
    let count = |text: &str| bpe.encode(text, false).unwrap().len() as u32;
    let mut args = quick_args(dir.path());
    args.tokenizer = Some(path);
    args.num_prompts = 40;
    args.random_input_len = 57;

    let fixed = samples(&args);
    for s in &fixed {
        let Prompt::Text(text) = &s.prompt else {
            panic!("random prompts are text")
        };
        assert_eq!(count(text), 57, "{text:?}");
        assert_eq!(s.input_tokens, 57);
    }

    args.random_range_ratio = 0.5;
    args.random_prefix_len = 9;
    let varied = samples(&args);
    let lengths: std::collections::BTreeSet<u32> = varied.iter().map(|s| s.input_tokens).collect();
    assert!(lengths.len() > 5, "lengths should vary: {lengths:?}");
    for s in &varied {
        let Prompt::Text(text) = &s.prompt else {
            panic!("random prompts are text")
        };
        assert_eq!(count(text), s.input_tokens, "{text:?}");
        assert!(
            (9 + 28..=9 + 86).contains(&s.input_tokens),
            "{}",
            s.input_tokens
        );
    }

    args.dataset_name = "shared-prefix".into();
    args.dataset_opts = vec![
        "shared-prefix-groups=2".into(),
        "shared-prefix-prompts=4".into(),
        "shared-prefix-len=33".into(),
        "shared-prefix-suffix-len=11".into(),
    ];
    args.num_prompts = 8;
    args.disable_shuffle = true;
    let grouped = samples(&args);
    assert_eq!(grouped.len(), 8);
    let mut prefixes = Vec::new();
    for group in grouped.chunks(4) {
        let encoded: Vec<Vec<u32>> = group
            .iter()
            .map(|s| match &s.prompt {
                Prompt::Text(t) => bpe.encode(t.as_str(), false).unwrap().get_ids().to_vec(),
                _ => panic!("shared-prefix prompts are text"),
            })
            .collect();
        for (s, ids) in group.iter().zip(&encoded) {
            assert_eq!(ids.len(), 44);
            assert_eq!(s.input_tokens, 44);
            assert_eq!(
                ids[..33],
                encoded[0][..33],
                "the group shares its first 33 tokens"
            );
        }
        prefixes.push(encoded[0][..33].to_vec());
    }
    assert_ne!(prefixes[0], prefixes[1], "groups have their own prefixes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_tokenizer_input_lengths_are_the_servers_own_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.jsonl");
    let line = serde_json::json!({"messages": [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": "Which river flows through the old town and where does it meet the sea?"},
    ]});
    std::fs::write(&path, format!("{line}\n").repeat(8)).unwrap();
    let mut args = quick_args(dir.path());
    args.backend = "openai-chat".into();
    args.dataset_name = "custom".into();
    args.dataset_path = Some(path);
    args.custom_output_len = 8;
    let outcome = bench(&args).await;
    // 5 + 14 words; two messages under the simulator's ChatML-like template add 2 × 5 + 3.
    match &outcome.info.input_counts {
        llmb_engine::input_tokens::InputCountSource::Server {
            route,
            prompts,
            mean_estimate,
            mean_server,
        } => {
            assert_eq!(route, "POST /tokenize");
            assert_eq!(*prompts, 8);
            assert!((mean_estimate - 19.0).abs() < 1e-9, "{mean_estimate}");
            assert!((mean_server - 32.0).abs() < 1e-9, "{mean_server}");
        }
        other => panic!("expected server counts, got {other:?}"),
    }
    assert_eq!(outcome.metrics.completed, 8);
    for r in &outcome.records {
        assert_eq!(r.prompt_tokens, 32);
        assert_eq!(r.server_prompt_tokens, Some(32));
    }
    let ic = &outcome.metrics.input_counts;
    assert!(ic.mean_difference.abs() < 1e-9, "{ic:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_tokenize_route_leaves_the_estimate_and_the_report_says_so() {
    let sim = llmb_sim::start(
        llmb_sim::SimConfig {
            tokenize_route: false,
            ttft_ms: 2.0,
            itl_ms: 1.0,
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.backend = "openai-chat".into();
    args.base_url = Some(sim.base_url());
    args.model = Some("llmb-sim".into());
    let outcome = bench(&args).await;
    match &outcome.info.input_counts {
        llmb_engine::input_tokens::InputCountSource::Estimate { reason } => {
            assert!(
                reason.contains("POST /tokenize answered HTTP 404"),
                "{reason}"
            );
        }
        other => panic!("expected an estimate, got {other:?}"),
    }
    // The server's usage still shows what the estimate missed: the chat template.
    let ic = &outcome.metrics.input_counts;
    assert_eq!(ic.server_reported, 8);
    assert!((ic.mean_difference - 8.0).abs() < 1e-9, "{ic:?}");

    let mut console = Vec::new();
    llmb_report::console::print_console(
        &outcome.info,
        &outcome.metrics,
        &llmb_engine::metrics::MetricsConfig::default(),
        &mut console,
    )
    .unwrap();
    let console = String::from_utf8(console).unwrap();
    assert!(
        console.contains("estimate: one token per word (POST /tokenize answered HTTP 404"),
        "{console}"
    );
    assert!(console.contains("usage − sent +8.0"), "{console}");

    args.no_server_tokenize = true;
    args.base_url = None;
    args.model = None;
    let outcome = bench(&args).await;
    assert!(matches!(
        &outcome.info.input_counts,
        llmb_engine::input_tokens::InputCountSource::Estimate { reason } if reason == "--no-server-tokenize"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_dataset_sends_each_reader_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.dataset_name = "mixed".into();
    args.num_prompts = 12;
    args.dataset_cycle = true;
    let sharegpt = workspace_root().join("datasets/sharegpt-sample.json");
    args.mix = vec![
        format!("2:sharegpt:{}", sharegpt.display()),
        "1:random".into(),
    ];
    let mixed = samples(&args);
    assert_eq!(mixed.len(), 12);
    // Random prompts are exactly --random-input-len (16) words; ShareGPT prompts are chats.
    let random = mixed
        .iter()
        .filter(|s| matches!(&s.prompt, Prompt::Text(_)) && s.input_tokens == 16)
        .count();
    assert_eq!(random, 4, "one part in three");
    let again = samples(&args);
    assert_eq!(
        format!("{:?}", mixed.iter().map(|s| &s.prompt).collect::<Vec<_>>()),
        format!("{:?}", again.iter().map(|s| &s.prompt).collect::<Vec<_>>()),
        "the seed fixes the mix"
    );

    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.completed, 12);

    args.mix = vec![
        "1:burstgpt:".to_string()
            + &workspace_root()
                .join("datasets/burstgpt-sample.csv")
                .display()
                .to_string(),
    ];
    let registry = Registry::load(&args.plugins).unwrap();
    let tokenizer = std::sync::Arc::new(llmb_engine::tokenizer::HostTokenizer::load(None).unwrap());
    let err = llmb::datasets::load_samples(&args, &registry, &tokenizer, 4)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot be mixed") && err.contains("burstgpt"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hf_reads_a_snapshot_folder_by_split_and_a_csv_through_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.dataset_name = "hf".into();
    args.dataset_path = Some(workspace_root().join("datasets/hf-sample"));
    args.num_prompts = 0;
    assert_eq!(samples(&args).len(), 30, "train split");
    args.hf_split = Some("test".into());
    assert_eq!(samples(&args).len(), 10);

    args.hf_split = Some("validation".into());
    let registry = Registry::load(&args.plugins).unwrap();
    let tokenizer = std::sync::Arc::new(llmb_engine::tokenizer::HostTokenizer::load(None).unwrap());
    let err = format!(
        "{:#}",
        llmb::datasets::load_samples(&args, &registry, &tokenizer, 4).unwrap_err()
    );
    assert!(
        err.contains("validation") && err.contains("splits found: test, train"),
        "{err}"
    );

    args.hf_split = None;
    args.dataset_path = Some(workspace_root().join("datasets/hf-sample.csv"));
    args.hf_output_len = Some(5);
    args.num_prompts = 6;
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.completed, 6);
    assert!(
        outcome
            .records
            .iter()
            .all(|r| r.requested_output_tokens == 5)
    );
    assert!(outcome.records.iter().all(|r| r.output_tokens == 5));
}
