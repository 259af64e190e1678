//! The console report in `vllm bench serve`'s layout and the result JSON with vLLM's keys, so
//! existing dashboards and scripts read llmb's output unchanged.

use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::metrics::{BenchmarkMetrics, MetricStats, MetricsConfig};
use crate::records::{RequestRecord, ns_to_s};

/// What was run, for the report header and the result file.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub backend: String,
    pub endpoint_type: String,
    pub label: Option<String>,
    pub model_id: String,
    pub tokenizer_id: String,
    pub base_url: String,
    pub endpoint: String,
    pub dataset_name: String,
    pub num_prompts: usize,
    /// `f64::INFINITY` for "inf".
    pub request_rate: f64,
    pub burstiness: f64,
    pub max_concurrency: Option<usize>,
    /// False when output lengths were not forced (no --ignore-eos, or the adapter cannot).
    pub output_len_forced: bool,
    pub interrupted: bool,
}

const METRICS: [(&str, &str, &str); 4] = [
    ("ttft", "TTFT", "Time to First Token"),
    ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
    ("itl", "ITL", "Inter-token Latency"),
    ("e2el", "E2EL", "End-to-end Latency"),
];

/// Python's `str.center` with a fill character (extra padding goes right when odd... as Python
/// does: left gets floor, right gets the rest).
fn center(s: &str, width: usize, fill: char) -> String {
    let len = s.chars().count();
    if len >= width {
        return s.to_string();
    }
    let total = width - len;
    // CPython: left = total / 2 + (total & width & 1)
    let left = total / 2 + (total & width & 1);
    let right = total - left;
    format!(
        "{}{}{}",
        fill.to_string().repeat(left),
        s,
        fill.to_string().repeat(right)
    )
}

