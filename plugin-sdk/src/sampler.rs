//! Record-by-record sampling shared by the file-backed dataset readers.
//!
//! Each reader crate includes this file with `#[path]`: plugins may depend on nothing but the
//! SDK and serde, so shared code cannot be a crate of its own.
//!
//! Dataset files can be far larger than a plugin may grow (ShareGPT is about 650 MB; a dataset
//! sandbox gets 256 MiB), so records are never all held at once. A shuffled run first indexes
//! where every admitted record lies, shuffles the index and re-reads each record when its turn
//! comes; an unshuffled run streams the file and stops reading once it has enough. Records are
//! tokenized lazily, in draw order, the way vLLM walks its shuffled list until it has
//! `num_requests` usable samples.

use std::cell::RefCell;
use std::fmt::Display;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

use crate::SplitMix64;
use crate::dataset::{DatasetParams, Prompt, Sample, option, parse_option};

/// Where the user's file is mounted inside the sandbox.
pub const DATA_DIR: &str = "/data";

/// Where one record lies in its file, so it can be re-read instead of kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Element number in a JSON array, from 1; `None` for a JSON Lines record, which its line
    /// number names already.
    pub element: Option<u64>,
    /// Line of the record's first byte, from 1.
    pub line: u64,
    /// Byte offset of the record's first byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Span {
    /// The record's start, as error messages name it: `file:line: array element N (byte B)`
    /// for array elements, `file:line` for JSON Lines.
    pub fn at(&self, name: &str) -> String {
        match self.element {
            Some(n) => format!(
                "{name}:{}: array element {n} (byte {})",
                self.line, self.offset
            ),
            None => format!("{name}:{}", self.line),
        }
    }
}

/// One record's bytes and where they came from.
#[derive(Debug, Clone)]
pub struct Record {
    /// Where the bytes lie, for errors and for reading them again.
    pub span: Span,
    /// The record's JSON text, handed whole to `serde_json`.
    pub bytes: Vec<u8>,
}

impl Record {
    /// A problem with the record as a whole, named by where the record starts.
    pub fn error(&self, name: &str, message: impl Display) -> String {
        format!("{}: {message}", self.span.at(name))
    }

    /// A serde error, moved from the record's own coordinates to the file's, so the user can go
    /// straight to the faulty line (and byte, inside a JSON array).
    pub fn json_error(&self, name: &str, e: &serde_json::Error) -> String {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full);
        if e.line() == 0 {
            return self.error(name, message);
        }
        let line = self.span.line + e.line() as u64 - 1;
        match self.span.element {
            Some(n) => {
                let mut line_start = 0;
                for _ in 1..e.line() {
                    line_start = self.bytes[line_start..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(self.bytes.len(), |p| line_start + p + 1);
                }
                let byte = self.span.offset + (line_start + e.column().saturating_sub(1)) as u64;
                format!("{name}:{line}: array element {n} (byte {byte}): {message}")
            }
            None => format!("{name}:{line}: column {}: {message}", e.column()),
        }
    }
}

/// Reads the bytes of `span` again from a seekable file.
pub fn read_span<R: Read + Seek>(
    reader: &mut R,
    span: &Span,
    name: &str,
) -> Result<Record, String> {
    let mut bytes = vec![0; span.len as usize];
    reader
        .seek(SeekFrom::Start(span.offset))
        .and_then(|_| reader.read_exact(&mut bytes))
        .map_err(|e| format!("{}: cannot read it again: {e}", span.at(name)))?;
    Ok(Record { span: *span, bytes })
}

/// A dataset file read one record at a time, which can also re-read a record it passed.
pub trait Records {
    /// The next record in file order; `None` at the end of the file.
    fn next_record(&mut self) -> Result<Option<Record>, String>;
    /// The record at `span` again (the sequential position is kept).
    fn reread(&mut self, span: &Span) -> Result<Record, String>;
}

/// What a dataset makes of its records.
pub trait Format {
    /// Checks a record's shape and says whether it joins the pool; cheap, no tokenizer, so a
    /// shuffled run can index a whole file quickly.
    fn admit(&mut self, record: &Record) -> Result<bool, String>;
    /// Tokenizes an admitted record: its sample, or `None` when a length rule drops it.
    fn measure(
        &self,
        record: &Record,
        count: &dyn Fn(&str) -> u32,
    ) -> Result<Option<Sample>, String>;
    /// The prompt alone, for repeating a sample already measured without tokenizing it again.
    fn prompt(&self, record: &Record) -> Result<Prompt, String>;
    /// Why a file gave no sample at all, `measured` records having been tried.
    fn nothing_usable(&self, measured: u64) -> String;
}

/// How a run draws from the pool, from the options every file dataset shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// `--seed`: the same seed draws the same samples in the same order.
    pub seed: u64,
    /// Samples wanted; 0 = every usable record once.
    pub count: u64,
    /// Seeded shuffle (off with `disable-shuffle`).
    pub shuffle: bool,
    /// Repeat the usable samples when there are fewer than `count` (option `cycle`).
    pub cycle: bool,
}

impl Plan {
    /// Reads `disable-shuffle` and `cycle`, both booleans.
    pub fn from_params(params: &DatasetParams) -> Result<Self, String> {
        Ok(Self {
            seed: params.seed,
            count: params.count,
            shuffle: !flag(params, "disable-shuffle")?,
            cycle: flag(params, "cycle")?,
        })
    }
}

/// A boolean option: absent is false; the host passes switches as `"true"`.
pub fn flag(params: &DatasetParams, key: &str) -> Result<bool, String> {
    let Some(value) = option(params, key) else {
        return Ok(false);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "invalid value {value:?} for --{key} (expected true or false)"
        )),
    }
}

