//! `llmb bench`'s flags turned once into the engine's typed [`RunConfig`]: every flag is
//! checked here, with its name in the error, so the engine never sees a command line.
//! [`vllm`] and [`sweep`] do the same for the flags of `vllm bench serve` and of the
//! concurrency-sweep scripts.

pub mod sweep;
pub mod vllm;

use std::time::Duration;

use anyhow::{Context, bail};
use hyper::header::{HeaderName, HeaderValue};
use llmb_engine::config::{
    DatasetConfig, DatasetSource, InputCounting, LoadConfig, MixPart, PluginConfig,
    RequestDefaults, RunConfig, ServerConfig, ServerMetricsConfig,
};
use llmb_engine::metrics::MetricsConfig;
use llmb_engine::plan::{Stage, Warmup, stage_grid};
use llmb_engine::plugin::DatasetRequest;
use llmb_engine::scheduler::{Ramp, RampStrategy};
use llmb_engine::transport::{self, PoolSettings};

use crate::args::{BenchArgs, RampUpStrategy, split_kv};

/// Where `llmb bench` sends its requests: a server given by `--base-url`/`--port`, or the
/// simulator `bench` started itself (at `base_url`, serving `model`).
pub enum Server<'a> {
    Given,
    Simulator { base_url: String, model: &'a str },
}

/// The run `args` describe (already normalized by [`crate::config::sweep::normalize`]).
pub fn run_config(args: &BenchArgs, server: Server<'_>) -> anyhow::Result<RunConfig> {
    let metrics = metrics_config(args)?;
    anyhow::ensure!(args.num_prompts > 0, "--num-prompts must be at least 1");
    if args.max_concurrency == Some(0) {
        bail!("--max-concurrency must be at least 1");
    }
    anyhow::ensure!(
        args.trace_speed > 0.0 && args.trace_speed.is_finite(),
        "--trace-speed must be a positive number, got {}",
        args.trace_speed
    );
    if args.num_clients == Some(0) {
        bail!("--num-clients must be at least 1");
    }
    let backend_options: Vec<(String, String)> = args
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
    vllm::validate(args)?;
    for notice in args.vllm.notices(&args.backend) {
        eprintln!("{notice}");
    }
    anyhow::ensure!(
        args.plugin_call_budget > 0,
        "--plugin-call-budget must be at least 1 µs"
    );
    cancel_plan(args)?;
    let stages = stages(args)?;
    let (base_url, simulated, model) = match server {
        Server::Given => (
            match &args.base_url {
                Some(u) => u.trim_end_matches('/').to_string(),
                None => format!("http://{}:{}", args.host, args.port.unwrap_or(8000)),
            },
            false,
            args.model.clone(),
        ),
        Server::Simulator { base_url, model } => (
            base_url,
            true,
            Some(args.model.clone().unwrap_or_else(|| model.to_string())),
        ),
    };
    let interval = seconds(
        "--server-metrics-interval",
        args.server_metrics_interval,
        false,
    )?;
    let server_metrics = args
        .server_metrics_url
        .as_ref()
        .map(|u| ServerMetricsConfig {
            url: if u.starts_with('/') {
                format!("{base_url}{u}")
            } else {
                u.clone()
            },
            interval,
            selection: args.server_metrics.clone(),
        });
    let server = ServerConfig {
        simulated,
        endpoint: args.endpoint.clone(),
        headers,
        api_key: args.api_key.clone(),
        api_key_header: args.api_key_header.clone(),
        timeout: seconds("--timeout", args.timeout, false)?,
        limits: limits(args)?,
        pool: PoolSettings {
            idle_timeout: seconds("--pool-idle-timeout", args.pool_idle_timeout, true)?,
            connect_timeout: seconds("--connect-timeout", args.connect_timeout, false)?,
            insecure_tls: args.vllm.insecure,
            warm: !args.no_warm_connections,
            ..PoolSettings::default()
        },
        ca_cert: args.ca_cert.clone(),
        model,
        served_model_name: args.served_model_name.clone(),
        ready_timeout: (args.vllm.ready_check_timeout_sec > 0)
            .then(|| Duration::from_secs(args.vllm.ready_check_timeout_sec)),
        profile: args.vllm.profile,
        metrics: server_metrics,
        ..ServerConfig::new(base_url)
    };
    Ok(RunConfig {
        plugins: PluginConfig {
            paths: crate::plugin_cmd::with_installed(
                &args.plugins,
                &[&args.backend, &args.dataset_name],
            )?,
            backend: args.backend.clone(),
            backend_options,
            call_budget_us: args.plugin_call_budget,
            max_instances: args.plugin_instances,
            allow_native: args.allow_native,
            pins: match &args.lock {
                Some(path) => Some(llmb_registry::lock::Lock::load(path)?.pins(path)),
                None => None,
            },
            max_faults: args.max_plugin_faults,
        },
        server,
        dataset: dataset_config(args)?,
        request: RequestDefaults {
            ignore_eos: args.ignore_eos,
            temperature: args.temperature,
            // Sampling flags under --extra-body; a bad --extra-body was refused above.
            extra_body: crate::config::vllm::request_extra_body(args)
                .unwrap_or_else(|_| args.extra_body.clone()),
            think_time: seconds("--think-time", args.think_time, true)?,
            streaming: !args.no_stream,
            lora: args.vllm.lora(args.seed),
            request_id_prefix: args.vllm.request_id_prefix.clone(),
            cancel: cancel_plan(args)?,
        },
        load: LoadConfig {
            stages,
            stop_on_slos: args.stop_on_slos.clone(),
            seed: args.seed,
            burstiness: args.burstiness,
            warmup: Warmup {
                requests: args.num_warmups,
                until: args.warmup_duration,
            },
            duration: args.duration,
            use_trace_timestamps: args.vllm.self_timed() != Some(false),
            trace_speed: args.trace_speed,
            clients: args.num_clients,
            ramp_up_time: args.ramp_up_time.map(Duration::from_secs_f64),
            client_stop_time: args.client_stop_time.map(Duration::from_secs_f64),
            turns_per_client: args.num_turns,
            shard: llmb_engine::shard::Shard::detect(
                args.shard.as_deref(),
                args.shards,
                &|name| std::env::var(name).ok(),
            )?,
            start_at: args.start_at,
            allow_late_start: args.allow_late_start,
            sync_dir: args.sync_dir.clone(),
            ramp: args.ramp_up_strategy.map(|strategy| Ramp {
                strategy: match strategy {
                    RampUpStrategy::Linear => RampStrategy::Linear,
                    RampUpStrategy::Exponential => RampStrategy::Exponential,
                },
                start_rps: args.ramp_up_start_rps.unwrap_or(0.0),
                end_rps: args.ramp_up_end_rps.unwrap_or(0.0),
            }),
        },
        metrics,
        label: args.label.clone(),
        show_progress: !args.disable_tqdm && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        preflight: !args.no_preflight,
    })
}

