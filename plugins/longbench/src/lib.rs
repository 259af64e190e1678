//! The `longbench` dataset: a local LongBench JSON Lines file (one record per line, with the
//! release's fields `input`, `context`, `answers`, `length`, `dataset`, `language`,
//! `all_classes` and `_id`), for long-context prefill benchmarks.
//!
//! The prompt is the `context`, a blank line (`"\n\n"`), then the `input` (the question); when
//! either is empty (summarisation tasks have no `input`) the other stands alone, so no dangling
//! separator is sent. LongBench's per-task instruction templates are not applied: the prompt is
//! the raw material, identical whatever model is benchmarked. Records repeating an `_id` (or,
//! without `_id`, a prompt already seen) are dropped. Records are drawn without replacement in a
//! seeded order (Fisher–Yates; file order with `disable-shuffle`) until `count` (0 = all);
//! option `cycle` repeats them when the file has fewer. `max-tokens` is `longbench-output-len`
//! (128 by default), or with `output-from-answers` the token count of the longest reference
//! answer. `max-input-len` skips prompts longer than that many tokens. `length`, `dataset`,
//! `language` and `all_classes` are not used.

use llmb_plugin_sdk::sampler;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Seek};

use llmb_plugin_sdk::dataset::{
    DatasetInfo, DatasetParams, Guest, GuestSource, Prompt, Sample, parse_option, tokenizer,
};
use serde::Deserialize;

use sampler::{
    Format, Plan, Record, Records, Sampler, SourceState, Span, flag, open_data_file, positive,
    read_span,
};

/// `max-tokens` when neither `longbench-output-len` nor `output-from-answers` says otherwise.
pub const DEFAULT_OUTPUT_LEN: u32 = 128;

/// What goes between the context and the question.
pub const SEPARATOR: &str = "\n\n";

/// The prompt of a record: the non-empty parts of `context` and `input`, in that order,
/// joined by [`SEPARATOR`].
pub fn prompt_text(context: &str, input: &str) -> String {
    match (context.is_empty(), input.is_empty()) {
        (false, false) => format!("{context}{SEPARATOR}{input}"),
        (false, true) => context.to_owned(),
        _ => input.to_owned(),
    }
}

/// `max-tokens` from the reference answers: the longest answer's token count, at least 1.
pub fn answers_output_len(answers: &[String], count: &dyn Fn(&str) -> u32) -> u32 {
    answers.iter().map(|a| count(a)).max().unwrap_or(0).max(1)
}

/// The options this reader takes, read once when the source opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Seed, count, shuffle and cycle, as every file dataset reads them.
    pub plan: Plan,
    /// `longbench-output-len`.
    pub output_len: u32,
    /// `output-from-answers`: size `max-tokens` to the longest reference answer instead.
    pub output_from_answers: bool,
    /// `max-input-len`: skip prompts longer than this many tokens.
    pub max_input_len: Option<u32>,
}

/// Reads `longbench-output-len`, `output-from-answers`, `max-input-len`, `disable-shuffle`
/// and `cycle`.
pub fn config(params: &DatasetParams) -> Result<Config, String> {
    let output_len = parse_option(params, "longbench-output-len", DEFAULT_OUTPUT_LEN)?;
    if output_len == 0 {
        return Err("--longbench-output-len must be at least 1".into());
    }
    Ok(Config {
        plan: Plan::from_params(params)?,
        output_len,
        output_from_answers: flag(params, "output-from-answers")?,
        max_input_len: positive(params, "max-input-len")?,
    })
}

/// The lines of a JSON Lines file, blank lines skipped, with where each lies.
pub struct JsonLines<R> {
    reader: R,
    name: String,
    pos: u64,
    line: u64,
}

impl<R: BufRead> JsonLines<R> {
    /// `name` is what errors call the file.
    pub fn new(reader: R, name: &str) -> Self {
        Self {
            reader,
            name: name.to_owned(),
            pos: 0,
            line: 0,
        }
    }

