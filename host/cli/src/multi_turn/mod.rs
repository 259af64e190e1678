//! `llmb multi-turn`: vLLM's `benchmarks/multi_turn/benchmark_serving_multi_turn.py`, drop-in,
//! on llmb's engine. The same command line (`-i conversations.json -m MODEL -u URL -p 10 -k 50
//! --request-rate 5 --max-num-requests 1000 --excel-output`), the same client model (each of
//! `-p` clients keeps its share of `-k` conversations going and sends turn k with the server's
//! real answers in the history), the same statistics table, the per-request `--stats-json-output`,
//! an `.xlsx` workbook, and `-o` with the answers. Requests are sent and timed by
//! [`llmb_engine::transport`] through the openai-chat adapter.

mod client;
pub mod excel;
pub mod input;
pub mod stats;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue};
use serde::Serialize;
use tokio::sync::watch;

pub use crate::args::multi_turn::{ConversationSampling, MultiTurnArgs};
pub use input::{Conversation, Message};
pub use stats::{RequestStats, Summary};

use client::{ClientConfig, Engine, run_clients};
use excel::CellValue;
use llmb_engine::plugin::Registry;
use llmb_engine::plugin::backend::BackendPool;
use llmb_engine::records::{RecordWriter, RequestRecord};
use llmb_engine::tokenizer::HostTokenizer;
use llmb_engine::transport::{self, Target};

/// Everything a run produced, for callers that look further than the files.
pub struct MultiTurnOutcome {
    /// Measured requests (warmups left out), in the order they were collected.
    pub stats: Vec<RequestStats>,
    /// Every request sent (warmup step included, marked), in completion order.
    pub records: Vec<RequestRecord>,
    /// The conversations that finished, with the server's answers (what `-o` writes).
    pub conversations: Vec<Conversation>,
    /// One per `--warmup-percentages` value.
    pub summaries: Vec<Summary>,
    pub excel_path: Option<PathBuf>,
    pub warmup_runtime_sec: Option<f64>,
    pub benchmark_runtime_sec: f64,
}

/// `llmb multi-turn`: Ctrl-C stops the clients after their current request and still reports.
pub async fn main(args: MultiTurnArgs) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
        }
    });
    run(&args, rx).await.map(|_| ())
}

/// Runs the benchmark (and its warmup step), prints the report and writes the files asked for.
pub async fn run(
    args: &MultiTurnArgs,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<MultiTurnOutcome> {
    let simulator = if args.sim {
        let mut config = crate::sim::sim_config(&args.sim_timing, args.seed);
        config.model = args.api_model().to_string();
        config.dialect = Some("openai-chat".into());
        Some(llmb_sim::start_dedicated(config, "127.0.0.1:0".parse()?)?)
    } else {
        None
    };
    let base_url = match &simulator {
        Some(s) => s.base_url(),
        None => args.url.trim_end_matches('/').to_string(),
    };
    let result = run_against(args, &base_url, stop).await;
    if let Some(s) = simulator {
        s.shutdown().await;
    }
    result
}

/// The parameters vLLM's report and workbook start with.
fn test_params(args: &MultiTurnArgs, num_conversations: usize) -> Vec<(String, CellValue)> {
    let mut p = vec![
        ("model".to_string(), CellValue::Text(args.model.clone())),
        (
            "num_clients".into(),
            CellValue::Number(args.num_clients as f64),
        ),
        (
            "num_conversations".into(),
            CellValue::Number(num_conversations as f64),
        ),
        (
            "active_conversations".into(),
            args.max_active_conversations
                .map_or(CellValue::Empty, |k| CellValue::Number(k as f64)),
        ),
        ("seed".into(), CellValue::Number(args.seed as f64)),
    ];
    if args.limit_min_tokens > 0 {
        p.push((
            "min_tokens".into(),
            CellValue::Number(args.limit_min_tokens as f64),
        ));
    }
    if args.limit_max_tokens > 0 {
        p.push((
            "max_tokens".into(),
            CellValue::Number(args.limit_max_tokens as f64),
        ));
    }
    p
}

fn cell_text(v: &CellValue) -> String {
    match v {
        CellValue::Text(s) => s.clone(),
        CellValue::Number(n) => format!("{n}"),
        CellValue::Empty => "None".into(),
    }
}

/// The tokenizer: `--tokenizer`, else `--model` when it names a tokenizer.json or a folder
/// holding one, else one token per word.
fn load_tokenizer(args: &MultiTurnArgs) -> anyhow::Result<HostTokenizer> {
    if let Some(path) = &args.tokenizer {
        return HostTokenizer::load(Some(path));
    }
    let m = Path::new(&args.model);
    if (m.is_dir() && m.join("tokenizer.json").is_file())
        || (m.is_file() && m.extension().is_some_and(|e| e == "json"))
    {
        return HostTokenizer::load(Some(m));
    }
    eprintln!(
        "note: no tokenizer for {:?} here (llmb does not download tokenizers; see --tokenizer): \
         counting one token per word; the server's usage counts are used where it reports them",
        args.model
    );
    Ok(HostTokenizer::Words)
}

fn user_headers(args: &MultiTurnArgs) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    args.headers
        .iter()
        .map(|h| {
            let (k, v) = crate::args::multi_turn::parse_header(h)?;
            let mut value = HeaderValue::try_from(v.as_str())
                .with_context(|| format!("--header {k}: invalid value"))?;
            if llmb_engine::secrets::is_secret_header(&k) {
                llmb_engine::secrets::register(&v);
                value.set_sensitive(true);
            }
            Ok((
                HeaderName::try_from(k.as_str())
                    .with_context(|| format!("--header: invalid name {k:?}"))?,
                value,
            ))
        })
        .collect()
}

