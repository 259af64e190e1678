//! llmb's engine: everything that decides what is sent when and what was measured.
//!
//! Data flows one way:
//!
//! ```text
//! dataset plugin ──► samples ──► plan (when) ──► runner: transport + backend plugin ──► records ──► metrics
//!   (plugin::dataset)            (plan, scheduler)   (runner, transport, plugin::backend)  (records)  (metrics)
//! ```
//!
//! A [`config::RunConfig`] says what to run; [`session::run`] prepares it (plugins, dataset,
//! server checks, input token counts), runs each stage and returns an
//! [`outcome::SweepOutcome`] of typed [`records::RequestRecord`]s and
//! [`metrics::BenchmarkMetrics`]. Nothing here parses command lines or writes reports: the
//! `llmb` CLI turns its flags into a `RunConfig`, and `llmb-report` prints and saves outcomes.

pub mod clock;
pub mod compare;
pub mod config;
pub mod cpu;
pub mod fd_limit;
pub mod input_tokens;
pub mod lifecycle;
pub mod memory;
pub mod merge;
pub mod metrics;
pub mod outcome;
pub mod plan;
pub mod plugin;
pub mod preflight;
pub mod records;
pub mod repeat;
pub mod runner;
pub mod samples;
pub mod scheduler;
pub mod secrets;
pub mod server;
pub mod server_metrics;
pub mod session;
pub mod shard;
pub mod slo_search;
pub mod sweep;
pub mod tokenizer;
pub mod transport;
pub mod yaml;
