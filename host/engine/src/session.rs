//! One benchmark run, end to end, as a [`RunConfig`] says: load the plugins and the prompts,
//! check the server, count input tokens, then run each stage (plan → runner → records →
//! metrics) and hand each finished stage to a [`StageObserver`], which prints or saves it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{InputCounting, RunConfig};
use crate::input_tokens::{Counting, InputCountSource};
use crate::lifecycle::{Cancel, StopCause};
use crate::metrics::MetricsConfig;
use crate::outcome::{BenchOutcome, LoadPattern, RunInfo, SweepOutcome, UsedPlugin};
use crate::plan::{LoadPlan, Stage};
use crate::plugin::Registry;
use crate::plugin::backend::{BackendInfo, BackendPool};
use crate::plugin::dataset::Sample;
use crate::runner::Runner;
use crate::samples::LengthStats;
use crate::server_metrics::{Scraper, Selection};
use crate::sweep::StageSummary;
use crate::tokenizer::HostTokenizer;
use crate::transport::{self, Target};

/// What the caller does with each stage: where its records stream to, and what happens once
/// it is measured (print it, save it). The engine itself writes nothing but the records.
pub trait StageObserver {
    /// Where the stage's per-request records are written as they finish (`None`: kept in
    /// memory only). Asked once per stage, before it starts.
    fn records_path(&mut self, _info: &RunInfo, _stage: &Stage) -> Option<PathBuf> {
        None
    }