/// vLLM's `get_server_info`: the version (when the route exists) and the models with their
/// `max_model_len`. Fails when nothing answers at the URL.
async fn server_info(client: &transport::HttpClient, target: &Target) -> anyhow::Result<()> {
    let shown = llmb_engine::secrets::redact_url(&target.base_url);
    eprintln!("Collecting information from server: {shown}");
    let shown = shown.as_str();
    let get = |path: &str| {
        let uri: hyper::Uri = format!("{}{path}", target.base_url).parse()?;
        let mut req = hyper::Request::get(uri);
        for (k, v) in &target.headers {
            req = req.header(k, v);
        }
        if let Some(auth) = &target.authorization {
            req = req.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        anyhow::Ok(req.body(Default::default())?)
    };
    let fetch = |path: &'static str| async move {
        let resp = tokio::time::timeout(Duration::from_secs(30), client.request(get(path)?))
            .await
            .with_context(|| format!("{shown}: no answer within 30 s"))?
            .with_context(|| format!("cannot reach {shown} (is the server running?)"))?;
        let ok = resp.status().is_success();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((ok, body))
    };
    let (ok, body) = fetch("/version").await?;
    if ok {
        eprintln!("Server version: {}", String::from_utf8_lossy(&body).trim());
    }
    let (ok, body) = fetch("/v1/models").await?;
    let models: Option<serde_json::Value> =
        ok.then(|| serde_json::from_slice(&body).ok()).flatten();
    match models.as_ref().and_then(|m| m["data"].as_array()) {
        Some(list) => {
            eprintln!("Models:");
            for m in list {
                let max_len = m
                    .get("max_model_len")
                    .map_or("N/A".to_string(), |v| v.to_string());
                eprintln!("\tmodel_id={}, max_model_len={max_len}", m["id"]);
            }
        }
        None => eprintln!("Failed to get models"),
    }
    Ok(())
}

/// `-o`: the conversations as a JSON list of `{"id", "messages"}`, indented like Python's
/// `json.dump(indent=4)`.
fn write_conversations(path: &Path, conversations: &[Conversation]) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    conversations.serialize(&mut ser)?;
    out.push(b'\n');
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

