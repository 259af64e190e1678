//! The `random` dataset: prompts of random tokens with seeded lengths, as `vllm bench serve`
//! builds them (`--random-input-len`, `--random-output-len`, `--random-range-ratio`,
//! `--random-prefix-len`). Token ids (special tokens excluded) are decoded with the host
//! tokenizer and re-encoded until the prompt is exactly the asked length, so the reported input
//! length is the tokenizer's true count.

use std::cell::RefCell;

use llmb_plugin_sdk::SplitMix64;
use llmb_plugin_sdk::dataset::{DatasetInfo, DatasetParams, Guest, GuestSource, Prompt, Sample};
use llmb_plugin_sdk::tokens::{
    HostTokenizer, RandomText, Vocab, random_text_after, sample_len, sample_output_len,
};

pub struct Random;

/// The generator state behind one `source`.
pub struct RandomSource {
    state: RefCell<Result<State, String>>,
}

struct State {
    config: RandomText,
    vocab: Vocab,
    rng: SplitMix64,
    produced: u64,
    prefix: Vec<u32>,
}

fn open(params: &DatasetParams) -> Result<State, String> {
    let config = RandomText::from_params(params)?;
    let vocab = Vocab::host()?;
    let mut rng = SplitMix64::new(params.seed ^ 0x5EED_0000_0000_0001);
    let prefix = vocab.sample(&mut rng, config.prefix_len as usize);
    Ok(State {
        config,
        vocab,
        rng,
        produced: 0,
        prefix,
    })
}

impl Guest for Random {
    type Source = RandomSource;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "random".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Random-token prompts with seeded lengths (--random-input-len, --random-output-len, --random-range-ratio, --random-prefix-len)".into(),
        }
    }
}

impl GuestSource for RandomSource {
    fn new(params: DatasetParams) -> Self {
        Self {
            state: RefCell::new(open(&params)),
        }
    }

    fn next_batch(&self, max: u32) -> Result<Vec<Sample>, String> {
        let mut guard = self.state.borrow_mut();
        let st = guard.as_mut().map_err(|e| e.clone())?;
        let c = st.config;
        let count = if c.count == 0 { 1000 } else { c.count };
        let n = (count - st.produced).min(max as u64);
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let input_len = sample_len(&mut st.rng, c.input_len, c.range_ratio);
            let output_len = sample_output_len(&mut st.rng, c.output_len, c.range_ratio);
            let target = st.prefix.len() + input_len as usize;
            let (text, input_tokens) =
                random_text_after(&HostTokenizer, &st.vocab, &mut st.rng, &st.prefix, target);
            out.push(Sample {
                prompt: Prompt::Text(text),
                input_tokens,
                output_tokens: output_len,
                timestamp: None,
            });
        }
        st.produced += n;
        Ok(out)
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_dataset!(Random);

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd option values: an error naming the option, never a panic.
    #[test]
    fn fuzz_options() {
        llmb_plugin_sdk::testing::fuzz::options(
            &[
                "random-input-len",
                "random-output-len",
                "random-range-ratio",
                "random-prefix-len",
            ],
            |p| {
                let c = RandomText::from_params(p)?;
                let mut rng = SplitMix64::new(p.seed);
                sample_len(&mut rng, c.input_len, c.range_ratio);
                sample_output_len(&mut rng, c.output_len, c.range_ratio);
                Ok(())
            },
        );
    }
}
