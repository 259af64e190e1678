//! llmb's outputs, all read from the engine's typed outcomes or from saved result files:
//! the result file itself ([`result_file`], one type for every writer and reader), the console
//! report in `vllm bench serve`'s layout ([`console`]), the exporters that turn a stage into the
//! console text, the result JSON or the per-request CSV, plus the sweep files and
//! `llmb aggregate`'s table ([`export`]), the end-of-sweep stage table ([`stages`]), and the
//! self-contained HTML report ([`html`]).

pub mod console;
pub mod export;
pub mod html;
mod python;
pub mod repeats;
pub mod result_file;
pub mod stages;
#[cfg(test)]
mod test_support;
