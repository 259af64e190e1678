//! The `sonnet` dataset: vLLM's `SonnetDataset` (`--dataset-name sonnet --dataset-path
//! sonnet.txt`), prompts of poem lines that all start with the same base prompt and prefix lines.
//!
//! Every prompt is `Pick as many lines as you can from these poem lines:\n`, then the file's first
//! lines (the fixed prefix, shared by every prompt, so prefix caching has something to reuse),
//! then lines drawn at random (seeded, with replacement) until `sonnet-input-len` tokens are
//! reached. Each sample asks for `sonnet-output-len` tokens.
//!
//! Where this differs from vLLM, and why:
//! - vLLM counts the prompt after applying the model's chat template; a dataset plugin has no
//!   chat template, so lengths here are those of the raw text by the host tokenizer (vLLM's
//!   counts are larger by the template's tokens).
//! - vLLM turns lengths into line counts through the average line length; here the prefix is the
//!   first lines whose own token counts reach `sonnet-prefix-len` minus the base prompt, and
//!   random lines are added while they fit in `sonnet-input-len`, then the whole prompt is
//!   counted and trimmed by whole lines if the joins made it longer. Prompts never exceed
//!   `sonnet-input-len` (as vLLM's never do), and usually land within one line of it.
//! - `count` 0 gives 1000 prompts, vLLM's default `--num-prompts`.

use std::cell::RefCell;

use llmb_plugin_sdk::SplitMix64;
use llmb_plugin_sdk::dataset::{
    DatasetInfo, DatasetParams, Guest, GuestSource, Prompt, Sample, option, parse_option, tokenizer,
};

/// Where the user's file is mounted inside the sandbox.
const DATA_DIR: &str = "/data";

/// vLLM's base prompt, word for word, so prompts match what vLLM sends.
pub const BASE_PROMPT: &str = "Pick as many lines as you can from these poem lines:\n";

/// Prompts made when `count` is 0: the dataset is a generator with no natural size.
pub const DEFAULT_COUNT: u64 = 1000;

/// The `sonnet` dataset.
pub struct Sonnet;

/// The host tokenizer's count, the only tokenizer call sonnet prompts need.
type HostCount = fn(&str) -> u32;

/// The generator of one run, or the error that opening it produced (reported by the first
/// `next-batch`, as the contract asks).
pub struct SonnetSource {
    state: RefCell<Result<Sonnets<HostCount>, String>>,
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Most tokens a prompt may have (`--sonnet-input-len`).
    pub input_len: u32,
    /// Max tokens asked of every prompt (`--sonnet-output-len`).
    pub output_len: u32,
    /// Tokens every prompt shares at its start, base prompt included (`--sonnet-prefix-len`).
    pub prefix_len: u32,
    /// Samples wanted; 0 = [`DEFAULT_COUNT`].
    pub count: u64,
    /// Seeds the line draws, so runs repeat.
    pub seed: u64,
}

/// Reads the `sonnet-*` options with vLLM's defaults and its first check (the input must be
/// longer than the prefix); the checks that need the tokenizer come in [`Poem::new`].
pub fn config(params: &DatasetParams) -> Result<Config, String> {
    let input_len: u32 = parse_option(params, "sonnet-input-len", 550)?;
    let output_len: u32 = parse_option(params, "sonnet-output-len", 150)?;
    let prefix_len: u32 = parse_option(params, "sonnet-prefix-len", 200)?;
    if input_len <= prefix_len {
        return Err(format!(
            "--sonnet-input-len ({input_len}) must be greater than --sonnet-prefix-len ({prefix_len})"
        ));
    }
    if output_len == 0 {
        return Err("--sonnet-output-len must be at least 1".into());
    }
    Ok(Config {
        input_len,
        output_len,
        prefix_len,
        count: params.count,
        seed: params.seed,
    })
}

/// The file's lines as Python's `readlines` gives them, each ending with `\n` (a missing final
/// break is added and `\r\n` becomes `\n`, so a drawn line never runs into the next one).
pub fn poem_lines(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.split_inclusive('\n')
        .map(|l| {
            let body = l.trim_end_matches(['\n', '\r']);
            format!("{body}\n")
        })
        .collect()
}

/// The poem ready to draw prompts from: the fixed start of every prompt and the lines to add.
#[derive(Debug, Clone)]
pub struct Poem {
    /// Base prompt plus prefix lines, shared by every prompt.
    pub fixed: String,
    /// Tokens of `fixed`, counted as one text.
    pub fixed_tokens: u32,
    /// How many of the file's first lines make the prefix.
    pub prefix_lines: usize,
    lines: Vec<String>,
    /// (tokens, line index) of lines that have tokens, shortest first, so the lines that still
    /// fit are a prefix of this list.
    by_tokens: Vec<(u32, usize)>,
    input_len: u32,
}

