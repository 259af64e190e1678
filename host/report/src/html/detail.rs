//! Sections 3 and 4 of the page, per run: TTFT and ITL histograms, the request timeline and
//! failures by kind from the records; the server's scraped metrics as small charts and a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use llmb_engine::records::RequestRecord;

use super::charts::{
    C_FAIL, C_STREAM, C_TOK, C_WAIT, histogram, server_chart, time_chart, timeline,
};
use super::format::{anchor, escape, figure, file_name, fmt_count, fmt_value, legend};
use super::load::{Report, Run};
use super::stats::Row;
use crate::result_file::ServerMetrics;

/// Small multiples drawn per run for server metrics; the table still lists every name.
const MAX_SERVER_CHARTS: usize = 60;

/// Section 3 for one run: TTFT and ITL histograms, a request timeline, failures by kind.
pub(super) fn run_detail(
    report: &Report,
    k: usize,
    all_rows: &[&Row],
    cap: usize,
) -> anyhow::Result<String> {
    let run = &report.runs[k];
    let row = all_rows.iter().position(|r| r.run == Some(k));
    let mut h = format!("<article class=\"run\" id=\"{}\">", anchor(k));
    let label = row.map_or_else(String::new, |i| {
        format!("#{} {} — ", i + 1, all_rows[i].label)
    });
    let _ = write!(h, "<h3>{}{}</h3>", escape(&label), escape(&run.file_name()));
    let Some(records) = &run.records else {
        let _ = writeln!(
            h,
            "<p class=\"note\">No records file ({} is missing: runs with --no-records, and \
             vLLM's own result files, have none), so no per-request charts.</p></article>",
            escape(&file_name(&run.records_path))
        );
        return Ok(h);
    };
    let measured: Vec<&RequestRecord> = records.iter().filter(|r| !r.warmup).collect();
    let warmups = records.len() - measured.len();
    let ok: Vec<&RequestRecord> = measured.iter().copied().filter(|r| r.success).collect();
    let failed = measured.len() - ok.len();
    let _ = write!(
        h,
        "<p class=\"note\">{} requests: {} succeeded, {} failed{}.</p>",
        fmt_count(measured.len()),
        fmt_count(ok.len()),
        fmt_count(failed),
        if warmups > 0 {
            format!("; {} warmup requests left out", fmt_count(warmups))
        } else {
            String::new()
        }
    );
    h.push_str("<div class=\"grid\">");
    let ttfts: Vec<f64> = ok
        .iter()
        .filter_map(|r| r.ttft_s())
        .map(|s| s * 1e3)
        .collect();
    let itls: Vec<f64> = ok
        .iter()
        .flat_map(|r| r.itls_s())
        .map(|s| s * 1e3)
        .collect();
    for (title, values, desc, y_desc, color, none) in [
        (
            "TTFT distribution",
            &ttfts,
            "TTFT, ms",
            "requests",
            C_WAIT,
            "No successful streamed request, so no TTFT.",
        ),
        (
            "ITL distribution",
            &itls,
            "inter-token latency, ms",
            "gaps between chunks",
            C_STREAM,
            "No request streamed two chunks or more, so no inter-token gaps.",
        ),
    ] {
        if values.is_empty() {
            h.push_str(&figure(title, "", &format!("<p class=\"note\">{none}</p>")));
        } else {
            let (chart, note) = histogram(values, desc, y_desc, color)?;
            h.push_str(&figure(
                title,
                &chart,
                &format!("<p class=\"note\">{}</p>", escape(&note)),
            ));
        }
    }
    h.push_str("</div>");
    h.push_str(&reasoning_figure(&ok)?);
    h.push_str(&over_time(&measured)?);
    if !measured.is_empty() {
        let mut ordered = measured.clone();
        ordered.sort_by_key(|r| (r.sent_ns, r.id));
        let shown = ordered.len().min(cap.max(1));
        let mut note = legend(&[
            ("waiting for the first token", C_WAIT),
            ("streaming", C_STREAM),
            ("failed", C_FAIL),
        ]);
        if shown < ordered.len() {
            let _ = write!(
                note,
                "<p class=\"note\">Capped: showing the first {} of {} requests by send time \
                 (<code>--max-timeline-requests</code> changes the cap).</p>",
                fmt_count(shown),
                fmt_count(ordered.len())
            );
        }
        h.push_str(&figure(
            "Request timeline (send → first token → end)",
            &timeline(&ordered[..shown])?,
            &note,
        ));
    }
    if failed > 0 {
        let mut kinds: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for r in measured.iter().filter(|r| !r.success) {
            let (kind, msg) = r
                .error
                .as_ref()
                .map_or(("unknown", ""), |e| (e.kind.as_str(), e.message.as_str()));
            let e = kinds
                .entry(kind.to_string())
                .or_insert_with(|| (0, msg.chars().take(300).collect()));
            e.0 += 1;
        }
        h.push_str(
            "<h3>Failures</h3><table><tr><th class=\"l\">kind</th><th>requests</th>\
             <th class=\"l\">first message</th></tr>",
        );
        for (kind, (n, msg)) in kinds {
            let _ = write!(
                h,
                "<tr><td class=\"l err\">{}</td><td>{n}</td><td class=\"l\">{}</td></tr>",
                escape(&kind),
                escape(&msg)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</article>\n");
    Ok(h)
}

/// Output throughput and TTFT over the run in about 20 windows, the steady-state window
/// shaded, so ramp-up, drain and any drift in between show at a glance.
fn over_time(measured: &[&RequestRecord]) -> anyhow::Result<String> {
    if measured.len() < 2 {
        return Ok(String::new());
    }
    let p = [99.0];
    let first = measured
        .iter()
        .map(|r| r.sent_ns)
        .filter(|&t| t > 0)
        .min()
        .unwrap_or(0);
    let last = measured
        .iter()
        .map(|r| r.delta_ns.last().copied().unwrap_or(r.end_ns))
        .max()
        .unwrap_or(first);
    let span_s = (last.saturating_sub(first)) as f64 / 1e9;
    if span_s <= 0.0 {
        return Ok(String::new());
    }
    let width = span_s / 20.0;
    let slices = llmb_engine::metrics::slices(measured, width, &p);
    let steady = llmb_engine::metrics::steady_state(measured, &p);
    let mid = |s: &llmb_engine::metrics::Slice| (s.start_s + s.end_s) / 2.0;
    let tokens: Vec<(f64, f64)> = slices
        .iter()
        .map(|s| (mid(s), s.output_throughput))
        .collect();
    let ttft: Vec<(f64, f64)> = slices
        .iter()
        .filter(|s| s.ttft.count > 0)
        .map(|s| (mid(s), s.ttft.summary.p99))
        .collect();
    let note = match (steady.window, &steady.note) {
        (Some((a, b)), _) => format!(
            "Windows of {width:.2} s from the first send; shaded: the steady state, {a:.2} s to \
             {b:.2} s (after the first wave was answered, before the drain): {:.2} req/s, {:.1} \
             output tok/s, TTFT p99 {:.1} ms in it.",
            steady.stats.request_throughput,
            steady.stats.output_throughput,
            steady.stats.ttft.summary.p99
        ),
        (None, Some(why)) => format!("Windows of {width:.2} s. No steady state: {why}."),
        (None, None) => format!("Windows of {width:.2} s."),
    };
    let mut h = String::from("<div class=\"grid\">");
    h.push_str(&figure(
        "Output throughput over time",
        &time_chart(&tokens, steady.window, "tok/s", C_TOK)?,
        &format!("<p class=\"note\">{}</p>", escape(&note)),
    ));
    if !ttft.is_empty() {
        h.push_str(&figure(
            "TTFT p99 over time (by send time)",
            &time_chart(&ttft, steady.window, "ms", C_WAIT)?,
            "",
        ));
    }
    h.push_str("</div>");
    Ok(h)
}

/// For a model that reasoned: the time-to-first-answer-token (TTFO) histogram and the split of
/// the output into reasoning and answer tokens; nothing when no request reasoned.
fn reasoning_figure(ok: &[&RequestRecord]) -> anyhow::Result<String> {
    let reasoned = ok.iter().filter(|r| r.reasoning_tokens.is_some()).count();
    if reasoned == 0 {
        return Ok(String::new());
    }
    let reasoning: u64 = ok
        .iter()
        .map(|r| u64::from(r.reasoning_tokens.unwrap_or(0)))
        .sum();
    let answer: u64 = ok.iter().map(|r| u64::from(r.answer_tokens())).sum();
    let ttfos: Vec<f64> = ok
        .iter()
        .filter_map(|r| r.ttfo_s())
        .map(|s| s * 1e3)
        .collect();
    let split = format!(
        "{} of {} requests reasoned: {} reasoning and {} answer tokens ({:.1} % reasoning).",
        fmt_count(reasoned),
        fmt_count(ok.len()),
        fmt_count(reasoning as usize),
        fmt_count(answer as usize),
        100.0 * reasoning as f64 / (reasoning + answer).max(1) as f64
    );
    if ttfos.is_empty() {
        return Ok(figure(
            "Reasoning",
            "",
            &format!(
                "<p class=\"note\">{}</p><p class=\"note\">No answer token arrived.</p>",
                escape(&split)
            ),
        ));
    }
    let (chart, note) = histogram(
        &ttfos,
        "time to first answer token, ms",
        "requests",
        C_STREAM,
    )?;
    Ok(figure(
        "TTFO distribution (first answer token, after the reasoning)",
        &chart,
        &format!(
            "<p class=\"note\">{}</p><p class=\"note\">{}</p>",
            escape(&split),
            escape(&note)
        ),
    ))
}

/// Section 4 for one run: each scraped series as a small chart, then start/end/delta.
pub(super) fn server_section(run: &Run, sm: &ServerMetrics) -> anyhow::Result<String> {
    let mut h = format!("<h3>{}</h3>", escape(&run.file_name()));
    if let Some(url) = &sm.url {
        let _ = write!(h, "<p class=\"note\">Scraped from {}</p>", escape(url));
    }
    let drawable: Vec<&(String, Vec<(f64, f64)>)> =
        sm.series.iter().filter(|(_, p)| !p.is_empty()).collect();
    if !drawable.is_empty() {
        h.push_str("<div class=\"grid small\">");
        for (name, points) in drawable.iter().take(MAX_SERVER_CHARTS) {
            h.push_str(&figure(name, &server_chart(points)?, ""));
        }
        h.push_str("</div>");
        if drawable.len() > MAX_SERVER_CHARTS {
            let _ = write!(
                h,
                "<p class=\"note\">Charts for the first {MAX_SERVER_CHARTS} of {} series; the \
                 table lists all.</p>",
                drawable.len()
            );
        }
    }
    if !sm.names.is_empty() {
        h.push_str(
            "<div class=\"scroll\"><table><tr><th class=\"l\">metric</th><th>start</th>\
             <th>end</th><th>delta</th></tr>",
        );
        for name in &sm.names {
            let get = |m: &BTreeMap<String, Option<f64>>| m.get(name).copied().flatten();
            let _ = write!(
                h,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(name),
                fmt_value(get(&sm.start)),
                fmt_value(get(&sm.end)),
                fmt_value(get(&sm.delta))
            );
        }
        h.push_str("</table></div>");
    }
    Ok(h)
}
