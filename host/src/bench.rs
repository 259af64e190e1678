//! One benchmark run, end to end: plugins and dataset, the arrival schedule, requests in flight
//! under an optional concurrency cap, records streamed to disk, then metrics and the report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hyper::header::{HeaderName, HeaderValue};

use crate::cli::{BenchArgs, PluginsArgs, RampUpStrategy, SimArgs, SimTiming, split_kv};
use crate::input_tokens::{Counting, InputCountSource};
use crate::lifecycle::{Cancel, StopCause};
use crate::metrics::{BenchmarkMetrics, MetricsConfig};
use crate::plugin::backend::BackendPool;
use crate::plugin::dataset::Sample;
use crate::plugin::{DatasetRequest, Registry};
use crate::records::RequestRecord;
use crate::report::{self, LoadPattern, RunInfo};
use crate::runner::{ClientsPlan, LoadPlan, RequestTemplate, Runner, Warmup};
use crate::scheduler::{self, Ramp, RampStrategy};
use crate::sim::{self, SimConfig, SimHandle};
use crate::sweep::{StageSummary, SweepVerdict};
use crate::tokenizer::HostTokenizer;
use crate::transport::{self, Target};

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
    /// The server's Prometheus metrics over the stage (`--server-metrics-url`).
    pub server_metrics: Option<crate::server_metrics::ServerMetrics>,
    /// Why the stage stopped early (Ctrl-C, `--max-plugin-faults`), and in which phase.
    pub stop_reason: Option<String>,
}

/// `llmb bench`: run, print the report, save files. Ctrl-C stops the run in any phase (see
/// [`crate::lifecycle`]); the results so far are still written.
pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    let cancel = Cancel::new();
    cancel.on_ctrl_c();
    run_and_print(&args, &cancel).await?;
    if let Some(cause @ StopCause::PluginFaults { .. }) = cancel.cause() {
        bail!(
            "the run was stopped: {cause}; what was measured until then is in the records and the report above"
        );
    }
    Ok(())
}

/// Runs every stage and prints each report as it finishes, then the rounds and stage tables.
/// `stop`: a [`Cancel`], or a `watch` flag whose turning true stops the run as Ctrl-C does.
pub async fn run_and_print(
    args: &BenchArgs,
    stop: impl Into<Cancel>,
) -> anyhow::Result<SweepOutcome> {
    let sweep = run_all(args, stop, &mut |outcome| {
        let mut stdout = std::io::stdout().lock();
        report::print_console(
            &outcome.info,
            &outcome.metrics,
            &outcome.metrics_config,
            &mut stdout,
        )?;
        if let Some(sm) = &outcome.server_metrics {
            sm.print(&mut stdout)?;
        }
        if let Some(p) = &outcome.records_path {
            println!("Per-request records: {}", p.display());
        }
        if let Some(p) = &outcome.result_path {
            println!("Result: {}", p.display());
        }
        println!();
        Ok(())
    })
    .await?;
    let mut stdout = std::io::stdout().lock();
    if args.rounds > 1 {
        for group in sweep.stages.chunks(args.rounds as usize) {
            let title = group[0]
                .info
                .pattern
                .stage
                .as_deref()
                .map(|s| s.rsplit_once(", round").map_or(s, |(head, _)| head))
                .filter(|s| !s.starts_with("round"))
                .unwrap_or("same batch")
                .to_string();
            let metrics: Vec<&BenchmarkMetrics> = group.iter().map(|o| &o.metrics).collect();
            report::print_rounds(&title, &metrics, &mut stdout)?;
        }
    }
    if sweep.stages.len() > 1 && sweep.summaries.len() / args.rounds as usize > 1 {
        crate::sweep::print_stage_table(&sweep.summaries, &sweep.verdict, &mut stdout)?;
    }
    drop(stdout);
    Ok(sweep)
}

/// `llmb plugins`.
pub fn list_plugins(args: &PluginsArgs) -> anyhow::Result<()> {
    let registry = Registry::load(&args.plugins)?;
    println!(
        "{:<18} {:<8} {:<6} {:<10} {:<64}  description",
        "name", "kind", "wit", "origin", "sha256"
    );
    for p in registry.summaries() {
        println!(
            "{:<18} {:<8} {:<6} {:<10} {:<64}  {}",
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
    config.dialect = args.dialect.clone();
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
        prefix_cache: t.prefix_cache,
        max_batch: t.max_batch,
        connections: crate::sim::ConnectionPolicy {
            keep_alive_timeout: t.keep_alive_timeout.map(Duration::from_secs_f64),
            keep_alive_max: t.keep_alive_max,
            close_every_response: t.connection_close,
            drop_stale_after: t.drop_stale_after.map(Duration::from_secs_f64),
        },
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
        goodput_slos_ms: {
            let mut slos = match &args.slo_file {
                Some(path) => crate::metrics::parse_slo_file(path)?,
                None => Vec::new(),
            };
            for (metric, ms) in MetricsConfig::parse_goodput(&args.goodput)? {
                match slos.iter_mut().find(|(m, _)| *m == metric) {
                    Some(slot) => slot.1 = ms,
                    None => slos.push((metric, ms)),
                }
            }
            slos
        },
    })
}

