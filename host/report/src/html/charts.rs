//! The SVG charts of the report, drawn with plotters' SVG backend: the load axis (concurrency
//! or rate, log2 when it spans a factor of 8), line charts against load, histograms, the
//! per-request timeline and the small charts of server metrics.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;

use llmb_engine::records::RequestRecord;

use super::format::{fmt_axis, fmt_count, fmt_ms, fmt_rate};
use super::stats::Row;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum XKind {
    Concurrency,
    Rate,
    /// Nothing varied: points are numbered as the table rows.
    Index,
}

/// How load maps to the x axis: whichever of concurrency and rate the runs varied, on a log2
/// scale when it spans a factor of 8 or more (sweeps usually double the load).
#[derive(Debug, Clone)]
pub(super) struct XScale {
    pub(super) kind: XKind,
    pub(super) log2: bool,
    /// Tick values in data space: the loads that were tested.
    pub(super) ticks: Vec<f64>,
    /// Loads (data space) marked by a labelled vertical line: where saturation set in.
    pub(super) marks: Vec<(f64, &'static str)>,
}

impl XScale {
    pub(super) fn of(rows: &[&Row]) -> Self {
        let concurrencies: BTreeSet<usize> =
            rows.iter().filter_map(|r| r.stats.concurrency).collect();
        let rates: BTreeSet<u64> = rows
            .iter()
            .map(|r| r.stats.rate)
            .filter(|r| r.is_finite())
            .map(f64::to_bits)
            .collect();
        let (kind, mut values): (XKind, Vec<f64>) = if concurrencies.len() > 1 {
            (
                XKind::Concurrency,
                concurrencies.iter().map(|&c| c as f64).collect(),
            )
        } else if rates.len() > 1 {
            (
                XKind::Rate,
                rates.iter().map(|&b| f64::from_bits(b)).collect(),
            )
        } else {
            (XKind::Index, (1..=rows.len()).map(|i| i as f64).collect())
        };
        values.sort_by(f64::total_cmp);
        if values.is_empty() {
            values.push(1.0);
        }
        let (lo, hi) = (values[0], values[values.len() - 1]);
        let log2 = kind != XKind::Index && lo > 0.0 && hi / lo >= 8.0;
        // At most a dozen ticks, the first and last always among them.
        let step = values.len().div_ceil(12);
        let mut ticks: Vec<f64> = values.iter().copied().step_by(step.max(1)).collect();
        if ticks.last() != values.last() {
            ticks.push(hi);
        }
        XScale {
            kind,
            log2,
            ticks,
            marks: Vec::new(),
        }
    }

    /// Row numbers start after `first` rows (when the axis is the table's row number).
    pub(super) fn numbered_from(mut self, first: usize) -> Self {
        if self.kind == XKind::Index {
            for t in &mut self.ticks {
                *t += first as f64;
            }
        }
        self
    }

    /// The row's x in data space (`None`: not on this axis, e.g. unlimited concurrency).
    pub(super) fn x_of(&self, row: &Row, index: usize) -> Option<f64> {
        match self.kind {
            XKind::Concurrency => row.stats.concurrency.map(|c| c as f64),
            XKind::Rate => Some(row.stats.rate).filter(|r| r.is_finite()),
            XKind::Index => Some(index as f64 + 1.0),
        }
    }

    pub(super) fn t(&self, x: f64) -> f64 {
        if self.log2 { x.log2() } else { x }
    }

    fn untransform(&self, t: f64) -> f64 {
        if self.log2 { t.exp2() } else { t }
    }

    pub(super) fn range(&self) -> (f64, f64) {
        let lo = self.t(self.ticks[0]);
        let hi = self.t(self.ticks[self.ticks.len() - 1]);
        if hi - lo <= f64::EPSILON {
            return (lo - 1.0, hi + 1.0);
        }
        let pad = (hi - lo) * 0.06;
        (lo - pad, hi + pad)
    }

