//! The `server_metrics` object of a result file as the report reads it: Prometheus-style values
//! `bench --server-metrics-url` scraped during the run, checked for shape with errors that
//! say where (`"series"."x"[1] should be [seconds, value]`), null samples dropped.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::value::{number, short_json};

/// The `server_metrics` object of a result file: Prometheus-style values scraped during the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerMetrics {
    pub url: Option<String>,
    /// Names in the order the scraper listed them.
    pub names: Vec<String>,
    pub start: BTreeMap<String, Option<f64>>,
    pub end: BTreeMap<String, Option<f64>>,
    pub delta: BTreeMap<String, Option<f64>>,
    /// `(name, [(seconds since run start, value)])`, in `names` order.
    #[serde(serialize_with = "series_by_name")]
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// `series` as the file holds it: `{name: [[t, v], ...]}`.
fn series_by_name<S: Serializer>(
    series: &[(String, Vec<(f64, f64)>)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(series.iter().map(|(name, points)| (name, points)))
}

/// `server_metrics` of a result file: `null` or absent is `None`, a bad shape an error.
pub(super) fn field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ServerMetrics>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => parse(&v)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e:#}"))),
    }
}

/// Checks the `server_metrics` shape: `{url, names, start, end, delta, series: {name: [[t, v]]}}`.
fn parse(v: &Value) -> anyhow::Result<ServerMetrics> {
    let obj = v
        .as_object()
        .with_context(|| format!("should be an object, found {}", short_json(v)))?;
    let url = match obj.get("url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => bail!("\"url\" should be a string, found {}", short_json(other)),
    };
    let mut names: Vec<String> = match obj.get("names") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_string)
                    .with_context(|| format!("\"names\" has a non-string {}", short_json(n)))
            })
            .collect::<anyhow::Result<_>>()?,
        Some(other) => bail!("\"names\" should be a list, found {}", short_json(other)),
    };
    let values = |key: &str| -> anyhow::Result<BTreeMap<String, Option<f64>>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(name, v)| {
                    if v.is_null() {
                        return Ok((name.clone(), None));
                    }
                    let n = number(v).with_context(|| {
                        format!(
                            "\"{key}\".\"{name}\" should be a number, found {}",
                            short_json(v)
                        )
                    })?;
                    Ok((name.clone(), Some(n)))
                })
                .collect(),
            Some(other) => bail!("\"{key}\" should be an object, found {}", short_json(other)),
        }
    };
    let (start, end, delta) = (values("start")?, values("end")?, values("delta")?);
    let mut series = Vec::new();
    match obj.get("series") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (name, points) in m {
                let list = points.as_array().with_context(|| {
                    format!("\"series\".\"{name}\" should be a list of [seconds, value] pairs")
                })?;
                let mut out = Vec::with_capacity(list.len());
                for (i, p) in list.iter().enumerate() {
                    let pair = p.as_array().filter(|a| a.len() == 2).with_context(|| {
                        format!(
                            "\"series\".\"{name}\"[{i}] should be [seconds, value], found {}",
                            short_json(p)
                        )
                    })?;
                    let t = number(&pair[0]).with_context(|| {
                        format!("\"series\".\"{name}\"[{i}] has a non-number time")
                    })?;
                    match &pair[1] {
                        Value::Null => {}
                        v => {
                            let y = number(v).with_context(|| {
                                format!("\"series\".\"{name}\"[{i}] has a non-number value")
                            })?;
                            if t.is_finite() && y.is_finite() {
                                out.push((t, y));
                            }
                        }
                    }
                }
                series.push((name.clone(), out));
            }
        }
        Some(other) => bail!(
            "\"series\" should be an object, found {}",
            short_json(other)
        ),
    }
    // The scraper's order first, then anything it did not list.
    for name in start
        .keys()
        .chain(end.keys())
        .chain(delta.keys())
        .chain(series.iter().map(|(n, _)| n))
    {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    series.sort_by_key(|(n, _)| names.iter().position(|m| m == n));
    Ok(ServerMetrics {
        url,
        names,
        start,
        end,
        delta,
        series,
    })
}
