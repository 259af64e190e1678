//! The `burstgpt` dataset: replays a BurstGPT trace (`--dataset-name burstgpt --dataset-path
//! BurstGPT_1.csv`), the CSV with header `Timestamp,Model,Request tokens,Response tokens,Total
//! tokens,Log Type`.
//!
//! Like vLLM's `BurstGPTDataset`, rows whose response has no tokens (failed requests) are
//! dropped and each kept row becomes a prompt of random tokens: here of exactly `Request tokens`
//! tokens by the host tokenizer, asking for `Response tokens` tokens back. Unlike vLLM, which
//! keeps only GPT-4 rows and samples them at random, the trace is kept in file order and each
//! sample carries the row's `Timestamp`, so the host replays the recorded arrivals.
//!
//! Options: `burstgpt-log-type` (default `Conversation log`, `all` keeps every row),
//! `burstgpt-model` (default `all`, e.g. `ChatGPT` or `GPT-4`), `burstgpt-shuffle` (`true` picks
//! the `count` rows at random instead of the first ones). The file is read a line at a time, so a
//! large trace costs only what is asked of it. Errors name the file and the line.

use llmb_plugin_sdk::tokens;

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufRead, BufReader};

use llmb_plugin_sdk::SplitMix64;
use llmb_plugin_sdk::dataset::{
    DatasetInfo, DatasetParams, Guest, GuestSource, Prompt, Sample, option, parse_option,
};

use tokens::{HostTokenizer, Tokenizer, Vocab, random_text};

mod rows;
#[cfg(test)]
mod tests;

pub use rows::{Row, Rows, split_csv_line};

/// Where the user's file is mounted inside the sandbox.
const DATA_DIR: &str = "/data";

/// The log type BurstGPT uses for ChatGPT-UI conversations, the default selection.
pub const DEFAULT_LOG_TYPE: &str = "Conversation log";

/// The `burstgpt` dataset.
pub struct BurstGpt;

/// The trace of one run, or the error that opening it produced (reported by the first
/// `next-batch`, as the contract asks).
pub struct BurstGptSource {
    state: RefCell<Result<Replay<BufReader<File>, HostTokenizer>, String>>,
}

/// Which rows become requests; `None` keeps every value of that column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// `Log Type` to keep (`--burstgpt-log-type`): conversations and API calls differ in shape.
    pub log_type: Option<String>,
    /// `Model` to keep (`--burstgpt-model`): ChatGPT and GPT-4 traffic differ in lengths.
    pub model: Option<String>,
}

impl Filter {
    fn keeps(wanted: &Option<String>, value: &str) -> bool {
        wanted
            .as_deref()
            .is_none_or(|w| w.eq_ignore_ascii_case(value.trim()))
    }

    fn describe(&self) -> String {
        format!(
            "log type {}, model {}, response tokens > 0",
            self.log_type.as_deref().unwrap_or("all"),
            self.model.as_deref().unwrap_or("all"),
        )
    }
}

/// What the user asked of the reader.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Rows to keep.
    pub filter: Filter,
    /// Draw the rows at random instead of replaying them in file order.
    pub shuffle: bool,
    /// Rows wanted; 0 = the whole trace.
    pub count: u64,
    /// Seeds the shuffle and every row's random prompt, so runs repeat.
    pub seed: u64,
}

/// `all` (any case) means no filter on that column.
fn selection(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.eq_ignore_ascii_case("all")).then(|| v.to_owned())
}

/// Reads the `burstgpt-*` options; `disable-shuffle` wins over `burstgpt-shuffle`.
pub fn config(params: &DatasetParams) -> Result<Config, String> {
    let shuffle: bool = parse_option(params, "burstgpt-shuffle", false)?;
    Ok(Config {
        filter: Filter {
            log_type: selection(option(params, "burstgpt-log-type").unwrap_or(DEFAULT_LOG_TYPE)),
            model: selection(option(params, "burstgpt-model").unwrap_or("all")),
        },
        shuffle: shuffle && option(params, "disable-shuffle").is_none(),
        count: params.count,
        seed: params.seed,
    })
}

/// Where the rows come from: the file itself in trace order, or all of it read up front and
/// shuffled.
enum Feed<R> {
    Trace(Rows<R>),
    Shuffled(std::vec::IntoIter<Row>),
}

