//! Dataset loading around the reader plugins: the shortfall notice, `--system-prompt-file`, the
//! length summary printed before a run, and `llmb dataset stats|convert`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::bench::dataset_request;
use crate::cli::{BenchArgs, ConvertArgs};
use crate::plugin::Registry;
use crate::plugin::backend::{ChatMessage, Prompt, Role};
use crate::plugin::dataset::Sample;
use crate::tokenizer::HostTokenizer;

/// Loads `wanted` samples with the reader `--dataset-name` names, says so when the dataset has
/// fewer usable samples (the reader cycles them only with `--dataset-cycle`), and applies
/// `--system-prompt-file`.
pub fn load_samples(
    args: &BenchArgs,
    registry: &Registry,
    tokenizer: &std::sync::Arc<HostTokenizer>,
    wanted: usize,
) -> anyhow::Result<Vec<Sample>> {
    let dataset = registry.dataset(&args.dataset_name)?;
    let mut request = dataset_request(args)?;
    request.count = wanted as u64;
    let mut samples = dataset.load(&request, tokenizer.clone())?;
    if samples.len() < wanted {
        eprintln!(
            "note: dataset {} has {} usable samples, {wanted} were asked for; {}",
            args.dataset_name,
            samples.len(),
            if args.dataset_cycle {
                "the reader did not cycle them"
            } else {
                "sending what there is (--dataset-cycle reuses them)"
            }
        );
    }
    if let Some(path) = &args.system_prompt_file {
        let system = std::fs::read_to_string(path)
            .with_context(|| format!("--system-prompt-file {}: cannot read", path.display()))?;
        let system = system.trim_end().to_string();
        anyhow::ensure!(
            !system.is_empty(),
            "--system-prompt-file {}: the file is empty",
            path.display()
        );
        let extra = tokenizer.count(&system);
        for s in &mut samples {
            prepend_system(s, &system, extra);
        }
    }
    Ok(samples)
}

/// A system message for chat prompts; the text and a blank line before a raw prompt.
fn prepend_system(sample: &mut Sample, system: &str, tokens: u32) {
    match &mut sample.prompt {
        Prompt::Chat(messages) => messages.insert(
            0,
            ChatMessage {
                role: Role::System,
                content: system.to_string(),
            },
        ),
        Prompt::Text(text) => *text = format!("{system}\n\n{text}"),
        Prompt::Audio(_) => return,
    }
    sample.input_tokens += tokens;
}

/// Summary of one length distribution.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Distribution {
    pub min: u32,
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub max: u32,
    pub mean: f64,
}

impl Distribution {
    fn of(mut values: Vec<u32>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Self {
            min: values[0],
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: values[values.len() - 1],
            mean: values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64,
        }
    }
}

/// Input and output lengths of the prompts a run would send.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LengthStats {
    pub count: usize,
    pub input: Distribution,
    pub output: Distribution,
    pub with_timestamps: usize,
    pub conversations: usize,
}

impl LengthStats {
    pub fn of(samples: &[Sample]) -> Self {
        Self {
            count: samples.len(),
            input: Distribution::of(samples.iter().map(|s| s.input_tokens).collect()),
            output: Distribution::of(samples.iter().map(|s| s.output_tokens).collect()),
            with_timestamps: samples.iter().filter(|s| s.timestamp.is_some()).count(),
            conversations: samples
                .iter()
                .filter(|s| match &s.prompt {
                    Prompt::Chat(m) => {
                        m.iter().filter(|m| matches!(m.role, Role::User)).count() > 1
                    }
                    _ => false,
                })
                .count(),
        }
    }

    /// The line printed before a run.
    pub fn one_line(&self, dataset: &str) -> String {
        format!(
            "dataset {dataset}: {} prompts, input tokens mean {:.0} (p50 {}, max {}), output tokens mean {:.0} (p50 {}, max {})",
            self.count,
            self.input.mean,
            self.input.p50,
            self.input.max,
            self.output.mean,
            self.output.p50,
            self.output.max
        )
    }

    pub fn print(&self, dataset: &str, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "{:=^60}", format!(" Dataset {dataset} "))?;
        writeln!(out, "{:<28} {}", "Prompts:", self.count)?;
        if self.conversations > 0 {
            writeln!(
                out,
                "{:<28} {}",
                "Multi-turn conversations:", self.conversations
            )?;
        }
        if self.with_timestamps > 0 {
            writeln!(
                out,
                "{:<28} {}",
                "With trace timestamps:", self.with_timestamps
            )?;
        }
        writeln!(
            out,
            "{:<14} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "tokens", "min", "p50", "p90", "p99", "max", "mean"
        )?;
        for (name, d) in [("input", &self.input), ("output", &self.output)] {
            writeln!(
                out,
                "{:<14} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10.1}",
                name, d.min, d.p50, d.p90, d.p99, d.max, d.mean
            )?;
        }
        writeln!(out, "{}", "=".repeat(60))
    }
}

fn load_for_tools(args: &BenchArgs) -> anyhow::Result<Vec<Sample>> {
    let registry = Registry::load(&args.plugins)?;
    let tokenizer = std::sync::Arc::new(HostTokenizer::load(args.tokenizer.as_deref())?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_use_nearest_ranks() {
        let d = Distribution::of((1..=100).collect());
        assert_eq!((d.min, d.p50, d.p90, d.p99, d.max), (1, 51, 90, 99, 100));
        assert!((d.mean - 50.5).abs() < 1e-9);
        assert_eq!(Distribution::of(Vec::new()), Distribution::default());
    }

    #[test]
    fn a_system_prompt_becomes_a_system_message_or_a_prefix() {
        let mut chat = Sample {
            prompt: Prompt::Chat(vec![ChatMessage {
                role: Role::User,
                content: "hi".into(),
            }]),
            input_tokens: 1,
            output_tokens: 4,
            timestamp: None,
        };
        prepend_system(&mut chat, "be brief", 2);
        let Prompt::Chat(m) = &chat.prompt else {
            panic!()
        };
        assert!(matches!(m[0].role, Role::System) && m[0].content == "be brief");
        assert_eq!(chat.input_tokens, 3);
        let mut text = Sample {
            prompt: Prompt::Text("question".into()),
            ..chat
        };
        prepend_system(&mut text, "be brief", 2);
        assert!(matches!(&text.prompt, Prompt::Text(t) if t == "be brief\n\nquestion"));
    }
}