    /// A JSON array is one huge line: refuse it, when the first buffer shows one, before
    /// reading it whole could exhaust the plugin's memory.
    fn refuse_array(&mut self) -> Result<(), String> {
        let buf = self
            .reader
            .fill_buf()
            .map_err(|e| format!("{}:1: cannot read: {e}", self.name))?;
        let first = buf
            .strip_prefix(b"\xEF\xBB\xBF")
            .unwrap_or(buf)
            .iter()
            .find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            return Err(format!(
                "{}: a JSON array; the longbench dataset reads JSON Lines (one object per line)",
                self.name
            ));
        }
        Ok(())
    }

    /// The next non-blank line, trimmed (a UTF-8 byte order mark on the first line included).
    pub fn next_line(&mut self) -> Result<Option<Record>, String> {
        if self.pos == 0 {
            self.refuse_array()?;
        }
        loop {
            let mut bytes = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut bytes)
                .map_err(|e| format!("{}:{}: cannot read: {e}", self.name, self.line + 1))?;
            if n == 0 {
                return Ok(None);
            }
            let offset = self.pos;
            self.pos += n as u64;
            self.line += 1;
            let mut start = 0;
            if self.line == 1 && bytes.starts_with(b"\xEF\xBB\xBF") {
                start = 3;
            }
            while start < bytes.len() && bytes[start].is_ascii_whitespace() {
                start += 1;
            }
            let mut end = bytes.len();
            while end > start && bytes[end - 1].is_ascii_whitespace() {
                end -= 1;
            }
            if start == end {
                continue;
            }
            bytes.truncate(end);
            bytes.drain(..start);
            return Ok(Some(Record {
                span: Span {
                    element: None,
                    line: self.line,
                    offset: offset + start as u64,
                    len: bytes.len() as u64,
                },
                bytes,
            }));
        }
    }
}

impl<R: BufRead + Seek> Records for JsonLines<R> {
    fn next_record(&mut self) -> Result<Option<Record>, String> {
        self.next_line()
    }

    fn reread(&mut self, span: &Span) -> Result<Record, String> {
        let record = read_span(&mut self.reader, span, &self.name)?;
        self.reader
            .seek(std::io::SeekFrom::Start(self.pos))
            .map_err(|e| format!("{}:{}: cannot seek: {e}", self.name, self.line))?;
        Ok(record)
    }
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    input: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    context: Option<Cow<'a, str>>,
    #[serde(default)]
    answers: Option<Vec<String>>,
    #[serde(borrow, default, rename = "_id")]
    id: Option<Cow<'a, str>>,
}

impl Entry<'_> {
    fn prompt(&self) -> String {
        prompt_text(
            self.context.as_deref().unwrap_or_default(),
            self.input.as_deref().unwrap_or_default(),
        )
    }
}

/// The LongBench reading of a record: [`Format`] for the shared sampler, remembering what it
/// admitted so repeats are dropped.
pub struct LongBench {
    name: String,
    config: Config,
    seen_ids: HashSet<String>,
    /// Prompts of records without `_id`, by a 64-bit hash, so memory stays small.
    seen_prompts: HashSet<u64>,
}

impl LongBench {
    /// `name` is what errors call the file.
    pub fn new(name: &str, config: Config) -> Self {
        Self {
            name: name.to_owned(),
            config,
            seen_ids: HashSet::new(),
            seen_prompts: HashSet::new(),
        }
    }

    fn entry<'a>(&self, record: &'a Record) -> Result<Entry<'a>, String> {
        if record.bytes.first() != Some(&b'{') {
            return Err(record.error(
                &self.name,
                "expected a JSON object with \"context\" and \"input\"",
            ));
        }
        let entry: Entry<'a> = serde_json::from_slice(&record.bytes)
            .map_err(|e: serde_json::Error| record.json_error(&self.name, &e))?;
        if entry.context.is_none() && entry.input.is_none() {
            return Err(record.error(&self.name, "no \"context\" or \"input\" string"));
        }
        if self.config.output_from_answers && entry.answers.as_ref().is_none_or(Vec::is_empty) {
            return Err(record.error(
                &self.name,
                "--output-from-answers needs a non-empty \"answers\" list",
            ));
        }
        Ok(entry)
    }
}

impl Format for LongBench {
    fn admit(&mut self, record: &Record) -> Result<bool, String> {
        let entry = self.entry(record)?;
        Ok(match entry.id {
            Some(id) => self.seen_ids.insert(id.into_owned()),
            None => {
                let mut hasher = DefaultHasher::new();
                entry.prompt().hash(&mut hasher);
                self.seen_prompts.insert(hasher.finish())
            }
        })
    }

