//! The flags of the concurrency-sweep scripts llmb replaces, so their command lines work as
//! they are:
//!
//! ```sh
//! llmb bench --base-url http://127.0.0.1:8000 --model M --endpoint chat.completions \
//!   --concurrency 1,2,4,8 --requests-per-stage 100 --stream --max-tokens 128 \
//!   --prompt-file prompts_chat.json --outdir out
//! llmb report --indir out
//! ```
//!
//! `--endpoint` takes an API name as well as a path ([`normalize`] turns `chat.completions` and
//! `responses` into the openai-chat and openai-responses backends); `--user`, `--system` and
//! `--prompt-file` give fixed chat prompts instead of a dataset, built here in the host
//! ([`fixed_prompts`]) so every entry is sent exactly as written, one request each; a
//! `--concurrency` sweep saves its results and writes the files those scripts leave
//! (`requests_cX.csv`, `summary_cX.json`, `overall_summary.json`, see
//! [`llmb_report::export::write_concurrency_sweep`]).

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::args::BenchArgs;
use llmb_engine::plugin::backend::{ChatMessage, Role};

/// `--endpoint` names and the backend each means.
pub const ENDPOINT_NAMES: [(&str, &str); 2] = [
    ("chat.completions", "openai-chat"),
    ("responses", "openai-responses"),
];

/// The dataset name results carry for `--user` and `--prompt-file` prompts.
pub const USER_DATASET: &str = "user-prompt";
pub const PROMPT_FILE_DATASET: &str = "prompt-file";

/// The bench options these flags stand for: an `--endpoint` name becomes its backend (with
/// the backend's own path), `--outdir` the result folder, a `--concurrency` sweep saves its
/// results, and fixed prompts name the dataset. Arguments without these flags come back as
/// they were.
pub fn normalize(args: &BenchArgs) -> anyhow::Result<BenchArgs> {
    let mut out = args.clone();
    let compat = &args.sweep_compat;
    if let Some(name) = args.endpoint.as_deref()
        && let Some((_, backend)) = ENDPOINT_NAMES.iter().find(|(n, _)| *n == name)
    {
        // `vllm` is the default backend, so it cannot tell a given --backend from none.
        anyhow::ensure!(
            args.backend == "vllm" || args.backend == *backend,
            "--endpoint {name} is the {backend} backend, but --backend is {}; give a path \
             (--endpoint /v1/...) to send another adapter's requests elsewhere",
            args.backend
        );
        out.backend = (*backend).to_string();
        out.endpoint = None;
    }
    if let Some(dir) = &compat.outdir {
        out.result_dir = dir.clone();
    }
    if args.concurrency.is_some() {
        out.save_result = true;
    }
    if let Some(n) = compat.max_tokens {
        anyhow::ensure!(n > 0, "--max-tokens must be at least 1");
    }
    if compat.user.is_some() || compat.prompt_file.is_some() {
        let flag = if compat.user.is_some() {
            "--user"
        } else {
            "--prompt-file"
        };
        anyhow::ensure!(
            args.dataset_name == "random" && args.dataset_path.is_none() && args.mix.is_empty(),
            "{flag} gives the prompts: leave out --dataset-name {}, --dataset-path and --mix",
            args.dataset_name
        );
        out.dataset_name = if compat.user.is_some() {
            USER_DATASET
        } else {
            PROMPT_FILE_DATASET
        }
        .to_string();
    }
    Ok(out)
}

/// The conversations `--user` or `--prompt-file` give (`None` without either); the run cycles
/// them, each asking --max-tokens, else --custom-output-len.
pub fn fixed_prompts(args: &BenchArgs) -> anyhow::Result<Option<Vec<Vec<ChatMessage>>>> {
    let compat = &args.sweep_compat;
    if let Some(text) = &compat.user {
        anyhow::ensure!(!text.trim().is_empty(), "--user: the message is empty");
        Ok(Some(vec![vec![ChatMessage {
            role: Role::User,
            content: text.clone(),
        }]]))
    } else if let Some(path) = &compat.prompt_file {
        read_prompt_file(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Reads `--prompt-file`: a JSON array of entries, one conversation written as a JSON array of
/// messages, or JSON Lines; each entry a list of messages, `{"messages": [...]}` or a string.
/// Errors name the file and the entry.
pub fn read_prompt_file(path: &Path) -> anyhow::Result<Vec<Vec<ChatMessage>>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--prompt-file {shown}: cannot read"))?;
    let trimmed = text.trim_start();
    let entries: Vec<(String, Value)> = if trimmed.starts_with('[') || trimmed.starts_with('{') {
        match serde_json::from_str::<Value>(trimmed) {
            // One conversation: its messages at the top level.
            Ok(Value::Array(items)) if !items.is_empty() && items.iter().all(is_message) => {
                vec![("the file".into(), Value::Array(items))]
            }
            Ok(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("entry {}", i + 1), v))
                .collect(),
            Ok(single @ Value::Object(_)) => vec![("the file".into(), single)],
            Ok(_) => bail!("--prompt-file {shown}: expected a JSON array of prompts or JSON Lines"),
            // Not one JSON document: JSON Lines whose first line starts like one.
            Err(_) if trimmed.lines().filter(|l| !l.trim().is_empty()).count() > 1 => {
                json_lines(&text, &shown.to_string())?
            }
            Err(e) => bail!("--prompt-file {shown}: not valid JSON: {e}"),
        }
    } else {
        json_lines(&text, &shown.to_string())?
    };
    let prompts = entries
        .iter()
        .map(|(at, v)| messages(v).with_context(|| format!("--prompt-file {shown}: {at}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        !prompts.is_empty(),
        "--prompt-file {shown}: the file holds no prompts"
    );
    Ok(prompts)
}

fn json_lines(text: &str, shown: &str) -> anyhow::Result<Vec<(String, Value)>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let v = serde_json::from_str(line).with_context(|| {
                format!("--prompt-file {shown}: line {}: not valid JSON", i + 1)
            })?;
            Ok((format!("line {}", i + 1), v))
        })
        .collect()
}

