//! Keeping the rows a run draws while the files stream past, then handing them out as samples.
//!
//! Parquet and CSV cannot be re-read record by record the way the SDK's sampler re-reads JSON
//! spans, so every format goes through one reservoir instead: a shuffled run with `count` N
//! keeps a uniform seeded sample of N usable rows (Algorithm R) and shuffles it, an unshuffled
//! one stops reading at the N-th usable row, and `count` 0 keeps every row. Rows are tokenized
//! only when they become samples.

use llmb_plugin_sdk::SplitMix64;
use llmb_plugin_sdk::dataset::{ContentPart, Prompt, Sample};
use llmb_plugin_sdk::sampler::Plan;

use crate::rows::{Output, Row};

/// How much the kept rows may take by default: a dataset plugin gets 256 MiB, and reading
/// (pages, buffers, the batches handed to the host) needs the rest.
pub const MEMORY_BUDGET: u64 = 160 << 20;

/// A batch stops adding samples once its images reach this many bytes (it always holds one):
/// a cycled row's image is copied into each sample made of it.
pub const BATCH_BYTES: usize = 32 << 20;

/// Bytes a row holds, roughly: its text plus the allocations around it.
fn footprint(row: &Row) -> u64 {
    const OVERHEAD: usize = 32;
    let prompt = match &row.prompt {
        Prompt::Text(t) => t.capacity() + OVERHEAD,
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| m.content.capacity() + OVERHEAD + std::mem::size_of_val(m))
            .sum(),
        Prompt::Multimodal(messages) => messages
            .iter()
            .map(|m| {
                let parts: usize = m
                    .parts
                    .iter()
                    .map(|part| match part {
                        ContentPart::Text(t) => t.capacity(),
                        ContentPart::Image(i) => {
                            i.data.capacity()
                                + i.mime_type.capacity()
                                + i.url.as_ref().map_or(0, String::capacity)
                        }
                    })
                    .sum();
                parts
                    + m.parts.capacity() * (std::mem::size_of::<ContentPart>() + OVERHEAD)
                    + std::mem::size_of_val(m)
            })
            .sum(),
        Prompt::Audio(_) => 0,
    };
    let reply = match &row.output {
        Output::Reference(r) => r.capacity() + OVERHEAD,
        _ => 0,
    };
    (std::mem::size_of::<Row>() + prompt + reply) as u64
}

/// Gathers the usable rows a run will draw from, in the order the files give them.
pub struct Collector {
    plan: Plan,
    rng: SplitMix64,
    rows: Vec<Row>,
    /// Bytes the kept rows take, by [`footprint`], and how many they may take.
    held: u64,
    budget: u64,
    /// Usable rows offered so far.
    usable: u64,
    /// Rows skipped for an empty prompt.
    pub skipped: u64,
}

impl Collector {
    /// `budget`: bytes the kept rows may take before reading stops with an error, rather than
    /// the plugin running out of memory with nothing said.
    pub fn new(plan: Plan, budget: u64) -> Self {
        Self {
            plan,
            rng: SplitMix64::new(plan.seed),
            rows: Vec::new(),
            held: 0,
            budget,
            usable: 0,
            skipped: 0,
        }
    }

    /// False once an unshuffled run holds `count` rows: the rest of the data need not be read.
    pub fn wants_more(&self) -> bool {
        self.plan.shuffle || self.plan.count == 0 || self.usable < self.plan.count
    }

    /// Usable rows seen so far (kept or not).
    pub fn usable(&self) -> u64 {
        self.usable
    }

    /// Takes a usable row; says whether reading should go on, or why it cannot (too much to
    /// keep in memory).
    pub fn offer(&mut self, row: Row) -> Result<bool, String> {
        self.usable += 1;
        let n = self.plan.count;
        let size = footprint(&row);
        if self.plan.shuffle && n > 0 && self.usable > n {
            let j = self.rng.range_inclusive(0, self.usable - 1);
            if j < n {
                let old = std::mem::replace(&mut self.rows[j as usize], row);
                self.held = self.held - footprint(&old) + size;
            }
        } else {
            self.rows.push(row);
            self.held += size;
        }
        if self.held > self.budget {
            let mib = self.budget >> 20;
            return Err(if n == 0 {
                format!(
                    "the {} rows read so far take more than {mib} MiB, most of the memory a \
                     dataset plugin gets, and --num-prompts 0 keeps every row; pass \
                     --num-prompts N to draw N rows while reading",
                    self.rows.len()
                )
            } else {
                format!(
                    "{} rows take more than {mib} MiB, most of the memory a dataset plugin \
                     gets; pass a smaller --num-prompts",
                    self.rows.len()
                )
            });
        }
        Ok(self.wants_more())
    }