/// What the dataset reader is asked for: the seed, the options from the command line and the file.
pub fn dataset_request(args: &BenchArgs) -> anyhow::Result<DatasetRequest> {
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
    if args.dataset_cycle {
        options.push(("cycle".into(), "true".into()));
    }
    if let Some(n) = args.sharegpt_output_len {
        options.push(("sharegpt-output-len".into(), n.to_string()));
    }
    for (key, value) in [
        ("sonnet-input-len", args.sonnet_input_len),
        ("sonnet-output-len", args.sonnet_output_len),
        ("sonnet-prefix-len", args.sonnet_prefix_len),
    ] {
        options.push((key.into(), value.to_string()));
    }
    for (key, value) in [
        ("hf-split", &args.hf_split),
        ("hf-subset", &args.hf_subset),
        ("hf-prompt-column", &args.hf_prompt_column),
        ("hf-messages-column", &args.hf_messages_column),
        ("hf-output-len-column", &args.hf_output_len_column),
        ("hf-output-column", &args.hf_output_column),
    ] {
        if let Some(v) = value {
            options.push((key.into(), v.clone()));
        }
    }
    if let Some(n) = args.hf_output_len {
        options.push(("hf-output-len".into(), n.to_string()));
    }
    args.vllm.override_lengths(&mut options);
    for item in &args.dataset_opts {
        options.push(split_kv("--dataset-opt", item)?);
    }
    Ok(DatasetRequest {
        seed: args.seed,
        count: args.num_prompts as u64,
        options,
        file: args.dataset_path.clone(),
    })
}

