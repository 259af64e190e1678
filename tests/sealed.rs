//! The sealed boundary between llmb and its plugins, and secrets that stay secret.
//!
//! Hostile plugins are built here from `tests/fixtures/hostile`: an adapter whose requests try to
//! leave `--base-url` or set identity headers (a second local listener must receive nothing), a
//! dataset reader that tries to open the file beside the one it was given, and an adapter that
//! reads the host's files (refused at load). Then a failing run against a server that echoes
//! everything it receives: no output file and no line the `llmb` process prints holds a secret.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use hyper::header::{HeaderName, HeaderValue};
use llmb_engine::plugin::{DatasetRequest, Registry};
use llmb_engine::transport::Target;

/// Builds the hostile fixtures once per test binary and returns the component `name`.
fn hostile_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir =
        BUILT.get_or_init(|| build_fixture("llmb-test-hostile", &["--examples"]).join("examples"));
    let wasm = dir.join(format!("{name}.wasm"));
    assert!(wasm.exists(), "{} missing", wasm.display());
    wasm
}

/// A listener that must stay silent: it counts connections and keeps whatever arrives.
struct Trap {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Trap {
    fn start() -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Trap { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn target(base_url: &str, user_headers: &[(&str, &str)], key: Option<&str>) -> Target {
    Target {
        base_url: base_url.into(),
        endpoint: None,
        headers: user_headers
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::try_from(*k).unwrap(),
                    HeaderValue::try_from(*v).unwrap(),
                )
            })
            .collect(),
        authorization: key.map(|k| Target::bearer(k).unwrap()),
        api_key_header: None,
        timeout: Duration::from_secs(5),
        framing: llmb_engine::plugin::backend::Framing::Sse,
        limits: Default::default(),
    }
}

#[test]
fn urls_are_built_from_the_parsed_base_and_a_checked_path() {
    let t = target("http://127.0.0.1:8000/prefix", &[], None);
    let ok = |path: &str| {
        t.request(path, "POST", &[], Vec::new())
            .map(|r| r.uri().to_string())
            .map_err(|e| e.message)
    };
    assert_eq!(
        ok("/v1/completions").unwrap(),
        "http://127.0.0.1:8000/prefix/v1/completions"
    );
    assert_eq!(
        ok("/v2/models/m/generate_stream?x=1").unwrap(),
        "http://127.0.0.1:8000/prefix/v2/models/m/generate_stream?x=1"
    );
    for (path, why) in [
        ("@127.0.0.1:9/x", "must start with /"),
        ("127.0.0.1:9/x", "must start with /"),
        ("", "must start with /"),
        ("//127.0.0.1:9/x", "starts with //"),
        ("http://127.0.0.1:9/x", "must start with /"),
        ("/http://127.0.0.1:9/x", "://"),
        ("/%2F%2F127.0.0.1:9/x", "percent-decoded"),
        ("/%2f/127.0.0.1:9/x", "percent-decoded"),
        ("/v1/../../admin", "\"..\""),
        ("/v1/%2e%2e/admin", "percent-decoded"),
        ("/x HTTP/1.1\r\nHost: evil\r\n\r\n", "contains"),
        ("/x%0d%0aHost:%20evil", "percent-decoded"),
        ("/\\\\evil/x", "contains '\\\\'"),
        ("/x#frag", "contains '#'"),
    ] {
        let err = ok(path).expect_err(path);
        assert!(
            err.contains("the adapter's path") && err.contains("refused") && err.contains(why),
            "{path:?}: {err}"
        );
    }

    // A base query (an Azure-style api-version) follows the adapter's; user-info never goes on
    // the wire as part of the URL (it becomes Basic authentication).
    let t = target(
        "https://bob:pw%21@example.test:8443/openai?api-version=1",
        &[],
        None,
    );
    let req = t
        .request("/v1/chat?stream=1", "POST", &[], Vec::new())
        .unwrap();
    assert_eq!(
        req.uri().to_string(),
        "https://example.test:8443/openai/v1/chat?stream=1&api-version=1"
    );
    assert_eq!(req.headers()["authorization"], "Basic Ym9iOnB3IQ==");
}