async fn run_against(
    args: &MultiTurnArgs,
    base_url: &str,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<MultiTurnOutcome> {
    let t0 = Instant::now();
    llmb_engine::secrets::register_url(base_url);
    eprintln!(
        "Input parameters: url={}, model={}, num_clients={}",
        llmb_engine::secrets::redact_url(base_url),
        args.model,
        args.num_clients
    );
    if args.verify_output {
        eprintln!("Verify is enabled");
    }
    // Warmup percentages apply only without the warmup step.
    let warmup_percentages = if args.warmup_step {
        vec![0.0]
    } else {
        crate::args::multi_turn::parse_warmup_percentages(&args.warmup_percentages)?
    };
    ensure!(
        args.request_rate >= 0.0 && args.request_rate.is_finite(),
        "--request-rate must be a non-negative number"
    );
    ensure!(
        base_url.starts_with("http://") || base_url.starts_with("https://"),
        "--url {base_url}: expected an http:// or https:// URL"
    );
    let tokenizer = Arc::new(load_tokenizer(args)?);

    let registry = Registry::load(&[])?;
    let pool = BackendPool::new(
        registry.backend("openai-chat")?,
        vec![("max-tokens-field".into(), "max_tokens".into())],
    )?;
    let info = pool.info().clone();
    let target = Target {
        base_url: base_url.to_string(),
        endpoint: None,
        headers: user_headers(args)?,
        authorization: args.api_key.as_deref().map(Target::bearer).transpose()?,
        api_key_header: None,
        timeout: Duration::from_secs(120),
        framing: info.framing,
        limits: Default::default(),
    };
    let http = transport::client(args.num_clients.max(1), None, info.http2)?;
    server_info(&http, &target).await?;

    let input = input::load(&args.input_file, &tokenizer, args.seed)?;
    let mut conversations = input.conversations;
    if let Some(m) = args.max_turns {
        ensure!(m >= 1, "Max turns must be a positive number");
        eprintln!("Max turns per conversation is limited to {m}");
    }

    // vLLM's get_client_config.
    ensure!(
        args.num_clients >= 1,
        "Number of clients must be a positive number"
    );
    ensure!(
        conversations.len() >= args.num_clients,
        "Number of conversations must be equal or larger than the number of clients"
    );
    let max_req_per_client = match args.max_num_requests {
        Some(n) => {
            let per = n / args.num_clients;
            ensure!(
                per >= 1,
                "Number of requests should be at least one per client"
            );
            Some(per)
        }
        None => None,
    };
    let max_active = args.max_active_conversations.unwrap_or(args.num_clients);
    ensure!(
        max_active <= conversations.len(),
        "Max active conversations {max_active} must be equal or less than the total number of \
         conversations"
    );
    let per_client_active = max_active / args.num_clients;
    ensure!(
        per_client_active >= 1,
        "Max active conversations {max_active} must be equal or greater than the number of clients"
    );
    if args.limit_min_tokens > 0 || args.limit_max_tokens > 0 {
        ensure!(
            args.limit_min_tokens >= 1 && args.limit_max_tokens >= 1,
            "Invalid min/max tokens limits (both limits should be provided)"
        );
        ensure!(
            args.limit_min_tokens <= args.limit_max_tokens,
            "Invalid min/max tokens limits (min should not be larger than max)"
        );
    }
    if args.request_timeout_sec <= 0 {
        bail!("Request timeout must be a positive number");
    }
    pool.prewarm(args.num_clients.clamp(1, 1024))?;

    let engine = Arc::new(Engine {
        pool,
        client: http,
        target,
        tokenizer,
        t0,
        next_id: AtomicU64::new(0),
        model: args.api_model().to_string(),
        stream: !args.no_stream,
        limit_min_tokens: args.limit_min_tokens,
        limit_max_tokens: args.limit_max_tokens,
        timeout_sec: args.request_timeout_sec as u64,
        send_conversation_id: args.send_conversation_id,
        verify_output: args.verify_output,
        print_content: args.print_content,
        verbose: args.verbose,
    });
    let client_cfg = ClientConfig {
        seed: args.seed,
        max_num_requests: max_req_per_client,
        skip_first_turn: args.warmup_step,
        max_turns: args.max_turns,
        max_active: per_client_active,
        sampling: args.conversation_sampling,
        request_rate: args.request_rate,
        max_retries: args.max_retries,
        warmup: false,
    };
    let mut writer = args
        .records
        .as_deref()
        .map(RecordWriter::create)
        .transpose()?;
    let mut records = Vec::new();

    let mut warmup_runtime_sec = None;
    if args.warmup_step {
        // Only the first user turn of every conversation, one conversation per client at a
        // time, every client to the end.
        let cfg = ClientConfig {
            skip_first_turn: false,
            max_turns: Some(1),
            max_active: 1,
            warmup: true,
            ..client_cfg.clone()
        };
        eprintln!("Warmup start");
        let start = Instant::now();
        let out = run_clients(
            &engine,
            &cfg,
            args.num_clients,
            false,
            conversations,
            stop.clone(),
            &mut writer,
        )
        .await?;
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "Warmup runtime: {secs:.3} sec ({:.3} ms)\nWarmup done",
            secs * 1e3
        );
        warmup_runtime_sec = Some(secs);
        conversations = out.finished;
        records.extend(out.records);
        ensure!(
            !out.interrupted,
            "interrupted during the warmup step: nothing measured"
        );
    }
    let num_conversations = conversations.len();

    let start = Instant::now();
    let out = run_clients(
        &engine,
        &client_cfg,
        args.num_clients,
        !args.no_early_stop,
        conversations,
        stop,
        &mut writer,
    )
    .await?;
    let benchmark_runtime_sec = start.elapsed().as_secs_f64();
    records.extend(out.records);
    eprintln!(
        "All clients finished, benchmark runtime: {benchmark_runtime_sec:.3} sec ({:.3} ms), \
         requests per second: {:.3}",
        benchmark_runtime_sec * 1e3,
        out.stats.len() as f64 / benchmark_runtime_sec
    );
    if let Some(w) = warmup_runtime_sec {
        eprintln!(
            "Warmup runtime: {w:.3} sec ({:.3} ms)\nTotal runtime (including warmup): {:.3} sec",
            w * 1e3,
            benchmark_runtime_sec + w
        );
    }
    let failed = records.iter().filter(|r| !r.success).count();
    if failed > 0 {
        eprintln!("{failed} requests failed (left out of the statistics; see the records)");
    }

    // Statistics, as vLLM's process_statistics.
    let params = test_params(args, num_conversations);
    let text_params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.clone(), cell_text(v)))
        .collect();
    let gen_params = input.generated.as_ref().map(|g| g.params());
    let raw = stats::RawData::new(&out.stats, args.verbose);
    let summaries = stats::summarise(&raw, &warmup_percentages, warmup_runtime_sec);
    let mut excel_path = None;
    if out.stats.is_empty() {
        eprintln!("No samples to process");
    } else {
        eprintln!("Processing {} samples...", out.stats.len());
        stats::print_report(
            &text_params,
            gen_params.as_deref(),
            &summaries,
            warmup_percentages.len(),
        );
        if args.excel_output || args.excel_file.is_some() {
            let path = args
                .excel_file
                .clone()
                .unwrap_or_else(|| excel::default_file_name(args.num_clients));
            excel::write(&path, &params, gen_params.as_deref(), &summaries, &raw)?;
            eprintln!("Client metrics exported to file: {}", path.display());
            excel_path = Some(path);
        }
    }
    if let Some(path) = &args.stats_json_output {
        eprintln!("Writing per-request stats JSON: {}", path.display());
        stats::write_json(path, &out.stats)?;
    }
    if let Some(path) = &args.output_file {
        eprintln!("Writing conversations file: {}", path.display());
        write_conversations(path, &out.finished)?;
    }
    if let Some(w) = &writer {
        eprintln!("Records: {}", w.path().display());
    }
    Ok(MultiTurnOutcome {
        stats: out.stats,
        records,
        conversations: out.finished,
        summaries,
        excel_path,
        warmup_runtime_sec,
        benchmark_runtime_sec,
    })
}
