//! The `--random-mm-*` options, read as vLLM reads them: how many images a request carries and
//! which sizes they are drawn from.

use llmb_plugin_sdk::SplitMix64;
use llmb_plugin_sdk::dataset::{DatasetParams, option, parse_option};

pub const BASE_KEY: &str = "random-mm-base-items-per-request";
pub const RATIO_KEY: &str = "random-mm-num-mm-items-range-ratio";
pub const LIMIT_KEY: &str = "random-mm-limit-mm-per-prompt";
pub const BUCKETS_KEY: &str = "random-mm-bucket-config";

/// vLLM's default sizes, without its zero-probability video bucket.
pub const DEFAULT_BUCKETS: &str = "{(256, 256, 1): 0.5, (720, 1280, 1): 0.5}";
/// vLLM's default cap on images per request.
pub const DEFAULT_IMAGE_LIMIT: u32 = 255;
/// A JPEG side is a 16-bit number.
pub const MAX_SIDE: u64 = u16::MAX as u64;
/// The largest image made (8192x8192): a noise JPEG that size is already about 40 MB, and every
/// request carrying one holds it in memory until the run ends.
pub const MAX_PIXELS: u64 = 8192 * 8192;

/// One entry of a bucket config as written: `(height, width, num_frames): probability`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub height: u64,
    pub width: u64,
    pub frames: u64,
    pub p: f64,
}

/// An image size that can be drawn, with its probability (the buckets' sum to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub height: u32,
    pub width: u32,
    pub p: f64,
}

/// A bucket config in the Python-dict syntax vLLM takes, `{(256, 256, 1): 0.5, ...}`: its
/// entries in order, a key given twice keeping its last probability (as a Python dict does).
pub fn parse_bucket_dict(text: &str) -> Result<Vec<Entry>, String> {
    let mut c = Cursor { s: text, at: 0 };
    let mut out: Vec<Entry> = Vec::new();
    c.expect('{', "'{'")?;
    if !c.eat('}') {
        loop {
            c.expect('(', "'(' opening a (height, width, num_frames) key")?;
            let height = c.integer("the height")?;
            c.expect(',', "',' after the height")?;
            let width = c.integer("the width")?;
            c.expect(
                ',',
                "',' after the width (keys are (height, width, num_frames))",
            )?;
            let frames = c.integer("num_frames")?;
            c.eat(',');
            c.expect(')', "')' closing the key")?;
            c.expect(':', "':' before the probability")?;
            let p = c.float("the probability")?;
            match out
                .iter_mut()
                .find(|e| (e.height, e.width, e.frames) == (height, width, frames))
            {
                Some(e) => e.p = p,
                None => out.push(Entry {
                    height,
                    width,
                    frames,
                    p,
                }),
            }
            if c.eat('}') {
                break;
            }
            c.expect(',', "',' or '}' after an entry")?;
            if c.eat('}') {
                break;
            }
        }
    }
    c.ws();
    if c.at < text.len() {
        return Err(format!("unexpected text after '}}' {}", c.position()));
    }
    Ok(out)
}

/// The image buckets of a parsed config, normalized. Zero-probability entries are dropped (a
/// video bucket among them, as in vLLM's default); a video bucket that could be drawn is refused.
pub fn image_buckets(entries: &[Entry]) -> Result<Vec<Bucket>, String> {
    let mut out = Vec::new();
    for e in entries {
        let key = format!("({}, {}, {})", e.height, e.width, e.frames);
        if !e.p.is_finite() || e.p < 0.0 {
            return Err(format!(
                "{key}: the probability must be a non-negative number, not {}",
                e.p
            ));
        }
        if e.frames == 0 {
            return Err(format!(
                "{key}: num_frames must be at least 1 (1 is an image)"
            ));
        }
        if e.p == 0.0 {
            continue;
        }
        if e.frames > 1 {
            return Err(format!(
                "{key} is a video bucket (num_frames > 1): only images (num_frames 1) are supported"
            ));
        }
        if e.height == 0 || e.width == 0 {
            return Err(format!(
                "{key}: an image needs a height and width of at least 1"
            ));
        }
        if e.height > MAX_SIDE || e.width > MAX_SIDE {
            return Err(format!(
                "{key}: a JPEG image is at most {MAX_SIDE} pixels a side"
            ));
        }
        if e.height * e.width > MAX_PIXELS {
            return Err(format!(
                "{key}: images are limited to {} megapixels (8192x8192)",
                MAX_PIXELS >> 20
            ));
        }
        out.push(Bucket {
            height: e.height as u32,
            width: e.width as u32,
            p: e.p,
        });
    }
    if out.is_empty() {
        return Err("no image bucket has a positive probability".into());
    }
    let total: f64 = out.iter().map(|b| b.p).sum();
    if !total.is_finite() {
        return Err("the probabilities add up to more than a float holds".into());
    }
    for b in &mut out {
        b.p /= total;
    }
    Ok(out)
}