/// `--header`s and `--secret-header`s; the values of secret ones (see [`crate::secrets`]) are
/// registered so no output shows them.
fn user_headers(args: &BenchArgs) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    let plain = args.headers.iter().map(|h| (h, false));
    let secret = args.secret_headers.iter().map(|h| (h, true));
    plain
        .chain(secret)
        .map(|(h, secret)| {
            let (k, v) = if secret {
                h.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                    .filter(|(k, _)| !k.is_empty())
                    .context("--secret-header expects KEY=VALUE")?
            } else {
                split_kv("--header", h)?
            };
            let name = HeaderName::try_from(k.as_str())
                .with_context(|| format!("--header: invalid name {k:?}"))?;
            let mut value = HeaderValue::try_from(v.as_str())
                .with_context(|| format!("--header {k}: invalid value"))?;
            if secret || crate::secrets::is_secret_header(&k) {
                crate::secrets::register(&v);
                value.set_sensitive(true);
            }
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

/// What `/v1/models` says: the first model's id and who serves it (`owned_by`: `vllm`,
/// `sglang`, `llamacpp`, ...), which tells adapters the server's dialect.
struct ModelListing {
    first_id: Option<String>,
    owned_by: Option<String>,
}

async fn list_models(
    client: &transport::HttpClient,
    target: &Target,
) -> anyhow::Result<ModelListing> {
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
    let first = &v["data"][0];
    Ok(ModelListing {
        first_id: first["id"].as_str().map(str::to_owned),
        owned_by: first["owned_by"]
            .as_str()
            .filter(|o| !o.is_empty())
            .map(str::to_owned),
    })
}

/// A whole `llmb bench` invocation: every stage (rates × concurrencies × rounds) in order.
pub struct SweepOutcome {
    pub stages: Vec<BenchOutcome>,
    pub summaries: Vec<StageSummary>,
    pub verdict: SweepVerdict,
}

/// One stage of a sweep: the load it applies.
#[derive(Debug, Clone)]
struct StageSpec {
    rate: f64,
    concurrency: Option<usize>,
    round: u32,
    requests: usize,
    /// Which load level (rate × concurrency) this is. Each level sends its own slice of the
    /// dataset, so a server's prefix cache warmed by one level does not flatter the next;
    /// the rounds of a level send the same slice.
    level: usize,
    /// `concurrency 8`, `rate 4 req/s, round 2`: empty for a single run.
    label: String,
    /// Appended to file names so every stage keeps its own files.
    suffix: String,
}

fn stage_specs(args: &BenchArgs) -> anyhow::Result<Vec<StageSpec>> {
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(!args.request_rate.is_empty(), "--request-rate is empty");
    let concurrencies: Vec<Option<usize>> = match &args.concurrency {
        Some(list) => crate::sweep::parse_concurrency_list(list)
            .context("--concurrency")?
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![args.max_concurrency],
    };
    if args.ramp_up_strategy.is_some() && args.request_rate.len() > 1 {
        bail!("--ramp-up-strategy sets the rate itself: give one --request-rate, not a list");
    }
    let requests = args.requests_per_stage.unwrap_or(args.num_prompts);
    anyhow::ensure!(
        requests > 0,
        "--num-prompts/--requests-per-stage must be at least 1"
    );
    let many_rates = args.request_rate.len() > 1;
    let many_conc = concurrencies.len() > 1;
    let mut stages = Vec::new();
    let mut level = 0;
    for &rate in &args.request_rate {
        for &concurrency in &concurrencies {
            level += 1;
            for round in 1..=args.rounds {
                let mut label = Vec::new();
                let mut suffix = String::new();
                if many_rates {
                    label.push(format!("rate {rate} req/s"));
                    suffix.push_str(&format!("-rate{rate}"));
                }
                if many_conc {
                    let c = concurrency.unwrap_or(0);
                    label.push(format!("concurrency {c}"));
                    suffix.push_str(&format!("-c{c}"));
                }
                if args.rounds > 1 {
                    label.push(format!("round {round}"));
                    suffix.push_str(&format!("-round{round}"));
                }
                stages.push(StageSpec {
                    rate,
                    concurrency,
                    round,
                    requests,
                    level: level - 1,
                    label: label.join(", "),
                    suffix,
                });
            }
        }
    }
    Ok(stages)
}

/// What every stage shares: plugins, dataset, server, connection pool.
struct Prepared {
    runner_pool: Arc<BackendPool>,
    info: crate::plugin::backend::BackendInfo,
    tokenizer: Arc<HostTokenizer>,
    samples: Arc<Vec<Sample>>,
    simulator: Option<SimHandle>,
    base_url: String,
    target: Target,
    client: transport::HttpClient,
    model: String,
    metrics_config: MetricsConfig,
    input_counts: InputCountSource,
    /// Where to scrape Prometheus metrics, resolved against the base URL.
    server_metrics_url: Option<String>,
}

/// The `--tokenizer`, else the server's counts, else the word estimate (see [`crate::input_tokens`]).
async fn input_count_source(
    args: &BenchArgs,
    tokenizer: &HostTokenizer,
    samples: &mut [Sample],
    counting: &Counting<'_>,
) -> InputCountSource {
    if args.tokenizer.is_some() {
        return InputCountSource::Tokenizer { id: tokenizer.id() };
    }
    if args.no_server_tokenize {
        return InputCountSource::Estimate {
            reason: "--no-server-tokenize".into(),
        };
    }
    if crate::datasets::LengthStats::of(samples).conversations > 0 {
        return InputCountSource::Estimate {
            reason: "multi-turn conversations are counted turn by turn as they run".into(),
        };
    }
    // The readers that make prompts of an asked length: make it the server's length.
    if matches!(
        args.dataset_name.as_str(),
        "random" | "sonnet" | "shared-prefix"
    ) {
        match crate::input_tokens::fit_to_server(counting, samples).await {
            Ok(fitted) => return fitted,
            Err(why) => eprintln!(
                "{} prompts not fitted to the server's tokens: {why}",
                args.dataset_name
            ),
        }
    }
    crate::input_tokens::count_with_server(counting, samples).await
}

/// The per-request bounds of `--header-timeout`, `--read-idle-timeout` and the size flags.
pub fn limits(args: &BenchArgs) -> anyhow::Result<transport::Limits> {
    let secs = |flag: &str, v: f64| {
        anyhow::ensure!(
            v > 0.0 && v.is_finite(),
            "{flag} must be a positive number of seconds"
        );
        Ok(Duration::from_secs_f64(v))
    };
    Ok(transport::Limits {
        header_timeout: args
            .header_timeout
            .map(|v| secs("--header-timeout", v))
            .transpose()?,
        read_idle_timeout: secs("--read-idle-timeout", args.read_idle_timeout)?,
        max_response_bytes: args.max_response_bytes,
        max_text_bytes: usize::try_from(args.max_text_bytes).unwrap_or(usize::MAX),
        max_frame_bytes: usize::try_from(args.max_frame_bytes).unwrap_or(usize::MAX),
    })
}

async fn prepare(args: &BenchArgs, stages: &[StageSpec]) -> anyhow::Result<Prepared> {
    let metrics_config = metrics_config(args)?;
    anyhow::ensure!(args.num_prompts > 0, "--num-prompts must be at least 1");
    anyhow::ensure!(args.timeout > 0.0, "--timeout must be positive");
    if args.max_concurrency == Some(0) {
        bail!("--max-concurrency must be at least 1");
    }
    anyhow::ensure!(
        args.trace_speed > 0.0 && args.trace_speed.is_finite(),
        "--trace-speed must be a positive number, got {}",
        args.trace_speed
    );
    anyhow::ensure!(
        args.think_time >= 0.0 && args.think_time.is_finite(),
        "--think-time must be a non-negative number of seconds"
    );
    if args.num_clients == Some(0) {
        bail!("--num-clients must be at least 1");
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
    args.vllm.validate(args)?;
    for notice in args.vllm.notices(&args.backend) {
        eprintln!("{notice}");
    }

    let levels = stages.iter().map(|s| s.level + 1).max().unwrap_or(1);
    let wanted = stages.iter().map(|s| s.requests).max().unwrap_or(1) * levels + args.num_warmups;
    anyhow::ensure!(
        args.plugin_call_budget > 0,
        "--plugin-call-budget must be at least 1 µs"
    );
    // Compiling plugins, loading the tokenizer and reading the dataset block: on a thread of
    // their own, so a Ctrl-C meanwhile is answered at once (the thread is left to finish).
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    let load_args = args.clone();
    std::thread::Builder::new()
        .name("llmb-prepare".into())
        .spawn(move || {
            let load = || -> anyhow::Result<_> {
                let args = &load_args;
                let registry = Registry::load(&args.plugins)?;
                let backend = registry.backend(&args.backend)?;
                let pool = BackendPool::new(backend, plugin_opts)?;
                pool.set_call_budget_us(args.plugin_call_budget);
                let tokenizer = Arc::new(HostTokenizer::load(args.tokenizer.as_deref())?);
                let samples = crate::datasets::load_samples(args, &registry, &tokenizer, wanted)?;
                Ok((pool, tokenizer, samples))
            };
            let _ = loaded_tx.send(load());
        })
        .context("cannot start a thread to load plugins and the dataset")?;
    let (pool, tokenizer, mut samples) = loaded_rx
        .await
        .context("loading plugins and the dataset failed")??;
    let info = pool.info().clone();

    let simulator: Option<SimHandle> = if args.base_url.is_none() && args.port.is_none() {
        let mut config = sim_config(&args.sim, args.seed);
        config.dialect = Some(args.backend.clone());
        Some(sim::start_dedicated(config, "127.0.0.1:0".parse()?)?)
    } else {
        None
    };
    let base_url = match (&args.base_url, &simulator) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(s)) => s.base_url(),
        (None, None) => format!("http://{}:{}", args.host, args.port.unwrap_or(8000)),
    };
    crate::secrets::register_url(&base_url);
    anyhow::ensure!(
        base_url.starts_with("http://") || base_url.starts_with("https://"),
        "--base-url {base_url}: expected an http:// or https:// URL"
    );
    let ready_deadline = args.vllm.ready_deadline();
    if let (Some(deadline), None) = (ready_deadline, &simulator) {
        eprintln!(
            "waiting up to {} s for {} (--ready-check-timeout-sec)",
            args.vllm.ready_check_timeout_sec,
            crate::secrets::redact_url(&base_url)
        );
        crate::cli_vllm::retry_until(deadline, || check_reachable(&base_url))
            .await
            .context("--ready-check-timeout-sec: the server did not start listening in time")?;
    } else if simulator.is_none() {
        check_reachable(&base_url).await?;
    }
    let target = Target {
        base_url: base_url.clone(),
        endpoint: args.endpoint.clone(),
        headers,
        authorization: args.api_key.as_deref().map(Target::bearer).transpose()?,
        timeout: Duration::from_secs_f64(args.timeout),
        framing: info.framing,
        limits: limits(args)?,
    };
    let widest = stages
        .iter()
        .map(|s| s.concurrency.unwrap_or(wanted))
        .max()
        .unwrap_or(wanted)
        .max(args.num_clients.unwrap_or(0))
        .min(wanted.max(args.num_clients.unwrap_or(0)));
    anyhow::ensure!(
        args.pool_idle_timeout >= 0.0 && args.pool_idle_timeout.is_finite(),
        "--pool-idle-timeout must be a number of seconds >= 0"
    );
    anyhow::ensure!(
        args.connect_timeout > 0.0 && args.connect_timeout.is_finite(),
        "--connect-timeout must be a positive number of seconds"
    );
    let client = transport::client_with(
        transport::PoolSettings {
            max_idle: widest.max(1),
            idle_timeout: Duration::from_secs_f64(args.pool_idle_timeout),
            connect_timeout: Duration::from_secs_f64(args.connect_timeout),
            insecure_tls: args.vllm.insecure,
        },
        args.ca_cert.as_deref(),
        info.http2,
    )?;
    let listing = list_models(&client, &target).await;
    let model = match (&args.model, &simulator) {
        (Some(m), _) => m.clone(),
        (None, Some(_)) => SimConfig::default().model,
        (None, None) => listing
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|l| l.first_id.clone().context("no model listed"))
            .with_context(|| {
                format!("--model not given and {base_url}/v1/models did not name one")
            })?,
    };
    if let Some(owner) = listing.as_ref().ok().and_then(|l| l.owned_by.as_deref())
        && pool.offer_hint("server", owner)
    {
        eprintln!(
            "server: {owner} (from /v1/models); the {} adapter speaks its dialect",
            info.name
        );
    }
    if let (Some(deadline), Some(first)) = (ready_deadline, samples.first()) {
        let req = request_template(args, &model).request(
            u64::MAX,
            first.prompt.clone(),
            first.output_tokens,
        );
        crate::cli_vllm::retry_until(deadline, || {
            crate::cli_vllm::try_request(&pool, &client, &target, &req)
        })
        .await
        .context("--ready-check-timeout-sec: the server did not answer a first request in time")?;
        eprintln!("the server answered a first request (--ready-check-timeout-sec)");
    }
    let input_counts = input_count_source(
        args,
        &tokenizer,
        &mut samples,
        &Counting {
            pool: &pool,
            client: &client,
            target: &target,
            model: &model,
        },
    )
    .await;
    let lengths = crate::datasets::LengthStats::of(&samples);
    eprintln!("{}", lengths.one_line(&args.dataset_name));
    eprintln!("input token counts: {}", input_counts.describe());
    if let Some(first) = samples.first().filter(|_| !args.no_preflight) {
        crate::preflight::check(
            &crate::preflight::Preflight {
                pool: &pool,
                client: &client,
                target: &target,
                tokenizer: &tokenizer,
                template: &request_template(args, &model),
            },
            first,
        )
        .await?;
    }
    pool.prewarm(widest.clamp(1, 1024))?;
    anyhow::ensure!(
        args.server_metrics_interval > 0.0 && args.server_metrics_interval.is_finite(),
        "--server-metrics-interval must be a positive number of seconds"
    );
    let server_metrics_url = args.server_metrics_url.as_ref().map(|u| {
        if u.starts_with('/') {
            format!("{base_url}{u}")
        } else {
            u.clone()
        }
    });
    Ok(Prepared {
        server_metrics_url,
        input_counts,
        runner_pool: pool,
        info,
        tokenizer,
        samples: Arc::new(samples),
        simulator,
        base_url,
        target,
        client,
        model,
        metrics_config,
    })
}