/// The prompts: `--user`/`--prompt-file` replace the reader, `--dataset-name mixed` mixes
/// `--mix` readers; `--system-prompt-file` and `--system` go in front of every prompt,
/// `--max-tokens` sets every output length (see [`crate::config::sweep`]).
pub fn dataset_config(args: &BenchArgs) -> anyhow::Result<DatasetConfig> {
    let compat = &args.sweep_compat;
    let source = if let Some(prompts) = sweep::fixed_prompts(args)? {
        DatasetSource::Fixed {
            prompts,
            output_tokens: compat.max_tokens.unwrap_or(args.custom_output_len),
        }
    } else if args.dataset_name == "mixed" {
        let parts = args
            .mix
            .iter()
            .map(|m| mix_part(m))
            .collect::<anyhow::Result<_>>()?;
        DatasetSource::Mixed {
            parts,
            request: dataset_request(args)?,
            shuffle: !args.disable_shuffle,
        }
    } else {
        anyhow::ensure!(
            args.mix.is_empty(),
            "--mix is for --dataset-name mixed (the dataset is {})",
            args.dataset_name
        );
        DatasetSource::Reader(dataset_request(args)?)
    };
    let mut system_prompts = Vec::new();
    if let Some(path) = &args.system_prompt_file {
        let system = std::fs::read_to_string(path)
            .with_context(|| format!("--system-prompt-file {}: cannot read", path.display()))?;
        let system = system.trim_end().to_string();
        anyhow::ensure!(
            !system.is_empty(),
            "--system-prompt-file {}: the file is empty",
            path.display()
        );
        system_prompts.push(system);
    }
    if let Some(system) = &compat.system {
        anyhow::ensure!(!system.trim().is_empty(), "--system: the text is empty");
        system_prompts.push(system.clone());
    }
    let input_counts = if args.no_server_tokenize {
        InputCounting::Estimate {
            reason: "--no-server-tokenize".into(),
        }
    } else {
        // The readers that make prompts of an asked length: make it the server's length.
        InputCounting::Server {
            fit: matches!(
                args.dataset_name.as_str(),
                "random" | "sonnet" | "shared-prefix"
            ),
        }
    };
    Ok(DatasetConfig {
        name: args.dataset_name.clone(),
        source,
        cycle: args.dataset_cycle,
        system_prompts,
        max_tokens: compat.max_tokens,
        tokenizer: args.tokenizer.clone(),
        input_counts,
    })
}

