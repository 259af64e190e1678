//! Trusted native adapters (`--allow-native`): the echo fixture's own source built as a native
//! library, refused without the flag, listed as unsandboxed, benchmarking the simulator, and a
//! panic in it failing only its request.

mod common;

use common::*;
use llmb_engine::plugin::{FaultKind, Origin, Registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_adapter_runs_only_when_allowed_and_a_panic_fails_its_request() {
    let library = build_native_library("llmb-test-echo-adapter");
    assert!(library.exists(), "{}", library.display());

    let refused = Registry::load(std::slice::from_ref(&library))
        .err()
        .unwrap();
    assert!(
        format!("{refused:#}").contains("--allow-native"),
        "{refused:#}"
    );
    let registry = Registry::load_with(std::slice::from_ref(&library), true).unwrap();
    let echo = registry
        .summaries()
        .into_iter()
        .find(|p| p.name == "echo-test")
        .unwrap();
    assert_eq!(echo.origin, Origin::Native(library.clone()));
    assert!(echo.origin.to_string().starts_with("native (unsandboxed)"));

    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.plugins = vec![library];
    args.allow_native = true;
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
            "last one",
        ],
    ));
    args.num_prompts = 4;
    let outcome = bench(&args).await;
    assert_eq!(outcome.records.len(), 4);
    assert_eq!(outcome.metrics.completed, 3, "{:?}", outcome.records);
    let panicked = outcome.records.iter().find(|r| r.id == 1).unwrap();
    let error = panicked
        .error
        .as_ref()
        .expect("the panic failed its request");
    assert!(
        error.message.contains("asked to panic"),
        "{}",
        error.message
    );
    assert_eq!(panicked.plugin_fault, Some(FaultKind::Trap));
    assert_eq!(outcome.metrics.total_output, 3 * 4);
}

#[test]
fn a_library_that_is_not_an_adapter_is_refused_by_name() {
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
    .expect("libm is on this Linux machine");
    let e = Registry::load_with(&[libm], true).err().unwrap();
    assert!(
        format!("{e:#}").contains("is not an llmb native adapter"),
        "{e:#}"
    );
}
