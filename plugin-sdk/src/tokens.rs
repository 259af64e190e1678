//! Random prompts of an exact token length, as the `random` reader builds them: token ids without
//! the special ones are decoded, re-encoded and trimmed or topped up until the text is exactly
//! the asked length by the tokenizer the metrics use.

use crate::SplitMix64;
use crate::dataset::{DatasetParams, parse_option, tokenizer};

/// The tokenizer the prompts are measured with. Behind a trait so the generators run natively in
/// tests, where the host's tokenizer import does not exist.
pub trait Tokenizer {
    /// Token ids of `text`, without added special tokens (as the host counts prompts).
    fn encode(&self, text: &str) -> Vec<u32>;
    /// Text of `ids`; re-encoding it may give other ids, which is why lengths are verified.
    fn decode(&self, ids: &[u32]) -> String;
}

/// The host tokenizer import (the one `--tokenizer` selects).
pub struct HostTokenizer;

impl Tokenizer for HostTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        tokenizer::encode(text)
    }

    fn decode(&self, ids: &[u32]) -> String {
        tokenizer::decode(ids)
    }
}

/// Token ids a prompt may contain: the vocabulary without special tokens, which a server could
/// treat as a BOS or EOS in the middle of a prompt.
pub struct Vocab {
    allowed: Vec<u32>,
}

impl Vocab {
    /// Ids `0..size` minus `special`; an error when nothing is left to build prompts from.
    pub fn new(size: u32, special: &[u32]) -> Result<Self, String> {
        let mut special = special.to_vec();
        special.sort_unstable();
        let allowed: Vec<u32> = (0..size)
            .filter(|id| special.binary_search(id).is_err())
            .collect();
        if allowed.is_empty() {
            return Err("the tokenizer has no non-special tokens".into());
        }
        Ok(Self { allowed })
    }

    /// The host tokenizer's vocabulary.
    pub fn host() -> Result<Self, String> {
        Self::new(tokenizer::vocab_size(), &tokenizer::special_ids())
    }

    /// `n` ids drawn uniformly (with replacement) from the allowed ones.
    pub fn sample(&self, rng: &mut SplitMix64, n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| self.allowed[(rng.next_u64() % self.allowed.len() as u64) as usize])
            .collect()
    }
}

/// A length drawn as vLLM's random datasets draw them: uniform over
/// `[floor(len*(1-ratio)), ceil(len*(1+ratio))]` (`--random-range-ratio`).
pub fn sample_len(rng: &mut SplitMix64, len: u32, ratio: f64) -> u32 {
    let lo = (len as f64 * (1.0 - ratio)).floor() as u64;
    // A length past u32 would wrap silently; the longest is kept instead.
    let hi = ((len as f64 * (1.0 + ratio)).ceil() as u64).min(u64::from(u32::MAX));
    rng.range_inclusive(lo.min(hi), hi) as u32
}

/// An output length drawn as vLLM draws it: [`sample_len`]'s range with its lower end raised to
/// 1 (vLLM never samples a 0-token output), so a short length is not drawn more often.
pub fn sample_output_len(rng: &mut SplitMix64, len: u32, ratio: f64) -> u32 {
    let lo = ((len as f64 * (1.0 - ratio)).floor() as u64).max(1);
    let hi = ((len as f64 * (1.0 + ratio)).ceil() as u64)
        .min(u64::from(u32::MAX))
        .max(lo);
    rng.range_inclusive(lo, hi) as u32
}

/// Fresh draws before giving up on an exact length: a tokenizer whose merges keep moving the
/// count around one draw usually settles on another.
pub const ATTEMPTS: usize = 16;

/// Trim-or-top-up rounds per draw: each re-encoding can merge or split tokens again.
pub const ROUNDS: usize = 8;

/// Random text of exactly `target` tokens with its true count. When the tokenizer never settles
/// on `target` (it should not happen with real tokenizers) the closest text found is returned
/// with its own count, so the reported length is still the truth.
pub fn random_text<T: Tokenizer + ?Sized>(
    tok: &T,
    vocab: &Vocab,
    rng: &mut SplitMix64,
    target: usize,
) -> (String, u32) {
    random_text_after(tok, vocab, rng, &[], target)
}

