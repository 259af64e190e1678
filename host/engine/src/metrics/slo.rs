//! Service-level objectives: parsing `--goodput` items and `--slo-file`s (TOML or YAML) into
//! `(metric, milliseconds)` pairs, and the test that tells which SLOs a request missed. Kept
//! apart from the statistics because it is input validation with its own error wording.

use super::{MS_PER_S, MetricsConfig};

/// Metrics that `--goodput` accepts SLOs for (vLLM's `VALID_NAMES`).
pub const GOODPUT_METRICS: [&str; 3] = ["ttft", "tpot", "e2el"];

/// Metrics an `--slo-file` may bound: vLLM's plus `itl`, which holds when a request's longest
/// gap between streamed chunks is within the limit.
pub const SLO_METRICS: [&str; 4] = ["ttft", "tpot", "itl", "e2el"];

impl MetricsConfig {
    /// Parses `--goodput` items such as `ttft:200` with vLLM's rules (one `NAME:MS` per item,
    /// name in ttft/tpot/e2el, non-negative value, a repeated name keeps its last value), naming
    /// the offending item in the error so a typo is obvious.
    pub fn parse_goodput(args: &[String]) -> anyhow::Result<Vec<(String, f64)>> {
        let mut slos: Vec<(String, f64)> = Vec::new();
        for item in args.iter().flat_map(|a| a.split_whitespace()) {
            let (name, value) = item
                .split_once(':')
                .filter(|(_, v)| !v.contains(':'))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--goodput {item:?}: expected METRIC:MILLISECONDS, e.g. ttft:200"
                    )
                })?;
            anyhow::ensure!(
                GOODPUT_METRICS.contains(&name),
                "--goodput {item:?}: unknown metric {name:?} (use ttft, tpot or e2el)"
            );
            let ms: f64 = value.trim().parse().map_err(|_| {
                anyhow::anyhow!("--goodput {item:?}: {value:?} is not a number of milliseconds")
            })?;
            anyhow::ensure!(
                ms >= 0.0,
                "--goodput {item:?}: the SLO must be a non-negative number of milliseconds"
            );
            match slos.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = ms,
                None => slos.push((name.to_string(), ms)),
            }
        }
        Ok(slos)
    }
}

/// Reads an `--slo-file`: TOML or YAML (`.yaml`/`.yml`, or a file of another name that is not
/// TOML) with `ttft`, `tpot`, `itl` and `e2el` limits in milliseconds, at the top level or under
/// `slo`; the keys may also be spelt `ttft_ms`, `tpot_ms`, `itl_ms`, `e2el_ms` or `latency_ms`.
/// Errors name the file and the key.
pub fn parse_slo_file(path: &std::path::Path) -> anyhow::Result<Vec<(String, f64)>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--slo-file {shown}: cannot read: {e}"))?;
    let doc = slo_document(path, &text)?;
    let table = match doc.get("slo") {
        Some(toml::Value::Table(t)) if doc.len() == 1 => t.clone(),
        Some(_) => anyhow::bail!(
            "--slo-file {shown}: put the limits either at the top level or under slo, not both"
        ),
        None => doc,
    };
    let mut slos: Vec<(String, f64)> = Vec::new();
    for (key, value) in &table {
        let metric = slo_metric(key).ok_or_else(|| {
            anyhow::anyhow!(
                "--slo-file {shown}: unknown key {key:?} (use {}, or {})",
                SLO_METRICS.join(", "),
                SLO_KEY_ALIASES.map(|(alias, _)| alias).join(", ")
            )
        })?;
        anyhow::ensure!(
            !slos.iter().any(|(m, _)| m == metric),
            "--slo-file {shown}: {key} sets the {metric} limit a second time"
        );
        let ms = match value {
            toml::Value::Integer(n) => *n as f64,
            toml::Value::Float(f) => *f,
            other => anyhow::bail!(
                "--slo-file {shown}: {key} must be a number of milliseconds, not a {}",
                other.type_str()
            ),
        };
        anyhow::ensure!(
            ms.is_finite() && ms >= 0.0,
            "--slo-file {shown}: {key} must be a non-negative number of milliseconds"
        );
        slos.push((metric.to_string(), ms));
    }
    anyhow::ensure!(
        !slos.is_empty(),
        "--slo-file {shown}: no limits in the file"
    );
    slos.sort_by_key(|(k, _)| SLO_METRICS.iter().position(|m| m == k));
    Ok(slos)
}

/// Key spellings of SLO files written for other tools, and the metric each means.
const SLO_KEY_ALIASES: [(&str, &str); 5] = [
    ("ttft_ms", "ttft"),
    ("tpot_ms", "tpot"),
    ("itl_ms", "itl"),
    ("e2el_ms", "e2el"),
    ("latency_ms", "e2el"),
];

fn slo_metric(key: &str) -> Option<&'static str> {
    SLO_METRICS.iter().copied().find(|m| *m == key).or_else(|| {
        SLO_KEY_ALIASES
            .iter()
            .find(|(alias, _)| *alias == key)
            .map(|(_, m)| *m)
    })
}

/// The SLO file as a TOML table, from TOML or YAML (by extension, else by content).
fn slo_document(path: &std::path::Path, text: &str) -> anyhow::Result<toml::Table> {
    crate::yaml::parse_toml_or_yaml(path, text, &format!("--slo-file {}", path.display()))
}

/// vLLM's `good_completed` test: every SLO holds (`slo_s >= value_s`), with values in seconds.
/// The SLOs a successful request misses; vLLM's goodput counts requests missing none.
pub(super) fn missed_slos(
    slos_ms: &[(String, f64)],
    ttft_s: f64,
    tpot_s: f64,
    itl_max_s: f64,
    e2el_s: f64,
) -> impl Iterator<Item = &str> {
    slos_ms.iter().filter_map(move |(metric, slo_ms)| {
        let value = match metric.as_str() {
            "ttft" => ttft_s,
            "tpot" => tpot_s,
            "itl" => itl_max_s,
            "e2el" => e2el_s,
            _ => return None,
        };
        (slo_ms / MS_PER_S < value).then_some(metric.as_str())
    })
}
