//! The `sharegpt` dataset, with the semantics of vLLM's `ShareGPTDataset`
//! (`vllm/benchmarks/datasets.py`), so results compare with `vllm bench serve --dataset-name
//! sharegpt`.
//!
//! The file is a JSON array of `{"id", "conversations": [{"from", "value"}, ...]}`. Entries
//! with fewer than two turns are dropped; the rest are shuffled with the seed (unless
//! `disable-shuffle`) and walked in order: the prompt is the first turn's value, the reference
//! completion the second's. The prompt length is the host tokenizer's count; the output length
//! is `sharegpt-output-len` when given, else the completion's count. vLLM's
//! `is_valid_sequence` then drops the pair when the prompt is under 4 tokens, the output under
//! 4 (only when the output length was not fixed), the prompt over 1024 tokens or both together
//! over 2048. Walking stops at `count` usable samples (0 = all); with fewer, option `cycle`
//! repeats them (vLLM oversamples at random instead), otherwise the host reports the shortfall.
//!
//! The order cannot match vLLM's (Python's Mersenne Twister shuffle); the host tokenizer counts
//! without special tokens, where vLLM's `tokenizer(prompt).input_ids` adds BOS for tokenizers
//! that use one.

use llmb_plugin_sdk::json_array;
use llmb_plugin_sdk::sampler;

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::marker::PhantomData;

use llmb_plugin_sdk::dataset::{
    DatasetInfo, DatasetParams, Guest, GuestSource, Prompt, Sample, tokenizer,
};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};

use json_array::ArrayElements;
use sampler::{Format, Plan, Record, Records, Sampler, SourceState, open_data_file, positive};

/// vLLM's `min_len`: shorter prompts (and outputs, unless fixed) are dropped.
pub const MIN_LEN: u32 = 4;
/// vLLM's `max_prompt_len`.
pub const MAX_PROMPT_LEN: u32 = 1024;
/// vLLM's `max_total_len`: prompt plus output.
pub const MAX_TOTAL_LEN: u32 = 2048;

/// vLLM's `is_valid_sequence` with its default bounds; `skip_min_output_len_check` is set when
/// the output length was fixed by `sharegpt-output-len`, which lifts only the minimum on the
/// output (the prompt rules and the total still apply, as in vLLM).
pub fn is_valid_sequence(
    prompt_len: u32,
    output_len: u32,
    skip_min_output_len_check: bool,
) -> bool {
    let prompt_too_short = prompt_len < MIN_LEN;
    let output_too_short = !skip_min_output_len_check && output_len < MIN_LEN;
    let prompt_too_long = prompt_len > MAX_PROMPT_LEN;
    let combined_too_long =
        u64::from(prompt_len) + u64::from(output_len) > u64::from(MAX_TOTAL_LEN);
    !(prompt_too_short || output_too_short || prompt_too_long || combined_too_long)
}

/// `(prompt_len, output_len)` of a prompt/completion pair as vLLM computes them, or `None` when
/// [`is_valid_sequence`] drops it. The completion is not tokenized when the output is fixed.
pub fn measure_pair(
    prompt: &str,
    completion: &str,
    fixed_output_len: Option<u32>,
    count: &dyn Fn(&str) -> u32,
) -> Option<(u32, u32)> {
    let prompt_len = count(prompt);
    let output_len = fixed_output_len.unwrap_or_else(|| count(completion));
    is_valid_sequence(prompt_len, output_len, fixed_output_len.is_some())
        .then_some((prompt_len, output_len))
}

/// The options this reader takes, read once when the source opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Seed, count, shuffle and cycle, as every file dataset reads them.
    pub plan: Plan,
    /// `sharegpt-output-len`: a fixed output length instead of the completion's.
    pub output_len: Option<u32>,
}

/// Reads `sharegpt-output-len`, `disable-shuffle` and `cycle`.
pub fn config(params: &DatasetParams) -> Result<Config, String> {
    Ok(Config {
        plan: Plan::from_params(params)?,
        output_len: positive(params, "sharegpt-output-len")?,
    })
}

/// One element as far as vLLM reads it.
#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    conversations: Option<Head<'a>>,
}

#[derive(Deserialize)]
struct Turn<'a> {
    #[serde(borrow)]
    value: Cow<'a, str>,
}

