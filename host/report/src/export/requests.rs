//! The per-request CSV next to `records.jsonl`: one row per request with its timings in
//! milliseconds since the run's start, the numbers people sort and plot in a spreadsheet,
//! HTTP phases included (connect and TLS when the request opened its connection, sent to
//! written, written to first byte).

use std::path::Path;

use anyhow::Context;

use llmb_engine::records::{RequestRecord, ns_to_s};

/// The per-request CSV next to `records.jsonl`: timings in milliseconds since the run's start,
/// the numbers people sort and plot in a spreadsheet.
pub fn write_requests_csv(path: &Path, records: &[RequestRecord]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut w = csv::Writer::from_writer(file);
    write_rows(&mut w, records)?;
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The per-request CSV of `records` (see [`write_requests_csv`]).
pub(crate) fn requests_csv(records: &[RequestRecord]) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    write_rows(&mut w, records)?;
    w.into_inner().map_err(|e| anyhow::anyhow!("{}", e.error()))
}

/// The header and a row per record.
fn write_rows<W: std::io::Write>(
    w: &mut csv::Writer<W>,
    records: &[RequestRecord],
) -> anyhow::Result<()> {
    w.write_record([
        "id",
        "sample",
        "client",
        "turn",
        "warmup",
        "success",
        "error_kind",
        "http_status",
        "intended_ms",
        "sent_ms",
        "schedule_lag_ms",
        "queue_ms",
        "ttft_ms",
        "ttfo_ms",
        "tpot_ms",
        "itl_max_ms",
        "e2el_ms",
        "connect_ms",
        "tls_ms",
        "write_ms",
        "wait_ms",
        "read_wait_max_ms",
        "prompt_tokens",
        "server_prompt_tokens",
        "cached_prompt_tokens",
        "requested_output_tokens",
        "output_tokens",
        "reasoning_tokens",
        "answer_tokens",
        "finish_reason",
        "error",
    ])?;
    let ms = |s: f64| format!("{:.3}", s * 1e3);
    let opt = |v: Option<String>| v.unwrap_or_default();
    for r in records {
        let ttft = r.ttft_s();
        let tpot = r.tpot_s().filter(|_| r.success);
        let itl_max = r.itls_s().reduce(f64::max);
        w.write_record([
            r.id.to_string(),
            r.sample.to_string(),
            opt(r.client.map(|c| c.to_string())),
            opt(r.turn.map(|t| t.to_string())),
            r.warmup.to_string(),
            r.success.to_string(),
            opt(r.error.as_ref().map(|e| e.kind.clone())),
            opt(r
                .error
                .as_ref()
                .and_then(|e| e.http_status)
                .map(|s| s.to_string())),
            ms(ns_to_s(r.scheduled_ns)),
            ms(ns_to_s(r.sent_ns)),
            ms(r.schedule_lag_s()),
            ms(r.queue_s()),
            opt(ttft.map(ms)),
            opt(r.ttfo_s().map(ms)),
            opt(tpot.map(ms)),
            opt(itl_max.map(ms)),
            if r.success {
                ms(r.e2el_s())
            } else {
                String::new()
            },
            opt(r.connect_duration_ns.map(|ns| ms(ns_to_s(ns)))),
            opt(r.tls_duration_ns.map(|ns| ms(ns_to_s(ns)))),
            opt(r
                .written_ns
                .map(|w| ms(ns_to_s(w.saturating_sub(r.sent_ns))))),
            opt(r
                .written_ns
                .zip(r.first_byte_ns)
                .map(|(w, f)| ms(ns_to_s(f.saturating_sub(w))))),
            opt(r.read_wait_max_ns.map(|w| ms(ns_to_s(w)))),
            r.prompt_tokens.to_string(),
            opt(r.server_prompt_tokens.map(|n| n.to_string())),
            opt(r.cached_prompt_tokens.map(|n| n.to_string())),
            r.requested_output_tokens.to_string(),
            r.output_tokens.to_string(),
            opt(r.reasoning_tokens.map(|n| n.to_string())),
            r.answer_tokens().to_string(),
            opt(r.finish_reason.clone()),
            opt(r
                .error
                .as_ref()
                .map(|e| llmb_engine::secrets::scrub(&e.message).into_owned())),
        ])?;
    }
    Ok(())
}
