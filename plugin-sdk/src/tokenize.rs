//! Asking a server how many tokens a prompt is, so input lengths are the server's own count when
//! the user gave no `--tokenizer`.
//!
//! Servers answer in a few shapes: vLLM and SGLang `{"count": n, "tokens": [...]}`, llama.cpp
//! `{"tokens": [...]}`, LMDeploy `{"input_ids": [...], "length": n}`, TGI a list of token
//! objects. [`count_from_body`] reads all of them, so an adapter's `parse-tokenize` is one line.

use serde_json::Value;

use crate::backend::HttpRequest;

/// The `parse-tokenize` answer of an adapter whose server has no tokenize route.
pub const NO_ROUTE: &str = "this adapter's server has no tokenize route";

/// A JSON POST to `path`.
pub fn json_request(path: &str, body: &Value) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        path: path.into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(body).expect("a JSON value serializes"),
    }
}

/// The token count in a tokenize reply of any of the shapes above.
pub fn count_from_body(body: &[u8]) -> Result<u32, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the tokenize reply is not JSON: {e}"))?;
    let as_count = |n: &Value| n.as_u64().and_then(|n| u32::try_from(n).ok());
    let counted = match &v {
        Value::Array(tokens) => Some(tokens.len() as u32),
        Value::Object(o) => o
            .get("count")
            .or_else(|| o.get("length"))
            .and_then(as_count)
            .or_else(|| {
                ["tokens", "input_ids", "tokenize_response"]
                    .iter()
                    .find_map(|k| o.get(*k).and_then(Value::as_array))
                    .map(|t| t.len() as u32)
            }),
        _ => None,
    };
    counted.ok_or_else(|| {
        let shown: String = String::from_utf8_lossy(body).chars().take(200).collect();
        format!("the tokenize reply has no count or token list: {shown}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_server_shape() {
        for (body, n) in [
            (
                r#"{"count":7,"max_model_len":4096,"tokens":[1,2,3,4,5,6,7]}"#,
                7,
            ),
            (r#"{"tokens":[1,2,3]}"#, 3),
            (r#"{"input_ids":[1,2],"length":2}"#, 2),
            (
                r#"[{"id":1,"text":"a","start":0,"stop":1},{"id":2,"text":"b","start":1,"stop":2}]"#,
                2,
            ),
            (
                r#"{"tokenize_response":[{"id":1}],"templated_text":"x"}"#,
                1,
            ),
        ] {
            assert_eq!(count_from_body(body.as_bytes()), Ok(n), "{body}");
        }
        let err = count_from_body(br#"{"detail":"Not Found"}"#).unwrap_err();
        assert!(err.contains("Not Found"), "{err}");
        assert!(count_from_body(b"<html>").unwrap_err().contains("not JSON"));
    }
}
