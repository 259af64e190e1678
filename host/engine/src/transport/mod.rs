//! Sending one request and reading its response: hyper over tokio, the host framing the body
//! and stamping each read as its bytes arrive, the adapter parsing the frames of each read in a
//! single call.
//!
//! Split by concern: [`client()`] builds the keep-alive HTTP(S) client (TLS included), [`Target`]
//! turns an adapter's request into an HTTP request under `--base-url`, [`Exchange`] sends it and
//! reads the response, and the streaming read loop stamps each read as it arrives.

mod client;
mod errors;
mod exchange;
mod stream;
mod stream_outcome;
mod target;

pub mod limits;
pub mod pool;
pub mod rx_stamp;
pub mod transcript;
pub mod wire;

pub use client::{HttpClient, client, client_with};
pub use exchange::Exchange;
pub use limits::Limits;
pub use pool::{PoolSettings, SendError, Sent};
pub use target::{HOST_ONLY_HEADERS, Target, checked_path};
