//! The `shared-prefix` dataset: groups of random prompts that share a prefix within a group, to
//! measure prefix caching (`--dataset-name shared-prefix`).
//!
//! Each of `shared-prefix-groups` groups (default 4) has its own random prefix of exactly
//! `shared-prefix-len` tokens (512); each of its `shared-prefix-prompts` prompts (8) appends its
//! own random suffix so the whole prompt is exactly `shared-prefix-len + shared-prefix-suffix-len`
//! tokens (128 more) by the host tokenizer, and the tokenizer splits it so that its first
//! `shared-prefix-len` tokens are the prefix's: a suffix whose first token would merge with the
//! prefix's last one is drawn again. Every prompt asks for `shared-prefix-output-len` tokens
//! (128). Samples come group by group, or round-robin across groups with
//! `shared-prefix-interleave true` (ignored under `disable-shuffle`). `count` 0 gives every
//! prompt once; a smaller count the first ones; a larger one cycles through them again.

use llmb_plugin_sdk::tokens;

use std::cell::RefCell;

use llmb_plugin_sdk::SplitMix64;
use llmb_plugin_sdk::dataset::{
    DatasetInfo, DatasetParams, Guest, GuestSource, Prompt, Sample, option, parse_option,
};

use tokens::{ATTEMPTS, HostTokenizer, ROUNDS, Tokenizer, Vocab, random_text};

/// The `shared-prefix` dataset.
pub struct SharedPrefix;

/// The generator of one run, or the error that opening it produced (reported by the first
/// `next-batch`, as the contract asks).
pub struct SharedPrefixSource {
    state: RefCell<Result<Groups<HostTokenizer>, String>>,
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Distinct prefixes (`--shared-prefix-groups`): how many cache entries compete.
    pub groups: u32,
    /// Prompts per prefix (`--shared-prefix-prompts`): how often each entry can be reused.
    pub prompts_per_group: u32,
    /// Tokens every prompt of a group shares (`--shared-prefix-len`).
    pub prefix_len: u32,
    /// Tokens after the prefix that are the prompt's own (`--shared-prefix-suffix-len`).
    pub suffix_len: u32,
    /// Max tokens asked of every prompt (`--shared-prefix-output-len`).
    pub output_len: u32,
    /// Round-robin across groups instead of group by group.
    pub interleave: bool,
    /// Samples wanted; 0 = every prompt once.
    pub count: u64,
    /// Seeds every prefix and suffix, so runs repeat.
    pub seed: u64,
}

impl Config {
    /// Distinct prompts: the samples of one pass.
    pub fn distinct(&self) -> u64 {
        u64::from(self.groups) * u64::from(self.prompts_per_group)
    }

    /// Group and index within the group of the `n`th sample, cycling after one pass.
    pub fn slot(&self, n: u64) -> (u32, u32) {
        let p = n % self.distinct();
        let (groups, per_group) = (u64::from(self.groups), u64::from(self.prompts_per_group));
        if self.interleave {
            ((p % groups) as u32, (p / groups) as u32)
        } else {
            ((p / per_group) as u32, (p % per_group) as u32)
        }
    }
}

/// Reads the `shared-prefix-*` options, refusing values that would make empty groups or prompts.
pub fn config(params: &DatasetParams) -> Result<Config, String> {
    let at_least_one = |key: &str, default: u32| -> Result<u32, String> {
        let v: u32 = parse_option(params, key, default)?;
        if v == 0 {
            return Err(format!("--{key} must be at least 1"));
        }
        Ok(v)
    };
    let prefix_len: u32 = parse_option(params, "shared-prefix-len", 512)?;
    let suffix_len: u32 = parse_option(params, "shared-prefix-suffix-len", 128)?;
    match prefix_len.checked_add(suffix_len) {
        None => {
            return Err(format!(
                "--shared-prefix-len {prefix_len} plus --shared-prefix-suffix-len {suffix_len} is too long"
            ));
        }
        Some(0) => {
            return Err(
                "--shared-prefix-len and --shared-prefix-suffix-len are both 0: prompts would be empty"
                    .into(),
            );
        }
        Some(_) => {}
    }
    let interleave: bool = parse_option(params, "shared-prefix-interleave", false)?;
    Ok(Config {
        groups: at_least_one("shared-prefix-groups", 4)?,
        prompts_per_group: at_least_one("shared-prefix-prompts", 8)?,
        prefix_len,
        suffix_len,
        output_len: at_least_one("shared-prefix-output-len", 128)?,
        interleave: interleave && option(params, "disable-shuffle").is_none(),
        count: params.count,
        seed: params.seed,
    })
}

