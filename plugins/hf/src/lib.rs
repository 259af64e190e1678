//! The `hf` dataset: local Hugging Face dataset files, read without downloading anything.
//!
//! `--dataset-path` is one data file or a snapshot directory (as `huggingface-cli download
//! --local-dir` leaves it). Files are parquet, JSON Lines (`.jsonl`, `.ndjson`), JSON (`.json`:
//! an array of records, JSON Lines, or an object whose only list holds the records, like
//! `{"data": [...]}`) and CSV/TSV (`.csv`, `.tsv`, with a header row). Parquet may be
//! uncompressed, snappy (pyarrow's default), gzip or lz4; zstd, brotli and LZO are refused with
//! a message saying how to re-save the file (zstd and LZO are C libraries that do not build for
//! the plugin's target; brotli would nearly double the plugin's size).
//!
//! In a directory, `hf-split` (default `train`) picks the files whose name is the split or
//! starts with it and `-`, `_` or `.` (`data/train-00000-of-00002.parquet`), or that lie in a
//! folder named after it (`default/train/0000.parquet`); when some file's split name is exactly
//! the split, only those are taken (`train` then leaves `train_sft` out). `hf-subset` keeps the
//! files under one top-level folder, and must be given when the split's files lie under
//! several. A directory whose file names name no split is all `train`, as the `datasets`
//! library reads it. Files are read in path order; hidden files and `datasets`' metadata JSON
//! (`dataset_info.json`, `state.json`, ...) are not data.
//!
//! Columns are found by name unless the options name them: the prompt is the first of
//! `prompt`, `question`, `instruction`, `input`, `text`, `problem`, `query` (an alpaca
//! `instruction` gets a non-empty `input` appended after a blank line), else a conversation in
//! `messages`, `conversations`, `conversation` or `chat` (OpenAI `role`/`content` or ShareGPT
//! `from`/`value`, as a list or as JSON text; a trailing assistant message is the reference
//! reply and is not sent). The output length is `hf-output-len` when given, else the row's
//! `output_len`, `output_tokens` or `max_tokens`, else the token count of its reference reply
//! (`output`, `response`, `answer`, `completion`, `chosen`, or the trailing assistant message),
//! else `custom-output-len`. Parquet and CSV columns come from the schema or header; JSON
//! records have none, so each record's keys are searched, and a named column must be in the
//! first record. Rows with an empty prompt are skipped.
//!
//! Vision datasets: when a row has images, the sample is a multimodal prompt: a text prompt
//! becomes one user message of the text then the images (as vLLM sends them), a conversation
//! gets them after the text of its first user message. The image column is `hf-image-column`,
//! else the first of `image`, `images`, `image_url`, `image_urls` that can hold images (parquet:
//! binary or text, the Hugging Face `Image` feature's `{bytes, path}` struct, or a list of
//! those; JSON: a string, list or object). A cell holds one image or a list: encoded bytes
//! (JPEG, PNG, WebP or GIF; format and size come from the header, and anything else is refused
//! naming the file and row), an `http(s)://` URL the server fetches, or a `data:` URL; in JSON
//! also `{"bytes": base64, "path"}`, `{"url"}` or `{"image_url": {"url"}}`. A path without bytes
//! is refused: files a dataset refers to are not opened. A row without images stays a text or
//! chat prompt. A conversation may also be a list of turns each a list of messages
//! (VisionArena-Chat's `conversation`, read with its `images`), and its content parts may mark
//! images with `{"type": "image"}` (`llava-instruct-mix-vsft`; the images still go to the first
//! user message, and a row with such parts but no image column is refused). Rows whose text is
//! empty are skipped even when they have images. `input_tokens` counts the text
//! alone: what an image costs in tokens is the server's business. `hf-text-only` reads no image
//! column and drops image parts, for a text-only run of a vision dataset. A batch stops adding samples
//! once its images reach [`pool::BATCH_BYTES`].
//!
//! Files may be far larger than the plugin's memory, so records are streamed: a shuffled run
//! with `count` N keeps a seeded uniform sample of N usable rows, an unshuffled one stops
//! reading after N, and `count` 0 keeps every row; rows that would take more than 160 MiB stop
//! the run with advice instead of exhausting memory. Errors name the file and the line (JSON,
//! CSV) or row (parquet).

pub mod files;
pub mod image;
pub mod json;
pub mod pool;
pub mod pq;
pub mod rows;
pub mod table;

use std::path::Path;

