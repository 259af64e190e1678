//! Adapters whose answer is one JSON body (embeddings, rerank, score) read with raw framing:
//! the bytes gathered until the body ends, then parsed once, the same way streamed or not.

use std::cell::RefCell;

use serde_json::Value;

use crate::backend::{BackendError, Delta, FrameBatch, StreamEvent, Usage};

/// The response parser state of a whole-body adapter: the body so far, and whether `finish`
/// already answered.
#[derive(Debug, Default)]
pub struct WholeBody {
    state: RefCell<(Vec<u8>, bool)>,
}

impl WholeBody {
    /// Raw framing: every frame is a read's bytes, kept until the body ends.
    pub fn feed(&self, batch: &FrameBatch) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        for (_, _, data) in batch.iter() {
            state.0.extend_from_slice(data);
        }
        Vec::new()
    }

    /// The whole body through `parse`: its usage, one empty delta (the answer's arrival, which
    /// the host times) and the end; or the error `parse` gives. Answers once.
    pub fn finish(
        &self,
        parse: impl FnOnce(&[u8]) -> Result<Usage, BackendError>,
    ) -> Vec<StreamEvent> {
        let mut state = self.state.borrow_mut();
        if std::mem::replace(&mut state.1, true) {
            return Vec::new();
        }
        let body = std::mem::take(&mut state.0);
        match parse(&body) {
            Ok(usage) => vec![
                StreamEvent::Usage(usage),
                StreamEvent::Delta(Delta {
                    frame: 0,
                    text: String::new(),
                    reasoning: String::new(),
                    tokens: None,
                    index: 0,
                }),
                StreamEvent::Done,
            ],
            Err(e) => vec![StreamEvent::Error(e)],
        }
    }
}

/// What a JSON value is, in a few words, for the error of a body that is not the answer
/// expected (another API's body at the same path).
pub fn describe(v: &Value) -> String {
    match v {
        Value::Object(o) => match o.get("object").and_then(Value::as_str) {
            Some(kind) => format!("an object of type {kind:?}"),
            None => {
                let keys: Vec<&str> = o.keys().take(6).map(String::as_str).collect();
                format!("an object with keys [{}]", keys.join(", "))
            }
        },
        Value::Array(a) => format!("a JSON array of {} items", a.len()),
        Value::String(_) => "a JSON string".into(),
        Value::Number(_) => "a number".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Null => "null".into(),
    }
}

/// An error object in a 2xx body: classified by the code it carries (vLLM's `code`, OpenAI's
/// `error.code`) when that is an HTTP status, with no HTTP status of its own.
pub fn in_band_error(status: u16, body: &[u8], v: &Value) -> BackendError {
    let code = v
        .pointer("/error/code")
        .or_else(|| v.get("code"))
        .and_then(Value::as_u64)
        .filter(|c| (400..600).contains(c))
        .map_or(status, |c| c as u16);
    let mut err = crate::openai::map_error(code, body);
    err.http_status = None;
    err
}
