//! JSON helpers shared by the OpenAI-family adapters.

use serde_json::{Map, Value};

/// Deep-merges `extra` (a JSON object given with `--extra-body`) into `body`; the extra value wins.
pub fn merge_extra_body(body: &mut Value, extra: Option<&str>) -> Result<(), String> {
    let Some(extra) = extra else { return Ok(()) };
    let extra: Value =
        serde_json::from_str(extra).map_err(|e| format!("--extra-body is not valid JSON: {e}"))?;
    if !extra.is_object() {
        return Err("--extra-body must be a JSON object".into());
    }
    merge(body, extra);
    Ok(())
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Finds the human-readable message in any of the error shapes servers use:
/// `{"error":{"message":..}}`, `{"error":"..."}`, flat `{"message":..}`, FastAPI `{"detail":..}`.
pub fn error_message(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    if let Some(err) = obj.get("error") {
        return match err {
            Value::String(s) => Some(s.clone()),
            Value::Object(inner) => inner
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| Some(Value::Object(inner.clone()).to_string())),
            other => Some(other.to_string()),
        };
    }
    if let Some(m) = obj.get("message").and_then(Value::as_str) {
        return Some(m.to_owned());
    }
    obj.get("detail").map(|d| match d {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// True when a stream payload is an in-band error object rather than a normal chunk.
pub fn is_error_object(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.contains_key("error") || o.get("object").and_then(Value::as_str) == Some("error")
    })
}

/// Reads an optional non-negative integer field.
pub fn get_u32(obj: &Map<String, Value>, key: &str) -> Option<u32> {
    obj.get(key)
        .and_then(Value::as_u64)
        .map(|n| n.min(u32::MAX as u64) as u32)
}