    fn measure(
        &self,
        record: &Record,
        count: &dyn Fn(&str) -> u32,
    ) -> Result<Option<Sample>, String> {
        let entry = self.entry(record)?;
        let prompt = entry.prompt();
        let input_tokens = count(&prompt);
        if self
            .config
            .max_input_len
            .is_some_and(|max| input_tokens > max)
        {
            return Ok(None);
        }
        let output_tokens = match &entry.answers {
            Some(answers) if self.config.output_from_answers => answers_output_len(answers, count),
            _ => self.config.output_len,
        };
        Ok(Some(Sample {
            prompt: Prompt::Text(prompt),
            input_tokens,
            output_tokens,
            timestamp: None,
        }))
    }

    fn prompt(&self, record: &Record) -> Result<Prompt, String> {
        Ok(Prompt::Text(self.entry(record)?.prompt()))
    }

    fn nothing_usable(&self, measured: u64) -> String {
        match self.config.max_input_len {
            Some(max) if measured > 0 => format!(
                "{}: all {measured} prompts are longer than --max-input-len {max} tokens",
                self.name
            ),
            _ => format!("{}: no records in the file", self.name),
        }
    }
}

/// Opens a LongBench sampler over any seekable reader: the file in the plugin, a buffer in
/// tests.
pub fn sampler<R: BufRead + Seek>(
    reader: R,
    name: &str,
    config: Config,
) -> Result<Sampler<JsonLines<R>, LongBench>, String> {
    Sampler::new(
        JsonLines::new(reader, name),
        LongBench::new(name, config),
        config.plan,
    )
}

/// The plugin's exports.
pub struct LongBenchDataset;

type FileRecords = JsonLines<BufReader<File>>;

/// One `source` resource: the sampler over the user's file.
pub struct LongBenchSource {
    state: SourceState<FileRecords, LongBench>,
}

fn open(params: &DatasetParams) -> Result<Sampler<FileRecords, LongBench>, String> {
    let config = config(params)?;
    let (reader, shown) = open_data_file(
        params,
        "the longbench dataset needs --dataset-path FILE (a LongBench .jsonl file)",
    )?;
    sampler(reader, &shown, config)
}

impl Guest for LongBenchDataset {
    type Source = LongBenchSource;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "longbench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "LongBench JSONL from --dataset-path: context + question as the prompt, deduplicated by _id, seeded sampling without replacement; --longbench-output-len, output-from-answers, --max-input-len, --disable-shuffle, cycle".into(),
        }
    }
}

impl GuestSource for LongBenchSource {
    fn new(params: DatasetParams) -> Self {
        Self {
            state: SourceState::new(open(&params)),
        }
    }