#[test]
fn adapter_headers_cannot_carry_identity_and_the_users_headers_win() {
    let t = target(
        "http://127.0.0.1:8000",
        &[("x-team", "user"), ("x-api-key", "user-key-1234")],
        Some("sk-the-users-key"),
    );
    for name in [
        "Host",
        "authorization",
        "Proxy-Authorization",
        "Cookie",
        "content-length",
        "Transfer-Encoding",
        "connection",
    ] {
        let err = t
            .request(
                "/v1/x",
                "POST",
                &[(name.into(), "planted".into())],
                Vec::new(),
            )
            .expect_err(name);
        assert_eq!(err.kind, "plugin");
        assert!(
            err.message
                .contains(&format!("may not set the {}", name.to_ascii_lowercase())),
            "{}",
            err.message
        );
    }
    let err = t
        .request(
            "/v1/x",
            "POST",
            &[("x-a".into(), "a\r\nb".into())],
            Vec::new(),
        )
        .unwrap_err();
    assert!(err.message.contains("x-a header value"), "{}", err.message);

    let req = t
        .request(
            "/v1/x",
            "POST",
            &[
                ("x-team".into(), "adapter".into()),
                ("X-Api-Key".into(), "adapter-key".into()),
                ("content-type".into(), "application/json".into()),
            ],
            Vec::new(),
        )
        .unwrap();
    assert_eq!(req.headers()["x-team"], "user");
    assert_eq!(req.headers()["x-api-key"], "user-key-1234");
    assert_eq!(req.headers()["content-type"], "application/json");
    assert_eq!(req.headers()["authorization"], "Bearer sk-the-users-key");
    assert_eq!(req.headers().get_all("x-team").iter().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_adapter_reaches_nothing_but_the_base_url() {
    let wasm = hostile_wasm("hostile_adapter");
    let trap = Trap::start();
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick_args(dir.path());
    args.plugins = vec![wasm];
    args.backend = "hostile".into();
    args.plugin_opts = vec![format!("target=127.0.0.1:{}", trap.port)];
    args.no_preflight = true;
    args.num_prompts = 24;
    args.api_key = Some("sk-hostile-test-key".into());
    let outcome = bench(&args).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(trap.connections(), 0, "the second listener was reached");

    assert_eq!(outcome.records.len(), 24);
    let messages: Vec<String> = outcome
        .records
        .iter()
        .map(|r| {
            let e = r.error.as_ref().expect("every hostile request fails");
            assert_eq!(e.kind, "plugin", "{}", e.message);
            e.message.clone()
        })
        .collect();
    let seen = |needle: &str| messages.iter().any(|m| m.contains(needle));
    for needle in [
        "must start with /",
        "starts with //",
        "once percent-decoded",
        "\"..\" segment",
        "contains '\\r'",
        "contains '\\\\'",
        "may not set the authorization header",
        "may not set the host header",
        "may not set the content-length header",
        "may not set the cookie header",
        // What the sandbox showed it of the host: no environment, no arguments.
        "saw env=[] args=[]",
    ] {
        assert!(seen(needle), "no error saying {needle:?}: {messages:#?}");
    }
    let here = std::env::current_dir().unwrap().display().to_string();
    assert!(
        !seen(&here),
        "the adapter saw the host's working directory: {messages:#?}"
    );
}

#[test]
fn a_backend_adapter_that_reads_files_is_refused_at_load() {
    let wasm = hostile_wasm("fs_adapter");
    let err = match Registry::load(std::slice::from_ref(&wasm)) {
        Ok(_) => panic!("an adapter importing wasi:filesystem was loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("imports `wasi:filesystem/")
            && err.contains("does not provide to backend plugins")
            && err.contains("no files, environment or network"),
        "{err}"
    );
}

fn reader_report(file: &Path) -> String {
    let registry = Registry::load(&[hostile_wasm("hostile_reader")]).unwrap();
    let reader = registry.dataset("hostile-reader").unwrap();
    let samples = reader
        .load(
            &DatasetRequest {
                seed: 0,
                count: 1,
                options: vec![("sibling".into(), "secret.txt".into())],
                file: Some(file.to_path_buf()),
            },
            Arc::new(llmb_engine::tokenizer::HostTokenizer::Words),
        )
        .unwrap();
    match &samples[0].prompt {
        llmb_engine::plugin::backend::Prompt::Text(t) => t.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_dataset_reader_sees_only_the_file_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("prompts.jsonl");
    std::fs::write(&named, "{\"prompt\": \"named content\"}\n").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "SIBLING-SECRET").unwrap();

    let report = reader_report(&named);
    assert!(
        report.contains("/data/prompts.jsonl: read \"{\\\"prompt\\\": \\\"named content\\\"}\\n\""),
        "{report}"
    );
    assert!(!report.contains("SIBLING-SECRET"), "{report}");
    for attempt in [
        "/data/secret.txt: refused",
        "/data/../secret.txt: refused",
        "/data/prompts.jsonl/../secret.txt: refused",
        "/secret.txt: refused",
        "\nsecret.txt: refused",
    ] {
        assert!(report.contains(attempt), "{attempt}: {report}");
    }
    assert!(report.contains("listing: [\"prompts.jsonl\"]"), "{report}");

    // Named through a symbolic link: the link's target is granted, still alone.
    #[cfg(unix)]
    {
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&named, &link).unwrap();
        let report = reader_report(&link);
        assert!(report.contains("named content"), "{report}");
        assert!(!report.contains("SIBLING-SECRET"), "{report}");
    }

    // A folder is granted whole only when the user names the folder.
    let report = reader_report(dir.path());
    assert!(
        report.contains("/data/secret.txt: read \"SIBLING-SECRET\""),
        "{report}"
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets

const API_KEY: &str = "sk-test-APIKEY-0123456789";
const HEADER_SECRET: &str = "hdr-SECRET-456789";
const EXPLICIT_SECRET: &str = "custom-SECRET-789012";
const URL_PASSWORD: &str = "urlpass-SECRET-3456";
const QUERY_SECRET: &str = "qkey-SECRET-6789";
const SECRETS: [&str; 5] = [
    API_KEY,
    HEADER_SECRET,
    EXPLICIT_SECRET,
    URL_PASSWORD,
    QUERY_SECRET,
];

/// A server that refuses everything with 401 and quotes the whole request back in its error
/// message (request line and every header), the worst case of a server echoing credentials.
fn echoing_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let mut have = buf.len() - end - 4;
                while have < length {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => have += n,
                    }
                }
                let echo = head.replace("\r\n", " | ");
                let body = serde_json::json!({
                    "error": {
                        "message": format!("Incorrect API key provided. You sent: {echo}"),
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    },
                    "detail": echo,
                })
                .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// Runs the real `llmb` binary; returns (success, stdout + stderr).
fn llmb(args: &[String], cwd: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmb"))
        .args(args)
        .current_dir(cwd)
        .env_remove("OPENAI_API_KEY")
        .env("LLMB_CACHE_DIR", cwd.join("cache"))
        .output()
        .expect("run llmb");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} shows the secret {secret:?}:\n{text}"
        );
    }
}

#[test]
fn secrets_never_appear_in_outputs_of_a_failing_run() {
    let port = echoing_server();
    let work = tempfile::tempdir().unwrap();
    let results = work.path().join("results");
    let base_url = format!("http://bob:{URL_PASSWORD}@127.0.0.1:{port}/?key={QUERY_SECRET}");
    let bench_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "bench",
            "--backend",
            "vllm",
            "--base-url",
            &base_url,
            "--model",
            "m",
            "--api-key",
            API_KEY,
            "--header",
            &format!("x-api-key={HEADER_SECRET}"),
            "--secret-header",
            &format!("X-Custom={EXPLICIT_SECRET}"),
            "--header",
            "x-team=visible-team",
            "--dataset-name",
            "random",
            "--num-prompts",
            "4",
            "--random-input-len",
            "8",
            "--random-output-len",
            "4",
            "--disable-tqdm",
            "--save-result",
            "--save-detailed",
            "--result-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(results.display().to_string());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // The pre-flight request fails: the run stops with the server's words, scrubbed.
    let (ok, preflight) = llmb(&bench_args(&[]), work.path());
    assert!(!ok, "{preflight}");
    assert!(
        preflight.contains("pre-flight request failed"),
        "{preflight}"
    );
    assert!(
        preflight.contains("visible-team"),
        "the echo reached the message: {preflight}"
    );
    assert_no_secret("llmb's output (pre-flight)", &preflight);

    // Every request fails; records, CSV and result JSON are written.
    let (ok, run) = llmb(&bench_args(&["--no-preflight"]), work.path());
    assert!(ok, "{run}");
    assert_no_secret("llmb's output (run)", &run);

    let (ok, report) = llmb(
        &["report".to_string(), results.display().to_string()],
        work.path(),
    );
    assert!(ok, "{report}");
    assert_no_secret("llmb report's output", &report);

    let mut files = Vec::new();
    files_under(&results, &mut files);
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for ext in [".records.jsonl", ".records.csv", ".json", "report.html"] {
        assert!(
            names.iter().any(|n| n.ends_with(ext)),
            "no {ext} file among {names:?}"
        );
    }
    let mut echoed = false;
    for file in &files {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        assert_no_secret(&file.display().to_string(), &text);
        echoed |= text.contains("visible-team");
    }
    assert!(
        echoed,
        "the server's echo is in the records (scrubbed, not dropped)"
    );
}
