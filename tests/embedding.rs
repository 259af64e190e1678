//! The embedding example (`examples/embed.rs`) is a program of its own that runs a benchmark
//! through llmb-engine's API with no command line. `cargo test` builds it beside the tests
//! (this test builds it itself when run alone with `--test embedding`), then runs the binary
//! and checks the two metrics it prints against its simulator.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// `target/<profile>/examples/embed`, next to this test's own `deps/` directory.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    profile_dir
        .join("examples")
        .join(format!("embed{}", std::env::consts::EXE_SUFFIX))
}

fn metric(stdout: &str, name: &str) -> f64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name:?} line in the example's output:\n{stdout}"))
}

/// `cargo test` with a target filter (`--test embedding`) does not build examples: build it
/// into the same target directory and profile as this test.
fn build_example(binary: &std::path::Path) {
    let profile_dir = binary.parent().and_then(|e| e.parent()).unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(["build", "-p", "llmb", "--example", "embed", "--target-dir"])
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo to build the example");
    assert!(status.success(), "cargo build --example embed failed");
}

#[test]
fn the_embedding_example_runs_a_benchmark_through_the_engine_api() {
    let binary = example_binary();
    if !binary.exists() {
        build_example(&binary);
    }
    assert!(binary.exists(), "{} was not built", binary.display());
    let started = Instant::now();
    let out = Command::new(&binary).output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    // 24 requests against a simulator with a 20 ms TTFT: all complete, and the mean TTFT is
    // the simulator's plus a little (never below it, not orders of magnitude above).
    assert_eq!(metric(&stdout, "completed requests:"), 24.0);
    let ttft = metric(&stdout, "mean TTFT (ms):");
    assert!((20.0..200.0).contains(&ttft), "mean TTFT {ttft} ms");
}

/// A program that builds its own `RunConfig` gets the CLI's protection too: a stage that would
/// send nothing, or a rate that is not a rate, is refused with the field named, not measured
/// as an empty run.
#[tokio::test]
async fn a_run_config_that_would_measure_nothing_is_refused_naming_the_field() {
    use llmb_engine::config::RunConfig;
    use llmb_engine::lifecycle::Cancel;
    use llmb_engine::plan::Stage;
    use llmb_engine::session::{self, Quiet};

    let cases: [(Stage, &str); 3] = [
        (
            Stage::single(f64::INFINITY, Some(4), 0),
            "load.stages[0].requests",
        ),
        (Stage::single(f64::NAN, None, 8), "load.stages[0].rate"),
        (Stage::single(2.0, Some(0), 8), "load.stages[0].concurrency"),
    ];
    for (stage, field) in cases {
        // Nothing listens on port 9 of 127.0.0.1: the check must come before any connection.
        let mut config = RunConfig::new("http://127.0.0.1:9", "openai-chat", 8);
        config.load.stages = vec![stage];
        let err = session::run(&config, Cancel::new(), &mut Quiet)
            .await
            .err()
            .unwrap_or_else(|| panic!("{field}: accepted"));
        assert!(format!("{err:#}").contains(field), "{field}: {err:#}");
    }
    let mut config = RunConfig::new("http://127.0.0.1:9", "openai-chat", 8);
    config.load.stages.clear();
    let err = session::run(&config, Cancel::new(), &mut Quiet)
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("load.stages"), "{err:#}");
}