/// What every request of the run carries besides its prompt.
fn request_template(args: &BenchArgs, model: &str) -> RequestTemplate {
    RequestTemplate {
        model: model.to_string(),
        ignore_eos: args.ignore_eos,
        temperature: args.temperature,
        // Sampling flags under --extra-body; `prepare` has already refused a bad --extra-body.
        extra_body: crate::cli_vllm::request_extra_body(args)
            .unwrap_or_else(|_| args.extra_body.clone()),
        think_time: Duration::from_secs_f64(args.think_time),
        streaming: !args.no_stream,
        lora: args.vllm.lora(args.seed),
        request_id_prefix: args.vllm.request_id_prefix.clone(),
    }
}

/// The plan for one stage and how to describe it.
fn plan_for(
    args: &BenchArgs,
    stage: &StageSpec,
    samples: &[Sample],
) -> anyhow::Result<(LoadPlan, LoadPattern)> {
    let pool = samples.len();
    let first = stage.level * stage.requests;
    let pick = |i: usize| (first + i) % pool;
    let mut pattern = LoadPattern {
        no_stream: args.no_stream,
        round: stage.round,
        stage: (!stage.label.is_empty()).then(|| stage.label.clone()),
        duration_limit_s: args.duration.map(|d| d.as_secs_f64()),
        ..LoadPattern::default()
    };
    let warmup_window = args.warmup_duration.unwrap_or(Duration::ZERO);
    let send_window = args.duration.map(|d| warmup_window + d);
    let n = stage.requests + args.num_warmups;
    let timestamps: Option<Vec<f64>> = samples
        .iter()
        .map(|s| s.timestamp)
        .collect::<Option<_>>()
        .filter(|_| args.vllm.self_timed() != Some(false));
    if let Some(ts) = timestamps {
        let schedule = scheduler::trace_schedule(&ts, args.trace_speed)?;
        pattern.mode = "trace".into();
        pattern.trace_speed = Some(args.trace_speed);
        let jobs = schedule
            .into_iter()
            .filter(|(_, at)| send_window.is_none_or(|w| *at < w))
            .map(|(i, at)| (at, i))
            .collect();
        return Ok((LoadPlan::Schedule(jobs), pattern));
    }
    let clients_from = |clients: usize, ramp_up: Duration| {
        let stop = [
            args.client_stop_time.map(Duration::from_secs_f64),
            send_window,
        ]
        .into_iter()
        .flatten()
        .min();
        ClientsPlan {
            clients,
            ramp_up,
            stop_issuing_at: stop,
            per_client: args.num_turns,
            total: (stop.is_none() && args.num_turns.is_none()).then_some(n),
            seed: args.seed,
            first_sample: first,
            sample_count: stage.requests,
        }
    };
    if let Some(clients) = args.num_clients {
        let ramp_up = Duration::from_secs_f64(args.ramp_up_time.unwrap_or(0.1 * clients as f64));
        pattern.mode = "clients".into();
        pattern.num_clients = Some(clients);
        pattern.ramp_up_time_s = Some(ramp_up.as_secs_f64());
        return Ok((LoadPlan::Clients(clients_from(clients, ramp_up)), pattern));
    }
    if let Some(window) = send_window {
        if stage.rate.is_infinite() {
            let c = stage.concurrency.context(
                "--duration with an unlimited --request-rate needs --max-concurrency (or --num-clients): \
                 that many requests are kept in flight until the time is up",
            )?;
            pattern.mode = "duration".into();
            pattern.num_clients = Some(c);
            return Ok((LoadPlan::Clients(clients_from(c, Duration::ZERO)), pattern));
        }
        let offsets =
            scheduler::arrivals_within(window, stage.rate, args.burstiness, args.seed, 10_000_000)?;
        pattern.mode = "duration".into();
        let jobs = offsets
            .into_iter()
            .enumerate()
            .map(|(i, at)| (at, pick(i)))
            .collect();
        return Ok((LoadPlan::Schedule(jobs), pattern));
    }
    let offsets = if let Some(strategy) = args.ramp_up_strategy {
        let ramp = Ramp {
            strategy: match strategy {
                RampUpStrategy::Linear => RampStrategy::Linear,
                RampUpStrategy::Exponential => RampStrategy::Exponential,
            },
            start_rps: args.ramp_up_start_rps.unwrap_or(0.0),
            end_rps: args.ramp_up_end_rps.unwrap_or(0.0),
        };
        let offsets = scheduler::ramp_offsets(n, &ramp, args.burstiness, args.seed)?;
        pattern.mode = "ramp".into();
        pattern.ramp = Some((
            format!("{strategy:?}").to_lowercase(),
            ramp.start_rps,
            ramp.end_rps,
        ));
        pattern.rate_steps = scheduler::ramp_steps(&ramp, &offsets, 20)
            .into_iter()
            .map(|s| (s.first_request, s.at.as_secs_f64(), s.rps))
            .collect();
        offsets
    } else {
        pattern.mode = "poisson".into();
        scheduler::arrival_offsets(n, stage.rate, args.burstiness, args.seed)?
    };
    let jobs = offsets
        .into_iter()
        .enumerate()
        .map(|(i, at)| (at, pick(i)))
        .collect();
    Ok((LoadPlan::Schedule(jobs), pattern))
}

