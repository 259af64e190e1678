//! The console report in `vllm bench serve`'s layout and the result JSON with vLLM's keys, so
//! people and scripts that read vLLM's output read llmb's unchanged. llmb's own diagnostics go
//! below vLLM's closing rule and under an `"llmb"` key.

use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::metrics::{BenchmarkMetrics, MetricStats, MetricsConfig, PERCENTILE_METRICS};
use crate::records::{RequestRecord, ns_to_s};

/// What was run, for the report header and the result file.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub backend: String,
    pub endpoint_type: String,
    pub label: Option<String>,
    pub model_id: String,
    pub tokenizer_id: String,
    /// Where the input token counts came from (`--tokenizer`, the server, an estimate).
    pub input_counts: crate::input_tokens::InputCountSource,
    pub base_url: String,
    pub endpoint: String,
    pub dataset_name: String,
    pub num_prompts: usize,
    /// `f64::INFINITY` for "inf".
    pub request_rate: f64,
    pub burstiness: f64,
    pub max_concurrency: Option<usize>,
    /// False when output lengths were not forced to the requested length (EOS not ignored).
    pub output_len_forced: bool,
    /// Whether the adapter could have forced them (`--ignore-eos`).
    pub output_len_forceable: bool,
    /// The run was cut short (Ctrl-C): the numbers cover what finished.
    pub interrupted: bool,
    /// How load was applied beyond vLLM's rate, burstiness and concurrency.
    pub pattern: LoadPattern,
}

/// The load pattern of a run, for the report and the result file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadPattern {
    /// `poisson` (rate and burstiness), `ramp`, `trace`, `clients` or `duration`.
    pub mode: String,
    /// `(strategy, start rps, end rps)` of a `--ramp-up-strategy` run.
    pub ramp: Option<(String, f64, f64)>,
    /// `(first request, offset s, rps)` each time a ramp's whole-number rate changes.
    pub rate_steps: Vec<(usize, f64, f64)>,
    pub num_clients: Option<usize>,
    pub ramp_up_time_s: Option<f64>,
    pub trace_speed: Option<f64>,
    /// `--duration` in seconds, when the run was limited by time.
    pub duration_limit_s: Option<f64>,
    /// 1-based round of a `--rounds` run.
    pub round: u32,
    /// The stage's place in a sweep, e.g. `concurrency 8` (none for a single run).
    pub stage: Option<String>,
    /// `--no-stream`: whole responses, so TTFT, TPOT and ITL do not exist.
    pub no_stream: bool,
}

/// The label name and section title vLLM's `process_one_metric` uses for a metric key.
fn metric_names(key: &str) -> (&'static str, &'static str) {
    match key {
        "ttft" => ("TTFT", "Time to First Token"),
        "tpot" => ("TPOT", "Time per Output Token (excl. 1st token)"),
        "itl" => ("ITL", "Inter-token Latency"),
        _ => ("E2EL", "End-to-end Latency"),
    }
}

/// vLLM's percentile word: `str(int(p))` when `p` is integral, else `str(p)`.
fn p_word(p: f64) -> String {
    if p.fract() == 0.0 && p.abs() < 1e16 {
        format!("{}", p as i64)
    } else {
        py_float(p)
    }
}

/// Python's `str(float)`: `10.0`, `0.5`, `inf`, `1e-05`.
fn py_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        let word = if v > 0.0 { "inf" } else { "-inf" };
        return word.to_string();
    }
    let magnitude = v.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// A JSON number, or `"inf"` for an infinite value (as vLLM writes `request_rate`).
fn number_or_inf(v: f64) -> Value {
    if v.is_infinite() {
        json!(py_float(v))
    } else {
        json!(v)
    }
}

/// `"{:<40} {:<10}".format(label, value)`.
fn line(out: &mut dyn Write, label: &str, value: impl std::fmt::Display) -> std::io::Result<()> {
    writeln!(out, "{label:<40} {value:<10}")
}

/// `"{:<40} {:<10.2f}".format(label, value)`.
fn fline(out: &mut dyn Write, label: &str, value: f64) -> std::io::Result<()> {
    writeln!(out, "{label:<40} {value:<10.2}")
}

