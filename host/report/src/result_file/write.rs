//! Writing a stage's outcome as a [`ResultFile`]: the `--save-result` document with vLLM's keys
//! ([`result_json_at`]) and vLLM's default file name ([`default_result_filename`]).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use llmb_engine::metrics::{BenchmarkMetrics, MetricStats, MetricsConfig, PERCENTILE_METRICS};
use llmb_engine::outcome::{LoadPattern, RunInfo};
use llmb_engine::records::{RequestRecord, ns_to_s};

use super::{
    Detail, HttpPhasesMs, LatencyKeys, LatencySummary, LlmbExtras, LoadPatternFile, Num, OtherKeys,
    RampUp, ReasoningFile, ResultFile, Slo, StatsMs, TurnStats,
};
use crate::python::{p_word, py_float, timestamp};

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
/// llmb's extras under `"llmb"`; secrets scrubbed from every string.
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
    let result = ResultFile::of_stage(info, m, cfg, records, detailed, unix_secs);
    let mut doc = to_json(&result);
    llmb_engine::secrets::scrub_json(&mut doc);
    doc
}

/// A value of a type made for JSON (string keys, no failing `Serialize`), as `json!` takes it.
fn to_json(v: &impl Serialize) -> Value {
    serde_json::to_value(v).expect("result file types serialize to JSON")
}

impl ResultFile {
    /// The result of one stage, dated `unix_secs`; see [`result_json_at`] (which also scrubs
    /// secrets).
    pub fn of_stage(
        info: &RunInfo,
        m: &BenchmarkMetrics,
        cfg: &MetricsConfig,
        records: &[RequestRecord],
        detailed: bool,
        unix_secs: u64,
    ) -> ResultFile {
        let mut ordered: Vec<&RequestRecord> = records.iter().collect();
        ordered.sort_by_key(|r| r.id);
        let per_request = |f: &dyn Fn(&RequestRecord) -> f64| -> Option<Vec<f64>> {
            Some(ordered.iter().map(|&r| f(r)).collect())
        };

        let mut latency = BTreeMap::new();
        for key in PERCENTILE_METRICS {
            let Some(s) = m.stats(key) else { continue };
            latency.insert(format!("mean_{key}_ms"), Num::float(s.mean));
            latency.insert(format!("median_{key}_ms"), Num::float(s.median));
            latency.insert(format!("std_{key}_ms"), Num::float(s.std));
            for (p, v) in &s.percentiles {
                latency.insert(format!("p{}_{key}_ms", p_word(*p)), Num::float(*v));
            }
        }
        let detail = if detailed {
            Detail {
                input_lens: Some(
                    ordered
                        .iter()
                        .map(|r| u64::from(r.input_tokens()))
                        .collect(),
                ),
                output_lens: Some(
                    ordered
                        .iter()
                        .map(|r| u64::from(if r.success { r.output_tokens } else { 0 }))
                        .collect(),
                ),
                start_times: per_request(&|r| ns_to_s(r.sent_ns)),
                ttfts: per_request(&|r| {
                    if r.success {
                        r.ttft_s().unwrap_or(0.0)
                    } else {
                        0.0
                    }
                }),
                itls: Some(
                    ordered
                        .iter()
                        .map(|r| {
                            if r.success {
                                r.itls_s().collect()
                            } else {
                                Vec::new()
                            }
                        })
                        .collect(),
                ),
                generated_texts: Some(ordered.iter().map(|r| r.generated_text.clone()).collect()),
                errors: Some(
                    ordered
                        .iter()
                        .map(|r| r.error.as_ref().map_or("", |e| e.message.as_str()).into())
                        .collect(),
                ),
            }
        } else {
            Detail::default()
        };

        ResultFile {
            date: Some(timestamp(unix_secs)),
            endpoint_type: Some(info.endpoint_type.clone()),
            backend: Some(info.backend.clone()),
            label: info.label.clone(),
            model_id: Some(info.model_id.clone()),
            tokenizer_id: Some(info.tokenizer_id.clone()),
            num_prompts: Some(Num::count(info.num_prompts as u64)),
            request_rate: Num::float_or_inf(info.request_rate),
            burstiness: Num::float_or_inf(info.burstiness),
            max_concurrency: info.max_concurrency.map(|c| Num::count(c as u64)),
            ramp_up: info
                .pattern
                .ramp
                .as_ref()
                .map(|(strategy, start, end)| RampUp {
                    strategy: strategy.clone(),
                    start_rps: Num::float(*start),
                    end_rps: Num::float(*end),
                }),
            duration: Num::float(m.duration_s),
            completed: Some(Num::count(m.completed as u64)),
            failed: Some(Num::count(m.failed as u64)),
            total_input_tokens: Some(Num::count(m.total_input)),
            total_output_tokens: Some(Num::count(m.total_output)),
            request_throughput: Num::float(m.request_throughput),
            request_goodput: m.request_goodput.and_then(Num::float),
            output_throughput: Num::float(m.output_throughput),
            total_token_throughput: Num::float(m.total_token_throughput),
            max_output_tokens_per_s: Num::float(m.max_output_tokens_per_s),
            max_concurrent_requests: Some(Num::count(m.max_concurrent_requests as u64)),
            rtfx: Num::float(0.0),
            latency: LatencyKeys(latency),
            latencies: per_request(&|r| if r.success { r.e2el_s() } else { 0.0 }),
            queue_times: per_request(&|r| r.queue_s()),
            detail,
            llmb: Some(LlmbExtras::of_stage(info, m, cfg)),
            server_metrics: None,
            other: OtherKeys::default(),
        }
    }
}

