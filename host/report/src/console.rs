//! The console report in `vllm bench serve`'s layout, so people and scripts that read vLLM's
//! output read llmb's unchanged; llmb's own diagnostics go below vLLM's closing rule. Also the
//! side-by-side table of `--rounds` ([`print_rounds`], [`rounds_json`]).
//!
//! The result JSON is built from [`crate::result_file::ResultFile`]; [`result_json`],
//! [`result_json_at`], [`default_result_filename`] and [`timestamp`] are re-exported here, where
//! callers have always found them.

use std::io::Write;

use serde_json::{Value, json};

use llmb_engine::metrics::{BenchmarkMetrics, MetricsConfig, PERCENTILE_METRICS};
use llmb_engine::outcome::RunInfo;

use crate::python::p_word;
pub use crate::python::timestamp;
pub use crate::result_file::{default_result_filename, result_json, result_json_at};

/// The label name and section title vLLM's `process_one_metric` uses for a metric key.
fn metric_names(key: &str) -> (&'static str, &'static str) {
    match key {
        "ttft" => ("TTFT", "Time to First Token"),
        "tpot" => ("TPOT", "Time per Output Token (excl. 1st token)"),
        "itl" => ("ITL", "Inter-token Latency"),
        _ => ("E2EL", "End-to-end Latency"),
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
    if m.total_input_images > 0 {
        line(out, "Total input images:", m.total_input_images)?;
        fline(
            out,
            "Image throughput (img/s):",
            m.total_input_images as f64 / m.duration_s.max(f64::MIN_POSITIVE),
        )?;
    }
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
    // ITL exists only for streams of several chunks, the only responses whose chunks can share
    // a read's stamp.
    let itl_median_ms = (m.itl.count > 0).then_some(m.itl.median);
    print_http_phases(out, &m.http_phases, itl_median_ms)?;
    print_reasoning(out, m)?;
    if m.total_output == 0 && m.completed > 0 {
        // Embeddings, rerank, score: the work is the input.
        writeln!(
            out,
            "{:<40} {:.2} inputs/s, {:.1} input tok/s (no output tokens: an embedding or ranking endpoint)",
            "Input throughput:",
            m.request_throughput,
            m.total_input as f64 / m.duration_s.max(f64::MIN_POSITIVE)
        )?;
    }
    print_windows(out, m)?;
    let c = &m.cancellations;
    if c.requests > 0 {
        writeln!(
            out,
            "{:<40} {} (counted as failed; {} after their first token, {} chunks received before the cut)",
            "Cancelled by the client (--cancel-rate):",
            c.requests,
            c.after_first_token,
            c.frames_received
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
            .map(|(kind, n)| match kind.as_str() {
                "shared" => format!("shared {n} (in an instance another request's fault ended)"),
                _ => format!("{kind} {n}"),
            })
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

/// The steady-state window beside the whole run, then the `--slice-duration` windows.
fn print_windows(out: &mut dyn Write, m: &BenchmarkMetrics) -> std::io::Result<()> {
    let steady = &m.steady_state;
    writeln!(out, "{:-^50}", " Steady state ")?;
    let Some((start, end)) = steady.window else {
        return writeln!(
            out,
            "{:<40} none: {}",
            "Steady-state window:",
            steady.note.as_deref().unwrap_or("unknown")
        );
    };
    let s = &steady.stats;
    writeln!(
        out,
        "{:<40} {start:.2} s to {end:.2} s after the first send ({} requests sent in it)",
        "Steady-state window (no ramp-up, drain):", s.sent
    )?;
    writeln!(out, "{:<28} {:>14} {:>14}", "", "steady state", "whole run")?;
    for (name, steady, whole) in [
        (
            "Request throughput (req/s)",
            s.request_throughput,
            m.request_throughput,
        ),
        (
            "Output throughput (tok/s)",
            s.output_throughput,
            m.output_throughput,
        ),
        ("Mean TTFT (ms)", s.ttft.mean, m.ttft.mean),
        ("P99 TTFT (ms)", s.ttft.summary.p99, m.ttft.summary.p99),
        ("Mean TPOT (ms)", s.tpot.mean, m.tpot.mean),
        ("Mean ITL (ms)", s.itl.mean, m.itl.mean),
        ("P99 E2EL (ms)", s.e2el.summary.p99, m.e2el.summary.p99),
    ] {
        writeln!(out, "{name:<28} {steady:>14.2} {whole:>14.2}")?;
    }
    writeln!(
        out,
        "{:<28} {:>14.2}",
        "Mean requests in flight", s.mean_in_flight
    )?;
    if m.slices.is_empty() {
        return Ok(());
    }
    writeln!(out, "{:-^50}", " Over time (--slice-duration) ")?;
    writeln!(
        out,
        "{:>8} {:>8} {:>6} {:>6} {:>9} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "from s",
        "to s",
        "sent",
        "failed",
        "req/s",
        "tok/s",
        "TTFT mean",
        "TTFT p99",
        "ITL mean",
        "in flight"
    )?;
    for w in &m.slices {
        let marker = if w.start_s >= start - 1e-9 && w.end_s <= end + 1e-9 {
            " steady"
        } else {
            ""
        };
        // A window where nothing was sent (or nothing streamed) has no latency to show.
        let ms = |s: &llmb_engine::metrics::MetricStats, v: f64| {
            if s.count == 0 {
                "-".to_string()
            } else {
                format!("{v:.2}")
            }
        };
        writeln!(
            out,
            "{:>8.2} {:>8.2} {:>6} {:>6} {:>9.2} {:>10.1} {:>10} {:>10} {:>9} {:>9.1}{marker}",
            w.start_s,
            w.end_s,
            w.sent,
            w.failed,
            w.request_throughput,
            w.output_throughput,
            ms(&w.ttft, w.ttft.mean),
            ms(&w.ttft, w.ttft.summary.p99),
            ms(&w.itl, w.itl.mean),
            w.mean_in_flight
        )?;
    }
    Ok(())
}

/// The reasoning/answer split and the time to first answer token, when any request reasoned.
fn print_reasoning(out: &mut dyn Write, m: &BenchmarkMetrics) -> std::io::Result<()> {
    let r = &m.reasoning;
    if r.requests == 0 {
        return Ok(());
    }
    writeln!(out, "{:-^50}", " Reasoning ")?;
    writeln!(
        out,
        "{:<40} {} of {} successful",
        "Requests that reasoned:", r.requests, m.completed
    )?;
    let all = (r.total_reasoning_tokens + r.total_answer_tokens).max(1);
    writeln!(
        out,
        "{:<40} {} / {} ({:.1} % reasoning)",
        "Reasoning / answer tokens:",
        r.total_reasoning_tokens,
        r.total_answer_tokens,
        100.0 * r.total_reasoning_tokens as f64 / all as f64
    )?;
    for (name, s) in [
        ("TTFO, first answer token (ms):", &r.ttfo),
        ("Thinking time, TTFO − TTFT (ms):", &r.thinking),
    ] {
        let mut text = format!("mean {:.2}, median {:.2}", s.mean, s.median);
        for (q, v) in &s.percentiles {
            text.push_str(&format!(", p{} {v:.2}", p_word(*q)));
        }
        writeln!(out, "{name:<40} {text}")?;
    }
    if r.no_answer > 0 {
        writeln!(
            out,
            "{:<40} {} (the output ended while still reasoning)",
            "Requests with no answer token:", r.no_answer
        )?;
    }
    let sources: Vec<String> = r
        .token_sources
        .iter()
        .map(|(source, n)| format!("{} ({n})", source.describe()))
        .collect();
    writeln!(
        out,
        "{:<40} {}",
        "Reasoning token counts from:",
        sources.join("; ")
    )
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

/// Connections opened ahead and the HTTP phases, so a user sees what part of TTFT is the
/// network and the client.
fn print_http_phases(
    out: &mut dyn Write,
    h: &llmb_engine::metrics::HttpPhases,
    itl_median_ms: Option<f64>,
) -> std::io::Result<()> {
    let warmed = match h.connections_warmed {
        Some(n) => format!("{n} (--no-warm-connections to start cold)"),
        None => "none (--no-warm-connections)".to_string(),
    };
    writeln!(out, "{:<40} {warmed}", "Connections opened before timing:")?;
    let phase = |out: &mut dyn Write, label: &str, s: &llmb_engine::metrics::MetricStats| {
        writeln!(
            out,
            "{label:<40} mean {:.3}, p50 {:.3}, p99 {:.3} ms ({} requests)",
            s.mean, s.median, s.summary.p99, s.count
        )
    };
    if h.new_connections > 0 {
        phase(out, "Connect, requests that opened one:", &h.connect)?;
    }
    if h.tls.count > 0 {
        phase(out, "TLS handshake:", &h.tls)?;
    }
    if h.write.count > 0 {
        phase(out, "Request write (sent to written):", &h.write)?;
        phase(out, "Wait (written to first byte):", &h.wait)?;
    }
    if h.read_wait.count > 0 {
        phase(out, "Read wait (in socket, longest/request):", &h.read_wait)?;
        // Chunks a token gap apart share a read only when the read is later than the gap; a
        // whole body has one stamp, its last packet's, however late it is read.
        if let Some(itl) = itl_median_ms
            && h.read_wait.summary.p99 > itl.max(READ_WAIT_NOTE_MS)
        {
            writeln!(
                out,
                "{:<40} llmb read 1% of responses {:.1}+ ms late, more than the median ITL: \
                 stamps are kernel arrival times, but chunks that arrived closer together than \
                 that can share one read's stamp, so some TTFT and ITL are late by up to that \
                 (fewer streams, or more --client-threads and cores, keep them exact)",
                "", h.read_wait.summary.p99
            )?;
        }
    }
    Ok(())
}

/// A read wait p99 beyond this (ms) and the median ITL gets the note that the client was behind.
const READ_WAIT_NOTE_MS: f64 = 1.0;

#[cfg(test)]
mod tests {
    use llmb_engine::metrics::{HttpPhases, MetricStats};

    fn phases_text(read_wait_s: &[f64], itl_median_ms: Option<f64>) -> String {
        let phases = HttpPhases {
            read_wait: MetricStats::from_seconds(read_wait_s, &[50.0, 99.0]),
            ..Default::default()
        };
        let mut out = Vec::new();
        super::print_http_phases(&mut out, &phases, itl_median_ms).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_read_wait_longer_than_the_token_gap_is_called_out() {
        let late = phases_text(&[0.001, 0.040], Some(10.0));
        assert!(
            late.contains("Read wait (in socket, longest/request):"),
            "{late}"
        );
        // Percentiles interpolate as numpy's do: p99 of 1 and 40 ms is 39.61.
        assert!(
            late.contains("39.6+ ms late, more than the median ITL"),
            "{late}"
        );
        // Late, but within the gap between tokens: no chunks shared a stamp.
        let within_gap = phases_text(&[0.001, 0.004], Some(10.0));
        assert!(within_gap.contains("Read wait"), "{within_gap}");
        assert!(!within_gap.contains("ms late"), "{within_gap}");
        // Whole bodies (no ITL): the wait is shown, but nothing shared a stamp.
        let whole = phases_text(&[0.001, 0.040], None);
        assert!(whole.contains("Read wait"), "{whole}");
        assert!(!whole.contains("ms late"), "{whole}");
        // Without kernel stamps there is no line at all.
        assert!(!phases_text(&[], Some(10.0)).contains("Read wait"));
    }

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
}
