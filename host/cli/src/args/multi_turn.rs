//! `llmb multi-turn`: the command line of vLLM's `benchmark_serving_multi_turn.py`, flag for flag,
//! plus a few llmb extensions at the end (each marked as such).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::args::SimTiming;

/// How a client picks the active conversation for its next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConversationSampling {
    /// Cycle through the client's active conversations.
    #[value(name = "round_robin")]
    RoundRobin,
    /// Pick one of them at random.
    #[value(name = "random")]
    Random,
}

/// vLLM's multi-turn benchmark: clients that each keep several conversations going, sending turn
/// k with the server's own earlier answers in the history.
#[derive(Debug, Clone, Args)]
pub struct MultiTurnArgs {
    /// Conversations as a JSON list of {"id", "messages"} (ShareGPT-style, as vLLM's
    /// convert_sharegpt_to_openai.py writes), or a JSON object with "filetype":
    /// "generate_conversations" describing synthetic conversations.
    #[arg(short = 'i', long = "input-file")]
    pub input_file: PathBuf,
    /// Write the conversations back with the server's answers as the assistant turns.
    #[arg(short = 'o', long = "output-file")]
    pub output_file: Option<PathBuf>,
    /// Seed for the synthetic conversations, the random conversation choice and the pauses.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Model name (sent in requests unless --served-model-name); a local folder or
    /// tokenizer.json also gives the tokenizer.
    #[arg(short = 'm', long)]
    pub model: String,
    /// The model name sent in the API when it differs from --model.
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Base URL of the server.
    #[arg(short = 'u', long, default_value = "http://localhost:8000")]
    pub url: String,
    /// Sent as `Authorization: Bearer KEY`.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Extra request header, `Name: value` or `Name=value` (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Clients sending requests in parallel.
    #[arg(short = 'p', long, default_value_t = 1)]
    pub num_clients: usize,
    /// Conversations in progress at a time over all clients (default: one per client).
    #[arg(short = 'k', long)]
    pub max_active_conversations: Option<usize>,
    /// Requests over all clients (each client sends at most this / --num-clients).
    #[arg(short = 'n', long)]
    pub max_num_requests: Option<usize>,
    /// First send only the first turn of every conversation, left out of the results.
    #[arg(long)]
    pub warmup_step: bool,
    /// Messages per conversation at most, user and assistant counted (2, 4, 6, ...).
    #[arg(long)]
    pub max_turns: Option<usize>,
    /// Keep going after the first client finishes (by default all stop then).
    #[arg(long)]
    pub no_early_stop: bool,
    /// max_tokens of every request instead of the dataset answer's length (with
    /// --limit-min-tokens; negative: no limit).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub limit_max_tokens: i64,
    /// Lower output limit, set together with --limit-max-tokens (validated; vLLM's script does
    /// not send it either).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub limit_min_tokens: i64,
    /// Poisson request rate per client, requests/s; 0 = no pause between requests.
    #[arg(long, default_value_t = 0.0)]
    pub request_rate: f64,
    /// Retries of a failed or timed-out request.
    #[arg(long, env = "MULTITURN_BENCH_MAX_RETRIES", default_value_t = 0)]
    pub max_retries: u32,
    /// How the next conversation is picked.
    #[arg(long, value_enum, default_value = "round_robin")]
    pub conversation_sampling: ConversationSampling,
    /// Fail when an answer differs from the dataset's assistant turn.
    #[arg(long)]
    pub verify_output: bool,
    /// Per-request timeout, raised to 0.2 s per requested output token when that is longer.
    #[arg(long, default_value_t = 120, allow_negative_numbers = true)]
    pub request_timeout_sec: i64,
    /// Non-streaming requests.
    #[arg(long)]
    pub no_stream: bool,
    /// Add `conversation_id` to each request body and an `X-Session-ID` header (for vLLM's
    /// disaggregated multi-turn proxy).
    #[arg(long)]
    pub send_conversation_id: bool,
    /// Write the summary statistics and the raw data to an Excel workbook
    /// (statistics_P_clients__DATE.xlsx in the current folder, or --excel-file).
    #[arg(short = 'e', long)]
    pub excel_output: bool,
    /// Per-request statistics (ttft_ms, tpot_ms, ...) as a JSON array.
    #[arg(long)]
    pub stats_json_output: Option<PathBuf>,
    /// Log each client's progress.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Print the prompts and the server's answers.
    #[arg(long)]
    pub print_content: bool,
    /// Report the statistics again after dropping the first X % of the samples, for each X
    /// (comma-separated, e.g. 0%,50%).
    #[arg(long, default_value = "0%")]
    pub warmup_percentages: String,
    /// Accepted for compatibility (llmb reads tokenizer.json files only; nothing is executed).
    #[arg(long)]
    pub trust_remote_code: bool,

    // ---- llmb extensions ----
    /// llmb: a tokenizer.json (or a folder holding one) for token counts. Default: --model when
    /// it is such a path, else one token per word; server usage counts are used where reported.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// llmb: write the workbook to this path (implies --excel-output).
    #[arg(long, value_name = "PATH")]
    pub excel_file: Option<PathBuf>,
    /// llmb: append every request's record (host timestamps, token counts, errors) to this
    /// JSONL file, warmup requests marked.
    #[arg(long, value_name = "PATH")]
    pub records: Option<PathBuf>,
    /// llmb: run against an in-process simulator serving the model instead of --url.
    #[arg(long)]
    pub sim: bool,
    #[command(flatten)]
    pub sim_timing: SimTiming,
}

impl MultiTurnArgs {
    /// The model name requests carry.
    pub fn api_model(&self) -> &str {
        self.served_model_name.as_deref().unwrap_or(&self.model)
    }
}

/// `--header`: vLLM splits at the first `:` when there is one, else at the first `=`.
pub fn parse_header(header: &str) -> anyhow::Result<(String, String)> {
    for sep in [':', '='] {
        if let Some((k, v)) = header.split_once(sep) {
            let (k, v) = (k.trim(), v.trim());
            if !k.is_empty() {
                return Ok((k.to_string(), v.to_string()));
            }
            break;
        }
    }
    anyhow::bail!(
        "--header {header:?}: headers must be given as 'Header-Name: value' or 'Header-Name=value'"
    )
}

/// `--warmup-percentages 0%,50%` as fractions, sorted; vLLM ignores it with --warmup-step.
pub fn parse_warmup_percentages(text: &str) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for item in text.split(',') {
        let v: f64 = item
            .replace('%', "")
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid --warmup-percentages={text}"))?;
        let p = v / 100.0;
        anyhow::ensure!(
            (0.0..1.0).contains(&p),
            "invalid --warmup-percentages={text}: each must be at least 0% and below 100%"
        );
        out.push(p);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_split_like_vllm() {
        assert_eq!(
            parse_header("X-A: b=c").unwrap(),
            ("X-A".into(), "b=c".into())
        );
        assert_eq!(parse_header("X-A=b").unwrap(), ("X-A".into(), "b".into()));
        assert!(parse_header("novalue").is_err());
        assert!(parse_header(": x").is_err());
    }

    #[test]
    fn warmup_percentages_parse_and_sort() {
        assert_eq!(parse_warmup_percentages("50%,0%").unwrap(), [0.0, 0.5]);
        assert_eq!(parse_warmup_percentages("25").unwrap(), [0.25]);
        assert!(parse_warmup_percentages("100%").is_err());
        assert!(parse_warmup_percentages("x").is_err());
    }
}
