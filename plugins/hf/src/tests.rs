//! Tests of the `hf` reader; shared helpers here, the tests by subject in the modules below.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use llmb_plugin_sdk::dataset::{ChatMessage, Prompt, Role};

use super::*;
use crate::files::{in_split, split_name};

mod formats;
mod images;
mod prompts;
mod selection;

fn datasets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets")
}

fn test_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn words(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

fn params(options: &[(&str, &str)], seed: u64, count: u64) -> DatasetParams {
    llmb_plugin_sdk::testing::dataset_params(seed, count, options, &["."])
}

fn cfg(options: &[(&str, &str)], seed: u64, count: u64) -> Config {
    config(&params(options, seed, count)).unwrap()
}

/// File order, every row.
fn all(options: &[(&str, &str)]) -> Config {
    let mut options = options.to_vec();
    options.push(("disable-shuffle", "true"));
    cfg(&options, 0, 0)
}

fn drain(mut pool: Pool) -> Vec<Sample> {
    let mut out = Vec::new();
    loop {
        let batch = pool.next_batch(7, &words);
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

/// Reads `entry` under `root`, shown in errors as `entry` itself.
fn run(root: &Path, entry: &str, config: &Config) -> Result<Vec<Sample>, String> {
    load(root, entry, entry, config).map(|l| drain(l.pool))
}

fn text(sample: &Sample) -> &str {
    match &sample.prompt {
        Prompt::Text(t) => t,
        other => panic!("expected a text prompt, got {other:?}"),
    }
}

fn chat(sample: &Sample) -> &[ChatMessage] {
    match &sample.prompt {
        Prompt::Chat(m) => m,
        other => panic!("expected a chat prompt, got {other:?}"),
    }
}

fn texts(samples: &[Sample]) -> Vec<String> {
    samples.iter().map(|s| text(s).to_owned()).collect()
}

/// A fresh directory under the system's temporary one.
fn scratch(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "llmb-hf-{}-{tag}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn snapshot() -> PathBuf {
    datasets().join("hf-sample")
}

const RECORDS: [&str; 3] = [
    r#"{"question": "What is one plus one?", "answer": "Two."}"#,
    r#"{"question": "Name a primary colour.", "answer": "Red, for example."}"#,
    r#"{"question": "Is ice colder than steam?", "answer": "Yes."}"#,
];