/// The first two turns' values and the number of turns: all vLLM reads of a conversation, so
/// later turns are skipped without being copied.
struct Head<'a> {
    values: Vec<Cow<'a, str>>,
    turns: usize,
}

impl<'de: 'a, 'a> Deserialize<'de> for Head<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeadVisitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for HeadVisitor<'a> {
            type Value = Head<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of {\"from\", \"value\"} turns")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Head<'a>, A::Error> {
                let mut values = Vec::with_capacity(2);
                while values.len() < 2 {
                    match seq.next_element::<Turn<'a>>()? {
                        Some(turn) => values.push(turn.value),
                        None => break,
                    }
                }
                let mut turns = values.len();
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    turns += 1;
                }
                Ok(Head { values, turns })
            }
        }

        deserializer.deserialize_seq(HeadVisitor(PhantomData))
    }
}

/// A prompt and its reference completion, borrowed from the element when unescaped.
type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The ShareGPT reading of a record: [`Format`] for the shared sampler.
pub struct ShareGpt {
    name: String,
    output_len: Option<u32>,
}

impl ShareGpt {
    /// `name` is what errors call the file.
    pub fn new(name: &str, output_len: Option<u32>) -> Self {
        Self {
            name: name.to_owned(),
            output_len,
        }
    }

    /// The prompt and completion of an entry with at least two turns.
    fn pair<'a>(&self, record: &'a Record) -> Result<Option<Pair<'a>>, String> {
        if record.bytes.first() != Some(&b'{') {
            return Err(record.error(
                &self.name,
                "expected an object with a \"conversations\" list",
            ));
        }
        let entry: Entry<'a> = serde_json::from_slice(&record.bytes)
            .map_err(|e: serde_json::Error| record.json_error(&self.name, &e))?;
        let Some(Head { values, turns }) = entry.conversations else {
            return Ok(None);
        };
        if turns < 2 {
            return Ok(None);
        }
        let mut values = values.into_iter();
        match (values.next(), values.next()) {
            (Some(prompt), Some(completion)) => Ok(Some((prompt, completion))),
            _ => Ok(None),
        }
    }
}

impl Format for ShareGpt {
    fn admit(&mut self, record: &Record) -> Result<bool, String> {
        Ok(self.pair(record)?.is_some())
    }

    fn measure(
        &self,
        record: &Record,
        count: &dyn Fn(&str) -> u32,
    ) -> Result<Option<Sample>, String> {
        let Some((prompt, completion)) = self.pair(record)? else {
            return Ok(None);
        };
        Ok(
            measure_pair(&prompt, &completion, self.output_len, count).map(
                |(input_tokens, output_tokens)| Sample {
                    prompt: Prompt::Text(prompt.into_owned()),
                    input_tokens,
                    output_tokens,
                    timestamp: None,
                },
            ),
        )
    }

    fn prompt(&self, record: &Record) -> Result<Prompt, String> {
        let (prompt, _) = self
            .pair(record)?
            .ok_or_else(|| record.error(&self.name, "the entry changed since it was read"))?;
        Ok(Prompt::Text(prompt.into_owned()))
    }

    fn nothing_usable(&self, measured: u64) -> String {
        if measured == 0 {
            return format!(
                "{}: no entry has a \"conversations\" list of at least two turns",
                self.name
            );
        }
        let output = if self.output_len.is_some() {
            ""
        } else {
            ", a reply of at least 4"
        };
        format!(
            "{}: none of the {measured} conversations passes vLLM's length rules (a prompt of 4 to 1024 tokens{output}, at most 2048 together)",
            self.name
        )
    }
}

/// Opens a ShareGPT sampler over any seekable reader: the file in the plugin, a buffer in tests.
pub fn sampler<R: Records>(
    records: R,
    name: &str,
    config: Config,
) -> Result<Sampler<R, ShareGpt>, String> {
    Sampler::new(records, ShareGpt::new(name, config.output_len), config.plan)
}

/// The plugin's exports.
pub struct ShareGptDataset;

type FileSampler = Sampler<ArrayElements<BufReader<File>>, ShareGpt>;

/// One `source` resource: the sampler over the user's file.
pub struct ShareGptSource {
    state: SourceState<ArrayElements<BufReader<File>>, ShareGpt>,
}