impl Poem {
    /// Applies vLLM's checks (the prefix must be longer than the base prompt) and ours (the file
    /// must hold enough tokens for the prefix, and the prefix must fit in the input), naming the
    /// file as `name`.
    pub fn new(
        name: &str,
        lines: Vec<String>,
        config: &Config,
        count: impl Fn(&str) -> u32,
    ) -> Result<Self, String> {
        if lines.iter().all(|l| l.trim().is_empty()) {
            return Err(format!("{name}: no poem lines in the file"));
        }
        let base_tokens = count(BASE_PROMPT);
        if config.prefix_len <= base_tokens {
            return Err(format!(
                "--sonnet-prefix-len ({}) must be greater than the base prompt's {base_tokens} tokens",
                config.prefix_len
            ));
        }
        let needed = config.prefix_len - base_tokens;
        let counts: Vec<u32> = lines.iter().map(|l| count(l)).collect();
        let mut sum = 0u64;
        let prefix_lines = counts
            .iter()
            .position(|&c| {
                sum += u64::from(c);
                sum >= u64::from(needed)
            })
            .map(|i| i + 1)
            .ok_or_else(|| {
                format!(
                    "{name}: its {} lines hold {sum} tokens, fewer than the {needed} the prefix needs \
                     (--sonnet-prefix-len {} minus the base prompt's {base_tokens})",
                    lines.len(),
                    config.prefix_len
                )
            })?;
        let fixed: String = std::iter::once(BASE_PROMPT)
            .chain(lines[..prefix_lines].iter().map(String::as_str))
            .collect();
        let fixed_tokens = count(&fixed);
        if fixed_tokens > config.input_len {
            return Err(format!(
                "{name}: the base prompt and the first {prefix_lines} lines (the prefix) are \
                 {fixed_tokens} tokens, more than --sonnet-input-len {}",
                config.input_len
            ));
        }
        let mut by_tokens: Vec<(u32, usize)> = counts
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c > 0)
            .map(|(i, &c)| (c, i))
            .collect();
        by_tokens.sort_unstable();
        Ok(Self {
            fixed,
            fixed_tokens,
            prefix_lines,
            lines,
            by_tokens,
            input_len: config.input_len,
        })
    }

    /// One prompt and its true token count: the fixed start, then random lines while one still
    /// fits by its own count, then whole lines dropped from the end if the joined text counts
    /// more than `sonnet-input-len`.
    pub fn prompt(&self, rng: &mut SplitMix64, count: impl Fn(&str) -> u32) -> (String, u32) {
        let mut text = self.fixed.clone();
        let mut ends = Vec::new();
        let mut estimate = self.fixed_tokens;
        loop {
            let room = self.input_len - estimate;
            let fit = self.by_tokens.partition_point(|&(c, _)| c <= room);
            if fit == 0 {
                break;
            }
            let (c, i) = self.by_tokens[(rng.next_u64() % fit as u64) as usize];
            ends.push(text.len());
            text.push_str(&self.lines[i]);
            estimate += c;
        }
        let mut n = count(&text);
        while n > self.input_len {
            let Some(end) = ends.pop() else { break };
            text.truncate(end);
            n = count(&text);
        }
        (text, n)
    }
}

/// Draws prompts from a [`Poem`] in seeded order, a batch at a time.
pub struct Sonnets<F> {
    poem: Poem,
    count_tokens: F,
    rng: SplitMix64,
    output_len: u32,
    total: u64,
    produced: u64,
}

impl<F: Fn(&str) -> u32> Sonnets<F> {
    /// `text` is the file's content, `name` how errors call it, `count_tokens` the tokenizer.
    pub fn new(name: &str, text: &str, config: &Config, count_tokens: F) -> Result<Self, String> {
        let poem = Poem::new(name, poem_lines(text), config, &count_tokens)?;
        Ok(Self {
            poem,
            count_tokens,
            rng: SplitMix64::new(config.seed ^ 0x534F_4E4E_4554_0001),
            output_len: config.output_len,
            total: if config.count == 0 {
                DEFAULT_COUNT
            } else {
                config.count
            },
            produced: 0,
        })
    }

    /// The poem the prompts come from.
    pub fn poem(&self) -> &Poem {
        &self.poem
    }

    /// Up to `max` samples; an empty batch means all were given.
    pub fn next_batch(&mut self, max: u32) -> Vec<Sample> {
        let n = (self.total - self.produced).min(u64::from(max));
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (text, input_tokens) = self.poem.prompt(&mut self.rng, &self.count_tokens);
            out.push(Sample {
                prompt: Prompt::Text(text),
                input_tokens,
                output_tokens: self.output_len,
                timestamp: None,
            });
        }
        self.produced += n;
        out
    }
}

