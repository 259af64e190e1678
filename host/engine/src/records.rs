//! Per-request records: what the host measured for one request, with host timestamps only.
//!
//! Records are the single source of truth for metrics and reports, and are appended to a JSONL
//! file as each request finishes so an interrupted run keeps everything it measured.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the output token count of a request came from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum TokenSource {
    /// `usage.completion_tokens` reported by the server.
    Usage,
    /// Per-delta token counts reported by the server.
    ServerDeltas,
    /// The host tokenizer over the generated text.
    Tokenizer,
    /// The number of frames that carried text (role-only and finish chunks not counted).
    DeltaCount,
    /// One token per word of the generated text: no tokenizer and nothing streamed.
    WordEstimate,
}

impl TokenSource {
    pub fn describe(self) -> &'static str {
        match self {
            TokenSource::Usage => "server usage (completion_tokens)",
            TokenSource::ServerDeltas => "server per-delta counts",
            TokenSource::Tokenizer => "host tokenizer over the generated text",
            TokenSource::DeltaCount => "number of streamed deltas that carried text",
            TokenSource::WordEstimate => "one token per word of the generated text (estimate)",
        }
    }
}

/// Why a request failed, grouped so reports can count failures by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestError {
    /// `http`, `protocol`, `timeout`, `connect`, `plugin`, `cancelled`, or the adapter's error kind.
    pub kind: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

