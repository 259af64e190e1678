//! The plugin ecosystem end to end, through the `llmb` binary as a user drives it: the
//! first-party index in `registry/` matches this build; a scaffolded adapter is built, signed,
//! published to an index served over HTTP on 127.0.0.1, installed (refused until its key is
//! trusted), pinned in a lock file and benchmarked against the simulator; tampering with the
//! artifact, the manifest or the installed file is refused. The adapter is built on the
//! packaged plugin-sdk (`cargo package`, unpacked as a vendor would), not on our source tree.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

#[test]
fn first_party_registry_matches_the_embedded_plugins() {
    llmb::plugin_cmd::index(&llmb::args::PluginIndexArgs {
        dir: workspace_root().join("registry"),
        check: true,
    })
    .expect("registry/ is the index of exactly the plugins this build embeds");
}

/// Serves `root`'s files over HTTP/1.1 on 127.0.0.1 (GET only, one request per connection);
/// returns the base URL.
fn serve_static(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let file = root.join(path.trim_start_matches('/'));
            let reply = match std::fs::read(&file) {
                Ok(body) if !path.contains("..") => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend(body);
                    r
                }
                _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&reply);
        }
    });
    format!("http://{addr}")
}

/// Runs the llmb binary with its own plugin and key directories.
struct User {
    home: PathBuf,
}

impl User {
    fn llmb(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_llmb"))
            .args(args)
            .current_dir(&self.home)
            .env("LLMB_DATA_DIR", self.home.join("data"))
            .env("LLMB_CONFIG_DIR", self.home.join("config"))
            .env_remove("LLMB_PLUGIN_INDEX")
            .output()
            .expect("run llmb")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.llmb(args);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "llmb {args:?} failed:\n{text}");
        text
    }

    fn refused(&self, args: &[&str]) -> String {
        let out = self.llmb(args);
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "llmb {args:?} should have failed");
        text
    }
}

/// `cargo package`s plugin-sdk and unpacks the `.crate` under `dir`, as a vendor without our
/// source tree would get it; returns the unpacked crate.
fn packaged_sdk(dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = dir.join("package-target");
    let status = Command::new(&cargo)
        .current_dir(workspace_root())
        // Verified: cargo builds the packaged crate on its own, as crates.io would.
        .args(["package", "-p", "llmb-plugin-sdk", "--allow-dirty"])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo package");
    assert!(status.success(), "cargo package -p llmb-plugin-sdk failed");
    let version = env!("CARGO_PKG_VERSION");
    let archive = target.join(format!("package/llmb-plugin-sdk-{version}.crate"));
    let vendor = dir.join("vendor");
    std::fs::create_dir_all(&vendor).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&vendor)
        .status()
        .expect("run tar");
    assert!(status.success(), "cannot unpack {}", archive.display());
    let sdk = vendor.join(format!("llmb-plugin-sdk-{version}"));
    assert!(
        sdk.join("wit/llmb-plugin.wit").exists(),
        "the package carries the WIT"
    );
    sdk
}

fn scaffold_and_build(dir: &Path) -> PathBuf {
    let crate_dir = dir.join("my-server");
    // By version unless asked: what a vendor gets from crates.io.
    let by_version = dir.join("by-version");
    llmb::scaffold::new_adapter(&llmb::args::PluginNewArgs {
        name: "my-server".into(),
        dir: Some(by_version.clone()),
        sdk_path: None,
    })
    .unwrap();
    let manifest = std::fs::read_to_string(by_version.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("llmb-plugin-sdk = \"0.1\""), "{manifest}");
    // Built here from the packaged SDK, vendored by path.
    let created = llmb::scaffold::new_adapter(&llmb::args::PluginNewArgs {
        name: "my-server".into(),
        dir: Some(crate_dir.clone()),
        sdk_path: Some(packaged_sdk(dir)),
    })
    .unwrap();
    assert_eq!(created, crate_dir);
    // The same dependency versions as the workspace, so the build works offline.
    std::fs::copy(
        workspace_root().join("Cargo.lock"),
        crate_dir.join("Cargo.lock"),
    )
    .unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&crate_dir)
        .args(["build", "--release", "--offline"])
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run cargo");
    assert!(status.success(), "the scaffolded adapter does not build");
    let again = llmb::scaffold::new_adapter(&llmb::args::PluginNewArgs {
        name: "my-server".into(),
        dir: Some(crate_dir.clone()),
        sdk_path: None,
    });
    assert!(format!("{:#}", again.unwrap_err()).contains("not empty"));
    let wasm = llmb::scaffold::built_wasm(&crate_dir, "my-server");
    assert!(wasm.exists(), "{}", wasm.display());
    wasm
}

