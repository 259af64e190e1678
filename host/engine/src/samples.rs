//! The prompts of a run: the reader plugins' samples (one reader, or a weighted mix), fixed
//! conversations, system prompts put in front, and the length summary printed before a run.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{DatasetConfig, DatasetSource, MixPart};
use crate::plugin::backend::{ChatMessage, ContentPart, MultimodalMessage, Prompt, Role};
use crate::plugin::dataset::Sample;
use crate::plugin::{DatasetRequest, Registry};
use crate::tokenizer::HostTokenizer;

/// Loads `wanted` samples as `config` says, says so when the dataset has fewer usable samples
/// (a reader cycles them only when asked), puts the system prompts in front and applies the
/// fixed output length.
pub fn load(
    config: &DatasetConfig,
    registry: &Registry,
    tokenizer: &Arc<HostTokenizer>,
    wanted: usize,
) -> anyhow::Result<Vec<Sample>> {
    let mut samples = match &config.source {
        DatasetSource::Fixed {
            prompts,
            output_tokens,
        } => fixed(prompts, *output_tokens, tokenizer, wanted),
        DatasetSource::Mixed {
            parts,
            request,
            shuffle,
        } => load_mixed(
            config, parts, request, *shuffle, registry, tokenizer, wanted,
        )?,
        DatasetSource::Reader(request) => load_one(
            &config.name,
            request,
            config.cycle,
            registry,
            tokenizer,
            wanted,
        )?,
    };
    for system in &config.system_prompts {
        let extra = tokenizer.count(system);
        for s in &mut samples {
            prepend_system(s, system, extra);
        }
    }
    if let Some(n) = config.max_tokens {
        for s in &mut samples {
            s.output_tokens = n;
        }
    }
    Ok(samples)
}

/// `wanted` samples from fixed conversations, in order and cycled. Input lengths are counted
/// with the host tokenizer, as the dataset readers count theirs.
fn fixed(
    prompts: &[Vec<ChatMessage>],
    output_tokens: u32,
    tokenizer: &HostTokenizer,
    wanted: usize,
) -> Vec<Sample> {
    prompts
        .iter()
        .cycle()
        .take(wanted.max(1))
        .map(|messages| Sample {
            input_tokens: messages.iter().map(|m| tokenizer.count(&m.content)).sum(),
            prompt: Prompt::Chat(messages.clone()),
            output_tokens,
            timestamp: None,
        })
        .collect()
}

fn load_one(
    name: &str,
    request: &DatasetRequest,
    cycle: bool,
    registry: &Registry,
    tokenizer: &Arc<HostTokenizer>,
    wanted: usize,
) -> anyhow::Result<Vec<Sample>> {
    let dataset = registry.dataset(name)?;
    let mut request = request.clone();
    request.count = wanted as u64;
    let samples = dataset.load(&request, tokenizer.clone())?;
    if samples.len() < wanted {
        eprintln!(
            "note: dataset {name} has {} usable samples, {wanted} were asked for; {}",
            samples.len(),
            if cycle {
                "the reader did not cycle them"
            } else {
                "sending what there is (--dataset-cycle reuses them)"
            }
        );
    }
    Ok(samples)
}

/// Splits `total` in proportion to `weights`, giving the remainders to the largest fractions,
/// so the counts add up to `total` exactly.
pub fn split_by_weight(total: usize, weights: &[f64]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    let short = total - counts.iter().sum::<usize>();
    for &i in order.iter().take(short) {
        counts[i] += 1;
    }
    counts
}

