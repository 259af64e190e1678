//! Benchmarks against the real simulator on 127.0.0.1: measured timings match the configured
//! ones, failures are kept with their reasons, records reach disk, secrets never do.

mod common;

use common::*;
use llmb_engine::records::{TokenSource, read_records};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_ttft_and_itl_match_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.backend = "vllm".into();
    args.num_prompts = 12;
    args.max_concurrency = Some(4);
    args.random_output_len = 20;
    args.sim.ttft_ms = 60.0;
    args.sim.itl_ms = 12.0;
    let outcome = bench(&args).await;
    let m = &outcome.metrics;
    assert_eq!(m.completed, 12);
    assert_eq!(m.failed, 0);
    assert_eq!(m.total_output, 12 * 20);
    // Sleeps only overshoot; allow scheduling noise on a loaded 2-core machine.
    assert!(
        m.ttft.mean >= 59.0 && m.ttft.mean < 75.0,
        "mean TTFT {} ms",
        m.ttft.mean
    );
    assert!(
        m.itl.mean >= 11.0 && m.itl.mean < 14.5,
        "mean ITL {} ms",
        m.itl.mean
    );
    assert!(
        m.tpot.mean >= 11.0 && m.tpot.mean < 14.5,
        "mean TPOT {} ms",
        m.tpot.mean
    );
    let expected_e2el = 60.0 + 19.0 * 12.0;
    assert!(
        m.e2el.mean >= expected_e2el - 1.0 && m.e2el.mean < expected_e2el + 30.0,
        "e2el {}",
        m.e2el.mean
    );
    assert!(
        outcome
            .records
            .iter()
            .all(|r| r.token_source == Some(TokenSource::Usage))
    );
    assert!(
        outcome
            .records
            .iter()
            .all(|r| r.prompt_tokens == 16 && r.server_prompt_tokens == Some(16))
    );
    // A concurrency cap queues requests: the wait is queue time, not TTFT.
    assert!(m.queue.mean > 50.0, "queue mean {} ms", m.queue.mean);

    let on_disk = read_records(outcome.records_path.as_ref().unwrap()).unwrap();
    assert_eq!(on_disk.len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_ttft_counts_the_role_chunk_and_usage_gives_token_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.backend = "openai-chat".into();
    args.sim.ttft_ms = 40.0;
    args.sim.itl_ms = 10.0;
    args.random_output_len = 6;
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.completed, 8);
    for r in &outcome.records {
        // role chunk + 6 content chunks, the role chunk stamped at TTFT
        assert_eq!(r.delta_ns.len(), 7, "{r:?}");
        assert_eq!(r.output_tokens, 6);
        assert_eq!(r.generated_text.split_whitespace().count(), 6);
        let ttft = r.ttft_s().unwrap() * 1e3;
        assert!((39.0..60.0).contains(&ttft), "ttft {ttft}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_responses_become_failed_requests_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.backend = "openai".into();
    args.dataset_name = "custom".into();
    args.disable_shuffle = true;
    args.custom_output_len = 6;
    args.dataset_path = Some(custom_dataset(
        dir.path(),
        &[
            "a fine prompt",
            "x __sim_fault:malformed__",
            "y __sim_fault:http500__",
            "z __sim_fault:drop__",
            "w __sim_fault:error_event__",
            "another fine prompt",
        ],
    ));
    args.num_prompts = 6;
    args.save_detailed = true;
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.completed, 2);
    assert_eq!(outcome.metrics.failed, 4);
    let err = |id: u64| {
        outcome
            .records
            .iter()
            .find(|r| r.id == id)
            .unwrap()
            .error
            .clone()
            .expect("failed")
    };
    let malformed = err(1);
    assert_eq!(malformed.kind, "protocol");
    assert!(malformed.message.contains("malformed"), "{malformed:?}");
    let http = err(2);
    assert_eq!(http.http_status, Some(500));
    assert!(
        http.message.contains("simulated internal error"),
        "{http:?}"
    );
    let dropped = err(3);
    assert!(
        dropped.kind == "connection" || dropped.kind == "protocol",
        "{dropped:?}"
    );
    let in_stream = err(4);
    assert!(
        in_stream.message.contains("simulated in-stream error"),
        "{in_stream:?}"
    );

    // Every request, failed or not, is on disk and in the detailed result.
    assert_eq!(
        read_records(outcome.records_path.as_ref().unwrap())
            .unwrap()
            .len(),
        6
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outcome.result_path.as_ref().unwrap()).unwrap())
            .unwrap();
    assert_eq!(saved["completed"], 2);
    assert_eq!(saved["failed"], 4);
    assert_eq!(saved["errors"].as_array().unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_sent_but_never_saved() {
    let secret = "sk-test-very-secret-4242";
    let mut config = llmb_sim::SimConfig {
        api_key: Some(secret.into()),
        ..Default::default()
    };
    config.ttft_ms = 2.0;
    config.itl_ms = 1.0;
    let sim = llmb_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.base_url = Some(sim.base_url());
    args.model = Some("llmb-sim".into());
    args.api_key = Some(secret.into());
    args.save_detailed = true;
    let ok = bench(&args).await;
    assert_eq!(ok.metrics.completed, 8);

    // A wrong key stops the run at the pre-flight request, with the server's answer and the
    // fix, and without the key.
    args.api_key = Some("sk-wrong".into());
    args.result_filename = Some("wrong.json".into());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let denied = llmb::bench::run(&args, rx).await.err().expect("refused");
    let text = format!("{denied:#}");
    assert!(
        text.contains("HTTP 401") && text.contains("--api-key"),
        "{text}"
    );
    assert!(
        !text.contains("sk-wrong") && !text.contains(secret),
        "{text}"
    );

    // With the pre-flight skipped, every request fails with the 401 and is kept.
    args.no_preflight = true;
    let denied = bench(&args).await;
    assert_eq!(denied.metrics.failed, 8);
    assert_eq!(
        denied.records[0].error.as_ref().unwrap().http_status,
        Some(401)
    );
    sim.shutdown().await;

    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains(secret) && !text.contains("sk-wrong"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupting_a_run_keeps_what_was_measured() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.num_prompts = 200;
    args.request_rate = vec![50.0];
    args.save_result = true;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        tx.send(true).unwrap();
    });
    let outcome = llmb::bench::run(&args, rx).await.unwrap();
    assert!(outcome.info.interrupted);
    let n = outcome.records.len();
    assert!(n > 5 && n < 200, "{n} records");
    assert_eq!(
        read_records(outcome.records_path.as_ref().unwrap())
            .unwrap()
            .len(),
        n
    );
    assert!(outcome.result_path.unwrap().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_dataset_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.jsonl");
    std::fs::write(&path, "{\"prompt\": \"ok\"}\n{\"prompt\": 3}\n").unwrap();
    let mut args = quick_args(dir.path());
    args.dataset_name = "custom".into();
    args.dataset_path = Some(path.clone());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = llmb::bench::run(&args, rx).await.err().expect("refused");
    let msg = format!("{err:#}");
    assert!(msg.contains(&format!("{}:2", path.display())), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_dataset_lengths_are_seeded_and_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.random_input_len = 40;
    args.random_output_len = 10;
    args.random_range_ratio = 0.5;
    args.random_prefix_len = 5;
    let a = bench(&args).await;
    let b = bench(&args).await;
    let lens = |o: &llmb_engine::outcome::BenchOutcome| {
        let mut v: Vec<(u64, u32, u32)> = o
            .records
            .iter()
            .map(|r| (r.id, r.prompt_tokens, r.requested_output_tokens))
            .collect();
        v.sort();
        v
    };
    assert_eq!(lens(&a), lens(&b));
    for r in &a.records {
        assert!((25..=65).contains(&r.prompt_tokens), "{}", r.prompt_tokens);
        assert_eq!(r.server_prompt_tokens, Some(r.prompt_tokens));
        assert!((5..=15).contains(&r.requested_output_tokens));
        assert_eq!(r.output_tokens, r.requested_output_tokens);
    }
}

/// A Hugging Face tokenizer.json (word level, whitespace pre-tokenizer), small enough to write here.
fn write_tokenizer(dir: &std::path::Path) -> std::path::PathBuf {
    let folder = dir.join("tok");
    std::fs::create_dir_all(&folder).unwrap();
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    for i in 0..200u32 {
        vocab.insert(format!("w{i}"), (i + 1).into());
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 0, "content": "[UNK]", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(folder.join("tokenizer.json"), json.to_string()).unwrap();
    folder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokenizer_folder_sets_prompt_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let folder = write_tokenizer(dir.path());
    let tok = llmb_engine::tokenizer::HostTokenizer::load(Some(&folder)).unwrap();
    assert_eq!(tok.count("w1 w2 w3"), 3);
    assert_eq!(tok.vocab_size(), 201);

    let mut args = quick_args(dir.path());
    args.tokenizer = Some(folder.clone());
    args.random_input_len = 30;
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.completed, 8);
    assert!(outcome.info.tokenizer_id.contains("tok"));
    for r in &outcome.records {
        // The tokenizer's count, which the word-counting simulator confirms.
        assert_eq!(r.prompt_tokens, 30);
        assert_eq!(r.server_prompt_tokens, Some(30));
    }

    let missing = llmb_engine::tokenizer::HostTokenizer::load(Some(&dir.path().join("nope")))
        .err()
        .unwrap();
    assert!(format!("{missing:#}").contains("nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.base_url = Some(format!("http://127.0.0.1:{port}"));
    args.model = Some("m".into());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = llmb::bench::run(&args, rx).await.err().expect("refused");
    assert!(
        format!("{err:#}").contains(&format!("cannot reach http://127.0.0.1:{port}")),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_is_asked_from_the_server_when_not_given() {
    let config = llmb_sim::SimConfig {
        ttft_ms: 1.0,
        itl_ms: 1.0,
        model: "served-model".into(),
        ..Default::default()
    };
    let sim = llmb_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.base_url = Some(sim.base_url());
    args.model = None;
    let outcome = bench(&args).await;
    assert_eq!(outcome.info.model_id, "served-model");
    assert_eq!(outcome.metrics.completed, 8);
    // Eight generations, the one `/v1/models` lookup and the pre-flight request.
    assert_eq!(sim.requests_served(), 10);
    sim.shutdown().await;
}
