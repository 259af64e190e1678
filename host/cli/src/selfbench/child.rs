//! The simulator as a separate process, and the process settings that keep its CPU time and
//! the client's apart: core pinning and an open-file limit large enough for 10,000 streams.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use anyhow::Context;

/// How the child simulator times its streams.
#[derive(Debug, Clone, Copy)]
pub struct SimTiming {
    pub ttft_ms: f64,
    pub itl_ms: f64,
    /// ITL × (1 + this × (active streams − 1)); 0 keeps the scenario's ITL at every level.
    pub batch_slowdown: f64,
}

/// A simulator in a child process, so its CPU time is not charged to the client.
pub struct ChildSim {
    child: std::process::Child,
    pub base_url: String,
    pub addr: std::net::SocketAddr,
    /// The simulator's stderr, kept out of the tables and shown when something failed.
    log: std::path::PathBuf,
}

impl ChildSim {
    /// Starts `llmb sim` on a free port (pinned to `cpu` if given) and waits until it listens.
    pub async fn start(timing: SimTiming, cpu: Option<usize>) -> anyhow::Result<Self> {
        Self::start_with(timing, cpu, &[]).await
    }

    /// [`ChildSim::start`] logging each chunk's write time to `send_log` (`--send-log`); the
    /// file is complete after [`ChildSim::stop_gracefully`].
    pub async fn start_logged(
        timing: SimTiming,
        cpu: Option<usize>,
        send_log: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let path = send_log.display().to_string();
        Self::start_with(timing, cpu, &["--send-log", &path]).await
    }

    /// Stops the simulator as Ctrl-C does, so it flushes its send log, and waits for it.
    pub async fn stop_gracefully(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        for _ in 0..200 {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("the simulator did not stop within 5 s of SIGINT")
    }

    async fn start_with(
        timing: SimTiming,
        cpu: Option<usize>,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let exe = std::env::current_exe().context("locating the llmb binary")?;
        let log = std::env::temp_dir().join(format!("llmb-selfbench-sim-{port}.log"));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = std::process::Command::new(exe);
        command
            .args(["sim", "--port", &port.to_string()])
            .args(["--sim-ttft-ms", &timing.ttft_ms.to_string()])
            .args(["--sim-itl-ms", &timing.itl_ms.to_string()])
            .args(["--sim-batch-slowdown", &timing.batch_slowdown.to_string()])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(log_file);
        let set = cpu.map(|cpu| cpu_set(&[cpu]));
        // SAFETY: prctl and sched_setaffinity are plain system calls, safe between fork and
        // exec. The death signal ends the simulator if selfbench aborts without dropping it.
        unsafe {
            command.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(set) = &set
                    && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().context("starting `llmb sim`")?;
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(ChildSim {
                    child,
                    base_url: format!("http://{addr}"),
                    addr,
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("the simulator did not start listening on port {port}")
    }
}

impl ChildSim {
    /// The last lines the simulator wrote to stderr, besides its start-up banner.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("llmb simulator serving"))
            .collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for ChildSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain bits; CPU_SET only sets one of them.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        set
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    // SAFETY: sched_getaffinity writes only into the set passed.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        anyhow::ensure!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect())
    }
}

/// Sets the affinity of every thread of this process (each id under /proc/self/task): the
/// runtime's threads exist already, and threads started later inherit it from their creator.
fn pin_all_threads(cpus: &[usize]) -> anyhow::Result<()> {
    let set = cpu_set(cpus);
    for entry in std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
        let Ok(tid) = entry?.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        // SAFETY: sched_setaffinity reads only the set passed.
        let rc =
            unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        // A thread that ended since the listing is no error.
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) {
            anyhow::bail!(
                "sched_setaffinity({tid}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// The client on all allowed cores but the last, the simulator on the last; undone on drop
/// so later sections (parsing on every core) get the whole machine back.
pub struct Pinning {
    original: Vec<usize>,
    /// The simulator's CPU, or `None` when pinning was not applied.
    pub sim_cpu: Option<usize>,
    pub client_cpus: Vec<usize>,
}

impl Pinning {
    /// Pins when at least two CPUs are allowed; otherwise leaves everything where it was.
    pub fn apply() -> anyhow::Result<Self> {
        let original = allowed_cpus()?;
        let mut pinning = Pinning {
            original: original.clone(),
            sim_cpu: None,
            client_cpus: original.clone(),
        };
        if let [client @ .., last] = original.as_slice()
            && !client.is_empty()
        {
            pin_all_threads(client)?;
            pinning.sim_cpu = Some(*last);
            pinning.client_cpus = client.to_vec();
        }
        Ok(pinning)
    }

    /// `yes (client CPU 0, simulator CPU 1)` or `no (...)`, for the table header.
    pub fn describe(&self) -> String {
        match self.sim_cpu {
            Some(sim) => format!(
                "yes: client CPU {:?}, simulator CPU {sim}",
                self.client_cpus
            ),
            None => format!("no: only CPUs {:?} allowed", self.original),
        }
    }
}

impl Drop for Pinning {
    fn drop(&mut self) {
        if self.sim_cpu.is_some() {
            let _ = pin_all_threads(&self.original);
        }
    }
}
