//! The `audio` dataset: a JSONL list of clips for speech-to-text benchmarks
//! (`--dataset-name audio --dataset-path LIST.jsonl`, sent with `--backend openai-audio`).
//!
//! Each line is `{"audio": "clips/a.wav", "text": "reference transcript", "output_tokens": N}`;
//! only `audio` is required. Audio paths are relative to the list's directory, which the host
//! grants read-only as `/data`, so absolute paths and `..` are refused: they could not be read
//! and would hide a mistake. A WAV clip's duration comes from its RIFF header (for real-time
//! factor); other formats are sent without one. Errors name the list file and the line.

use std::cell::RefCell;

use llmb_plugin_sdk::SplitMix64;
use llmb_plugin_sdk::dataset::{
    DatasetInfo, DatasetParams, Guest, GuestSource, Prompt, Sample, option, parse_option,
};
use llmb_plugin_sdk::dataset_bindings::llmb::plugin::types::AudioClip;
use serde_json::Value;

/// Where the list's directory is mounted inside the sandbox.
const DATA_DIR: &str = "/data";

/// The `audio` dataset.
pub struct Audio;

/// The clips of one run, or the error that opening the list produced (reported by the first
/// `next-batch`, as the contract asks).
pub struct AudioSource {
    state: RefCell<Result<State, String>>,
}

/// One line of the list, before its audio is read; `line` is kept for later error messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub line: usize,
    pub audio: String,
    pub reference: Option<String>,
    pub output_tokens: Option<u32>,
}

/// A list line with its audio loaded, ready to become samples.
#[derive(Debug, Clone)]
pub struct Clip {
    pub clip: AudioClip,
    pub output_tokens: Option<u32>,
}

struct State {
    clips: Vec<Clip>,
    order: Vec<usize>,
    produced: u64,
    count: u64,
    output_len: u32,
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Seconds of audio in a RIFF/WAVE file: the `data` chunk's size over the `fmt ` chunk's byte
/// rate. `None` when the bytes are not a WAV file or lack either chunk. A `data` size larger than
/// the file (streaming writers leave a placeholder) is clamped to the bytes present.
pub fn wav_duration(bytes: &[u8]) -> Option<f64> {
    if bytes.get(0..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut byte_rate = None;
    while let (Some(id), Some(size)) = (bytes.get(at..at + 4), read_u32(bytes, at + 4)) {
        let body = at + 8;
        match id {
            b"fmt " => byte_rate = read_u32(bytes, body + 8),
            b"data" => {
                let rate = byte_rate.filter(|&r| r > 0)?;
                let available = bytes.len() - body;
                let size = (size as usize).min(available);
                return Some(size as f64 / rate as f64);
            }
            _ => {}
        }
        at = body
            .checked_add(size as usize)?
            .checked_add(size as usize & 1)?;
    }
    None
}

/// Refuses audio paths that cannot lie inside the list's directory.
pub fn check_audio_path(path: &str) -> Result<(), String> {
    llmb_plugin_sdk::media::check_relative_path(path, "audio")
}

/// The file name sent with the upload: servers read the format from its extension.
pub fn basename(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

fn entry(v: &Value, line: usize, at: &str) -> Result<Entry, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{at}: expected a JSON object with an \"audio\" path"))?;
    let audio = match obj.get("audio") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(format!("{at}: \"audio\" must be a string (a path)")),
        None => return Err(format!("{at}: no \"audio\" field (the clip's path)")),
    };
    check_audio_path(&audio).map_err(|e| format!("{at}: {e}"))?;
    let reference = match obj.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(format!("{at}: \"text\" must be a string")),
    };
    let output_tokens = obj
        .get("output_tokens")
        .map(|v| {
            v.as_u64()
                .filter(|&n| n > 0 && n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or_else(|| format!("{at}: \"output_tokens\" must be a positive integer"))
        })
        .transpose()?;
    Ok(Entry {
        line,
        audio,
        reference,
        output_tokens,
    })
}

