//! A run's lifecycle under Ctrl-C, end to end: a real `llmb bench` process against its
//! in-process simulator gets SIGINT in each phase (prepare, warmup, measure with requests in
//! flight, clients asleep) and must exit promptly, leaving valid records and a result marked
//! interrupted; a request cut off keeps its partial timings and is marked cancelled; a second
//! SIGINT exits at once.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use llmb_engine::records::{RequestRecord, read_records};

/// A running `llmb bench` whose stderr lines are collected as they come.
struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
    dir: tempfile::TempDir,
}

impl Run {
    fn start(args: &[&str]) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_llmb"))
            .arg("bench")
            .args(["--result-dir"])
            .arg(dir.path())
            .args([
                "--result-filename",
                "run.json",
                "--save-result",
                "--disable-tqdm",
                "--ignore-eos",
                "--no-preflight",
            ])
            .args(args)
            .env_remove("OPENAI_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start llmb");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Run {
            child,
            lines,
            stderr: Vec::new(),
            dir,
        }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.stderr.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with {needle:?} within {within:?}; stderr so far:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    fn drain_stderr(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.stderr.push(line);
        }
    }

    fn saw(&mut self, needle: &str) -> bool {
        self.drain_stderr();
        self.stderr.iter().any(|l| l.contains(needle))
    }

    fn sigint(&self) {
        // SAFETY: kill only sends a signal to the child we started.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit, failing (and killing it) after `within`.
    fn exits_within(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread pass on the last lines.
                std::thread::sleep(Duration::from_millis(50));
                self.drain_stderr();
                return (status, start.elapsed());
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.drain_stderr();
                panic!(
                    "llmb did not exit within {within:?}; stderr:\n{}",
                    self.stderr.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn records(&self) -> Vec<RequestRecord> {
        read_records(&self.path("run.records.jsonl")).expect("valid records JSONL")
    }

    fn result(&self) -> serde_json::Value {
        read_json(&self.path("run.json"))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{} missing: {e}", path.display()));
    serde_json::from_str(&text).expect("valid result JSON")
}

fn stop_reason(result: &serde_json::Value) -> String {
    assert_eq!(result["llmb"]["interrupted"], true, "{result}");
    result["llmb"]["stop_reason"]
        .as_str()
        .expect("a stop reason")
        .to_string()
}

/// Asserts `r` was cut off in flight with what it had measured: sent, a response head, some
/// deltas, an end, the text so far.
fn assert_cut_with_partial_timings(r: &RequestRecord) {
    let error = r.error.as_ref().expect("cut-off request has an error");
    assert_eq!(error.kind, "cancelled", "{error:?}");
    assert!(!r.success);
    assert!(r.sent_ns > 0, "{r:?}");
    assert!(r.first_byte_ns.is_some_and(|t| t >= r.sent_ns), "{r:?}");
    assert!(
        r.delta_ns.len() >= 3,
        "partial deltas kept: {:?}",
        r.delta_ns
    );
    assert!(r.end_ns >= *r.delta_ns.last().unwrap(), "{r:?}");
    assert!(!r.generated_text.is_empty() && r.output_tokens > 0, "{r:?}");
    assert!(r.plugin_ns > 0, "time in plugin calls recorded");
}

/// Many prompts fitted to the simulator's token counts: about 0.7 s of dataset generation (on
/// a thread of its own), then seconds of tokenize requests.
fn long_prepare() -> Run {
    let mut run = Run::start(&[
        "--dataset-name",
        "random",
        "--num-prompts",
        "40000",
        "--random-input-len",
        "256",
    ]);
    run.wait_for("llmb: preparing", Duration::from_secs(30));
    run
}

fn assert_stopped_in_prepare(mut run: Run) {
    assert!(!run.saw("llmb: measuring"), "prepare ended too soon");
    run.sigint();
    let (status, took) = run.exits_within(Duration::from_secs(5));
    assert!(status.success(), "{status:?}: {}", run.stderr.join("\n"));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(run.records().is_empty());
    let result = run.result();
    assert!(stop_reason(&result).contains("prepare"), "{result}");
    assert_eq!(result["completed"], 0);
}

#[test]
fn ctrl_c_while_loading_the_dataset_exits_promptly_with_empty_records_and_a_result() {
    let run = long_prepare();
    std::thread::sleep(Duration::from_millis(150));
    assert_stopped_in_prepare(run);
}

#[test]
fn ctrl_c_while_counting_input_tokens_exits_promptly() {
    let mut run = long_prepare();
    // The dataset is loaded once the adapter is told the server's name.
    run.wait_for("server: llmb-sim", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1000));
    assert_stopped_in_prepare(run);
}

#[test]
fn ctrl_c_during_warmup_cuts_the_warmups_at_once() {
    let mut run = Run::start(&[
        "--num-prompts",
        "8",
        "--num-warmups",
        "3",
        "--random-input-len",
        "16",
        "--random-output-len",
        "400",
        "--sim-ttft-ms",
        "50",
        "--sim-itl-ms",
        "40",
    ]);
    run.wait_for("llmb: warmup", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(800));
    run.sigint();
    let (status, took) = run.exits_within(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let records = run.records();
    assert_eq!(records.len(), 3, "the warmups only");
    for r in &records {
        assert!(r.warmup);
        assert_cut_with_partial_timings(r);
    }
    let result = run.result();
    assert!(stop_reason(&result).contains("warmup"), "{result}");
    assert_eq!(result["completed"], 0);
}

/// Four long streams in flight when the signal comes.
fn long_streams() -> Run {
    let mut run = Run::start(&[
        "--num-prompts",
        "4",
        "--max-concurrency",
        "4",
        "--random-input-len",
        "16",
        "--random-output-len",
        "2000",
        "--sim-ttft-ms",
        "50",
        "--sim-itl-ms",
        "50",
    ]);
    run.wait_for("llmb: measuring", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(800));
    run
}

#[test]
fn ctrl_c_while_measuring_drains_then_cuts_off_keeping_partial_timings() {
    let mut run = long_streams();
    run.sigint();
    let (status, took) = run.exits_within(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    // The grace period (5 s) was given, then the streams were cut off.
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    assert!(run.saw("llmb: drain"));
    let records = run.records();
    assert_eq!(records.len(), 4);
    for r in &records {
        assert!(!r.warmup);
        assert_cut_with_partial_timings(r);
        // Streamed through most of the grace period.
        assert!(r.delta_ns.len() > 50, "{} deltas", r.delta_ns.len());
    }
    let result = run.result();
    assert!(stop_reason(&result).contains("measure"), "{result}");
    assert_eq!(result["failed"], 4);
    assert_eq!(result["llmb"]["plugin_time_us"]["requests"], 4);
}

#[test]
fn a_second_ctrl_c_cuts_off_at_once_and_still_writes_everything() {
    let mut run = long_streams();
    run.sigint();
    run.wait_for("llmb: drain", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    run.sigint();
    let (status, took) = run.exits_within(Duration::from_secs(5));
    assert!(status.success() || status.code() == Some(130), "{status:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let records = run.records();
    assert_eq!(records.len(), 4);
    records.iter().for_each(assert_cut_with_partial_timings);
    assert!(stop_reason(&run.result()).contains("measure"));
}

#[test]
fn sleeping_clients_wake_on_ctrl_c() {
    // Client 0 sends at once then thinks for 60 s; clients 1 and 2 sleep in a 60 s ramp-up.
    let mut run = Run::start(&[
        "--num-clients",
        "3",
        "--ramp-up-time",
        "60",
        "--think-time",
        "60",
        "--num-prompts",
        "30",
        "--random-input-len",
        "16",
        "--random-output-len",
        "4",
        "--sim-ttft-ms",
        "5",
        "--sim-itl-ms",
        "1",
    ]);
    run.wait_for("llmb: measuring", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1000));
    run.sigint();
    let (status, took) = run.exits_within(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let records = run.records();
    assert_eq!(records.len(), 1, "only client 0's first request went out");
    assert!(records[0].success, "{:?}", records[0].error);
    assert!(records[0].plugin_ns > 0);
    let result = run.result();
    assert!(stop_reason(&result).contains("measure"), "{result}");
    assert_eq!(result["completed"], 1);
}