    fn desc(&self) -> String {
        let scale = if self.log2 { " (log scale)" } else { "" };
        match self.kind {
            XKind::Concurrency => format!("max concurrency{scale}"),
            XKind::Rate => format!("request rate, req/s{scale}"),
            XKind::Index => "run (row # of the table)".into(),
        }
    }

    pub(super) fn label(&self, t: f64) -> String {
        let x = self.untransform(t);
        match self.kind {
            XKind::Concurrency => format!("{}", x.round() as i64),
            XKind::Rate => fmt_rate((x * 1000.0).round() / 1000.0),
            XKind::Index => format!("#{}", x.round() as i64),
        }
    }
}

type DrawResult = anyhow::Result<()>;

const FONT: &str = "sans-serif";
const CHART_W: u32 = 640;
const CHART_H: u32 = 340;
const GRID_BOLD: RGBColor = RGBColor(215, 215, 215);
const AXIS: RGBColor = RGBColor(90, 90, 90);
const MARK: RGBColor = RGBColor(197, 48, 48);

pub(super) const C_P50: RGBColor = RGBColor(31, 119, 180);
pub(super) const C_P95: RGBColor = RGBColor(255, 127, 14);
pub(super) const C_P99: RGBColor = RGBColor(214, 39, 40);
pub(super) const C_REQ: RGBColor = RGBColor(44, 160, 44);
pub(super) const C_TOK: RGBColor = RGBColor(148, 103, 189);
pub(super) const C_WAIT: RGBColor = RGBColor(246, 178, 70);
pub(super) const C_STREAM: RGBColor = RGBColor(49, 116, 196);
pub(super) const C_FAIL: RGBColor = RGBColor(214, 39, 40);
pub(super) const C_SERVER: RGBColor = RGBColor(23, 128, 128);

/// Draws into a fresh SVG of `w`×`h` and returns its markup, to be inlined in the page.
fn svg(
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> DrawResult,
) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(out)
}

/// A linear f64 axis whose ticks are exactly the given values (the tested loads), so each
/// point sits on a labelled grid line.
#[derive(Debug, Clone)]
struct TickedAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// One line of a load chart: a colour, a name for the HTML legend, points in data space.
pub(super) struct Line {
    pub(super) name: String,
    pub(super) color: RGBColor,
    /// Which group the points belong to (selects the marker shape).
    pub(super) group: usize,
    pub(super) points: Vec<(f64, f64)>,
}

/// Upper end of a y axis starting at zero, with headroom so the top point is not on the frame.
fn y_top(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max <= 0.0 { 1.0 } else { max * 1.12 }
}

type LoadCoord = Cartesian2d<TickedAxis, plotters::coord::types::RangedCoordf64>;

/// The left axis, grid and lines of a load chart.
fn draw_primary(
    chart: &mut ChartContext<'_, SVGBackend<'_>, LoadCoord>,
    x: &XScale,
    y_desc: &str,
    lines: &[Line],
) -> DrawResult {
    let x_fmt = |t: &f64| x.label(*t);
    chart
        .configure_mesh()
        .x_desc(x.desc())
        .y_desc(y_desc)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| fmt_axis(*v))
        .y_labels(7)
        .bold_line_style(GRID_BOLD)
        .light_line_style(TRANSPARENT)
        .axis_style(AXIS)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()?;
    let top = chart.y_range().end;
    for &(at, label) in &x.marks {
        let t = x.t(at);
        chart.draw_series(DashedLineSeries::new(
            [(t, 0.0), (t, top)],
            5,
            4,
            MARK.stroke_width(1),
        ))?;
        let style = (FONT, 12).into_font().color(&MARK);
        chart.draw_series(std::iter::once(
            EmptyElement::at((t, top)) + Text::new(label, (4, 2), style),
        ))?;
    }
    for l in lines {
        let pts: Vec<(f64, f64)> = l.points.iter().map(|&(a, b)| (x.t(a), b)).collect();
        chart.draw_series(LineSeries::new(pts.clone(), l.color.stroke_width(2)))?;
        let c = l.color;
        match l.group % 3 {
            0 => chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?,
            1 => chart.draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 5, c.filled())))?,
            _ => chart.draw_series(pts.iter().map(|&p| Cross::new(p, 4, c.stroke_width(2))))?,
        };
    }
    Ok(())
}

