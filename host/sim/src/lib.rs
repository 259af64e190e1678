//! The built-in simulator: an OpenAI-compatible server speaking vLLM's dialect (byte for byte as
//! in `protocols/vllm.md`), plus the native routes of TGI (`/generate_stream`, `/generate` with
//! `inputs`), llama.cpp (`/completion`) and SGLang (`/generate` with `text`), each as its protocol
//! file shows it, Anthropic's Messages API (`/v1/messages`), and the routes that generate no text
//! (vLLM's embeddings, rerank and score, TEI's rerank), with a timing model, so a
//! benchmark runs with no real server and the tests measure llmb and its adapters against known
//! TTFT and ITL. With `reasoning_tokens` the dialects that have a reasoning channel (OpenAI chat,
//! Responses, Anthropic) stream a response's first tokens as reasoning. Image parts of chat,
//! Responses and Anthropic prompts are decoded and cost prompt tokens, as on vLLM's multimodal
//! server (see `images`).
//!
//! Cheap on purpose, so it is never the bottleneck it would hide: each streamed response is a
//! small state machine polled by hyper as the body of its connection task, sleeping to absolute
//! deadlines (no drift), and every SSE event is one `Bytes` assembled from precomputed pieces with
//! a single exact-size allocation. No per-token serde and relaxed atomics only; the one lock is
//! the optional prefix cache's, taken once per request.
//!
//! Faults for tests are triggered by markers in the prompt (`__sim_fault:http500__`,
//! `__sim_fault:stall__`, ...), all listed in [`faults`].
//!
//! Modules, one concern each:
//!
//! - `config`: [`SimConfig`] and its defaults, and the fixed limits of the simulated model.
//! - `server`: [`start`], [`start_dedicated`], [`SimHandle`], the accept loop and connections.
//! - [`lifecycle`]: [`ConnectionPolicy`], the keep-alive and close behaviours of real servers.
//! - `state`: the state and counters every connection shares, and the wall clock.
//! - `routes`: routing, the `/v1/*` entry point, `/health`, `/metrics`, `/v1/models`, tokenize.
//! - `api`: the dialects a route speaks.
//! - `request`: OpenAI-style and Anthropic request parsing into a job.
//! - `images`: image parts: decoding, sizes, their tokens.
//! - `anthropic`: Anthropic Messages' errors, whole message and stream events.
//! - `native`: the native routes of TGI, llama.cpp, SGLang, LightLLM, LMDeploy, Triton and MII.
//! - `pooling`: the routes that generate no text: vLLM's `/v1/embeddings`, rerank (`/v1/rerank`,
//!   `/rerank`, `/v2/rerank`, TEI's shape too) and `/v1/score`, answered after the prefill time.
//! - `ppl`: OpenPPL's gRPC route and just enough protobuf to read its request.
//! - `prefix_cache`: block hashing and the automatic prefix cache.
//! - `generate`: the start of every response: admission, TTFT, output lengths.
//! - `timing`: the running-batch guard, inter-token gaps and deadlines a stream shares.
//! - `shapes`: whole response bodies and the pieces streamed events share with them.
//! - `stream`: the streamed response's state machine and its events.
//! - `body`: the response body type, the fixed-response and error helpers, the faults' responses.
//! - [`faults`]: the fault markers, and the faulty bodies and connections they cause.
//! - `send_log`: `--send-log`, when each piece of each response was really written.
//!
//! Dependencies flow one way, from `config`, `send_log`, `state`, `timing`, `api`, `anthropic`,
//! `shapes`, `images` and `faults` up
//! through `stream`, `body`, `prefix_cache`, `request`, `generate`, `pooling` and the routes to
//! `server`.

mod anthropic;
mod api;
mod body;
mod config;
mod faults;
mod generate;
mod images;
pub mod lifecycle;
mod native;
mod pooling;
mod ppl;
mod prefix_cache;
mod request;
mod routes;
mod send_log;
mod server;
mod shapes;
mod state;
mod stream;
#[cfg(test)]
mod testutil;
mod timing;

pub use config::SimConfig;
pub use lifecycle::ConnectionPolicy;
pub use server::{SimHandle, start, start_dedicated};
