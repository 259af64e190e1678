//! `vllm bench serve` compatibility: every flag of vLLM 0.32.0's help (the golden copy in
//! tests/fixtures/golden) parses as an `llmb bench` flag, and the flags llmb implements reach
//! the server (sampling parameters, LoRA modules, request ids, profiler calls, lengths), the
//! result file (metadata) or the run (ready check, self-timed).

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use llmb::args::{BenchArgs, Cli, Command};
use serde_json::{Value, json};

use common::{bench, quick_args, workspace_root};

const HELP: &str = "tests/fixtures/golden/vllm-bench-serve-0.32.0-help.txt";

/// One flag as vLLM's help shows it: its forms (`-h`, `--help`; `--self-timed`,
/// `--no-self-timed`), what follows the flag and the documented default.
#[derive(Debug, Clone)]
struct HelpFlag {
    forms: Vec<String>,
    /// `""` for a switch, `{a,b}` for choices, `METAVAR`, `[K=V ...]`, `X [X ...]`.
    value: String,
    default: Option<String>,
}

/// Every option entry of an argparse help text: lines indented by exactly two spaces that
/// start with `-`, with the help text (and its wrapped lines) that follows.
fn help_flags(text: &str) -> Vec<HelpFlag> {
    let mut flags: Vec<(HelpFlag, String)> = Vec::new();
    for line in text.lines() {
        let is_entry = line.starts_with("  -") && !line.starts_with("   ");
        if is_entry {
            let spec_and_help = &line[2..];
            let (spec, help) = match spec_and_help.find("  ") {
                Some(i) => (&spec_and_help[..i], spec_and_help[i..].trim()),
                None => (spec_and_help, ""),
            };
            let mut forms = Vec::new();
            let mut value = String::new();
            for part in spec.split(", ") {
                let (flag, rest) = part.split_once(' ').unwrap_or((part, ""));
                forms.push(flag.to_string());
                if !rest.is_empty() {
                    value = rest.to_string();
                }
            }
            flags.push((
                HelpFlag {
                    forms,
                    value,
                    default: None,
                },
                help.to_string(),
            ));
        } else if let Some((_, help)) = flags.last_mut()
            && line.starts_with("                ")
        {
            help.push(' ');
            help.push_str(line.trim());
        } else if !line.trim().is_empty() && !line.starts_with("  ") {
            // A group heading ends the previous entry's text.
            flags.push((
                HelpFlag {
                    forms: Vec::new(),
                    value: String::new(),
                    default: None,
                },
                String::new(),
            ));
        }
    }
    flags
        .into_iter()
        .filter(|(f, _)| !f.forms.is_empty())
        .map(|(mut f, help)| {
            f.default = documented_default(&help);
            f
        })
        .collect()
}

