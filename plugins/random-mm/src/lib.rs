//! The `random-mm` dataset: vLLM's random multimodal prompts. Each request is one user message:
//! random-token text built as the `random` reader builds it (`--random-input-len`,
//! `--random-output-len`, `--random-range-ratio`, `--random-prefix-len`), then a number of
//! random-noise JPEG images drawn as vLLM draws them:
//!
//! - `random-mm-base-items-per-request` n (default 1) and `random-mm-num-mm-items-range-ratio` r
//!   (default 0): the count is uniform over `[floor(n*(1-r)), ceil(n*(1+r))]`, clamped to the
//!   `"image"` cap of `random-mm-limit-mm-per-prompt` (`{"image": 3, "video": 0}`, default 255);
//! - `random-mm-bucket-config` (`{(256, 256, 1): 0.5, (720, 1280, 1): 0.5}` by default): each
//!   image's (height, width, num_frames) drawn by probability. Only images (num_frames 1) are
//!   made; a video bucket is refused unless its probability is 0.
//!
//! Everything follows `--seed`: the same seed gives byte-identical images. Images are made as
//! each batch is asked for, never all up front, and a batch stops early once it holds
//! [`BATCH_BYTES`] of images, so the sandbox never holds more than that at once.

use std::cell::RefCell;

use llmb_plugin_sdk::SplitMix64;
use llmb_plugin_sdk::dataset::{
    ContentPart, DatasetInfo, DatasetParams, Guest, GuestSource, Image, MultimodalMessage, Prompt,
    Role, Sample,
};
use llmb_plugin_sdk::tokens::{
    HostTokenizer, RandomText, Tokenizer, Vocab, random_text_after, sample_len, sample_output_len,
};

pub mod noise;
pub mod options;

use options::Images;

/// A batch stops adding requests once its images reach this many bytes (it always holds one).
pub const BATCH_BYTES: usize = 32 << 20;

pub struct RandomMm;

/// The generator state behind one `source`, or the error opening it gave.
pub struct RandomMmSource {
    state: RefCell<Result<State, String>>,
}

/// One run's generator.
pub struct State {
    text: RandomText,
    images: Images,
    vocab: Vocab,
    rng: SplitMix64,
    prefix: Vec<u32>,
    produced: u64,
    batch_bytes: usize,
}

impl State {
    /// A generator over `vocab` (the host tokenizer's in the plugin, a test one natively).
    pub fn new(params: &DatasetParams, vocab: Vocab) -> Result<Self, String> {
        let text = RandomText::from_params(params)?;
        let images = Images::from_params(params)?;
        let mut rng = SplitMix64::new(params.seed ^ 0x5EED_0000_0000_0A11);
        let prefix = vocab.sample(&mut rng, text.prefix_len as usize);
        Ok(Self {
            text,
            images,
            vocab,
            rng,
            prefix,
            produced: 0,
            batch_bytes: BATCH_BYTES,
        })
    }

    /// Up to `max` more requests (fewer once a batch holds [`BATCH_BYTES`] of images); empty
    /// when the run has all it asked for (1,000 when the count is 0, as `random`).
    ///
    /// `input_tokens` counts the text alone: how many tokens an image costs is the server's
    /// business (its processor and the model decide), so the server's reported prompt tokens
    /// are larger.
    pub fn next(&mut self, tok: &dyn Tokenizer, max: u32) -> Result<Vec<Sample>, String> {
        let t = self.text;
        let count = if t.count == 0 { 1000 } else { t.count };
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < max as usize && self.produced < count && bytes < self.batch_bytes {
            let input_len = sample_len(&mut self.rng, t.input_len, t.range_ratio);
            let output_len = sample_output_len(&mut self.rng, t.output_len, t.range_ratio);
            let target = self.prefix.len() + input_len as usize;
            let (text, input_tokens) =
                random_text_after(tok, &self.vocab, &mut self.rng, &self.prefix, target);
            let mut parts = Vec::new();
            if !text.is_empty() {
                parts.push(ContentPart::Text(text));
            }
            for _ in 0..self.images.count(&mut self.rng) {
                let bucket = self.images.bucket(&mut self.rng);
                let data = noise::jpeg(bucket.width, bucket.height, self.rng.next_u64())?;
                bytes += data.len();
                parts.push(ContentPart::Image(Image {
                    data,
                    mime_type: "image/jpeg".into(),
                    url: None,
                    width: Some(bucket.width),
                    height: Some(bucket.height),
                }));
            }
            out.push(Sample {
                prompt: Prompt::Multimodal(vec![MultimodalMessage {
                    role: Role::User,
                    parts,
                }]),
                input_tokens,
                output_tokens: output_len,
                timestamp: None,
            });
            self.produced += 1;
        }
        Ok(out)
    }
}

