//! The response body type, [`SimBody`] (a fixed buffer, a [`Generation`] stream or a fault's
//! body), and the helpers that build responses without generating: JSON, vLLM's error envelope,
//! the native dialects' error bodies, and the responses of the faults that are not a stream
//! (refusals, `no_answer`, `huge`, a broken whole body).

use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::Value;

use crate::anthropic;
use crate::api::Api;
use crate::faults::{Fault, FaultBody, HUGE_BODY_BYTES, ResetConnection};
use crate::stream::{Generation, Step};

pub(crate) const SSE_CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json";

/// A response body: a fixed buffer, a stream being generated, or an injected failure.
pub(crate) enum SimBody {
    Full(Option<Bytes>),
    Stream(Box<Generation>),
    /// The non-streaming drop fault: headers, then an aborted body.
    Fail {
        yielded: bool,
    },
    /// The other faults' bodies: huge, stalled, shorter than declared.
    Fault(FaultBody),
}

impl SimBody {
    pub(crate) fn full(bytes: Bytes) -> Self {
        SimBody::Full(if bytes.is_empty() { None } else { Some(bytes) })
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.get_mut() {
            SimBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Stream(generation) => generation.poll_event(cx),
            SimBody::Fail { yielded } => {
                if !std::mem::replace(yielded, true) {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(io::Error::other("simulated connection drop"))))
            }
            SimBody::Fault(body) => body.poll_frame(),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SimBody::Full(bytes) => bytes.is_none(),
            SimBody::Stream(generation) => generation.step == Step::Finished,
            SimBody::Fail { .. } => false,
            SimBody::Fault(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            SimBody::Stream(_) | SimBody::Fail { .. } => SizeHint::default(),
            SimBody::Fault(body) => body.size_hint(),
        }
    }
}

pub(crate) fn full(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: impl Into<Bytes>,
) -> Response<SimBody> {
    let mut builder = Response::builder().status(status);
    if let Some(content_type) = content_type {
        builder = builder.header(CONTENT_TYPE, content_type);
    }
    builder
        .body(SimBody::full(body.into()))
        .expect("static headers are valid")
}

pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<SimBody> {
    full(status, Some(JSON_CONTENT_TYPE), body)
}

/// vLLM's (≥ 0.10.1) error envelope.
pub(crate) fn api_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    param: Option<&str>,
) -> Response<SimBody> {
    let message = Value::from(message).to_string();
    let param = param.map_or_else(|| "null".to_string(), |p| Value::from(p).to_string());
    json_response(
        status,
        format!(
            "{{\"error\":{{\"message\":{message},\"type\":\"{kind}\",\"param\":{param},\"code\":{}}}}}",
            status.as_u16()
        ),
    )
}

/// Anthropic's error envelope (529 for an overloaded service).
pub(crate) fn anthropic_error(status: StatusCode, message: &str) -> Response<SimBody> {
    let status = anthropic::status(status);
    json_response(status, anthropic::error_json(status, message))
}

pub(crate) fn bad_request(message: &str) -> Response<SimBody> {
    api_error(StatusCode::BAD_REQUEST, "BadRequestError", message, None)
}

pub(crate) fn not_found() -> Response<SimBody> {
    api_error(StatusCode::NOT_FOUND, "NotFoundError", "Not Found", None)
}

/// An error body in the dialect of `api` (protocols/errors.md).
pub(crate) fn native_error(api: Api, status: StatusCode, message: &str) -> Response<SimBody> {
    if api == Api::Anthropic {
        return anthropic_error(status, message);
    }
    let message = Value::from(message).to_string();
    let body = match api {
        Api::TgiStream | Api::TgiGenerate => {
            let kind = if status == StatusCode::UNPROCESSABLE_ENTITY {
                "validation"
            } else {
                "generation"
            };
            format!("{{\"error\":{message},\"error_type\":\"{kind}\"}}")
        }
        Api::LlamaCpp => format!(
            "{{\"error\":{{\"code\":{},\"message\":{message},\"type\":\"{}\"}}}}",
            status.as_u16(),
            if status == StatusCode::UNAUTHORIZED {
                "authentication_error"
            } else if status.is_server_error() {
                "server_error"
            } else {
                "invalid_request_error"
            }
        ),
        Api::Trtllm | Api::Mii => format!("{{\"error\":{message}}}"),
        Api::LightLlm => format!("{{\"message\":{message}}}"),
        Api::Lmdeploy => format!(
            "{{\"message\":{message},\"type\":\"internal_error\",\"code\":{},\"param\":null,\"object\":\"error\"}}",
            status.as_u16()
        ),
        _ => format!("{{\"error\":{{\"message\":{message}}}}}"),
    };
    json_response(status, body)
}

impl Fault {
    /// The answer of a fault that refuses the request before generating: an error status in the
    /// dialect `error(status, type, message)` writes, or a connection reset. `None` for the
    /// others.
    pub fn refusal(
        self,
        error: impl FnOnce(StatusCode, &str, &str) -> Response<SimBody>,
    ) -> Option<Response<SimBody>> {
        let (status, kind, message, retry_after) = match self {
            Fault::Http500 => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "simulated internal error",
                None,
            ),
            Fault::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "RateLimitError",
                "simulated rate limit",
                Some("1"),
            ),
            Fault::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableError",
                "simulated overload",
                Some("2"),
            ),
            Fault::Reset => {
                let mut response = Response::new(SimBody::full(Bytes::new()));
                response.extensions_mut().insert(ResetConnection);
                return Some(response);
            }
            _ => return None,
        };
        let mut response = error(status, kind, message);
        if let Some(after) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(after));
        }
        Some(response)
    }
}

/// Waits forever: a request the server took and never answers. The connection's task drops it
/// when the connection closes, or the simulator's shutdown does.
pub async fn never() -> Response<SimBody> {
    std::future::pending().await
}

/// The `huge` fault's response: JSON, or with `stream` one SSE event that never ends.
pub fn huge(stream: bool) -> Response<SimBody> {
    let (content_type, head) = if stream {
        (
            SSE_CONTENT_TYPE,
            &b"data: {\"choices\":[{\"index\":0,\"text\":\""[..],
        )
    } else {
        (
            JSON_CONTENT_TYPE,
            &b"{\"choices\":[{\"index\":0,\"text\":\""[..],
        )
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, content_type)
        .body(SimBody::Fault(FaultBody::Huge {
            head: Some(Bytes::from_static(head)),
            left: HUGE_BODY_BYTES,
        }))
        .expect("static headers are valid")
}

/// A non-streaming response with a faulty body: `stall` sends the first half of `body` and
/// nothing more; `truncated` declares the length of `body` and ends after its first half.
pub fn broken_whole(fault: Fault, body: String) -> Response<SimBody> {
    let bytes = Bytes::from(body);
    let half = bytes.slice(..bytes.len() / 2);
    let body = if fault == Fault::Truncated {
        FaultBody::Short {
            declared: bytes.len() as u64,
            bytes: Some(half),
        }
    } else {
        FaultBody::Stall { first: Some(half) }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, JSON_CONTENT_TYPE)
        .body(SimBody::Fault(body))
        .expect("static headers are valid")
}
