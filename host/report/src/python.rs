//! How Python spells numbers and dates, for the places where llmb must write exactly what
//! `vllm bench serve` writes: percentile labels (`P99`, `P99.9`), result keys (`p99_ttft_ms`),
//! the rate in file names (`10.0qps`, `infqps`) and the `date` field (`20240101-000000`).

/// vLLM's percentile word: `str(int(p))` when `p` is integral, else `str(p)`.
pub(crate) fn p_word(p: f64) -> String {
    if p.fract() == 0.0 && p.abs() < 1e16 {
        format!("{}", p as i64)
    } else {
        py_float(p)
    }
}

/// Python's `str(float)`: `10.0`, `0.5`, `inf`, `1e-05`.
pub(crate) fn py_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        let word = if v > 0.0 { "inf" } else { "-inf" };
        return word.to_string();
    }
    let magnitude = v.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// UTC `YYYYMMDD-HHMMSS` from unix seconds, for the `date` field and file names (vLLM's
/// `strftime("%Y%m%d-%H%M%S")`, in UTC rather than local time).
pub fn timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days: eras of 400 years starting on March 1st.
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
    fn python_number_words() {
        assert_eq!(p_word(99.0), "99");
        assert_eq!(p_word(99.9), "99.9");
        assert_eq!(py_float(10.0), "10.0");
        assert_eq!(py_float(0.5), "0.5");
        assert_eq!(py_float(f64::INFINITY), "inf");
        assert_eq!(py_float(0.00001), "1e-05");
        assert_eq!(py_float(1.5e16), "1.5e+16");
        assert_eq!(timestamp(0), "19700101-000000");
        assert_eq!(timestamp(951_782_400), "20000229-000000");
    }
}
