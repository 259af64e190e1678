//! Plugins end to end: embedded ones are listed, a third-party adapter built here is loaded with
//! `--plugin` and benchmarks the simulator, misbehaving plugins fail only their own request, and
//! every kind of bad file is refused with a clear message.

mod common;

use common::*;
use llmb_engine::plugin::{Origin, PluginKind, Registry, load_component};

#[test]
fn embedded_plugins_are_listed_with_origin_version_and_hash() {
    let registry = Registry::load(&[]).unwrap();
    let summaries = registry.summaries();
    for (name, kind) in [
        ("openai", PluginKind::Backend),
        ("openai-chat", PluginKind::Backend),
        ("vllm", PluginKind::Backend),
        ("random", PluginKind::Dataset),
        ("custom", PluginKind::Dataset),
    ] {
        let p = summaries
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(p.kind, kind);
        assert_eq!(p.wit_version, llmb_engine::plugin::WIT_VERSION);
        assert_eq!(p.origin, Origin::Embedded);
        assert_eq!(p.sha256.len(), 64);
        assert!(p.sha256.chars().all(|c| c.is_ascii_hexdigit()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_adapter_loaded_with_plugin_flag_benchmarks_the_simulator() {
    let wasm = echo_adapter_wasm();
    let registry = Registry::load(std::slice::from_ref(&wasm)).unwrap();
    let echo = registry
        .summaries()
        .into_iter()
        .find(|p| p.name == "echo-test")
        .expect("loaded");
    assert_eq!(echo.origin, Origin::File(wasm.clone()));

    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.plugins = vec![wasm];
    args.backend = "echo-test".into();
    let outcome = bench(&args).await;
    assert_eq!(
        outcome.metrics.completed,
        8,
        "{:?}",
        outcome.records.iter().map(|r| &r.error).collect::<Vec<_>>()
    );
    assert_eq!(outcome.metrics.total_output, 8 * 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_or_spinning_plugin_fails_only_its_request() {
    let wasm = echo_adapter_wasm();
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.plugins = vec![wasm];
    args.backend = "echo-test".into();
    args.dataset_name = "custom".into();
    args.disable_shuffle = true;
    args.custom_output_len = 4;
    args.max_concurrency = Some(2);
    args.dataset_path = Some(custom_dataset(
        dir.path(),
        &[
            "hello there",
            "please llmb-test-panic now",
            "more words",
            "llmb-test-spin forever",
            "last one",
        ],
    ));
    args.num_prompts = 5;
    let outcome = bench(&args).await;
    assert_eq!(outcome.records.len(), 5);
    assert_eq!(outcome.metrics.completed, 3);
    assert_eq!(outcome.metrics.failed, 2);
    let by_id = |id: u64| outcome.records.iter().find(|r| r.id == id).unwrap();
    let panic = by_id(1).error.as_ref().expect("panic request failed");
    assert_eq!(panic.kind, "plugin");
    assert!(
        panic.message.contains("asked to panic"),
        "{}",
        panic.message
    );
    let spin = by_id(3).error.as_ref().expect("spinning request failed");
    assert!(spin.message.contains("time limit"), "{}", spin.message);
    assert!(by_id(4).success, "requests after a trap still work");
    // Faults by kind, and the time each request spent in plugin calls.
    use llmb_engine::plugin::FaultKind;
    assert_eq!(by_id(1).plugin_fault, Some(FaultKind::Trap));
    assert_eq!(by_id(3).plugin_fault, Some(FaultKind::Deadline));
    assert_eq!(by_id(4).plugin_fault, None);
    let faults: Vec<(&str, usize)> = outcome
        .metrics
        .plugin_faults
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    assert_eq!(faults, [("deadline", 1), ("trap", 1)]);
    assert!(outcome.records.iter().all(|r| r.plugin_ns > 0));
    assert_eq!(outcome.metrics.plugin_time.requests, 5);
    // The default budget is 10 ms of work: a spinning call is stopped long before the 1 s
    // wall-clock backstop.
    let spin_ms = by_id(3).plugin_ns as f64 / 1e6;
    assert!(spin_ms < 500.0, "the spin ran {spin_ms} ms");
}

/// Past `--plugin-instances`, requests share an instance (each with its own parser in it): a
/// trap then fails the requests sharing that instance as `shared`, and no one else; the next
/// request gets a fresh instance.
#[test]
fn requests_past_the_instance_cap_share_one_and_a_trap_fails_only_the_sharers() {
    use llmb_engine::plugin::FaultKind;
    use llmb_engine::plugin::backend::{BackendPool, FrameBatch, FrameSpan, GenRequest, Prompt};
    let wasm = echo_adapter_wasm();
    let registry = Registry::load(std::slice::from_ref(&wasm)).unwrap();
    let pool = BackendPool::new(registry.backend("echo-test").unwrap(), Vec::new()).unwrap();
    pool.set_max_instances(2);
    let request = |prompt: &str| GenRequest {
        id: 0,
        model: "m".into(),
        prompt: Prompt::Text(prompt.into()),
        max_tokens: 4,
        ignore_eos: false,
        streaming: true,
        include_usage: false,
        temperature: None,
        extra_body: None,
    };
    let chunk = br#"{"choices":[{"text":"hi"}]}"#;
    let batch = FrameBatch {
        data: chunk.to_vec(),
        frames: vec![FrameSpan {
            start: 0,
            len: chunk.len() as u32,
            event: None,
        }],
    };
    // Four requests in flight on two instances: two parsers in each.
    let mut leases: Vec<_> = (0..4).map(|_| pool.checkout().unwrap()).collect();
    assert_eq!(pool.live_instances(), 2);
    let parsers: Vec<_> = leases
        .iter_mut()
        .map(|lease| lease.new_parser(200, &Vec::new()).unwrap())
        .collect();
    for (lease, parser) in leases.iter_mut().zip(&parsers) {
        let events = lease.feed(*parser, &batch).unwrap();
        assert_eq!(events.len(), 1, "each parser answers for itself");
    }
    // Which instance each lease holds: the ones sharing with lease 0 fail with it.
    let fault = leases[0]
        .build_request(&request("please llmb-test-panic now"))
        .expect_err("the panic traps");
    assert!(fault.to_string().contains("asked to panic"), "{fault}");
    let mut shared = 0;
    for (lease, parser) in leases.iter_mut().zip(&parsers).skip(1) {
        match lease.feed(*parser, &batch) {
            Ok(events) => assert_eq!(events.len(), 1),
            Err(fault) => {
                shared += 1;
                assert!(fault.to_string().contains("shared an instance"), "{fault}");
                assert_eq!(lease.fault(), Some(FaultKind::Shared));
            }
        }
    }
    assert_eq!(
        shared, 1,
        "exactly the one request sharing the trapped instance fails"
    );
    assert_eq!(leases[0].fault(), Some(FaultKind::Trap));
    // A new request is never leased the broken instance.
    let mut next = pool.checkout().unwrap();
    assert!(next.build_request(&request("hello")).unwrap().is_ok());
    drop(next);
    drop(leases);
    assert_eq!(pool.faults.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(pool.live_instances(), 1, "the trapped instance is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_budgets_memory_faults_and_max_plugin_faults() {
    let wasm = echo_adapter_wasm();
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.plugins = vec![wasm];
    args.backend = "echo-test".into();
    args.dataset_name = "custom".into();
    args.disable_shuffle = true;
    args.custom_output_len = 4;
    args.max_concurrency = Some(1);
    args.save_result = true;
    args.dataset_path = Some(custom_dataset(
        dir.path(),
        &[
            "hello there",
            "please llmb-test-hog memory",
            "llmb-test-spin forever",
            "more words",
            "and more",
            "last one",
        ],
    ));
    args.num_prompts = 6;
    // A tighter budget still lets ordinary calls through; the memory hog is a memory fault.
    args.plugin_call_budget = 2_000;
    let outcome = bench(&args).await;
    let by_id = |id: u64| outcome.records.iter().find(|r| r.id == id).unwrap();
    use llmb_engine::plugin::FaultKind;
    assert_eq!(by_id(1).plugin_fault, Some(FaultKind::Memory));
    let hog = by_id(1).error.as_ref().unwrap();
    assert!(hog.message.contains("memory limit"), "{}", hog.message);
    assert_eq!(by_id(2).plugin_fault, Some(FaultKind::Deadline));
    let spin = by_id(2).error.as_ref().unwrap();
    assert!(spin.message.contains("2000 µs"), "{}", spin.message);
    assert_eq!(outcome.metrics.completed, 4);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outcome.result_path.as_ref().unwrap()).unwrap())
            .unwrap();
    assert_eq!(json["llmb"]["plugin_faults"]["memory"], 1);
    assert_eq!(json["llmb"]["plugin_faults"]["deadline"], 1);
    assert!(json["llmb"]["plugin_time_us"]["p99_us"].as_f64().unwrap() > 0.0);

    // --max-plugin-faults 2: the second fault stops the run as Ctrl-C would; what was
    // measured is kept and written.
    args.max_plugin_faults = Some(2);
    args.result_filename = Some("stopped.json".into());
    // Paced (seeded arrivals ~200 ms apart), so requests go out in order one at a time.
    args.request_rate = vec![5.0];
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let cancel = llmb_engine::lifecycle::Cancel::from(rx);
    let stopped = llmb::bench::run(&args, &cancel).await.unwrap();
    assert!(stopped.info.interrupted);
    assert!(
        matches!(
            cancel.cause(),
            Some(llmb_engine::lifecycle::StopCause::PluginFaults {
                limit: 2,
                faults: 2
            })
        ),
        "{:?}",
        cancel.cause()
    );
    let n = stopped.records.len();
    assert!(
        (3..6).contains(&n),
        "{n} requests: none after the second fault"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("stopped.json")).unwrap()).unwrap();
    let why = json["llmb"]["stop_reason"].as_str().unwrap();
    assert!(why.contains("--max-plugin-faults 2"), "{why}");
    assert_eq!(
        llmb_engine::records::read_records(&dir.path().join("stopped.records.jsonl"))
            .unwrap()
            .len(),
        n
    );
}

fn component_for(wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve.push_str("test.wit", wit).unwrap();
    let world = resolve.select_world(&[pkg], Some(world)).unwrap();
    let mut module =
        wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .encode()
        .unwrap()
}

#[test]
fn bad_plugin_files_are_refused_with_clear_messages() {
    let err = |bytes: &[u8]| {
        load_component(bytes, Origin::Embedded)
            .err()
            .expect("refused")
            .to_string()
    };

    assert!(err(b"#!/bin/sh\necho not wasm\n").contains("not a WebAssembly file"));
    assert!(err(b"\0asm\x01\0\0\0").contains("core WebAssembly module, not a component"));

    let v3 = component_for(
        "package llmb:plugin@3.0.0;
         interface backend { info: func() -> string; }
         world backend-plugin { export backend; }",
        "backend-plugin",
    );
    let msg = err(&v3);
    assert!(
        msg.contains("llmb:plugin@3.0.0")
            && msg.contains("speaks llmb:plugin@2.0.0")
            && msg.contains("built for 1.0.0"),
        "{msg}"
    );

    let sneaky = component_for(
        "package llmb:plugin@1.0.0;
         interface backend { info: func() -> string; }
         interface raw-socket { connect: func(addr: string) -> u32; }
         world backend-plugin { import raw-socket; export backend; }",
        "backend-plugin",
    );
    let msg = err(&sneaky);
    assert!(
        msg.contains("imports `llmb:plugin/raw-socket@1.0.0`") && msg.contains("does not provide"),
        "{msg}"
    );

    let nothing = component_for(
        "package acme:thing@1.0.0; interface run { go: func(); } world w { export run; }",
        "w",
    );
    assert!(err(&nothing).contains("not an llmb plugin"));
}

#[test]
fn a_missing_plugin_file_names_the_path() {
    let e = Registry::load(&[std::path::PathBuf::from("/nonexistent/adapter.wasm")])
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("/nonexistent/adapter.wasm"));
}

/// `llmb selfbench --parse-only` drives the embedded `openai-chat` adapter as WASM and natively
/// on real chat chunks and prints each row it promises: the per-call batches, the minimal chunk
/// that isolates the boundary's cost, and the multi-core event throughput. Speed itself is the
/// command's to print, not this test's to assert.
#[test]
fn selfbench_parse_section_prints_every_row() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmb"))
        .args([
            "selfbench",
            "--parse-only",
            "--events",
            "640",
            "--wasm-seconds",
            "0.2",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |first: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(first))
            .unwrap_or_else(|| panic!("no row {first}:\n{text}"))
            .split_whitespace()
            .skip(1)
            .take(3)
            .map(|v| v.parse::<f64>().unwrap())
            .collect::<Vec<_>>()
    };
    for batch in ["1", "8", "32"] {
        let [native, wasm, ratio] = row(batch)[..] else {
            unreachable!()
        };
        assert!(native > 0.0 && wasm > 0.0, "{text}");
        // Printed rounded: the ratio of the rounded figures is within a percent of it.
        assert!(
            (ratio - wasm / native).abs() <= 0.01 + 0.01 * ratio,
            "{text}"
        );
    }
    assert!(
        text.contains("minimal chunk (41 B, 32 per call): native "),
        "{text}"
    );
    assert!(text.contains("events/s"), "{text}");
}