impl Guest for RandomMm {
    type Source = RandomMmSource;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "random-mm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "vLLM's random multimodal prompts: random-token text (--random-input-len, \
                --random-output-len, --random-range-ratio, --random-prefix-len) followed by random-noise \
                JPEG images; --random-mm-base-items-per-request, --random-mm-num-mm-items-range-ratio, \
                --random-mm-limit-mm-per-prompt '{\"image\": N}', --random-mm-bucket-config \
                '{(height, width, 1): probability, ...}' (images only); input tokens count the text"
                .into(),
        }
    }
}

impl GuestSource for RandomMmSource {
    fn new(params: DatasetParams) -> Self {
        let state = Vocab::host().and_then(|vocab| State::new(&params, vocab));
        Self {
            state: RefCell::new(state),
        }
    }

    fn next_batch(&self, max: u32) -> Result<Vec<Sample>, String> {
        let mut guard = self.state.borrow_mut();
        let st = guard.as_mut().map_err(|e| e.clone())?;
        st.next(&HostTokenizer, max)
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_dataset!(RandomMm);

#[cfg(test)]
mod tests {
    use super::*;
    use llmb_plugin_sdk::tokens::testing::Words;

    fn params(seed: u64, count: u64, options: &[(&str, &str)]) -> DatasetParams {
        llmb_plugin_sdk::testing::dataset_params(seed, count, options, &[])
    }

    fn state(seed: u64, count: u64, options: &[(&str, &str)]) -> State {
        State::new(&params(seed, count, options), Vocab::new(64, &[0]).unwrap()).unwrap()
    }

    /// Small images, so the tests stay quick.
    const SMALL: (&str, &str) = (
        "random-mm-bucket-config",
        "{(16, 32, 1): 0.5, (24, 8, 1): 0.5}",
    );

    /// A request as comparable values: text, then (width, height, mime, bytes) per image.
    type Summary = (String, Vec<(u32, u32, String, Vec<u8>)>, u32, u32);

    fn summary(s: &Sample) -> Summary {
        let Prompt::Multimodal(messages) = &s.prompt else {
            panic!("not multimodal");
        };
        assert_eq!(messages.len(), 1);
        assert!(matches!(messages[0].role, Role::User));
        let text = llmb_plugin_sdk::media::dataset_message_text(&messages[0]);
        let images = messages[0]
            .parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Image(i) => {
                    assert!(i.url.is_none());
                    Some((
                        i.width.unwrap(),
                        i.height.unwrap(),
                        i.mime_type.clone(),
                        i.data.clone(),
                    ))
                }
                ContentPart::Text(_) => None,
            })
            .collect();
        (text, images, s.input_tokens, s.output_tokens)
    }

    fn run(st: &mut State, max: u32) -> Vec<Summary> {
        st.next(&Words, max).unwrap().iter().map(summary).collect()
    }