/// Parses the list (JSON Lines, blank lines skipped); `name` is how errors show the file.
pub fn parse_list(name: &str, text: &str) -> Result<Vec<Entry>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{name}:{}", i + 1);
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{at}: invalid JSON: {e}"))?;
        out.push(entry(&v, i + 1, &at)?);
    }
    if out.is_empty() {
        return Err(format!("{name}: no audio clips in the list"));
    }
    Ok(out)
}

/// Reads every entry's audio through `read` (given the path relative to the list's directory),
/// so the logic is testable without the sandbox's `/data`.
pub fn load_clips(
    name: &str,
    entries: Vec<Entry>,
    read: impl Fn(&str) -> std::io::Result<Vec<u8>>,
) -> Result<Vec<Clip>, String> {
    entries
        .into_iter()
        .map(|e| {
            let data = read(&e.audio).map_err(|err| {
                format!(
                    "{name}:{}: cannot read the audio file {:?}: {err}",
                    e.line, e.audio
                )
            })?;
            Ok(Clip {
                clip: AudioClip {
                    duration_s: wav_duration(&data),
                    filename: basename(&e.audio).to_owned(),
                    reference: e.reference,
                    data,
                },
                output_tokens: e.output_tokens,
            })
        })
        .collect()
}

fn open(params: &DatasetParams) -> Result<State, String> {
    let file = params.files.first().ok_or(
        "the audio dataset needs --dataset-path LIST.jsonl (one {\"audio\": \"clips/a.wav\", \"text\": ...} per line)",
    )?;
    let shown = option(params, "dataset-path-display").unwrap_or(file);
    let text = std::fs::read_to_string(format!("{DATA_DIR}/{file}"))
        .map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let entries = parse_list(shown, &text)?;
    let dir = match file.rsplit_once('/') {
        Some((dir, _)) => format!("{DATA_DIR}/{dir}"),
        None => DATA_DIR.to_owned(),
    };
    let clips = load_clips(shown, entries, |rel| std::fs::read(format!("{dir}/{rel}")))?;
    State::new(params, clips)
}

impl State {
    /// The play order (shuffled by the seed unless `--disable-shuffle`) and the sample count
    /// (all clips when the run does not say).
    fn new(params: &DatasetParams, clips: Vec<Clip>) -> Result<State, String> {
        let mut order: Vec<usize> = (0..clips.len()).collect();
        if option(params, "disable-shuffle").is_none() {
            let mut rng = SplitMix64::new(params.seed);
            for i in (1..order.len()).rev() {
                let j = rng.range_inclusive(0, i as u64) as usize;
                order.swap(i, j);
            }
        }
        Ok(State {
            count: if params.count == 0 {
                clips.len() as u64
            } else {
                params.count
            },
            output_len: parse_option(params, "custom-output-len", 256)?,
            clips,
            order,
            produced: 0,
        })
    }

    /// The next `max` samples, cycling through the (shuffled) list when more are wanted than it has.
    fn next(&mut self, max: u32) -> Vec<Sample> {
        let n = (self.count - self.produced).min(max as u64);
        let mut out = Vec::with_capacity(n as usize);
        for k in 0..n {
            let idx = self.order[((self.produced + k) % self.order.len() as u64) as usize];
            let c = &self.clips[idx];
            out.push(Sample {
                prompt: Prompt::Audio(c.clip.clone()),
                input_tokens: 0,
                output_tokens: c.output_tokens.unwrap_or(self.output_len),
                timestamp: None,
            });
        }
        self.produced += n;
        out
    }
}

impl Guest for Audio {
    type Source = AudioSource;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "audio".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Speech-to-text clips from a JSONL list (--dataset-path LIST.jsonl): {\"audio\": path relative to the list, \"text\": reference, \"output_tokens\": N}; WAV durations from the header; --custom-output-len; for --backend openai-audio".into(),
        }
    }
}

impl GuestSource for AudioSource {
    fn new(params: DatasetParams) -> Self {
        Self {
            state: RefCell::new(open(&params)),
        }
    }