impl StatsMs {
    fn of(s: &MetricStats) -> Self {
        StatsMs {
            mean_ms: s.mean,
            median_ms: s.median,
            std_ms: s.std,
            percentiles: s
                .percentiles
                .iter()
                .map(|(p, v)| (format!("p{}_ms", p_word(*p)), *v))
                .collect(),
            count: s.count as u64,
        }
    }
}

impl LatencySummary {
    fn of(s: &MetricStats) -> Self {
        let q = &s.summary;
        LatencySummary {
            avg: Num::float(s.mean),
            p50: Num::float(q.p50),
            p90: Num::float(q.p90),
            p95: Num::float(q.p95),
            p99: Num::float(q.p99),
            min: Num::float(q.min),
            max: Num::float(q.max),
            std: Num::float(s.std),
            count: Some(Num::count(s.count as u64)),
        }
    }
}

impl From<&LoadPattern> for LoadPatternFile {
    /// The engine's load pattern with its keys as the engine serializes them.
    fn from(p: &LoadPattern) -> Self {
        let Value::Object(mut other) = to_json(p) else {
            unreachable!("a struct serializes to an object")
        };
        other.remove("stage");
        other.remove("no_stream");
        LoadPatternFile {
            stage: p.stage.clone(),
            no_stream: Some(p.no_stream),
            other,
        }
    }
}