/// One `--mix WEIGHT:DATASET[:PATH]`.
pub fn mix_part(spec: &str) -> anyhow::Result<MixPart> {
    let mut fields = spec.splitn(3, ':');
    let weight = fields.next().unwrap_or_default().trim();
    let dataset = fields.next().unwrap_or_default().trim();
    let path = fields.next().map(str::trim).filter(|p| !p.is_empty());
    let weight: f64 = weight
        .parse()
        .ok()
        .filter(|w: &f64| w.is_finite() && *w > 0.0)
        .with_context(|| {
            format!(
                "--mix {spec:?}: expected WEIGHT:DATASET[:PATH] with a positive WEIGHT, got {weight:?}"
            )
        })?;
    anyhow::ensure!(
        !dataset.is_empty() && dataset != "mixed",
        "--mix {spec:?}: expected WEIGHT:DATASET[:PATH] naming a dataset other than mixed"
    );
    Ok(MixPart {
        weight,
        dataset: dataset.to_string(),
        path: path.map(std::path::PathBuf::from),
        spec: spec.to_string(),
    })
}

/// `--percentile-metrics`, `--metric-percentiles`, `--goodput` and `--slo-file`.
pub fn metrics_config(args: &BenchArgs) -> anyhow::Result<MetricsConfig> {
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
                Some(path) => llmb_engine::metrics::parse_slo_file(path)?,
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
        slice_duration_s: args.slice_duration.map(|d| d.as_secs_f64()),
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
    args.vllm.random_mm_options(&mut options);
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

/// `--header`s and `--secret-header`s; the values of secret ones (see [`llmb_engine::secrets`]) are
/// registered so no output shows them.
pub fn user_headers(args: &BenchArgs) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
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
            if secret || llmb_engine::secrets::is_secret_header(&k) {
                llmb_engine::secrets::register(&v);
                value.set_sensitive(true);
            }
            Ok((name, value))
        })
        .collect()
}

/// Longest duration a flag may give: a billion seconds (31 years). Past it, adding the flag to a
/// clock reading overflows (`--timeout 1e19` panicked) or the conversion does (`1e30`).
const MAX_FLAG_SECONDS: f64 = 1e9;

/// A duration flag in seconds: finite, positive (or zero where `zero_ok`), at most
/// [`MAX_FLAG_SECONDS`]; anything else is an error naming the flag.
fn seconds(flag: &str, v: f64, zero_ok: bool) -> anyhow::Result<Duration> {
    let least_ok = if zero_ok { v >= 0.0 } else { v > 0.0 };
    anyhow::ensure!(
        least_ok && v <= MAX_FLAG_SECONDS,
        "{flag} must be a {} number of seconds, at most {MAX_FLAG_SECONDS:e} (got {v})",
        if zero_ok { "non-negative" } else { "positive" }
    );
    Ok(Duration::from_secs_f64(v))
}

