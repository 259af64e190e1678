//! The `anthropic` adapter end to end against the simulator speaking Anthropic's Messages API
//! (`/v1/messages`) on 127.0.0.1: token counts against what the simulator generated, TTFT,
//! non-streaming mode, thinking kept apart from the answer, and errors that carry the server's
//! message.

mod common;

use std::io::{Read as _, Write as _};

use common::*;
use llmb_engine::records::TokenSource;
use llmb_engine::tokenizer::count_words;
use llmb_sim::{SimConfig, SimHandle};

async fn start_sim(config: SimConfig) -> SimHandle {
    llmb_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// `vllm:generation_tokens_total` from the simulator's `/metrics`: every token it generated.
fn generated_tokens(sim: &SimHandle) -> u64 {
    let mut s = std::net::TcpStream::connect(sim.addr()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: sim\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("vllm:generation_tokens_total{"))
        .unwrap_or_else(|| panic!("no generation counter in {text}"));
    line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
}

/// Bench arguments for `--backend anthropic` against `sim`.
fn args_for(dir: &std::path::Path, sim: &SimHandle) -> llmb::args::BenchArgs {
    let mut args = quick_args(dir);
    args.backend = "anthropic".into();
    args.base_url = Some(sim.base_url());
    args.model = Some("llmb-sim".into());
    // Only the measured requests reach the simulator, so its counters are theirs.
    args.no_preflight = true;
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_messages_are_measured() {
    let sim = start_sim(SimConfig {
        ttft_ms: 40.0,
        itl_ms: 4.0,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = args_for(dir.path(), &sim);
    args.num_prompts = 6;
    args.random_output_len = 12;
    let outcome = bench(&args).await;
    let m = &outcome.metrics;
    assert_eq!(m.completed, 6, "{:?}", outcome.records[0].error);
    assert!(
        m.ttft.mean >= 39.0 && m.ttft.mean < 60.0,
        "TTFT {}",
        m.ttft.mean
    );
    // Anthropic has no ignore_eos: natural lengths, between half and all of max_tokens.
    assert!(!outcome.info.output_len_forced);
    for r in &outcome.records {
        assert_eq!(r.token_source, Some(TokenSource::Usage));
        assert!((6..=12).contains(&r.output_tokens), "{}", r.output_tokens);
        // One word per simulated token, each in its own text_delta event.
        assert_eq!(count_words(&r.generated_text), r.output_tokens);
        assert_eq!(r.delta_ns.len() as u32, r.output_tokens);
        assert!(r.reasoning_text.is_empty());
        let stop = if r.output_tokens == 12 {
            "max_tokens"
        } else {
            "end_turn"
        };
        assert_eq!(r.finish_reason.as_deref(), Some(stop));
        assert!(r.server_prompt_tokens.unwrap_or(0) > 0);
    }
    let reported: u64 = outcome
        .records
        .iter()
        .map(|r| u64::from(r.output_tokens))
        .sum();
    assert_eq!(reported, generated_tokens(&sim));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_messages_measure_only_e2el() {
    let sim = start_sim(SimConfig {
        ttft_ms: 30.0,
        itl_ms: 2.0,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = args_for(dir.path(), &sim);
    args.num_prompts = 4;
    args.no_stream = true;
    let outcome = bench(&args).await;
    let m = &outcome.metrics;
    assert_eq!(m.completed, 4, "{:?}", outcome.records[0].error);
    assert_eq!(m.ttft.count, 0);
    assert!(m.e2el.mean >= 30.0, "{}", m.e2el.mean);
    for r in &outcome.records {
        assert_eq!(r.token_source, Some(TokenSource::Usage));
        assert_eq!(count_words(&r.generated_text), r.output_tokens);
    }
    assert_eq!(m.total_output, generated_tokens(&sim));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_is_kept_apart_from_the_answer() {
    for stream in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = quick_args(dir.path());
        args.backend = "anthropic".into();
        args.num_prompts = 4;
        args.random_output_len = 12;
        args.no_stream = !stream;
        args.sim.reasoning_tokens = 3;
        // The simulator reasons whether asked or not; the option must still reach the body.
        args.plugin_opts = vec!["thinking-budget=1024".into()];
        let outcome = bench(&args).await;
        assert_eq!(
            outcome.metrics.completed, 4,
            "{:?}",
            outcome.records[0].error
        );
        for r in &outcome.records {
            // At least 6 tokens of output: 3 of thinking, the rest the answer.
            assert!(r.output_tokens >= 6, "{}", r.output_tokens);
            assert_eq!(count_words(&r.generated_text), r.output_tokens - 3);
            // Streamed or whole, the thinking is kept apart from the answer.
            assert_eq!(count_words(&r.reasoning_text), 3, "{:?}", r.reasoning_text);
            assert_eq!(r.reasoning_tokens, Some(3));
            if stream {
                // Thinking deltas are frames of the stream too.
                assert_eq!(r.delta_ns.len() as u32, r.output_tokens);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_fail_requests_with_the_servers_message() {
    let sim = start_sim(SimConfig {
        api_key: Some("k3y".into()),
        ttft_ms: 2.0,
        itl_ms: 1.0,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();

    // The adapter names Anthropic's `x-api-key` header, so llmb sends --api-key there (the
    // simulator takes it, and Bearer too); a wrong one is refused in Anthropic's words.
    let mut args = args_for(dir.path(), &sim);
    args.num_prompts = 2;
    args.api_key = Some("k3y".into());
    assert_eq!(bench(&args).await.metrics.completed, 2);
    args.api_key = Some("wrong".into());
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.failed, 2);
    let e = outcome.records[0].error.as_ref().unwrap();
    assert_eq!(
        (e.kind.as_str(), e.message.as_str(), e.http_status),
        ("unauthorized", "invalid x-api-key", Some(401))
    );
    // Anthropic's own header, given with --header, is the way to a server that wants it.
    args.api_key = None;
    args.headers = vec!["x-api-key=k3y".into()];
    assert_eq!(bench(&args).await.metrics.completed, 2);

    // A model the server does not serve.
    args.model = Some("claude-nope".into());
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.failed, 2);
    let e = outcome.records[0].error.as_ref().unwrap();
    assert_eq!(
        (e.kind.as_str(), e.message.as_str(), e.http_status),
        ("not-found", "model: claude-nope", Some(404))
    );

    // Faults: an HTTP error, an overloaded server (Anthropic's 529), an `error` event in the
    // stream, a dropped connection.
    let path = custom_dataset(
        dir.path(),
        &[
            "fine prompt",
            "please __sim_fault:http500__",
            "please __sim_fault:overloaded__",
            "please __sim_fault:error_event__",
            "please __sim_fault:drop__",
            "please __sim_fault:no_start_event__",
        ],
    );
    args.model = Some("llmb-sim".into());
    args.dataset_name = "custom".into();
    args.dataset_path = Some(path);
    args.disable_shuffle = true;
    args.num_prompts = 6;
    let outcome = bench(&args).await;
    let mut records = outcome.records.clone();
    records.sort_by_key(|r| r.sample);
    assert!(records[0].success, "{:?}", records[0].error);
    let error = |k: usize| {
        let e = records[k].error.as_ref().expect("an error");
        (e.kind.clone(), e.message.clone(), e.http_status)
    };
    assert_eq!(
        error(1),
        (
            "server".into(),
            "simulated internal error".into(),
            Some(500)
        )
    );
    // The host adds the server's Retry-After to the message.
    assert_eq!(
        error(2),
        (
            "overloaded".into(),
            "simulated overload (Retry-After: 2)".into(),
            Some(529)
        )
    );
    assert_eq!(
        error(3),
        ("server".into(), "simulated in-stream error".into(), None)
    );
    assert!(!records[4].success, "a dropped stream is a failure");
    // A stream without `message_start`, as llama.cpp sends one now and then: the answer and its
    // output count (from `message_delta`) are kept; the prompt count the server never sent is
    // unknown, not zero.
    let r = &records[5];
    assert!(r.success, "{:?}", r.error);
    assert!(r.first_answer_ns.is_some() && r.output_tokens > 0, "{r:?}");
    assert_eq!(r.token_source, Some(TokenSource::Usage), "{r:?}");
    assert_eq!(r.server_prompt_tokens, None, "{r:?}");
    assert!(records[0].server_prompt_tokens.is_some_and(|n| n > 0));
    sim.shutdown().await;
}

/// The heads of the requests a listener on 127.0.0.1 receives up to the first POST (which it
/// answers 401; the others 404).
fn first_request_head() -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        // Reachability checks connect and send nothing, and probes (`GET /v1/models`) are not
        // the measured request: the first POST is the one.
        let mut heads = Vec::new();
        let mut s = loop {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            heads.push(String::from_utf8_lossy(&head).to_ascii_lowercase());
            if head.starts_with(b"POST") {
                break s;
            }
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        };
        let body = r#"{"type":"error","error":{"type":"authentication_error","message":"no"}}"#;
        let _ = write!(
            s,
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        heads
    });
    (addr, handle)
}

/// The key goes where the adapter says (`x-api-key` for Anthropic), never as Bearer too;
/// `--api-key-header authorization` brings Bearer back for servers that take only that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_goes_in_the_header_the_adapter_names() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, want, unwanted) in [
        (None, "x-api-key: k3y", "authorization:"),
        (
            Some("authorization"),
            "authorization: bearer k3y",
            "x-api-key:",
        ),
    ] {
        let (addr, head) = first_request_head();
        let mut args = quick_args(dir.path());
        args.backend = "anthropic".into();
        args.base_url = Some(format!("http://{addr}"));
        args.model = Some("m".into());
        args.no_preflight = true;
        args.no_server_tokenize = true;
        args.num_prompts = 1;
        args.api_key = Some("k3y".into());
        args.api_key_header = flag.map(Into::into);
        let outcome = bench(&args).await;
        assert_eq!(outcome.metrics.failed, 1);
        // The measured request and the `/v1/models` probe before it both carry the key.
        let heads = head.join().unwrap();
        let requests: Vec<_> = heads.iter().filter(|h| !h.is_empty()).collect();
        assert!(requests.len() >= 2, "{requests:?}");
        for head in requests {
            assert!(head.contains(want), "{flag:?}: {head}");
            assert!(!head.contains(unwanted), "{flag:?}: {head}");
        }
    }
}
