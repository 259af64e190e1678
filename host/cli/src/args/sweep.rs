//! The flags of the concurrency-sweep scripts llmb replaces (see [`crate::config::sweep`] for
//! what they turn into).

use std::path::PathBuf;

/// Flags of concurrency-sweep scripts without an llmb flag of the same name.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Concurrency-sweep script compatibility")]
pub struct SweepCompatArgs {
    /// Stream the responses: accepted for compatibility, llmb streams unless --no-stream.
    #[arg(long, conflicts_with = "no_stream")]
    pub stream: bool,
    /// A system message before every prompt (for raw-text prompts, a prefix); like
    /// --system-prompt-file with the text given here.
    #[arg(long, value_name = "TEXT", conflicts_with = "system_prompt_file")]
    pub system: Option<String>,
    /// Send this one user message as every request, instead of a dataset.
    #[arg(long, value_name = "TEXT", conflicts_with = "prompt_file")]
    pub user: Option<String>,
    /// Chat prompts instead of a dataset: a JSON array or JSONL, each entry a list of
    /// {"role", "content"} messages, {"messages": [...]} or a plain string (one user message).
    /// Entries are sent in file order, cycled when more requests are asked for.
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Output tokens asked for in every request, whatever the dataset says.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
    /// The result folder (--result-dir), as the sweep scripts spell it.
    #[arg(long, value_name = "DIR")]
    pub outdir: Option<PathBuf>,
}