/// A line chart against load; `right` adds dashed lines on a second y axis.
pub(super) fn load_chart(
    x: &XScale,
    y_desc: &str,
    lines: &[Line],
    right: Option<(&str, &[Line])>,
) -> anyhow::Result<String> {
    let (x0, x1) = x.range();
    let axis = TickedAxis {
        lo: x0,
        hi: x1,
        ticks: x.ticks.iter().map(|&v| x.t(v)).collect(),
    };
    let left_top = y_top(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)));
    svg(CHART_W, CHART_H, |root| {
        let chart = ChartBuilder::on(root)
            .margin(14)
            .margin_right(if right.is_some() { 8 } else { 22 })
            .x_label_area_size(46)
            .y_label_area_size(66)
            .right_y_label_area_size(if right.is_some() { 66 } else { 0 })
            .build_cartesian_2d(axis.clone(), 0.0..left_top)?;
        let Some((desc, rlines)) = right else {
            let mut chart = chart;
            return draw_primary(&mut chart, x, y_desc, lines);
        };
        // The secondary axis takes over the right label area, so it is set before the
        // primary mesh is drawn (else the left axis labels are drawn on the right too).
        // More headroom on the right axis, so that a point of each axis at its maximum (always
        // the case with one run) do not land on top of each other.
        let top = y_top(rlines.iter().flat_map(|l| l.points.iter().map(|p| p.1))) * 1.25;
        let mut chart = chart.set_secondary_coord(axis.clone(), 0.0..top);
        draw_primary(&mut chart, x, y_desc, lines)?;
        chart
            .configure_secondary_axes()
            .y_desc(desc)
            .y_label_formatter(&|v| fmt_axis(*v))
            .y_labels(7)
            .axis_style(AXIS)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()?;
        for l in rlines {
            let pts: Vec<(f64, f64)> = l.points.iter().map(|&(a, b)| (x.t(a), b)).collect();
            let c = l.color;
            chart.draw_secondary_series(DashedLineSeries::new(
                pts.clone(),
                6,
                4,
                c.stroke_width(2),
            ))?;
            // Squares, unlike the primary lines' markers, so the axes stay apart.
            chart
                .draw_secondary_series(pts.iter().map(|&p| {
                    EmptyElement::at(p) + Rectangle::new([(-5, -5), (5, 5)], c.filled())
                }))?;
        }
        Ok(())
    })
}