fn open(params: &DatasetParams) -> Result<FileSampler, String> {
    let config = config(params)?;
    let (reader, shown) = open_data_file(
        params,
        "the sharegpt dataset needs --dataset-path FILE (a ShareGPT JSON array)",
    )?;
    sampler(ArrayElements::new(reader, &shown), &shown, config)
}

impl Guest for ShareGptDataset {
    type Source = ShareGptSource;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "sharegpt".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "ShareGPT JSON from --dataset-path, as vLLM reads it: first turn as the prompt, second as the reference reply, vLLM's length filters; --sharegpt-output-len, --disable-shuffle, cycle".into(),
        }
    }
}

impl GuestSource for ShareGptSource {
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
llmb_plugin_sdk::export_dataset!(ShareGptDataset);

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use serde_json::Value;

    use super::*;

    const SAMPLE: &str = include_str!("../../../datasets/sharegpt-sample.json");
    const NAME: &str = "sharegpt-sample.json";

    use llmb_plugin_sdk::testing::words;

    use llmb_plugin_sdk::testing::Trickle;

    fn elements(text: &str, step: usize) -> ArrayElements<BufReader<Trickle>> {
        let trickle = Trickle::new(text, step);
        ArrayElements::new(BufReader::with_capacity(step, trickle), NAME)
    }

    fn config(seed: u64, count: u64, shuffle: bool, cycle: bool) -> Config {
        Config {
            plan: Plan {
                seed,
                count,
                shuffle,
                cycle,
            },
            output_len: None,
        }
    }

    fn run(text: &str, config: Config) -> Result<Vec<Sample>, String> {
        let mut sampler = sampler(elements(text, 5), NAME, config)?;
        let mut out = Vec::new();
        loop {
            let batch = sampler.next_batch(3, &words)?;
            if batch.is_empty() {
                return Ok(out);
            }
            out.extend(batch);
        }
    }

    fn text(sample: &Sample) -> &str {
        match &sample.prompt {
            Prompt::Text(t) => t,
            other => panic!("expected a text prompt, got {other:?}"),
        }
    }