/// vLLM's percentile word: "99" for 99.0, "99.9" otherwise.
fn p_word(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

/// How Python prints a float rate in file names and JSON: "10.0", "0.5", "inf".
fn py_float(v: f64) -> String {
    if v.is_infinite() {
        "inf".into()
    } else if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn line(out: &mut dyn Write, label: &str, value: impl std::fmt::Display) -> std::io::Result<()> {
    writeln!(out, "{:<40} {:<10}", label, value)
}

fn fline(out: &mut dyn Write, label: &str, value: f64) -> std::io::Result<()> {
    writeln!(out, "{:<40} {:<10.2}", label, value)
}

/// Prints the report as vLLM does, then llmb's additions below the closing rule.
pub fn print_console(
    info: &RunInfo,
    m: &BenchmarkMetrics,
    cfg: &MetricsConfig,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, "{}", center(" Serving Benchmark Result ", 50, '='))?;
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
    if let Some(g) = m.request_goodput {
        fline(out, "Request goodput (req/s):", g)?;
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
        "Total Token throughput (tok/s):",
        m.total_token_throughput,
    )?;
    for (key, short, title) in METRICS {
        if !cfg.percentile_metrics.iter().any(|k| k == key) {
            continue;
        }
        let s = m.stats(key).expect("known metric");
        writeln!(out, "{}", center(title, 50, '-'))?;
        fline(out, &format!("Mean {short} (ms):"), s.mean)?;
        fline(out, &format!("Median {short} (ms):"), s.median)?;
        for (p, v) in &s.percentiles {
            fline(out, &format!("P{} {short} (ms):", p_word(*p)), *v)?;
        }
    }
    writeln!(out, "{}", "=".repeat(50))?;

    let lag = &m.schedule_lag;
    writeln!(
        out,
        "{:<40} mean {:.2}, p99 {:.2}",
        "Client queue time (ms):",
        m.queue.mean,
        percentile_of(&m.queue, 99.0)
    )?;
    writeln!(
        out,
        "{:<40} p50 {:.3}, p99 {:.3}, max {:.3}",
        "Schedule lag (ms):", lag.p50_ms, lag.p99_ms, lag.max_ms
    )?;
    if !m.token_sources.is_empty() {
        let sources: Vec<String> = m
            .token_sources
            .iter()
            .map(|(src, n)| format!("{} ({n})", src.describe()))
            .collect();
        writeln!(
            out,
            "{:<40} {}",
            "Output token counts from:",
            sources.join("; ")
        )?;
    }
    if !m.errors_by_kind.is_empty() {
        let errors: Vec<String> = m
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(out, "{:<40} {}", "Failures by kind:", errors.join(", "))?;
    }
    if !info.output_len_forced {
        writeln!(
            out,
            "Output lengths were not forced (no --ignore-eos, or the adapter cannot ignore EOS)."
        )?;
    }
    if info.interrupted {
        writeln!(out, "Interrupted: these are partial results.")?;
    }
    Ok(())
}

fn percentile_of(s: &MetricStats, p: f64) -> f64 {
    s.percentiles
        .iter()
        .find(|(q, _)| *q == p)
        .map(|(_, v)| *v)
        .unwrap_or(s.mean)
}

/// The `--save-result` document: vLLM's keys, per-request arrays when `detailed`, and llmb's
/// extras under `"llmb"`.
pub fn result_json(
    info: &RunInfo,
    m: &BenchmarkMetrics,
    cfg: &MetricsConfig,
    records: &[RequestRecord],
    detailed: bool,
) -> Value {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut doc = Map::new();
    let mut put = |k: &str, v: Value| {
        doc.insert(k.to_string(), v);
    };
    put("date", json!(timestamp(unix)));
    put("endpoint_type", json!(info.endpoint_type));
    put("backend", json!(info.backend));
    put("label", json!(info.label));
    put("model_id", json!(info.model_id));
    put("tokenizer_id", json!(info.tokenizer_id));
    put("num_prompts", json!(info.num_prompts));
    put(
        "request_rate",
        if info.request_rate.is_infinite() {
            json!("inf")
        } else {
            json!(info.request_rate)
        },
    );
    put("burstiness", json!(info.burstiness));
    put("max_concurrency", json!(info.max_concurrency));
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
    for (key, _, _) in METRICS {
        let s = m.stats(key).expect("known metric");
        put(&format!("mean_{key}_ms"), json!(s.mean));
        put(&format!("median_{key}_ms"), json!(s.median));
        put(&format!("std_{key}_ms"), json!(s.std));
        for (p, v) in &s.percentiles {
            put(&format!("p{}_{key}_ms", p_word(*p)), json!(v));
        }
    }
    if detailed {
        let mut ordered: Vec<&RequestRecord> = records.iter().collect();
        ordered.sort_by_key(|r| r.id);
        put(
            "input_lens",
            ordered.iter().map(|r| json!(r.input_tokens())).collect(),
        );
        put(
            "output_lens",
            ordered
                .iter()
                .map(|r| json!(if r.success { r.output_tokens } else { 0 }))
                .collect(),
        );
        put(
            "ttfts",
            ordered
                .iter()
                .map(|r| {
                    json!(if r.success {
                        r.ttft_s().unwrap_or(0.0)
                    } else {
                        0.0
                    })
                })
                .collect(),
        );
        put(
            "itls",
            ordered
                .iter()
                .map(|r| json!(r.itls_s().collect::<Vec<f64>>()))
                .collect(),
        );
        put(
            "generated_texts",
            ordered.iter().map(|r| json!(r.generated_text)).collect(),
        );
        put(
            "errors",
            ordered
                .iter()
                .map(|r| {
                    json!(
                        r.error
                            .as_ref()
                            .map(|e| e.message.clone())
                            .unwrap_or_default()
                    )
                })
                .collect(),
        );
        put(
            "start_times",
            ordered.iter().map(|r| json!(ns_to_s(r.sent_ns))).collect(),
        );
    }
    put(
        "llmb",
        json!({
            "base_url": info.base_url,
            "endpoint": info.endpoint,
            "dataset_name": info.dataset_name,
            "interrupted": info.interrupted,
            "output_len_forced": info.output_len_forced,
            "percentile_metrics": cfg.percentile_metrics,
            "goodput_slos_ms": cfg.goodput_slos_ms,
            "schedule_lag_ms": m.schedule_lag,
            "queue_ms": m.queue,
            "token_sources": m.token_sources,
            "errors_by_kind": m.errors_by_kind,
        }),
    );
    Value::Object(doc)
}

/// vLLM's default result name: `{backend}-{rate}qps[-concurrency{N}]-{model basename}-{date}.json`.
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

/// UTC `YYYYMMDD-HHMMSS` (the `date` field and file names).
pub fn timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
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
    fn python_style_centering_and_dates() {
        assert_eq!(
            center(" Serving Benchmark Result ", 50, '='),
            "============ Serving Benchmark Result ============"
        );
        assert_eq!(
            center("Time to First Token", 50, '-'),
            "---------------Time to First Token----------------"
        );
        assert_eq!(
            center("Time per Output Token (excl. 1st token)", 50, '-'),
            "-----Time per Output Token (excl. 1st token)------"
        );
        assert_eq!(timestamp(0), "19700101-000000");
        assert_eq!(timestamp(1_700_000_000), "20231114-221320");
        assert_eq!(p_word(99.0), "99");
        assert_eq!(p_word(99.9), "99.9");
    }
}