/// Histogram of `values` (ms); values above the 99.5th percentile are counted in the note
/// rather than stretching the axis.
pub(super) fn histogram(
    values: &[f64],
    x_desc: &str,
    y_desc: &str,
    color: RGBColor,
) -> anyhow::Result<(String, String)> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let lo = sorted[0];
    let max = sorted[n - 1];
    let mut hi = llmb_engine::metrics::percentile(&sorted, 99.5);
    if max <= hi * 1.25 {
        hi = max;
    }
    if hi - lo < 1e-9 {
        hi = lo + lo.abs().max(1.0) * 0.05;
    }
    let bins = (n as f64).sqrt().ceil().clamp(10.0, 50.0) as usize;
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    let mut above = 0usize;
    for &v in &sorted {
        if v > hi {
            above += 1;
            continue;
        }
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    let step = nice_step(most as f64, 6).max(1.0) as usize;
    // Counts are whole numbers: ticks at multiples of a round step, never at 0.5.
    let y_axis = TickedAxis {
        lo: 0.0,
        hi: most as f64 * 1.12,
        ticks: (0..=most).step_by(step).map(|c| c as f64).collect(),
    };
    let pad = (hi - lo) * 0.02;
    let chart =
        svg(CHART_W, CHART_H - 40, |root| {
            let mut chart = ChartBuilder::on(root)
                .margin(14)
                .margin_right(22)
                .x_label_area_size(46)
                .y_label_area_size(66)
                .build_cartesian_2d((lo - pad)..(hi + pad), y_axis.clone())?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_label_formatter(&|v| fmt_axis(*v))
                .y_label_formatter(&|v| fmt_axis(*v))
                .x_labels(8)
                .bold_line_style(GRID_BOLD)
                .light_line_style(TRANSPARENT)
                .axis_style(AXIS)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .draw()?;
            chart.draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(
                |(i, &c)| {
                    let a = lo + width * i as f64;
                    Rectangle::new([(a, 0.0), (a + width, c as f64)], color.mix(0.85).filled())
                },
            ))?;
            chart.draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(
                |(i, &c)| {
                    let a = lo + width * i as f64;
                    Rectangle::new([(a, 0.0), (a + width, c as f64)], WHITE.stroke_width(1))
                },
            ))?;
            Ok(())
        })?;
    let mut note = format!(
        "{} values; p50 {} ms, p99 {} ms, max {} ms",
        fmt_count(n),
        fmt_ms(llmb_engine::metrics::percentile(&sorted, 50.0)),
        fmt_ms(llmb_engine::metrics::percentile(&sorted, 99.0)),
        fmt_ms(max)
    );
    if above > 0 {
        let _ = write!(
            note,
            "; {} value{} above {} ms not drawn",
            fmt_count(above),
            if above == 1 { "" } else { "s" },
            fmt_ms(hi)
        );
    }
    Ok((chart, note))
}

/// Round steps (1, 2, 5 × 10^k) giving at most `most` ticks over `span`.
fn nice_step(span: f64, most: usize) -> f64 {
    let raw = span / most.max(1) as f64;
    let base = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * base)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * base)
}

/// Each request a bar from send to end: amber until the first token, blue while streaming, red
/// when it failed. Requests are ordered by send time, the first at the top; request k (1-based)
/// is drawn at y = n − k + 1.
pub(super) fn timeline(records: &[&RequestRecord]) -> anyhow::Result<String> {
    let n = records.len();
    let end_of = |r: &RequestRecord| r.end_ns.max(r.delta_ns.last().copied().unwrap_or(0));
    let end = records.iter().map(|r| end_of(r)).max().unwrap_or(1) as f64 / 1e9;
    let start = records.iter().map(|r| r.sent_ns).min().unwrap_or(0) as f64 / 1e9;
    let height = (n as u32 * 4).clamp(220, 900) + 70;
    let width = CHART_W * 2 + 20;
    let pad = (end - start).max(1e-3) * 0.01;
    let step = nice_step(n as f64, 10).max(1.0) as usize;
    let mut ticks: Vec<f64> = std::iter::once(1)
        .chain((step..=n).step_by(step))
        .map(|k| (n - k + 1) as f64)
        .collect();
    ticks.dedup();
    let y_axis = TickedAxis {
        lo: 0.4,
        hi: n as f64 + 0.6,
        ticks,
    };
    svg(width, height, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .margin_right(22)
            .x_label_area_size(46)
            .y_label_area_size(66)
            .build_cartesian_2d((start - pad)..(end + pad), y_axis.clone())?;
        chart
            .configure_mesh()
            .x_desc("seconds since the run started")
            .y_desc("request # (by send time)")
            .x_label_formatter(&|v| fmt_axis(*v))
            .y_label_formatter(&|v| format!("{}", n as i64 - v.round() as i64 + 1))
            .x_labels(12)
            .bold_line_style(GRID_BOLD)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()?;
        let half = if n > 150 { 0.5 } else { 0.35 };
        let min_width = (end - start).max(1e-3) * 0.004;
        let mut bars = Vec::with_capacity(n * 2);
        for (i, r) in records.iter().enumerate() {
            let y = (n - i) as f64;
            let (y0, y1) = (y - half, y + half);
            let sent = r.sent_ns as f64 / 1e9;
            let done = end_of(r) as f64 / 1e9;
            if !r.success {
                // A fast failure would be a hairline: give it a visible width.
                let done = done.max(sent + min_width);
                bars.push(Rectangle::new([(sent, y0), (done, y1)], C_FAIL.filled()));
                continue;
            }
            match r.delta_ns.first() {
                Some(&first) => {
                    let first = first as f64 / 1e9;
                    bars.push(Rectangle::new([(sent, y0), (first, y1)], C_WAIT.filled()));
                    bars.push(Rectangle::new([(first, y0), (done, y1)], C_STREAM.filled()));
                }
                None => bars.push(Rectangle::new([(sent, y0), (done, y1)], C_STREAM.filled())),
            }
        }
        chart.draw_series(bars)?;
        Ok(())
    })
}

