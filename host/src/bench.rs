//! One benchmark run, end to end: plugins and dataset, the arrival schedule, requests in flight
//! under an optional concurrency cap, records streamed to disk, then metrics and the report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hyper::header::{HeaderName, HeaderValue};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::cli::{BenchArgs, PluginsArgs, SimArgs, SimTiming, split_kv};
use crate::metrics::{BenchmarkMetrics, MetricsConfig};
use crate::plugin::backend::{BackendPool, GenRequest};
use crate::plugin::dataset::Sample;
use crate::plugin::{DatasetRequest, Registry};
use crate::records::{RecordWriter, RequestError, RequestRecord};
use crate::report::{self, RunInfo};
use crate::sim::{self, SimConfig, SimHandle};
use crate::tokenizer::HostTokenizer;
use crate::transport::{self, Exchange, Target};

/// How long in-flight requests may finish after Ctrl-C before they are cut off.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// What a finished run produced.
pub struct BenchOutcome {
    pub info: RunInfo,
    pub metrics: BenchmarkMetrics,
    pub metrics_config: MetricsConfig,
    pub records: Vec<RequestRecord>,
    pub records_path: Option<PathBuf>,
    pub result_path: Option<PathBuf>,
    /// CPU time the whole process used while requests were in flight.
    pub client_cpu: Duration,
}

/// `llmb bench`: run, print the report, save files.
pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\nInterrupted: no new requests; waiting up to {INTERRUPT_GRACE:?} for those in flight"
            );
            let _ = stop_tx.send(true);
        }
    });
    let outcome = run(&args, stop_rx).await?;
    let mut stdout = std::io::stdout().lock();
    report::print_console(
        &outcome.info,
        &outcome.metrics,
        &outcome.metrics_config,
        &mut stdout,
    )?;
    if let Some(p) = &outcome.records_path {
        println!("Per-request records: {}", p.display());
    }
    if let Some(p) = &outcome.result_path {
        println!("Result: {}", p.display());
    }
    Ok(())
}

/// `llmb plugins`.
pub fn list_plugins(args: &PluginsArgs) -> anyhow::Result<()> {
    let registry = Registry::load(&args.plugins)?;
    println!(
        "{:<14} {:<8} {:<6} {:<10} {:<64}  description",
        "name", "kind", "wit", "origin", "sha256"
    );
    for p in registry.summaries() {
        println!(
            "{:<14} {:<8} {:<6} {:<10} {:<64}  {}",
            p.name,
            p.kind.as_str(),
            p.wit_version,
            p.origin.to_string(),
            p.sha256,
            p.description
        );
    }
    Ok(())
}

/// `llmb sim`: serve until Ctrl-C.
pub async fn serve_sim(args: SimArgs) -> anyhow::Result<()> {
    let addr = format!("{}:{}", args.host, args.port)
        .parse()
        .with_context(|| format!("invalid address {}:{}", args.host, args.port))?;
    let mut config = sim_config(&args.timing, args.seed);
    config.model = args.model.clone();
    config.api_key = args.api_key.clone();
    let handle = sim::start(config, addr).await?;
    eprintln!(
        "llmb simulator serving model {:?} on {}",
        args.model,
        handle.base_url()
    );
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}

pub fn sim_config(t: &SimTiming, seed: u64) -> SimConfig {
    SimConfig {
        ttft_ms: t.ttft_ms,
        itl_ms: t.itl_ms,
        jitter: t.jitter,
        seed,
        batch_slowdown: t.batch_slowdown,
        prefill_us_per_token: t.prefill_us_per_token,
        ..SimConfig::default()
    }
}

fn metrics_config(args: &BenchArgs) -> anyhow::Result<MetricsConfig> {
    let percentile_metrics: Vec<String> = args
        .percentile_metrics
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for m in &percentile_metrics {
        if !["ttft", "tpot", "itl", "e2el"].contains(&m.as_str()) {
            bail!("--percentile-metrics: unknown metric {m:?} (use ttft, tpot, itl, e2el)");
        }
    }
    let metric_percentiles = args
        .metric_percentiles
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| {
                    anyhow::anyhow!("--metric-percentiles: {s:?} is not a percentile in [0, 100]")
                })
        })
        .collect::<anyhow::Result<Vec<f64>>>()?;
    Ok(MetricsConfig {
        percentile_metrics,
        metric_percentiles,
        goodput_slos_ms: MetricsConfig::parse_goodput(&args.goodput)?,
    })
}

