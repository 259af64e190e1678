//! The page: [`render`] writes the header, the stage table (section 1), then the load curves
//! ([`super::curves`]), the per-request detail and the server metrics ([`super::detail`]), and
//! the footer listing every file read.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::ensure;

use super::curves::load_curves;
use super::detail::{run_detail, server_section};
use super::format::{anchor, escape, file_name, fmt_date, fmt_num, fmt_rate};
use super::load::{Report, Run};
use super::stats::{Group, Row, groups_of};
use crate::result_file::LlmbExtras;

/// Per-request timelines draw at most this many requests unless told otherwise: beyond a few
/// thousand bars the SVG grows large and each bar is thinner than a pixel anyway.
pub const DEFAULT_TIMELINE_CAP: usize = 2000;

/// What `render` shows beyond what was loaded.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Per-request charts for runs whose file name contains one of these (none: all runs when
    /// there are few, else the last).
    pub runs: Vec<String>,
    pub timeline_cap: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            runs: Vec::new(),
            timeline_cap: DEFAULT_TIMELINE_CAP,
        }
    }
}

/// With more runs than this and no `--run`, only the last run gets per-request charts, so a
/// long sweep does not make a page of hundreds of charts.
const DETAIL_ALL_UP_TO: usize = 4;

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
color:#1d2329;margin:0;background:#f4f6f8}\
main{max-width:1360px;margin:0 auto;padding:18px 22px 40px}\
h1{font-size:24px;margin:4px 0 10px}h2{font-size:19px;margin:30px 0 10px;\
border-bottom:2px solid #d5dbe1;padding-bottom:4px}h3{font-size:16px;margin:20px 0 8px}\
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0 0 8px}\
dl.meta dt{color:#5b6670}dl.meta dd{margin:0;word-break:break-all}\
nav a{margin-right:14px}a{color:#1f5fa8}\
table{border-collapse:collapse;background:#fff;font-variant-numeric:tabular-nums;margin:6px 0}\
th,td{border:1px solid #dde2e7;padding:3px 7px;text-align:right;white-space:nowrap}\
table{font-size:13px}th{background:#eef1f4;font-weight:600;white-space:normal;\
vertical-align:bottom}td.l,th.l{text-align:left}\
tr.best td{background:#e8f6e8}tr.flat td{background:#fdecea}\
.tag{display:inline-block;font-size:11px;font-weight:600;border-radius:3px;padding:0 5px;\
margin-left:6px;color:#fff;vertical-align:1px}.tag.best{background:#2e8b3a}\
.tag.knee{background:#b7791f}.tag.flat{background:#c53030}\
.scroll{overflow-x:auto}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px}\
.grid.small{grid-template-columns:repeat(auto-fill,minmax(380px,1fr))}\
figure{margin:0;background:#fff;border:1px solid #dde2e7;border-radius:6px;padding:8px 10px}\
figure svg{display:block;width:100%;height:auto}\
figcaption{font-weight:600;margin-bottom:4px;word-break:break-all}\
.note{color:#5b6670;font-size:13px;margin:4px 0}\
.legend span{display:inline-block;margin-right:14px;font-size:13px}\
.legend i{display:inline-block;width:14px;height:10px;margin-right:5px;border-radius:2px;\
vertical-align:0}\
article.run{background:#fff;border:1px solid #dde2e7;border-radius:6px;padding:4px 14px 14px;\
margin:14px 0}article.run figure{border:none;padding:0}\
.verdict{font-weight:600}.err{color:#b00020}\
footer{color:#5b6670;font-size:12px;margin-top:30px}footer li{word-break:break-all}";

/// Distinct non-empty values of a string field across runs, for the header.
fn distinct(report: &Report, get: impl Fn(&Run) -> Option<String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for r in &report.runs {
        if let Some(v) = get(r).filter(|v| !v.is_empty())
            && !seen.contains(&v)
        {
            seen.push(v);
        }
    }
    if seen.is_empty() {
        "–".into()
    } else {
        seen.join(", ")
    }
}

/// llmb's extras of a run's result, when it has them.
fn llmb(run: &Run) -> Option<&LlmbExtras> {
    run.result.llmb.as_ref()
}

pub fn render(report: &Report, options: &RenderOptions) -> anyhow::Result<String> {
    let groups = groups_of(report);
    let all_rows: Vec<&Row> = groups.iter().flat_map(|g| &g.rows).collect();
    let detail = detail_runs(report, &groups, options)?;
    let has_server = detail
        .iter()
        .any(|&k| report.runs[k].server_metrics.is_some());

    let mut h = String::with_capacity(1 << 16);
    let model = distinct(report, |r| r.result.model_id.clone());
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; img-src data:\">",
    );
    h.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    let _ = writeln!(
        h,
        "<title>llmb report: {}</title><style>{STYLE}</style></head><body><main>",
        escape(&model)
    );

    // 1. Header and stage table.
    h.push_str("<h1>llmb benchmark report</h1>\n<dl class=\"meta\">");
    let mut dates: Vec<String> = report
        .runs
        .iter()
        .filter_map(|r| r.result.date.clone())
        .collect();
    dates.sort();
    let date = match (dates.first(), dates.last()) {
        (Some(a), Some(b)) if a != b => format!("{} – {} UTC", fmt_date(a), fmt_date(b)),
        (Some(a), _) => format!("{} UTC", fmt_date(a)),
        _ => "–".into(),
    };
    let stage_only = all_rows.iter().filter(|r| r.run.is_none()).count();
    let runs_text = if stage_only > 0 {
        format!(
            "{} ({} more stage{} known only from a stage summary)",
            report.runs.len(),
            stage_only,
            if stage_only == 1 { "" } else { "s" }
        )
    } else {
        report.runs.len().to_string()
    };
    for (k, v) in [
        ("Model", model.clone()),
        ("Backend", distinct(report, |r| r.result.backend.clone())),
        (
            "Base URL",
            distinct(report, |r| llmb(r).and_then(|l| l.base_url.clone())),
        ),
        (
            "Endpoint",
            distinct(report, |r| llmb(r).and_then(|l| l.endpoint.clone())),
        ),
        (
            "Dataset",
            distinct(report, |r| llmb(r).and_then(|l| l.dataset_name.clone())),
        ),
        ("Date", date),
        ("Runs", runs_text),
    ] {
        let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    }
    h.push_str("</dl>\n<nav><a href=\"#stages\">Stages</a><a href=\"#load\">Load curves</a>");
    if !detail.is_empty() {
        h.push_str("<a href=\"#requests\">Per-request detail</a>");
    }
    if has_server {
        h.push_str("<a href=\"#server\">Server metrics</a>");
    }
    h.push_str("</nav>\n");

    h.push_str("<section id=\"stages\"><h2>1. Stages</h2>\n");
    let mut number = 0usize;
    for g in &groups {
        if !g.title.is_empty() {
            let _ = write!(h, "<h3>{}</h3>", escape(&g.title));
        }
        h.push_str(&stage_table(report, g, &all_rows, &detail, &mut number));
        for v in &g.verdict {
            let _ = write!(h, "<p class=\"verdict\">{}</p>", escape(v));
        }
    }
    h.push_str(
        "<p class=\"note\">Latencies in ms. TTFT: first streamed token − send; TPOT: mean time \
         per output token after the first; ITL: gaps between streamed chunks; E2EL: send to last \
         token. Quantiles are recomputed from the per-request records when they are present, \
         else taken from the stage summary or the result file.</p></section>\n",
    );

    // 2. Load curves.
    h.push_str("<section id=\"load\"><h2>2. Load curves</h2>\n");
    h.push_str(&load_curves(&groups)?);
    h.push_str("</section>\n");

    // 3. Per-request detail.
    if !detail.is_empty() {
        h.push_str("<section id=\"requests\"><h2>3. Per-request detail</h2>\n");
        if options.runs.is_empty() && detail.len() < report.runs.len() {
            let _ = write!(
                h,
                "<p class=\"note\">Showing the last of {} runs; <code>llmb report --run \
                 TEXT</code> picks runs whose file name contains TEXT.</p>",
                report.runs.len()
            );
        }
        for &k in &detail {
            h.push_str(&run_detail(report, k, &all_rows, options.timeline_cap)?);
        }
        h.push_str("</section>\n");
    }

    // 4. Server metrics.
    if has_server {
        h.push_str("<section id=\"server\"><h2>4. Server metrics</h2>\n");
        for &k in &detail {
            if let Some(sm) = &report.runs[k].server_metrics {
                h.push_str(&server_section(&report.runs[k], sm)?);
            }
        }
        h.push_str("</section>\n");
    }

    h.push_str("<footer><p>Written by llmb ");
    h.push_str(env!("CARGO_PKG_VERSION"));
    h.push_str(" <code>report</code> from:</p><ul>");
    for r in &report.runs {
        let records = if r.records.is_some() {
            format!(" + {}", file_name(&r.records_path))
        } else {
            String::new()
        };
        let _ = write!(
            h,
            "<li>{}{}</li>",
            escape(&r.path.display().to_string()),
            escape(&records)
        );
    }
    for s in &report.sweeps {
        let _ = write!(h, "<li>{}</li>", escape(&s.path.display().to_string()));
    }
    for (f, why) in &report.skipped {
        let _ = write!(
            h,
            "<li>skipped {}: {}</li>",
            escape(&f.display().to_string()),
            escape(why)
        );
    }
    h.push_str("</ul></footer>\n</main></body></html>\n");
    Ok(h)
}

/// Which runs get per-request charts: `--run` matches, else all of few runs, else the last.
fn detail_runs(
    report: &Report,
    groups: &[Group],
    options: &RenderOptions,
) -> anyhow::Result<Vec<usize>> {
    let in_order: Vec<usize> = groups
        .iter()
        .flat_map(|g| g.rows.iter().filter_map(|r| r.run))
        .collect();
    if !options.runs.is_empty() {
        let mut picked = Vec::new();
        for want in &options.runs {
            let matches: Vec<usize> = in_order
                .iter()
                .copied()
                .filter(|&k| report.runs[k].file_name().contains(want.as_str()))
                .collect();
            ensure!(
                !matches.is_empty(),
                "--run {want:?} matches none of the result files ({})",
                report
                    .runs
                    .iter()
                    .map(Run::file_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for k in matches {
                if !picked.contains(&k) {
                    picked.push(k);
                }
            }
        }
        picked.sort_by_key(|k| in_order.iter().position(|x| x == k));
        return Ok(picked);
    }
    if in_order.len() <= DETAIL_ALL_UP_TO {
        Ok(in_order)
    } else {
        Ok(in_order.last().copied().into_iter().collect())
    }
}

fn stage_table(
    report: &Report,
    g: &Group,
    all_rows: &[&Row],
    detail: &[usize],
    number: &mut usize,
) -> String {
    let rows: Vec<&Row> = g.rows.iter().collect();
    let conc_varies = rows
        .iter()
        .map(|r| r.stats.concurrency)
        .collect::<BTreeSet<_>>()
        .len()
        > 1;
    let rate_varies = rows
        .iter()
        .map(|r| r.stats.rate.to_bits())
        .collect::<BTreeSet<_>>()
        .len()
        > 1;
    let show_conc =
        conc_varies || (!rate_varies && rows.iter().any(|r| r.stats.concurrency.is_some()));
    let show_rate = rate_varies || !show_conc;
    let show_goodput = all_rows.iter().any(|r| r.stats.goodput.is_some());
    let mut h = String::from(
        "<div class=\"scroll\"><table><thead><tr><th>#</th><th class=\"l\">Stage</th>",
    );
    if show_conc {
        h.push_str("<th>Concurrency</th>");
    }
    if show_rate {
        h.push_str("<th>Rate req/s</th>");
    }
    h.push_str("<th>Completed</th><th>Failed</th><th>req/s</th><th>Output tok/s</th>");
    if show_goodput {
        h.push_str("<th>Goodput req/s</th>");
    }
    h.push_str(
        "<th>TTFT p50</th><th>TTFT p99</th><th>TPOT mean</th><th>ITL mean</th><th>ITL p99</th>\
         <th>E2EL p50</th><th>E2EL p95</th><th>E2EL p99</th></tr></thead><tbody>\n",
    );
    for r in rows {
        *number += 1;
        let s = &r.stats;
        let class = if r.best {
            " class=\"best\""
        } else if r.flat {
            " class=\"flat\""
        } else {
            ""
        };
        let mut label = escape(&r.label);
        if let Some(k) = r.run
            && detail.contains(&k)
        {
            label = format!("<a href=\"#{}\">{label}</a>", anchor(k));
        }
        let title = r
            .run
            .map(|k| escape(&report.runs[k].file_name()))
            .unwrap_or_else(|| "no result file".into());
        let mut tags = String::new();
        if r.best {
            tags.push_str("<span class=\"tag best\">best throughput</span>");
        }
        if r.knee {
            tags.push_str("<span class=\"tag knee\">knee</span>");
        }
        if r.flat {
            tags.push_str("<span class=\"tag flat\">saturated</span>");
        }
        let _ = write!(
            h,
            "<tr{class}><td>{number}</td><td class=\"l\" title=\"{title}\">{label}{tags}</td>"
        );
        if show_conc {
            let c = s.concurrency.map_or("unlimited".into(), |c| c.to_string());
            let _ = write!(h, "<td>{c}</td>");
        }
        if show_rate {
            let _ = write!(h, "<td>{}</td>", fmt_rate(s.rate));
        }
        let count = |v: Option<f64>| v.map_or("–".into(), |v| format!("{}", v as u64));
        let _ = write!(
            h,
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            count(s.completed),
            count(s.failed),
            fmt_num(s.req_s),
            fmt_num(s.out_tok_s)
        );
        if show_goodput {
            let _ = write!(h, "<td>{}</td>", fmt_num(s.goodput));
        }
        for v in [
            s.ttft[0],
            s.ttft[2],
            s.tpot_mean,
            s.itl_mean,
            s.itl_p99,
            s.e2el[0],
            s.e2el[1],
            s.e2el[2],
        ] {
            let _ = write!(h, "<td>{}</td>", fmt_num(v));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table></div>\n");
    h
}