    fn next_batch(&self, max: u32) -> Result<Vec<Sample>, String> {
        self.state.next_batch(max, &tokenizer::count)
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_dataset!(LongBenchDataset);

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    const SAMPLE: &str = include_str!("../../../datasets/longbench-sample.jsonl");
    const NAME: &str = "longbench-sample.jsonl";

    use llmb_plugin_sdk::testing::words;

    use llmb_plugin_sdk::testing::Trickle;

    fn cfg(seed: u64, count: u64, shuffle: bool, cycle: bool) -> Config {
        Config {
            plan: Plan {
                seed,
                count,
                shuffle,
                cycle,
            },
            output_len: DEFAULT_OUTPUT_LEN,
            output_from_answers: false,
            max_input_len: None,
        }
    }

    fn run_with_step(text: &str, config: Config, step: usize) -> Result<Vec<Sample>, String> {
        let trickle = Trickle::new(text, step);
        let mut sampler = sampler(BufReader::with_capacity(step, trickle), NAME, config)?;
        let mut out = Vec::new();
        loop {
            let batch = sampler.next_batch(2, &words)?;
            if batch.is_empty() {
                return Ok(out);
            }
            out.extend(batch);
        }
    }

    fn run(text: &str, config: Config) -> Result<Vec<Sample>, String> {
        run_with_step(text, config, 64)
    }

    fn text(sample: &Sample) -> &str {
        match &sample.prompt {
            Prompt::Text(t) => t,
            other => panic!("expected a text prompt, got {other:?}"),
        }
    }

    fn inputs(samples: &[Sample]) -> Vec<u32> {
        samples.iter().map(|s| s.input_tokens).collect()
    }

    fn outputs(samples: &[Sample]) -> Vec<u32> {
        samples.iter().map(|s| s.output_tokens).collect()
    }

    fn texts(samples: &[Sample]) -> Vec<String> {
        samples.iter().map(|s| text(s).to_owned()).collect()
    }

    #[test]
    fn prompts_join_context_and_input() {
        assert_eq!(prompt_text("ctx", "q?"), "ctx\n\nq?");
        assert_eq!(prompt_text("ctx", ""), "ctx");
        assert_eq!(prompt_text("", "q?"), "q?");
        assert_eq!(prompt_text("", ""), "");
    }

    #[test]
    fn the_sample_file_gives_each_record_once_in_file_order() {
        let samples = run(SAMPLE, cfg(0, 0, false, false)).unwrap();
        assert_eq!(inputs(&samples), [47, 46, 47, 38, 39, 2, 93]);
        assert!(outputs(&samples).iter().all(|&n| n == DEFAULT_OUTPUT_LEN));
        assert!(text(&samples[0]).starts_with("Passage 1:\nThe Orca paper"));
        assert!(text(&samples[0]).ends_with(
            "every year or two.\n\nWhich city hosted the first conference where the continuous batching paper was presented?"
        ));
        assert!(text(&samples[2]).starts_with("The committee reviewed"));
        assert!(text(&samples[2]).ends_with("retiring the oldest racks first."));
        assert!(samples.iter().all(|s| s.timestamp.is_none()));
    }

    #[test]
    fn records_without_id_are_deduplicated_by_prompt() {
        let data = concat!(
            "{\"context\": \"a b\", \"input\": \"c\"}\n",
            "\n",
            "   \n",
            "{\"context\": \"a b\", \"input\": \"c\", \"answers\": [\"x\"]}\n",
            "{\"context\": \"a b\", \"input\": \"d\"}\n",
            "{\"context\": \"a b\", \"input\": \"c\", \"_id\": \"k\"}\n",
            "{\"context\": \"other\", \"input\": \"text\", \"_id\": \"k\"}\n",
        );
        let samples = run(data, cfg(0, 0, false, false)).unwrap();
        assert_eq!(texts(&samples), ["a b\n\nc", "a b\n\nd", "a b\n\nc"]);
    }

    #[test]
    fn output_lengths_come_from_the_option_or_the_answers() {
        let mut config = cfg(0, 0, false, false);
        config.output_len = 64;
        assert!(
            outputs(&run(SAMPLE, config).unwrap())
                .iter()
                .all(|&n| n == 64)
        );
        config.output_from_answers = true;
        assert_eq!(
            outputs(&run(SAMPLE, config).unwrap()),
            [1, 2, 24, 1, 1, 1, 23]
        );
        assert_eq!(answers_output_len(&["".into()], &words), 1);
        let err = run(
            "{\"context\": \"c\", \"input\": \"i\", \"answers\": [\"a\"]}\n{\"context\": \"c\", \"input\": \"j\", \"answers\": []}\n",
            config,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "longbench-sample.jsonl:2: --output-from-answers needs a non-empty \"answers\" list"
        );
    }

    #[test]
    fn max_input_len_skips_long_prompts() {
        let mut config = cfg(0, 0, false, false);
        config.max_input_len = Some(46);
        assert_eq!(inputs(&run(SAMPLE, config).unwrap()), [46, 38, 39, 2]);
        config.max_input_len = Some(1);
        assert_eq!(
            run(SAMPLE, config).unwrap_err(),
            "longbench-sample.jsonl: all 7 prompts are longer than --max-input-len 1 tokens"
        );
    }

    #[test]
    fn sampling_is_seeded_and_without_replacement() {
        let a = texts(&run(SAMPLE, cfg(21, 0, true, false)).unwrap());
        assert_eq!(a, texts(&run(SAMPLE, cfg(21, 0, true, false)).unwrap()));
        assert_ne!(a, texts(&run(SAMPLE, cfg(22, 0, true, false)).unwrap()));
        let mut unique = a.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 7);
        let three = texts(&run(SAMPLE, cfg(21, 3, true, false)).unwrap());
        assert_eq!(three, a[..3]);
    }

    #[test]
    fn more_than_the_file_holds_needs_cycle() {
        assert_eq!(run(SAMPLE, cfg(5, 10, true, false)).unwrap().len(), 7);
        let cycled = run(SAMPLE, cfg(5, 10, true, true)).unwrap();
        let t = texts(&cycled);
        assert_eq!(t.len(), 10);
        assert_eq!(t[7..], t[..3]);
        assert_eq!(inputs(&cycled)[7..], inputs(&cycled)[..3]);
    }