    fn next_batch(&self, max: u32) -> Result<Vec<Sample>, String> {
        let mut guard = self.state.borrow_mut();
        let st = guard.as_mut().map_err(|e| e.clone())?;
        Ok(st.next(max))
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_dataset!(Audio);

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit PCM WAV header (plus `extra` chunks before `data`) followed by `samples` of silence.
    fn wav(rate: u32, channels: u16, samples: u32, extra: &[u8]) -> Vec<u8> {
        let block = channels * 2;
        let data_len = samples * block as u32;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + extra.len() as u32 + data_len).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * block as u32).to_le_bytes());
        b.extend_from_slice(&block.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(extra);
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        b.resize(b.len() + data_len as usize, 0);
        b
    }

    #[test]
    fn wav_duration_from_the_header() {
        assert_eq!(wav_duration(&wav(16_000, 1, 8_000, b"")), Some(0.5));
        assert_eq!(wav_duration(&wav(16_000, 1, 16_000, b"")), Some(1.0));
        assert_eq!(wav_duration(&wav(48_000, 2, 24_000, b"")), Some(0.5));
        let odd_list = b"LIST\x03\x00\x00\x00abc\x00";
        assert_eq!(wav_duration(&wav(8_000, 1, 4_000, odd_list)), Some(0.5));
        let mut cut = wav(16_000, 1, 16_000, b"");
        cut.truncate(44 + 8_000);
        assert_eq!(wav_duration(&cut), Some(0.25));
        let mut placeholder = wav(16_000, 1, 16_000, b"");
        placeholder[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(wav_duration(&placeholder), Some(1.0));
        assert_eq!(wav_duration(b"RIFF"), None);
        assert_eq!(wav_duration(b"ID3\x04\x00\x00\x00\x00\x00\x00"), None);
        assert_eq!(wav_duration(&wav(16_000, 1, 10, b"")[..36]), None);
        let mut zero_rate = wav(16_000, 1, 10, b"");
        zero_rate[28..32].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(wav_duration(&zero_rate), None);
    }

    #[test]
    fn sample_clips_in_the_repo_have_their_durations() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/audio");
        let text = std::fs::read_to_string(format!("{dir}/list.jsonl")).unwrap();
        let entries = parse_list("list.jsonl", &text).unwrap();
        let clips = load_clips("list.jsonl", entries, |rel| {
            std::fs::read(format!("{dir}/{rel}"))
        })
        .unwrap();
        let durations: Vec<_> = clips.iter().map(|c| c.clip.duration_s).collect();
        assert_eq!(durations, [Some(0.5), Some(1.0)]);
        assert!(clips.iter().all(|c| c.clip.data.len() < 40_000));
        assert!(clips.iter().all(|c| c.clip.reference.is_some()));
    }

    #[test]
    fn audio_paths_must_stay_inside_the_list_directory() {
        for ok in [
            "a.wav",
            "clips/a.wav",
            "./clips/a.wav",
            "clips/..a.wav",
            "a..b.mp3",
        ] {
            assert!(check_audio_path(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("/abs/a.wav", "absolute"),
            ("\\\\server\\a.wav", "absolute"),
            ("C:\\a.wav", "absolute"),
            ("../a.wav", ".."),
            ("clips/../../a.wav", ".."),
            ("clips\\..\\a.wav", ".."),
            ("", "empty"),
        ] {
            let err = check_audio_path(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let err = parse_list(
            "list.jsonl",
            "{\"audio\":\"a.wav\"}\n{\"audio\":\"../x.wav\"}\n",
        )
        .unwrap_err();
        assert!(err.starts_with("list.jsonl:2: "), "{err}");
        assert!(err.contains("../x.wav"));
        let err = parse_list("list.jsonl", "{\"audio\":\"/etc/x.wav\"}").unwrap_err();
        assert!(err.starts_with("list.jsonl:1: ") && err.contains("absolute"));
    }

    #[test]
    fn parses_the_list() {
        let text = "\u{feff}{\"audio\": \"clips/a.wav\", \"text\": \"hello world\", \"output_tokens\": 12}\n\n{\"audio\": \"b.flac\"}\n{\"audio\": \"c.mp3\", \"text\": null}\n";
        let entries = parse_list("list.jsonl", text).unwrap();
        assert_eq!(
            entries,
            [
                Entry {
                    line: 1,
                    audio: "clips/a.wav".into(),
                    reference: Some("hello world".into()),
                    output_tokens: Some(12),
                },
                Entry {
                    line: 3,
                    audio: "b.flac".into(),
                    reference: None,
                    output_tokens: None,
                },
                Entry {
                    line: 4,
                    audio: "c.mp3".into(),
                    reference: None,
                    output_tokens: None,
                },
            ]
        );
    }

    #[test]
    fn list_errors_name_file_and_line() {
        for (text, line, what) in [
            ("{\"audio\":\"a.wav\"}\n{\"audio\": ", 2, "invalid JSON"),
            ("[1]", 1, "expected a JSON object"),
            ("{\"text\":\"hi\"}", 1, "no \"audio\""),
            ("{\"audio\":3}", 1, "must be a string"),
            (
                "{\"audio\":\"a.wav\",\"text\":1}",
                1,
                "\"text\" must be a string",
            ),
            (
                "\n{\"audio\":\"a.wav\",\"output_tokens\":0}",
                2,
                "positive integer",
            ),
            (
                "{\"audio\":\"a.wav\",\"output_tokens\":\"5\"}",
                1,
                "positive integer",
            ),
        ] {
            let err = parse_list("data/list.jsonl", text).unwrap_err();
            assert!(
                err.starts_with(&format!("data/list.jsonl:{line}: ")) && err.contains(what),
                "{text:?}: {err}"
            );
        }
        let err = parse_list("list.jsonl", "\n  \n").unwrap_err();
        assert_eq!(err, "list.jsonl: no audio clips in the list");
    }

    #[test]
    fn loading_names_missing_files_and_fills_clips() {
        let entries = parse_list(
            "list.jsonl",
            "{\"audio\":\"clips/a.wav\",\"text\":\"hi\"}\n{\"audio\":\"clips/missing.mp3\"}\n",
        )
        .unwrap();
        let read = |rel: &str| match rel {
            "clips/a.wav" => Ok(wav(16_000, 1, 16_000, b"")),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let err = load_clips("list.jsonl", entries.clone(), read).unwrap_err();
        assert!(err.starts_with("list.jsonl:2: "), "{err}");
        assert!(err.contains("\"clips/missing.mp3\""), "{err}");
        let clips = load_clips("list.jsonl", entries, |rel| {
            if rel.ends_with(".wav") {
                Ok(wav(16_000, 1, 16_000, b""))
            } else {
                Ok(b"ID3\x04".to_vec())
            }
        })
        .unwrap();
        assert_eq!(clips[0].clip.filename, "a.wav");
        assert_eq!(clips[0].clip.reference.as_deref(), Some("hi"));
        assert_eq!(clips[0].clip.duration_s, Some(1.0));
        assert_eq!(clips[0].clip.data.len(), 44 + 32_000);
        assert_eq!(clips[1].clip.filename, "missing.mp3");
        assert_eq!(clips[1].clip.duration_s, None);
    }

    fn params(seed: u64, count: u64, options: &[(&str, &str)]) -> DatasetParams {
        llmb_plugin_sdk::testing::dataset_params(seed, count, options, &["list.jsonl"])
    }

    fn clips(n: usize) -> Vec<Clip> {
        (0..n)
            .map(|i| Clip {
                clip: AudioClip {
                    data: vec![i as u8],
                    filename: format!("{i}.wav"),
                    reference: None,
                    duration_s: None,
                },
                output_tokens: (i == 0).then_some(7),
            })
            .collect()
    }

    fn names(samples: &[Sample]) -> Vec<String> {
        samples
            .iter()
            .map(|s| match &s.prompt {
                Prompt::Audio(c) => c.filename.clone(),
                _ => panic!("not audio"),
            })
            .collect()
    }

    #[test]
    fn samples_cycle_shuffle_and_output_lengths() {
        let mut st = State::new(&params(1, 7, &[("disable-shuffle", "")]), clips(3)).unwrap();
        let first = st.next(5);
        let rest = st.next(5);
        assert!(st.next(5).is_empty());
        let all = [first, rest].concat();
        assert_eq!(
            names(&all),
            [
                "0.wav", "1.wav", "2.wav", "0.wav", "1.wav", "2.wav", "0.wav"
            ]
        );
        assert!(
            all.iter()
                .all(|s| s.input_tokens == 0 && s.timestamp.is_none())
        );
        assert_eq!(all[0].output_tokens, 7);
        assert_eq!(all[1].output_tokens, 256);

        let mut st = State::new(&params(1, 0, &[("custom-output-len", "64")]), clips(20)).unwrap();
        let shuffled = st.next(100);
        assert_eq!(shuffled.len(), 20);
        let mut sorted = names(&shuffled);
        assert_ne!(
            sorted,
            names(
                &State::new(&params(1, 0, &[("disable-shuffle", "")]), clips(20))
                    .unwrap()
                    .next(100)
            )
        );
        sorted.sort_by_key(|n| n.trim_end_matches(".wav").parse::<u32>().unwrap());
        assert_eq!(
            sorted,
            (0..20).map(|i| format!("{i}.wav")).collect::<Vec<_>>()
        );
        let again = State::new(&params(1, 0, &[]), clips(20)).unwrap().next(100);
        assert_eq!(names(&again), names(&shuffled));
        let other = State::new(&params(2, 0, &[]), clips(20)).unwrap().next(100);
        assert_ne!(names(&other), names(&shuffled));
        assert!(shuffled.iter().filter(|s| s.output_tokens == 64).count() == 19);

        let err = State::new(&params(1, 0, &[("custom-output-len", "x")]), clips(1))
            .err()
            .unwrap();
        assert!(err.contains("custom-output-len"));
    }

    #[test]
    fn basenames() {
        assert_eq!(basename("clips/a.wav"), "a.wav");
        assert_eq!(basename("a.wav"), "a.wav");
        assert_eq!(basename("x\\y\\b.mp3"), "b.mp3");
    }

    /// Any list file, its clips any bytes: clips or an error naming file and line.
    #[test]
    fn fuzz() {
        let list = include_str!("../../../datasets/audio/list.jsonl");
        let clip = wav(16000, 1, 8, b"LIST\x04\x00\x00\x00abcd");
        llmb_plugin_sdk::testing::fuzz::reader("list.jsonl", &[list.as_bytes()], |content| {
            let text = std::str::from_utf8(content)
                .map_err(|e| format!("list.jsonl: cannot read: {e}"))?;
            let entries = parse_list("list.jsonl", text)?;
            let clips = load_clips("list.jsonl", entries, |_| Ok(clip.clone()))?;
            let params = llmb_plugin_sdk::testing::dataset_params(1, 5, &[], &["list.jsonl"]);
            State::new(&params, clips)?.next(5);
            Ok(())
        });
    }

    /// Any bytes as a WAV file: a finite, non-negative duration or none, never a panic.
    #[test]
    fn fuzz_wav() {
        use llmb_plugin_sdk::testing::fuzz;
        let seed = wav(8000, 2, 100, b"LIST\x04\x00\x00\x00abcd");
        fuzz::check(
            "wav_duration",
            fuzz::DEFAULT_CASES,
            fuzz::contents(&[&seed]),
            |b| {
                if let Some(d) = wav_duration(&b.0) {
                    fuzz::proptest::prop_assert!(d.is_finite() && d >= 0.0, "{d}");
                }
                Ok(())
            },
        );
    }
}