fn dataset_request(args: &BenchArgs) -> DatasetRequest {
    let mut options = vec![
        (
            "random-input-len".to_string(),
            args.random_input_len.to_string(),
        ),
        (
            "random-output-len".to_string(),
            args.random_output_len.to_string(),
        ),
        (
            "random-range-ratio".to_string(),
            args.random_range_ratio.to_string(),
        ),
        (
            "random-prefix-len".to_string(),
            args.random_prefix_len.to_string(),
        ),
        (
            "custom-output-len".to_string(),
            args.custom_output_len.to_string(),
        ),
    ];
    if args.disable_shuffle {
        options.push(("disable-shuffle".into(), "true".into()));
    }
    DatasetRequest {
        seed: args.seed,
        count: args.num_prompts as u64,
        options,
        file: args.dataset_path.clone(),
    }
}

fn user_headers(args: &BenchArgs) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    args.headers
        .iter()
        .map(|h| {
            let (k, v) = split_kv("--header", h)?;
            let name = HeaderName::try_from(k.as_str())
                .with_context(|| format!("--header: invalid name {k:?}"))?;
            let value = HeaderValue::try_from(v.as_str())
                .with_context(|| format!("--header {k}: invalid value"))?;
            Ok((name, value))
        })
        .collect()
}

/// Fails fast, with the address in the message, when nothing listens there.
async fn check_reachable(base_url: &str) -> anyhow::Result<()> {
    let uri: hyper::Uri = base_url
        .parse()
        .with_context(|| format!("--base-url {base_url} is not a URL"))?;
    let host = uri
        .host()
        .with_context(|| format!("--base-url {base_url} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!("cannot reach {base_url}: {e} (is the server running?)"),
        Err(_) => bail!("cannot reach {base_url}: no answer within 10 s"),
    }
}

async fn discover_model(client: &transport::HttpClient, target: &Target) -> anyhow::Result<String> {
    use http_body_util::BodyExt;
    let uri: hyper::Uri = format!("{}/v1/models", target.base_url).parse()?;
    let mut req = hyper::Request::get(uri);
    if let Some(auth) = &target.authorization {
        req = req.header(hyper::header::AUTHORIZATION, auth.clone());
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(req.body(Default::default())?),
    )
    .await
    .context("timed out")??;
    anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
    let body = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["data"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .context("no model listed")
}

/// Runs a benchmark as `args` says; `stop` turning true stops sending (Ctrl-C).
pub async fn run(args: &BenchArgs, stop: watch::Receiver<bool>) -> anyhow::Result<BenchOutcome> {
    let metrics_config = metrics_config(args)?;
    anyhow::ensure!(args.num_prompts > 0, "--num-prompts must be at least 1");
    anyhow::ensure!(args.timeout > 0.0, "--timeout must be positive");
    if args.max_concurrency == Some(0) {
        bail!("--max-concurrency must be at least 1");
    }
    let plugin_opts: Vec<(String, String)> = args
        .plugin_opts
        .iter()
        .map(|o| split_kv("--plugin-opt", o))
        .collect::<anyhow::Result<_>>()?;
    let headers = user_headers(args)?;
    if let Some(extra) = &args.extra_body {
        let v: serde_json::Value =
            serde_json::from_str(extra).context("--extra-body is not valid JSON")?;
        anyhow::ensure!(v.is_object(), "--extra-body must be a JSON object");
    }

    let registry = Registry::load(&args.plugins)?;
    let backend = registry.backend(&args.backend)?;
    let pool = BackendPool::new(backend, plugin_opts)?;
    let info = pool.info().clone();
    let tokenizer = Arc::new(HostTokenizer::load(args.tokenizer.as_deref())?);
    let dataset = registry.dataset(&args.dataset_name)?;
    let samples = dataset.load(&dataset_request(args), tokenizer.clone())?;

    let simulator: Option<SimHandle> = if args.base_url.is_none() && args.port.is_none() {
        let config = sim_config(&args.sim, args.seed);
        Some(sim::start_dedicated(config, "127.0.0.1:0".parse()?)?)
    } else {
        None
    };
    let base_url = match (&args.base_url, &simulator) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(s)) => s.base_url(),
        (None, None) => format!("http://{}:{}", args.host, args.port.unwrap_or(8000)),
    };
    anyhow::ensure!(
        base_url.starts_with("http://") || base_url.starts_with("https://"),
        "--base-url {base_url}: expected an http:// or https:// URL"
    );
    if simulator.is_none() {
        check_reachable(&base_url).await?;
    }
    let target = Target {
        base_url: base_url.clone(),
        endpoint: args.endpoint.clone(),
        headers,
        authorization: args.api_key.as_deref().map(Target::bearer).transpose()?,
        timeout: Duration::from_secs_f64(args.timeout),
        framing: info.framing,
    };
    let in_flight_cap = args
        .max_concurrency
        .unwrap_or(samples.len())
        .min(samples.len());
    let client = transport::client(in_flight_cap, args.ca_cert.as_deref())?;
    let model = match (&args.model, &simulator) {
        (Some(m), _) => m.clone(),
        (None, Some(_)) => SimConfig::default().model,
        (None, None) => discover_model(&client, &target).await.with_context(|| {
            format!("--model not given and {base_url}/v1/models did not name one")
        })?,
    };
    pool.prewarm(in_flight_cap.min(1024))?;

    let run_info = RunInfo {
        backend: args.backend.clone(),
        endpoint_type: args.backend.clone(),
        label: args.label.clone(),
        model_id: args
            .served_model_name
            .clone()
            .unwrap_or_else(|| model.clone()),
        tokenizer_id: tokenizer.id(),
        base_url: base_url.clone(),
        endpoint: args
            .endpoint
            .clone()
            .unwrap_or_else(|| info.default_endpoint.clone()),
        dataset_name: args.dataset_name.clone(),
        num_prompts: samples.len(),
        request_rate: args.request_rate,
        burstiness: args.burstiness,
        max_concurrency: args.max_concurrency,
        output_len_forced: args.ignore_eos && info.supports_ignore_eos,
        interrupted: false,
    };
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let result_name = args
        .result_filename
        .clone()
        .unwrap_or_else(|| report::default_result_filename(&run_info, unix_now));
    let records_path = (!args.no_records).then(|| {
        let stem = Path::new(&result_name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        args.result_dir.join(format!(
            "{}.records.jsonl",
            stem.unwrap_or_else(|| result_name.clone())
        ))
    });

    let offsets = crate::scheduler::arrival_offsets(
        samples.len(),
        args.request_rate,
        args.burstiness,
        args.seed,
    )?;
    let requests: Vec<GenRequest> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| gen_request(args, &model, i as u64, s))
        .collect();

    let run = Run {
        pool,
        client,
        target,
        tokenizer,
        semaphore: args.max_concurrency.map(|c| Arc::new(Semaphore::new(c))),
        show_progress: !args.disable_tqdm && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let cpu_before = crate::selfbench::process_cpu();
    let (records, duration, interrupted) = run
        .execute(requests, &samples, &offsets, records_path.as_deref(), stop)
        .await?;

    let client_cpu = crate::selfbench::process_cpu().saturating_sub(cpu_before);
    if let Some(s) = simulator {
        s.shutdown().await;
    }
    let metrics = crate::metrics::compute(&records, duration.as_secs_f64(), &metrics_config);
    let info = RunInfo {
        interrupted,
        ..run_info
    };
    let result_path = if args.save_result || args.save_detailed {
        let json = report::result_json(
            &info,
            &metrics,
            &metrics_config,
            &records,
            args.save_detailed,
        );
        std::fs::create_dir_all(&args.result_dir)
            .with_context(|| format!("cannot create {}", args.result_dir.display()))?;
        let path = args.result_dir.join(&result_name);
        std::fs::write(&path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Some(path)
    } else {
        None
    };
    Ok(BenchOutcome {
        info,
        metrics,
        metrics_config,
        records,
        records_path,
        result_path,
        client_cpu,
    })
}

fn gen_request(args: &BenchArgs, model: &str, id: u64, sample: &Sample) -> GenRequest {
    GenRequest {
        id,
        model: model.to_string(),
        prompt: sample.prompt.clone(),
        max_tokens: sample.output_tokens,
        ignore_eos: args.ignore_eos,
        streaming: true,
        include_usage: true,
        temperature: args.temperature,
        extra_body: args.extra_body.clone(),
    }
}

/// Resolves once a stop is requested; never, if the sender is gone without asking.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The parts of a run shared by every request task.
struct Run {
    pool: Arc<BackendPool>,
    client: transport::HttpClient,
    target: Target,
    tokenizer: Arc<HostTokenizer>,
    semaphore: Option<Arc<Semaphore>>,
    show_progress: bool,
}

impl Run {
    /// Sends every request on schedule; returns the records (in completion order), the
    /// benchmark duration and whether the run was interrupted.
    async fn execute(
        self,
        requests: Vec<GenRequest>,
        samples: &[Sample],
        offsets: &[Duration],
        records_path: Option<&Path>,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<(Vec<RequestRecord>, Duration, bool)> {
        let total = requests.len();
        let mut writer = records_path.map(RecordWriter::create).transpose()?;
        let (tx, mut rx) = mpsc::unbounded_channel::<RequestRecord>();
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let shared = Arc::new(self);
        let t0 = Instant::now();
        let start = tokio::time::Instant::from_std(t0);

        let dispatcher = {
            let shared = shared.clone();
            let mut stop = stop.clone();
            let prompt_lens: Vec<u32> = samples.iter().map(|s| s.input_tokens).collect();
            let offsets = offsets.to_vec();
            tokio::spawn(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for (i, req) in requests.into_iter().enumerate() {
                    let target = start + offsets[i];
                    if !offsets[i].is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep_until(target) => {}
                            _ = stop_requested(&mut stop) => break,
                        }
                    }
                    if *stop.borrow() {
                        break;
                    }
                    let record = RequestRecord {
                        id: i as u64,
                        scheduled_ns: offsets[i].as_nanos() as u64,
                        prompt_tokens: prompt_lens[i],
                        ..Default::default()
                    };
                    let shared = shared.clone();
                    let tx = tx.clone();
                    let mut cancel = cancel_rx.clone();
                    tasks.spawn(async move {
                        let record = tokio::select! {
                            r = shared.one(req, record.clone(), t0) => r,
                            _ = cancel.wait_for(|c| *c) => RequestRecord {
                                end_ns: t0.elapsed().as_nanos() as u64,
                                error: Some(RequestError {
                                    kind: "cancelled".into(),
                                    message: "cut off after Ctrl-C".into(),
                                    http_status: None,
                                }),
                                ..record
                            },
                        };
                        let _ = tx.send(record);
                    });
                }
                drop(tx);
                while tasks.join_next().await.is_some() {}
            })
        };

        let mut records = Vec::with_capacity(total);
        let mut failed = 0usize;
        let mut interrupted = false;
        let mut grace_deadline: Option<tokio::time::Instant> = None;
        let mut last_progress = Instant::now();
        loop {
            let grace = async {
                match grace_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                rec = rx.recv() => {
                    let Some(rec) = rec else { break };
                    if let Some(w) = writer.as_mut() {
                        w.write(&rec).with_context(|| format!("cannot write {}", w.path().display()))?;
                    }
                    failed += usize::from(!rec.success);
                    records.push(rec);
                    if shared.show_progress && last_progress.elapsed() > Duration::from_millis(250) {
                        last_progress = Instant::now();
                        eprint!("\r{}/{} done, {} failed, {:.1} s", records.len(), total, failed, t0.elapsed().as_secs_f64());
                    }
                }
                _ = stop_requested(&mut stop), if !interrupted => {
                    interrupted = true;
                    grace_deadline = Some(tokio::time::Instant::now() + INTERRUPT_GRACE);
                }
                _ = grace => {
                    let _ = cancel_tx.send(true);
                    grace_deadline = None;
                }
            }
        }
        let duration = t0.elapsed();
        // The dispatcher may stop and the last record arrive before the loop sees the request.
        interrupted |= *stop.borrow();
        dispatcher.await.context("request dispatcher failed")?;
        if shared.show_progress {
            eprintln!(
                "\r{}/{} done, {} failed, {:.1} s",
                records.len(),
                total,
                failed,
                duration.as_secs_f64()
            );
        }
        Ok((records, duration, interrupted))
    }

    async fn one(&self, req: GenRequest, mut record: RequestRecord, t0: Instant) -> RequestRecord {
        let _permit = match &self.semaphore {
            Some(s) => Some(
                s.clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore never closed"),
            ),
            None => None,
        };
        record.dispatched_ns = t0.elapsed().as_nanos() as u64;
        let mut adapter = match self.pool.checkout() {
            Ok(a) => a,
            Err(e) => {
                record.sent_ns = record.dispatched_ns;
                record.end_ns = record.dispatched_ns;
                record.error = Some(RequestError {
                    kind: "plugin".into(),
                    message: format!("{e:#}"),
                    http_status: None,
                });
                return record;
            }
        };
        let exchange = Exchange {
            client: &self.client,
            target: &self.target,
            tokenizer: &self.tokenizer,
            t0,
        };
        exchange.execute(&mut adapter, &req, record).await
    }
}
