//! Number formats and small HTML pieces shared by the report's sections: escaping, the short
//! numbers of tables and axes, dates, file names, legends and figures.

use std::fmt::Write as _;
use std::path::Path;

use plotters::style::RGBColor;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

pub(super) fn fmt_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.2}"),
        Some(v) if v.is_infinite() => "inf".into(),
        _ => "–".into(),
    }
}

pub(super) fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub(super) fn fmt_count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn fmt_rate(r: f64) -> String {
    if r.is_infinite() {
        "inf".into()
    } else {
        let s = format!("{r}");
        s.strip_suffix(".0").map_or(s.clone(), str::to_string)
    }
}

/// Axis numbers: short, no float noise (`0.30000000000000004`), thousands as `k`.
pub(super) fn fmt_axis(v: f64) -> String {
    let a = v.abs();
    if a < 1e-12 {
        // Tick arithmetic leaves 1.7e-18 where 0 was meant.
        return "0".into();
    }
    let s = if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.1e}")
    };
    if s.contains('.') && !s.contains('e') && !s.ends_with(['k', 'M']) {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A metric value for the server table: integers as integers, others to 4 significant digits.
pub(super) fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => {
            let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
            let s = format!("{v:.digits$}");
            if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                s
            }
        }
    }
}

/// `20261201-080652` → `2026-12-01 08:06:52`.
pub(super) fn fmt_date(d: &str) -> String {
    let b = d.as_bytes();
    if d.len() == 15 && b[8] == b'-' && d.is_ascii() {
        format!(
            "{}-{}-{} {}:{}:{}",
            &d[0..4],
            &d[4..6],
            &d[6..8],
            &d[9..11],
            &d[11..13],
            &d[13..15]
        )
    } else {
        d.to_string()
    }
}

/// A colour as CSS writes it.
pub(super) fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// The colours of a chart's lines and their names, as an HTML legend.
pub(super) fn legend(items: &[(&str, RGBColor)]) -> String {
    let mut s = String::from("<div class=\"legend\">");
    for (name, c) in items {
        let _ = write!(
            s,
            "<span><i style=\"background:{}\"></i>{}</span>",
            hex(*c),
            escape(name)
        );
    }
    s.push_str("</div>");
    s
}

/// A chart (or a note in its place) with its title.
pub(super) fn figure(title: &str, svg: &str, extra: &str) -> String {
    format!(
        "<figure><figcaption>{}</figcaption>{svg}{extra}</figure>\n",
        escape(title)
    )
}

/// The anchor of run `k`'s detail section.
pub(super) fn anchor(k: usize) -> String {
    format!("run-{}", k + 1)
}

/// A path's file name (the whole path when it has none).
pub(super) fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn axis_numbers_are_short() {
        assert_eq!(fmt_axis(0.30000000000000004), "0.3");
        assert_eq!(fmt_axis(2500.0), "2500");
        assert_eq!(fmt_axis(25000.0), "25k");
        assert_eq!(fmt_axis(12.5), "12.5");
        assert_eq!(fmt_axis(0.0), "0");
        assert_eq!(fmt_axis(1.7e-18), "0");
        assert_eq!(fmt_count(1234567), "1,234,567");
        assert_eq!(fmt_date("20261201-080652"), "2026-12-01 08:06:52");
        assert_eq!(fmt_value(Some(3.0)), "3");
        assert_eq!(fmt_value(Some(0.123456)), "0.1235");
        assert_eq!(fmt_value(Some(0.05)), "0.05");
    }
}