/// The image cap of a `{"image": 3, "video": 0}` limit (Python's single quotes accepted too, as
/// vLLM prints its default). Other modalities are ignored: only images are made.
pub fn parse_image_limit(text: &str) -> Result<u32, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .or_else(|e| serde_json::from_str(&text.replace('\'', "\"")).map_err(|_| e))
        .map_err(|e| format!("not a JSON object: {e}"))?;
    let obj = value
        .as_object()
        .ok_or("expected a JSON object such as {\"image\": 3}")?;
    let image = obj
        .get("image")
        .ok_or("no \"image\" limit (the images are what this dataset makes)")?;
    let limit = image
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            format!("the \"image\" limit must be a non-negative integer, not {image}")
        })?;
    // One request is generated whole inside the sandbox: billions of images would exhaust it
    // instead of failing with a reason.
    if limit > MAX_IMAGES_PER_REQUEST {
        return Err(format!(
            "the \"image\" limit {limit} is more than the {MAX_IMAGES_PER_REQUEST} images one \
             request can carry here"
        ));
    }
    Ok(limit)
}

/// The most images one generated request may carry (vLLM's default limit is 255).
pub const MAX_IMAGES_PER_REQUEST: u32 = 1024;

/// vLLM's range of images per request: `[floor(n*(1-r)), ceil(n*(1+r))]`, its top clamped to
/// `limit`; an error when the bottom is above the top.
pub fn item_range(base: u32, ratio: f64, limit: u32) -> Result<(u32, u32), String> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("--{RATIO_KEY} must be in [0, 1], got {ratio}"));
    }
    let min = (base as f64 * (1.0 - ratio)).floor().max(0.0) as u32;
    let max = ((base as f64 * (1.0 + ratio)).ceil() as u64).min(limit as u64) as u32;
    if min > max {
        return Err(format!(
            "at least {min} images per request (--{BASE_KEY} {base}, --{RATIO_KEY} {ratio}) \
             but at most {limit} allowed by --{LIMIT_KEY}"
        ));
    }
    Ok((min, max))
}

/// How the images of each request are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    pub min: u32,
    pub max: u32,
    pub buckets: Vec<Bucket>,
}

impl Images {
    /// Reads the four `--random-mm-*` options; errors name the option.
    pub fn from_params(params: &DatasetParams) -> Result<Self, String> {
        let base: u32 = parse_option(params, BASE_KEY, 1)?;
        let ratio: f64 = parse_option(params, RATIO_KEY, 0.0)?;
        let limit = match option(params, LIMIT_KEY) {
            None => DEFAULT_IMAGE_LIMIT,
            Some(v) => {
                parse_image_limit(v).map_err(|e| format!("invalid --{LIMIT_KEY} {v:?}: {e}"))?
            }
        };
        let text = option(params, BUCKETS_KEY).unwrap_or(DEFAULT_BUCKETS);
        let buckets = parse_bucket_dict(text)
            .and_then(|entries| image_buckets(&entries))
            .map_err(|e| format!("invalid --{BUCKETS_KEY} {text:?}: {e}"))?;
        let (min, max) = item_range(base, ratio, limit)?;
        Ok(Self { min, max, buckets })
    }

    /// How many images the next request carries: uniform over `[min, max]`.
    pub fn count(&self, rng: &mut SplitMix64) -> u32 {
        rng.range_inclusive(self.min as u64, self.max as u64) as u32
    }

    /// The size of the next image, by the buckets' probabilities.
    pub fn bucket(&self, rng: &mut SplitMix64) -> Bucket {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut acc = 0.0;
        for b in &self.buckets {
            acc += b.p;
            if u < acc {
                return *b;
            }
        }
        *self.buckets.last().expect("at least one bucket")
    }
}

