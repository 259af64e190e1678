//! Bounds on one request's response, so a misbehaving server costs one failed request with its
//! reason and never the run: a response head that never comes, a stream that stalls, a body or a
//! frame that never ends, output that grows without end. Connecting (`--connect-timeout`) and the
//! whole request (`--timeout`) are bounded elsewhere; everything here is per request.
//!
//! The defaults are those of a careful client that must not change a benchmark's numbers: they
//! never cut what a real server legitimately does under load, only what no server does.

use std::time::Duration;

/// Longest silence between two reads of a body once it has begun: 60 s, nginx's default
/// `proxy_read_timeout`, which already sits in front of many LLM servers. Between tokens a
/// server pauses for a preemption or a long prefill batch, seconds at most; a minute of silence
/// mid-stream is a hung server.
pub const DEFAULT_READ_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most bytes read for one response body: 256 MiB. A streamed response of a million tokens at
/// about 250 bytes per SSE chunk (vLLM's chat chunks) is that size, and so is a non-streaming
/// body of 128 k tokens with top-20 logprobs; nothing real is larger, and a non-streaming body is
/// held in memory whole.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 256 << 20;

/// Most memory one request's output may take: 64 MiB of generated text and reasoning, each chunk
/// timestamp counted as 8 bytes. Millions of tokens, beyond any model's output length.
pub const DEFAULT_MAX_TEXT_BYTES: usize = 64 << 20;

/// Bytes one chunk timestamp costs against [`Limits::max_text_bytes`].
pub const STAMP_BYTES: usize = std::mem::size_of::<u64>();

/// Per-request bounds; [`Default`] gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for the response head after the request went out (connecting not
    /// included). `None` (the default, as in Go's net/http and curl): only `--timeout` bounds
    /// it, because a non-streaming response's head carries the whole generation, and servers
    /// such as Triton and llama.cpp send a stream's head with its first token, after the
    /// request's queue time, which under overload runs for minutes in vLLM's own benchmarks.
    pub header_timeout: Option<Duration>,
    /// Longest silence between two reads of the body, counted from its first bytes (the wait
    /// for those is the server's queue and prefill, TTFT, bounded by `--timeout` alone for the
    /// same reason as `header_timeout`).
    pub read_idle_timeout: Duration,
    /// Most bytes read for one response body, streamed or not.
    pub max_response_bytes: u64,
    /// Most bytes of generated text plus reasoning kept per request, each chunk timestamp
    /// counted as [`STAMP_BYTES`], so an endless stream of empty chunks is bounded too.
    pub max_text_bytes: usize,
    /// Largest frame (SSE event or line, NDJSON line, gRPC message) the host framer gathers.
    pub max_frame_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: None,
            read_idle_timeout: DEFAULT_READ_IDLE_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            max_frame_bytes: llmb_plugin_sdk::framing::DEFAULT_MAX_FRAME,
        }
    }
}

/// `16 MiB`, `1 KiB` or `100 bytes`, for messages naming a limit.
pub fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// Parses a size flag: `65536`, `64KiB`, `64k`, `256MiB`, `1G` (binary multiples, case
/// insensitive, an optional `B`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 65536, 64KiB or 256MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{s:?}: unknown unit (use B, KiB, MiB or GiB)")),
    };
    let bytes = number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?}: too large"))?;
    if bytes == 0 {
        return Err(format!("{s:?}: must be at least 1 byte"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("256 MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 apples").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(size(256 << 20), "256 MiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