use llmb_plugin_sdk::dataset::{
    DatasetInfo, DatasetParams, Guest, GuestSource, Sample, option, tokenizer,
};
use llmb_plugin_sdk::sampler::{DATA_DIR, Plan, positive};

use files::{DataFile, Format};
use pool::{Collector, Pool};
use rows::{Cells, ColumnSet, Columns, Mapping};

/// `hf-split` when not given, as in the `datasets` library.
pub const DEFAULT_SPLIT: &str = "train";

/// `custom-output-len` when not given: rows without a length or a reference reply get this.
pub const DEFAULT_OUTPUT_LEN: u32 = 256;

/// The options this reader takes, read once when the source opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Seed, count, shuffle and cycle, as every file dataset reads them.
    pub plan: Plan,
    /// `hf-split`.
    pub split: String,
    /// `hf-subset`.
    pub subset: Option<String>,
    /// `hf-prompt-column` and friends.
    pub columns: Columns,
    /// `hf-output-len`: the output length of every sample, whatever the rows say.
    pub output_len: Option<u32>,
    /// `custom-output-len`: for rows that give no length and no reference reply.
    pub default_output_len: u32,
    /// Bytes the kept rows may take ([`pool::MEMORY_BUDGET`]; not an option, tests lower it).
    pub memory_budget: u64,
}

fn name_option(params: &DatasetParams, key: &str) -> Result<Option<String>, String> {
    match option(params, key).map(str::trim) {
        None => Ok(None),
        Some("") => Err(format!("--{key} needs a name")),
        Some(name) => Ok(Some(name.to_owned())),
    }
}

/// Reads the options (see the module documentation for what each does).
pub fn config(params: &DatasetParams) -> Result<Config, String> {
    let columns = Columns {
        prompt: name_option(params, "hf-prompt-column")?,
        messages: name_option(params, "hf-messages-column")?,
        output_len: name_option(params, "hf-output-len-column")?,
        output: name_option(params, "hf-output-column")?,
        image: name_option(params, "hf-image-column")?,
        text_only: llmb_plugin_sdk::sampler::flag(params, "hf-text-only")?,
    };
    if columns.image.is_some() && columns.text_only {
        return Err(
            "--hf-image-column and --hf-text-only exclude each other: one reads images, the \
             other leaves them out"
                .into(),
        );
    }
    if columns.prompt.is_some() && columns.messages.is_some() {
        return Err(
            "--hf-prompt-column and --hf-messages-column exclude each other: a row's prompt is \
             either text or a conversation"
                .into(),
        );
    }
    Ok(Config {
        plan: Plan::from_params(params)?,
        split: name_option(params, "hf-split")?.unwrap_or_else(|| DEFAULT_SPLIT.into()),
        subset: name_option(params, "hf-subset")?,
        columns,
        output_len: positive(params, "hf-output-len")?,
        default_output_len: positive(params, "custom-output-len")?.unwrap_or(DEFAULT_OUTPUT_LEN),
        memory_budget: pool::MEMORY_BUDGET,
    })
}

/// Whether a format reader should go on with its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// The run has all the rows it needs.
    Stop,
}

/// A run's reading in progress: the options and the rows kept so far. The format readers hand
/// it each record's cells.
pub struct Reading<'c> {
    config: &'c Config,
    collector: Collector,
}

impl<'c> Reading<'c> {
    pub fn new(config: &'c Config) -> Self {
        Self {
            config,
            collector: Collector::new(config.plan, config.memory_budget),
        }
    }

    /// The columns a file with `columns` is read through; `at` names the file (and line).
    /// `strict`: a named column must be there (JSON records after the first may leave it out).
    pub fn mapping<C: ColumnSet + ?Sized>(
        &self,
        at: &str,
        columns: &C,
        strict: bool,
    ) -> Result<Mapping, String> {
        rows::resolve(
            columns,
            &self.config.columns,
            self.config.output_len.is_some(),
            strict,
            at,
        )
    }

    /// Takes one record; `at` names it in errors.
    pub fn offer(
        &mut self,
        mapping: &Mapping,
        cells: Cells,
        at: &dyn Fn() -> String,
    ) -> Result<Step, String> {
        match rows::row(mapping, cells, self.config.output_len.is_some(), &at())? {
            None => {
                self.collector.skipped += 1;
                Ok(Step::Continue)
            }
            Some(row) => match self.collector.offer(row) {
                Ok(true) => Ok(Step::Continue),
                Ok(false) => Ok(Step::Stop),
                Err(e) => Err(format!("{}: {e}", at())),
            },
        }
    }
}