/// A hand-written reader for the small Python-literal subset a bucket config uses.
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl Cursor<'_> {
    fn ws(&mut self) {
        let rest = &self.s[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    fn position(&self) -> String {
        format!("at character {}", self.s[..self.at].chars().count() + 1)
    }

    fn eat(&mut self, c: char) -> bool {
        self.ws();
        if self.s[self.at..].starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected {what} {}", self.position()))
        }
    }

    /// The text of a number literal (digits, signs, a point, an exponent, `_` separators).
    fn literal(&mut self, what: &str) -> Result<(String, String), String> {
        self.ws();
        let position = self.position();
        let rest = &self.s[self.at..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_')))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(format!("expected {what} {position}"));
        }
        self.at += len;
        Ok((rest[..len].replace('_', ""), position))
    }

    fn integer(&mut self, what: &str) -> Result<u64, String> {
        let (text, position) = self.literal(what)?;
        text.parse()
            .map_err(|_| format!("{what} {position} must be a non-negative integer, not {text:?}"))
    }

    fn float(&mut self, what: &str) -> Result<f64, String> {
        let (text, position) = self.literal(what)?;
        text.parse()
            .map_err(|_| format!("{what} {position} must be a number, not {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(height: u64, width: u64, frames: u64, p: f64) -> Entry {
        Entry {
            height,
            width,
            frames,
            p,
        }
    }

    fn params(options: &[(&str, &str)]) -> DatasetParams {
        llmb_plugin_sdk::testing::dataset_params(1, 10, options, &[])
    }

    #[test]
    fn bucket_configs_parse_as_python_dicts() {
        assert_eq!(
            parse_bucket_dict(DEFAULT_BUCKETS).unwrap(),
            [entry(256, 256, 1, 0.5), entry(720, 1280, 1, 0.5)]
        );
        assert_eq!(
            parse_bucket_dict("{(256, 256, 1): 0.5, (720, 1280, 1): 0.4, (720, 1280, 16): 0.10}")
                .unwrap(),
            [
                entry(256, 256, 1, 0.5),
                entry(720, 1280, 1, 0.4),
                entry(720, 1280, 16, 0.1)
            ]
        );
        assert_eq!(
            parse_bucket_dict(" {\n(1,2,1,):1, (3, 4, 1): 1e-1,(1, 2, 1): .5,} ").unwrap(),
            [entry(1, 2, 1, 0.5), entry(3, 4, 1, 0.1)]
        );
        assert_eq!(parse_bucket_dict("{}").unwrap(), []);
        assert_eq!(
            parse_bucket_dict("{(1_024, 768, 1): 2}").unwrap(),
            [entry(1024, 768, 1, 2.0)]
        );
    }

    #[test]
    fn bucket_syntax_errors_say_where() {
        for (text, what) in [
            ("", "expected '{' at character 1"),
            ("[(1, 1, 1): 1]", "expected '{'"),
            ("{(256, 256): 0.5}", "after the width"),
            ("{(256, 256, 1) 0.5}", "expected ':' before the probability"),
            (
                "{(256, 256, 1): }",
                "expected the probability at character 17",
            ),
            (
                "{(256, -1, 1): 1}",
                "the width at character 8 must be a non-negative integer",
            ),
            (
                "{(256, 2.5, 1): 1}",
                "must be a non-negative integer, not \"2.5\"",
            ),
            ("{(1, 1, 1): half}", "must be a number, not \"half\""),
            ("{(1, 1, 1): 1", "expected ',' or '}'"),
            (
                "{(1, 1, 1): 1} x",
                "unexpected text after '}' at character 16",
            ),
            ("{(1, 1, 1): 1 (2, 2, 1): 1}", "expected ',' or '}'"),
        ] {
            let err = parse_bucket_dict(text).unwrap_err();
            assert!(err.contains(what), "{text:?}: {err}");
        }
    }

    #[test]
    fn buckets_are_normalized_and_videos_refused() {
        let b = image_buckets(&[entry(1, 2, 1, 1.0), entry(3, 4, 1, 3.0)]).unwrap();
        assert_eq!(
            b,
            [
                Bucket {
                    height: 1,
                    width: 2,
                    p: 0.25
                },
                Bucket {
                    height: 3,
                    width: 4,
                    p: 0.75
                }
            ]
        );
        // vLLM's own default carries a video bucket of probability 0: it is dropped.
        let vllm_default = "{(256, 256, 1): 0.5, (720, 1280, 1): 0.5, (720, 1280, 16): 0.0}";
        let b = image_buckets(&parse_bucket_dict(vllm_default).unwrap()).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b[1].height, b[1].width, b[1].p), (720, 1280, 0.5));
        for (entries, what) in [
            (
                vec![entry(720, 1280, 16, 0.1)],
                "only images (num_frames 1) are supported",
            ),
            (vec![entry(1, 1, 0, 1.0)], "num_frames must be at least 1"),
            (vec![entry(1, 1, 1, -0.5)], "non-negative number"),
            (vec![entry(1, 1, 1, f64::NAN)], "non-negative number"),
            (
                vec![entry(1, 1, 1, 0.0)],
                "no image bucket has a positive probability",
            ),
            (vec![], "no image bucket"),
            (vec![entry(0, 5, 1, 1.0)], "at least 1"),
            (
                vec![entry(70_000, 5, 1, 1.0)],
                "at most 65535 pixels a side",
            ),
            (
                vec![entry(10_000, 10_000, 1, 1.0)],
                "limited to 64 megapixels",
            ),
            (
                vec![entry(1, 1, 1, f64::MAX), entry(2, 2, 1, f64::MAX)],
                "add up to more",
            ),
        ] {
            let err = image_buckets(&entries).unwrap_err();
            assert!(err.contains(what), "{entries:?}: {err}");
        }
    }

    #[test]
    fn image_limits() {
        assert_eq!(parse_image_limit("{\"image\": 3, \"video\": 0}"), Ok(3));
        assert_eq!(parse_image_limit("{'image': 255, 'video': 1}"), Ok(255));
        assert_eq!(parse_image_limit("{\"image\": 0}"), Ok(0));
        for (text, what) in [
            ("{\"video\": 1}", "no \"image\" limit"),
            ("{\"image\": -1}", "non-negative integer"),
            ("{\"image\": 1.5}", "non-negative integer"),
            ("{\"image\": 4294967296}", "non-negative integer"),
            ("[3]", "expected a JSON object"),
            ("image=3", "not a JSON object"),
        ] {
            let err = parse_image_limit(text).unwrap_err();
            assert!(err.contains(what), "{text:?}: {err}");
        }
    }

    #[test]
    fn item_ranges_follow_vllm() {
        assert_eq!(item_range(1, 0.0, 255), Ok((1, 1)));
        assert_eq!(item_range(2, 0.5, 255), Ok((1, 3)));
        assert_eq!(item_range(3, 1.0, 255), Ok((0, 6)));
        assert_eq!(item_range(3, 0.3, 255), Ok((2, 4)));
        assert_eq!(item_range(4, 0.5, 3), Ok((2, 3)));
        assert_eq!(item_range(0, 0.0, 0), Ok((0, 0)));
        let err = item_range(4, 0.0, 3).unwrap_err();
        for key in [BASE_KEY, RATIO_KEY, LIMIT_KEY] {
            assert!(err.contains(&format!("--{key}")), "{err}");
        }
        assert!(
            err.contains("at least 4") && err.contains("at most 3"),
            "{err}"
        );
        for bad in [1.5, -0.1, f64::NAN] {
            let err = item_range(1, bad, 255).unwrap_err();
            assert!(
                err.contains(&format!("--{RATIO_KEY} must be in [0, 1]")),
                "{err}"
            );
        }
    }

    #[test]
    fn options_are_read_and_errors_name_them() {
        let images = Images::from_params(&params(&[])).unwrap();
        assert_eq!((images.min, images.max, images.buckets.len()), (1, 1, 2));
        let images = Images::from_params(&params(&[
            (BASE_KEY, "4"),
            (RATIO_KEY, "0.5"),
            (LIMIT_KEY, "{\"image\": 5}"),
            (BUCKETS_KEY, "{(10, 20, 1): 1}"),
        ]))
        .unwrap();
        assert_eq!((images.min, images.max), (2, 5));
        assert_eq!(images.buckets[0].width, 20);
        for (key, value) in [
            (BASE_KEY, "-1"),
            (RATIO_KEY, "x"),
            (LIMIT_KEY, "{\"image\": 0}"),
            (BUCKETS_KEY, "{(720, 1280, 16): 1}"),
        ] {
            let err = Images::from_params(&params(&[(key, value)])).unwrap_err();
            assert!(err.contains(&format!("--{key}")), "{key}={value}: {err}");
        }
        let err =
            Images::from_params(&params(&[(BUCKETS_KEY, "{(720, 1280, 16): 1}")])).unwrap_err();
        assert!(err.contains("only images"), "{err}");
    }

    #[test]
    fn counts_stay_in_bounds_and_reach_both_ends() {
        let images = Images {
            min: 2,
            max: 5,
            buckets: image_buckets(&[entry(1, 1, 1, 1.0)]).unwrap(),
        };
        let mut rng = SplitMix64::new(7);
        let mut seen = [0u32; 6];
        for _ in 0..2000 {
            seen[images.count(&mut rng) as usize] += 1;
        }
        assert_eq!(seen[..2], [0, 0]);
        assert!(seen[2..].iter().all(|&n| n > 350), "{seen:?}");
    }

    #[test]
    fn buckets_are_drawn_by_their_probabilities() {
        let images = Images {
            min: 1,
            max: 1,
            buckets: image_buckets(&[entry(1, 1, 1, 1.0), entry(2, 2, 1, 3.0)]).unwrap(),
        };
        let mut rng = SplitMix64::new(3);
        let big = (0..4000)
            .filter(|_| images.bucket(&mut rng).width == 2)
            .count();
        assert!((2850..3150).contains(&big), "{big}");
    }
}