/// The per-request bounds of `--header-timeout`, `--read-idle-timeout` and the size flags.
pub fn limits(args: &BenchArgs) -> anyhow::Result<transport::Limits> {
    let secs = |flag: &str, v: f64| seconds(flag, v, false);
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

/// Rates × concurrencies × rounds, each stage with its share of requests.
fn stages(args: &BenchArgs) -> anyhow::Result<Vec<Stage>> {
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(args.num_runs >= 1, "--num-runs must be at least 1");
    anyhow::ensure!(!args.request_rate.is_empty(), "--request-rate is empty");
    let concurrencies: Vec<Option<usize>> = match &args.concurrency {
        Some(list) => llmb_engine::sweep::parse_concurrency_list(list)?
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
    Ok(stage_grid(
        &args.request_rate,
        &concurrencies,
        args.rounds,
        requests,
    ))
}

/// `--cancel-rate` with `--cancel-after`: both or neither.
fn cancel_plan(args: &BenchArgs) -> anyhow::Result<Option<llmb_engine::runner::CancelPlan>> {
    let rate = match args.request_cancellation_rate {
        Some(pct) => {
            anyhow::ensure!(
                (0.0..=100.0).contains(&pct),
                "--request-cancellation-rate is a percentage from 0 to 100, not {pct}"
            );
            Some(pct / 100.0)
        }
        None => args.cancel_rate,
    };
    let after_ms = args
        .request_cancellation_delay
        .map(|s| s * 1e3)
        .or(args.cancel_after);
    match (rate, after_ms) {
        (None, None) => Ok(None),
        (Some(rate), Some(ms)) => {
            anyhow::ensure!(
                ms.is_finite() && ms >= 0.0,
                "--cancel-after must be a number of milliseconds >= 0, not {ms}"
            );
            let after = Duration::try_from_secs_f64(ms / 1e3)
                .map_err(|_| anyhow::anyhow!("--cancel-after {ms} ms is not a usable time"))?;
            Ok((rate > 0.0).then_some(llmb_engine::runner::CancelPlan {
                rate,
                after,
                seed: args.seed,
            }))
        }
        (Some(_), None) => bail!("--cancel-rate needs --cancel-after MS (when to cancel)"),
        (None, Some(_)) => bail!("--cancel-after needs --cancel-rate P (which share to cancel)"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn limit_flag_defaults_are_the_engine_defaults() {
        let args = crate::args::BenchArgs::defaults();
        assert_eq!(
            super::limits(&args).unwrap(),
            llmb_engine::transport::Limits::default()
        );
    }

    fn bench(words: &[&str]) -> crate::args::BenchArgs {
        use clap::Parser;
        let cli = crate::args::Cli::try_parse_from(["llmb", "bench"].iter().chain(words))
            .expect("the flags parse");
        match cli.command {
            crate::args::Command::Bench(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn duration_flags_beyond_a_clock_are_errors_naming_the_flag() {
        // `--timeout 1e30` panicked converting, `--read-idle-timeout 1e19` adding to a clock.
        for (flag, value) in [
            ("--timeout", "1e30"),
            ("--timeout", "1e19"),
            ("--read-idle-timeout", "1e19"),
            ("--connect-timeout", "inf"),
            ("--think-time", "NaN"),
            ("--pool-idle-timeout", "1e12"),
            ("--server-metrics-interval", "0"),
        ] {
            let args = bench(&["--base-url", "http://127.0.0.1:1", flag, value]);
            let err = super::run_config(&args, super::Server::Given)
                .err()
                .unwrap_or_else(|| panic!("{flag} {value} was accepted"));
            assert!(format!("{err:#}").contains(flag), "{flag} {value}: {err:#}");
        }
        let ok = bench(&[
            "--think-time",
            "0",
            "--pool-idle-timeout",
            "0",
            "--timeout",
            "1e9",
        ]);
        assert_eq!(
            super::seconds("--think-time", ok.think_time, true).unwrap(),
            std::time::Duration::ZERO
        );
        assert!(super::seconds("--timeout", ok.timeout, false).is_ok());
    }

    #[test]
    fn cancellation_flags_in_llmbs_and_aiperfs_names() {
        let ours = super::cancel_plan(&bench(&["--cancel-rate", "10%", "--cancel-after", "500"]))
            .unwrap()
            .unwrap();
        let aiperf = super::cancel_plan(&bench(&[
            "--request-cancellation-rate",
            "10",
            "--request-cancellation-delay",
            "0.5",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(ours, aiperf);
        assert!((ours.rate - 0.1).abs() < 1e-12);
        assert_eq!(ours.after, std::time::Duration::from_millis(500));
        let half = super::cancel_plan(&bench(&["--cancel-rate", "0.5"])).unwrap_err();
        assert!(half.to_string().contains("--cancel-after"), "{half}");
        assert!(super::cancel_plan(&bench(&[])).unwrap().is_none());
        let huge = super::cancel_plan(&bench(&["--cancel-rate", "0.5", "--cancel-after", "1e30"]));
        assert!(huge.unwrap_err().to_string().contains("not a usable time"));
    }

    #[test]
    fn mix_specs_name_what_is_wrong() {
        assert_eq!(
            super::mix_part("3:sharegpt:data/a:b.json").unwrap(),
            llmb_engine::config::MixPart {
                weight: 3.0,
                dataset: "sharegpt".into(),
                path: Some("data/a:b.json".into()),
                spec: "3:sharegpt:data/a:b.json".into(),
            }
        );
        assert_eq!(super::mix_part("0.5:random").unwrap().path, None);
        for bad in ["random", "0:random", "-1:random", "2:", "1:mixed"] {
            let err = super::mix_part(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