/// One small chart of a server metric over the run.
pub(super) fn server_chart(points: &[(f64, f64)]) -> anyhow::Result<String> {
    time_chart(points, None, "", C_SERVER)
}

/// A value over the run's seconds, with the steady-state window shaded when given.
pub(super) fn time_chart(
    points: &[(f64, f64)],
    steady: Option<(f64, f64)>,
    y_desc: &str,
    color: RGBColor,
) -> anyhow::Result<String> {
    let (mut t0, mut t1) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (mut y0, mut y1) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    if t1 - t0 < 1e-9 {
        t0 -= 1.0;
        t1 += 1.0;
    }
    if y1 - y0 < 1e-12 {
        let d = y0.abs().max(1.0) * 0.1;
        y0 -= d;
        y1 += d;
    } else {
        let d = (y1 - y0) * 0.08;
        y0 = if y0 >= 0.0 && y0 - d < 0.0 {
            0.0
        } else {
            y0 - d
        };
        y1 += d;
    }
    svg(420, 230, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_right(16)
            .x_label_area_size(38)
            .y_label_area_size(62)
            .build_cartesian_2d(t0..t1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(y_desc)
            .x_label_formatter(&|v| fmt_axis(*v))
            .y_label_formatter(&|v| fmt_axis(*v))
            .x_labels(6)
            .y_labels(5)
            .bold_line_style(GRID_BOLD)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 12))
            .draw()?;
        if let Some((a, b)) = steady {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(a.max(t0), y0), (b.min(t1), y1)],
                C_REQ.mix(0.12).filled(),
            )))?;
        }
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))?;
        if points.len() <= 60 {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 2, color.filled())))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::stats::Stats;
    use super::*;

    fn row(concurrency: Option<usize>, rate: f64) -> Row {
        Row {
            label: String::new(),
            stats: Stats {
                concurrency,
                rate,
                ..Stats::default()
            },
            run: None,
            best: false,
            knee: false,
            flat: false,
        }
    }

    #[test]
    fn x_axis_follows_what_varied() {
        let rows = [
            row(Some(1), f64::INFINITY),
            row(Some(4), f64::INFINITY),
            row(Some(16), f64::INFINITY),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let x = XScale::of(&refs);
        assert_eq!(x.kind, XKind::Concurrency);
        assert!(x.log2, "1..16 spans a factor of 16: log scale");
        assert_eq!(x.label(x.t(16.0)), "16");

        let rows = [row(None, 2.0), row(None, 4.0)];
        let refs: Vec<&Row> = rows.iter().collect();
        let x = XScale::of(&refs);
        assert_eq!(x.kind, XKind::Rate);
        assert!(!x.log2);

        let rows = [row(Some(8), 1.0)];
        let refs: Vec<&Row> = rows.iter().collect();
        let x = XScale::of(&refs);
        assert_eq!(x.kind, XKind::Index);
        let (a, b) = x.range();
        assert!(a < 1.0 && b > 1.0);
    }
}