/// Runs a benchmark as `args` says and returns its (last) stage; `stop` (a [`Cancel`], or a
/// `watch` flag turning true) stops it as Ctrl-C does.
pub async fn run(args: &BenchArgs, stop: impl Into<Cancel>) -> anyhow::Result<BenchOutcome> {
    let mut sweep = run_all(args, stop, &mut |_| Ok(())).await?;
    sweep.stages.pop().context("no stage ran")
}

/// Runs every stage in order, calling `on_stage` as each finishes (so a long sweep reports as
/// it goes). The run's lifecycle is prepare → (per stage) warmup → measure → drain → write;
/// `stop` ends it in any phase, and what was measured is written all the same.
pub async fn run_all(
    args: &BenchArgs,
    stop: impl Into<Cancel>,
    on_stage: &mut dyn FnMut(&BenchOutcome) -> anyhow::Result<()>,
) -> anyhow::Result<SweepOutcome> {
    let cancel: Cancel = stop.into();
    // `--endpoint chat.completions`, `--outdir`, fixed prompts: see crate::cli_sweep.
    let args = &crate::cli_sweep::normalize(args)?;
    let specs = stage_specs(args)?;
    eprintln!("llmb: preparing (plugins, dataset, input token counts, pre-flight)");
    let prepared = tokio::select! {
        biased;
        p = prepare(args, &specs) => p?,
        _ = cancel.stopped() => {
            eprintln!("llmb: stopped while preparing: nothing was measured");
            let outcome = stopped_in_prepare(args, &specs[0], &cancel)?;
            on_stage(&outcome)?;
            return Ok(SweepOutcome {
                summaries: vec![summary_of(&specs[0], &outcome)],
                verdict: crate::sweep::verdict(&[]),
                stages: vec![outcome],
            });
        }
    };
    let mut stages = Vec::new();
    let mut summaries = Vec::new();
    if args.vllm.profile {
        crate::cli_vllm::profiler(&prepared.client, &prepared.target, "/start_profile").await;
    }
    let result = async {
        for spec in &specs {
            let outcome = run_stage(args, &prepared, spec, &cancel).await?;
            on_stage(&outcome)?;
            summaries.push(summary_of(spec, &outcome));
            let interrupted = outcome.info.interrupted;
            stages.push(outcome);
            if interrupted {
                break;
            }
        }
        anyhow::Ok(())
    }
    .await;
    if args.vllm.profile {
        crate::cli_vllm::profiler(&prepared.client, &prepared.target, "/stop_profile").await;
    }
    if let Some(s) = prepared.simulator {
        s.shutdown().await;
    }
    result?;
    let verdict = crate::sweep::verdict(&summaries);
    if args.save_result || args.save_detailed {
        let run = match (
            stages.len(),
            &stages.first().and_then(|o| o.result_path.clone()),
        ) {
            (1, Some(p)) => p
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
            _ => sweep_stem(args),
        };
        let rows: Vec<_> = summaries
            .iter()
            .cloned()
            .zip(stages.iter().map(|o| o.result_path.clone()))
            .collect();
        crate::export::append_summary_all(&args.result_dir, &run, &rows)?;
    }
    if (args.save_result || args.save_detailed) && stages.len() > 1 {
        save_sweep_summary(args, &summaries, &verdict, &stages)?;
    }
    if args.concurrency.is_some() && !stages.is_empty() {
        let files = crate::export::write_concurrency_sweep(
            &args.result_dir,
            &stages,
            &summaries,
            &verdict,
            !args.no_records,
        )?;
        if let Some(overall) = files.last() {
            eprintln!("Sweep summary: {}", overall.display());
        }
    }
    Ok(SweepOutcome {
        stages,
        summaries,
        verdict,
    })
}

