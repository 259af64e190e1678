//! The `custom` dataset: a JSONL file with one `{"prompt": ...}` (or `{"text": ...}`) object per
//! line, or a JSON array of such objects, read from the file the user named. A line may carry
//! `output_tokens` to override `--custom-output-len`. Errors name the file and the line.

use std::cell::RefCell;

use llmb_plugin_sdk::SplitMix64;
use llmb_plugin_sdk::dataset::{
    DatasetInfo, DatasetParams, Guest, GuestSource, Prompt, Sample, option, parse_option, tokenizer,
};
use serde_json::Value;

pub struct Custom;

pub struct CustomSource {
    state: RefCell<Result<State, String>>,
}

struct State {
    entries: Vec<(String, Option<u32>)>,
    order: Vec<usize>,
    produced: u64,
    count: u64,
    output_len: u32,
}

/// Where the user's file is mounted inside the sandbox.
const DATA_DIR: &str = "/data";

fn entry(value: &Value, at: &str) -> Result<(String, Option<u32>), String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("{at}: expected a JSON object with a \"prompt\" field"))?;
    let prompt = obj
        .get("prompt")
        .or_else(|| obj.get("text"))
        .ok_or_else(|| format!("{at}: no \"prompt\" (or \"text\") field"))?
        .as_str()
        .ok_or_else(|| format!("{at}: \"prompt\" must be a string"))?;
    let output = obj
        .get("output_tokens")
        .map(|v| {
            v.as_u64()
                .filter(|&n| n > 0 && n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or_else(|| format!("{at}: \"output_tokens\" must be a positive integer"))
        })
        .transpose()?;
    Ok((prompt.to_owned(), output))
}

/// Parses the whole file: a JSON array, or JSON Lines (blank lines skipped).
pub fn parse_entries(name: &str, text: &str) -> Result<Vec<(String, Option<u32>)>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<Value> =
            serde_json::from_str(trimmed).map_err(|e| format!("{name}:{}: {e}", e.line()))?;
        return items
            .iter()
            .enumerate()
            .map(|(i, v)| entry(v, &format!("{name}: array item {}", i + 1)))
            .collect();
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{name}:{}", i + 1);
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{at}: invalid JSON: {e}"))?;
        out.push(entry(&v, &at)?);
    }
    Ok(out)
}

fn open(params: &DatasetParams) -> Result<State, String> {
    let file = params
        .files
        .first()
        .ok_or("the custom dataset needs --dataset-path FILE (JSONL with a \"prompt\" per line)")?;
    let shown = option(params, "dataset-path-display").unwrap_or(file);
    let path = format!("{DATA_DIR}/{file}");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let entries = parse_entries(shown, &text)?;
    if entries.is_empty() {
        return Err(format!("{shown}: no prompts in the file"));
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    if option(params, "disable-shuffle").is_none() {
        let mut rng = SplitMix64::new(params.seed);
        for i in (1..order.len()).rev() {
            let j = rng.range_inclusive(0, i as u64) as usize;
            order.swap(i, j);
        }
    }
    Ok(State {
        count: if params.count == 0 {
            entries.len() as u64
        } else {
            params.count
        },
        output_len: parse_option(params, "custom-output-len", 256)?,
        entries,
        order,
        produced: 0,
    })
}

impl Guest for Custom {
    type Source = CustomSource;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "custom".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "JSONL ({\"prompt\": ...} or {\"text\": ...} per line) or a JSON array, from --dataset-path; --custom-output-len".into(),
        }
    }
}

impl GuestSource for CustomSource {
    fn new(params: DatasetParams) -> Self {
        Self {
            state: RefCell::new(open(&params)),
        }
    }

    fn next_batch(&self, max: u32) -> Result<Vec<Sample>, String> {
        let mut guard = self.state.borrow_mut();
        let st = guard.as_mut().map_err(|e| e.clone())?;
        let n = (st.count - st.produced).min(max as u64);
        let mut out = Vec::with_capacity(n as usize);
        for k in 0..n {
            let idx = st.order[((st.produced + k) % st.order.len() as u64) as usize];
            let (prompt, output) = &st.entries[idx];
            out.push(Sample {
                input_tokens: tokenizer::count(prompt),
                output_tokens: output.unwrap_or(st.output_len),
                prompt: Prompt::Text(prompt.clone()),
            });
        }
        st.produced += n;
        Ok(out)
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_dataset!(Custom);
