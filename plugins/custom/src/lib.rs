//! The `custom` dataset: a JSONL file with one object per line, or a JSON array of them, read from
//! the file the user named. An object holds a `prompt` (or `text`) string, or a conversation as
//! `messages` (`[{"role", "content"}]`, OpenAI style) or `conversations` (`[{"from", "value"}]`,
//! ShareGPT style). It may carry `output_tokens` to override `--custom-output-len` and a
//! `timestamp` in seconds for trace replay. Errors name the file and the line.

use std::cell::RefCell;

use llmb_plugin_sdk::SplitMix64;
use llmb_plugin_sdk::dataset::{
    ChatMessage, DatasetInfo, DatasetParams, Guest, GuestSource, Prompt, Role, Sample, option,
    parse_option, tokenizer,
};
use serde_json::Value;

pub struct Custom;

pub struct CustomSource {
    state: RefCell<Result<State, String>>,
}

/// One usable record of the file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub prompt: Prompt,
    pub output_tokens: Option<u32>,
    pub timestamp: Option<f64>,
}

struct State {
    entries: Vec<Entry>,
    order: Vec<usize>,
    produced: u64,
    count: u64,
    output_len: u32,
}

/// Where the user's file is mounted inside the sandbox.
const DATA_DIR: &str = "/data";

/// The reader holds the whole file and its parsed records inside a 256 MiB sandbox.
const MAX_FILE_BYTES: u64 = 64 << 20;

fn role(name: &str, at: &str) -> Result<Role, String> {
    match name {
        "system" => Ok(Role::System),
        "user" | "human" => Ok(Role::User),
        "assistant" | "gpt" | "model" | "chatgpt" | "bard" => Ok(Role::Assistant),
        "tool" => Ok(Role::Tool),
        other => Err(format!("{at}: unknown role {other:?}")),
    }
}

/// `messages` (role/content) or `conversations` (from/value) into chat messages.
fn conversation(items: &Value, role_key: &str, text_key: &str, at: &str) -> Result<Prompt, String> {
    let items = items
        .as_array()
        .ok_or_else(|| format!("{at}: the conversation must be a list of messages"))?;
    let messages = items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("{at}: message {}", i + 1);
            let r = m
                .get(role_key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}: no \"{role_key}\" string"))?;
            let content = m
                .get(text_key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}: no \"{text_key}\" string"))?;
            Ok(ChatMessage {
                role: role(r, &at)?,
                content: content.to_owned(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if !messages.iter().any(|m| matches!(m.role, Role::User)) {
        return Err(format!("{at}: the conversation has no user message"));
    }
    Ok(Prompt::Chat(messages))
}

fn entry(value: &Value, at: &str) -> Result<Entry, String> {
    let obj = value.as_object().ok_or_else(|| {
        format!("{at}: expected a JSON object with a \"prompt\", \"messages\" or \"conversations\" field")
    })?;
    let prompt = if let Some(p) = obj.get("prompt").or_else(|| obj.get("text")) {
        Prompt::Text(
            p.as_str()
                .ok_or_else(|| format!("{at}: \"prompt\" must be a string"))?
                .to_owned(),
        )
    } else if let Some(m) = obj.get("messages") {
        conversation(m, "role", "content", at)?
    } else if let Some(c) = obj.get("conversations") {
        conversation(c, "from", "value", at)?
    } else {
        return Err(format!(
            "{at}: no \"prompt\" (or \"text\", \"messages\", \"conversations\") field"
        ));
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
    let timestamp = obj
        .get("timestamp")
        .map(|v| {
            v.as_f64()
                .filter(|t| t.is_finite())
                .ok_or_else(|| format!("{at}: \"timestamp\" must be a number of seconds"))
        })
        .transpose()?;
    Ok(Entry {
        prompt,
        output_tokens,
        timestamp,
    })
}

/// Parses the whole file: a JSON array, or JSON Lines (blank lines skipped).
pub fn parse_entries(name: &str, text: &str) -> Result<Vec<Entry>, String> {
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
    let size = std::fs::metadata(&path)
        .map_err(|e| format!("{shown}: cannot read: {e}"))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(format!(
            "{shown}: {} MiB is more than the custom reader holds ({} MiB); the hf reader streams \
             JSONL of any size (--dataset-name hf, same prompt/messages fields)",
            size >> 20,
            MAX_FILE_BYTES >> 20
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let entries = parse_entries(shown, &text)?;
    if entries.is_empty() {
        return Err(format!("{shown}: no prompts in the file"));
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    let is_trace = entries.iter().any(|e| e.timestamp.is_some());
    if option(params, "disable-shuffle").is_none() && !is_trace {
        let mut rng = SplitMix64::new(params.seed);
        for i in (1..order.len()).rev() {
            let j = rng.range_inclusive(0, i as u64) as usize;
            order.swap(i, j);
        }
    }
    // A trace is replayed once: cycling it would repeat its timestamps.
    let count = if params.count == 0 || is_trace {
        entries.len() as u64
    } else {
        params.count
    };
    Ok(State {
        count,
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
            description: "JSONL or a JSON array from --dataset-path: prompt/text, messages or conversations (multi-turn), optional output_tokens and timestamp (trace replay); --custom-output-len".into(),
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
            let e = &st.entries[idx];
            let input_tokens = match &e.prompt {
                Prompt::Text(t) => tokenizer::count(t),
                Prompt::Chat(messages) => {
                    messages.iter().map(|m| tokenizer::count(&m.content)).sum()
                }
                Prompt::Multimodal(messages) => messages
                    .iter()
                    .map(|m| tokenizer::count(&llmb_plugin_sdk::media::dataset_message_text(m)))
                    .sum(),
                Prompt::Audio(_) => 0,
            };
            out.push(Sample {
                input_tokens,
                output_tokens: e.output_tokens.unwrap_or(st.output_len),
                prompt: e.prompt.clone(),
                timestamp: e.timestamp,
            });
        }
        st.produced += n;
        Ok(out)
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_dataset!(Custom);

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "prompts.jsonl";

    /// Any file (JSON Lines or a JSON array): entries or an error naming file and line.
    #[test]
    fn fuzz() {
        let seeds = [
            &include_bytes!("../../../datasets/sample.jsonl")[..],
            include_bytes!("../../../datasets/trace.jsonl"),
            include_bytes!("../../../datasets/multi-turn-synthetic.json"),
            br#"[{"prompt":"a","output_tokens":3},{"messages":[{"role":"user","content":"b"}]},{"conversations":[{"from":"human","value":"c"}],"timestamp":1.5}]"#,
        ];
        llmb_plugin_sdk::testing::fuzz::reader(NAME, &seeds, |content| {
            let text =
                std::str::from_utf8(content).map_err(|e| format!("{NAME}: cannot read: {e}"))?;
            parse_entries(NAME, text).map(drop)
        });
    }
}
