//! `llmb report`: the HTML report built from a real sweep's files, checked for structure and
//! escaping, then opened in headless Chromium: the rendered DOM keeps the charts, the console
//! stays silent, and the screenshot is not blank.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bench, custom_dataset, quick_args, workspace_root};
use llmb::args::ReportArgs;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);
const EVIL_MODEL: &str = "evil<script>alert('model')</script>";

fn fixture_dir() -> PathBuf {
    workspace_root().join("tests/fixtures/html-report")
}

fn report_args(dirs: &[&Path]) -> ReportArgs {
    ReportArgs {
        dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        indir: Vec::new(),
        output: None,
        runs: Vec::new(),
        max_timeline_requests: llmb_report::html::DEFAULT_TIMELINE_CAP,
    }
}

/// A two-stage concurrency sweep (1, 4) against the in-process simulator with a model name that
/// tries to inject a script and two prompts that make the simulator fail; the second stage's
/// result file gets the hand-written `server_metrics` of the fixture.
async fn sweep_dir(dir: &Path) {
    let mut prompts = vec!["a fine prompt"; 16];
    prompts[3] = "y __sim_fault:http500__";
    prompts[12] = "w __sim_fault:error_event__";
    let mut args = quick_args(dir);
    args.backend = "openai".into();
    args.dataset_name = "custom".into();
    args.dataset_path = Some(custom_dataset(dir, &prompts));
    args.disable_shuffle = true;
    args.custom_output_len = 6;
    args.num_prompts = 16;
    args.concurrency = Some("1,4".into());
    args.requests_per_stage = Some(8);
    args.save_result = true;
    args.served_model_name = Some(EVIL_MODEL.into());
    bench(&args).await;

    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("server-metrics.json")).unwrap(),
    )
    .unwrap();
    let c4 = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-c4.json"))
        .expect("the concurrency-4 stage's result file");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&c4).unwrap()).unwrap();
    doc["server_metrics"] = fixture["server_metrics"].clone();
    std::fs::write(&c4, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_report_has_the_stage_table_charts_and_escapes_file_strings() {
    let dir = tempfile::tempdir().unwrap();
    sweep_dir(dir.path()).await;
    // An unrelated JSON file is skipped, not an error.
    std::fs::write(dir.path().join("notes.json"), r#"{"hello": "world"}"#).unwrap();

    let (path, report) = llmb::report::write_report(&report_args(&[dir.path()])).unwrap();
    assert_eq!(path, dir.path().join("report.html"));
    assert_eq!(report.runs.len(), 2);
    assert_eq!(report.sweeps.len(), 1);
    assert_eq!(report.skipped.len(), 1);
    assert!(report.runs.iter().all(|r| r.records.is_some()));
    let html = std::fs::read_to_string(&path).unwrap();

    // Structure: 5 load charts; per run (2 runs, both detailed) TTFT and ITL histograms,
    // output throughput and TTFT over time, and a timeline; 6 server-metric series for the c4 run.
    assert_eq!(html.matches("<svg").count(), 5 + 2 * 5 + 6, "svg charts");
    for id in ["stages", "load", "requests", "server"] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id}"
        );
    }
    let table = &html[html.find("<tbody>").unwrap()..html.find("</tbody>").unwrap()];
    assert_eq!(table.matches("<tr").count(), 2, "one row per stage");
    assert!(table.contains(">concurrency 1<") && table.contains(">concurrency 4<"));
    assert!(html.contains("tag best\">best throughput"));
    assert!(html.contains("Saturation:"));
    assert!(
        html.contains("<h3>Failures</h3>"),
        "failed requests are listed"
    );
    assert!(html.contains("vllm:num_requests_running"));

    // Escaping: the model name, a server metric name with markup, no live script anywhere.
    assert!(
        !html.to_lowercase().contains("<script"),
        "no script element"
    );
    assert!(html.contains("evil&lt;script&gt;alert(&#39;model&#39;)&lt;/script&gt;"));
    assert!(html.contains("odd&lt;b&gt;name&lt;/b&gt;&amp;amp"));
    assert!(!html.contains("<b>name</b>"));
    // Self-contained: nothing to fetch (links stay inside the page).
    for needle in [" src=", "href=\"http", "url(", "@import", "<link", "<img"] {
        assert!(!html.contains(needle), "{needle} in the report");
    }
}

