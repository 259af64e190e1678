//! Recording real servers' responses as test fixtures: with `LLMB_RECORD_TRANSCRIPTS=DIR` set,
//! every response is written to `DIR/NNNNN.json` with its request, status, headers and each body
//! read exactly as it arrived (the read boundaries matter: framers and adapters must cope with
//! any split). `tests/transcripts.rs` replays them over a socket through the adapters in CI.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// One recorded exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transcript {
    pub method: String,
    pub path: String,
    /// The request body as sent (UTF-8 for the JSON APIs).
    pub request_body: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Body reads in arrival order, as text (lossless for the UTF-8 streams recorded here).
    pub reads: Vec<String>,
}

fn dir() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("LLMB_RECORD_TRANSCRIPTS").map(PathBuf::from))
        .as_ref()
}

/// Whether transcripts are being recorded (checked once per request, a pointer compare after
/// the first call).
pub fn enabled() -> bool {
    dir().is_some()
}

/// Writes one transcript; recording problems are reported, never fatal to the request.
pub fn save(t: &Transcript) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let Some(dir) = dir() else { return };
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{n:05}.json"));
    let result = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(t).expect("a transcript serializes"),
        )
    });
    if let Err(e) = result {
        eprintln!("cannot record transcript {}: {e}", path.display());
    }
}