/// A token count option that must be at least 1 when given: a zero would send `max_tokens: 0`
/// or drop every prompt.
pub fn positive(params: &DatasetParams, key: &str) -> Result<Option<u32>, String> {
    if option(params, key).is_none() {
        return Ok(None);
    }
    match parse_option(params, key, 0u32)? {
        0 => Err(format!("--{key} must be at least 1")),
        n => Ok(Some(n)),
    }
}

/// Opens the file the user named, buffered, with the name to show in errors (the path as the
/// user typed it, which the host passes as `dataset-path-display`).
pub fn open_data_file(
    params: &DatasetParams,
    usage: &str,
) -> Result<(BufReader<File>, String), String> {
    let file = params.files.first().ok_or(usage)?;
    let shown = option(params, "dataset-path-display")
        .unwrap_or(file)
        .to_owned();
    let reader = File::open(format!("{DATA_DIR}/{file}"))
        .map_err(|e| format!("{shown}: cannot read: {e}"))?;
    Ok((BufReader::with_capacity(1 << 16, reader), shown))
}

/// Fisher–Yates with the SDK's SplitMix64, so a seed gives the same order on every platform.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for i in (1..items.len()).rev() {
        let j = rng.range_inclusive(0, i as u64) as usize;
        items.swap(i, j);
    }
}

/// A sample already produced, remembered by position so cycling can repeat it cheaply.
#[derive(Debug, Clone, Copy)]
struct Kept {
    span: Span,
    input_tokens: u32,
    output_tokens: u32,
}

/// Draws samples from a file: lazily, in seeded or file order, cycling on request.
pub struct Sampler<R, F> {
    records: R,
    format: F,
    plan: Plan,
    /// The shuffled index of admitted records; `None` when streaming in file order.
    order: Option<std::vec::IntoIter<Span>>,
    exhausted: bool,
    measured: u64,
    produced: u64,
    /// Samples to repeat; only filled when cycling may be needed.
    kept: Vec<Kept>,
    repeats: usize,
}

impl<R: Records, F: Format> Sampler<R, F> {
    /// Prepares a run; a shuffled one reads the whole file now to index it, so shape errors
    /// anywhere in the file surface whatever the seed.
    pub fn new(mut records: R, mut format: F, plan: Plan) -> Result<Self, String> {
        let order = if plan.shuffle {
            let mut spans = Vec::new();
            while let Some(record) = records.next_record()? {
                if format.admit(&record)? {
                    spans.push(record.span);
                }
            }
            shuffle(&mut spans, plan.seed);
            Some(spans.into_iter())
        } else {
            None
        };
        Ok(Self {
            records,
            format,
            plan,
            order,
            exhausted: false,
            measured: 0,
            produced: 0,
            kept: Vec::new(),
            repeats: 0,
        })
    }

    /// Up to `max` more samples; an empty batch means the run is complete.
    pub fn next_batch(
        &mut self,
        max: u32,
        count: &dyn Fn(&str) -> u32,
    ) -> Result<Vec<Sample>, String> {
        let mut out = Vec::new();
        while out.len() < max as usize && (self.plan.count == 0 || self.produced < self.plan.count)
        {
            let sample = if !self.exhausted {
                let Some(record) = self.next_admitted()? else {
                    self.exhausted = true;
                    if self.produced == 0 {
                        return Err(self.format.nothing_usable(self.measured));
                    }
                    continue;
                };
                self.measured += 1;
                let Some(sample) = self.format.measure(&record, count)? else {
                    continue;
                };
                if self.plan.cycle && self.plan.count > 0 {
                    self.kept.push(Kept {
                        span: record.span,
                        input_tokens: sample.input_tokens,
                        output_tokens: sample.output_tokens,
                    });
                }
                sample
            } else if self.plan.cycle && !self.kept.is_empty() {
                let kept = self.kept[self.repeats % self.kept.len()];
                self.repeats += 1;
                let record = self.records.reread(&kept.span)?;
                Sample {
                    prompt: self.format.prompt(&record)?,
                    input_tokens: kept.input_tokens,
                    output_tokens: kept.output_tokens,
                    timestamp: None,
                }
            } else {
                break;
            };
            self.produced += 1;
            out.push(sample);
        }
        Ok(out)
    }

    fn next_admitted(&mut self) -> Result<Option<Record>, String> {
        if let Some(order) = &mut self.order {
            return order
                .next()
                .map(|span| self.records.reread(&span))
                .transpose();
        }
        while let Some(record) = self.records.next_record()? {
            if self.format.admit(&record)? {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }
}

/// A `source` resource's state: its sampler, or the error that stopped it, repeated on every
/// later call so the host never sees a half-read file as a short one.
pub struct SourceState<R, F> {
    state: RefCell<Result<Sampler<R, F>, String>>,
}

impl<R: Records, F: Format> SourceState<R, F> {
    /// Wraps what opening the file gave; an opening error surfaces from the first call, as the
    /// WIT contract says.
    pub fn new(opened: Result<Sampler<R, F>, String>) -> Self {
        Self {
            state: RefCell::new(opened),
        }
    }

    /// [`Sampler::next_batch`], remembering a failure.
    pub fn next_batch(&self, max: u32, count: &dyn Fn(&str) -> u32) -> Result<Vec<Sample>, String> {
        let mut guard = self.state.borrow_mut();
        let sampler = guard.as_mut().map_err(|e| e.clone())?;
        sampler.next_batch(max, count).inspect_err(|e| {
            *guard = Err(e.clone());
        })
    }
}
