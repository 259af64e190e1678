//! Section 2 of the page: latency and throughput against load (concurrency or rate), one line
//! per metric and one marker shape per sweep.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use plotters::style::RGBColor;

use super::charts::{C_P50, C_P95, C_P99, C_REQ, C_TOK, Line, XKind, XScale, load_chart};
use super::format::{escape, figure, legend};
use super::stats::{Group, Row, Stats};

/// Section 2: latency and throughput against load, one line per metric (and per sweep); one
/// set of charts when every group varied the same thing (concurrency or rate),
/// else a set per group, since a rate sweep has no place on a concurrency axis.
pub(super) fn load_curves(groups: &[Group]) -> anyhow::Result<String> {
    let kinds: BTreeSet<String> = groups
        .iter()
        .map(|g| format!("{:?}", XScale::of(&g.rows.iter().collect::<Vec<_>>()).kind))
        .collect();
    if groups.len() < 2 || kinds.len() == 1 {
        return load_section(groups, 0);
    }
    let mut h = String::new();
    let mut first = 0;
    for g in groups {
        let title = if g.title.is_empty() { "Runs" } else { &g.title };
        let _ = write!(h, "<h3>{}</h3>", escape(title));
        h.push_str(&load_section(std::slice::from_ref(g), first)?);
        first += g.rows.len();
    }
    Ok(h)
}

/// Latency and throughput against load, one line per metric and group; `first` is the table
/// row number of the first row (for the x axis when no load varied).
fn load_section(groups: &[Group], first: usize) -> anyhow::Result<String> {
    let all_rows: Vec<&Row> = groups.iter().flat_map(|g| &g.rows).collect();
    let mut x = XScale::of(&all_rows).numbered_from(first);
    // Each group's points, sorted by x; rows off the axis are counted for a note.
    let mut index = first;
    let mut off_axis = 0usize;
    let mut per_group: Vec<Vec<(f64, &Row)>> = Vec::new();
    for g in groups {
        let mut pts = Vec::new();
        for r in &g.rows {
            match x.x_of(r, index) {
                Some(v) => pts.push((v, r)),
                None => off_axis += 1,
            }
            index += 1;
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        per_group.push(pts);
    }
    x.marks = per_group
        .iter()
        .flatten()
        .filter(|(_, r)| r.flat)
        .map(|(v, _)| (*v, "saturation"))
        .collect();
    let lines = |name: &str, color: RGBColor, get: &dyn Fn(&Stats) -> Option<f64>| -> Vec<Line> {
        per_group
            .iter()
            .enumerate()
            .map(|(gi, pts)| Line {
                name: name.to_string(),
                color,
                group: gi,
                points: pts
                    .iter()
                    .filter_map(|(xv, r)| get(&r.stats).filter(|v| v.is_finite()).map(|y| (*xv, y)))
                    .collect(),
            })
            .filter(|l| !l.points.is_empty())
            .collect()
    };
    let mut h = String::new();
    if all_rows.len() == 1 {
        h.push_str("<p class=\"note\">One run: each chart shows its numbers as single points.</p>");
    } else if x.kind == XKind::Index {
        h.push_str(
            "<p class=\"note\">Neither concurrency nor request rate varied across these runs: \
             points are placed by their row number in the table.</p>",
        );
    }
    if off_axis > 0 {
        let _ = write!(
            h,
            "<p class=\"note\">{off_axis} row{} with unlimited {} left out of these charts.</p>",
            if off_axis == 1 { "" } else { "s" },
            if x.kind == XKind::Concurrency {
                "concurrency"
            } else {
                "rate"
            }
        );
    }
    if groups.len() > 1 {
        let shapes = ["●", "▲", "✕"];
        let names: Vec<String> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let title = if g.title.is_empty() { "runs" } else { &g.title };
                format!("{} {}", shapes[i % 3], escape(title))
            })
            .collect();
        let _ = write!(h, "<p class=\"note\">Markers: {}</p>", names.join("; "));
    }
    h.push_str("<div class=\"grid\">\n");
    let pct = |which: usize, name: &str, c: RGBColor, field: fn(&Stats) -> [Option<f64>; 3]| {
        lines(name, c, &move |s: &Stats| field(s)[which])
    };
    let e2el: Vec<Line> = [
        pct(0, "p50", C_P50, |s| s.e2el),
        pct(1, "p95", C_P95, |s| s.e2el),
        pct(2, "p99", C_P99, |s| s.e2el),
    ]
    .into_iter()
    .flatten()
    .collect();
    let ttft: Vec<Line> = [
        pct(0, "p50", C_P50, |s| s.ttft),
        pct(1, "p95", C_P95, |s| s.ttft),
        pct(2, "p99", C_P99, |s| s.ttft),
    ]
    .into_iter()
    .flatten()
    .collect();
    let req = lines("requests/s", C_REQ, &|s| s.req_s);
    let tok = lines("output tokens/s", C_TOK, &|s| s.out_tok_s);
    let ttft99 = lines("TTFT p99", C_P99, &|s| s.ttft[2]);
    let legend_of = |ls: &[Line]| {
        let mut seen: Vec<(&str, RGBColor)> = Vec::new();
        for l in ls {
            if !seen.iter().any(|(n, _)| *n == l.name) {
                seen.push((&l.name, l.color));
            }
        }
        legend(&seen)
    };
    let mut chart = |title: &str,
                     y: &str,
                     ls: &[Line],
                     right: Option<(&str, &[Line])>,
                     leg: String|
     -> anyhow::Result<()> {
        if ls.is_empty() && right.is_none_or(|r| r.1.is_empty()) {
            h.push_str(&figure(
                title,
                "",
                "<p class=\"note\">No values for this chart in these files.</p>",
            ));
            return Ok(());
        }
        h.push_str(&figure(title, &load_chart(&x, y, ls, right)?, &leg));
        Ok(())
    };
    chart(
        "End-to-end latency",
        "E2EL, ms",
        &e2el,
        None,
        legend_of(&e2el),
    )?;
    chart(
        "Time to first token",
        "TTFT, ms",
        &ttft,
        None,
        legend_of(&ttft),
    )?;
    chart(
        "Request throughput",
        "requests/s",
        &req,
        None,
        legend_of(&req),
    )?;
    chart(
        "Output token throughput",
        "output tokens/s",
        &tok,
        None,
        legend_of(&tok),
    )?;
    let both_legend = format!(
        "{}<p class=\"note\">Solid line with dots, left axis: output tokens/s. Dashed line \
         with squares, right axis: TTFT p99 (ms).</p>",
        legend(&[("output tokens/s", C_TOK), ("TTFT p99", C_P99)])
    );
    chart(
        "Output tokens/s and TTFT p99",
        "output tokens/s",
        &tok,
        Some(("TTFT p99, ms", &ttft99)),
        both_legend,
    )?;
    h.push_str("</div>\n");
    Ok(h)
}
