//! The shipped deployments run: `deploy/slurm/llmb.sbatch` with a local `srun` that starts one
//! process per task, and the Kubernetes Indexed Job's and merge Job's command lines as N local
//! processes with `JOB_COMPLETION_INDEX`, both against one `llmb sim` on 127.0.0.1; each ends
//! with one merged result holding every request.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};

use common::*;

const LLMB: &str = env!("CARGO_BIN_EXE_llmb");

/// `llmb sim` on a free port, stopped on drop.
struct Sim {
    child: Child,
    url: String,
}

impl Sim {
    fn start() -> Sim {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(LLMB)
            .args([
                "sim",
                "--port",
                &port.to_string(),
                "--sim-ttft-ms",
                "5",
                "--sim-itl-ms",
                "1",
            ])
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Sim { child, url }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn completed(merged: &Path) -> u64 {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(merged).unwrap()).unwrap();
    doc["completed"].as_u64().unwrap()
}

fn start_in(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (now + secs).to_string()
}

#[test]
fn the_sbatch_script_runs_its_tasks_and_merges() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    // A local `srun`: one process per task, each told its rank as Slurm would.
    let srun = dir.path().join("srun");
    std::fs::write(
        &srun,
        "#!/usr/bin/env bash\npids=()\nfor i in 0 1 2; do SLURM_PROCID=$i SLURM_NTASKS=3 \"$@\" & pids+=($!); done\n\
         status=0\nfor p in \"${pids[@]}\"; do wait $p || status=1; done\nexit $status\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&srun, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let results = dir.path().join("results");
    let status = Command::new("bash")
        .arg(workspace_root().join("deploy/slurm/llmb.sbatch"))
        .args([&sim.url, "llmb-sim"])
        .env("LLMB", LLMB)
        .env("SRUN", &srun)
        .env("RESULTS", &results)
        // Slack for three shards to prepare on a loaded 2-core machine before the start.
        .env("START_AT", start_in(8))
        .env("NUM_PROMPTS", "30")
        .env("REQUEST_RATE", "200")
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(completed(&results.join("merged/run.json")), 30);
}

#[test]
fn the_kubernetes_jobs_command_lines_run_as_local_processes() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let yaml = |name: &str| -> serde_json::Value {
        let text =
            std::fs::read_to_string(workspace_root().join("deploy/kubernetes").join(name)).unwrap();
        serde_saphyr::from_str(&text).unwrap()
    };
    let job = yaml("llmb-shards.yaml");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    let completions = job["spec"]["completions"].as_u64().unwrap();
    assert_eq!(job["spec"]["parallelism"].as_u64(), Some(completions));
    let args: Vec<String> = job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let start = start_in(8);
    let results = dir.path().join("results");
    // What the cluster would substitute: the server, the start time, the volume, the index;
    // and a smaller run.
    let local = |index: u64| -> Vec<String> {
        let mut out = Vec::new();
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            let value = |v: &str| v.to_string();
            match a.as_str() {
                "--base-url" => {
                    it.next();
                    out.extend([value(a), sim.url.clone()]);
                }
                "--model" => {
                    it.next();
                    out.extend([value(a), value("llmb-sim")]);
                }
                "--num-prompts" => {
                    it.next();
                    out.extend([value(a), value("32")]);
                }
                "--request-rate" => {
                    it.next();
                    out.extend([value(a), value("200")]);
                }
                "START_AT_PLACEHOLDER" => out.push(start.clone()),
                _ => out.push(
                    a.replace("/results", results.to_str().unwrap())
                        .replace("$(JOB_COMPLETION_INDEX)", &index.to_string()),
                ),
            }
        }
        out
    };
    let mut pods: Vec<Child> = (0..completions)
        .map(|i| {
            Command::new(LLMB)
                .args(local(i))
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for pod in &mut pods {
        assert!(pod.wait().unwrap().success());
    }
    let merge = yaml("llmb-merge.yaml");
    let merge_args: Vec<String> = merge["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .replace("/results", results.to_str().unwrap())
        })
        .collect();
    let status = Command::new(LLMB).args(&merge_args).status().unwrap();
    assert!(status.success());
    assert_eq!(completed(&results.join("merged/run.json")), 32);

    // The same plan as one process against the same simulator: the shards sent exactly its
    // requests (id, sample, intended offset), each once.
    let mut single = Vec::new();
    let mut skip = false;
    for a in local(0) {
        if skip {
            skip = false;
            continue;
        }
        match a.as_str() {
            "--shards" | "--start-at" | "--sync-dir" => skip = true,
            _ => single.push(a.replace(
                &format!("{}/0", results.display()),
                &format!("{}/single", results.display()),
            )),
        }
    }
    let status = Command::new(LLMB)
        .args(&single)
        .env_remove("JOB_COMPLETION_INDEX")
        .status()
        .unwrap();
    assert!(status.success());
    let requests = |dir: &Path| -> BTreeSet<(u64, u64, u64)> {
        let mut out = BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.to_string_lossy().ends_with(".records.jsonl") {
                for line in std::fs::read_to_string(&path).unwrap().lines() {
                    let r: llmb_engine::records::RequestRecord =
                        serde_json::from_str(line).unwrap();
                    assert!(
                        out.insert((r.id, r.sample, r.scheduled_ns)),
                        "sent twice: {}",
                        r.id
                    );
                }
            }
        }
        out
    };
    let mut sharded = BTreeSet::new();
    for i in 0..completions {
        let part = requests(&results.join(i.to_string()));
        assert!(sharded.is_disjoint(&part));
        sharded.extend(part);
    }
    assert_eq!(sharded, requests(&results.join("single")));
}