/// The `(default: X)` at the end of a help text, brackets inside X included.
fn documented_default(help: &str) -> Option<String> {
    let start = help.rfind("(default: ")? + "(default: ".len();
    let mut depth = 0i32;
    for (i, c) in help[start..].char_indices() {
        match c {
            '(' | '{' | '[' => depth += 1,
            ')' if depth == 0 => return Some(help[start..start + i].trim().to_string()),
            ')' | '}' | ']' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A plausible value for a metavar, from its name.
fn value_for(metavar: &str) -> String {
    let m = metavar.to_ascii_uppercase();
    let has = |s: &str| m.contains(s);
    if m.contains('=') {
        "key=value".into()
    } else if has("URL") {
        "http://127.0.0.1:8000".into()
    } else if m == "ENDPOINT" {
        "/v1/completions".into()
    } else if m == "GOODPUT" {
        "ttft:200".into()
    } else if has("PERCENTILE_METRICS") {
        "ttft,tpot".into()
    } else if has("PERCENTILES") || has("THRESHOLDS") {
        "50,90".into()
    } else if has("BODY") || has("KWARGS") || has("CONFIG") || has("PER_PROMPT") {
        r#"{"key": 1}"#.into()
    } else if has("TOP_P")
        || has("MIN_P")
        || has("PENALTY")
        || has("TEMPERATURE")
        || has("RATIO")
        || has("DISTANCE")
        || has("RATE")
        || has("RPS")
        || has("BURSTINESS")
        || has("MULTIPLIER")
        || has("AUDIO_LEN_SEC")
    {
        "0.5".into()
    } else if has("LEN")
        || has("NUM")
        || has("SIZE")
        || has("PORT")
        || has("SEED")
        || has("CONCURRENCY")
        || has("TOP_K")
        || has("LOGPROBS")
        || has("TIMEOUT")
        || has("ITEMS")
    {
        "8".into()
    } else {
        "value".into()
    }
}

/// Command lines to try for one form: every choice; for value lists none (when allowed), one
/// and two values; a documented default when there is one, else a value from the metavar.
fn candidate_values(flag: &HelpFlag) -> Vec<Vec<String>> {
    let v = flag.value.trim();
    if v.is_empty() {
        return vec![vec![]];
    }
    if let Some(choices) = v.strip_prefix('{').and_then(|c| c.strip_suffix('}')) {
        return choices.split(',').map(|c| vec![c.to_string()]).collect();
    }
    if let Some(inner) = v.strip_prefix('[').and_then(|c| c.strip_suffix(" ...]")) {
        let one = value_for(inner);
        return vec![
            vec![],
            vec![one.clone()],
            vec![one.clone(), one.replace('k', "k2")],
        ];
    }
    if let Some((first, _)) = v.split_once(" [") {
        let one = value_for(first);
        return vec![vec![one.clone()], vec![one.clone(), one]];
    }
    let useful_default = flag
        .default
        .clone()
        .filter(|d| !["None", "False", "True"].contains(&d.as_str()));
    let mut out = vec![vec![value_for(v)]];
    if let Some(d) = useful_default {
        out.push(vec![d]);
    }
    out
}

/// Flags vLLM only accepts together with others.
fn companions(form: &str) -> &'static [&'static str] {
    match form {
        "--ramp-up-strategy" => &["--ramp-up-start-rps", "1", "--ramp-up-end-rps", "10"],
        _ => &[],
    }
}

fn parse(words: &[String]) -> Result<Box<BenchArgs>, clap::Error> {
    let argv = ["llmb", "bench"]
        .into_iter()
        .map(String::from)
        .chain(words.iter().cloned());
    match Cli::try_parse_from(argv)?.command {
        Command::Bench(args) => Ok(args),
        _ => unreachable!("parsed as bench"),
    }
}

fn help_text() -> String {
    std::fs::read_to_string(workspace_root().join(HELP)).expect("the golden vLLM help")
}

#[test]
fn every_flag_of_vllm_bench_serve_parses() {
    let flags = help_flags(&help_text());
    let longs: BTreeSet<&str> = flags
        .iter()
        .flat_map(|f| &f.forms)
        .filter(|f| f.starts_with("--"))
        .map(String::as_str)
        .collect();
    let shorts: BTreeSet<&str> = flags
        .iter()
        .flat_map(|f| &f.forms)
        .filter(|f| !f.starts_with("--"))
        .map(String::as_str)
        .collect();
    assert!(
        longs.len() >= 100,
        "only {} flags found in {HELP}: the extraction is broken",
        longs.len()
    );
    assert!(shorts.contains("-h"), "{shorts:?}");
    for must in [
        "--top-p",
        "--lora-modules",
        "--no-self-timed",
        "--speed-bench-output-len",
    ] {
        assert!(longs.contains(must), "{must} not extracted");
    }

    let mut failures = Vec::new();
    let mut tried = 0;
    for flag in &flags {
        for form in &flag.forms {
            for values in candidate_values(flag) {
                let mut words = vec![form.clone()];
                words.extend(values);
                words.extend(companions(form).iter().map(|s| s.to_string()));
                // A flag after it proves the values were taken as the help says (a switch
                // that swallowed a word, or a list that ate the next flag, would break it).
                let sentinel = if form == "--num-prompts" {
                    "--num-warmups"
                } else {
                    "--num-prompts"
                };
                words.extend([sentinel.to_string(), "7".to_string()]);
                tried += 1;
                match parse(&words) {
                    Ok(args) => {
                        let got = if sentinel == "--num-prompts" {
                            args.num_prompts
                        } else {
                            args.num_warmups
                        };
                        if got != 7 {
                            failures.push(format!("{words:?}: {sentinel} was not parsed"));
                        }
                    }
                    Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {}
                    Err(e) => failures.push(format!("{words:?}: {}", e.to_string().trim())),
                }
            }
        }
    }
    eprintln!(
        "{} help entries, {} long and {} short forms, {tried} command lines",
        flags.len(),
        longs.len(),
        shorts.len()
    );
    assert!(tried > flags.len(), "{tried} command lines");
    assert!(
        failures.is_empty(),
        "{} of {tried} vLLM command lines rejected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn vllm_flags_land_where_they_mean_something() {
    let args = parse(
        &[
            "--input-len",
            "12",
            "--output-len",
            "5",
            "--random-input-len",
            "30",
            "--dataset-opt",
            "random-output-len=6",
            "--header",
            "a=1",
            "b=2",
            "--lora-modules",
            "x",
            "y",
            "--lora-assignment",
            "round-robin",
            "--top-k",
            "-1",
            "--no-self-timed",
        ]
        .map(String::from),
    )
    .unwrap();
    assert_eq!(args.headers, ["a=1", "b=2"]);
    assert_eq!(args.vllm.lora_modules, ["x", "y"]);
    assert_eq!(args.vllm.top_k, Some(-1));
    assert_eq!(args.vllm.self_timed(), Some(false));
    let request = llmb::config::dataset_request(&args).unwrap();
    let last = |key: &str| {
        request
            .options
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    // --input-len maps over --random-input-len (vLLM), an explicit --dataset-opt still wins.
    assert_eq!(last("random-input-len"), Some("12"));
    assert_eq!(last("sonnet-input-len"), Some("12"));
    assert_eq!(last("sharegpt-output-len"), Some("5"));
    assert_eq!(last("custom-output-len"), Some("5"));
    assert_eq!(last("random-output-len"), Some("6"));

    // Random assignment: seeded, a pure function of the request number, every module used.
    let random =
        parse(&["--lora-modules", "a", "b", "c", "--seed", "5"].map(String::from)).unwrap();
    let lora = random.vllm.lora(random.seed).unwrap();
    let picks: Vec<&str> = (0..60).map(|id| lora.pick(id)).collect();
    assert_eq!(picks, (0..60).map(|id| lora.pick(id)).collect::<Vec<_>>());
    assert!(
        ["a", "b", "c"].iter().all(|m| picks.contains(m)),
        "{picks:?}"
    );
    assert_ne!(picks[..6], ["a", "b", "c", "a", "b", "c"]);

    // Without the new flags nothing changes: defaults are neutral (recipes rely on it).
    let plain = BenchArgs::defaults();
    assert!(plain.vllm.notices(&plain.backend).is_empty());
    assert_eq!(plain.vllm.self_timed(), None);
    assert!(plain.vllm.lora(0).is_none());
    assert_eq!(
        llmb::config::vllm::request_extra_body(&plain).unwrap(),
        plain.extra_body
    );

    // Flags without effect say so, one line each.
    let noted = parse(
        &[
            "--trust-remote-code",
            "--plot-timeline",
            "--speed-bench-output-len",
            "9",
        ]
        .map(String::from),
    )
    .unwrap();
    let notices = noted.vllm.notices("vllm");
    assert_eq!(notices.len(), 3, "{notices:?}");
    for flag in ["--trust-remote-code", "--plot-timeline", "--speed-bench-*"] {
        assert!(
            notices
                .iter()
                .any(|n| n.contains(flag) && !n.contains('\n')),
            "{flag}: {notices:?}"
        );
    }
}

/// What the echo server received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    request_id: Option<String>,
    body: Value,
    at: Instant,
}

/// An OpenAI-completions server on 127.0.0.1 that records every request and answers with a
/// one-token completion (streamed or whole, as asked).
async fn echo_server(listener: tokio::net::TcpListener) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move { Ok::<_, Infallible>(answer(req, &log).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    seen
}

async fn answer(req: Request<Incoming>, log: &Mutex<Vec<Seen>>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    log.lock().unwrap().push(Seen {
        path: path.clone(),
        request_id,
        body: body.clone(),
        at: Instant::now(),
    });
    if !path.ends_with("/completions") {
        return Response::new(Full::new(Bytes::from_static(b"{}")));
    }
    let usage = json!({"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5});
    if body["stream"] == json!(true) {
        let chunk = json!({"id": "c", "object": "text_completion", "model": body["model"],
            "choices": [{"index": 0, "text": " hi", "finish_reason": "length"}]});
        let tail = json!({"id": "c", "object": "text_completion", "model": body["model"],
            "choices": [], "usage": usage});
        let sse = format!("data: {chunk}\n\ndata: {tail}\n\ndata: [DONE]\n\n");
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Full::new(Bytes::from(sse)))
            .unwrap()
    } else {
        let whole = json!({"id": "c", "object": "text_completion", "model": body["model"],
            "choices": [{"index": 0, "text": " hi", "finish_reason": "length"}], "usage": usage});
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(whole.to_string())))
            .unwrap()
    }
}

fn bench_argv(base_url: &str, dir: &std::path::Path, extra: &[&str]) -> Box<BenchArgs> {
    let mut words: Vec<String> = [
        "--backend",
        "vllm",
        "--base-url",
        base_url,
        "--model",
        "base-model",
        "--num-prompts",
        "6",
        "--random-input-len",
        "8",
        "--no-server-tokenize",
        "--disable-tqdm",
        "--result-dir",
        dir.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    words.extend(extra.iter().map(|s| s.to_string()));
    let mut args = parse(&words).unwrap();
    args.api_key = None;
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_lora_request_ids_metadata_and_profiler_reach_the_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let seen = echo_server(listener).await;
    let dir = tempfile::tempdir().unwrap();
    let args = bench_argv(
        &base_url,
        dir.path(),
        &[
            "--top-p",
            "0.5",
            "--top-k",
            "7",
            "--min-p",
            "0.05",
            "--frequency-penalty",
            "0.1",
            "--presence-penalty",
            "0.2",
            "--repetition-penalty",
            "1.1",
            "--logprobs",
            "2",
            "--extra-body",
            r#"{"presence_penalty": 0.9, "seed": 3}"#,
            "--output-len",
            "5",
            "--lora-modules",
            "sql-lora",
            "chat-lora",
            "--lora-assignment",
            "round-robin",
            "--request-id-prefix",
            "run7-",
            "--metadata",
            "tp=1",
            "version=0.3.3",
            "--profile",
            "--save-result",
            "--result-filename",
            "r.json",
        ],
    );
    let outcome = bench(&args).await;
    assert_eq!(
        outcome.metrics.completed, 6,
        "{:?}",
        outcome.records[0].error
    );

    let seen = seen.lock().unwrap().clone();
    let run: Vec<&Seen> = seen.iter().filter(|s| s.request_id.is_some()).collect();
    assert_eq!(run.len(), 6, "{seen:#?}");
    let mut ids: Vec<&str> = run
        .iter()
        .map(|s| s.request_id.as_deref().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["run7-0", "run7-1", "run7-2", "run7-3", "run7-4", "run7-5"]
    );
    for s in &run {
        assert_eq!(s.path, "/v1/completions");
        let b = &s.body;
        assert_eq!(b["top_p"], json!(0.5), "{b}");
        assert_eq!(b["top_k"], json!(7));
        assert_eq!(b["min_p"], json!(0.05));
        assert_eq!(b["frequency_penalty"], json!(0.1));
        // --extra-body wins over a sampling flag, as in vLLM.
        assert_eq!(b["presence_penalty"], json!(0.9));
        assert_eq!(b["seed"], json!(3));
        assert_eq!(b["repetition_penalty"], json!(1.1));
        assert_eq!(b["logprobs"], json!(2));
        assert_eq!(b["max_tokens"], json!(5));
        let n: u64 = s.request_id.as_deref().unwrap()["run7-".len()..]
            .parse()
            .unwrap();
        let lora = if n.is_multiple_of(2) {
            "sql-lora"
        } else {
            "chat-lora"
        };
        assert_eq!(b["model"], json!(lora), "request {n}");
    }
    let at = |path: &str| {
        seen.iter()
            .find(|s| s.path == path)
            .unwrap_or_else(|| panic!("no {path} in {seen:#?}"))
            .at
    };
    assert!(at("/start_profile") <= run.iter().map(|s| s.at).min().unwrap());
    assert!(at("/stop_profile") >= run.iter().map(|s| s.at).max().unwrap());

    let saved: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(saved["tp"], "1");
    assert_eq!(saved["version"], "0.3.3");
    assert_eq!(saved["completed"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_check_waits_for_a_server_that_starts_late() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base_url = format!("http://127.0.0.1:{port}");
    let seen = Arc::new(Mutex::new(None));
    let slot = seen.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        *slot.lock().unwrap() = Some(echo_server(listener).await);
    });
    let dir = tempfile::tempdir().unwrap();
    let args = bench_argv(&base_url, dir.path(), &["--ready-check-timeout-sec", "30"]);
    let started = Instant::now();
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.completed, 6);
    assert!(started.elapsed() >= Duration::from_millis(1400));
    let seen = seen.lock().unwrap().clone().expect("the server started");
    // The ready check's request, then the run's six (and any pre-flight request).
    assert!(seen.lock().unwrap().len() >= 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_self_timed_ignores_recorded_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.jsonl");
    std::fs::write(
        &path,
        "{\"prompt\": \"a b c\", \"timestamp\": 0}\n{\"prompt\": \"d e f\", \"timestamp\": 3600}\n",
    )
    .unwrap();
    let mut args = quick_args(dir.path());
    args.dataset_name = "custom".into();
    args.dataset_path = Some(path);
    args.num_prompts = 2;
    args.vllm.no_self_timed = true;
    let started = Instant::now();
    let outcome = bench(&args).await;
    assert_eq!(outcome.metrics.completed, 2);
    assert_ne!(outcome.info.pattern.mode, "trace");
    assert!(started.elapsed() < Duration::from_secs(60));
}
