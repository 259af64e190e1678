//! A hand-built stage for the unit tests: a ramp-up run with a failure, a warmup, two
//! conversation turns and SLOs, so every part of the result file and the reports is exercised.

use llmb_engine::metrics::{MetricsConfig, compute};
use llmb_engine::outcome::{BenchOutcome, LoadPattern, RunInfo};
use llmb_engine::records::{RequestError, RequestRecord, TokenSource};

const MS: u64 = 1_000_000;

fn ok(id: u64, sent_ms: u64, deltas_ms: &[u64]) -> RequestRecord {
    RequestRecord {
        id,
        scheduled_ns: sent_ms * MS,
        dispatched_ns: sent_ms * MS,
        sent_ns: sent_ms * MS,
        delta_ns: deltas_ms.iter().map(|t| t * MS).collect(),
        end_ns: deltas_ms.last().copied().unwrap_or(sent_ms) * MS + 5 * MS,
        prompt_tokens: 10,
        server_prompt_tokens: Some(12),
        requested_output_tokens: deltas_ms.len() as u32,
        output_tokens: deltas_ms.len() as u32,
        token_source: Some(TokenSource::Usage),
        success: true,
        turn: Some((id % 2) as u32),
        generated_text: "x".repeat(deltas_ms.len()),
        ..Default::default()
    }
}

/// The stage: five requests (one failed, one warmup) of a linear ramp from 1 to 8 req/s.
pub(crate) fn stage() -> BenchOutcome {
    let mut records = vec![
        ok(0, 0, &[100, 110, 120]),
        ok(1, 5, &[90, 95]),
        ok(2, 9, &[60, 70, 85, 95]),
        ok(3, 12, &[130]),
        RequestRecord {
            id: 4,
            sent_ns: 20 * MS,
            end_ns: 600 * MS,
            prompt_tokens: 10,
            error: Some(RequestError {
                kind: "http".into(),
                message: "503 busy".into(),
                http_status: Some(503),
            }),
            ..Default::default()
        },
    ];
    records[3].warmup = true;
    let cfg = MetricsConfig {
        percentile_metrics: vec!["ttft".into(), "tpot".into(), "itl".into(), "e2el".into()],
        metric_percentiles: vec![50.0, 99.0, 99.9],
        goodput_slos_ms: vec![("ttft".into(), 95.0)],
        slice_duration_s: None,
    };
    let metrics = compute(&records, 2.0, &cfg);
    let info = RunInfo {
        plugins: Vec::new(),
        shard: None,
        plan_digest: String::new(),
        start: None,
        timing: None,
        backend: "vllm".into(),
        endpoint_type: "vllm".into(),
        label: Some("unit".into()),
        model_id: "org/model".into(),
        tokenizer_id: "org/model".into(),
        input_counts: llmb_engine::input_tokens::InputCountSource::Tokenizer {
            id: "org/model".into(),
        },
        base_url: "http://127.0.0.1:8000".into(),
        endpoint: "/v1/completions".into(),
        dataset_name: "random".into(),
        num_prompts: 5,
        request_rate: f64::INFINITY,
        burstiness: 1.0,
        max_concurrency: Some(4),
        output_len_forced: true,
        output_len_forceable: true,
        interrupted: false,
        pattern: LoadPattern {
            mode: "ramp".into(),
            ramp: Some(("linear".into(), 1.0, 8.0)),
            rate_steps: vec![(0, 0.0, 1.0)],
            round: 1,
            stage: Some("ramp".into()),
            ..Default::default()
        },
    };
    BenchOutcome {
        info,
        metrics,
        metrics_config: cfg,
        records,
        records_path: None,
        result_path: None,
        client_cpu: std::time::Duration::ZERO,
        client_memory: llmb_engine::memory::MemoryUse::default(),
        server_metrics: None,
        stop_reason: None,
        t0_monotonic_ns: 0,
    }
}
