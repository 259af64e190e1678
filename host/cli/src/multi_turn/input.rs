//! The `--input-file`: conversations as vLLM's multi-turn benchmark reads them (a JSON list of
//! `{"id", "messages"}`), or a `"filetype": "generate_conversations"` object describing
//! synthetic conversations, generated as vLLM's `bench_dataset.py` does.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use llmb_engine::tokenizer::HostTokenizer;

/// One chat message as the input and `--output-file` carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A conversation: its id and messages (the assistant ones are replaced by the server's answers
/// as the run goes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub messages: Vec<Message>,
    /// Position in the input (the records' `sample`).
    #[serde(skip)]
    pub index: u64,
}

impl Conversation {
    /// Leading system (or developer) messages: sent with every turn, never turns themselves.
    pub fn preamble(&self) -> usize {
        self.messages
            .iter()
            .take_while(|m| m.role != "user")
            .count()
    }
}

/// What the input file held.
pub struct Input {
    pub conversations: Vec<Conversation>,
    /// The generation parameters, when the conversations are synthetic.
    pub generated: Option<GenConvArgs>,
}

/// Reads `path`: a JSON list of conversations, a generation config, or (llmb) JSONL with one
/// conversation per line.
pub fn load(path: &Path, tokenizer: &HostTokenizer, seed: u64) -> anyhow::Result<Input> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read input file {}", path.display()))?;
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            // One JSON value per line (llmb's own conversation files).
            let lines: Result<Vec<Value>, _> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str)
                .collect();
            match lines {
                Ok(items) if items.len() > 1 => Value::Array(items),
                _ => {
                    return Err(e)
                        .with_context(|| format!("input file {} is not JSON", path.display()));
                }
            }
        }
    };
    match value {
        Value::Array(items) => {
            let conversations =
                parse_list(items).with_context(|| format!("input file {}", path.display()))?;
            eprintln!(
                "Found {} conversations in {}",
                conversations.len(),
                path.display()
            );
            Ok(Input {
                conversations,
                generated: None,
            })
        }
        Value::Object(obj) => {
            let Some(filetype) = obj.get("filetype") else {
                bail!(
                    "Input file {} is invalid (missing 'filetype')",
                    path.display()
                );
            };
            eprintln!("Using input file with filetype: {filetype}");
            let base = path.parent().unwrap_or(Path::new("."));
            let args = GenConvArgs::parse(&Value::Object(obj), base)
                .with_context(|| format!("input file {}", path.display()))?;
            let mut rng = StdRng::seed_from_u64(seed);
            let conversations = generate(&args, tokenizer, &mut rng)?;
            if args.print_stats {
                print_conv_stats(&conversations, tokenizer);
            }
            Ok(Input {
                conversations,
                generated: Some(args),
            })
        }
        _ => bail!("Input file {} is invalid", path.display()),
    }
}