/// A mixed dataset: each part's reader gets its weight's share of the prompts (with the run's
/// other dataset options), then the prompts are shuffled together with the seed, or, without
/// `shuffle`, interleaved in proportion keeping each reader's order.
fn load_mixed(
    config: &DatasetConfig,
    parts: &[MixPart],
    request: &DatasetRequest,
    shuffle: bool,
    registry: &Registry,
    tokenizer: &Arc<HostTokenizer>,
    wanted: usize,
) -> anyhow::Result<Vec<Sample>> {
    anyhow::ensure!(
        !parts.is_empty(),
        "--dataset-name mixed needs at least one --mix WEIGHT:DATASET[:PATH]"
    );
    let counts = split_by_weight(wanted, &parts.iter().map(|p| p.weight).collect::<Vec<_>>());
    let mut loaded = Vec::with_capacity(parts.len());
    for (part, &count) in parts.iter().zip(&counts) {
        if count == 0 {
            loaded.push(Vec::new());
            continue;
        }
        let spec = &part.spec;
        let sub = DatasetRequest {
            file: part.path.clone(),
            ..request.clone()
        };
        let samples = load_one(
            &part.dataset,
            &sub,
            config.cycle,
            registry,
            tokenizer,
            count,
        )
        .with_context(|| format!("--mix {spec}"))?;
        anyhow::ensure!(
            samples.iter().all(|s| s.timestamp.is_none()),
            "--mix {spec}: a trace with timestamps cannot be mixed with other datasets"
        );
        loaded.push(samples);
    }
    let summary: Vec<String> = parts
        .iter()
        .zip(&loaded)
        .map(|(p, s)| format!("{} {}", p.dataset, s.len()))
        .collect();
    eprintln!("mixed dataset: {}", summary.join(", "));
    Ok(if !shuffle {
        interleave(loaded)
    } else {
        let mut all: Vec<Sample> = loaded.into_iter().flatten().collect();
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        all.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
            request.seed ^ 0x6d69_7865_6400_0000,
        ));
        all
    })
}

/// Merges the parts so that every prefix of the result holds each part in proportion to its size.
fn interleave(parts: Vec<Vec<Sample>>) -> Vec<Sample> {
    let total: usize = parts.iter().map(Vec::len).sum();
    let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
    let mut taken = vec![0usize; parts.len()];
    let mut iters: Vec<_> = parts.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(total);
    for k in 1..=total {
        let due = |i: usize| sizes[i] as f64 * k as f64 / total as f64 - taken[i] as f64;
        let next = (0..iters.len())
            .filter(|&i| taken[i] < sizes[i])
            .max_by(|&a, &b| due(a).total_cmp(&due(b)).then(b.cmp(&a)))
            .expect("a part has samples left");
        taken[next] += 1;
        out.extend(iters[next].next());
    }
    out
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
        Prompt::Multimodal(messages) => messages.insert(
            0,
            MultimodalMessage {
                role: Role::System,
                parts: vec![ContentPart::Text(system.to_string())],
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

/// Every image of every prompt.
fn images(samples: &[Sample]) -> impl Iterator<Item = &crate::plugin::backend::Image> {
    samples
        .iter()
        .flat_map(|s| crate::plugin::backend::prompt_images(&s.prompt))
}

/// Input and output lengths of the prompts a run would send.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LengthStats {
    pub count: usize,
    pub input: Distribution,
    pub output: Distribution,
    pub with_timestamps: usize,
    pub conversations: usize,
    /// Images in all prompts, and their encoded bytes (what the run will send, before base64).
    pub images: usize,
    pub image_bytes: u64,
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
            images: images(samples).count(),
            image_bytes: images(samples).map(|i| i.data.len() as u64).sum(),
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
        if self.images > 0 {
            writeln!(
                out,
                "{:<28} {} ({:.1} MiB encoded, {:.1} per prompt)",
                "Images:",
                self.images,
                self.image_bytes as f64 / (1 << 20) as f64,
                self.images as f64 / self.count.max(1) as f64
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

    #[test]
    fn weights_split_the_count_exactly() {
        assert_eq!(split_by_weight(10, &[3.0, 1.0]), vec![8, 2]);
        assert_eq!(split_by_weight(7, &[1.0, 1.0, 1.0]), vec![3, 2, 2]);
        assert_eq!(split_by_weight(1, &[0.2, 0.8]), vec![0, 1]);
        for total in 0..50 {
            assert_eq!(
                split_by_weight(total, &[0.7, 0.2, 0.1])
                    .iter()
                    .sum::<usize>(),
                total
            );
        }
    }

    #[test]
    fn interleaving_keeps_each_part_in_proportion_and_order() {
        let sample = |n: u32| Sample {
            prompt: Prompt::Text(String::new()),
            input_tokens: n,
            output_tokens: 1,
            timestamp: None,
        };
        let a: Vec<Sample> = (0..6).map(sample).collect();
        let b: Vec<Sample> = (100..102).map(sample).collect();
        let order: Vec<u32> = interleave(vec![a, b])
            .iter()
            .map(|s| s.input_tokens)
            .collect();
        assert_eq!(order, vec![0, 1, 100, 2, 3, 4, 101, 5]);
        for k in 1..=order.len() {
            let from_b = order[..k].iter().filter(|&&n| n >= 100).count() as f64;
            assert!((from_b - 2.0 * k as f64 / 8.0).abs() <= 1.0, "{order:?}");
        }
    }
}
