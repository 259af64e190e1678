//! `llmb compare A B --html FILE`: the comparison as one self-contained page — the verdict per
//! metric and statistic with its interval drawn around zero, and A's and B's latency
//! distributions overlaid (empirical CDFs), so a reader sees where the change happened.
//!
//! Like the report, the page loads nothing (a Content-Security-Policy forbids it) and escapes
//! every string taken from a file.

use std::fmt::Write as _;

use llmb_engine::compare::Comparison;
use llmb_engine::records::RequestRecord;

use super::format::escape;

const A_COLOR: &str = "#1f77b4";
const B_COLOR: &str = "#d62728";
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{padding:3px 8px;border-bottom:1px solid #ddd;\
text-align:right}th.l,td.l{text-align:left}.better{color:#2a7d2a;font-weight:600}\
.worse{color:#c62828;font-weight:600}.same{color:#666}.grid{display:flex;flex-wrap:wrap;gap:1em}\
figure{margin:0}figcaption{font-weight:600}.note{color:#555;font-size:90%}";

/// What the page shows.
pub struct ComparePage<'a> {
    pub a_name: &'a str,
    pub b_name: &'a str,
    /// How the intervals were made (bootstrap over requests, or across runs).
    pub method: &'a str,
    pub rows: &'a [Comparison],
    pub a: &'a [RequestRecord],
    pub b: &'a [RequestRecord],
}

/// The whole HTML page.
pub fn compare_page(p: &ComparePage<'_>) -> String {
    let mut h = String::from("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; img-src data:\">",
    );
    let _ = write!(
        h,
        "<title>llmb compare: {} vs {}</title><style>{STYLE}</style></head><body>",
        escape(p.a_name),
        escape(p.b_name)
    );
    let _ = write!(
        h,
        "<h1>Did B change anything?</h1><p><span style=\"color:{A_COLOR}\">A</span>: {} \
         ({} requests)<br><span style=\"color:{B_COLOR}\">B</span>: {} ({} requests)</p>\
         <p class=\"note\">{}. Lower latency is better; a verdict needs the interval of B − A \
         to exclude zero and the change to pass the minimum effect.</p>",
        escape(p.a_name),
        p.a.len(),
        escape(p.b_name),
        p.b.len(),
        escape(p.method)
    );
    h.push_str(&verdict_table(p.rows));
    h.push_str("<h2>Distributions</h2><div class=\"grid\">");
    type Extract = fn(&RequestRecord) -> Vec<f64>;
    let metrics: [(&str, Extract); 4] = [
        ("TTFT (ms)", |r| {
            r.ttft_s().map(|s| s * 1e3).into_iter().collect()
        }),
        ("ITL (ms)", |r| r.itls_s().map(|s| s * 1e3).collect()),
        ("E2EL (ms)", |r| vec![r.e2el_s() * 1e3]),
        ("TTFO, first answer token (ms)", |r| {
            r.ttfo_s().map(|s| s * 1e3).into_iter().collect()
        }),
    ];
    for (title, extract) in metrics {
        let values = |records: &[RequestRecord]| -> Vec<f64> {
            records
                .iter()
                .filter(|r| r.success && !r.warmup)
                .flat_map(extract)
                .collect()
        };
        let (va, vb) = (values(p.a), values(p.b));
        if va.is_empty() || vb.is_empty() {
            continue;
        }
        let _ = write!(
            h,
            "<figure><figcaption>{}</figcaption>{}</figure>",
            escape(title),
            cdf_svg(&va, &vb, title)
        );
    }
    h.push_str("</div></body></html>\n");
    h
}

/// The rows with their verdicts, and each interval of B − A (in % of A) drawn around zero.
fn verdict_table(rows: &[Comparison]) -> String {
    let span = rows
        .iter()
        .flat_map(|r| {
            let scale = r.a.abs().max(f64::MIN_POSITIVE);
            [r.ci_low / scale * 100.0, r.ci_high / scale * 100.0]
        })
        .filter(|v| v.is_finite())
        .fold(1.0f64, |m, v| m.max(v.abs()));
    let mut h = String::from(
        "<table><tr><th class=\"l\">metric</th><th class=\"l\">stat</th><th>A</th><th>B</th>\
         <th>B − A</th><th>B − A %</th><th>95 % interval of B − A</th><th>noise %</th>\
         <th class=\"l\">interval, % of A (0 in the middle)</th><th class=\"l\">verdict</th></tr>",
    );
    for r in rows {
        let class = match r.verdict.as_str() {
            "better" => "better",
            "worse" => "worse",
            _ => "same",
        };
        let scale = r.a.abs().max(f64::MIN_POSITIVE);
        let x = |pct: f64| 100.0 + (pct / span).clamp(-1.0, 1.0) * 95.0;
        let (lo, hi) = (x(r.ci_low / scale * 100.0), x(r.ci_high / scale * 100.0));
        let color = match class {
            "better" => "#2a7d2a",
            "worse" => "#c62828",
            _ => "#888",
        };
        let bar = format!(
            "<svg width=\"200\" height=\"14\" role=\"img\" aria-label=\"interval\">\
             <line x1=\"100\" y1=\"0\" x2=\"100\" y2=\"14\" stroke=\"#999\"/>\
             <rect x=\"{:.1}\" y=\"4\" width=\"{:.1}\" height=\"6\" fill=\"{color}\"/>\
             <circle cx=\"{:.1}\" cy=\"7\" r=\"2.5\" fill=\"#222\"/></svg>",
            lo,
            (hi - lo).max(1.0),
            x(r.difference_pct)
        );
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{:.3}</td><td>{:.3}</td>\
             <td>{:.3}</td><td>{:.1}</td><td>[{:.3}, {:.3}]</td><td>{:.1}</td><td class=\"l\">{bar}</td>\
             <td class=\"l {class}\">{}</td></tr>",
            escape(&r.metric),
            escape(&r.statistic),
            r.a,
            r.b,
            r.difference,
            r.difference_pct,
            r.ci_low,
            r.ci_high,
            r.noise_pct,
            escape(&r.verdict)
        );
    }
    h.push_str("</table>");
    h
}

/// A's and B's empirical CDFs on one chart (x: the metric, y: share of samples at or below).
fn cdf_svg(a: &[f64], b: &[f64], title: &str) -> String {
    const W: f64 = 420.0;
    const H: f64 = 240.0;
    const L: f64 = 50.0;
    const B: f64 = 30.0;
    let sorted = |v: &[f64]| {
        let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        s.sort_by(f64::total_cmp);
        s
    };
    let (sa, sb) = (sorted(a), sorted(b));
    if sa.is_empty() || sb.is_empty() {
        return "<p class=\"note\">No finite values to draw.</p>".into();
    }
    let lo = sa[0].min(sb[0]);
    let hi = sa[sa.len() - 1].max(sb[sb.len() - 1]);
    let width = (hi - lo).max(1e-9);
    let px = |v: f64| L + (v - lo) / width * (W - L - 10.0);
    let py = |q: f64| (H - B) - q * (H - B - 10.0);
    let line = |s: &[f64]| {
        // At most ~400 points per curve, whatever the sample count.
        let step = (s.len() / 400).max(1);
        let mut pts = String::new();
        for (i, v) in s.iter().enumerate().step_by(step) {
            let _ = write!(
                pts,
                "{:.1},{:.1} ",
                px(*v),
                py((i + 1) as f64 / s.len() as f64)
            );
        }
        let _ = write!(pts, "{:.1},{:.1}", px(s[s.len() - 1]), py(1.0));
        pts
    };
    format!(
        "<svg width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{label}\">\
         <line x1=\"{L}\" y1=\"{y0}\" x2=\"{xr}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <line x1=\"{L}\" y1=\"10\" x2=\"{L}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <text x=\"{L}\" y=\"{yt}\" font-size=\"11\">{lo:.1}</text>\
         <text x=\"{xr}\" y=\"{yt}\" font-size=\"11\" text-anchor=\"end\">{hi:.1}</text>\
         <text x=\"{xl}\" y=\"14\" font-size=\"11\" text-anchor=\"end\">1</text>\
         <text x=\"{xl}\" y=\"{y0}\" font-size=\"11\" text-anchor=\"end\">0</text>\
         <polyline fill=\"none\" stroke=\"{A_COLOR}\" stroke-width=\"1.5\" points=\"{pa}\"/>\
         <polyline fill=\"none\" stroke=\"{B_COLOR}\" stroke-width=\"1.5\" points=\"{pb}\"/></svg>",
        label = escape(&format!("CDF of {title}, A and B")),
        y0 = H - B,
        yt = H - B + 14.0,
        xr = W - 10.0,
        xl = L - 4.0,
        pa = line(&sa),
        pb = line(&sb),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_names_and_draws_both_runs() {
        let record = |ttft_ms: u64| RequestRecord {
            delta_ns: vec![ttft_ms * 1_000_000, ttft_ms * 1_000_000 + 1_000_000],
            end_ns: ttft_ms * 1_000_000 + 1_000_000,
            output_tokens: 2,
            success: true,
            ..RequestRecord::default()
        };
        let a: Vec<RequestRecord> = (0..20).map(|i| record(10 + i % 3)).collect();
        let b: Vec<RequestRecord> = (0..20).map(|i| record(30 + i % 3)).collect();
        let rows = llmb_engine::compare::compare(&a, &b, Default::default());
        let html = compare_page(&ComparePage {
            a_name: "<a>",
            b_name: "b",
            method: "bootstrap",
            rows: &rows,
            a: &a,
            b: &b,
        });
        assert!(html.contains("&lt;a&gt;") && !html.contains("<a>"));
        assert!(html.contains("class=\"l worse\">worse"));
        assert_eq!(
            html.matches("<polyline").count(),
            2 * 3,
            "TTFT, ITL and E2EL"
        );
    }
}
