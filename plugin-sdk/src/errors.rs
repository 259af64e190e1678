//! Error values every adapter needs.

use crate::backend::{BackendError, ErrorKind};

/// A response that does not follow the server's protocol (bad JSON, a missing terminator): the
/// request fails with this message and no HTTP status, since the response itself was a 2xx.
pub fn protocol(message: String) -> BackendError {
    BackendError {
        kind: ErrorKind::Protocol,
        message,
        http_status: None,
        retryable: false,
    }
}
