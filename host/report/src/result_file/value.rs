//! Single values as result files write them, shared by every key: [`Num`] (a number kept as
//! written, or `"inf"`), and the serde helpers for strings that must be strings and for keys
//! taken only when they have the expected shape.

use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::python::py_float;

/// A number as result files hold it: a JSON number kept as written (`3` stays `3`, `3.0`
/// stays `3.0`), or the word Python and llmb write for a non-finite float (`"inf"`).
#[derive(Debug, Clone, PartialEq)]
pub enum Num {
    Number(serde_json::Number),
    /// `inf`, `-inf`, `nan` (also `Infinity`, `-Infinity`, `NaN`), as written.
    NonFinite(String),
}

impl Num {
    /// The value; `inf`, `-inf` and `nan` for the words.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Num::Number(n) => n.as_f64(),
            Num::NonFinite(word) => non_finite(word),
        }
    }

    /// A float as `serde_json` writes it; `None` (written `null`) when not finite.
    pub fn float(v: f64) -> Option<Num> {
        serde_json::Number::from_f64(v).map(Num::Number)
    }

    /// A float as vLLM writes a rate: infinities as `"inf"`/`"-inf"`, NaN as `null`.
    pub fn float_or_inf(v: f64) -> Option<Num> {
        if v.is_infinite() {
            Some(Num::NonFinite(py_float(v)))
        } else {
            Num::float(v)
        }
    }

    /// A count (requests, tokens).
    pub fn count(n: u64) -> Num {
        Num::Number(n.into())
    }
}

impl std::fmt::Display for Num {
    /// As JSON writes the number, or the word without quotes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::Number(n) => n.fmt(f),
            Num::NonFinite(word) => f.write_str(word),
        }
    }
}

impl Serialize for Num {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Num::Number(n) => n.serialize(s),
            Num::NonFinite(word) => s.serialize_str(word),
        }
    }
}

impl<'de> Deserialize<'de> for Num {
    /// A number or a non-finite word; anything else is "should be a number, found …".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => Ok(Num::Number(n)),
            Value::String(word) if non_finite(&word).is_some() => Ok(Num::NonFinite(word)),
            other => Err(serde::de::Error::custom(format!(
                "should be a number, found {}",
                short_json(&other)
            ))),
        }
    }
}

/// A string or `null`; anything else is "should be a string, found …".
pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(de::Error::custom(format!(
            "should be a string, found {}",
            short_json(&other)
        ))),
    }
}

/// The value when it has `T`'s shape, else `None` (for keys no reader depends on, so a file of
/// another version still loads).
pub(super) fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(T::deserialize(Value::deserialize(d)?).ok())
}

/// The value of a non-finite word as Python and llmb write it.
fn non_finite(word: &str) -> Option<f64> {
    match word {
        "inf" | "Infinity" => Some(f64::INFINITY),
        "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
        "nan" | "NaN" => Some(f64::NAN),
        _ => None,
    }
}

/// A JSON number, or `"inf"`/`"-inf"`/`"nan"` as llmb and vLLM write non-finite rates.
pub(crate) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => non_finite(s),
        _ => None,
    }
}

/// A value for an error message, cut to a readable length.
pub(crate) fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_read_back_to_the_bit_they_were_written_with() {
        // Seen in a sweep: serde_json without `float_roundtrip` read this one ULP off.
        for v in [
            426.138_330_894_283_23_f64,
            0.1,
            1e-300,
            123_456.789_012_345_67,
        ] {
            let text = serde_json::to_string(&v).unwrap();
            assert_eq!(
                serde_json::from_str::<f64>(&text).unwrap().to_bits(),
                v.to_bits(),
                "{text}"
            );
        }
    }
}
