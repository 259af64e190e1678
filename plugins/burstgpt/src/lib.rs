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

/// One kept row of the trace; `line` (1-based, the header is line 1) also seeds its prompt, so
/// a row gets the same prompt whatever `count` or the order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Line in the file, for error messages and the row's prompt seed.
    pub line: u64,
    /// `Timestamp`, seconds: when the host sends the request on replay.
    pub timestamp: f64,
    /// `Request tokens`: the prompt's exact length.
    pub request_tokens: u32,
    /// `Response tokens`: sent as max tokens, so the server generates as much as it did then.
    pub response_tokens: u32,
}

/// Splits one CSV record (RFC 4180 quoting: `"a,b"`, `""` for a quote). Records spanning lines
/// are refused: BurstGPT has none, and supporting them would break line-numbered errors.
pub fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        while let Some(c) = chars.next_if(|c| *c == ' ' || *c == '\t') {
            field.push(c);
        }
        if chars.next_if_eq(&'"').is_some() {
            field.clear();
            loop {
                match chars.next() {
                    None => {
                        return Err(
                            "unterminated quoted field (fields spanning lines are not supported)"
                                .into(),
                        );
                    }
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(format!(
                        "unexpected {c:?} after the closing quote of field {}",
                        fields.len() + 1
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// Positions of the columns the reader uses; a filter's column is needed only when it filters.
#[derive(Debug, Clone, Copy)]
struct Columns {
    timestamp: usize,
    request: usize,
    response: usize,
    model: Option<usize>,
    log_type: Option<usize>,
}

const TIMESTAMP: &str = "Timestamp";
const MODEL: &str = "Model";
const REQUEST: &str = "Request tokens";
const RESPONSE: &str = "Response tokens";
const LOG_TYPE: &str = "Log Type";
const HEADER: &str = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type";

/// The kept rows of a BurstGPT CSV, parsed a line at a time as they are asked for.
pub struct Rows<R> {
    reader: R,
    name: String,
    line: u64,
    columns: Columns,
    filter: Filter,
    buf: String,
    failed: bool,
}

impl<R: BufRead> Rows<R> {
    /// Reads the header; `name` is how errors call the file.
    pub fn new(reader: R, name: &str, filter: Filter) -> Result<Self, String> {
        let mut rows = Self {
            reader,
            name: name.to_owned(),
            line: 0,
            columns: Columns {
                timestamp: 0,
                request: 0,
                response: 0,
                model: None,
                log_type: None,
            },
            filter,
            buf: String::new(),
            failed: false,
        };
        if !rows.read_line()? {
            return Err(format!(
                "{name}: empty file (a BurstGPT CSV starts with the header {HEADER})"
            ));
        }
        let header = rows.fields()?;
        let find = |column: &str| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(column))
                .ok_or_else(|| {
                    format!("{name}:1: no {column:?} column in the header (BurstGPT's is {HEADER})")
                })
        };
        rows.columns = Columns {
            timestamp: find(TIMESTAMP)?,
            request: find(REQUEST)?,
            response: find(RESPONSE)?,
            model: rows
                .filter
                .model
                .as_ref()
                .map(|_| find(MODEL))
                .transpose()?,
            log_type: rows
                .filter
                .log_type
                .as_ref()
                .map(|_| find(LOG_TYPE))
                .transpose()?,
        };
        Ok(rows)
    }

    /// The next line into `buf` without its line ending; `false` at the end of the file.
    fn read_line(&mut self) -> Result<bool, String> {
        self.buf.clear();
        self.line += 1;
        let n = self
            .reader
            .read_line(&mut self.buf)
            .map_err(|e| format!("{}:{}: cannot read: {e}", self.name, self.line))?;
        if n == 0 {
            return Ok(false);
        }
        let end = self.buf.trim_end_matches(['\n', '\r']).len();
        self.buf.truncate(end);
        if self.line == 1 && self.buf.starts_with('\u{feff}') {
            self.buf.drain(..'\u{feff}'.len_utf8());
        }
        Ok(true)
    }

    fn at(&self) -> String {
        format!("{}:{}", self.name, self.line)
    }

    fn fields(&self) -> Result<Vec<String>, String> {
        split_csv_line(&self.buf).map_err(|e| format!("{}: {e}", self.at()))
    }

    /// The current line as a row, `None` when the filters drop it.
    fn row(&self) -> Result<Option<Row>, String> {
        let fields = self.fields()?;
        let get = |i: usize, column: &str| {
            fields.get(i).map(|f| f.trim()).ok_or_else(|| {
                format!(
                    "{}: missing column {column:?} (the row has {} fields)",
                    self.at(),
                    fields.len()
                )
            })
        };
        let c = self.columns;
        let bad = |column: &str, value: &str, what: &str| {
            format!(
                "{}: bad number {value:?} in column {column:?} ({what})",
                self.at()
            )
        };
        let ts = get(c.timestamp, TIMESTAMP)?;
        let timestamp = ts
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite())
            .ok_or_else(|| bad(TIMESTAMP, ts, "expected seconds"))?;
        let req = get(c.request, REQUEST)?;
        let request_tokens = integer(req)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(REQUEST, req, "expected a token count"))?;
        let resp = get(c.response, RESPONSE)?;
        let response_tokens = integer(resp)
            .filter(|&n| n <= i64::from(u32::MAX))
            .ok_or_else(|| bad(RESPONSE, resp, "expected a token count"))?;
        let model = c.model.map(|i| get(i, MODEL)).transpose()?;
        let log_type = c.log_type.map(|i| get(i, LOG_TYPE)).transpose()?;
        let kept = response_tokens > 0
            && model.is_none_or(|m| Filter::keeps(&self.filter.model, m))
            && log_type.is_none_or(|l| Filter::keeps(&self.filter.log_type, l));
        Ok(kept.then_some(Row {
            line: self.line,
            timestamp,
            request_tokens,
            response_tokens: response_tokens as u32,
        }))
    }
}

/// An integer token count, also when written as a float with no fraction (`472.0`), as
/// spreadsheet exports do.
fn integer(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

impl<R: BufRead> Iterator for Rows<R> {
    type Item = Result<Row, String>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            let step = self.read_line().and_then(|more| {
                if !more {
                    return Ok(None);
                }
                if self.buf.trim().is_empty() {
                    return Ok(Some(None));
                }
                self.row().map(Some)
            });
            match step {
                Ok(None) => return None,
                Ok(Some(None)) => continue,
                Ok(Some(Some(row))) => return Some(Ok(row)),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use llmb_plugin_sdk::tokens::testing::{Merging, PIECES, Words};

    const SAMPLE: &str = include_str!("../../../datasets/burstgpt-sample.csv");

    fn params(count: u64, seed: u64, options: &[(&str, &str)]) -> DatasetParams {
        llmb_plugin_sdk::testing::dataset_params(seed, count, options, &["trace.csv"])
    }

    fn replay_with<T: Tokenizer>(
        text: &str,
        p: &DatasetParams,
        tok: T,
        vocab: Vocab,
    ) -> Result<Vec<Sample>, String> {
        let mut replay = Replay::new(text.as_bytes(), "trace.csv", &config(p)?, tok, vocab)?;
        let mut out = Vec::new();
        loop {
            let batch = replay.next_batch(7)?;
            if batch.is_empty() {
                return Ok(out);
            }
            out.extend(batch);
        }
    }

    fn replay(text: &str, p: &DatasetParams) -> Result<Vec<Sample>, String> {
        replay_with(text, p, Words, Vocab::new(500, &[0]).unwrap())
    }

    /// Samples as comparable values (the bindings' types have no `PartialEq`).
    fn flat(samples: &[Sample]) -> Vec<(String, u32, u32, Option<f64>)> {
        samples
            .iter()
            .map(|s| {
                let t = text(s).to_owned();
                (t, s.input_tokens, s.output_tokens, s.timestamp)
            })
            .collect()
    }

    fn text(s: &Sample) -> &str {
        match &s.prompt {
            Prompt::Text(t) => t,
            _ => panic!("a text prompt"),
        }
    }

    /// (timestamp, request tokens, response tokens) of the sample's rows.
    fn shape(samples: &[Sample]) -> Vec<(f64, u32, u32)> {
        samples
            .iter()
            .map(|s| (s.timestamp.unwrap(), s.input_tokens, s.output_tokens))
            .collect()
    }

    /// The sample file's rows as the filters should keep them, by plain splitting.
    fn expected(keep: impl Fn(&str, &str) -> bool) -> Vec<(f64, u32, u32)> {
        SAMPLE
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f[3] != "0" && keep(f[1], f[5]))
            .map(|f| {
                (
                    f[0].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn splits_quoted_fields() {
        assert_eq!(split_csv_line("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(split_csv_line("").unwrap(), [""]);
        assert_eq!(
            split_csv_line(r#"1,"GPT-4","a, ""b""",x"#).unwrap(),
            ["1", "GPT-4", r#"a, "b""#, "x"]
        );
        assert_eq!(
            split_csv_line(r#"1, "Conversation log" ,2"#).unwrap(),
            ["1", "Conversation log", "2"]
        );
        assert_eq!(split_csv_line(r#""""#).unwrap(), [""]);
        assert_eq!(split_csv_line("a\tb, c").unwrap(), ["a\tb", " c"]);
        assert!(
            split_csv_line(r#"1,"open"#)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            split_csv_line(r#"1,"a"b,2"#)
                .unwrap_err()
                .contains("field 2")
        );
    }

    #[test]
    fn keeps_conversation_logs_with_responses_in_trace_order() {
        let samples = replay(SAMPLE, &params(0, 1, &[])).unwrap();
        let want = expected(|_, log| log == "Conversation log");
        assert_eq!(want.len(), 20);
        assert_eq!(shape(&samples), want);
        assert!(samples.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
        for s in &samples {
            assert_eq!(Words.encode(text(s)).len() as u32, s.input_tokens);
        }
    }

    #[test]
    fn filters_by_model_and_log_type() {
        let gpt4 = replay(SAMPLE, &params(0, 1, &[("burstgpt-model", "GPT-4")])).unwrap();
        assert_eq!(
            shape(&gpt4),
            expected(|m, log| m == "GPT-4" && log == "Conversation log")
        );
        assert_eq!(gpt4.len(), 7);
        let all = replay(SAMPLE, &params(0, 1, &[("burstgpt-log-type", "all")])).unwrap();
        assert_eq!(shape(&all), expected(|_, _| true));
        assert_eq!(all.len(), 27);
        let api_chat = replay(
            SAMPLE,
            &params(
                0,
                1,
                &[
                    ("burstgpt-log-type", "api log"),
                    ("burstgpt-model", "ChatGPT"),
                ],
            ),
        )
        .unwrap();
        assert_eq!(
            shape(&api_chat),
            expected(|m, log| m == "ChatGPT" && log == "API log")
        );
        let err = replay(SAMPLE, &params(0, 1, &[("burstgpt-model", "Claude")])).unwrap_err();
        assert_eq!(
            err,
            "trace.csv: no rows to replay (log type Conversation log, model Claude, response tokens > 0)"
        );
    }

    #[test]
    fn count_takes_the_first_rows_and_reads_no_further() {
        let first = replay(SAMPLE, &params(5, 1, &[])).unwrap();
        assert_eq!(
            shape(&first),
            expected(|_, log| log == "Conversation log")[..5]
        );
        let broken = format!("{SAMPLE}oops,ChatGPT,1,1,2,Conversation log\n");
        assert_eq!(replay(&broken, &params(5, 1, &[])).unwrap().len(), 5);
        assert!(replay(&broken, &params(0, 1, &[])).is_err());
    }

    #[test]
    fn a_row_keeps_its_prompt_whatever_the_count_or_order() {
        let all = replay(SAMPLE, &params(0, 3, &[])).unwrap();
        let few = replay(SAMPLE, &params(3, 3, &[])).unwrap();
        assert_eq!(flat(&few), flat(&all[..3]));
        let other_seed = replay(SAMPLE, &params(3, 4, &[])).unwrap();
        assert_ne!(text(&other_seed[0]), text(&all[0]));
        assert_eq!(shape(&other_seed), shape(&few));
        let shuffled = replay(SAMPLE, &params(0, 3, &[("burstgpt-shuffle", "true")])).unwrap();
        for s in flat(&shuffled) {
            assert!(flat(&all).contains(&s));
        }
    }

    #[test]
    fn shuffle_draws_rows_at_random_reproducibly() {
        let shuffle = [("burstgpt-shuffle", "true")];
        let a = replay(SAMPLE, &params(0, 7, &shuffle)).unwrap();
        let b = replay(SAMPLE, &params(0, 7, &shuffle)).unwrap();
        let c = replay(SAMPLE, &params(0, 8, &shuffle)).unwrap();
        assert_eq!(flat(&a), flat(&b));
        assert_ne!(shape(&a), shape(&c));
        let mut sorted = shape(&a);
        sorted.sort_by(|x, y| x.0.total_cmp(&y.0));
        assert_eq!(sorted, expected(|_, log| log == "Conversation log"));
        let five = replay(SAMPLE, &params(5, 7, &shuffle)).unwrap();
        assert_eq!(flat(&five), flat(&a[..5]));
        let ordered = replay(
            SAMPLE,
            &params(
                0,
                7,
                &[("burstgpt-shuffle", "true"), ("disable-shuffle", "true")],
            ),
        )
        .unwrap();
        assert_eq!(
            shape(&ordered),
            expected(|_, log| log == "Conversation log")
        );
        let err = replay(SAMPLE, &params(0, 7, &[("burstgpt-shuffle", "yes")])).unwrap_err();
        assert!(err.contains("--burstgpt-shuffle"), "{err}");
    }

    #[test]
    fn prompts_are_exact_even_when_tokens_merge() {
        let vocab = Vocab::new(PIECES.len() as u32, &[0]).unwrap();
        let samples = replay_with(
            SAMPLE,
            &params(0, 11, &[("burstgpt-log-type", "all")]),
            Merging,
            vocab,
        )
        .unwrap();
        assert_eq!(shape(&samples), expected(|_, _| true));
        for s in &samples {
            assert_eq!(Merging.encode(text(s)).len() as u32, s.input_tokens);
        }
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let header = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n";
        let cases = [
            (
                "5,ChatGPT,472,18,490,Conversation log\n\n7,ChatGPT,x1,18,490,Conversation log\n",
                "trace.csv:4: bad number \"x1\" in column \"Request tokens\"",
            ),
            (
                "5,ChatGPT,472,18,490,Conversation log\nsoon,ChatGPT,1,1,2,API log\n",
                "trace.csv:3: bad number \"soon\" in column \"Timestamp\"",
            ),
            (
                "5,ChatGPT,472,-1.5,490,Conversation log\n",
                "trace.csv:2: bad number \"-1.5\" in column \"Response tokens\"",
            ),
            (
                "5,ChatGPT,472,18,490\n",
                "trace.csv:2: missing column \"Log Type\" (the row has 5 fields)",
            ),
            (
                "5,ChatGPT,472\n",
                "trace.csv:2: missing column \"Response tokens\" (the row has 3 fields)",
            ),
            (
                "5,\"ChatGPT,472,18,490,Conversation log\n",
                "trace.csv:2: unterminated quoted field",
            ),
        ];
        for (rows, want) in cases {
            let err = replay(&format!("{header}{rows}"), &params(0, 1, &[])).unwrap_err();
            assert!(err.starts_with(want), "{err}");
        }
        let err = replay(
            "Timestamp,Model,Request tokens,Response tokens\n1,GPT-4,2,3\n",
            &params(0, 1, &[]),
        )
        .unwrap_err();
        assert!(
            err.starts_with("trace.csv:1: no \"Log Type\" column"),
            "{err}"
        );
        let err = replay("", &params(0, 1, &[])).unwrap_err();
        assert!(err.starts_with("trace.csv: empty file"), "{err}");
    }

    #[test]
    fn reads_quoted_crlf_files_with_a_bom_and_float_counts() {
        let text = "\u{feff}\"Timestamp\",\"Model\",\"Request tokens\",\"Response tokens\",\"Total tokens\",\"Log Type\"\r\n\
                    1.5,\"GPT-4\",\"12\",3.0,15,\"Conversation log\"\r\n\
                    2,GPT-4,4,0,4,Conversation log\r\n";
        let samples = replay(text, &params(0, 1, &[])).unwrap();
        assert_eq!(shape(&samples), [(1.5, 12, 3)]);
        let no_filters = "Timestamp,Request tokens,Response tokens\n9,2,1\n";
        let p = params(
            0,
            1,
            &[("burstgpt-log-type", "ALL"), ("burstgpt-model", "all")],
        );
        assert_eq!(shape(&replay(no_filters, &p).unwrap()), [(9.0, 2, 1)]);
    }

    /// Any file, in trace order or shuffled, filtered or not: samples or an error naming file
    /// and line.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::reader("trace.csv", &[SAMPLE.as_bytes()], |content| {
            let filtered = params(
                5,
                2,
                &[("burstgpt-model", "GPT-4"), ("disable-shuffle", "true")],
            );
            for p in [params(0, 1, &[]), filtered] {
                let vocab = Vocab::new(500, &[0]).unwrap();
                let mut replay = Replay::new(content, "trace.csv", &config(&p)?, Words, vocab)?;
                while !replay.next_batch(7)?.is_empty() {}
            }
            Ok(())
        });
    }
}
