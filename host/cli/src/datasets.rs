//! `llmb dataset stats|convert`: the prompts a run would send, summarised or written out; and
//! [`load_samples`], the same loading `llmb bench` does, for tools and tests.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use llmb_engine::plugin::Registry;
use llmb_engine::plugin::backend::{Prompt, Role};
use llmb_engine::plugin::dataset::Sample;
use llmb_engine::samples::LengthStats;
use llmb_engine::tokenizer::HostTokenizer;

use crate::args::{BenchArgs, ConvertArgs};

/// Loads `wanted` samples as `llmb bench` with `args` would (`args` normalized by
/// [`crate::config::sweep::normalize`] when fixed prompts are given).
pub fn load_samples(
    args: &BenchArgs,
    registry: &Registry,
    tokenizer: &Arc<HostTokenizer>,
    wanted: usize,
) -> anyhow::Result<Vec<Sample>> {
    let config = crate::config::dataset_config(args)?;
    llmb_engine::samples::load(&config, registry, tokenizer, wanted)
}

fn load_for_tools(args: &BenchArgs) -> anyhow::Result<Vec<Sample>> {
    let registry = Registry::load(&args.plugins)?;
    let tokenizer = Arc::new(HostTokenizer::load(args.tokenizer.as_deref())?);
    load_samples(args, &registry, &tokenizer, args.num_prompts)
}

/// `llmb dataset stats`.
pub fn stats(args: &BenchArgs) -> anyhow::Result<()> {
    let samples = load_for_tools(args)?;
    LengthStats::of(&samples).print(&args.dataset_name, &mut std::io::stdout().lock())?;
    Ok(())
}

/// `llmb dataset convert`: the prompts as JSONL lines the `custom` reader takes back
/// (`prompt` or `messages`, `output_tokens`, `timestamp`), so a cleaned, filtered, sampled
/// dataset can be kept and reused without the original file.
pub fn convert(args: &ConvertArgs) -> anyhow::Result<()> {
    let samples = load_for_tools(&args.bench)?;
    write_jsonl(&samples, &args.output)?;
    eprintln!(
        "wrote {} prompts to {}",
        samples.len(),
        args.output.display()
    );
    Ok(())
}

fn write_jsonl(samples: &[Sample], path: &Path) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for (i, s) in samples.iter().enumerate() {
        let mut line = serde_json::Map::new();
        match &s.prompt {
            Prompt::Text(t) => {
                line.insert("prompt".into(), t.clone().into());
            }
            Prompt::Chat(messages) => {
                let messages: Vec<serde_json::Value> = messages
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "role": match m.role {
                                Role::System => "system",
                                Role::User => "user",
                                Role::Assistant => "assistant",
                                Role::Tool => "tool",
                            },
                            "content": m.content,
                        })
                    })
                    .collect();
                line.insert("messages".into(), messages.into());
            }
            Prompt::Audio(_) => anyhow::bail!(
                "sample {}: audio prompts cannot be written as JSONL (keep the audio list file)",
                i + 1
            ),
            Prompt::Multimodal(_) => anyhow::bail!(
                "sample {}: image prompts cannot be written as JSONL (keep the images and their \
                 list file)",
                i + 1
            ),
        }
        line.insert("output_tokens".into(), s.output_tokens.into());
        if let Some(t) = s.timestamp {
            line.insert("timestamp".into(), t.into());
        }
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}