    /// A stage is measured (or was stopped); the observer may fill in `result_path`.
    fn finished(&mut self, _stage: &Stage, _outcome: &mut BenchOutcome) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Keeps the outcomes and does nothing else.
pub struct Quiet;

impl StageObserver for Quiet {}

/// Runs every stage of `config` in order. `stop` (a [`Cancel`], or a `watch` flag turning true)
/// stops the run in any phase as Ctrl-C does; what was measured until then is returned.
pub async fn run(
    config: &RunConfig,
    stop: impl Into<Cancel>,
    observer: &mut dyn StageObserver,
) -> anyhow::Result<SweepOutcome> {
    let cancel: Cancel = stop.into();
    config.validate()?;
    let stages = &config.load.stages;
    eprintln!("llmb: preparing (plugins, dataset, input token counts, pre-flight)");
    let prepared = tokio::select! {
        biased;
        p = prepare(config) => p?,
        _ = cancel.stopped() => {
            eprintln!("llmb: stopped while preparing: nothing was measured");
            let mut outcome = stopped_in_prepare(config, &stages[0], &cancel, observer)?;
            observer.finished(&stages[0], &mut outcome)?;
            return Ok(SweepOutcome {
                summaries: vec![summary_of(&stages[0], &outcome)],
                verdict: crate::sweep::verdict(&[]),
                stages: vec![outcome],
            });
        }
    };
    if config.server.profile {
        crate::server::profiler(&prepared.client, &prepared.target, "/start_profile").await;
    }
    let mut outcomes = Vec::new();
    let mut summaries = Vec::new();
    let result = async {
        for stage in stages {
            let mut outcome = run_stage(config, &prepared, stage, &cancel, observer).await?;
            observer.finished(stage, &mut outcome)?;
            summaries.push(summary_of(stage, &outcome));
            let interrupted = outcome.info.interrupted;
            outcomes.push(outcome);
            if interrupted {
                break;
            }
        }
        anyhow::Ok(())
    }
    .await;
    if config.server.profile {
        crate::server::profiler(&prepared.client, &prepared.target, "/stop_profile").await;
    }
    result?;
    let verdict = crate::sweep::verdict(&summaries);
    Ok(SweepOutcome {
        stages: outcomes,
        summaries,
        verdict,
    })
}

/// What every stage shares: plugins, dataset, server, connection pool.
struct Prepared {
    runner_pool: Arc<BackendPool>,
    used_plugins: Vec<UsedPlugin>,
    info: BackendInfo,
    tokenizer: Arc<HostTokenizer>,
    samples: Arc<Vec<Sample>>,
    target: Target,
    client: transport::HttpClient,
    model: String,
    input_counts: InputCountSource,
}

/// The tokenizer file, else the server's counts, else the readers' estimate (see
/// [`crate::input_tokens`]).
async fn input_count_source(
    config: &RunConfig,
    tokenizer: &HostTokenizer,
    samples: &mut [Sample],
    counting: &Counting<'_>,
) -> InputCountSource {
    let dataset = &config.dataset;
    if dataset.tokenizer.is_some() {
        return InputCountSource::Tokenizer { id: tokenizer.id() };
    }
    let fit = match &dataset.input_counts {
        InputCounting::Estimate { reason } => {
            return InputCountSource::Estimate {
                reason: reason.clone(),
            };
        }
        InputCounting::Server { fit } => *fit,
    };
    if LengthStats::of(samples).conversations > 0 {
        return InputCountSource::Estimate {
            reason: "multi-turn conversations are counted turn by turn as they run".into(),
        };
    }
    if fit {
        match crate::input_tokens::fit_to_server(counting, samples).await {
            Ok(fitted) => return fitted,
            Err(why) => eprintln!(
                "{} prompts not fitted to the server's tokens: {why}",
                dataset.name
            ),
        }
    }
    crate::input_tokens::count_with_server(counting, samples).await
}

async fn prepare(config: &RunConfig) -> anyhow::Result<Prepared> {
    let stages = &config.load.stages;
    let levels = stages.iter().map(|s| s.level + 1).max().unwrap_or(1);
    let wanted =
        stages.iter().map(|s| s.requests).max().unwrap_or(1) * levels + config.load.warmup.requests;
    // Compiling plugins, loading the tokenizer and reading the dataset block: on a thread of
    // their own, so a Ctrl-C meanwhile is answered at once (the thread is left to finish).
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    let plugins = config.plugins.clone();
    let dataset = config.dataset.clone();
    std::thread::Builder::new()
        .name("llmb-prepare".into())
        .spawn(move || {
            let load = || -> anyhow::Result<_> {
                let registry = Registry::load_with(&plugins.paths, plugins.allow_native)?;
                let backend = registry.backend(&plugins.backend)?;
                let mut used = vec![backend.summary()];
                used.extend(registry.dataset(&dataset.name).ok().map(|d| d.summary()));
                if let Some(pins) = &plugins.pins {
                    for plugin in &used {
                        pins.check(plugin)?;
                    }
                }
                let pool = BackendPool::new(backend, plugins.backend_options.clone())?;
                pool.set_call_budget_us(plugins.call_budget_us);
                pool.set_max_instances(plugins.max_instances);
                let tokenizer = Arc::new(HostTokenizer::load(dataset.tokenizer.as_deref())?);
                let samples = crate::samples::load(&dataset, &registry, &tokenizer, wanted)?;
                Ok((pool, tokenizer, samples, used))
            };
            let _ = loaded_tx.send(load());
        })
        .context("cannot start a thread to load plugins and the dataset")?;
    let (pool, tokenizer, mut samples, used_plugins) = loaded_rx
        .await
        .context("loading plugins and the dataset failed")??;
    let info = pool.info().clone();

    let server = &config.server;
    let base_url = server.base_url.trim_end_matches('/').to_string();
    crate::secrets::register_url(&base_url);
    anyhow::ensure!(
        base_url.starts_with("http://") || base_url.starts_with("https://"),
        "--base-url {base_url}: expected an http:// or https:// URL"
    );
    let ready_deadline = server.ready_timeout.map(|t| Instant::now() + t);
    if let (Some(deadline), false) = (ready_deadline, server.simulated) {
        eprintln!(
            "waiting up to {} s for {} (--ready-check-timeout-sec)",
            server.ready_timeout.unwrap_or_default().as_secs(),
            crate::secrets::redact_url(&base_url)
        );
        crate::server::retry_until(deadline, || crate::server::check_reachable(&base_url))
            .await
            .context("--ready-check-timeout-sec: the server did not start listening in time")?;
    } else if !server.simulated {
        crate::server::check_reachable(&base_url).await?;
    }
    // `--api-key-header` wins; else the header the adapter names (Anthropic's `x-api-key`);
    // else `Authorization: Bearer`.
    // `--api-key-header authorization` asks for the Bearer form back from an adapter that
    // names another header (vLLM's Anthropic route takes only Bearer).
    let key_header = server
        .api_key_header
        .clone()
        .or_else(|| info.api_key_header.clone())
        .filter(|h| !h.trim().eq_ignore_ascii_case("authorization"));
    let target = Target {
        base_url: base_url.clone(),
        endpoint: server.endpoint.clone(),
        headers: server.headers.clone(),
        authorization: match &key_header {
            None => server.api_key.as_deref().map(Target::bearer).transpose()?,
            Some(_) => None,
        },
        api_key_header: match (&key_header, &server.api_key) {
            (Some(name), Some(key)) => Some(Target::key_header(name, key)?),
            _ => None,
        },
        timeout: server.timeout,
        framing: info.framing,
        limits: server.limits,
    };
    let clients = config.load.clients.unwrap_or(0);
    let widest = stages
        .iter()
        .map(|s| s.concurrency.unwrap_or(wanted))
        .max()
        .unwrap_or(wanted)
        .max(clients)
        .min(wanted.max(clients));
    if let Some(warning) = crate::fd_limit::ensure_room_for(widest) {
        eprintln!("WARNING: {warning}");
    }
    let client = transport::client_with(
        transport::PoolSettings {
            max_idle: widest.max(1),
            ..server.pool
        },
        server.ca_cert.as_deref(),
        info.http2,
    )?;
    let listing = crate::server::list_models(&client, &target).await;
    let model = match &server.model {
        Some(m) => m.clone(),
        None => listing
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
    let template = config.request.template(&model);
    if let (Some(deadline), Some(first)) = (ready_deadline, samples.first()) {
        let req = template.request(u64::MAX, first.prompt.clone(), first.output_tokens);
        crate::server::retry_until(deadline, || {
            crate::server::try_request(&pool, &client, &target, &req)
        })
        .await
        .context("--ready-check-timeout-sec: the server did not answer a first request in time")?;
        eprintln!("the server answered a first request (--ready-check-timeout-sec)");
    }
    let input_counts = input_count_source(
        config,
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
    let lengths = LengthStats::of(&samples);
    eprintln!("{}", lengths.one_line(&config.dataset.name));
    eprintln!("input token counts: {}", input_counts.describe());
    if let Some(first) = samples.first().filter(|_| config.preflight) {
        crate::preflight::check(
            &crate::preflight::Preflight {
                pool: &pool,
                client: &client,
                target: &target,
                tokenizer: &tokenizer,
                template: &template,
            },
            first,
        )
        .await?;
    }
    pool.prewarm(widest.clamp(1, 1024))?;
    Ok(Prepared {
        input_counts,
        runner_pool: pool,
        used_plugins: used_plugins.iter().map(UsedPlugin::from).collect(),
        info,
        tokenizer,
        samples: Arc::new(samples),
        target,
        client,
        model,
    })
}

/// The table row of a finished stage.
fn summary_of(stage: &Stage, o: &BenchOutcome) -> StageSummary {
    let m = &o.metrics;
    let q = &m.stage_quantiles;
    StageSummary {
        label: if stage.label.is_empty() {
            "run".into()
        } else {
            stage.label.clone()
        },
        concurrency: stage.concurrency,
        request_rate: stage.rate,
        round: stage.round,
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
    config: &RunConfig,
    p: &Prepared,
    stage: &Stage,
    cancel: &Cancel,
    observer: &mut dyn StageObserver,
) -> anyhow::Result<BenchOutcome> {
    let load = &config.load;
    let (plan, pattern) = crate::plan::plan_for(load, config.request.streaming, stage, &p.samples)?;
    let digests: Vec<String> = p.used_plugins.iter().map(|u| u.sha256.clone()).collect();
    let plan_digest = plan.digest(&p.samples, &digests);
    let (plan, warmup) = match &load.shard {
        Some(shard) => {
            eprintln!(
                "llmb: shard {}/{} (from {}), plan {}",
                shard.index,
                shard.count,
                shard.source,
                &plan_digest[..16]
            );
            (
                plan.for_shard(shard),
                crate::plan::Warmup {
                    requests: shard.share_of(load.warmup.requests),
                    ..load.warmup
                },
            )
        }
        None => (plan, load.warmup),
    };
    let backend = config.plugins.backend.clone();
    let run_info = RunInfo {
        plugins: p.used_plugins.clone(),
        shard: load.shard.clone(),
        plan_digest,
        start: None,
        timing: None,
        backend: backend.clone(),
        endpoint_type: backend,
        label: config.label.clone(),
        model_id: config
            .server
            .served_model_name
            .clone()
            .unwrap_or_else(|| p.model.clone()),
        tokenizer_id: p.tokenizer.id(),
        input_counts: p.input_counts.clone(),
        base_url: crate::secrets::redact_url(&p.target.base_url),
        endpoint: config
            .server
            .endpoint
            .clone()
            .unwrap_or_else(|| p.info.default_endpoint.clone()),
        dataset_name: config.dataset.name.clone(),
        num_prompts: match &plan {
            LoadPlan::Schedule(jobs) => jobs.len().saturating_sub(warmup.requests),
            LoadPlan::Clients(_) => stage.requests,
        },
        request_rate: stage.rate,
        burstiness: load.burstiness,
        max_concurrency: stage.concurrency,
        output_len_forced: config.request.ignore_eos && p.info.supports_ignore_eos,
        output_len_forceable: p.info.supports_ignore_eos,
        interrupted: false,
        pattern,
    };
    let records_path = observer.records_path(&run_info, stage);

    let runner = Arc::new(Runner {
        pool: p.runner_pool.clone(),
        client: p.client.clone(),
        target: p.target.clone(),
        tokenizer: p.tokenizer.clone(),
        samples: p.samples.clone(),
        template: config.request.template(&p.model),
        max_concurrency: stage.concurrency,
        warmup,
        show_progress: config.show_progress,
        max_plugin_faults: config.plugins.max_faults,
        shard: load.shard.clone(),
        stop_on_slos: load.stop_on_slos.clone(),
    });
    let scraper = match &config.server.metrics {
        Some(sm) => Some(
            Scraper::start(
                transport::client_with(
                    transport::PoolSettings {
                        max_idle: 1,
                        insecure_tls: config.server.pool.insecure_tls,
                        ..Default::default()
                    },
                    config.server.ca_cert.as_deref(),
                    false,
                )?,
                sm.url.clone(),
                sm.interval,
                Selection::parse(sm.selection.as_deref()),
            )
            .await?,
        ),
        None => None,
    };
    // From here on, memory growth is the stage's: connections, requests in flight, records.
    let memory = crate::memory::PeakWatch::start();
    let connections_warmed = if config.server.pool.warm {
        let count = connections_to_warm(&plan, stage);
        // Best effort: a server that refuses connections fails the requests themselves, each
        // counted with its reason.
        let warmed = match p.client.warm(&p.target.base_url, count).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!(
                    "llmb: could not open connections before the timed phase: {}",
                    crate::secrets::scrub(&e.to_string())
                );
                0
            }
        };
        Some(warmed)
    } else {
        p.client.drop_idle();
        None
    };
    let stage_index = load.stages.iter().position(|s| std::ptr::eq(s, stage));
    let start = match (load.start_at, &load.sync_dir, &load.shard, stage_index) {
        // The first stage starts at --start-at.
        (Some(at), _, _, Some(0)) => {
            Some(wait_for_start(at, load.allow_late_start, load.shard.as_ref()).await?)
        }
        // Later stages (or every stage without --start-at) start when all shards got there.
        (_, Some(dir), Some(shard), Some(k)) => {
            let at = crate::shard::stage_barrier(dir, k, shard).await?;
            Some(wait_for_start(at, true, Some(shard)).await?)
        }
        _ => None,
    };
    let cpu_before = crate::cpu::process_cpu();
    let executed = runner
        .execute(&plan, records_path.as_deref(), cancel)
        .await?;
    let server_metrics = match scraper {
        Some(s) => Some(s.finish().await?),
        None => None,
    };
    let client_cpu = crate::cpu::process_cpu().saturating_sub(cpu_before);
    let client_memory = memory.finish();
    let measured = executed.elapsed.saturating_sub(executed.measured_from);
    let mut metrics =
        crate::metrics::compute(&executed.records, measured.as_secs_f64(), &config.metrics);
    metrics.http_phases.connections_warmed = connections_warmed;
    let t0_unix = std::time::SystemTime::now()
        .checked_sub(executed.t0.elapsed())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let info = RunInfo {
        interrupted: executed.interrupted,
        start,
        timing: Some(crate::outcome::RunTiming {
            t0_unix_ns: t0_unix.as_nanos() as u64,
            measured_from_ns: executed.measured_from.as_nanos() as u64,
            elapsed_ns: executed.elapsed.as_nanos() as u64,
        }),
        ..run_info
    };
    let stop_reason = executed
        .interrupted
        .then(|| stop_reason(cancel, executed.stopped_in));
    Ok(BenchOutcome {
        info,
        metrics,
        metrics_config: config.metrics.clone(),
        records: executed.records,
        records_path,
        result_path: None,
        client_cpu,
        client_memory,
        server_metrics,
        stop_reason,
        t0_monotonic_ns: crate::clock::instant_to_monotonic_ns(executed.t0),
    })
}

/// Latency assumed when estimating how many connections an open-loop stage keeps busy at once
/// (Little's law: rate × latency).
const ASSUMED_LATENCY_FOR_WARMING: f64 = 2.0;
/// Most connections opened ahead for an uncapped open-loop stage: at 10,000 req/s the estimate
/// alone would open 20,000 sockets, more than most open-file limits, for requests that may
/// never overlap. Capped stages (`--max-concurrency`, clients) open what they ask for.
const MAX_WARMED_BY_RATE: usize = 1_000;

/// How many connections a stage will use at once: its clients, its concurrency cap, or for an
/// uncapped schedule the rate times [`ASSUMED_LATENCY_FOR_WARMING`], never more than it sends.
fn connections_to_warm(plan: &LoadPlan, stage: &Stage) -> usize {
    match plan {
        LoadPlan::Clients(c) => c.clients,
        LoadPlan::Schedule(jobs) => {
            let by_rate = if stage.rate.is_finite() {
                ((stage.rate * ASSUMED_LATENCY_FOR_WARMING).ceil().max(1.0) as usize)
                    .min(MAX_WARMED_BY_RATE)
            } else {
                usize::MAX
            };
            jobs.len()
                .min(stage.concurrency.unwrap_or(usize::MAX))
                .min(by_rate)
        }
    }
}

/// `interrupted (Ctrl-C) during measure`.
fn stop_reason(cancel: &Cancel, phase: &str) -> String {
    let cause = cancel.cause().unwrap_or(StopCause::Interrupt);
    format!("{cause} during {phase}")
}

/// A run stopped before anything was measured: an empty records file and an outcome saying
/// so, so every interrupted run leaves the same files behind.
fn stopped_in_prepare(
    config: &RunConfig,
    stage: &Stage,
    cancel: &Cancel,
    observer: &mut dyn StageObserver,
) -> anyhow::Result<BenchOutcome> {
    let metrics_config: MetricsConfig = config.metrics.clone();
    let backend = config.plugins.backend.clone();
    let info = RunInfo {
        plugins: Vec::new(),
        shard: config.load.shard.clone(),
        plan_digest: String::new(),
        start: None,
        timing: None,
        backend: backend.clone(),
        endpoint_type: backend,
        label: config.label.clone(),
        model_id: config
            .server
            .served_model_name
            .clone()
            .or_else(|| config.server.model.clone())
            .unwrap_or_default(),
        tokenizer_id: config
            .dataset
            .tokenizer
            .as_ref()
            .map_or_else(String::new, |t| t.display().to_string()),
        input_counts: InputCountSource::Estimate {
            reason: "stopped before the input lengths were counted".into(),
        },
        base_url: crate::secrets::redact_url(&config.server.base_url),
        endpoint: config.server.endpoint.clone().unwrap_or_default(),
        dataset_name: config.dataset.name.clone(),
        num_prompts: stage.requests,
        request_rate: stage.rate,
        burstiness: config.load.burstiness,
        max_concurrency: stage.concurrency,
        output_len_forced: false,
        output_len_forceable: false,
        interrupted: true,
        pattern: LoadPattern::default(),
    };
    let records_path = observer.records_path(&info, stage);
    if let Some(path) = &records_path {
        crate::records::RecordWriter::create(path)?;
    }
    let metrics = crate::metrics::compute(&[], 0.0, &metrics_config);
    Ok(BenchOutcome {
        info,
        metrics,
        metrics_config,
        records: Vec::new(),
        records_path,
        result_path: None,
        client_cpu: Duration::ZERO,
        client_memory: crate::memory::MemoryUse::default(),
        server_metrics: None,
        stop_reason: Some(stop_reason(cancel, "prepare")),
        t0_monotonic_ns: crate::clock::monotonic_ns(),
    })
}

/// Waits until `at` (wall clock) for a coordinated start; a shard that arrives late says by
/// how much and refuses to run unless `allow_late`.
async fn wait_for_start(
    at: std::time::SystemTime,
    allow_late: bool,
    shard: Option<&crate::shard::Shard>,
) -> anyhow::Result<crate::outcome::StartInfo> {
    let now = std::time::SystemTime::now();
    let at_unix = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let who = shard.map_or("this run".to_string(), |s| {
        format!("shard {}/{}", s.index, s.count)
    });
    let clock = clock_status();
    if clock.contains("NOT synchronized") && shard.is_some() {
        eprintln!(
            "llmb: warning: this machine's clock is not synchronized ({clock}); shards on other \
             machines start together only as well as their clocks agree"
        );
    }
    match at.duration_since(now) {
        Ok(wait) => {
            eprintln!(
                "llmb: {who} waits {:.3} s for --start-at",
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
            Ok(crate::outcome::StartInfo {
                start_at_unix_s: at_unix,
                waited_ms: wait.as_secs_f64() * 1e3,
                late_ms: 0.0,
                clock,
            })
        }
        Err(late) => {
            let late = late.duration();
            anyhow::ensure!(
                allow_late,
                "{who} is {:.3} s late for --start-at: the other shards may have started \
                 without it (--allow-late-start runs anyway)",
                late.as_secs_f64()
            );
            eprintln!(
                "llmb: {who} starts {:.3} s late for --start-at",
                late.as_secs_f64()
            );
            Ok(crate::outcome::StartInfo {
                start_at_unix_s: at_unix,
                waited_ms: 0.0,
                late_ms: late.as_secs_f64() * 1e3,
                clock,
            })
        }
    }
}

/// The clock `--start-at` is read on and what the kernel's time discipline (NTP, PTP via
/// chrony or ntpd) says of its error: shards line up only as well as their clocks agree.
fn clock_status() -> String {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: modes = 0 only reads the kernel's clock state into the zeroed struct.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        let state = unsafe { libc::adjtimex(&mut tx) };
        if state >= 0 {
            let synced = state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0;
            return format!(
                "system clock (CLOCK_REALTIME); kernel time discipline: {}, estimated error \
                 {} µs, maximum error {} µs",
                if synced {
                    "synchronized"
                } else {
                    "NOT synchronized"
                },
                tx.esterror,
                tx.maxerror
            );
        }
    }
    "system clock (CLOCK_REALTIME); its error is unknown: keep the nodes NTP- or \
     PTP-synchronized"
        .into()
}