/// Prints the report as vLLM does, then llmb's additions below the closing rule.
///
/// Differences from vLLM: the configured request rate line is printed as `inf` for an
/// unlimited rate (vLLM omits the line then), and TTFT stats skip requests that did not stream.
pub fn print_console(
    info: &RunInfo,
    m: &BenchmarkMetrics,
    cfg: &MetricsConfig,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, "{:=^50}", " Serving Benchmark Result ")?;
    line(out, "Successful requests:", m.completed)?;
    line(out, "Failed requests:", m.failed)?;
    if let Some(c) = info.max_concurrency {
        line(out, "Maximum request concurrency:", c)?;
    }
    if info.request_rate.is_infinite() {
        line(out, "Request rate configured (RPS):", "inf")?;
    } else {
        fline(out, "Request rate configured (RPS):", info.request_rate)?;
    }
    fline(out, "Benchmark duration (s):", m.duration_s)?;
    line(out, "Total input tokens:", m.total_input)?;
    line(out, "Total generated tokens:", m.total_output)?;
    fline(out, "Request throughput (req/s):", m.request_throughput)?;
    if let Some(goodput) = m.request_goodput {
        fline(out, "Request goodput (req/s):", goodput)?;
    }
    fline(out, "Output token throughput (tok/s):", m.output_throughput)?;
    fline(
        out,
        "Peak output token throughput (tok/s):",
        m.max_output_tokens_per_s,
    )?;
    fline(
        out,
        "Peak concurrent requests:",
        m.max_concurrent_requests as f64,
    )?;
    fline(
        out,
        "Total token throughput (tok/s):",
        m.total_token_throughput,
    )?;
    for key in PERCENTILE_METRICS {
        if !cfg.percentile_metrics.iter().any(|k| k == key) {
            continue;
        }
        if info.pattern.no_stream && key != "e2el" {
            continue;
        }
        let Some(s) = m.stats(key) else { continue };
        let (name, title) = metric_names(key);
        writeln!(out, "{title:-^50}")?;
        fline(out, &format!("Mean {name} (ms):"), s.mean)?;
        fline(out, &format!("Median {name} (ms):"), s.median)?;
        for (p, v) in &s.percentiles {
            fline(out, &format!("P{} {name} (ms):", p_word(*p)), *v)?;
        }
    }
    if info.pattern.no_stream {
        if !cfg.percentile_metrics.iter().any(|k| k == "e2el") {
            writeln!(out, "{:-^50}", "End-to-end Latency")?;
            fline(out, "Mean E2EL (ms):", m.e2el.mean)?;
            fline(out, "Median E2EL (ms):", m.e2el.median)?;
            for (p, v) in &m.e2el.percentiles {
                fline(out, &format!("P{} E2EL (ms):", p_word(*p)), *v)?;
            }
        }
        writeln!(out, "TTFT, TPOT and ITL are not measured with --no-stream")?;
    }
    writeln!(out, "{}", "=".repeat(50))?;
    print_statistics(info, m, out)?;
    print_slos(m, cfg, out)?;
    print_extras(info, m, out)
}

/// Every latency metric with avg, p50, p90, p95, p99, min, max and stddev, one row each.
fn print_statistics(
    info: &RunInfo,
    m: &BenchmarkMetrics,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "(ms)", "avg", "p50", "p90", "p95", "p99", "min", "max", "std"
    )?;
    for key in PERCENTILE_METRICS {
        if info.pattern.no_stream && key != "e2el" {
            continue;
        }
        let Some(s) = m.stats(key) else { continue };
        let q = &s.summary;
        writeln!(
            out,
            "{:<6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            metric_names(key).0,
            s.mean,
            q.p50,
            q.p90,
            q.p95,
            q.p99,
            q.min,
            q.max,
            s.std
        )?;
    }
    Ok(())
}

