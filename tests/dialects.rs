//! Each native adapter end to end against the simulator speaking its server's dialect on
//! 127.0.0.1: token counts, TTFT, non-streaming mode, and errors that carry the server's message.

mod common;

use common::*;
use llmb_engine::records::TokenSource;

/// Backends whose route the simulator speaks, and whether they can force output length.
const NATIVE: [(&str, bool); 11] = [
    ("tgi", false),
    ("llama.cpp", true),
    ("sglang", true),
    ("tensorrt-llm", true),
    ("lightllm", true),
    ("lmdeploy", true),
    ("scalellm", true),
    ("openai-responses", false),
    ("deepspeed-mii", true),
    ("amsv2", false),
    ("ppl", true),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_adapters_measure_the_simulator() {
    for (backend, forces_length) in NATIVE {
        let dir = tempfile::tempdir().unwrap();
        let mut args = quick_args(dir.path());
        args.backend = backend.into();
        args.num_prompts = 6;
        args.random_output_len = 12;
        args.sim.ttft_ms = 40.0;
        args.sim.itl_ms = 4.0;
        let outcome = bench(&args).await;
        let m = &outcome.metrics;
        assert_eq!(m.completed, 6, "{backend}: {:?}", outcome.records[0].error);
        assert!(
            m.ttft.mean >= 39.0 && m.ttft.mean < 60.0,
            "{backend}: TTFT {}",
            m.ttft.mean
        );
        for r in &outcome.records {
            assert!(r.token_source.is_some(), "{backend}");
            if forces_length {
                assert_eq!(r.output_tokens, 12, "{backend}");
            } else {
                assert!(
                    (6..=12).contains(&r.output_tokens),
                    "{backend}: {}",
                    r.output_tokens
                );
            }
            // Every generated token arrives as its own frame.
            assert!(r.delta_ns.len() as u32 >= r.output_tokens - 1, "{backend}");
            // Triton's and MII's streams carry no counts: one delta per step is all there is.
            if !["tensorrt-llm", "deepspeed-mii"].contains(&backend) {
                assert_ne!(r.token_source, Some(TokenSource::DeltaCount), "{backend}");
            }
        }
        assert_eq!(outcome.info.output_len_forced, forces_length, "{backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_adapters_without_streaming_measure_only_e2el() {
    // gRPC's Generation only streams.
    for (backend, _) in NATIVE.into_iter().filter(|(b, _)| *b != "ppl") {
        let dir = tempfile::tempdir().unwrap();
        let mut args = quick_args(dir.path());
        args.backend = backend.into();
        args.num_prompts = 4;
        args.no_stream = true;
        args.sim.ttft_ms = 30.0;
        args.sim.itl_ms = 2.0;
        let outcome = bench(&args).await;
        let m = &outcome.metrics;
        assert_eq!(m.completed, 4, "{backend}: {:?}", outcome.records[0].error);
        assert_eq!(m.ttft.count, 0, "{backend}");
        assert!(m.e2el.mean >= 30.0, "{backend}: {}", m.e2el.mean);
        assert!(m.total_output > 0, "{backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_errors_fail_requests_with_the_servers_message() {
    for (backend, _) in NATIVE {
        let dir = tempfile::tempdir().unwrap();
        let path = custom_dataset(
            dir.path(),
            &[
                "fine prompt",
                "please __sim_fault:http500__",
                "please __sim_fault:error_event__",
                "please __sim_fault:drop__",
            ],
        );
        let mut args = quick_args(dir.path());
        args.backend = backend.into();
        args.dataset_name = "custom".into();
        args.dataset_path = Some(path);
        args.disable_shuffle = true;
        args.num_prompts = 4;
        let outcome = bench(&args).await;
        let mut records = outcome.records.clone();
        records.sort_by_key(|r| r.sample);
        assert!(records[0].success, "{backend}: {:?}", records[0].error);
        let http = records[1].error.as_ref().expect("http error");
        // gRPC reports failures in its status (Trailers-Only), with HTTP 200.
        let status = if backend == "ppl" { None } else { Some(500) };
        assert_eq!(http.http_status, status, "{backend}");
        assert!(
            http.message.contains("simulated internal error"),
            "{backend}: {}",
            http.message
        );
        let in_stream = records[2].error.as_ref().expect("in-stream error");
        // LightLLM and MII have no in-stream error (their streams just end early) and PPL's
        // FAILED status carries no message.
        if !["lightllm", "deepspeed-mii", "ppl"].contains(&backend) {
            assert!(
                in_stream.message.contains("simulated in-stream error"),
                "{backend}: {}",
                in_stream.message
            );
        }
        assert!(
            !records[3].success,
            "{backend}: a dropped stream is a failure"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_files_are_transcribed_through_multipart_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.backend = "openai-audio".into();
    args.dataset_name = "audio".into();
    args.dataset_path = Some(workspace_root().join("datasets/audio/list.jsonl"));
    args.plugin_opts = vec!["vllm-extras=true".into()];
    args.num_prompts = 4;
    args.sim.ttft_ms = 20.0;
    let outcome = bench(&args).await;
    let m = &outcome.metrics;
    assert_eq!(m.completed, 4, "{:?}", outcome.records[0].error);
    assert!(m.ttft.mean >= 19.0, "TTFT {}", m.ttft.mean);
    for r in &outcome.records {
        assert_eq!(r.token_source, Some(TokenSource::Usage));
        // The simulator transcribes about ten words a second of 16 kHz mono audio.
        assert!([5, 10].contains(&r.output_tokens), "{}", r.output_tokens);
        assert!(r.server_prompt_tokens.unwrap_or(0) > 0);
    }

    // A text adapter handed audio: the pre-flight request stops the run with the reason ...
    args.backend = "vllm".into();
    args.plugin_opts.clear();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let stopped = llmb::bench::run(&args, rx).await.err().expect("refused");
    assert!(
        format!("{stopped:#}").contains("openai-audio"),
        "{stopped:#}"
    );
    // ... and without it each request fails with the reason.
    args.no_preflight = true;
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.failed, 4);
    let message = &outcome.records[0].error.as_ref().unwrap().message;
    assert!(message.contains("openai-audio"), "{message}");
}