#[test]
fn single_result_with_server_metrics_and_no_records() {
    let (_, report) = {
        let out = tempfile::tempdir().unwrap();
        let mut args = report_args(&[&fixture_dir()]);
        args.output = Some(out.path().join("r.html"));
        let done = llmb::report::write_report(&args).unwrap();
        let html = std::fs::read_to_string(out.path().join("r.html")).unwrap();
        // One run: its numbers as single points on the 5 load charts, no histograms (no
        // records), one chart per server series.
        assert_eq!(html.matches("<svg").count(), 5 + 6);
        assert!(html.contains("One run: each chart shows its numbers as single points."));
        assert!(html.contains("No records file"));
        assert!(html.contains("Goodput req/s") && html.contains("<td>5.90</td>"));
        assert!(html.contains("<td class=\"l\">vllm:generation_tokens_total</td>"));
        assert!(html.contains("fixture-model&lt;script&gt;"));
        assert!(!html.to_lowercase().contains("<script"));
        done
    };
    let sm = report.runs[0].server_metrics.as_ref().unwrap();
    assert_eq!(sm.names.len(), 6);
    assert_eq!(sm.series[0].0, "vllm:num_requests_running");
    // The null sample of the odd series is dropped, the rest kept.
    assert_eq!(sm.series[5].1.len(), 20);
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let err = llmb_report::html::load(&[dir.path().to_path_buf()]).unwrap_err();
    assert!(
        format!("{err:#}").contains("no llmb result files in"),
        "{err:#}"
    );

    std::fs::write(dir.path().join("other.json"), "[1, 2]").unwrap();
    let err = llmb_report::html::load(&[dir.path().to_path_buf()]).unwrap_err();
    assert!(
        format!("{err:#}").contains("skipped 1 other JSON file"),
        "{err:#}"
    );

    let bad = dir.path().join("vllm-infqps-broken.json");
    std::fs::write(&bad, r#"{"request_throughput": 1.0, "completed": "#).unwrap();
    let err = format!(
        "{:#}",
        llmb_report::html::load(&[dir.path().to_path_buf()]).unwrap_err()
    );
    assert!(err.contains("vllm-infqps-broken.json"), "{err}");
    assert!(err.contains("not valid JSON"), "{err}");

    std::fs::write(&bad, r#"{"request_throughput": "fast", "completed": 3}"#).unwrap();
    let err = format!(
        "{:#}",
        llmb_report::html::load(&[dir.path().to_path_buf()]).unwrap_err()
    );
    assert!(
        err.contains("vllm-infqps-broken.json") && err.contains("\"request_throughput\""),
        "{err}"
    );

    std::fs::write(
        &bad,
        r#"{"request_throughput": 1, "completed": 3, "server_metrics": {"series": {"x": [[0, 1], [1]]}}}"#,
    )
    .unwrap();
    let err = format!(
        "{:#}",
        llmb_report::html::load(&[dir.path().to_path_buf()]).unwrap_err()
    );
    assert!(
        err.contains("vllm-infqps-broken.json") && err.contains("\"series\".\"x\"[1]"),
        "{err}"
    );
}

#[test]
fn report_subcommand_writes_dir_report_html() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_dir().join("server-metrics.json"),
        dir.path().join("run.json"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_llmb"))
        .arg("report")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("report.html").is_file());
    assert!(String::from_utf8_lossy(&out.stdout).contains("report.html"));

    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_llmb"))
        .arg("report")
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no llmb result files"));
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium

/// `/usr/bin/chromium`; on CI `.ci/run` installs it, elsewhere one apt-get install is tried
/// (once per test binary: the outcome is kept, failure included).
fn chromium() -> &'static Path {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let ready = READY.get_or_init(|| {
        if Path::new(CHROMIUM).exists() {
            return Ok(());
        }
        if std::env::var_os("CI").is_some() {
            return Err(format!(
                "{CHROMIUM} is missing: .ci/run should have installed it (apt-get install \
                 chromium) before the tests; check its log"
            ));
        }
        eprintln!("{CHROMIUM} is missing; trying apt-get install chromium once");
        let status = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
            ])
            .status();
        if Path::new(CHROMIUM).exists() {
            Ok(())
        } else {
            Err(format!(
                "{CHROMIUM} is missing and `apt-get install chromium` did not provide it \
                 ({status:?}); install Chromium to run the HTML report tests"
            ))
        }
    });
    if let Err(why) = ready {
        panic!("{why}");
    }
    Path::new(CHROMIUM)
}

struct Browsed {
    stdout: String,
    stderr: String,
}

