//! The host tokenizer: a Hugging Face `tokenizer.json` via the `tokenizers` crate, or, when no
//! `--tokenizer` is given, a word tokenizer (one token per whitespace-separated word) that the
//! built-in simulator counts the same way, so lengths agree end to end without model files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// Size of the word tokenizer's vocabulary.
const WORD_VOCAB: usize = 4096;

/// Counts, encodes and decodes text for datasets (prompt lengths) and metrics (output lengths
/// when the server reports no usage).
pub enum HostTokenizer {
    HuggingFace {
        id: String,
        inner: Box<tokenizers::Tokenizer>,
    },
    Words,
}

impl HostTokenizer {
    /// Loads `path` (a tokenizer.json or a folder holding one); `None` gives the word tokenizer.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(HostTokenizer::Words);
        };
        let file: PathBuf = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        if !file.exists() {
            bail!(
                "tokenizer {}: no such file (give a tokenizer.json or a folder holding one; \
                 llmb does not download tokenizers)",
                file.display()
            );
        }
        let inner = tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot load tokenizer {}", file.display()))?;
        Ok(HostTokenizer::HuggingFace {
            id: path.display().to_string(),
            inner: Box::new(inner),
        })
    }

    /// What the report calls this tokenizer (`tokenizer_id`).
    pub fn id(&self) -> String {
        match self {
            HostTokenizer::HuggingFace { id, .. } => id.clone(),
            HostTokenizer::Words => "llmb-words (whitespace)".into(),
        }
    }

    pub fn count(&self, text: &str) -> u32 {
        match self {
            HostTokenizer::HuggingFace { inner, .. } => inner
                .encode_fast(text, false)
                .map(|e| e.len() as u32)
                .unwrap_or(0),
            HostTokenizer::Words => count_words(text),
        }
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            HostTokenizer::HuggingFace { inner, .. } => inner
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default(),
            HostTokenizer::Words => text.split_whitespace().map(word_id).collect(),
        }
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            HostTokenizer::HuggingFace { inner, .. } => inner.decode(ids, true).unwrap_or_default(),
            HostTokenizer::Words => {
                let mut out = String::with_capacity(ids.len() * 6);
                for (i, &id) in ids.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(word_for(id as u64));
                }
                out
            }
        }
    }

    /// Ids of special tokens, so generated prompts avoid them (as vLLM's random dataset does).
    pub fn special_ids(&self) -> Vec<u32> {
        match self {
            HostTokenizer::HuggingFace { inner, .. } => {
                let mut ids: Vec<u32> = inner
                    .get_added_tokens_decoder()
                    .into_iter()
                    .filter(|(_, t)| t.special)
                    .map(|(id, _)| id)
                    .collect();
                ids.sort_unstable();
                ids
            }
            HostTokenizer::Words => Vec::new(),
        }
    }

    pub fn vocab_size(&self) -> u32 {
        match self {
            HostTokenizer::HuggingFace { inner, .. } => inner.get_vocab_size(true) as u32,
            HostTokenizer::Words => WORD_VOCAB as u32,
        }
    }
}

/// Tokens of `text` under the word tokenizer.
pub fn count_words(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

fn words() -> &'static [String] {
    static WORDS: OnceLock<Vec<String>> = OnceLock::new();
    WORDS.get_or_init(|| {
        const ONSETS: [&str; 16] = [
            "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "st",
        ];
        const VOWELS: [&str; 8] = ["a", "e", "i", "o", "u", "ai", "ou", "ea"];
        const CODAS: [&str; 32] = [
            "", "n", "r", "l", "s", "t", "m", "k", "nd", "st", "rk", "lt", "mp", "ng", "x", "sh",
            "na", "ra", "lo", "mi", "ve", "to", "da", "ko", "ne", "ri", "su", "be", "ga", "po",
            "ze", "fu",
        ];
        let mut out = Vec::with_capacity(WORD_VOCAB);
        for o in ONSETS {
            for v in VOWELS {
                for c in CODAS {
                    out.push(format!("{o}{v}{c}"));
                }
            }
        }
        out
    })
}

/// The word with id `id` (modulo the vocabulary): short lowercase ASCII, never needs escaping.
pub fn word_for(id: u64) -> &'static str {
    let words = words();
    &words[(id % words.len() as u64) as usize]
}

fn word_id(word: &str) -> u32 {
    static INDEX: OnceLock<std::collections::HashMap<&'static str, u32>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        words()
            .iter()
            .enumerate()
            .map(|(i, w)| (w.as_str(), i as u32))
            .collect()
    });
    index.get(word).copied().unwrap_or_else(|| {
        let h = word.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        (h % WORD_VOCAB as u64) as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_tokenizer_round_trips() {
        let t = HostTokenizer::Words;
        let ids: Vec<u32> = (0..500).map(|i| (i * 37 % 4096) as u32).collect();
        let text = t.decode(&ids);
        assert_eq!(t.encode(&text), ids);
        assert_eq!(t.count(&text), 500);
        let distinct: std::collections::HashSet<_> = words().iter().collect();
        assert_eq!(
            distinct.len(),
            WORD_VOCAB,
            "vocabulary words must be unique"
        );
    }
}
