//! Reading a result file into a [`ResultFile`]: the JSON object is deserialized key by key, so
//! an error names the key whose value is wrong (`"request_throughput" should be a number,
//! found "fast"`), as `llmb report` and `llmb aggregate` print it.
//!
//! Numbers and strings at the top level must have their type (or be `null`); llmb's own
//! diagnostics and the per-request arrays are taken when they have the expected shape and
//! dropped otherwise (`value::lenient`), since no reader depends on them.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::{LatencyKeys, Num, OtherKeys, ResultFile};

/// What is wrong in a result, and under which top-level key.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The top-level key whose value is wrong (`None`: the message names it, or no key is at
    /// fault).
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "\"{key}\" {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for FieldError {}

impl de::Error for FieldError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        FieldError {
            key: None,
            message: msg.to_string(),
        }
    }
}

impl FieldError {
    /// The error for result `file` (a path, or `path#n` for one result of several): `FILE:
    /// "key" should be a number, found …`, and for the server metrics `FILE: bad
    /// "server_metrics"` with the problem as its cause.
    pub fn in_file(self, file: &str) -> anyhow::Error {
        match self.key.as_deref() {
            Some("server_metrics") => {
                anyhow::anyhow!(self.message).context(format!("{file}: bad \"server_metrics\""))
            }
            _ => anyhow::anyhow!("{file}: {self}"),
        }
    }
}

impl ResultFile {
    /// A result from its JSON object; the error names the key at fault.
    pub fn from_map(doc: Map<String, Value>) -> Result<ResultFile, FieldError> {
        ResultFile::deserialize(Keyed(doc))
    }
}

/// A JSON object as a deserializer whose errors carry the key being read.
struct Keyed(Map<String, Value>);

impl<'de> Deserializer<'de> for Keyed {
    type Error = FieldError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        visitor.visit_map(KeyedEntries {
            entries: self.0.into_iter(),
            current: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct KeyedEntries {
    entries: serde_json::map::IntoIter,
    /// The entry whose key was just read.
    current: Option<(String, Value)>,
}

impl<'de> MapAccess<'de> for KeyedEntries {
    type Error = FieldError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, FieldError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let read = seed.deserialize(IntoDeserializer::<FieldError>::into_deserializer(
            key.clone(),
        ))?;
        self.current = Some((key, value));
        Ok(Some(read))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, FieldError> {
        let (key, value) = self
            .current
            .take()
            .ok_or_else(|| de::Error::custom("a value without its key"))?;
        seed.deserialize(value).map_err(|e| FieldError {
            key: Some(key),
            message: e.to_string(),
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// Reads the keys of an object that `keep` selects, each with `read`; skips the others.
fn select<'de, A: MapAccess<'de>, T>(
    mut map: A,
    keep: impl Fn(&str) -> bool,
    read: impl Fn(&mut A, &str) -> Result<T, A::Error>,
) -> Result<Vec<(String, T)>, A::Error> {
    let mut out = Vec::new();
    while let Some(key) = map.next_key::<String>()? {
        if keep(&key) {
            let value = read(&mut map, &key)?;
            out.push((key, value));
        } else {
            map.next_value::<de::IgnoredAny>()?;
        }
    }
    Ok(out)
}

impl<'de> Deserialize<'de> for LatencyKeys {
    /// The latency keys among a result's keys, each a number or `null`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = LatencyKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a result's keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LatencyKeys, A::Error> {
                let keys = select(map, LatencyKeys::is_latency_key, |map, key| {
                    map.next_value::<Option<Num>>()
                        .map_err(|e| de::Error::custom(format!("\"{key}\" {e}")))
                })?;
                Ok(LatencyKeys(keys.into_iter().collect::<BTreeMap<_, _>>()))
            }
        }
        d.deserialize_map(Keys)
    }
}

impl<'de> Deserialize<'de> for OtherKeys {
    /// A result's keys other than the latency keys, as written.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = OtherKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a result's keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OtherKeys, A::Error> {
                let keys = select(
                    map,
                    |key| !LatencyKeys::is_latency_key(key),
                    |map, _| map.next_value::<Value>(),
                )?;
                Ok(OtherKeys(keys.into_iter().collect()))
            }
        }
        d.deserialize_map(Keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ResultFile, FieldError> {
        match serde_json::from_str(text).unwrap() {
            Value::Object(doc) => ResultFile::from_map(doc),
            _ => unreachable!(),
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse(r#"{"request_throughput": "fast"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"request_throughput\" should be a number, found \"fast\""
        );
        let e = parse(r#"{"p99_ttft_ms": [1, 2]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"p99_ttft_ms\" should be a number, found [1,2]"
        );
        let e = parse(r#"{"model_id": 3}"#).unwrap_err();
        assert_eq!(e.to_string(), "\"model_id\" should be a string, found 3");
        let e = parse(r#"{"server_metrics": 3}"#).unwrap_err();
        assert_eq!(
            format!("{:#}", e.in_file("f.json")),
            "f.json: bad \"server_metrics\": should be an object, found 3"
        );
    }

    #[test]
    fn keys_are_sorted_into_their_places() {
        let r = parse(
            r#"{"request_rate": "inf", "completed": 3, "duration": 2.0, "median_ttft_ms": 5,
                "p99.9_e2el_ms": null, "ramp_up_strategy": "linear", "ramp_up_start_rps": 1,
                "ramp_up_end_rps": 8, "ttfts": [0.1, null], "itls": [[0.1]], "note": "x",
                "llmb": {"base_url": 3, "endpoint": "/v1", "load_pattern": {"stage": "c 4",
                "no_stream": true, "mode": "poisson"}}}"#,
        )
        .unwrap();
        assert_eq!(
            r.request_rate.as_ref().unwrap().as_f64(),
            Some(f64::INFINITY)
        );
        assert_eq!(r.completed.as_ref().unwrap().to_string(), "3");
        assert_eq!(r.duration.as_ref().unwrap().to_string(), "2.0");
        assert_eq!(r.latency.get("median", "ttft"), Some(5.0));
        assert_eq!(r.latency.0.get("p99.9_e2el_ms"), Some(&None));
        let ramp = r.ramp_up.as_ref().unwrap();
        assert_eq!(
            (
                ramp.strategy.as_str(),
                ramp.end_rps.as_ref().unwrap().as_f64()
            ),
            ("linear", Some(8.0))
        );
        assert_eq!(r.detail.ttfts, None, "an array with a null is not taken");
        assert_eq!(r.detail.itls, Some(vec![vec![0.1]]));
        assert_eq!(r.other.0.keys().collect::<Vec<_>>(), ["note"]);
        let llmb = r.llmb.as_ref().unwrap();
        assert_eq!(
            (llmb.base_url.as_deref(), llmb.endpoint.as_deref()),
            (None, Some("/v1"))
        );
        assert_eq!((r.stage(), r.no_stream()), (Some("c 4"), true));
        let numbers: Vec<String> = r
            .numbers()
            .into_iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        assert_eq!(
            numbers,
            [
                "completed=3",
                "duration=2.0",
                "median_ttft_ms=5",
                "ramp_up_end_rps=8",
                "ramp_up_start_rps=1"
            ]
        );
    }
}
