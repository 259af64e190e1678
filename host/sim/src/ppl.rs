//! OpenPPL's gRPC route (`LLMService/Generation`) over HTTP/2, with just enough protobuf to read
//! its request, so no protobuf dependency is needed (its responses are written by
//! `shapes::ppl_response`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use tokio::time::Instant;

use llmb_engine::tokenizer::count_words;

use crate::api::Api;
use crate::body::SimBody;
use crate::config::{MAX_BODY_BYTES, MAX_MODEL_LEN};
use crate::faults::Fault;
use crate::generate::generate;
use crate::prefix_cache::block_hashes;
use crate::request::Job;
use crate::state::SimState;

/// OpenPPL's one RPC.
pub(crate) const PPL_GENERATION: &str = "/ppl.llm.proto.LLMService/Generation";

/// A gRPC answer with no body: status in the headers ("Trailers-Only").
fn grpc_failure(code: u32, message: &str) -> Response<SimBody> {
    let encoded: String = message
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/grpc")
        .header("grpc-status", code.to_string())
        .header("grpc-message", encoded)
        .body(SimBody::full(Bytes::new()))
        .expect("static headers are valid")
}

/// Reads a protobuf varint at `*at`.
fn pb_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of one protobuf message: `(field number, varint value or bytes)`.
fn pb_fields(buf: &[u8]) -> Option<Vec<(u64, PbValue<'_>)>> {
    let mut at = 0;
    let mut fields = Vec::new();
    while at < buf.len() {
        let key = pb_varint(buf, &mut at)?;
        let value = match key & 7 {
            0 => PbValue::Int(pb_varint(buf, &mut at)?),
            1 => {
                buf.get(at..at + 8)?;
                at += 8;
                PbValue::Fixed
            }
            2 => {
                let len = pb_varint(buf, &mut at)? as usize;
                let bytes = buf.get(at..at + len)?;
                at += len;
                PbValue::Bytes(bytes)
            }
            5 => {
                buf.get(at..at + 4)?;
                at += 4;
                PbValue::Fixed
            }
            _ => return None,
        };
        fields.push((key >> 3, value));
    }
    (at == buf.len()).then_some(fields)
}

#[derive(Clone, Copy)]
enum PbValue<'a> {
    Int(u64),
    /// A 32- or 64-bit fixed field (the temperature): skipped.
    Fixed,
    Bytes(&'a [u8]),
}

/// `LLMService/Generation` with one request per call, as a benchmark client sends it.
pub(crate) async fn ppl(
    state: &Arc<SimState>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<SimBody> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return grpc_failure(13, &format!("cannot read the request: {e}")),
    };
    let Some(job) = parse_ppl_request(state, &bytes) else {
        return grpc_failure(
            3,
            "malformed BatchedRequest (expected one uncompressed message)",
        );
    };
    let refusal = job.fault.refusal(|status, _, message| {
        // INTERNAL, RESOURCE_EXHAUSTED, UNAVAILABLE.
        let code = match status {
            StatusCode::TOO_MANY_REQUESTS => 8,
            StatusCode::SERVICE_UNAVAILABLE => 14,
            _ => 13,
        };
        grpc_failure(code, message)
    });
    if let Some(refusal) = refusal {
        return refusal;
    }
    generate(state, job, arrived).await
}

fn parse_ppl_request(state: &SimState, bytes: &[u8]) -> Option<Job> {
    let (&flag, rest) = bytes.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    if flag != 0 || rest.len() != 4 + len {
        return None;
    }
    let batched = pb_fields(&rest[4..])?;
    let [(1, PbValue::Bytes(request))] = batched.as_slice() else {
        return None;
    };
    let mut id = 0;
    let mut prompt = "";
    let mut max_tokens = 16;
    let mut ignore_eos = false;
    for (field, value) in pb_fields(request)? {
        match (field, value) {
            (1, PbValue::Int(v)) => id = v,
            (3, PbValue::Bytes(b)) => prompt = std::str::from_utf8(b).ok()?,
            (5, PbValue::Bytes(b)) => {
                for (f, v) in pb_fields(b)? {
                    match (f, v) {
                        (1, PbValue::Int(n)) => max_tokens = n.clamp(1, MAX_MODEL_LEN) as u32,
                        (3, PbValue::Int(n)) => ignore_eos = n != 0,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let prefix_blocks = if state.config.prefix_cache {
        block_hashes(prompt.split_whitespace())
    } else {
        Vec::new()
    };
    Some(Job {
        api: Api::Ppl,
        prompt_tokens: count_words(prompt),
        prefix_blocks,
        max_tokens,
        stream: true,
        include_usage: true,
        ignore_eos,
        fault: Fault::of(prompt),
        request_id: id,
        images: 0,
    })
}
