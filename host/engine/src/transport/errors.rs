//! How transport failures become [`RequestError`]s: the error kinds records carry, the adapter's
//! [`BackendError`]s mapped onto them, and error chains flattened into one message. Shared by
//! the client, request building and response reading.

use crate::plugin::backend::{BackendError, ErrorKind};
use crate::records::RequestError;

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadRequest => "bad-request",
        ErrorKind::ContextLength => "context-length",
        ErrorKind::Unauthorized => "unauthorized",
        ErrorKind::NotFound => "not-found",
        ErrorKind::RateLimited => "rate-limited",
        ErrorKind::Overloaded => "overloaded",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Server => "server",
        ErrorKind::Protocol => "protocol",
        ErrorKind::Unknown => "unknown",
    }
}

pub(super) fn backend_error(e: BackendError) -> RequestError {
    RequestError {
        kind: kind_name(e.kind).into(),
        message: e.message,
        http_status: e.http_status,
    }
}

pub(super) fn fail(kind: &str, message: impl Into<String>) -> RequestError {
    RequestError {
        kind: kind.into(),
        message: message.into(),
        http_status: None,
    }
}

/// Formats an error with its sources ("client error (Connect): tcp connect error: Connection refused").
pub(super) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}
