//! Files other tools read. Each way of writing one stage is an [`Exporter`], as in hyperfine:
//! the console report ([`ConsoleExporter`]), the result JSON ([`JsonExporter`]) and the
//! per-request CSV ([`CsvExporter`]) all turn a [`StageOutcome`] into bytes, and the caller
//! decides where they go.
//!
//! Beside them: `summary_all.csv` ([`append_summary_all`]), a concurrency sweep's summaries
//! ([`write_concurrency_sweep`]), and `llmb aggregate`, which reads result files from many runs
//! back ([`collect_results`]) and folds them into one CSV table ([`aggregate_csv`]).

mod aggregate;
mod requests;
mod slices;
mod sweep;

use llmb_engine::metrics::{BenchmarkMetrics, MetricsConfig};
use llmb_engine::outcome::{BenchOutcome, RunInfo};
use llmb_engine::records::RequestRecord;
use llmb_engine::server_metrics::ServerMetrics;

pub use aggregate::{FoundResult, aggregate, aggregate_csv, collect_results};
pub use requests::write_requests_csv;
pub use slices::write_slices_csv;
pub use sweep::{append_summary_all, write_concurrency_sweep};

/// One stage's outcome as the exporters read it: the pieces a [`BenchOutcome`] holds.
#[derive(Debug, Clone, Copy)]
pub struct StageOutcome<'a> {
    pub info: &'a RunInfo,
    pub metrics: &'a BenchmarkMetrics,
    pub config: &'a MetricsConfig,
    pub records: &'a [RequestRecord],
    /// The server's Prometheus metrics over the stage, when they were scraped.
    pub server_metrics: Option<&'a ServerMetrics>,
    /// Why the stage stopped early, if it did.
    pub stop_reason: Option<&'a str>,
}

impl<'a> From<&'a BenchOutcome> for StageOutcome<'a> {
    fn from(o: &'a BenchOutcome) -> Self {
        StageOutcome {
            info: &o.info,
            metrics: &o.metrics,
            config: &o.metrics_config,
            records: &o.records,
            server_metrics: o.server_metrics.as_ref(),
            stop_reason: o.stop_reason.as_deref(),
        }
    }
}

/// A way of writing one stage's outcome (hyperfine's `Exporter`): the bytes of a console report,
/// a result file or a CSV.
pub trait Exporter {
    /// The stage's outcome in this exporter's format.
    fn serialize(&self, stage: StageOutcome<'_>) -> anyhow::Result<Vec<u8>>;
}

/// The console report in `vllm bench serve`'s layout (see [`crate::console::print_console`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleExporter;

impl Exporter for ConsoleExporter {
    fn serialize(&self, stage: StageOutcome<'_>) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        crate::console::print_console(stage.info, stage.metrics, stage.config, &mut out)?;
        Ok(out)
    }
}

/// The result JSON with vLLM's keys (see [`crate::console::result_json_at`]).
#[derive(Debug, Clone, Default)]
pub struct JsonExporter {
    /// vLLM's `--save-detailed`: the per-request arrays too.
    pub detailed: bool,
    /// The `date` to write, in unix seconds; `None`: now.
    pub unix_secs: Option<u64>,
    /// One line (as `--append-result` adds), not indented.
    pub compact: bool,
    /// Extra top-level string keys (vLLM's `--metadata`); a key the result already has keeps
    /// llmb's value.
    pub metadata: Vec<(String, String)>,
}

impl Exporter for JsonExporter {
    fn serialize(&self, stage: StageOutcome<'_>) -> anyhow::Result<Vec<u8>> {
        let StageOutcome {
            info,
            metrics,
            config,
            records,
            server_metrics,
            stop_reason,
        } = stage;
        let mut doc = match self.unix_secs {
            Some(secs) => crate::result_file::result_json_at(
                info,
                metrics,
                config,
                records,
                self.detailed,
                secs,
            ),
            None => crate::result_file::result_json(info, metrics, config, records, self.detailed),
        };
        if let Some(sm) = server_metrics {
            doc["server_metrics"] = serde_json::to_value(sm)?;
        }
        if let Some(why) = stop_reason {
            doc["llmb"]["stop_reason"] = why.into();
        }
        if let Some(obj) = doc.as_object_mut() {
            for (k, v) in &self.metadata {
                obj.entry(k.clone())
                    .or_insert(serde_json::Value::String(v.clone()));
            }
        }
        Ok(if self.compact {
            serde_json::to_vec(&doc)?
        } else {
            serde_json::to_vec_pretty(&doc)?
        })
    }
}

/// The per-request CSV (see [`write_requests_csv`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CsvExporter;

impl Exporter for CsvExporter {
    fn serialize(&self, stage: StageOutcome<'_>) -> anyhow::Result<Vec<u8>> {
        requests::requests_csv(stage.records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporters_write_what_the_functions_write() {
        let o = crate::test_support::stage();
        let stage = StageOutcome::from(&o);

        let mut console = Vec::new();
        crate::console::print_console(&o.info, &o.metrics, &o.metrics_config, &mut console)
            .unwrap();
        assert_eq!(ConsoleExporter.serialize(stage).unwrap(), console);

        let doc = crate::console::result_json_at(
            &o.info,
            &o.metrics,
            &o.metrics_config,
            &o.records,
            true,
            86_400,
        );
        let json = JsonExporter {
            detailed: true,
            unix_secs: Some(86_400),
            compact: false,
            metadata: Vec::new(),
        };
        assert_eq!(
            json.serialize(stage).unwrap(),
            serde_json::to_vec_pretty(&doc).unwrap()
        );
        let line = JsonExporter {
            compact: true,
            ..json.clone()
        };
        assert_eq!(
            line.serialize(stage).unwrap(),
            serde_json::to_vec(&doc).unwrap()
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.csv");
        write_requests_csv(&path, &o.records).unwrap();
        let csv = CsvExporter.serialize(stage).unwrap();
        assert_eq!(csv, std::fs::read(&path).unwrap());
        assert_eq!(
            String::from_utf8(csv).unwrap().lines().count(),
            o.records.len() + 1
        );

        // One exporter or another, chosen at run time.
        let all: [&dyn Exporter; 3] = [&ConsoleExporter, &json, &CsvExporter];
        assert!(all.iter().all(|e| !e.serialize(stage).unwrap().is_empty()));
    }
}