/// Everything measured about one request. Times are nanoseconds since the run's start instant
/// (just before the first dispatch), taken by the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position of the request in the run (0-based, in dispatch order).
    pub id: u64,
    /// Index of the dataset sample the request came from (the same in every round).
    #[serde(default)]
    pub sample: u64,
    /// The closed-loop client that sent it (`--num-clients`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client: Option<u32>,
    /// Turn index within a multi-turn conversation (0 = first user turn).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub turn: Option<u32>,
    /// Warmup requests are recorded but left out of every metric.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub warmup: bool,
    /// When the arrival schedule meant the request to go out.
    pub scheduled_ns: u64,
    /// When the client got to the request and began waiting for a concurrency slot; later than
    /// `scheduled_ns` only when the client itself was behind.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub released_ns: Option<u64>,
    /// When a concurrency slot was obtained (`released_ns` when there is no cap).
    pub dispatched_ns: u64,
    /// Just before the request was written (vLLM's `st`): latencies count from here.
    pub sent_ns: u64,
    /// The first attempt failed on a reused connection the server had closed, before any
    /// response byte; the request went once more on a fresh connection. Times still count from
    /// the first attempt.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub retried: bool,
    /// How long the TCP connect took, for a request that opened its connection (name resolution
    /// included); absent on a reused or pre-opened connection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connect_duration_ns: Option<u64>,
    /// How long the TLS handshake took, for a request that opened an HTTPS connection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls_duration_ns: Option<u64>,
    /// When the last byte of the request was written to the connection (HTTP/1.1).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub written_ns: Option<u64>,
    /// When the first byte of the response was read from the connection (HTTP/1.1; over
    /// HTTP/2, when the response head was handed over).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_byte_ns: Option<u64>,
    /// The longest any read of the response waited in the socket: from the kernel's receive
    /// stamp of its bytes to the read (Linux, plain TCP). Stamps are arrival times either way,
    /// but chunks that arrived less than this apart may have shared one read and so the stamp
    /// of the last of them: a long wait means the client was too busy to time this one closely.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub read_wait_max_ns: Option<u64>,
    /// Arrival time of every frame that carried a delta; the first one is the TTFT point.
    pub delta_ns: Vec<u64>,
    /// When the response ended (body finished or the request failed).
    pub end_ns: u64,
    /// Prompt length from the dataset (tokenizer count).
    pub prompt_tokens: u32,
    /// Images the prompt carried (vision models); the server counts their tokens, which
    /// `server_prompt_tokens` includes and `prompt_tokens` does not.
    #[serde(skip_serializing_if = "is_zero_u32", default)]
    pub input_images: u32,
    /// `usage.prompt_tokens` when the server sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_prompt_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens: Option<u32>,
    /// The max-tokens value sent.
    pub requested_output_tokens: u32,
    /// Output tokens and where that count came from.
    pub output_tokens: u32,
    pub token_source: Option<TokenSource>,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RequestError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    pub generated_text: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub reasoning_text: String,
    /// Arrival of the first frame that carried answer text (not reasoning): the time to first
    /// output token (TTFO) of a model that thinks first. Absent when no answer arrived.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_answer_ns: Option<u64>,
    /// Output tokens spent on reasoning (part of `output_tokens`); absent when none streamed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reasoning_tokens: Option<u32>,
    /// Where `reasoning_tokens` came from.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reasoning_token_source: Option<TokenSource>,
    /// The client cancelled the request on purpose (`--cancel-rate`): it failed with kind
    /// `cancelled` and keeps what arrived before.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub planned_cancel: bool,
    /// Wall time spent inside backend plugin calls for this request (build, parse), in ns.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub plugin_ns: u64,
    /// The plugin fault that failed this request, by kind (trap, deadline, memory).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub plugin_fault: Option<crate::plugin::FaultKind>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl RequestRecord {
    /// Time to first token in seconds (first delta frame − send).
    pub fn ttft_s(&self) -> Option<f64> {
        self.delta_ns
            .first()
            .map(|&t| ns_to_s(t.saturating_sub(self.sent_ns)))
    }

    /// Time to first answer token in seconds (first answer frame − send): equal to TTFT for a
    /// model that does not reason, later by the thinking time for one that does.
    pub fn ttfo_s(&self) -> Option<f64> {
        self.first_answer_ns
            .map(|t| ns_to_s(t.saturating_sub(self.sent_ns)))
    }

    /// Output tokens of the answer: the output less its reasoning tokens.
    pub fn answer_tokens(&self) -> u32 {
        self.output_tokens
            .saturating_sub(self.reasoning_tokens.unwrap_or(0))
    }

    /// End-to-end latency in seconds: last delta frame − send (vLLM's `latency`); for a
    /// non-streaming request, the end of the body.
    pub fn e2el_s(&self) -> f64 {
        let end = self.delta_ns.last().copied().unwrap_or(self.end_ns);
        ns_to_s(end.saturating_sub(self.sent_ns))
    }

    /// Time per output token after the first in seconds (vLLM's TPOT): `(E2EL − TTFT) / (n − 1)`
    /// for more than one output token, with a TTFT of 0 for a response that did not stream.
    pub fn tpot_s(&self) -> Option<f64> {
        (self.output_tokens > 1).then(|| {
            (self.e2el_s() - self.ttft_s().unwrap_or(0.0)) / f64::from(self.output_tokens - 1)
        })
    }

    /// Gaps between successive delta frames in seconds.
    pub fn itls_s(&self) -> impl Iterator<Item = f64> + '_ {
        self.delta_ns
            .windows(2)
            .map(|w| ns_to_s(w[1].saturating_sub(w[0])))
    }

    /// When the client got to the request (never before it was meant to go out).
    fn released(&self) -> u64 {
        self.released_ns
            .unwrap_or(self.scheduled_ns)
            .max(self.scheduled_ns)
    }

    /// Time spent waiting for a `--max-concurrency` slot, in seconds.
    pub fn queue_s(&self) -> f64 {
        ns_to_s(self.dispatched_ns.saturating_sub(self.released()))
    }

    /// Time to first token counted from when the request was meant to go out, so a stalled
    /// client or a full concurrency cap cannot hide server delay (coordinated omission).
    pub fn ttft_from_intended_s(&self) -> Option<f64> {
        self.delta_ns
            .first()
            .map(|&t| ns_to_s(t.saturating_sub(self.scheduled_ns)))
    }

    /// End-to-end latency counted from the intended send time.
    pub fn e2el_from_intended_s(&self) -> f64 {
        let end = self.delta_ns.last().copied().unwrap_or(self.end_ns);
        ns_to_s(end.saturating_sub(self.scheduled_ns))
    }

    /// How late the request went out against its schedule, in seconds: the client's own delay
    /// before it got to the request plus its work before writing, the slot wait excluded.
    pub fn schedule_lag_s(&self) -> f64 {
        let released = self.released();
        let before = released - self.scheduled_ns;
        let after = self
            .sent_ns
            .saturating_sub(self.dispatched_ns.max(released));
        ns_to_s(before + after)
    }

    /// Input tokens as reported: the server's count when present, else the dataset's.
    pub fn input_tokens(&self) -> u32 {
        self.server_prompt_tokens.unwrap_or(self.prompt_tokens)
    }
}

pub fn ns_to_s(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Appends records to a JSONL file as they arrive, flushing each so a crash loses nothing.
pub struct RecordWriter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl RecordWriter {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: std::io::BufWriter::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and flushes it to the file.
    pub fn write(&mut self, record: &RequestRecord) -> std::io::Result<()> {
        self.append(record)?;
        self.flush()
    }

    /// Appends one record to the buffer: for a batch taken in one wake-up, flushed once with
    /// [`RecordWriter::flush`].
    pub fn append(&mut self, record: &RequestRecord) -> std::io::Result<()> {
        // Server messages may quote a secret back (an echoed key or URL): never saved.
        let line = serde_json::to_string(record)?;
        self.out
            .write_all(crate::secrets::scrub(&line).as_bytes())?;
        self.out.write_all(b"\n")
    }

    /// Hands what was appended to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Reads a JSONL record file back (for re-reporting and tests).
pub fn read_records(path: &Path) -> anyhow::Result<Vec<RequestRecord>> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a request record", path.display(), i + 1))
        })
        .collect()
}