/// Independent random streams per (group, prompt), so a prompt does not depend on the order,
/// the count or how many prompts came before it, and repeats exactly when the samples cycle.
fn stream(seed: u64, group: u64, index: u64) -> SplitMix64 {
    let mut a = SplitMix64::new(seed ^ 0x5348_4152_4544_5046);
    let mut b = SplitMix64::new(a.next_u64() ^ group.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    SplitMix64::new(b.next_u64() ^ index.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
}

/// The stream index of a group's prefix, apart from its prompts' indices.
const PREFIX_STREAM: u64 = u64::MAX;

/// A group's shared prefix: its text and the ids the tokenizer gives it, which every prompt of
/// the group must start with.
#[derive(Debug, Clone, PartialEq)]
pub struct Prefix {
    /// What every prompt of the group starts with.
    pub text: String,
    /// The tokens of `text`: what a prefix cache matches on.
    pub ids: Vec<u32>,
}

/// A random prefix of exactly `len` tokens whose text decodes back from its own ids, so a prompt
/// built by decoding `ids` plus a suffix starts with exactly this text.
pub fn make_prefix<T: Tokenizer + ?Sized>(
    tok: &T,
    vocab: &Vocab,
    rng: &mut SplitMix64,
    len: usize,
) -> Result<Prefix, String> {
    for _ in 0..ATTEMPTS {
        let (text, n) = random_text(tok, vocab, rng, len);
        if n as usize != len {
            continue;
        }
        let ids = tok.encode(&text);
        let canonical = tok.decode(&ids);
        if canonical == text || tok.encode(&canonical) == ids {
            return Ok(Prefix {
                text: canonical,
                ids,
            });
        }
    }
    Err(format!(
        "cannot build a prefix of exactly {len} tokens that decodes back to itself with this tokenizer"
    ))
}

/// `prefix` plus a random suffix: exactly `prefix + suffix_len` tokens whose first tokens are the
/// prefix's. The ids are decoded together, so the tokenizer places the separator between them as
/// it would inside one text; a suffix that merges into the prefix is drawn again, one that
/// merges within itself is trimmed or topped up. If no draw lands on the exact length the closest
/// prompt that keeps the prefix is returned with its true count.
pub fn make_prompt<T: Tokenizer + ?Sized>(
    tok: &T,
    vocab: &Vocab,
    rng: &mut SplitMix64,
    prefix: &Prefix,
    suffix_len: usize,
) -> Result<(String, u32), String> {
    let l = prefix.ids.len();
    let target = l + suffix_len;
    let mut best: Option<(String, usize)> = None;
    for _ in 0..ATTEMPTS {
        let mut tail = vocab.sample(rng, suffix_len);
        for _ in 0..ROUNDS {
            let mut ids = prefix.ids.clone();
            ids.extend_from_slice(&tail);
            let text = tok.decode(&ids);
            if !text.starts_with(&prefix.text) {
                break;
            }
            let encoded = tok.encode(&text);
            if !encoded.starts_with(&prefix.ids) {
                break;
            }
            if encoded.len() == target {
                return Ok((text, target as u32));
            }
            if best
                .as_ref()
                .is_none_or(|(_, n)| n.abs_diff(target) > encoded.len().abs_diff(target))
            {
                best = Some((text, encoded.len()));
            }
            tail = encoded[l..].to_vec();
            if tail.len() > suffix_len {
                tail.truncate(suffix_len);
            } else {
                let missing = suffix_len - tail.len();
                tail.extend(vocab.sample(rng, missing));
            }
        }
    }
    best.map(|(text, n)| (text, n as u32)).ok_or_else(|| {
        format!(
            "cannot append {suffix_len} tokens to a {l}-token prefix without the tokenizer merging them into it"
        )
    })
}

/// The prefixes of every group and the samples drawn from them, a batch at a time.
pub struct Groups<T> {
    config: Config,
    tok: T,
    vocab: Vocab,
    prefixes: Vec<Prefix>,
    total: u64,
    produced: u64,
}

impl<T: Tokenizer> Groups<T> {
    /// Builds every group's prefix up front; prompts are built as they are asked for.
    pub fn new(config: Config, tok: T, vocab: Vocab) -> Result<Self, String> {
        let prefixes = (0..config.groups)
            .map(|g| {
                let mut rng = stream(config.seed, u64::from(g), PREFIX_STREAM);
                make_prefix(&tok, &vocab, &mut rng, config.prefix_len as usize)
                    .map_err(|e| format!("group {}: {e}", g + 1))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let total = if config.count == 0 {
            config.distinct()
        } else {
            config.count
        };
        Ok(Self {
            config,
            tok,
            vocab,
            prefixes,
            total,
            produced: 0,
        })
    }

    /// Group `g`'s prefix.
    pub fn prefix(&self, g: u32) -> &Prefix {
        &self.prefixes[g as usize]
    }

    /// Up to `max` samples; an empty batch means all were given.
    pub fn next_batch(&mut self, max: u32) -> Result<Vec<Sample>, String> {
        let n = (self.total - self.produced).min(u64::from(max));
        let mut out = Vec::with_capacity(n as usize);
        for k in self.produced..self.produced + n {
            let (g, j) = self.config.slot(k);
            let mut rng = stream(self.config.seed, u64::from(g), u64::from(j));
            let (text, input_tokens) = make_prompt(
                &self.tok,
                &self.vocab,
                &mut rng,
                &self.prefixes[g as usize],
                self.config.suffix_len as usize,
            )
            .map_err(|e| format!("group {}, prompt {}: {e}", g + 1, j + 1))?;
            out.push(Sample {
                prompt: Prompt::Text(text),
                input_tokens,
                output_tokens: self.config.output_len,
                timestamp: None,
            });
        }
        self.produced += n;
        Ok(out)
    }
}

fn open(params: &DatasetParams) -> Result<Groups<HostTokenizer>, String> {
    Groups::new(config(params)?, HostTokenizer, Vocab::host()?)
}

impl Guest for SharedPrefix {
    type Source = SharedPrefixSource;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "shared-prefix".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Random prompts in groups sharing an exact-length prefix, for prefix-cache tests: --shared-prefix-groups (4), --shared-prefix-prompts (8), --shared-prefix-len (512), --shared-prefix-suffix-len (128), --shared-prefix-output-len (128), --shared-prefix-interleave".into(),
        }
    }
}

impl GuestSource for SharedPrefixSource {
    fn new(params: DatasetParams) -> Self {
        Self {
            state: RefCell::new(open(&params)),
        }
    }

    fn next_batch(&self, max: u32) -> Result<Vec<Sample>, String> {
        let mut guard = self.state.borrow_mut();
        let groups = guard.as_mut().map_err(|e| e.clone())?;
        groups.next_batch(max)
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_dataset!(SharedPrefix);

#[cfg(test)]
mod tests {
    use super::*;
    use llmb_plugin_sdk::tokens::testing::{Merging, PIECES, Words};

    fn params(count: u64, seed: u64, options: &[(&str, &str)]) -> DatasetParams {
        llmb_plugin_sdk::testing::dataset_params(seed, count, options, &[])
    }

    fn words() -> Vocab {
        Vocab::new(1000, &[0]).unwrap()
    }

    fn pieces() -> Vocab {
        Vocab::new(PIECES.len() as u32, &[0]).unwrap()
    }

    fn text(s: &Sample) -> String {
        match &s.prompt {
            Prompt::Text(t) => t.clone(),
            _ => panic!("a text prompt"),
        }
    }

    /// Every sample with the prefix of its group.
    fn run<T: Tokenizer>(p: &DatasetParams, tok: T, vocab: Vocab) -> (Vec<Sample>, Vec<Prefix>) {
        let c = config(p).unwrap();
        let mut groups = Groups::new(c, tok, vocab).unwrap();
        let mut samples = Vec::new();
        loop {
            let batch = groups.next_batch(5).unwrap();
            if batch.is_empty() {
                break;
            }
            samples.extend(batch);
        }
        let prefixes = samples
            .iter()
            .enumerate()
            .map(|(k, _)| groups.prefix(c.slot(k as u64).0).clone())
            .collect();
        (samples, prefixes)
    }

    /// Checks lengths and prefix sharing by re-encoding every prompt.
    fn check<T: Tokenizer>(tok: &T, samples: &[Sample], prefixes: &[Prefix], l: usize, s: usize) {
        for (sample, prefix) in samples.iter().zip(prefixes) {
            let t = text(sample);
            let ids = tok.encode(&t);
            assert_eq!(ids.len(), l + s, "{t:?}");
            assert_eq!(sample.input_tokens as usize, l + s);
            assert_eq!(prefix.ids.len(), l);
            assert_eq!(ids[..l], prefix.ids[..], "{t:?}");
            assert!(t.starts_with(&prefix.text));
        }
    }

    #[test]
    fn defaults_give_four_groups_of_eight_exact_prompts() {
        let (samples, prefixes) = run(&params(0, 1, &[]), Words, words());
        assert_eq!(samples.len(), 32);
        check(&Words, &samples, &prefixes, 512, 128);
        assert!(samples.iter().all(|s| s.output_tokens == 128));
        assert!(samples.iter().all(|s| s.timestamp.is_none()));
        for (k, p) in prefixes.iter().enumerate() {
            assert_eq!(p, &prefixes[k / 8 * 8], "group by group");
        }
        for g in 1..4 {
            assert_ne!(prefixes[g * 8].ids[..], prefixes[0].ids[..]);
        }
        let mut texts: Vec<String> = samples.iter().map(text).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), 32, "every prompt has its own suffix");
    }

    #[test]
    fn groups_share_exactly_their_prefix_when_tokens_merge() {
        let opts = [
            ("shared-prefix-groups", "3"),
            ("shared-prefix-prompts", "6"),
            ("shared-prefix-len", "21"),
            ("shared-prefix-suffix-len", "9"),
            ("shared-prefix-output-len", "5"),
        ];
        for seed in 0..25 {
            let (samples, prefixes) = run(&params(0, seed, &opts), Merging, pieces());
            assert_eq!(samples.len(), 18);
            check(&Merging, &samples, &prefixes, 21, 9);
            assert!(samples.iter().all(|s| s.output_tokens == 5));
            assert_ne!(prefixes[0], prefixes[6]);
            assert_ne!(prefixes[6], prefixes[12]);
        }
    }

    #[test]
    fn a_suffix_that_merges_into_the_prefix_is_drawn_again() {
        let prefix = Prefix {
            text: "a".into(),
            ids: vec![2],
        };
        let c_or_bc = Vocab::new(7, &[0, 1, 2, 3, 5]).unwrap();
        for seed in 0..20 {
            let mut rng = SplitMix64::new(seed);
            let (t, n) = make_prompt(&Merging, &c_or_bc, &mut rng, &prefix, 4).unwrap();
            assert_eq!(n, 5);
            let ids = Merging.encode(&t);
            assert_eq!((ids.len(), ids[0]), (5, 2), "{t:?}");
            assert!(t.starts_with("ac"), "{t:?}");
        }
        let only_bc = Vocab::new(7, &[0, 1, 2, 3, 4, 5]).unwrap();
        let err = make_prompt(&Merging, &only_bc, &mut SplitMix64::new(1), &prefix, 2).unwrap_err();
        assert!(err.contains("merging them into it"), "{err}");
    }

    #[test]
    fn interleave_goes_round_robin_unless_shuffling_is_disabled() {
        let opts = [
            ("shared-prefix-groups", "3"),
            ("shared-prefix-prompts", "4"),
            ("shared-prefix-len", "30"),
            ("shared-prefix-suffix-len", "10"),
            ("shared-prefix-interleave", "true"),
        ];
        let (samples, prefixes) = run(&params(0, 5, &opts), Words, words());
        check(&Words, &samples, &prefixes, 30, 10);
        for (k, p) in prefixes.iter().enumerate() {
            assert_eq!(p, &prefixes[k % 3]);
        }
        assert_ne!(prefixes[0], prefixes[1]);
        let (grouped, _) = run(&params(0, 5, &opts[..4]), Words, words());
        let mut a: Vec<String> = samples.iter().map(text).collect();
        let mut b: Vec<String> = grouped.iter().map(text).collect();
        assert_eq!(a[0], b[0]);
        assert_eq!(
            a[1], b[4],
            "round robin: the second sample is group 2's first"
        );
        a.sort();
        b.sort();
        assert_eq!(a, b, "the same prompts in another order");
        let mut off = opts.to_vec();
        off.push(("disable-shuffle", "true"));
        let (plain, _) = run(&params(0, 5, &off), Words, words());
        let plain: Vec<String> = plain.iter().map(text).collect();
        let grouped: Vec<String> = grouped.iter().map(text).collect();
        assert_eq!(plain, grouped);
    }

    #[test]
    fn count_truncates_or_cycles() {
        let opts = [
            ("shared-prefix-groups", "2"),
            ("shared-prefix-prompts", "3"),
            ("shared-prefix-len", "8"),
            ("shared-prefix-suffix-len", "4"),
        ];
        let all: Vec<String> = run(&params(0, 9, &opts), Words, words())
            .0
            .iter()
            .map(text)
            .collect();
        assert_eq!(all.len(), 6);
        let few: Vec<String> = run(&params(4, 9, &opts), Words, words())
            .0
            .iter()
            .map(text)
            .collect();
        assert_eq!(few, all[..4]);
        let many: Vec<String> = run(&params(15, 9, &opts), Words, words())
            .0
            .iter()
            .map(text)
            .collect();
        assert_eq!(many.len(), 15);
        for (k, t) in many.iter().enumerate() {
            assert_eq!(t, &all[k % 6]);
        }
    }

    #[test]
    fn the_seed_decides_everything() {
        let opts = [
            ("shared-prefix-len", "40"),
            ("shared-prefix-suffix-len", "7"),
        ];
        let texts = |seed| -> Vec<String> {
            run(&params(0, seed, &opts), Merging, pieces())
                .0
                .iter()
                .map(text)
                .collect()
        };
        assert_eq!(texts(3), texts(3));
        assert_ne!(texts(3), texts(4));
    }

    #[test]
    fn degenerate_lengths() {
        let no_prefix = [
            ("shared-prefix-len", "0"),
            ("shared-prefix-suffix-len", "6"),
        ];
        let (samples, prefixes) = run(&params(0, 1, &no_prefix), Merging, pieces());
        check(&Merging, &samples, &prefixes, 0, 6);
        let no_suffix = [
            ("shared-prefix-len", "6"),
            ("shared-prefix-suffix-len", "0"),
            ("shared-prefix-prompts", "2"),
        ];
        let (samples, prefixes) = run(&params(0, 1, &no_suffix), Merging, pieces());
        check(&Merging, &samples, &prefixes, 6, 0);
        assert_eq!(text(&samples[0]), text(&samples[1]));
    }

    #[test]
    fn bad_options_are_refused() {
        let err = |opts: &[(&str, &str)]| config(&params(0, 1, opts)).unwrap_err();
        assert_eq!(
            err(&[("shared-prefix-groups", "0")]),
            "--shared-prefix-groups must be at least 1"
        );
        assert_eq!(
            err(&[("shared-prefix-prompts", "0")]),
            "--shared-prefix-prompts must be at least 1"
        );
        assert_eq!(
            err(&[("shared-prefix-output-len", "0")]),
            "--shared-prefix-output-len must be at least 1"
        );
        assert!(
            err(&[
                ("shared-prefix-len", "0"),
                ("shared-prefix-suffix-len", "0")
            ])
            .contains("both 0")
        );
        assert!(err(&[("shared-prefix-len", "-3")]).contains("--shared-prefix-len"));
        assert!(
            err(&[
                ("shared-prefix-len", "4294967295"),
                ("shared-prefix-suffix-len", "1")
            ])
            .contains("too long")
        );
        assert!(
            err(&[("shared-prefix-interleave", "maybe")]).contains("--shared-prefix-interleave")
        );
        let c = config(&params(0, 1, &[])).unwrap();
        assert_eq!(
            (
                c.groups,
                c.prompts_per_group,
                c.prefix_len,
                c.suffix_len,
                c.output_len
            ),
            (4, 8, 512, 128, 128)
        );
        assert!(!c.interleave);
    }

    /// Odd option values: an error naming the option, never a panic.
    #[test]
    fn fuzz_options() {
        llmb_plugin_sdk::testing::fuzz::options(
            &[
                "shared-prefix-groups",
                "shared-prefix-prompts",
                "shared-prefix-len",
                "shared-prefix-suffix-len",
                "shared-prefix-output-len",
                "shared-prefix-interleave",
                "disable-shuffle",
            ],
            |p| {
                let c = config(p)?;
                // Generate only what a test can afford: the option parsing is the point.
                if c.distinct() <= 64 && c.prefix_len + c.suffix_len <= 200 {
                    let mut groups = Groups::new(c, Words, words())?;
                    groups.next_batch(5)?;
                }
                Ok(())
            },
        );
    }
}
