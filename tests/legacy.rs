//! Plugins built for the 1.0 contract keep working under the 2.0 host: an adapter and a dataset
//! reader compiled with wit-bindgen on the frozen 1.0 WIT (`tests/fixtures/legacy-v1`, no SDK)
//! load beside the 2.0 plugins, benchmark the simulator, and mix with 2.0 plugins.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use llmb_engine::plugin::{Origin, PluginKind, Registry, WIT_VERSION};

/// Builds the 1.0 fixtures once per test binary and returns the component `name`.
fn legacy_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| build_fixture("llmb-test-legacy-v1", &["--examples"]).join("examples"));
    let wasm = dir.join(format!("{name}.wasm"));
    assert!(wasm.exists(), "{} missing", wasm.display());
    wasm
}

#[test]
fn components_built_for_1_0_load_beside_the_2_0_plugins() {
    let adapter = legacy_wasm("legacy_adapter");
    let reader = legacy_wasm("legacy_reader");
    let registry = Registry::load(&[adapter.clone(), reader.clone()]).unwrap();
    let summaries = registry.summaries();
    let find = |name: &str| {
        summaries
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    let legacy_chat = find("legacy-chat");
    assert_eq!(legacy_chat.kind, PluginKind::Backend);
    assert_eq!(legacy_chat.wit_version, "1.0.0");
    assert_eq!(legacy_chat.origin, Origin::File(adapter));
    let legacy_words = find("legacy-words");
    assert_eq!(legacy_words.kind, PluginKind::Dataset);
    assert_eq!(legacy_words.wit_version, "1.0.0");
    assert_eq!(find("openai-chat").wit_version, WIT_VERSION);
    assert_eq!(WIT_VERSION, "2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_0_adapter_benchmarks_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.plugins = vec![legacy_wasm("legacy_adapter")];
    args.backend = "legacy-chat".into();
    let outcome = bench(&args).await;
    let errors: Vec<_> = outcome.records.iter().map(|r| &r.error).collect();
    assert_eq!(outcome.metrics.completed, 8, "{errors:?}");
    assert_eq!(outcome.metrics.total_output, 8 * 8);
    for r in &outcome.records {
        // Usage came through the 1.0 record (converted up, no reasoning count).
        assert!(r.server_prompt_tokens.is_some_and(|n| n > 0), "{r:?}");
        assert_eq!(r.reasoning_tokens, None);
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
        // Host timestamps per delta, as for any adapter: TTFT and ITL are measured.
        assert!(r.delta_ns.len() >= 8, "{} deltas", r.delta_ns.len());
    }
    // Its configure still refuses options it does not know, through the 1.0 boundary.
    let mut bad = quick_args(dir.path());
    bad.plugins = vec![legacy_wasm("legacy_adapter")];
    bad.backend = "legacy-chat".into();
    bad.plugin_opts = vec!["colour=blue".into()];
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = llmb::bench::run(&bad, rx)
        .await
        .err()
        .expect("refused option");
    assert!(
        format!("{err:#}").contains("legacy-chat takes no options"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_0_reader_feeds_a_2_0_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.plugins = vec![legacy_wasm("legacy_reader")];
    args.dataset_name = "legacy-words".into();
    args.dataset_opts = vec!["legacy-words=5".into()];
    args.backend = "openai-chat".into();
    // Input lengths as the 1.0 reader counted them with the host tokenizer it imports.
    args.no_server_tokenize = true;
    let outcome = bench(&args).await;
    let errors: Vec<_> = outcome.records.iter().map(|r| &r.error).collect();
    assert_eq!(outcome.metrics.completed, 8, "{errors:?}");
    for r in &outcome.records {
        // Five words by the host's word tokenizer, as the 1.0 reader asked it to count.
        assert_eq!(r.prompt_tokens, 5, "{r:?}");
        // The server saw those five words (under its chat template).
        assert!(r.server_prompt_tokens.is_some_and(|n| n > 5), "{r:?}");
    }
    assert_eq!(outcome.metrics.total_output, 8 * 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_0_adapter_fails_image_prompts_one_by_one_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.plugins = vec![legacy_wasm("legacy_adapter")];
    args.backend = "legacy-chat".into();
    args.dataset_name = "random-mm".into();
    args.no_preflight = true;
    args.vllm.random_mm_bucket_config = Some("{(64, 64, 1): 1.0}".into());
    let outcome = bench(&args).await;
    // The run completes and keeps every request: each one failed, saying why.
    assert_eq!(outcome.records.len(), 8);
    assert_eq!(outcome.metrics.completed, 0);
    for r in &outcome.records {
        let e = r.error.as_ref().expect("failed");
        assert!(
            e.message.contains("llmb:plugin@1.0.0") && e.message.contains("images"),
            "{e:?}"
        );
    }
}
