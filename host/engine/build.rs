//! Builds the first-party plugins in `plugins/` for `wasm32-wasip2` and embeds them in the
//! `llmb` binary, so a fresh clone needs nothing but the Rust toolchain.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("host/engine/ lives in the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());

    for dir in [
        "wit",
        "plugin-sdk/src",
        "plugin-sdk/Cargo.toml",
        "plugins",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=LLMB_SKIP_PLUGIN_BUILD");

    let plugins = first_party_plugins(&root.join("plugins"));
    ensure_wasm_target();

    let target_dir = plugin_target_dir(&root);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--target",
            TARGET,
            "--profile",
            PROFILE,
            "--target-dir",
        ])
        .arg(&target_dir);
    for (_, package) in &plugins {
        cmd.args(["-p", package]);
    }
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    // Reproducible artifacts: the paths compiled into panic messages are made the same on every
    // machine, so a plugin's sha256 (what `registry/` pins) does not depend on where the
    // checkout or the cargo home lives.
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let flags = [
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
        format!("--remap-path-prefix={}=/llmb", root.display()),
        // Inline more than LLVM's default: in WebAssembly every call pays an epoch check (how a
        // spinning plugin is stopped) and the engine cannot inline across functions, so serde's
        // many small functions cost more than natively. `llmb selfbench --parse-only
        // --native-plugin` with the openai-chat adapter built both ways: 810 against 947 ns per
        // chat chunk (500: no gain; 2,000: 780 ns for a quarter more code), for 90 KiB more.
        "-Cllvm-args=-inline-threshold=1000".to_string(),
    ];
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build plugins: {e}"));
    if !status.success() {
        panic!("building the first-party plugins for {TARGET} failed (see the cargo output above)");
    }

    let mut table = String::from(
        "/// First-party plugins compiled from `plugins/`: (crate directory, component bytes).\n\
         pub static EMBEDDED: &[(&str, &[u8])] = &[\n",
    );
    for (dir, package) in &plugins {
        let wasm = target_dir
            .join(TARGET)
            .join(PROFILE)
            .join(format!("{}.wasm", package.replace('-', "_")));
        assert!(
            wasm.exists(),
            "expected plugin output {} is missing",
            wasm.display()
        );
        table.push_str(&format!(
            "    ({dir:?}, include_bytes!({:?})),\n",
            wasm.display().to_string()
        ));
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("embedded_plugins.rs"), table).unwrap();
}

/// `(directory name, package name)` of every crate under `plugins/`.
fn first_party_plugins(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("plugins/ directory") {
        let path = entry.unwrap().path();
        let manifest = path.join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let name = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("name = ")
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| panic!("{}: no package name", manifest.display()));
        found.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            name,
        ));
    }
    found.sort();
    found
}

/// Plugins get their own target directory: the outer build holds the lock on the main one.
fn plugin_target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("plugins"),
        None => root.join("target").join("plugins"),
    }
}

/// `rust-toolchain.toml` lists the target, but machines with `RUSTUP_AUTO_INSTALL=0` do not add
/// it by themselves: add it here, or say plainly what to run.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let installed = sysroot.as_ref().is_some_and(|s| {
        Path::new(s)
            .join("lib/rustlib")
            .join(TARGET)
            .join("lib")
            .exists()
    });
    if installed {
        return;
    }
    println!("cargo:warning=adding the {TARGET} target with rustup (needed to build the plugins)");
    let ok = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        panic!(
            "the {TARGET} target is not installed and `rustup target add {TARGET}` failed; \
             install it by hand and build again"
        );
    }
}