/// Turns kept rows into samples, a batch at a time.
pub struct Replay<R, T> {
    name: String,
    feed: Feed<R>,
    describe: String,
    tok: T,
    vocab: Vocab,
    seed: u64,
    /// Samples still wanted; `None` = the rest of the trace.
    left: Option<u64>,
    produced: u64,
}

impl<R: BufRead, T: Tokenizer> Replay<R, T> {
    /// Reads the header (and with `shuffle` the whole file, to draw from it).
    pub fn new(
        reader: R,
        name: &str,
        config: &Config,
        tok: T,
        vocab: Vocab,
    ) -> Result<Self, String> {
        let rows = Rows::new(reader, name, config.filter.clone())?;
        let feed = if config.shuffle {
            let mut all = rows.collect::<Result<Vec<Row>, String>>()?;
            let mut rng = SplitMix64::new(config.seed);
            for i in (1..all.len()).rev() {
                let j = rng.range_inclusive(0, i as u64) as usize;
                all.swap(i, j);
            }
            Feed::Shuffled(all.into_iter())
        } else {
            Feed::Trace(rows)
        };
        Ok(Self {
            name: name.to_owned(),
            feed,
            describe: config.filter.describe(),
            tok,
            vocab,
            seed: config.seed,
            left: (config.count > 0).then_some(config.count),
            produced: 0,
        })
    }

    fn next_row(&mut self) -> Option<Result<Row, String>> {
        match &mut self.feed {
            Feed::Trace(rows) => rows.next(),
            Feed::Shuffled(rows) => rows.next().map(Ok),
        }
    }

    /// Up to `max` samples; an empty batch ends the trace. Fails when nothing at all is kept,
    /// so a filter that matches no row is not mistaken for an empty benchmark.
    pub fn next_batch(&mut self, max: u32) -> Result<Vec<Sample>, String> {
        let wanted = self.left.map_or(max as u64, |left| left.min(max as u64));
        let mut out = Vec::with_capacity(wanted as usize);
        while (out.len() as u64) < wanted {
            let Some(row) = self.next_row().transpose()? else {
                break;
            };
            out.push(self.sample(&row));
        }
        if let Some(left) = &mut self.left {
            *left -= out.len() as u64;
        }
        if self.produced == 0 && out.is_empty() && max > 0 {
            return Err(format!(
                "{}: no rows to replay ({})",
                self.name, self.describe
            ));
        }
        self.produced += out.len() as u64;
        Ok(out)
    }

    fn sample(&self, row: &Row) -> Sample {
        let mut rng = SplitMix64::new(self.seed ^ row.line.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut rng = SplitMix64::new(rng.next_u64());
        let (text, input_tokens) = random_text(
            &self.tok,
            &self.vocab,
            &mut rng,
            row.request_tokens as usize,
        );
        Sample {
            prompt: Prompt::Text(text),
            input_tokens,
            output_tokens: row.response_tokens,
            timestamp: Some(row.timestamp),
        }
    }
}

fn open(params: &DatasetParams) -> Result<Replay<BufReader<File>, HostTokenizer>, String> {
    let file = params
        .files
        .first()
        .ok_or("the burstgpt dataset needs --dataset-path FILE (a BurstGPT CSV)")?;
    let shown = option(params, "dataset-path-display").unwrap_or(file);
    let config = config(params)?;
    let f = File::open(format!("{DATA_DIR}/{file}"))
        .map_err(|e| format!("{shown}: cannot read: {e}"))?;
    Replay::new(
        BufReader::with_capacity(1 << 16, f),
        shown,
        &config,
        HostTokenizer,
        Vocab::host()?,
    )
}

impl Guest for BurstGpt {
    type Source = BurstGptSource;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "burstgpt".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "BurstGPT trace replay from --dataset-path (CSV): random prompts of exactly `Request tokens`, `Response tokens` as max tokens, `Timestamp` as send time; --burstgpt-log-type (Conversation log), --burstgpt-model (all), --burstgpt-shuffle".into(),
        }
    }
}

impl GuestSource for BurstGptSource {
    fn new(params: DatasetParams) -> Self {
        Self {
            state: RefCell::new(open(&params)),
        }
    }

    fn next_batch(&self, max: u32) -> Result<Vec<Sample>, String> {
        let mut guard = self.state.borrow_mut();
        let replay = guard.as_mut().map_err(|e| e.clone())?;
        replay.next_batch(max)
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_dataset!(BurstGpt);