    fn first_words(samples: &[Sample]) -> Vec<String> {
        samples
            .iter()
            .map(|s| {
                text(s)
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    fn pair(prompt: &str, completion: &str) -> Value {
        serde_json::json!({"conversations": [
            {"from": "human", "value": prompt},
            {"from": "gpt", "value": completion},
        ]})
    }

    fn n_words(n: usize) -> String {
        vec!["w"; n].join(" ")
    }

    #[test]
    fn is_valid_sequence_applies_each_vllm_rule() {
        assert!(is_valid_sequence(4, 4, false));
        assert!(!is_valid_sequence(3, 100, false), "prompt under min_len");
        assert!(!is_valid_sequence(100, 3, false), "output under min_len");
        assert!(
            !is_valid_sequence(1025, 4, false),
            "prompt over max_prompt_len"
        );
        assert!(is_valid_sequence(1024, 1024, false));
        assert!(
            !is_valid_sequence(1024, 1025, false),
            "total over max_total_len"
        );
        // A fixed output length lifts only the minimum on the output.
        assert!(is_valid_sequence(4, 1, true));
        assert!(!is_valid_sequence(3, 100, true));
        assert!(!is_valid_sequence(1025, 4, true));
        assert!(!is_valid_sequence(1024, 1025, true));
        assert!(!is_valid_sequence(u32::MAX, u32::MAX, true));
    }

    #[test]
    fn a_fixed_output_length_skips_tokenizing_the_completion() {
        let count = |t: &str| {
            assert_ne!(t, "the reply", "the completion must not be tokenized");
            words(t)
        };
        assert_eq!(
            measure_pair("one two three four", "the reply", Some(7), &count),
            Some((4, 7))
        );
        assert_eq!(
            measure_pair("one two three four", "a b c", None, &words),
            None
        );
        assert_eq!(
            measure_pair("one two three four", "a b c d", None, &words),
            Some((4, 4))
        );
    }

    #[test]
    fn the_sample_file_yields_its_usable_pairs_in_file_order() {
        let samples = run(SAMPLE, config(0, 0, false, false)).unwrap();
        assert_eq!(
            first_words(&samples),
            [
                "What does",
                "Explain continuous",
                "You are",
                "Welcome back",
                "What is",
                "Parse this",
                "Résumé the",
            ]
        );
        let first = &samples[0];
        assert_eq!(
            text(first),
            "What does time to first token measure in a serving benchmark?"
        );
        assert_eq!(first.input_tokens, 11);
        assert_eq!(first.output_tokens, 21);
        assert_eq!(first.timestamp, None);
        let escapes = &samples[5];
        assert_eq!(
            text(escapes),
            "Parse this JSON: {\"sizes\": [1, 2, 4], \"name\": \"a \\\"quoted\\\" value\"}\nand explain it."
        );
    }

    #[test]
    fn a_fixed_output_length_keeps_short_replies_but_not_short_prompts() {
        let mut cfg = config(0, 0, false, false);
        cfg.output_len = Some(16);
        let samples = run(SAMPLE, cfg).unwrap();
        assert_eq!(samples.len(), 8);
        assert!(samples.iter().all(|s| s.output_tokens == 16));
        assert!(
            samples
                .iter()
                .any(|s| text(s).starts_with("Can you confirm"))
        );
        assert!(!samples.iter().any(|s| text(s) == "Hi there"));
    }

    #[test]
    fn prompt_and_total_limits_drop_long_pairs() {
        let data = Value::Array(vec![
            pair(&n_words(1025), &n_words(10)),
            pair(&n_words(1024), &n_words(1024)),
            pair(&n_words(1024), &n_words(1025)),
            pair(&n_words(3), &n_words(10)),
            pair(&n_words(10), &n_words(3)),
        ])
        .to_string();
        let samples = run(&data, config(0, 0, false, false)).unwrap();
        let lens: Vec<(u32, u32)> = samples
            .iter()
            .map(|s| (s.input_tokens, s.output_tokens))
            .collect();
        assert_eq!(lens, [(1024, 1024)]);

        let mut fixed = config(0, 0, false, false);
        fixed.output_len = Some(1025);
        let lens: Vec<(u32, u32)> = run(&data, fixed)
            .unwrap()
            .iter()
            .map(|s| (s.input_tokens, s.output_tokens))
            .collect();
        assert_eq!(lens, [(10, 1025)]);
        fixed.output_len = Some(2039);
        let err = run(&data, fixed).unwrap_err();
        assert!(err.contains("none of the 5 conversations passes"), "{err}");
        fixed.output_len = Some(1);
        let lens: Vec<(u32, u32)> = run(&data, fixed)
            .unwrap()
            .iter()
            .map(|s| (s.input_tokens, s.output_tokens))
            .collect();
        assert_eq!(lens, [(1024, 1), (1024, 1), (10, 1)]);
    }

    #[test]
    fn entries_need_a_conversations_list_of_two_turns() {
        let data = r#"[
            {"id": "none"},
            {"id": "null", "conversations": null},
            {"id": "empty", "conversations": []},
            {"id": "one", "conversations": [{"from": "human", "value": "a b c d"}]},
            {"id": "two", "conversations": [{"from": "gpt", "value": "a b c d"}, {"value": "e f g h"}]}
        ]"#;
        let samples = run(data, config(0, 0, false, false)).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(text(&samples[0]), "a b c d");
        assert_eq!(samples[0].output_tokens, 4);
        let err = run("[{\"conversations\": []}]", config(0, 0, true, false)).unwrap_err();
        assert_eq!(
            err,
            "sharegpt-sample.json: no entry has a \"conversations\" list of at least two turns"
        );
    }

    #[test]
    fn the_seed_fixes_the_order() {
        let a = first_words(&run(SAMPLE, config(7, 0, true, false)).unwrap());
        let b = first_words(&run(SAMPLE, config(7, 0, true, false)).unwrap());
        let c = first_words(&run(SAMPLE, config(8, 0, true, false)).unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut sorted_a = a.clone();
        let mut plain = first_words(&run(SAMPLE, config(7, 0, false, false)).unwrap());
        sorted_a.sort();
        plain.sort();
        assert_eq!(sorted_a, plain, "a shuffle draws the same usable pairs");
        let three = first_words(&run(SAMPLE, config(7, 3, true, false)).unwrap());
        assert_eq!(three, a[..3]);
    }

    #[test]
    fn count_takes_the_first_usable_and_an_unshuffled_run_stops_reading() {
        let data = format!(
            "[{}, {}, {{oops}}]",
            pair("a b c d", "e f g h"),
            pair("i j k l", "m n o p")
        );
        let samples = run(&data, config(0, 2, false, false)).unwrap();
        assert_eq!(first_words(&samples), ["a b", "i j"]);
        let err = run(&data, config(0, 2, true, false)).unwrap_err();
        assert!(err.contains("array element 3"), "{err}");
    }

    #[test]
    fn cycle_repeats_the_usable_samples_in_draw_order() {
        let once = run(SAMPLE, config(3, 0, true, false)).unwrap();
        assert_eq!(run(SAMPLE, config(3, 20, true, false)).unwrap().len(), 7);
        let cycled = run(SAMPLE, config(3, 20, true, true)).unwrap();
        assert_eq!(cycled.len(), 20);
        for (i, s) in cycled.iter().enumerate() {
            let original = &once[i % once.len()];
            assert_eq!(text(s), text(original));
            assert_eq!(s.input_tokens, original.input_tokens);
            assert_eq!(s.output_tokens, original.output_tokens);
        }
        let unshuffled = run(SAMPLE, config(3, 9, false, true)).unwrap();
        assert_eq!(text(&unshuffled[7]), text(&unshuffled[0]));
        assert_eq!(text(&unshuffled[8]), text(&unshuffled[1]));
    }

    #[test]
    fn the_splitter_survives_tiny_reads() {
        let data = "\u{feff} [ {\"a\": \"]}\\\"[{\", \"b\": [1, {\"c\": \"\\\\\"}]},\n\t\"s\\\"]\", 12.5e3 , true,null,[[]],{} ,\r\n-7 ]\n ";
        let whole: Vec<Value> = serde_json::from_str(data.trim_start_matches('\u{feff}')).unwrap();
        for step in [1, 2, 3, 7, 64] {
            let mut split = elements(data, step);
            let mut got = Vec::new();
            while let Some(record) = split.next_element().unwrap() {
                let start = record.span.offset as usize;
                assert_eq!(
                    &data.as_bytes()[start..start + record.span.len as usize],
                    record.bytes.as_slice()
                );
                assert_eq!(record.span.element, Some(got.len() as u64 + 1));
                got.push(serde_json::from_slice::<Value>(&record.bytes).unwrap());
            }
            assert_eq!(got, whole, "step {step}");
            assert!(split.next_element().unwrap().is_none());
        }
    }

    #[test]
    fn the_sample_file_splits_the_same_at_any_read_size() {
        let whole: Vec<Value> = serde_json::from_str(SAMPLE).unwrap();
        for step in [1, 3, 4096] {
            let mut split = elements(SAMPLE, step);
            let mut lines = Vec::new();
            let mut count = 0;
            while let Some(record) = split.next_element().unwrap() {
                let value: Value = serde_json::from_slice(&record.bytes).unwrap();
                assert_eq!(value, whole[count]);
                count += 1;
                lines.push(record.span.line);
            }
            assert_eq!(count, 12);
            let starts: Vec<u64> = SAMPLE
                .lines()
                .enumerate()
                .filter(|(_, l)| *l == "{")
                .map(|(i, _)| i as u64 + 1)
                .collect();
            assert_eq!(lines, starts);
        }
    }

    #[test]
    fn rereading_keeps_the_sequential_position() {
        let mut split = elements("[1, 22, 333]", 2);
        let first = split.next_record().unwrap().unwrap();
        let second = split.next_record().unwrap().unwrap();
        assert_eq!(split.reread(&first.span).unwrap().bytes, b"1");
        assert_eq!(second.bytes, b"22");
        assert_eq!(split.next_record().unwrap().unwrap().bytes, b"333");
        assert!(split.next_record().unwrap().is_none());
    }

    fn error(data: &str) -> String {
        run(data, config(0, 0, true, false)).unwrap_err()
    }

    #[test]
    fn malformed_files_are_named_by_file_line_element_and_byte() {
        assert_eq!(
            error(""),
            "sharegpt-sample.json: the file is empty (expected a JSON array)"
        );
        assert_eq!(
            error("\n{\"id\": 1}"),
            "sharegpt-sample.json:2: byte 1: expected a JSON array ('['), found '{'"
        );
        assert_eq!(
            error("[{}\n {}]"),
            "sharegpt-sample.json:2: byte 5: expected ',' or ']' after array element 1, found '{'"
        );
        assert_eq!(
            error("[{}, ]"),
            "sharegpt-sample.json:1: byte 5: a ',' after array element 1 is followed by no element"
        );
        assert_eq!(
            error("[{},\n {\"conversations\": [\n"),
            "sharegpt-sample.json:2: array element 2 (byte 6): the file ends inside this element"
        );
        assert_eq!(
            error("[{}"),
            "sharegpt-sample.json:1: byte 3: the file ends before the array is closed (after 1 elements)"
        );
        assert_eq!(
            error("[{}] x"),
            "sharegpt-sample.json:1: byte 5: 'x' after the end of the array"
        );
        assert_eq!(
            error("[{}, 5]"),
            "sharegpt-sample.json:1: array element 2 (byte 5): expected an object with a \"conversations\" list"
        );
    }

    #[test]
    fn bad_elements_point_at_the_faulty_line_and_byte() {
        let data =
            "[\n{\"conversations\": []},\n{\"conversations\": [\n  {\"from\": \"human\"}\n]}\n]";
        let at = data.find("}\n]}").unwrap();
        assert_eq!(
            error(data),
            format!("sharegpt-sample.json:4: array element 2 (byte {at}): missing field `value`")
        );
        let data = "[{\"conversations\": [{\"value\": tru}]}]";
        let at = data.find("}]}").unwrap();
        assert_eq!(
            error(data),
            format!("sharegpt-sample.json:1: array element 1 (byte {at}): expected ident")
        );
        assert_eq!(
            error("[{\"conversations\": \"hi\"}]"),
            "sharegpt-sample.json:1: array element 1 (byte 22): invalid type: string \"hi\", expected a list of {\"from\", \"value\"} turns"
        );
    }

    #[test]
    fn errors_stay_after_the_first_failure() {
        let state = SourceState::new(sampler(
            elements("[{\"conversations\": 3}]", 4),
            NAME,
            config(0, 0, false, false),
        ));
        let first = state.next_batch(8, &words).unwrap_err();
        assert_eq!(state.next_batch(8, &words).unwrap_err(), first);
    }

    fn params(options: &[(&str, &str)]) -> DatasetParams {
        llmb_plugin_sdk::testing::dataset_params(5, 10, options, &["sharegpt.json"])
    }

    #[test]
    fn options_are_read_and_checked() {
        assert_eq!(
            super::config(&params(&[])).unwrap(),
            config(5, 10, true, false)
        );
        let cfg = super::config(&params(&[
            ("sharegpt-output-len", "64"),
            ("disable-shuffle", "true"),
            ("cycle", "true"),
        ]))
        .unwrap();
        assert_eq!(
            cfg,
            Config {
                plan: Plan {
                    seed: 5,
                    count: 10,
                    shuffle: false,
                    cycle: true
                },
                output_len: Some(64),
            }
        );
        assert_eq!(
            super::config(&params(&[("sharegpt-output-len", "0")])).unwrap_err(),
            "--sharegpt-output-len must be at least 1"
        );
        assert_eq!(
            super::config(&params(&[("sharegpt-output-len", "many")])).unwrap_err(),
            "invalid value \"many\" for --sharegpt-output-len"
        );
        assert_eq!(
            super::config(&params(&[("cycle", "maybe")])).unwrap_err(),
            "invalid value \"maybe\" for --cycle (expected true or false)"
        );
    }

    /// Any file, shuffled or streamed, cycled or not: samples or an error naming file and line.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::reader(NAME, &[SAMPLE.as_bytes()], |content| {
            for (count, shuffle, cycle) in [(0, false, false), (5, true, true)] {
                let trickle = Trickle::from_bytes(content, 7);
                let records = ArrayElements::new(BufReader::with_capacity(7, trickle), NAME);
                let mut sampler = sampler(records, NAME, config(1, count, shuffle, cycle))?;
                while !sampler.next_batch(3, &words)?.is_empty() {}
            }
            Ok(())
        });
    }
}