#[test]
fn a_scaffolded_adapter_is_signed_published_installed_locked_and_benchmarked() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = scaffold_and_build(dir.path());
    let user = User {
        home: dir.path().to_path_buf(),
    };
    let wasm = wasm.to_str().unwrap();

    // The publisher: a key pair, and the signed plugin in an index folder served over HTTP.
    let keygen = user.ok(&["plugin", "keygen", "-o", "publisher.key"]);
    let public = keygen
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("keygen prints the public key")
        .trim()
        .to_string();
    let published = user.ok(&[
        "plugin",
        "publish",
        wasm,
        "--index",
        "index",
        "--key",
        "publisher.key",
        "--license",
        "MIT",
    ]);
    assert!(published.contains("signed"), "{published}");
    let url = serve_static(dir.path().join("index"));

    // The user: found by search, refused until the key is trusted, then installed.
    let found = user.ok(&["plugin", "search", "my-server", "--index", &url]);
    assert!(
        found.contains("my-server") && found.contains("yes"),
        "{found}"
    );
    let untrusted = user.refused(&["plugin", "install", "my-server", "--index", &url]);
    assert!(untrusted.contains("a key you do not trust"), "{untrusted}");
    assert!(
        !dir.path().join("data/plugins/my-server").exists(),
        "nothing is stored before the checks pass"
    );
    user.ok(&["plugin", "trust", &public, "--name", "publisher"]);
    let installed = user.ok(&["plugin", "install", "my-server@0.1.0", "--index", &url]);
    assert!(installed.contains("signed by trusted key"), "{installed}");
    let listed = user.ok(&["plugin", "list"]);
    assert!(
        listed.contains("my-server") && listed.contains(&url),
        "{listed}"
    );
    user.ok(&["plugin", "verify"]);

    // Pinned in a lock file and benchmarked by name (found among the installed plugins);
    // the result names the plugins and their digests.
    let locked = user.ok(&["plugin", "lock", "--backend", "my-server"]);
    assert!(
        locked.contains("pinned backend my-server 0.1.0"),
        "{locked}"
    );
    let run = user.ok(&[
        "--backend",
        "my-server",
        "--lock",
        "llmb.lock",
        "--num-prompts",
        "4",
        "--random-output-len",
        "4",
        "--ignore-eos",
        "--save-result",
        "--result-dir",
        "results",
        "--result-filename",
        "run.json",
    ]);
    assert!(
        run.contains("Successful requests:                     4"),
        "{run}"
    );
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("results/run.json")).unwrap())
            .unwrap();
    let plugins = result["llmb"]["plugins"].as_array().expect("llmb.plugins");
    let lock = std::fs::read_to_string(dir.path().join("llmb.lock")).unwrap();
    for p in plugins {
        assert!(
            lock.contains(p["sha256"].as_str().unwrap()),
            "{p} is not the pinned plugin"
        );
    }
    assert!(plugins.iter().any(|p| p["name"] == "my-server"));

    // Tampering: the artifact on the index, then the manifest to match it, then the
    // installed file.
    let artifact = dir
        .path()
        .join("index/plugins/my-server/my-server-0.1.0.wasm");
    let mut bytes = std::fs::read(&artifact).unwrap();
    bytes.extend_from_slice(b"\0");
    std::fs::write(&artifact, &bytes).unwrap();
    let e = user.refused(&["plugin", "install", "my-server", "--index", &url]);
    assert!(e.contains("sha256 mismatch"), "{e}");
    let manifest_path = dir.path().join("index/plugins/my-server/0.1.0.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["sha256"] = llmb_registry::sha256_hex(&bytes).into();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let e = user.refused(&["plugin", "install", "my-server", "--index", &url]);
    assert!(e.contains("signature does not match"), "{e}");
    let installed_wasm = dir.path().join("data/plugins/my-server/0.1.0/plugin.wasm");
    let good = std::fs::read(&installed_wasm).unwrap();
    std::fs::write(&installed_wasm, &bytes).unwrap();
    let e = user.refused(&["plugin", "verify"]);
    assert!(e.contains("1 installed plugin(s) failed"), "{e}");
    let e = user.refused(&[
        "--backend",
        "my-server",
        "--lock",
        "llmb.lock",
        "--num-prompts",
        "2",
    ]);
    assert!(e.contains("plugin.wasm"), "{e}");
    // A run whose plugin is not the one the lock pins is refused before anything is sent.
    std::fs::write(&installed_wasm, &good).unwrap();
    let lock_path = dir.path().join("llmb.lock");
    std::fs::write(
        &lock_path,
        lock.replace("version = \"0.1.0\"", "version = \"0.0.9\""),
    )
    .unwrap();
    let e = user.refused(&[
        "--backend",
        "my-server",
        "--lock",
        "llmb.lock",
        "--num-prompts",
        "2",
    ]);
    assert!(e.contains("but the lock file llmb.lock pins 0.0.9"), "{e}");

    user.ok(&["plugin", "remove", "my-server"]);
    assert!(!dir.path().join("data/plugins/my-server").exists());
}

#[test]
fn bench_is_the_default_command_and_embedded_plugins_export() {
    let dir = tempfile::tempdir().unwrap();
    let user = User {
        home: dir.path().to_path_buf(),
    };
    let out = user.ok(&["plugin", "export", "tgi", "-o", "tgi.wasm"]);
    let bytes = std::fs::read(dir.path().join("tgi.wasm")).unwrap();
    assert!(out.contains(&llmb_registry::sha256_hex(&bytes)), "{out}");
    // The card's command line: a plugin file and no subcommand.
    let run = user.ok(&[
        "--plugin",
        "tgi.wasm",
        "--backend",
        "openai-chat",
        "--num-prompts",
        "3",
        "--random-output-len",
        "4",
    ]);
    assert!(
        run.contains("Successful requests:                     3"),
        "{run}"
    );
    // A bare .wasm has no signature: refused unless the user says so.
    let e = user.refused(&["plugin", "install", "tgi.wasm"]);
    assert!(e.contains("--allow-unsigned"), "{e}");
    let ok = user.ok(&["plugin", "install", "tgi.wasm", "--allow-unsigned"]);
    assert!(ok.contains("unsigned"), "{ok}");
}