fn parse_list(items: Vec<Value>) -> anyhow::Result<Vec<Conversation>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let id = match item.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            None => format!("CONV_{i}"),
            Some(other) => bail!("conversation {i}: id must be a string, got {other}"),
        };
        ensure!(
            seen.insert(id.clone()),
            "Conversation ID {id} found more than once in the input"
        );
        let messages = if let Some(m) = item.get("messages") {
            let list = m
                .as_array()
                .with_context(|| format!("Conversation messages should be a list (ID: {id})"))?;
            list.iter()
                .map(|m| {
                    let role = m.get("role").and_then(Value::as_str);
                    let content = m.get("content").and_then(Value::as_str);
                    match (role, content) {
                        (Some(r), Some(c)) => Ok(Message {
                            role: r.to_string(),
                            content: c.to_string(),
                        }),
                        _ => bail!(
                            "conversation {id}: every message needs a string role and content"
                        ),
                    }
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        } else if let Some(m) = item.get("conversations").and_then(Value::as_array) {
            // ShareGPT's own shape: {"from": "human"|"gpt"|"system", "value": ...}.
            m.iter()
                .map(|m| {
                    let from = m.get("from").and_then(Value::as_str).unwrap_or("");
                    let role = match from {
                        "human" | "user" => "user",
                        "gpt" | "assistant" | "chatgpt" | "bard" | "bing" => "assistant",
                        "system" => "system",
                        other => bail!("conversation {id}: unknown speaker {other:?}"),
                    };
                    Ok(Message {
                        role: role.into(),
                        content: m
                            .get("value")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        } else {
            bail!("conversation {id}: no \"messages\" list");
        };
        let conv = Conversation {
            id,
            messages,
            index: i as u64,
        };
        validate(&conv)?;
        out.push(conv);
    }
    Ok(out)
}

/// After any system messages, user and assistant must alternate, starting with the user.
fn validate(conv: &Conversation) -> anyhow::Result<()> {
    ensure!(
        !conv.messages.is_empty(),
        "Conversation with no messages (ID: {})",
        conv.id
    );
    let start = conv.preamble();
    ensure!(
        start < conv.messages.len(),
        "conversation {} has no user message",
        conv.id
    );
    for (k, m) in conv.messages[start..].iter().enumerate() {
        let want = if k % 2 == 0 { "user" } else { "assistant" };
        ensure!(
            m.role == want,
            "conversation {}: message {} should be {want}, is {:?}",
            conv.id,
            start + k,
            m.role
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Synthetic conversations (vLLM's bench_dataset.py)

/// A random distribution of a generation parameter, as the config names it.
#[derive(Debug, Clone)]
pub enum Dist {
    Constant(f64),
    Uniform {
        min: f64,
        max: f64,
        integer: bool,
    },
    Zipf {
        alpha: f64,
        max: Option<f64>,
    },
    Poisson {
        alpha: f64,
        max: Option<f64>,
    },
    Lognormal {
        mu: f64,
        sigma: f64,
        /// Set when the config gave `average`: samples are scaled to it.
        average: Option<f64>,
        median_ratio: Option<f64>,
        max: Option<f64>,
    },
}

impl fmt::Display for Dist {
    /// The names vLLM prints (and puts in the workbook).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dist::Constant(v) => write!(f, "Constant[{}]", num(*v)),
            Dist::Uniform { min, max, .. } => {
                write!(f, "UniformDistribution[{}, {}]", num(*min), num(*max))
            }
            Dist::Zipf { alpha, .. } => write!(f, "ZipfDistribution[{}]", num(*alpha)),
            Dist::Poisson { alpha, .. } => write!(f, "PoissonDistribution[{}]", num(*alpha)),
            Dist::Lognormal {
                mu,
                sigma,
                average,
                median_ratio,
                max,
            } => {
                let max = max.map_or("None".to_string(), num);
                match average {
                    Some(a) => write!(
                        f,
                        "LognormalDistribution[{}, {}, {max}]",
                        num(*a),
                        num(median_ratio.unwrap_or(0.85))
                    ),
                    None => write!(
                        f,
                        "LognormalDistribution[{}, {}, {max}]",
                        num(*mu),
                        num(*sigma)
                    ),
                }
            }
        }
    }
}

/// Integers without a decimal point, as Python prints them.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Dist {
    /// Draws `n` values (lognormal samples are scaled to `average` over the batch, as numpy's
    /// implementation in vLLM does).
    pub fn sample(&self, n: usize, rng: &mut StdRng) -> Vec<i64> {
        let cap = |v: f64, max: Option<f64>| match max {
            Some(m) if m > 0.0 => v.min(m),
            _ => v,
        };
        match self {
            Dist::Constant(v) => vec![v.round() as i64; n],
            Dist::Uniform { min, max, integer } => (0..n)
                .map(|_| {
                    if *integer {
                        rng.random_range(*min as i64..=*max as i64)
                    } else {
                        rng.random_range(*min..=*max).round() as i64
                    }
                })
                .collect(),
            Dist::Zipf { alpha, max } => {
                let d = rand_distr::Zeta::new(*alpha).expect("alpha checked > 1");
                (0..n)
                    .map(|_| cap(d.sample(rng), *max).min(i64::MAX as f64) as i64)
                    .collect()
            }
            Dist::Poisson { alpha, max } => {
                let d = rand_distr::Poisson::new(*alpha).expect("alpha checked > 0");
                (0..n).map(|_| cap(d.sample(rng), *max) as i64).collect()
            }
            Dist::Lognormal {
                mu,
                sigma,
                average,
                max,
                ..
            } => {
                let d = rand_distr::LogNormal::new(*mu, *sigma).expect("sigma checked >= 0");
                let mut s: Vec<f64> = (0..n).map(|_| d.sample(rng)).collect();
                if let Some(avg) = average
                    && n > 0
                {
                    let mean = s.iter().sum::<f64>() / n as f64;
                    if mean > 0.0 {
                        s.iter_mut().for_each(|v| *v *= avg / mean);
                    }
                }
                s.into_iter().map(|v| cap(v, *max).round() as i64).collect()
            }
        }
    }

    fn parse(
        conf: &Value,
        section: &str,
        subsection: &str,
        optional: bool,
    ) -> anyhow::Result<Self> {
        let sec = conf
            .get(section)
            .with_context(|| format!("Missing section {section}"))?;
        let Some(c) = sec.get(subsection) else {
            if optional {
                return Ok(Dist::Constant(0.0));
            }
            bail!("Missing subsection {subsection} in section {section}");
        };
        let field = |name: &str| -> anyhow::Result<f64> {
            c.get(name).and_then(Value::as_f64).with_context(|| {
                format!("Missing field '{name}' in section={section} and subsection={subsection}")
            })
        };
        let opt = |name: &str| c.get(name).and_then(Value::as_f64);
        let kind = c
            .get("distribution")
            .and_then(Value::as_str)
            .with_context(|| {
                format!(
                    "Missing field 'distribution' in section={section} and subsection={subsection}"
                )
            })?;
        Ok(match kind {
            "constant" => Dist::Constant(field("value")?),
            "zipf" => {
                let alpha = field("alpha")?;
                ensure!(
                    alpha > 1.0,
                    "{section}.{subsection}: zipf alpha must be > 1"
                );
                Dist::Zipf {
                    alpha,
                    max: opt("max"),
                }
            }
            "poisson" => {
                let alpha = field("alpha")?;
                ensure!(
                    alpha > 0.0,
                    "{section}.{subsection}: poisson alpha must be > 0"
                );
                Dist::Poisson {
                    alpha,
                    max: opt("max"),
                }
            }
            "lognormal" => {
                let max = opt("max");
                if let Some(average) = opt("average") {
                    ensure!(average >= 1.0, "Lognormal average must be positive");
                    ensure!(
                        c.get("mean").is_none() && c.get("sigma").is_none(),
                        "When using lognormal average, you can't provide mean/sigma"
                    );
                    let ratio = opt("median_ratio").unwrap_or(0.85);
                    ensure!(
                        ratio > 0.0 && ratio < 1.0,
                        "median_ratio must be in range (0, 1)"
                    );
                    // median/mean = exp(-sigma^2/2): sigma^2 = 2 ln(mean/median), mu = ln(median).
                    let median = average * ratio;
                    Dist::Lognormal {
                        mu: median.ln(),
                        sigma: (2.0 * (average / median).ln()).sqrt(),
                        average: Some(average),
                        median_ratio: opt("median_ratio"),
                        max,
                    }
                } else {
                    let mu = field("mean")?;
                    let sigma = field("sigma")?;
                    ensure!(
                        mu > 0.0 && sigma >= 0.0,
                        "Lognormal mean must be positive and sigma must be non-negative"
                    );
                    Dist::Lognormal {
                        mu,
                        sigma,
                        average: None,
                        median_ratio: None,
                        max,
                    }
                }
            }
            "uniform" => {
                let (min, max) = (field("min")?, field("max")?);
                ensure!(
                    min > 0.0 && min <= max,
                    "{section}.{subsection}: uniform needs 0 < min <= max"
                );
                let integer = c.get("min").is_some_and(Value::is_i64)
                    && c.get("max").is_some_and(Value::is_i64);
                Dist::Uniform { min, max, integer }
            }
            other => bail!("Unknown distribution: {other}"),
        })
    }
}

/// A `"filetype": "generate_conversations"` config.
#[derive(Debug, Clone)]
pub struct GenConvArgs {
    pub num_conversations: usize,
    /// As written in the config (for the report).
    pub text_files: Vec<String>,
    /// Where each was found.
    pub text_paths: Vec<PathBuf>,
    pub input_num_turns: Dist,
    pub input_common_prefix_num_tokens: Dist,
    pub input_prefix_num_tokens: Dist,
    pub input_num_tokens: Dist,
    pub output_num_tokens: Dist,
    pub print_stats: bool,
}

impl GenConvArgs {
    /// `base`: the config's folder, where text files not found from the current folder are
    /// looked for.
    pub fn parse(conf: &Value, base: &Path) -> anyhow::Result<Self> {
        for field in [
            "filetype",
            "num_conversations",
            "text_files",
            "prompt_input",
            "prompt_output",
        ] {
            ensure!(conf.get(field).is_some(), "Missing field {field} in input");
        }
        ensure!(
            conf["filetype"] == "generate_conversations",
            "unknown filetype {} (expected \"generate_conversations\")",
            conf["filetype"]
        );
        let num_conversations = conf["num_conversations"]
            .as_u64()
            .filter(|n| *n > 0)
            .context("num_conversations should be larger than zero")?
            as usize;
        let text_files: Vec<String> = conf["text_files"]
            .as_array()
            .context("Field 'text_files' should be a list")?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .context("Field 'text_files' should be a list of file names")?;
        ensure!(
            !text_files.is_empty(),
            "Field 'text_files' should be a list with at least one file"
        );
        let text_paths = text_files
            .iter()
            .map(|f| {
                let p = PathBuf::from(f);
                if p.exists() || p.is_absolute() {
                    p
                } else {
                    base.join(f)
                }
            })
            .collect();
        let print_stats = match conf.get("print_stats") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => bail!("Field 'print_stats' should be either 'true' or 'false'"),
        };
        Ok(Self {
            num_conversations,
            text_files,
            text_paths,
            input_num_turns: Dist::parse(conf, "prompt_input", "num_turns", false)?,
            input_num_tokens: Dist::parse(conf, "prompt_input", "num_tokens", false)?,
            input_common_prefix_num_tokens: Dist::parse(
                conf,
                "prompt_input",
                "common_prefix_num_tokens",
                true,
            )?,
            input_prefix_num_tokens: Dist::parse(conf, "prompt_input", "prefix_num_tokens", false)?,
            output_num_tokens: Dist::parse(conf, "prompt_output", "num_tokens", false)?,
            print_stats,
        })
    }

    /// The generation parameters as vLLM lists them (console and workbook).
    pub fn params(&self) -> Vec<(String, String)> {
        vec![
            ("text_files".into(), self.text_files.join(", ")),
            ("input_num_turns".into(), self.input_num_turns.to_string()),
            (
                "input_common_prefix_num_tokens".into(),
                self.input_common_prefix_num_tokens.to_string(),
            ),
            (
                "input_prefix_num_tokens".into(),
                self.input_prefix_num_tokens.to_string(),
            ),
            ("input_num_tokens".into(), self.input_num_tokens.to_string()),
            (
                "output_num_tokens".into(),
                self.output_num_tokens.to_string(),
            ),
        ]
    }
}

/// The text files as tokens, decoded back to text by the tokenizer (or joined words).
struct Corpus<'a> {
    tokenizer: &'a HostTokenizer,
    ids: Vec<u32>,
    words: Vec<String>,
    warned: std::cell::Cell<bool>,
}

impl<'a> Corpus<'a> {
    fn load(paths: &[PathBuf], tokenizer: &'a HostTokenizer) -> anyhow::Result<Self> {
        let mut ids = Vec::new();
        let mut words = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read text file {}", p.display()))?;
            match tokenizer {
                HostTokenizer::HuggingFace { .. } => ids.extend(tokenizer.encode(&text)),
                HostTokenizer::Words => words.extend(text.split_whitespace().map(str::to_owned)),
            }
        }
        let corpus = Corpus {
            tokenizer,
            ids,
            words,
            warned: std::cell::Cell::new(false),
        };
        ensure!(corpus.len() > 0, "the text files hold no text");
        Ok(corpus)
    }

    fn len(&self) -> usize {
        self.ids.len().max(self.words.len())
    }

    /// Tokens `start..end`, wrapping around to the beginning when the files run out (vLLM's
    /// script stops with an error there instead).
    fn decode(&self, start: usize, end: usize) -> String {
        if end <= start {
            return String::new();
        }
        let n = self.len();
        if end > n && !self.warned.replace(true) {
            eprintln!(
                "note: the text files hold {n} tokens, fewer than the conversations need; \
                 their text is reused from the start"
            );
        }
        if self.words.is_empty() {
            let ids: Vec<u32> = (start..end).map(|i| self.ids[i % n]).collect();
            self.tokenizer.decode(&ids)
        } else {
            let parts: Vec<&str> = (start..end).map(|i| self.words[i % n].as_str()).collect();
            parts.join(" ")
        }
    }
}

/// vLLM's `generate_conversations`: per conversation an even number of messages; user turns of
/// the sampled length (a conversation-unique opening, the first turn with the shared and the
/// per-conversation prefix text), assistant turns of the sampled length (only their lengths
/// matter: they set max_tokens and are replaced by the server's answers).
pub fn generate(
    args: &GenConvArgs,
    tokenizer: &HostTokenizer,
    rng: &mut StdRng,
) -> anyhow::Result<Vec<Conversation>> {
    const BASE_PROMPT: &str = "Please rewrite the following text and add more content: ";
    let base_prompt_tokens = i64::from(tokenizer.count(BASE_PROMPT));
    let corpus = Corpus::load(&args.text_paths, tokenizer)?;
    let n = args.num_conversations;

    let turn_count: Vec<usize> = args
        .input_num_turns
        .sample(n, rng)
        .into_iter()
        .map(|t| {
            let t = t.max(2) as usize;
            t + t % 2
        })
        .collect();
    let conv_prefix_tokens = args.input_prefix_num_tokens.sample(n, rng);
    let mut base_offset = 0usize;
    let common_prefix_tokens =
        args.input_common_prefix_num_tokens.sample(1, rng)[0].max(0) as usize;
    let common_prefix_text = if common_prefix_tokens > 0 {
        base_offset += common_prefix_tokens;
        corpus.decode(0, common_prefix_tokens.saturating_sub(2)) + "."
    } else {
        String::new()
    };

    let mut out = Vec::with_capacity(n);
    for (conv_id, &nturns) in turn_count.iter().enumerate() {
        let input_counts: Vec<i64> = args
            .input_num_tokens
            .sample(nturns, rng)
            .into_iter()
            .map(|t| t.max(base_prompt_tokens))
            .collect();
        let output_counts: Vec<i64> = args
            .output_num_tokens
            .sample(nturns, rng)
            .into_iter()
            .map(|t| t.max(1))
            .collect();
        let max_input = input_counts.iter().copied().max().unwrap_or(0).max(0) as usize;
        let mut messages = Vec::with_capacity(nturns);
        for turn in 0..nturns {
            if turn % 2 == 0 {
                let mut num_tokens = input_counts[turn];
                let mut content = format!("{conv_id} is a nice number... ");
                if !common_prefix_text.is_empty() && turn == 0 {
                    content = format!("{common_prefix_text}{content}");
                }
                num_tokens -= i64::from(tokenizer.count(&content));
                if turn == 0 {
                    let prefix = conv_prefix_tokens[conv_id].max(0) as usize;
                    if prefix > 0 {
                        content.push_str(&format!("{conv_id}, "));
                        content.push_str(&corpus.decode(base_offset, base_offset + prefix));
                        base_offset += prefix;
                    }
                }
                content.push_str(BASE_PROMPT);
                num_tokens -= base_prompt_tokens;
                if num_tokens > 0 {
                    let start = base_offset + turn * max_input;
                    content.push_str(&corpus.decode(start, start + num_tokens as usize));
                }
                messages.push(Message {
                    role: "user".into(),
                    content,
                });
            } else {
                messages.push(Message {
                    role: "assistant".into(),
                    content: corpus.decode(0, output_counts[turn] as usize),
                });
            }
        }
        out.push(Conversation {
            id: format!("CONV_ID_{conv_id}"),
            messages,
            index: conv_id as u64,
        });
        base_offset += nturns;
    }
    eprintln!("Generated {n} synthetic conversations");
    Ok(out)
}

/// `print_stats: true`: per-conversation and per-request token statistics.
fn print_conv_stats(conversations: &[Conversation], tokenizer: &HostTokenizer) {
    use super::stats::{Column, describe_table};
    let mut turns = Vec::new();
    let mut user = Vec::new();
    let mut assistant = Vec::new();
    let mut requests = Vec::new();
    for c in conversations {
        let (mut u, mut a, mut running) = (Vec::new(), Vec::new(), 0u64);
        for m in &c.messages {
            let t = u64::from(tokenizer.count(&m.content));
            running += t;
            match m.role.as_str() {
                "user" => {
                    u.push(t as f64);
                    requests.push(Some(running as f64));
                }
                "assistant" => a.push(t as f64),
                _ => {}
            }
        }
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        turns.push(Some(c.messages.len() as f64));
        user.push(mean(&u));
        assistant.push(mean(&a));
    }
    let pcts = [0.25, 0.5, 0.75, 0.9, 0.99];
    let sep = super::stats::TEXT_SEPARATOR;
    println!("{sep}\nConversations statistics:\n{sep}");
    let cols = [
        Column::new("conversation_turns", turns),
        Column::new("user_tokens", user),
        Column::new("assistant_tokens", assistant),
    ];
    println!("{}", describe_table(&cols, &pcts));
    println!("{sep}\nRequest statistics:\n{sep}");
    println!(
        "{}",
        describe_table(&[Column::new("request_tokens", requests)], &pcts)
    );
    println!("{sep}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_parse_and_validate() {
        let v = json!([
            {"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            {"id": 7, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]},
            {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}
        ]);
        let Value::Array(items) = v else {
            unreachable!()
        };
        let convs = parse_list(items).unwrap();
        assert_eq!(convs[1].id, "7");
        assert_eq!(convs[1].preamble(), 1);
        assert_eq!(convs[2].id, "CONV_2");
        assert_eq!(convs[2].messages[1].role, "assistant");
        let dup = json!([{"id": "a", "messages": [{"role": "user", "content": "x"}]},
                         {"id": "a", "messages": [{"role": "user", "content": "y"}]}]);
        let Value::Array(items) = dup else {
            unreachable!()
        };
        assert!(parse_list(items).is_err());
        let bad = json!([{"id": "b", "messages": [{"role": "assistant", "content": "x"}]}]);
        let Value::Array(items) = bad else {
            unreachable!()
        };
        assert!(parse_list(items).is_err());
    }

    #[test]
    fn distributions_sample_in_range_and_print_like_vllm() {
        let mut rng = StdRng::seed_from_u64(1);
        let u = Dist::Uniform {
            min: 3.0,
            max: 5.0,
            integer: true,
        };
        assert!(u.sample(200, &mut rng).iter().all(|v| (3..=5).contains(v)));
        assert_eq!(u.to_string(), "UniformDistribution[3, 5]");
        let conf = json!({"p": {"x": {"distribution": "lognormal", "average": 100, "max": 150}}});
        let l = Dist::parse(&conf, "p", "x", false).unwrap();
        let s = l.sample(2000, &mut rng);
        assert!(s.iter().all(|v| *v <= 150));
        let mean = s.iter().sum::<i64>() as f64 / s.len() as f64;
        assert!((80.0..=101.0).contains(&mean), "mean {mean}");
        assert_eq!(l.to_string(), "LognormalDistribution[100, 0.85, 150]");
        let z = Dist::Zipf {
            alpha: 1.5,
            max: Some(10.0),
        };
        assert!(z.sample(500, &mut rng).iter().all(|v| (1..=10).contains(v)));
        assert_eq!(Dist::Constant(500.0).to_string(), "Constant[500]");
        assert!(Dist::parse(&conf, "p", "missing", true).is_ok());
        assert!(Dist::parse(&conf, "p", "missing", false).is_err());
    }
}