/// The name a sweep's shared files start with: `--result-filename`'s stem, else
/// `{label or backend}-sweep-{timestamp}`.
fn sweep_stem(args: &BenchArgs) -> String {
    match &args.result_filename {
        Some(name) => Path::new(name)
            .file_stem()
            .map_or_else(|| name.clone(), |s| s.to_string_lossy().into_owned()),
        None => {
            let unix_now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!(
                "{}-sweep-{}",
                args.label.as_deref().unwrap_or(&args.backend),
                report::timestamp(unix_now)
            )
        }
    }
}

/// `NAME-stages.json`: the stage table, the verdict and each stage's result file.
fn save_sweep_summary(
    args: &BenchArgs,
    summaries: &[StageSummary],
    verdict: &SweepVerdict,
    stages: &[BenchOutcome],
) -> anyhow::Result<()> {
    let stem = sweep_stem(args);
    let rounds: Vec<serde_json::Value> = stages
        .chunks(args.rounds as usize)
        .filter(|group| group.len() > 1)
        .map(|group| {
            let metrics: Vec<&BenchmarkMetrics> = group.iter().map(|o| &o.metrics).collect();
            report::rounds_json(&metrics)
        })
        .collect();
    let doc = serde_json::json!({
        "stages": summaries,
        "results": stages.iter().map(|o| o.result_path.as_ref().map(|p| p.display().to_string())).collect::<Vec<_>>(),
        "best": verdict.best,
        "saturation": verdict.saturation,
        "round_changes": rounds,
    });
    let path = args.result_dir.join(format!("{stem}-stages.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn summary_of(spec: &StageSpec, o: &BenchOutcome) -> StageSummary {
    let m = &o.metrics;
    let q = &m.stage_quantiles;
    StageSummary {
        label: if spec.label.is_empty() {
            "run".into()
        } else {
            spec.label.clone()
        },
        concurrency: spec.concurrency,
        request_rate: spec.rate,
        round: spec.round,
        completed: m.completed,
        failed: m.failed,
        request_throughput: m.request_throughput,
        output_throughput: m.output_throughput,
        ttft_p50_ms: q.ttft_p50_ms,
        ttft_p99_ms: q.ttft_p99_ms,
        e2el_p50_ms: q.e2el_p50_ms,
        e2el_p95_ms: q.e2el_p95_ms,
        e2el_p99_ms: q.e2el_p99_ms,
    }
}

async fn run_stage(
    args: &BenchArgs,
    p: &Prepared,
    spec: &StageSpec,
    cancel: &Cancel,
) -> anyhow::Result<BenchOutcome> {
    let (plan, pattern) = plan_for(args, spec, &p.samples)?;
    let run_info = RunInfo {
        backend: args.backend.clone(),
        endpoint_type: args.backend.clone(),
        label: args.label.clone(),
        model_id: args
            .served_model_name
            .clone()
            .unwrap_or_else(|| p.model.clone()),
        tokenizer_id: p.tokenizer.id(),
        input_counts: p.input_counts.clone(),
        base_url: crate::secrets::redact_url(&p.base_url),
        endpoint: args
            .endpoint
            .clone()
            .unwrap_or_else(|| p.info.default_endpoint.clone()),
        dataset_name: args.dataset_name.clone(),
        num_prompts: match &plan {
            LoadPlan::Schedule(jobs) => jobs.len().saturating_sub(args.num_warmups),
            LoadPlan::Clients(_) => spec.requests,
        },
        request_rate: spec.rate,
        burstiness: args.burstiness,
        max_concurrency: spec.concurrency,
        output_len_forced: args.ignore_eos && p.info.supports_ignore_eos,
        output_len_forceable: p.info.supports_ignore_eos,
        interrupted: false,
        pattern,
    };
    let (result_name, records_path) = stage_files(args, spec, &run_info);

    let runner = Arc::new(Runner {
        pool: p.runner_pool.clone(),
        client: p.client.clone(),
        target: p.target.clone(),
        tokenizer: p.tokenizer.clone(),
        samples: p.samples.clone(),
        template: request_template(args, &p.model),
        max_concurrency: spec.concurrency,
        warmup: Warmup {
            requests: args.num_warmups,
            until: args.warmup_duration,
        },
        show_progress: !args.disable_tqdm && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        max_plugin_faults: args.max_plugin_faults,
    });
    let scraper = match &p.server_metrics_url {
        Some(url) => Some(
            crate::server_metrics::Scraper::start(
                transport::client_with(
                    transport::PoolSettings {
                        max_idle: 1,
                        insecure_tls: args.vllm.insecure,
                        ..Default::default()
                    },
                    args.ca_cert.as_deref(),
                    false,
                )?,
                url.clone(),
                Duration::from_secs_f64(args.server_metrics_interval),
                crate::server_metrics::Selection::parse(args.server_metrics.as_deref()),
            )
            .await?,
        ),
        None => None,
    };
    let cpu_before = crate::selfbench::process_cpu();
    let executed = runner
        .execute(&plan, records_path.as_deref(), cancel)
        .await?;
    let server_metrics = match scraper {
        Some(s) => Some(s.finish().await?),
        None => None,
    };
    let client_cpu = crate::selfbench::process_cpu().saturating_sub(cpu_before);
    let measured = executed.elapsed.saturating_sub(executed.measured_from);
    if let Some(path) = &records_path {
        crate::export::write_requests_csv(&path.with_extension("csv"), &executed.records)?;
    }
    let metrics =
        crate::metrics::compute(&executed.records, measured.as_secs_f64(), &p.metrics_config);
    let info = RunInfo {
        interrupted: executed.interrupted,
        ..run_info
    };
    let stop_reason = executed
        .interrupted
        .then(|| stop_reason(cancel, executed.stopped_in));
    let result_path = save_result(
        args,
        &result_name,
        &info,
        &metrics,
        &p.metrics_config,
        &executed.records,
        server_metrics.as_ref(),
        stop_reason.as_deref(),
    )?;
    Ok(BenchOutcome {
        info,
        metrics,
        metrics_config: p.metrics_config.clone(),
        records: executed.records,
        records_path,
        result_path,
        client_cpu,
        server_metrics,
        stop_reason,
    })
}

/// `interrupted (Ctrl-C) during measure`.
fn stop_reason(cancel: &Cancel, phase: &str) -> String {
    let cause = cancel.cause().unwrap_or(StopCause::Interrupt);
    format!("{cause} during {phase}")
}

/// A stage's result file name and records path.
fn stage_files(args: &BenchArgs, spec: &StageSpec, info: &RunInfo) -> (String, Option<PathBuf>) {
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let result_name = with_suffix(
        &args
            .result_filename
            .clone()
            .unwrap_or_else(|| report::default_result_filename(info, unix_now)),
        &spec.suffix,
    );
    let records_path = (!args.no_records).then(|| {
        let stem = Path::new(&result_name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        args.result_dir.join(format!(
            "{}.records.jsonl",
            stem.unwrap_or_else(|| result_name.clone())
        ))
    });
    (result_name, records_path)
}

/// `--save-result`/`--save-detailed`: the result JSON (or one more line with
/// `--append-result`); `None` when not asked for.
#[allow(clippy::too_many_arguments)]
fn save_result(
    args: &BenchArgs,
    result_name: &str,
    info: &RunInfo,
    metrics: &BenchmarkMetrics,
    cfg: &MetricsConfig,
    records: &[RequestRecord],
    server_metrics: Option<&crate::server_metrics::ServerMetrics>,
    stop_reason: Option<&str>,
) -> anyhow::Result<Option<PathBuf>> {
    if !(args.save_result || args.save_detailed) {
        return Ok(None);
    }
    let mut json = report::result_json(info, metrics, cfg, records, args.save_detailed);
    if let Some(sm) = server_metrics {
        json["server_metrics"] = serde_json::to_value(sm)?;
    }
    if let Some(why) = stop_reason {
        json["llmb"]["stop_reason"] = why.into();
    }
    crate::cli_vllm::add_metadata(&mut json, &args.vllm.metadata)?;
    std::fs::create_dir_all(&args.result_dir)
        .with_context(|| format!("cannot create {}", args.result_dir.display()))?;
    let path = args.result_dir.join(result_name);
    if args.append_result {
        append_json_line(&path, &json)?;
    } else {
        std::fs::write(&path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Some(path))
}

/// A run stopped before anything was measured: an empty records file and a result saying so
/// (when results are saved), so every interrupted run leaves the same files behind.
fn stopped_in_prepare(
    args: &BenchArgs,
    spec: &StageSpec,
    cancel: &Cancel,
) -> anyhow::Result<BenchOutcome> {
    let metrics_config = metrics_config(args).unwrap_or_default();
    let info = RunInfo {
        backend: args.backend.clone(),
        endpoint_type: args.backend.clone(),
        label: args.label.clone(),
        model_id: args
            .served_model_name
            .clone()
            .or_else(|| args.model.clone())
            .unwrap_or_else(|| SimConfig::default().model),
        tokenizer_id: args
            .tokenizer
            .as_ref()
            .map_or_else(String::new, |t| t.display().to_string()),
        input_counts: InputCountSource::Estimate {
            reason: "stopped before the input lengths were counted".into(),
        },
        base_url: args.base_url.clone().unwrap_or_default(),
        endpoint: args.endpoint.clone().unwrap_or_default(),
        dataset_name: args.dataset_name.clone(),
        num_prompts: spec.requests,
        request_rate: spec.rate,
        burstiness: args.burstiness,
        max_concurrency: spec.concurrency,
        output_len_forced: false,
        output_len_forceable: false,
        interrupted: true,
        pattern: report::LoadPattern::default(),
    };
    let (result_name, records_path) = stage_files(args, spec, &info);
    if let Some(path) = &records_path {
        crate::records::RecordWriter::create(path)?;
    }
    let metrics = crate::metrics::compute(&[], 0.0, &metrics_config);
    let why = stop_reason(cancel, "prepare");
    let result_path = save_result(
        args,
        &result_name,
        &info,
        &metrics,
        &metrics_config,
        &[],
        None,
        Some(&why),
    )?;
    Ok(BenchOutcome {
        info,
        metrics,
        metrics_config,
        records: Vec::new(),
        records_path,
        result_path,
        client_cpu: Duration::ZERO,
        server_metrics: None,
        stop_reason: Some(why),
    })
}

/// `--append-result`: the result as one JSON line after whatever the file holds, as vLLM does.
fn append_json_line(path: &Path, json: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut line = serde_json::to_vec(json)?;
    if file.metadata().map(|m| m.len()).unwrap_or(0) > 0 {
        line.insert(0, b'\n');
    }
    file.write_all(&line)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `name.json` + `-c8` -> `name-c8.json`.
fn with_suffix(name: &str, suffix: &str) -> String {
    if suffix.is_empty() {
        return name.to_string();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}{suffix}.{ext}"),
        _ => format!("{name}{suffix}"),
    }
}
