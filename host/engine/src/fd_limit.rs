//! The open-file limit: each stream in flight holds a socket, and a shell's default soft limit
//! (often 1,024) would fail a 10,000-stream run with "Too many open files". llmb raises the soft
//! limit to the hard one, as a load generator must, and says so when even that is too low.

/// Raises the soft open-file limit to the hard one (children inherit it). Returns the limit now
/// in force.
pub fn raise() -> anyhow::Result<u64> {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        anyhow::ensure!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0,
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            anyhow::ensure!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0,
                "setrlimit(RLIMIT_NOFILE): {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(lim.rlim_cur as u64)
    }
}

/// Files a run needs besides its connections: plugins, records, the runtime's own.
const SPARE_FILES: u64 = 64;

/// Raises the limit for a run of up to `streams` connections at once; the warning to print
/// when even the raised limit is too low (`None`: enough).
pub fn ensure_room_for(streams: usize) -> Option<String> {
    match raise() {
        Ok(limit) if limit >= streams as u64 + SPARE_FILES => None,
        Ok(limit) => Some(format!(
            "{streams} streams at once need about {} open files, but the limit is {limit} \
             (the hard limit of `ulimit -n`): requests past it fail to connect",
            streams as u64 + SPARE_FILES
        )),
        Err(e) => Some(format!("cannot read or raise the open-file limit: {e:#}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limit = super::raise().unwrap();
        // SAFETY: getrlimit only writes the struct passed.
        let hard = unsafe {
            let mut lim: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_max as u64
        };
        assert_eq!(limit, hard);
        assert!(super::ensure_room_for(1).is_none() || hard < 65);
        assert!(super::ensure_room_for(usize::MAX / 2).is_some());
    }
}