fn open(params: &DatasetParams) -> Result<Sonnets<HostCount>, String> {
    let file = params
        .files
        .first()
        .ok_or("the sonnet dataset needs --dataset-path FILE (a text file of poem lines)")?;
    let shown = option(params, "dataset-path-display").unwrap_or(file);
    let config = config(params)?;
    let text = std::fs::read_to_string(format!("{DATA_DIR}/{file}"))
        .map_err(|e| format!("{shown}: cannot read: {e}"))?;
    Sonnets::new(shown, &text, &config, tokenizer::count as HostCount)
}

impl Guest for Sonnet {
    type Source = SonnetSource;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "sonnet".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "vLLM's sonnet prompts from poem lines in --dataset-path: a shared prefix of the first lines plus random lines; --sonnet-input-len (550), --sonnet-output-len (150), --sonnet-prefix-len (200); lengths count the raw text (no chat template)".into(),
        }
    }
}

impl GuestSource for SonnetSource {
    fn new(params: DatasetParams) -> Self {
        Self {
            state: RefCell::new(open(&params)),
        }
    }

    fn next_batch(&self, max: u32) -> Result<Vec<Sample>, String> {
        let mut guard = self.state.borrow_mut();
        let sonnets = guard.as_mut().map_err(|e| e.clone())?;
        Ok(sonnets.next_batch(max))
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_dataset!(Sonnet);

#[cfg(test)]
mod tests {
    use super::*;

    const SONNETS: &str = include_str!("../../../datasets/sonnet.txt");

    use llmb_plugin_sdk::testing::words;

    /// Counts a token for every line break followed by more text, so joined lines count more than
    /// their separate counts add up to, as BPE merges across a join can.
    fn joins_cost(text: &str) -> u32 {
        words(text) + text.trim_end_matches('\n').matches('\n').count() as u32
    }

    fn params(count: u64, seed: u64, options: &[(&str, &str)]) -> DatasetParams {
        llmb_plugin_sdk::testing::dataset_params(seed, count, options, &["sonnet.txt"])
    }

    fn texts(samples: &[Sample]) -> Vec<String> {
        samples
            .iter()
            .map(|s| match &s.prompt {
                Prompt::Text(t) => t.clone(),
                _ => panic!("a text prompt"),
            })
            .collect()
    }

    fn generate(p: &DatasetParams, count: fn(&str) -> u32) -> Result<(Poem, Vec<Sample>), String> {
        let mut s = Sonnets::new("sonnet.txt", SONNETS, &config(p)?, count)?;
        let mut out = Vec::new();
        loop {
            let batch = s.next_batch(16);
            if batch.is_empty() {
                return Ok((s.poem().clone(), out));
            }
            out.extend(batch);
        }
    }

    #[test]
    fn the_prefix_is_the_first_lines_reaching_prefix_len() {
        let lines = poem_lines(SONNETS);
        assert_eq!(lines.len(), 64);
        let (poem, _) = generate(&params(1, 1, &[]), words).unwrap();
        assert_eq!(words(BASE_PROMPT), 11);
        let prefix_words: u32 = lines[..poem.prefix_lines].iter().map(|l| words(l)).sum();
        let one_less: u32 = lines[..poem.prefix_lines - 1]
            .iter()
            .map(|l| words(l))
            .sum();
        assert!(prefix_words >= 189 && one_less < 189, "{prefix_words}");
        assert_eq!(
            poem.fixed,
            format!("{BASE_PROMPT}{}", lines[..poem.prefix_lines].concat())
        );
        assert_eq!(poem.fixed_tokens, 11 + prefix_words);
    }

    #[test]
    fn prompts_share_the_prefix_and_fill_the_input_with_whole_lines() {
        let (poem, samples) = generate(&params(40, 7, &[]), words).unwrap();
        assert_eq!(samples.len(), 40);
        let lines = poem_lines(SONNETS);
        let shortest = lines.iter().map(|l| words(l)).min().unwrap();
        for (s, t) in samples.iter().zip(texts(&samples)) {
            assert_eq!(s.input_tokens, words(&t));
            assert!(s.input_tokens <= 550 && s.input_tokens > 550 - shortest);
            assert_eq!((s.output_tokens, s.timestamp), (150, None));
            let rest = t.strip_prefix(&poem.fixed).expect("the shared prefix");
            for line in rest.split_inclusive('\n') {
                assert!(lines.iter().any(|l| l == line), "{line:?}");
            }
        }
        let distinct: std::collections::HashSet<_> = texts(&samples).into_iter().collect();
        assert_eq!(distinct.len(), 40);
    }

    #[test]
    fn joins_that_count_more_are_trimmed_by_whole_lines() {
        let p = params(
            30,
            3,
            &[("sonnet-input-len", "300"), ("sonnet-prefix-len", "100")],
        );
        let (poem, samples) = generate(&p, joins_cost).unwrap();
        let shortest = poem_lines(SONNETS).iter().map(|l| words(l)).min().unwrap();
        let mut trimmed = 0;
        for (s, t) in samples.iter().zip(texts(&samples)) {
            assert_eq!(s.input_tokens, joins_cost(&t));
            assert!(s.input_tokens <= 300, "{}", s.input_tokens);
            let rest = t.strip_prefix(&poem.fixed).expect("the shared prefix");
            let estimate = poem.fixed_tokens + words(rest);
            trimmed += usize::from(estimate + shortest <= 300);
        }
        assert_eq!(
            trimmed,
            samples.len(),
            "filled by estimate, then trimmed by count"
        );
    }

    #[test]
    fn seeded_and_reproducible() {
        let a = texts(&generate(&params(10, 1, &[]), words).unwrap().1);
        let b = texts(&generate(&params(10, 1, &[]), words).unwrap().1);
        let c = texts(&generate(&params(10, 2, &[]), words).unwrap().1);
        let first = texts(&generate(&params(4, 1, &[]), words).unwrap().1);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(first, a[..4]);
        assert_eq!(generate(&params(0, 1, &[]), words).unwrap().1.len(), 1000);
    }

    #[test]
    fn options_change_the_lengths() {
        let p = params(
            5,
            1,
            &[
                ("sonnet-input-len", "120"),
                ("sonnet-prefix-len", "40"),
                ("sonnet-output-len", "9"),
            ],
        );
        let (poem, samples) = generate(&p, words).unwrap();
        assert!(poem.fixed_tokens >= 40 && poem.fixed_tokens < 60);
        for s in &samples {
            assert!(s.input_tokens <= 120 && s.input_tokens > 110);
            assert_eq!(s.output_tokens, 9);
        }
    }

    #[test]
    fn vllm_checks_are_kept() {
        let err = |opts: &[(&str, &str)]| generate(&params(1, 1, opts), words).unwrap_err();
        assert_eq!(
            err(&[("sonnet-input-len", "200"), ("sonnet-prefix-len", "200")]),
            "--sonnet-input-len (200) must be greater than --sonnet-prefix-len (200)"
        );
        assert_eq!(
            err(&[("sonnet-prefix-len", "11")]),
            "--sonnet-prefix-len (11) must be greater than the base prompt's 11 tokens"
        );
        assert!(
            err(&[("sonnet-input-len", "9000"), ("sonnet-prefix-len", "8000")])
                .starts_with("sonnet.txt: its 64 lines hold 508 tokens, fewer than the 7989")
        );
        let e = err(&[("sonnet-input-len", "201"), ("sonnet-prefix-len", "200")]);
        assert!(e.contains("more than --sonnet-input-len 201"), "{e}");
        assert!(err(&[("sonnet-output-len", "0")]).contains("--sonnet-output-len"));
        assert!(err(&[("sonnet-input-len", "lots")]).contains("--sonnet-input-len"));
        let c = config(&params(0, 1, &[])).unwrap();
        assert_eq!((c.input_len, c.output_len, c.prefix_len), (550, 150, 200));
        let empty = Sonnets::new("empty.txt", "\n \n", &c, words).err().unwrap();
        assert_eq!(empty, "empty.txt: no poem lines in the file");
    }

    #[test]
    fn lines_keep_their_breaks() {
        assert_eq!(
            poem_lines("\u{feff}one\r\ntwo\n\nthree"),
            ["one\n", "two\n", "\n", "three\n"]
        );
        assert!(poem_lines("").is_empty());
    }

    /// Any file: prompts or an error naming the file.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::reader("sonnet.txt", &[SONNETS.as_bytes()], |content| {
            let text = std::str::from_utf8(content)
                .map_err(|e| format!("sonnet.txt: cannot read: {e}"))?;
            for p in [
                params(3, 1, &[]),
                params(
                    3,
                    2,
                    &[("sonnet-input-len", "40"), ("sonnet-prefix-len", "20")],
                ),
            ] {
                let mut s = Sonnets::new("sonnet.txt", text, &config(&p)?, words)?;
                while !s.next_batch(2).is_empty() {}
            }
            Ok(())
        });
    }

    /// Odd option values: an error naming the option, never a panic.
    #[test]
    fn fuzz_options() {
        llmb_plugin_sdk::testing::fuzz::options(
            &["sonnet-input-len", "sonnet-output-len", "sonnet-prefix-len"],
            |p| {
                let mut s = Sonnets::new("sonnet.txt", SONNETS, &config(p)?, words)?;
                s.next_batch(2);
                Ok(())
            },
        );
    }
}
