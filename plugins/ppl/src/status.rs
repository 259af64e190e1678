//! `grpc-status` / `grpc-message`: status code names, percent-decoding of the message, and the
//! [`BackendError`] of a non-OK status.

use llmb_plugin_sdk::backend::{BackendError, ErrorKind};
use llmb_plugin_sdk::errors::protocol;
use llmb_plugin_sdk::openai::classify;

fn code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "unknown code",
    }
}

/// `grpc-message` is percent-encoded UTF-8; malformed escapes are kept as they are, as the
/// gRPC spec asks of decoders.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let hex = |c: u8| (c as char).to_digit(16);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The error of a non-OK `grpc-status`, its kind chosen so overload and timeouts are counted
/// apart from hard failures.
pub(crate) fn status_error(code: &str, message: Option<&str>) -> Option<BackendError> {
    let Ok(code) = code.trim().parse::<u32>() else {
        return Some(protocol(format!("unparseable grpc-status {code:?}")));
    };
    if code == 0 {
        return None;
    }
    let name = code_name(code);
    let text = message.map(percent_decode).unwrap_or_default();
    let message = if text.is_empty() {
        format!("grpc-status {code} ({name}) without a message")
    } else {
        format!("{text} (grpc-status {code} {name})")
    };
    let kind = match code {
        _ if matches!(
            classify(None, message.clone()).kind,
            ErrorKind::ContextLength
        ) =>
        {
            ErrorKind::ContextLength
        }
        3 => ErrorKind::BadRequest,
        4 => ErrorKind::Timeout,
        5 | 12 => ErrorKind::NotFound,
        7 | 16 => ErrorKind::Unauthorized,
        8 => ErrorKind::RateLimited,
        14 => ErrorKind::Overloaded,
        _ => ErrorKind::Server,
    };
    Some(BackendError {
        retryable: matches!(
            kind,
            ErrorKind::RateLimited | ErrorKind::Overloaded | ErrorKind::Timeout
        ),
        kind,
        message,
        http_status: None,
    })
}