/// Good requests and which SLO was missed how often.
fn print_slos(
    m: &BenchmarkMetrics,
    cfg: &MetricsConfig,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let Some(slo) = &m.slo else { return Ok(()) };
    let limits: Vec<String> = cfg
        .goodput_slos_ms
        .iter()
        .map(|(metric, ms)| format!("{metric} ≤ {ms} ms"))
        .collect();
    writeln!(out, "{:-^50}", " SLOs ")?;
    writeln!(out, "{:<40} {}", "Limits:", limits.join(", "))?;
    let share = if m.completed > 0 {
        100.0 * slo.good_requests as f64 / m.completed as f64
    } else {
        0.0
    };
    writeln!(
        out,
        "{:<40} {} of {} successful ({share:.1} %)",
        "Good requests:", slo.good_requests, m.completed
    )?;
    for (metric, missed) in &slo.misses {
        writeln!(
            out,
            "{:<40} {missed}",
            format!("Missed {} SLO:", metric_names(metric).0)
        )?;
    }
    Ok(())
}

/// How far the pre-run input counts may drift from the server's usage before the report warns
/// (chat templates and BOS tokens account for a few tokens).
const USAGE_TOLERANCE: f64 = 0.03;

/// llmb's diagnostics: client queueing, schedule lag, where token counts came from, failures,
/// and caveats that change how the numbers above should be read.
fn print_extras(info: &RunInfo, m: &BenchmarkMetrics, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{:-^50}", " llmb (not part of vLLM's report) ")?;
    let mut queue = format!("mean {:.2}, median {:.2}", m.queue.mean, m.queue.median);
    for (p, v) in &m.queue.percentiles {
        queue.push_str(&format!(", p{} {v:.2}", p_word(*p)));
    }
    writeln!(out, "{:<40} {queue}", "Client queue time (ms):")?;
    let lag = &m.schedule_lag;
    writeln!(
        out,
        "{:<40} p50 {:.3}, p99 {:.3}, max {:.3}",
        "Schedule lag (ms):", lag.p50_ms, lag.p99_ms, lag.max_ms
    )?;
    if !m.token_sources.is_empty() {
        let sources: Vec<String> = m
            .token_sources
            .iter()
            .map(|(source, n)| format!("{} ({n})", source.describe()))
            .collect();
        writeln!(
            out,
            "{:<40} {}",
            "Output token counts from:",
            sources.join("; ")
        )?;
    }
    writeln!(
        out,
        "{:<40} {}",
        "Input token counts from:",
        info.input_counts.describe()
    )?;
    let ic = &m.input_counts;
    if ic.server_reported > 0 {
        writeln!(
            out,
            "{:<40} sent mean {:.1}; server usage {:.1} ({} requests), usage − sent {:+.1}",
            "Input tokens, sent vs server usage:",
            ic.mean_client,
            ic.mean_server,
            ic.server_reported,
            ic.mean_difference
        )?;
        let off = ic.mean_difference.abs() / ic.mean_server.max(1.0);
        let constant = ic.min_difference == ic.max_difference && ic.mean_difference > 0.0;
        if constant && off > USAGE_TOLERANCE {
            writeln!(
                out,
                "{:<40} {:+.0} tokens on every request (the server's chat template and special tokens, not counted in the prompt lengths)",
                "Template overhead (server usage):", ic.mean_difference
            )?;
        } else if off > USAGE_TOLERANCE {
            writeln!(
                out,
                "WARNING: the input counts known before the run differ from the server's usage by {:.1} %; \
                 input totals and throughput use the server's usage (give --tokenizer with the server's tokenizer, \
                 or --plugin-opt server=NAME, for counts that agree)",
                off * 100.0
            )?;
        }
    } else if m.completed > 0 {
        writeln!(
            out,
            "{:<40} the server reported no prompt token usage",
            "Input tokens, sent vs server usage:"
        )?;
    }
    if m.connection_retries > 0 {
        writeln!(
            out,
            "{:<40} {} (the server closed a reused connection before answering; sent again on a new one)",
            "Requests retried on a fresh connection:", m.connection_retries
        )?;
    }
    if !m.errors_by_kind.is_empty() {
        let errors: Vec<String> = m
            .errors_by_kind
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        writeln!(
            out,
            "{:<40} {}",
            "Failed requests by kind:",
            errors.join(", ")
        )?;
    }
    if !m.plugin_faults.is_empty() {
        let faults: Vec<String> = m
            .plugin_faults
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        writeln!(
            out,
            "{:<40} {}",
            "Plugin faults by kind:",
            faults.join(", ")
        )?;
    }
    let pt = &m.plugin_time;
    if pt.requests > 0 {
        writeln!(
            out,
            "{:<40} mean {:.1}, p99 {:.1}, max {:.1}",
            "Time in plugin calls per request (µs):", pt.mean_us, pt.p99_us, pt.max_us
        )?;
    }
    if !info.output_len_forced {
        writeln!(
            out,
            "Output lengths were NOT forced: {}",
            if info.output_len_forceable {
                "add --ignore-eos for exactly the requested lengths"
            } else {
                "this adapter cannot make the server ignore EOS"
            }
        )?;
    }
    print_pattern(info, m, out)?;
    if info.interrupted {
        writeln!(out, "Interrupted: partial results")?;
    }
    Ok(())
}

/// The load pattern, whether the client kept its schedule, and latencies from intended send.
fn print_pattern(info: &RunInfo, m: &BenchmarkMetrics, out: &mut dyn Write) -> std::io::Result<()> {
    let p = &info.pattern;
    if let Some(stage) = &p.stage {
        writeln!(out, "{:<40} {stage}", "Stage:")?;
    }
    if p.round > 1 {
        writeln!(out, "{:<40} {}", "Round:", p.round)?;
    }
    if let Some(n) = p.num_clients {
        writeln!(
            out,
            "{:<40} {n} (ramp-up {:.1} s)",
            "Closed-loop clients:",
            p.ramp_up_time_s.unwrap_or(0.0)
        )?;
    }
    if let Some(speed) = p.trace_speed {
        writeln!(out, "{:<40} {speed}x", "Trace replay speed:")?;
    }
    if let Some(d) = p.duration_limit_s {
        writeln!(out, "{:<40} {d:.1}", "Duration limit (s):")?;
    }
    if m.warmups > 0 {
        writeln!(out, "{:<40} {}", "Warmup requests (excluded):", m.warmups)?;
    }
    if let Some((strategy, start, end)) = &p.ramp {
        writeln!(out, "{:<40} {strategy} {start} -> {end} req/s", "Ramp-up:")?;
        let steps: Vec<String> = p
            .rate_steps
            .iter()
            .map(|(i, at, rps)| format!("#{i} @{at:.2}s {rps:.1}"))
            .collect();
        writeln!(
            out,
            "{:<40} {}",
            "Rate steps (request @time rps):",
            steps.join(", ")
        )?;
    }
    let sched = &m.schedule;
    if let (Some(want), Some(got)) = (sched.requested_rate, sched.achieved_rate) {
        writeln!(
            out,
            "{:<40} {want:.2} / {got:.2}",
            "Requested / achieved rate (req/s):"
        )?;
    }
    if !sched.kept {
        writeln!(
            out,
            "WARNING: the client could not keep the schedule (lag p99 {:.3} ms): the client, \
             not the server, was the bottleneck; compare the latencies from intended send below",
            m.schedule_lag.p99_ms
        )?;
    }
    for (name, s) in [
        ("TTFT from intended send (ms):", &m.ttft_from_intended),
        ("E2EL from intended send (ms):", &m.e2el_from_intended),
    ] {
        let mut text = format!("mean {:.2}, median {:.2}", s.mean, s.median);
        for (q, v) in &s.percentiles {
            text.push_str(&format!(", p{} {v:.2}", p_word(*q)));
        }
        writeln!(out, "{name:<40} {text}")?;
    }
    if !m.turns.is_empty() {
        writeln!(out, "{:-^50}", " Per conversation turn ")?;
        writeln!(
            out,
            "{:>4} {:>6} {:>6} {:>9} {:>12} {:>12} {:>12}",
            "turn", "ok", "failed", "in tok", "mean TTFT", "median TTFT", "mean E2EL"
        )?;
        for t in &m.turns {
            writeln!(
                out,
                "{:>4} {:>6} {:>6} {:>9.1} {:>12.2} {:>12.2} {:>12.2}",
                t.turn + 1,
                t.completed,
                t.failed,
                t.mean_input_tokens,
                t.ttft.mean,
                t.ttft.median,
                t.e2el.mean
            )?;
        }
    }
    Ok(())
}

/// The metrics a dual-round comparison lists: name and value in each round.
fn round_rows(m: &BenchmarkMetrics) -> Vec<(&'static str, f64)> {
    vec![
        ("Request throughput (req/s)", m.request_throughput),
        ("Output token throughput (tok/s)", m.output_throughput),
        ("Mean TTFT (ms)", m.ttft.mean),
        ("Median TTFT (ms)", m.ttft.median),
        ("P99 TTFT (ms)", m.stage_quantiles.ttft_p99_ms),
        ("Mean TPOT (ms)", m.tpot.mean),
        ("Mean ITL (ms)", m.itl.mean),
        ("Mean E2EL (ms)", m.e2el.mean),
        ("P99 E2EL (ms)", m.stage_quantiles.e2el_p99_ms),
        ("Failed requests", m.failed as f64),
    ]
}

/// Rounds of the same batch side by side, with the change of each metric against round 1.
pub fn print_rounds(
    title: &str,
    rounds: &[&BenchmarkMetrics],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if rounds.len() < 2 {
        return Ok(());
    }
    writeln!(out, "{:=^50}", format!(" Rounds: {title} "))?;
    let mut header = format!("{:<34}", "metric");
    for k in 1..=rounds.len() {
        header.push_str(&format!(" {:>12}", format!("round {k}")));
    }
    header.push_str(&format!(" {:>10}", "change"));
    writeln!(out, "{header}")?;
    let first = round_rows(rounds[0]);
    let last = round_rows(rounds[rounds.len() - 1]);
    for (row, (name, v0)) in first.iter().enumerate() {
        let mut text = format!("{name:<34}");
        for m in rounds {
            text.push_str(&format!(" {:>12.2}", round_rows(m)[row].1));
        }
        let vn = last[row].1;
        let change = if *v0 != 0.0 {
            format!("{:+.1}%", (vn - v0) / v0 * 100.0)
        } else {
            "-".to_string()
        };
        text.push_str(&format!(" {change:>10}"));
        writeln!(out, "{text}")?;
    }
    writeln!(out, "{}", "=".repeat(50))
}

/// The change per metric between the first and last round, for the result JSON.
pub fn rounds_json(rounds: &[&BenchmarkMetrics]) -> Value {
    let Some(first) = rounds.first() else {
        return Value::Null;
    };
    let last = rounds[rounds.len() - 1];
    let rows: Vec<Value> = round_rows(first)
        .into_iter()
        .zip(round_rows(last))
        .map(|((name, a), (_, b))| {
            json!({
                "metric": name,
                "first": a,
                "last": b,
                "change_pct": if a != 0.0 { json!((b - a) / a * 100.0) } else { Value::Null },
            })
        })
        .collect();
    Value::Array(rows)
}

/// The `--save-result` document dated now; see [`result_json_at`].
pub fn result_json(
    info: &RunInfo,
    m: &BenchmarkMetrics,
    cfg: &MetricsConfig,
    records: &[RequestRecord],
    detailed: bool,
) -> Value {
    let unix_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    result_json_at(info, m, cfg, records, detailed, unix_secs)
}

/// The `--save-result` document with vLLM's keys, dated `unix_secs` (so the `date` field can
/// match the file name): the run setup, totals and throughputs, `mean_/median_/std_/p{P}_` stats
/// of every latency metric, per-request arrays when `detailed` (vLLM's `--save-detailed`), and
/// llmb's extras under `"llmb"`.
///
/// As in vLLM's current main, `latencies` and `queue_times` are kept even when not detailed.
/// Unlike vLLM, the stats keys are written for all four metrics, not only the selected ones.
pub fn result_json_at(
    info: &RunInfo,
    m: &BenchmarkMetrics,
    cfg: &MetricsConfig,
    records: &[RequestRecord],
    detailed: bool,
    unix_secs: u64,
) -> Value {
    let mut ordered: Vec<&RequestRecord> = records.iter().collect();
    ordered.sort_by_key(|r| r.id);

    let mut doc = Map::new();
    let mut put = |key: &str, value: Value| {
        doc.insert(key.to_string(), value);
    };
    put("date", json!(timestamp(unix_secs)));
    put("endpoint_type", json!(info.endpoint_type));
    put("backend", json!(info.backend));
    put("label", json!(info.label));
    put("model_id", json!(info.model_id));
    put("tokenizer_id", json!(info.tokenizer_id));
    put("num_prompts", json!(info.num_prompts));
    put("request_rate", number_or_inf(info.request_rate));
    put("burstiness", number_or_inf(info.burstiness));
    put("max_concurrency", json!(info.max_concurrency));
    if let Some((strategy, start, end)) = &info.pattern.ramp {
        put("ramp_up_strategy", json!(strategy));
        put("ramp_up_start_rps", json!(start));
        put("ramp_up_end_rps", json!(end));
    }
    put("duration", json!(m.duration_s));
    put("completed", json!(m.completed));
    put("failed", json!(m.failed));
    put("total_input_tokens", json!(m.total_input));
    put("total_output_tokens", json!(m.total_output));
    put("request_throughput", json!(m.request_throughput));
    put("request_goodput", json!(m.request_goodput));
    put("output_throughput", json!(m.output_throughput));
    put("total_token_throughput", json!(m.total_token_throughput));
    put("max_output_tokens_per_s", json!(m.max_output_tokens_per_s));
    put("max_concurrent_requests", json!(m.max_concurrent_requests));
    put("rtfx", json!(0.0));
    for key in PERCENTILE_METRICS {
        let Some(s) = m.stats(key) else { continue };
        put(&format!("mean_{key}_ms"), json!(s.mean));
        put(&format!("median_{key}_ms"), json!(s.median));
        put(&format!("std_{key}_ms"), json!(s.std));
        for (p, v) in &s.percentiles {
            put(&format!("p{}_{key}_ms", p_word(*p)), json!(v));
        }
    }
    let per_request = |f: &dyn Fn(&RequestRecord) -> Value| -> Value {
        Value::Array(ordered.iter().map(|&r| f(r)).collect())
    };
    put(
        "latencies",
        per_request(&|r| json!(if r.success { r.e2el_s() } else { 0.0 })),
    );
    put("queue_times", per_request(&|r| json!(r.queue_s())));
    if detailed {
        put("input_lens", per_request(&|r| json!(r.input_tokens())));
        put(
            "output_lens",
            per_request(&|r| json!(if r.success { r.output_tokens } else { 0 })),
        );
        put("start_times", per_request(&|r| json!(ns_to_s(r.sent_ns))));
        put(
            "ttfts",
            per_request(&|r| {
                json!(if r.success {
                    r.ttft_s().unwrap_or(0.0)
                } else {
                    0.0
                })
            }),
        );
        put(
            "itls",
            per_request(&|r| {
                json!(if r.success {
                    r.itls_s().collect::<Vec<f64>>()
                } else {
                    Vec::new()
                })
            }),
        );
        put("generated_texts", per_request(&|r| json!(r.generated_text)));
        put(
            "errors",
            per_request(&|r| json!(r.error.as_ref().map_or("", |e| e.message.as_str()))),
        );
    }
    put("llmb", llmb_extras(info, m, cfg));
    let mut doc = Value::Object(doc);
    crate::secrets::scrub_json(&mut doc);
    doc
}

fn stats_json(s: &MetricStats) -> Value {
    let mut obj = Map::new();
    obj.insert("mean_ms".into(), json!(s.mean));
    obj.insert("median_ms".into(), json!(s.median));
    obj.insert("std_ms".into(), json!(s.std));
    for (p, v) in &s.percentiles {
        obj.insert(format!("p{}_ms", p_word(*p)), json!(v));
    }
    obj.insert("count".into(), json!(s.count));
    Value::Object(obj)
}

fn summary_json(s: &MetricStats) -> Value {
    let q = &s.summary;
    json!({
        "avg": s.mean, "p50": q.p50, "p90": q.p90, "p95": q.p95, "p99": q.p99,
        "min": q.min, "max": q.max, "std": s.std, "count": s.count,
    })
}

fn llmb_extras(info: &RunInfo, m: &BenchmarkMetrics, cfg: &MetricsConfig) -> Value {
    let slos: Map<String, Value> = cfg
        .goodput_slos_ms
        .iter()
        .map(|(name, ms)| (name.clone(), json!(ms)))
        .collect();
    json!({
        "base_url": info.base_url,
        "endpoint": info.endpoint,
        "dataset_name": info.dataset_name,
        "interrupted": info.interrupted,
        "output_len_forced": info.output_len_forced,
        "percentile_metrics": cfg.percentile_metrics,
        "metric_percentiles": cfg.metric_percentiles,
        "goodput_slos_ms": slos,
        "schedule_lag_ms": m.schedule_lag,
        "schedule": m.schedule,
        "ttft_from_intended_ms": stats_json(&m.ttft_from_intended),
        "e2el_from_intended_ms": stats_json(&m.e2el_from_intended),
        "turns": m.turns.iter().map(|t| json!({
            "turn": t.turn,
            "completed": t.completed,
            "failed": t.failed,
            "mean_input_tokens": t.mean_input_tokens,
            "ttft_ms": stats_json(&t.ttft),
            "e2el_ms": stats_json(&t.e2el),
        })).collect::<Vec<_>>(),
        "warmups": m.warmups,
        "input_counts": m.input_counts,
        "input_count_source": info.input_counts,
        "latency_stats_ms": PERCENTILE_METRICS
            .iter()
            .filter_map(|k| m.stats(k).map(|s| (k.to_string(), summary_json(s))))
            .collect::<Map<String, Value>>(),
        "slo": m.slo.as_ref().map(|o| json!({
            "limits_ms": slos.clone(),
            "good_requests": o.good_requests,
            "misses": o.misses.iter().map(|(k, n)| (k.clone(), json!(n))).collect::<Map<String, Value>>(),
        })),
        "load_pattern": info.pattern,
        "client_queue_ms": stats_json(&m.queue),
        // vLLM 0.32's `max_concurrent_requests` (per-second buckets); the top-level key holds
        // the exact peak.
        "max_concurrent_requests_per_second": m.max_concurrent_requests_per_second,
        "token_sources": m.token_sources,
        "errors_by_kind": m.errors_by_kind,
        "connection_retries": m.connection_retries,
        "plugin_time_us": m.plugin_time,
        "plugin_faults": m.plugin_faults,
    })
}

/// vLLM's default result file name:
/// `{label or backend}-{rate}qps[-concurrency{N}]-{model basename}-{YYYYMMDD-HHMMSS}.json`,
/// with the rate as Python prints a float (`inf`, `10.0`).
pub fn default_result_filename(info: &RunInfo, unix_secs: u64) -> String {
    let concurrency = info
        .max_concurrency
        .map(|c| format!("-concurrency{c}"))
        .unwrap_or_default();
    let model = info.model_id.rsplit('/').next().unwrap_or(&info.model_id);
    format!(
        "{}-{}qps{}-{}-{}.json",
        info.label.as_deref().unwrap_or(&info.backend),
        py_float(info.request_rate),
        concurrency,
        model,
        timestamp(unix_secs)
    )
}

/// UTC `YYYYMMDD-HHMMSS` from unix seconds, for the `date` field and file names (vLLM's
/// `strftime("%Y%m%d-%H%M%S")`, in UTC rather than local time).
pub fn timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days: eras of 400 years starting on March 1st.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_center_like_python_format() {
        assert_eq!(
            format!("{:=^50}", " Serving Benchmark Result "),
            "============ Serving Benchmark Result ============"
        );
        assert_eq!(
            format!("{:-^50}", "Time to First Token"),
            "---------------Time to First Token----------------"
        );
        assert_eq!(
            format!("{:-^50}", "Time per Output Token (excl. 1st token)"),
            "-----Time per Output Token (excl. 1st token)------"
        );
    }

    #[test]
    fn python_number_words() {
        assert_eq!(p_word(99.0), "99");
        assert_eq!(p_word(99.9), "99.9");
        assert_eq!(py_float(10.0), "10.0");
        assert_eq!(py_float(0.5), "0.5");
        assert_eq!(py_float(f64::INFINITY), "inf");
        assert_eq!(py_float(0.00001), "1e-05");
        assert_eq!(py_float(1.5e16), "1.5e+16");
        assert_eq!(timestamp(0), "19700101-000000");
        assert_eq!(timestamp(951_782_400), "20000229-000000");
    }
}