    #[test]
    fn reading_is_the_same_at_any_read_size() {
        let whole = texts(&run_with_step(SAMPLE, cfg(9, 0, true, false), 1 << 16).unwrap());
        for step in [1, 3, 17] {
            let got = texts(&run_with_step(SAMPLE, cfg(9, 0, true, false), step).unwrap());
            assert_eq!(got, whole, "step {step}");
        }
    }

    #[test]
    fn lines_keep_their_numbers_and_offsets() {
        let data = "\u{feff}{\"input\": \"a\"}\r\n\n  {\"input\": \"b\"}  \n{\"input\": \"c\"}";
        let mut lines = JsonLines::new(Cursor::new(data.as_bytes().to_vec()), NAME);
        let mut got = Vec::new();
        while let Some(record) = lines.next_line().unwrap() {
            let start = record.span.offset as usize;
            assert_eq!(
                &data.as_bytes()[start..start + record.span.len as usize],
                record.bytes.as_slice()
            );
            got.push(record.span.line);
        }
        assert_eq!(got, [1, 3, 4]);
    }

    fn error(data: &str) -> String {
        run(data, cfg(0, 0, true, false)).unwrap_err()
    }

    #[test]
    fn malformed_lines_are_named_by_file_and_line() {
        assert_eq!(
            error("{\"input\": \"a\"}\n\n{\"input\": \"b\",}\n"),
            "longbench-sample.jsonl:3: column 15: trailing comma"
        );
        assert_eq!(
            error("{\"input\": \"a\"}\n[1, 2]\n"),
            "longbench-sample.jsonl:2: expected a JSON object with \"context\" and \"input\""
        );
        assert_eq!(
            error("{\"_id\": \"x\", \"answers\": []}\n"),
            "longbench-sample.jsonl:1: no \"context\" or \"input\" string"
        );
        assert_eq!(
            error("{\"input\": 5}\n"),
            "longbench-sample.jsonl:1: column 11: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            error("{\"input\": \"a\", \"answers\": \"yes\"}\n"),
            "longbench-sample.jsonl:1: column 31: invalid type: string \"yes\", expected a sequence"
        );
        assert_eq!(error(""), "longbench-sample.jsonl: no records in the file");
        assert_eq!(
            error(" [{\"input\": \"a\"}]"),
            "longbench-sample.jsonl: a JSON array; the longbench dataset reads JSON Lines (one object per line)"
        );
    }

    fn params(options: &[(&str, &str)]) -> DatasetParams {
        llmb_plugin_sdk::testing::dataset_params(1, 4, options, &["longbench.jsonl"])
    }

    #[test]
    fn options_are_read_and_checked() {
        assert_eq!(super::config(&params(&[])).unwrap(), cfg(1, 4, true, false));
        assert_eq!(
            super::config(&params(&[
                ("longbench-output-len", "32"),
                ("output-from-answers", "true"),
                ("max-input-len", "8000"),
                ("disable-shuffle", "true"),
                ("cycle", "true"),
            ]))
            .unwrap(),
            Config {
                plan: Plan {
                    seed: 1,
                    count: 4,
                    shuffle: false,
                    cycle: true
                },
                output_len: 32,
                output_from_answers: true,
                max_input_len: Some(8000),
            }
        );
        assert_eq!(
            super::config(&params(&[("longbench-output-len", "0")])).unwrap_err(),
            "--longbench-output-len must be at least 1"
        );
        assert_eq!(
            super::config(&params(&[("max-input-len", "0")])).unwrap_err(),
            "--max-input-len must be at least 1"
        );
        assert_eq!(
            super::config(&params(&[("output-from-answers", "sometimes")])).unwrap_err(),
            "invalid value \"sometimes\" for --output-from-answers (expected true or false)"
        );
    }

    /// Any file, shuffled or streamed, cycled or not: samples or an error naming file and line.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::reader(NAME, &[SAMPLE.as_bytes()], |content| {
            for (count, shuffle, cycle) in [(0, false, false), (5, true, true)] {
                let mut config = cfg(1, count, shuffle, cycle);
                config.output_from_answers = shuffle;
                config.max_input_len = shuffle.then_some(50);
                let trickle = Trickle::from_bytes(content, 7);
                let mut sampler = sampler(BufReader::with_capacity(7, trickle), NAME, config)?;
                while !sampler.next_batch(3, &words)?.is_empty() {}
            }
            Ok(())
        });
    }
}