    #[test]
    fn one_user_message_text_first_then_images() {
        let opts = [
            SMALL,
            ("random-input-len", "12"),
            ("random-output-len", "9"),
            ("random-mm-base-items-per-request", "2"),
        ];
        let samples = state(1, 5, &opts).next(&Words, 100).unwrap();
        assert_eq!(samples.len(), 5);
        for s in &samples {
            let Prompt::Multimodal(m) = &s.prompt else {
                panic!()
            };
            assert!(matches!(m[0].parts[0], ContentPart::Text(_)));
            assert!(
                m[0].parts[1..]
                    .iter()
                    .all(|p| matches!(p, ContentPart::Image(_)))
            );
            let (text, images, input, output) = summary(s);
            assert_eq!((input, output), (12, 9));
            assert_eq!(Words.encode(&text).len(), 12);
            assert_eq!(images.len(), 2);
            for (w, h, mime, data) in images {
                assert!(matches!((w, h), (32, 16) | (8, 24)), "{w}x{h}");
                assert_eq!(mime, "image/jpeg");
                let mut d = jpeg_decoder::Decoder::new(&data[..]);
                d.decode().unwrap();
                let info = d.info().unwrap();
                assert_eq!((info.width as u32, info.height as u32), (w, h));
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_requests_whatever_the_batches() {
        let opts = [
            SMALL,
            ("random-input-len", "20"),
            ("random-range-ratio", "0.5"),
            ("random-mm-base-items-per-request", "2"),
            ("random-mm-num-mm-items-range-ratio", "1"),
        ];
        let whole = run(&mut state(9, 12, &opts), 100);
        assert_eq!(whole.len(), 12);
        let mut st = state(9, 12, &opts);
        let mut pieces = Vec::new();
        for max in [1, 5, 2, 100] {
            pieces.extend(run(&mut st, max));
        }
        assert_eq!(pieces, whole);
        assert!(run(&mut st, 100).is_empty());
        assert_ne!(run(&mut state(10, 12, &opts), 100), whole);
        let counts: Vec<usize> = whole.iter().map(|s| s.1.len()).collect();
        assert!(counts.iter().all(|&n| n <= 4), "{counts:?}");
        assert!(counts.iter().any(|&n| n != counts[0]), "{counts:?}");
        assert!(whole.iter().all(|s| (10..=30).contains(&s.2)));
    }

    #[test]
    fn the_image_limit_caps_the_count() {
        let opts = [
            SMALL,
            ("random-input-len", "3"),
            ("random-mm-base-items-per-request", "4"),
            ("random-mm-num-mm-items-range-ratio", "0.5"),
            (
                "random-mm-limit-mm-per-prompt",
                "{\"image\": 3, \"video\": 0}",
            ),
        ];
        let all = run(&mut state(2, 40, &opts), 100);
        assert!(all.iter().all(|s| (2..=3).contains(&s.1.len())));
        assert!(all.iter().any(|s| s.1.len() == 2) && all.iter().any(|s| s.1.len() == 3));
    }

    #[test]
    fn no_text_and_no_images_are_allowed() {
        let opts = [
            SMALL,
            ("random-input-len", "0"),
            ("random-mm-base-items-per-request", "1"),
        ];
        let s = &state(1, 1, &opts).next(&Words, 1).unwrap()[0];
        let Prompt::Multimodal(m) = &s.prompt else {
            panic!()
        };
        assert_eq!(m[0].parts.len(), 1);
        assert_eq!(s.input_tokens, 0);
        let opts = [SMALL, ("random-mm-base-items-per-request", "0")];
        let all = run(&mut state(1, 3, &opts), 10);
        assert!(all.iter().all(|s| s.1.is_empty() && s.2 == 1024));
    }

    #[test]
    fn batches_stop_at_their_byte_budget() {
        let opts = [SMALL, ("random-input-len", "2")];
        let mut st = state(4, 0, &opts);
        st.batch_bytes = 1;
        assert_eq!(st.next(&Words, 512).unwrap().len(), 1);
        st.batch_bytes = 2_000;
        let n = st.next(&Words, 512).unwrap().len();
        assert!((2..512).contains(&n), "{n}");
        st.batch_bytes = usize::MAX;
        let rest = st.next(&Words, 5_000).unwrap().len() as u64;
        assert_eq!(1 + n as u64 + rest, 1000, "count 0 means 1,000 as `random`");
    }

    #[test]
    fn option_errors_surface() {
        let vocab = || Vocab::new(64, &[0]).unwrap();
        for (key, value, what) in [
            (
                "random-mm-bucket-config",
                "{(720, 1280, 16): 0.1}",
                "only images",
            ),
            (
                "random-mm-limit-mm-per-prompt",
                "{\"image\": 0}",
                "at most 0",
            ),
            ("random-range-ratio", "1", "must be in [0, 1)"),
        ] {
            let err = State::new(&params(1, 1, &[(key, value)]), vocab())
                .err()
                .unwrap();
            assert!(
                err.contains(&format!("--{key}")) && err.contains(what),
                "{err}"
            );
        }
    }

    /// Odd option values: an error naming the option, never a panic.
    #[test]
    fn fuzz_options() {
        llmb_plugin_sdk::testing::fuzz::options(
            &[
                "random-input-len",
                "random-output-len",
                "random-range-ratio",
                "random-prefix-len",
                options::BASE_KEY,
                options::RATIO_KEY,
                options::LIMIT_KEY,
                options::BUCKETS_KEY,
            ],
            |p| {
                let t = RandomText::from_params(p)?;
                let images = Images::from_params(p)?;
                let mut rng = SplitMix64::new(p.seed);
                sample_len(&mut rng, t.input_len, t.range_ratio);
                images.count(&mut rng);
                images.bucket(&mut rng);
                Ok(())
            },
        );
    }
}
