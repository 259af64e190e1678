//! `llmb plugin new NAME`: a ready-to-build adapter crate on plugin-sdk, so supporting a new
//! server starts from working code (OpenAI-style completions) rather than from the WIT file.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::args::PluginNewArgs;

const ADAPTER_TEMPLATE: &str = include_str!("scaffold/adapter.rs.tmpl");

/// The plugin-sdk version requirement a new adapter depends on: this llmb's own version
/// (`0.1.0` → `0.1`), published as `llmb-plugin-sdk` on crates.io.
fn sdk_version_requirement() -> String {
    let version = env!("CARGO_PKG_VERSION");
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}"),
        _ => version.to_string(),
    }
}

/// `llmb plugin new NAME`: creates the crate and says how to build and use it.
pub fn main(args: &PluginNewArgs) -> anyhow::Result<()> {
    let dir = new_adapter(args)?;
    println!(
        "Created {dir}. Build it with `cd {dir} && cargo build --release`, then run\n  \
         llmb bench --plugin {wasm} --backend {name} --base-url http://127.0.0.1:8000",
        dir = dir.display(),
        wasm = built_wasm(&dir, &args.name).display(),
        name = args.name
    );
    Ok(())
}

/// Writes the crate and returns its directory.
pub fn new_adapter(args: &PluginNewArgs) -> anyhow::Result<PathBuf> {
    let name = args.name.as_str();
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !valid {
        bail!("plugin name {name:?}: use lowercase letters, digits, '-', '_' or '.'");
    }
    let crate_name = format!("llmb-adapter-{}", name.replace(['.', '_'], "-"));
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} already exists and is not empty", dir.display());
    }
    // By version unless a path is asked for (a checkout, or a vendored copy of the package).
    let sdk_dependency = match &args.sdk_path {
        Some(path) => {
            anyhow::ensure!(
                path.join("Cargo.toml").exists(),
                "--sdk-path {}: no Cargo.toml there",
                path.display()
            );
            let path = path.canonicalize().unwrap_or(path.clone());
            format!("{{ path = {:?} }}", path.display().to_string())
        }
        None => format!("{:?}", sdk_version_requirement()),
    };
    let manifest = format!(
        r#"[package]
name = "{crate_name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
llmb-plugin-sdk = {sdk_dependency}
serde_json = "1"

[profile.release]
opt-level = 3
lto = true
codegen-units = 1

# A crate of its own, even when created inside another workspace.
[workspace]
"#
    );
    let write = |rel: &str, text: &str| -> anyhow::Result<()> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("Cargo.toml", &manifest)?;
    write(
        ".cargo/config.toml",
        "# Adapters are WebAssembly components.\n[build]\ntarget = \"wasm32-wasip2\"\n\n\
         # Inline more than LLVM's default: every WebAssembly call pays an epoch check (how llmb\n\
         # stops a spinning plugin), so the first-party adapters parse ~15% faster built this way.\n\
         [target.wasm32-wasip2]\nrustflags = [\"-Cllvm-args=-inline-threshold=1000\"]\n",
    )?;
    write(".gitignore", "target/\n")?;
    write(
        "src/lib.rs",
        &ADAPTER_TEMPLATE
            .replace("{{NAME}}", name)
            .replace("{{CRATE}}", &crate_name.replace('-', "_")),
    )?;
    Ok(dir)
}

/// The `.wasm` a scaffolded crate's `cargo build --release` produces.
pub fn built_wasm(dir: &Path, name: &str) -> PathBuf {
    let file = format!("llmb_adapter_{}.wasm", name.replace(['.', '-'], "_"));
    dir.join("target/wasm32-wasip2/release").join(file)
}