fn is_message(v: &Value) -> bool {
    v.get("role").is_some_and(Value::is_string)
}

/// One entry as chat messages.
fn messages(entry: &Value) -> anyhow::Result<Vec<ChatMessage>> {
    let list = match entry {
        Value::String(s) => {
            return Ok(vec![ChatMessage {
                role: Role::User,
                content: s.clone(),
            }]);
        }
        Value::Array(list) => list,
        Value::Object(o) => match o.get("messages") {
            Some(Value::Array(list)) => list,
            _ => bail!("expected a list of messages or {{\"messages\": [...]}}"),
        },
        _ => bail!("expected a list of messages, {{\"messages\": [...]}} or a string"),
    };
    let out: Vec<ChatMessage> = list
        .iter()
        .enumerate()
        .map(|(i, m)| message(m).with_context(|| format!("message {}", i + 1)))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        out.iter().any(|m| matches!(m.role, Role::User)),
        "no user message"
    );
    Ok(out)
}

/// `{"role", "content"}`, the content a string or OpenAI content parts (their text joined).
fn message(m: &Value) -> anyhow::Result<ChatMessage> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        Some(other) => bail!("unknown role {other:?} (system, user, assistant, tool)"),
        None => bail!("no \"role\" string"),
    };
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => bail!("no \"content\" string"),
    };
    Ok(ChatMessage { role, content })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(words: &[&str]) -> BenchArgs {
        let cli = crate::args::Cli::try_parse_from(["llmb", "bench"].iter().chain(words)).unwrap();
        match cli.command {
            crate::args::Command::Bench(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn endpoint_names_pick_the_backend_and_paths_stay_paths() {
        let n = normalize(&parse(&["--endpoint", "chat.completions", "--stream"])).unwrap();
        assert_eq!((n.backend.as_str(), n.endpoint), ("openai-chat", None));
        let n = normalize(&parse(&["--endpoint", "responses"])).unwrap();
        assert_eq!(n.backend, "openai-responses");
        let n = normalize(&parse(&[
            "--endpoint",
            "/v1/completions",
            "--backend",
            "openai",
        ]))
        .unwrap();
        assert_eq!(n.endpoint.as_deref(), Some("/v1/completions"));
        let err = normalize(&parse(&["--endpoint", "responses", "--backend", "tgi"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("openai-responses") && err.contains("tgi"),
            "{err}"
        );

        let n = normalize(&parse(&["--concurrency", "1,2", "--outdir", "o"])).unwrap();
        assert!(n.save_result);
        assert_eq!(n.result_dir, std::path::PathBuf::from("o"));
        let n = normalize(&parse(&["--user", "hi"])).unwrap();
        assert_eq!(n.dataset_name, USER_DATASET);
        assert!(normalize(&parse(&["--user", "hi", "--dataset-name", "sharegpt"])).is_err());
        let bad = |w: &[&str]| {
            crate::args::Cli::try_parse_from(["llmb", "bench"].iter().chain(w)).is_err()
        };
        assert!(bad(&["--stream", "--no-stream"]));
        assert!(bad(&["--user", "a", "--prompt-file", "f"]));
    }

    #[test]
    fn prompt_files_take_lists_objects_and_lines() {
        let dir = std::env::temp_dir().join(format!("llmb-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let array = file(
            "a.json",
            r#"[[{"role": "system", "content": "s"}, {"role": "user", "content": "u1"}],
                {"messages": [{"role": "user", "content": [{"type": "text", "text": "u2"}]}]},
                "u3"]"#,
        );
        let p = read_prompt_file(&array).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].len(), p[0][1].content.as_str()), (2, "u1"));
        assert_eq!(p[1][0].content, "u2");
        assert!(matches!(p[2][0].role, Role::User));
        let one = file("one.json", r#"[{"role": "user", "content": "only"}]"#);
        assert_eq!(read_prompt_file(&one).unwrap().len(), 1);
        let lines = file(
            "l.jsonl",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n\n[{\"role\": \"user\", \"content\": \"b\"}]\n",
        );
        assert_eq!(read_prompt_file(&lines).unwrap().len(), 2);
        let bad = file(
            "bad.jsonl",
            "[{\"role\": \"user\", \"content\": \"a\"}]\n{\"x\": 1}\n",
        );
        let err = format!("{:#}", read_prompt_file(&bad).unwrap_err());
        assert!(err.contains("bad.jsonl") && err.contains("line 2"), "{err}");
        let role = file("r.json", r#"[[{"role": "robot", "content": "a"}]]"#);
        let err = format!("{:#}", read_prompt_file(&role).unwrap_err());
        assert!(err.contains("entry 1") && err.contains("robot"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
