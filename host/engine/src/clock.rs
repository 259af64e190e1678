//! The system-wide monotonic clock (`CLOCK_MONOTONIC`) as plain nanoseconds, so times taken in
//! two processes (llmb and `llmb sim --send-log`) can be compared. `std::time::Instant` reads the
//! same clock on Linux but does not show its value.

use std::time::Instant;

/// `CLOCK_MONOTONIC` now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `at` on the `CLOCK_MONOTONIC` scale (within the ~50 ns between two clock reads).
pub fn instant_to_monotonic_ns(at: Instant) -> u64 {
    let (now, mono) = (Instant::now(), monotonic_ns());
    match now.checked_duration_since(at) {
        Some(ago) => mono.saturating_sub(ago.as_nanos() as u64),
        None => mono + at.duration_since(now).as_nanos() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_map_onto_the_monotonic_clock() {
        let ago = std::time::Duration::from_millis(50);
        let at = Instant::now()
            .checked_sub(ago)
            .expect("a machine up for 50 ms");
        let expected = monotonic_ns() - ago.as_nanos() as u64;
        let mapped = instant_to_monotonic_ns(at);
        // Generous for a preempted test thread; a sign or unit slip is off by 100 ms or more.
        assert!(
            mapped.abs_diff(expected) < 5_000_000,
            "mapped {mapped}, expected {expected}"
        );
    }
}