/// [`random_text`] whose draws start with `prefix` (vLLM's `--random-prefix-len` ids): `target`
/// counts the prefix too.
///
/// A draw can get stuck: ids that are a piece of a multi-byte character decode to U+FFFD, which
/// re-encodes to other ids, and trimming them back gives the same text again. A stuck draw is
/// abandoned for a fresh one instead of being returned a token off.
pub fn random_text_after<T: Tokenizer + ?Sized>(
    tok: &T,
    vocab: &Vocab,
    rng: &mut SplitMix64,
    prefix: &[u32],
    target: usize,
) -> (String, u32) {
    let mut best: Option<(String, usize)> = None;
    for _ in 0..ATTEMPTS {
        let mut ids = prefix.to_vec();
        ids.extend(vocab.sample(rng, target.saturating_sub(prefix.len())));
        let mut previous: Option<String> = None;
        for _ in 0..ROUNDS {
            let text = tok.decode(&ids);
            if previous.as_ref() == Some(&text) {
                break;
            }
            let encoded = tok.encode(&text);
            if encoded.len() == target {
                return (text, target as u32);
            }
            if best
                .as_ref()
                .is_none_or(|(_, n)| n.abs_diff(target) > encoded.len().abs_diff(target))
            {
                best = Some((text.clone(), encoded.len()));
            }
            previous = Some(text);
            ids = encoded;
            if ids.len() > target {
                ids.truncate(target);
            } else {
                let missing = target - ids.len();
                ids.extend(vocab.sample(rng, missing));
            }
        }
    }
    let (text, n) = best.expect("at least one round ran");
    (text, n as u32)
}

/// Tokenizers for native tests of dataset readers: the host's import only exists inside the
/// component.
pub mod testing {
    use super::Tokenizer;

    /// One token per whitespace-separated word, like the host's default tokenizer; id 0 is a
    /// special token that decodes to nothing.
    pub struct Words;

    impl Tokenizer for Words {
        fn encode(&self, text: &str) -> Vec<u32> {
            text.split_whitespace()
                .map(|w| {
                    w.strip_prefix('w')
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1)
                })
                .collect()
        }

        fn decode(&self, ids: &[u32]) -> String {
            ids.iter()
                .filter(|&&id| id != 0)
                .map(|id| format!("w{id}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    }

    /// Greedy longest-match over pieces that overlap ("a" + "bc" re-encodes as "abc"), so
    /// decoded ids merge within a text and across a join, as BPE tokens can.
    pub struct Merging;

    pub const PIECES: [&str; 12] = [
        "<s>", " ", "a", "b", "c", "ab", "bc", "abc", " a", "ca", "aa", "cab",
    ];

    impl Tokenizer for Merging {
        fn encode(&self, text: &str) -> Vec<u32> {
            let mut out = Vec::new();
            let mut rest = text;
            while !rest.is_empty() {
                let (id, piece) = PIECES
                    .iter()
                    .enumerate()
                    .skip(1)
                    .filter(|(_, p)| rest.starts_with(**p))
                    .max_by_key(|(_, p)| p.len())
                    .unwrap_or_else(|| panic!("no piece for {rest:?}"));
                out.push(id as u32);
                rest = &rest[piece.len()..];
            }
            out
        }

        fn decode(&self, ids: &[u32]) -> String {
            ids.iter()
                .filter(|&&id| id != 0)
                .map(|&id| PIECES[id as usize])
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Merging, PIECES, Words};
    use super::*;

    #[test]
    fn merging_tokenizer_merges_across_a_join() {
        let a = Merging.decode(&[2]);
        let bc = Merging.decode(&[6]);
        assert_eq!(Merging.encode(&format!("{a}{bc}")), [7]);
    }

    #[test]
    fn random_text_has_the_exact_length_and_no_special_ids() {
        let words = Vocab::new(64, &[0]).unwrap();
        let pieces = Vocab::new(PIECES.len() as u32, &[0]).unwrap();
        for seed in 0..40 {
            let mut rng = SplitMix64::new(seed);
            for target in [0, 1, 2, 7, 50, 333] {
                let (text, n) = random_text(&Words, &words, &mut rng, target);
                assert_eq!((n as usize, Words.encode(&text).len()), (target, target));
                assert!(!Words.encode(&text).contains(&0));
                let (text, n) = random_text(&Merging, &pieces, &mut rng, target);
                assert_eq!(n as usize, target, "seed {seed}: {text:?}");
                assert_eq!(Merging.encode(&text).len(), target);
            }
        }
    }

    #[test]
    fn a_vocabulary_of_only_special_tokens_is_refused() {
        assert!(Vocab::new(2, &[1, 0]).is_err());
        assert!(Vocab::new(0, &[]).is_err());
    }
}

/// The text options of vLLM's random datasets (`random`, `random-mm`), as both readers take them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomText {
    pub count: u64,
    pub input_len: u32,
    pub output_len: u32,
    pub range_ratio: f64,
    pub prefix_len: u32,
}

impl RandomText {
    /// Reads `random-input-len`, `random-output-len`, `random-range-ratio` and
    /// `random-prefix-len` with vLLM's defaults (1024, 128, 0, 0).
    pub fn from_params(params: &DatasetParams) -> Result<Self, String> {
        let range_ratio: f64 = parse_option(params, "random-range-ratio", 0.0)?;
        if !(0.0..1.0).contains(&range_ratio) {
            return Err(format!(
                "--random-range-ratio must be in [0, 1), got {range_ratio}"
            ));
        }
        Ok(Self {
            count: params.count,
            input_len: parse_option(params, "random-input-len", 1024)?,
            output_len: parse_option(params, "random-output-len", 128)?,
            range_ratio,
            prefix_len: parse_option(params, "random-prefix-len", 0)?,
        })
    }
}
