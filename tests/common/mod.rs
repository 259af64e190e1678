//! Helpers shared by the integration tests: bench arguments pointed at an in-process simulator,
//! and building the third-party fixture adapter.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use llmb::args::BenchArgs;
use llmb::bench::run;
use llmb_engine::outcome::BenchOutcome;

pub fn workspace_root() -> PathBuf {
    // The tests belong to host/cli; the workspace is two levels up.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// Bench arguments for a small, quick run with records under `dir`.
pub fn quick_args(dir: &Path) -> BenchArgs {
    let mut args = BenchArgs::defaults();
    args.num_prompts = 8;
    args.random_input_len = 16;
    args.random_output_len = 8;
    args.ignore_eos = true;
    args.result_dir = dir.to_path_buf();
    args.disable_tqdm = true;
    args.api_key = None;
    args.sim.ttft_ms = 5.0;
    args.sim.itl_ms = 1.0;
    args
}

pub async fn bench(args: &BenchArgs) -> BenchOutcome {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    run(args, rx).await.expect("benchmark run")
}

/// Writes a JSONL custom dataset with one prompt per entry.
pub fn custom_dataset(dir: &Path, prompts: &[&str]) -> PathBuf {
    let path = dir.join("prompts.jsonl");
    let text: String = prompts
        .iter()
        .map(|p| serde_json::json!({ "prompt": p }).to_string() + "\n")
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// Builds a fixture crate of the workspace for wasm32-wasip2 with the plugin profile (plus
/// `extra` cargo arguments) and returns the profile's output folder.
pub fn build_fixture(package: &str, extra: &[&str]) -> PathBuf {
    let root = workspace_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| PathBuf::from(d).join("plugins"))
        .unwrap_or_else(|| root.join("target/plugins"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "plugin",
            "-p",
            package,
        ])
        .args(extra)
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the {package} fixture failed");
    target_dir.join("wasm32-wasip2/plugin")
}

/// Builds `tests/fixtures/echo-adapter` for wasm32-wasip2 once per test binary.
pub fn echo_adapter_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let wasm =
                build_fixture("llmb-test-echo-adapter", &[]).join("llmb_test_echo_adapter.wasm");
            assert!(wasm.exists());
            wasm
        })
        .clone()
}

/// Builds a workspace crate for the host's target (its `cdylib`, a native adapter) and returns
/// the library's path.
pub fn build_native_library(package: &str) -> PathBuf {
    let root = workspace_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| PathBuf::from(d).join("native-fixtures"))
        .unwrap_or_else(|| root.join("target/native-fixtures"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--lib", "-p", package, "--target-dir"])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building {package} natively failed");
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    target_dir.join("debug").join(file)
}