    /// The kept rows in draw order: shuffled with the seed (a reservoir's slots are not in a
    /// random order), else as read.
    pub fn finish(mut self) -> Vec<Row> {
        if self.plan.shuffle {
            for i in (1..self.rows.len()).rev() {
                let j = self.rng.range_inclusive(0, i as u64) as usize;
                self.rows.swap(i, j);
            }
        }
        self.rows
    }
}

/// Token counts of a row already turned into a sample, so cycling does not tokenize it again.
#[derive(Debug, Clone, Copy)]
struct Measured {
    input_tokens: u32,
    output_tokens: u32,
}

/// Hands out samples from the kept rows, cycling over them on request.
pub struct Pool {
    rows: Vec<Row>,
    measured: Vec<Option<Measured>>,
    /// Samples to produce in all.
    total: u64,
    produced: u64,
    /// `hf-output-len`.
    fixed_output_len: Option<u32>,
    /// `custom-output-len`.
    default_output_len: u32,
}

/// The prompt's length: chat messages are counted one by one and added up, as the custom
/// reader does.
pub fn prompt_tokens(prompt: &Prompt, count: &dyn Fn(&str) -> u32) -> u32 {
    match prompt {
        Prompt::Text(t) => count(t),
        Prompt::Chat(messages) => messages.iter().map(|m| count(&m.content)).sum(),
        Prompt::Multimodal(messages) => messages
            .iter()
            .map(|m| count(&llmb_plugin_sdk::media::dataset_message_text(m)))
            .sum(),
        Prompt::Audio(_) => 0,
    }
}

/// The bytes of a prompt's images.
fn image_bytes(prompt: &Prompt) -> usize {
    match prompt {
        Prompt::Multimodal(messages) => messages
            .iter()
            .flat_map(|m| &m.parts)
            .map(|p| match p {
                ContentPart::Image(i) => i.data.len(),
                ContentPart::Text(_) => 0,
            })
            .sum(),
        _ => 0,
    }
}

impl Pool {
    /// `rows` in draw order; `count` 0 produces each once, more than there are rows only with
    /// `cycle`.
    pub fn new(
        rows: Vec<Row>,
        plan: Plan,
        fixed_output_len: Option<u32>,
        default_output_len: u32,
    ) -> Self {
        let available = rows.len() as u64;
        let total = match plan.count {
            _ if available == 0 => 0,
            0 => available,
            n if plan.cycle => n,
            n => n.min(available),
        };
        Self {
            measured: vec![None; rows.len()],
            rows,
            total,
            produced: 0,
            fixed_output_len,
            default_output_len,
        }
    }

    /// Rows kept for this run.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn measure(&self, row: &Row, count: &dyn Fn(&str) -> u32) -> Measured {
        let output_tokens = match (self.fixed_output_len, &row.output) {
            (Some(n), _) => n,
            (None, Output::Tokens(n)) => *n,
            (None, Output::Reference(reply)) => count(reply).max(1),
            (None, Output::Default) => self.default_output_len,
        };
        Measured {
            input_tokens: prompt_tokens(&row.prompt, count),
            output_tokens,
        }
    }

    /// Up to `max` more samples, fewer once their images reach [`BATCH_BYTES`]; an empty batch
    /// means the run is complete.
    pub fn next_batch(&mut self, max: u32, count: &dyn Fn(&str) -> u32) -> Vec<Sample> {
        let n = (self.total - self.produced).min(u64::from(max)) as usize;
        let mut out = Vec::with_capacity(n);
        let mut bytes = 0;
        for _ in 0..n {
            if bytes >= BATCH_BYTES {
                break;
            }
            let i = (self.produced % self.rows.len() as u64) as usize;
            let measured = match self.measured[i] {
                Some(m) => m,
                None => {
                    let m = self.measure(&self.rows[i], count);
                    self.measured[i] = Some(m);
                    m
                }
            };
            let last_use = self.produced + self.rows.len() as u64 >= self.total;
            let prompt = if last_use {
                std::mem::replace(&mut self.rows[i].prompt, Prompt::Text(String::new()))
            } else {
                self.rows[i].prompt.clone()
            };
            bytes += image_bytes(&prompt);
            out.push(Sample {
                prompt,
                input_tokens: measured.input_tokens,
                output_tokens: measured.output_tokens,
                timestamp: None,
            });
            self.produced += 1;
        }
        out
    }
}