/// Runs headless Chromium on `page` with `extra` flags in its own process group, killed after
/// 60 s; a fresh profile directory each time so no state carries over.
fn run_chromium(page: &Path, extra: &[String]) -> Browsed {
    use std::os::unix::process::CommandExt as _;
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > CHROMIUM_TIMEOUT {
            // The whole group: the browser and the renderer/GPU processes it started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "chromium did not finish within {CHROMIUM_TIMEOUT:?} on {}",
                page.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let browsed = Browsed {
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(
        status.success(),
        "chromium failed ({status}):\n{}",
        browsed.stderr
    );
    browsed
}

/// Console messages and uncaught errors Chromium logged for the page.
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect()
}

#[test]
fn chromium_console_check_catches_page_errors() {
    // The check below would pass vacuously if Chromium did not log console messages at all.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("broken.html");
    std::fs::write(
        &page,
        "<html><body><script>console.error('seen'); notDefined();</script></body></html>",
    )
    .unwrap();
    let b = run_chromium(&page, &["--dump-dom".into()]);
    let lines = console_lines(&b.stderr);
    assert!(
        lines.iter().any(|l| l.contains("seen")) && lines.iter().any(|l| l.contains("notDefined")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    sweep_dir(dir.path()).await;
    let (page, _) = llmb::report::write_report(&report_args(&[dir.path()])).unwrap();
    let html = std::fs::read_to_string(&page).unwrap();
    let charts = html.matches("<svg").count();

    let dom = run_chromium(&page, &["--dump-dom".into()]);
    assert_eq!(
        dom.stdout.matches("<svg").count(),
        charts,
        "every chart is in the rendered DOM"
    );
    assert!(dom.stdout.contains("1. Stages") && dom.stdout.contains("4. Server metrics"));
    assert!(dom.stdout.contains("<polyline") || dom.stdout.contains("<path"));
    assert!(!dom.stdout.to_lowercase().contains("<script"));
    assert_eq!(
        console_lines(&dom.stderr),
        Vec::<&str>::new(),
        "console errors"
    );

    let png = dir.path().join("report.png");
    let shot = run_chromium(
        &page,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1400,3000".into(),
        ],
    );
    assert_eq!(
        console_lines(&shot.stderr),
        Vec::<&str>::new(),
        "console errors"
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(
        bytes.len() > 20_000,
        "screenshot only {} bytes",
        bytes.len()
    );
    let image = decode_png(&bytes);
    assert_eq!((image.width, image.height), (1400, 3000));
    let (inked, colours) = image.ink();
    // Text, tables and charts cover far more than a blank page's nothing.
    assert!(
        inked > image.width * image.height / 20,
        "only {inked} non-background pixels"
    );
    assert!(colours > 50, "only {colours} distinct colours");
    if let Some(keep) = std::env::var_os("LLMB_KEEP_REPORT_PNG") {
        std::fs::copy(&png, keep).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Just enough PNG decoding (8-bit RGB/RGBA, not interlaced, as Chromium writes screenshots) to
// tell a rendered page from a blank one without an image crate.

struct Image {
    width: usize,
    height: usize,
    channels: usize,
    pixels: Vec<u8>,
}

impl Image {
    /// Pixels that differ from the page background (the top-left pixel), and distinct colours.
    fn ink(&self) -> (usize, usize) {
        let bg = &self.pixels[..3];
        let mut colours = std::collections::HashSet::new();
        let mut inked = 0;
        for px in self.pixels.chunks_exact(self.channels) {
            if &px[..3] != bg {
                inked += 1;
            }
            colours.insert((px[0], px[1], px[2]));
        }
        (inked, colours.len())
    }
}

fn decode_png(bytes: &[u8]) -> Image {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let mut at = 8;
    let (mut width, mut height, mut channels) = (0, 0, 0);
    let mut idat = Vec::new();
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = &bytes[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                height = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "bit depth");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    other => panic!("PNG colour type {other}"),
                };
                assert_eq!(data[12], 0, "interlaced PNG");
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat).expect("PNG data inflates");
    let stride = width * channels;
    assert_eq!(raw.len(), height * (stride + 1), "PNG data size");
    let mut pixels = vec![0u8; height * stride];
    for y in 0..height {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        for x in 0..stride {
            let a = if x >= channels {
                pixels[y * stride + x - channels]
            } else {
                0
            };
            let b = if y > 0 {
                pixels[(y - 1) * stride + x]
            } else {
                0
            };
            let c = if y > 0 && x >= channels {
                pixels[(y - 1) * stride + x - channels]
            } else {
                0
            };
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = (
                        (p - i16::from(a)).abs(),
                        (p - i16::from(b)).abs(),
                        (p - i16::from(c)).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                other => panic!("PNG filter {other}"),
            };
            pixels[y * stride + x] = line[x].wrapping_add(predicted);
        }
    }
    Image {
        width,
        height,
        channels,
        pixels,
    }
}
