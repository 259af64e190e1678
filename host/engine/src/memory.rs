//! Resident memory of the client process across one stage: the RSS when its timed phase is
//! about to begin and the peak during it, so the growth can be charged to the streams in
//! flight rather than to the plugins, dataset and tokenizer loaded once before.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Resident set size now, in bytes (from /proc/self/statm).
pub fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page
}

/// The kernel's peak RSS (VmHWM), in bytes.
fn hwm_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Hands memory freed by earlier runs back to the kernel, so this run's growth is not hidden
/// by reusing it (glibc keeps freed heap otherwise).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Peak-RSS watch over one run: the kernel's high-water mark reset at the start when
/// /proc/self/clear_refs allows it (exact, costs nothing), else a thread sampling RSS every
/// 20 ms (may miss a peak shorter than that).
pub struct PeakWatch {
    baseline: u64,
    sampler: Option<(Arc<AtomicBool>, std::thread::JoinHandle<u64>)>,
}

/// RSS before a run and the peak during it, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryUse {
    pub baseline: u64,
    pub peak: u64,
}

impl MemoryUse {
    /// KiB of growth per stream in flight.
    pub fn kib_per_stream(&self, streams: usize) -> f64 {
        self.peak.saturating_sub(self.baseline) as f64 / 1024.0 / streams.max(1) as f64
    }

    pub fn peak_mib(&self) -> f64 {
        self.peak as f64 / (1024.0 * 1024.0)
    }
}

impl PeakWatch {
    pub fn start() -> Self {
        trim_heap();
        let baseline = rss_bytes();
        if std::fs::write("/proc/self/clear_refs", "5").is_ok() && hwm_bytes().is_some() {
            return PeakWatch {
                baseline,
                sampler: None,
            };
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = rss_bytes();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                peak = peak.max(rss_bytes());
            }
            peak
        });
        PeakWatch {
            baseline,
            sampler: Some((stop, handle)),
        }
    }

    pub fn finish(mut self) -> MemoryUse {
        let now = rss_bytes();
        let peak = match self.sampler.take() {
            None => hwm_bytes().unwrap_or(now),
            Some((stop, handle)) => {
                stop.store(true, Ordering::Relaxed);
                handle.join().unwrap_or(now)
            }
        };
        MemoryUse {
            baseline: self.baseline,
            peak: peak.max(now),
        }
    }
}

/// A stage that fails before [`PeakWatch::finish`] still stops the sampling thread.
impl Drop for PeakWatch {
    fn drop(&mut self) {
        if let Some((stop, _)) = &self.sampler {
            stop.store(true, Ordering::Relaxed);
        }
    }
}