impl LlmbExtras {
    fn of_stage(info: &RunInfo, m: &BenchmarkMetrics, cfg: &MetricsConfig) -> Self {
        let slos: BTreeMap<String, f64> = cfg.goodput_slos_ms.iter().cloned().collect();
        LlmbExtras {
            base_url: Some(info.base_url.clone()),
            endpoint: Some(info.endpoint.clone()),
            dataset_name: Some(info.dataset_name.clone()),
            interrupted: Some(info.interrupted),
            output_len_forced: Some(info.output_len_forced),
            percentile_metrics: Some(cfg.percentile_metrics.clone()),
            metric_percentiles: Some(cfg.metric_percentiles.clone()),
            goodput_slos_ms: Some(slos.clone()),
            schedule_lag_ms: Some(to_json(&m.schedule_lag)),
            schedule: Some(to_json(&m.schedule)),
            ttft_from_intended_ms: Some(StatsMs::of(&m.ttft_from_intended)),
            e2el_from_intended_ms: Some(StatsMs::of(&m.e2el_from_intended)),
            total_input_images: (m.total_input_images > 0).then_some(m.total_input_images),
            reasoning: Some(ReasoningFile {
                requests: m.reasoning.requests as u64,
                total_reasoning_tokens: m.reasoning.total_reasoning_tokens,
                total_answer_tokens: m.reasoning.total_answer_tokens,
                no_answer: m.reasoning.no_answer as u64,
                ttfo_ms: StatsMs::of(&m.reasoning.ttfo),
                thinking_ms: StatsMs::of(&m.reasoning.thinking),
                token_sources: m
                    .reasoning
                    .token_sources
                    .iter()
                    .map(|(source, n)| (*source, *n as u64))
                    .collect(),
            }),
            turns: Some(
                m.turns
                    .iter()
                    .map(|t| TurnStats {
                        turn: t.turn,
                        completed: t.completed as u64,
                        failed: t.failed as u64,
                        mean_input_tokens: t.mean_input_tokens,
                        ttft_ms: StatsMs::of(&t.ttft),
                        e2el_ms: StatsMs::of(&t.e2el),
                    })
                    .collect(),
            ),
            warmups: Some(m.warmups as u64),
            input_counts: Some(to_json(&m.input_counts)),
            input_count_source: Some(to_json(&info.input_counts)),
            latency_stats_ms: Some(
                PERCENTILE_METRICS
                    .iter()
                    .filter_map(|k| m.stats(k).map(|s| (k.to_string(), LatencySummary::of(s))))
                    .collect(),
            ),
            slo: m.slo.as_ref().map(|o| Slo {
                limits_ms: Some(slos),
                good_requests: Some(Num::count(o.good_requests as u64)),
                misses: Some(
                    o.misses
                        .iter()
                        .map(|(k, n)| (k.clone(), *n as u64))
                        .collect(),
                ),
            }),
            load_pattern: Some(LoadPatternFile::from(&info.pattern)),
            client_queue_ms: Some(StatsMs::of(&m.queue)),
            // vLLM 0.32's `max_concurrent_requests` (per-second buckets); the top-level key holds
            // the exact peak.
            max_concurrent_requests_per_second: Some(m.max_concurrent_requests_per_second as u64),
            token_sources: Some(
                m.token_sources
                    .iter()
                    .map(|(source, n)| (*source, *n as u64))
                    .collect(),
            ),
            errors_by_kind: Some(
                m.errors_by_kind
                    .iter()
                    .map(|(k, n)| (k.clone(), *n as u64))
                    .collect(),
            ),
            connection_retries: Some(m.connection_retries as u64),
            cancellations: (m.cancellations.requests > 0).then(|| to_json(&m.cancellations)),
            steady_state: Some(to_json(&m.steady_state)),
            slices: (!m.slices.is_empty()).then(|| to_json(&m.slices)),
            http_phases_ms: Some(HttpPhasesMs {
                connections_warmed: m.http_phases.connections_warmed.map(|n| n as u64),
                new_connections: m.http_phases.new_connections as u64,
                connect: StatsMs::of(&m.http_phases.connect),
                tls: StatsMs::of(&m.http_phases.tls),
                write: StatsMs::of(&m.http_phases.write),
                wait: StatsMs::of(&m.http_phases.wait),
                read_wait: (m.http_phases.read_wait.count > 0)
                    .then(|| StatsMs::of(&m.http_phases.read_wait)),
            }),
            plugin_time_us: Some(to_json(&m.plugin_time)),
            plugin_faults: Some(
                m.plugin_faults
                    .iter()
                    .map(|(k, n)| (k.clone(), *n as u64))
                    .collect(),
            ),
            plugins: (!info.plugins.is_empty()).then(|| info.plugins.clone()),
            shard: info.shard.clone(),
            plan_digest: (!info.plan_digest.is_empty()).then(|| info.plan_digest.clone()),
            start: info.start.clone(),
            timing: info.timing,
            stop_reason: None,
            other: Map::new(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_result_reads_back_as_written() {
        let o = crate::test_support::stage();
        for detailed in [false, true] {
            let doc = result_json_at(
                &o.info,
                &o.metrics,
                &o.metrics_config,
                &o.records,
                detailed,
                1_700_000_000,
            );
            let Value::Object(map) = doc.clone() else {
                panic!("an object")
            };
            let read = ResultFile::from_map(map).unwrap();
            assert_eq!(
                to_json(&read),
                doc,
                "every key is read back as it was written"
            );
            assert!(read.other.0.is_empty() && read.llmb.as_ref().unwrap().other.is_empty());
            assert_eq!(read.detail.ttfts.is_some(), detailed);
        }
        let doc = result_json_at(&o.info, &o.metrics, &o.metrics_config, &o.records, false, 0);
        assert_eq!(doc["request_rate"], "inf");
        assert_eq!(doc["ramp_up_strategy"], "linear");
        assert_eq!(doc["ramp_up_end_rps"], 8.0);
        assert_eq!(doc["label"], "unit");
        assert_eq!(doc["llmb"]["load_pattern"]["stage"], "ramp");
        assert_eq!(doc["llmb"]["load_pattern"]["no_stream"], false);
        assert_eq!(doc["llmb"]["load_pattern"]["mode"], "ramp");
        assert_eq!(doc["llmb"]["slo"]["good_requests"], 2);
        assert!(doc["p99.9_ttft_ms"].is_number());
        assert_eq!(doc["llmb"]["turns"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn vllm_result_files_read() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden");
        for name in [
            "vllm-faults-chat.json",
            "vllm-llamacpp-chat.json",
            "vllm-oracle-jitter-chat.json",
        ] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            let Ok(Value::Object(doc)) = serde_json::from_str(&text) else {
                panic!("{name}: not an object")
            };
            let r = ResultFile::from_map(doc).unwrap();
            assert_eq!(r.backend.as_deref(), Some("openai-chat"), "{name}");
            assert!(r.llmb.is_none() && r.label.is_none());
            assert!(r.request_throughput.as_ref().and_then(Num::as_f64).unwrap() > 0.0);
            assert!(r.latency.get("p99", "ttft").is_some(), "{name}");
            let n = r.detail.input_lens.as_ref().map(Vec::len);
            assert_eq!(n, r.detail.itls.as_ref().map(Vec::len), "{name}");
            assert_eq!(n, r.detail.errors.as_ref().map(Vec::len), "{name}");
            assert_eq!(
                r.other.0.keys().collect::<Vec<_>>(),
                Vec::<&String>::new(),
                "{name}: every vLLM key has its field"
            );
        }
    }
}