fn read(file: &DataFile, reading: &mut Reading) -> Result<Step, String> {
    match file.format {
        Format::Parquet => pq::read(file, reading),
        Format::Json => json::read(file, reading),
        Format::Delimited(delimiter) => table::read(file, delimiter, reading),
    }
}

/// What error messages call the files of a run: the file, or the first few of a directory's.
fn listed(files: &[DataFile]) -> String {
    const SHOWN: usize = 3;
    let mut out = files
        .iter()
        .take(SHOWN)
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > SHOWN {
        out.push_str(&format!(" and {} more", files.len() - SHOWN));
    }
    out
}

/// What a run read: the pool to draw from, and how many rows had an empty prompt.
pub struct Loaded {
    pub pool: Pool,
    pub skipped: u64,
}

/// Reads the dataset at `entry` inside `root` (`"."` for all of it); `shown` is what errors
/// call `entry`.
pub fn load(root: &Path, entry: &str, shown: &str, config: &Config) -> Result<Loaded, String> {
    let files = files::locate(root, entry, shown, &config.split, config.subset.as_deref())?;
    let mut reading = Reading::new(config);
    for file in &files {
        if !reading.collector.wants_more() || read(file, &mut reading)? == Step::Stop {
            break;
        }
    }
    let skipped = reading.collector.skipped;
    if reading.collector.usable() == 0 {
        return Err(if skipped > 0 {
            format!(
                "{}: no usable rows: the prompts of all {skipped} are empty",
                listed(&files)
            )
        } else {
            format!("{}: no rows", listed(&files))
        });
    }
    Ok(Loaded {
        pool: Pool::new(
            reading.collector.finish(),
            config.plan,
            config.output_len,
            config.default_output_len,
        ),
        skipped,
    })
}

fn open(params: &DatasetParams) -> Result<Pool, String> {
    let config = config(params)?;
    let entry = params.files.first().ok_or(
        "the hf dataset needs --dataset-path (a data file or a Hugging Face snapshot directory)",
    )?;
    let shown = option(params, "dataset-path-display").unwrap_or(entry);
    let loaded = load(Path::new(DATA_DIR), entry, shown, &config)?;
    if loaded.skipped > 0 {
        log_warning(&format!(
            "hf: skipped {} rows with an empty prompt",
            loaded.skipped
        ));
    }
    Ok(loaded.pool)
}

#[cfg(target_arch = "wasm32")]
fn log_warning(message: &str) {
    llmb_plugin_sdk::dataset::log(llmb_plugin_sdk::dataset::Level::Warn, message);
}

#[cfg(not(target_arch = "wasm32"))]
fn log_warning(message: &str) {
    eprintln!("{message}");
}

/// The plugin's exports.
pub struct HfDataset;

/// One `source` resource: the rows drawn for the run, or why opening failed (repeated on every
/// call, so the host never takes a failed read for a short dataset).
pub struct HfSource {
    state: std::cell::RefCell<Result<Pool, String>>,
}

impl Guest for HfDataset {
    type Source = HfSource;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "hf".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Local Hugging Face dataset from --dataset-path (a file or a snapshot \
                directory): parquet (snappy/gzip/lz4, not zstd/brotli), JSONL, JSON, CSV/TSV; columns auto-detected \
                (prompt/question/instruction+input/..., messages/conversations) or set with \
                hf-prompt-column, hf-messages-column, hf-output-len-column, hf-output-column; \
                images (image/images/image_url/image_urls, or hf-image-column: bytes, the HF \
                Image struct, http(s) or data: URLs, or lists of them) make vision prompts whose \
                input tokens count the text only (hf-text-only leaves them out); \
                hf-split, hf-subset, hf-output-len, --custom-output-len, --disable-shuffle, cycle"
                .into(),
        }
    }
}

impl GuestSource for HfSource {
    fn new(params: DatasetParams) -> Self {
        Self {
            state: std::cell::RefCell::new(open(&params)),
        }
    }

    fn next_batch(&self, max: u32) -> Result<Vec<Sample>, String> {
        let mut guard = self.state.borrow_mut();
        let pool = guard.as_mut().map_err(|e| e.clone())?;
        Ok(pool.next_batch(max, &tokenizer::count))
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_dataset!(HfDataset);

#[cfg(test)]
mod tests;
