//! llmb: a load generator and benchmark client for LLM inference servers.
//!
//! Data flows one way: a dataset plugin produces samples, the [`scheduler`] decides when each
//! request goes out, [`transport`] sends it and stamps every response frame as it arrives while a
//! backend plugin parses it, each request becomes a [`records::RequestRecord`], and
//! [`metrics`]/[`report`] turn records into vLLM-compatible numbers; [`html`] reads saved
//! results and records back into a self-contained HTML report.

pub mod bench;
pub mod cli;
pub mod cli_sweep;
pub mod cli_vllm;
pub mod datasets;
pub mod export;
pub mod html;
pub mod input_tokens;
pub mod lifecycle;
pub mod metrics;
pub mod multi_turn;
pub mod plugin;
pub mod preflight;
pub mod recipe;
pub mod records;
pub mod report;
pub mod runner;
pub mod scaffold;
pub mod scheduler;
pub mod secrets;
pub mod selfbench;
pub mod server_metrics;
pub mod sim;
pub mod sweep;
pub mod tokenizer;
pub mod transport;
pub mod yaml;
