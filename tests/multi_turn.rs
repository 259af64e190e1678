//! `llmb multi-turn` (vLLM's benchmark_serving_multi_turn.py) end to end against the simulator on
//! 127.0.0.1: every turn carries the server's earlier answers, the request cap holds, and the
//! stats JSON, the workbook and the `-o` conversations agree with the records.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use calamine::{Data, Reader, Xlsx, open_workbook};
use clap::Parser;
use llmb::args::{Cli, Command};
use llmb::multi_turn::{MultiTurnArgs, MultiTurnOutcome, RequestStats};
use llmb_engine::records::RequestRecord;
use llmb_sim::{SimConfig, SimHandle};

const MODEL: &str = "test-model";
/// The simulator's chat template: tokens per message, and the generation prompt.
const TEMPLATE_PER_MESSAGE: u64 = 5;
const GENERATION_PROMPT: u64 = 3;

fn root() -> PathBuf {
    // The tests belong to host/cli; the workspace is two levels up.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn sim() -> SimHandle {
    llmb_sim::start_dedicated(
        SimConfig {
            ttft_ms: 4.0,
            itl_ms: 0.5,
            model: MODEL.into(),
            dialect: Some("openai-chat".into()),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("simulator")
}

fn parse(args: &[&str]) -> MultiTurnArgs {
    let cli = Cli::try_parse_from(["llmb", "multi-turn"].iter().chain(args)).expect("valid flags");
    match cli.command {
        Command::MultiTurn(a) => *a,
        other => panic!("parsed as {other:?}"),
    }
}

async fn run(args: &MultiTurnArgs) -> MultiTurnOutcome {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    llmb::multi_turn::run(args, rx)
        .await
        .expect("multi-turn run")
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Messages of the input conversations by id.
fn input_conversations(path: &Path) -> HashMap<String, Vec<(String, String)>> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let msgs = c["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["role"].as_str().unwrap().to_string(),
                        m["content"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (c["id"].as_str().unwrap().to_string(), msgs)
        })
        .collect()
}

/// Each conversation's requests in turn order.
fn by_conversation(stats: &[RequestStats]) -> HashMap<String, Vec<RequestStats>> {
    let mut out: HashMap<String, Vec<RequestStats>> = HashMap::new();
    for s in stats {
        out.entry(s.conversation_id.clone())
            .or_default()
            .push(s.clone());
    }
    for v in out.values_mut() {
        v.sort_by_key(|s| s.input_num_turns);
    }
    out
}

/// The server's prompt count of turn k+1 is turn k's prompt plus its answer plus the new user
/// message, template tokens included: the previous answer really was in the next request.
/// `user_words(n)`: words of the user message that makes the prompt n messages long.
fn assert_history_grows(turns: &[RequestStats], user_words: impl Fn(u64) -> u64) {
    for w in turns.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert_eq!(b.input_num_turns, a.input_num_turns + 2, "{turns:?}");
        assert_eq!(
            b.input_num_tokens,
            a.input_num_tokens
                + a.output_num_tokens
                + user_words(b.input_num_turns)
                + 2 * TEMPLATE_PER_MESSAGE,
            "turn with {} messages of {} did not carry the previous answer",
            b.input_num_turns,
            b.conversation_id
        );
    }
}

fn record_of<'a>(records: &'a [RequestRecord], s: &RequestStats) -> &'a RequestRecord {
    records
        .iter()
        .find(|r| r.id == s.record_id)
        .expect("record")
}

fn cell(range: &calamine::Range<Data>, row: u32, col: u32) -> Data {
    range.get_value((row, col)).cloned().unwrap_or(Data::Empty)
}

fn num(d: &Data) -> f64 {
    match d {
        Data::Float(f) => *f,
        Data::Int(i) => *i as f64,
        other => panic!("not a number: {other:?}"),
    }
}

fn text(d: &Data) -> String {
    match d {
        Data::String(s) => s.clone(),
        other => panic!("not text: {other:?}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_file_end_to_end_with_every_output() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("datasets/multi-turn-conversations.json");
    let out_file = dir.path().join("answers.json");
    let stats_file = dir.path().join("stats/per-request.json");
    let xlsx = dir.path().join("stats.xlsx");
    let records_file = dir.path().join("records.jsonl");
    let url = sim.base_url();
    let args = parse(&[
        "-i",
        input.to_str().unwrap(),
        "-m",
        MODEL,
        "-u",
        &url,
        "-p",
        "2",
        "-k",
        "2",
        "--no-early-stop",
        "--warmup-percentages",
        "0%,50%",
        "-o",
        out_file.to_str().unwrap(),
        "--stats-json-output",
        stats_file.to_str().unwrap(),
        "-e",
        "--excel-file",
        xlsx.to_str().unwrap(),
        "--records",
        records_file.to_str().unwrap(),
    ]);
    let outcome = run(&args).await;
    sim.shutdown().await;

    // One client per conversation at a time, no early stop: every user turn is sent.
    let original = input_conversations(&input);
    let user_turns: usize = original
        .values()
        .map(|m| m.iter().filter(|(r, _)| r == "user").count())
        .sum();
    assert_eq!(outcome.stats.len(), user_turns);
    assert_eq!(outcome.records.len(), user_turns);
    assert!(outcome.records.iter().all(|r| r.success && !r.warmup));
    assert_eq!(outcome.conversations.len(), original.len());

    // Every turn carried the history with the server's real answers.
    let convs = by_conversation(&outcome.stats);
    for (id, turns) in &convs {
        let msgs = &original[id];
        assert_eq!(
            turns.len(),
            msgs.iter().filter(|(r, _)| r == "user").count()
        );
        let system = msgs.iter().take_while(|(r, _)| r != "user").count() as u64;
        assert_eq!(turns[0].input_num_turns, system + 1);
        // The first prompt: the dataset's own messages, as the server counts them.
        let first: u64 = msgs[..=system as usize].iter().map(|(_, c)| words(c)).sum();
        assert_eq!(
            turns[0].input_num_tokens,
            first + (system + 1) * TEMPLATE_PER_MESSAGE + GENERATION_PROMPT
        );
        assert_history_grows(turns, |n| words(&msgs[n as usize - 1].1));
        assert!(
            turns
                .iter()
                .all(|t| t.output_num_tokens >= 1 && t.ttft_ms > 0.0)
        );
        assert!(turns.iter().all(|t| t.latency_ms >= t.ttft_ms));
    }

    // -o: the conversations with the server's answers in place of the dataset's.
    let written = input_conversations(&out_file);
    assert_eq!(written.len(), original.len());
    for (id, msgs) in &written {
        assert_eq!(msgs.len(), original[id].len());
        let answers: Vec<&String> = msgs
            .iter()
            .filter(|(r, _)| r == "assistant")
            .map(|(_, c)| c)
            .collect();
        for (answer, turn) in answers.iter().zip(&convs[id]) {
            assert_eq!(words(answer), turn.output_num_tokens);
            assert!(!original[id].iter().any(|(_, c)| c == *answer));
        }
        let rec_texts: Vec<&str> = convs[id]
            .iter()
            .map(|s| record_of(&outcome.records, s).generated_text.as_str())
            .collect();
        assert_eq!(
            answers.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            rec_texts
        );
    }

    // --stats-json-output: vLLM's keys, the same numbers as the records.
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&stats_file).unwrap()).unwrap();
    assert_eq!(json.len(), outcome.stats.len());
    let keys: Vec<&str> = json[0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    for k in [
        "ttft_ms",
        "tpot_ms",
        "latency_ms",
        "start_time_ms",
        "input_num_turns",
        "input_num_tokens",
        "output_num_tokens",
        "output_num_chunks",
        "output_num_first_chunk_tokens",
        "approx_cached_percent",
        "conversation_id",
        "client_id",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
    let on_disk = llmb_engine::records::read_records(&records_file).unwrap();
    assert_eq!(on_disk.len(), outcome.records.len());
    for (j, s) in json.iter().zip(&outcome.stats) {
        let r = record_of(&on_disk, s);
        let ms = |ns: u64| ns as f64 / 1e6;
        assert!(close(j["start_time_ms"].as_f64().unwrap(), ms(r.sent_ns)));
        assert!(close(
            j["latency_ms"].as_f64().unwrap(),
            ms(r.end_ns - r.sent_ns)
        ));
        assert!(close(
            j["ttft_ms"].as_f64().unwrap(),
            ms(r.delta_ns[0] - r.sent_ns)
        ));
        assert_eq!(
            j["output_num_tokens"].as_u64().unwrap(),
            u64::from(r.output_tokens)
        );
        assert_eq!(
            j["input_num_tokens"].as_u64().unwrap(),
            u64::from(r.server_prompt_tokens.unwrap())
        );
        assert_eq!(j["conversation_id"], s.conversation_id.as_str());
        assert_eq!(
            j["client_id"].as_u64().unwrap(),
            u64::from(r.client.unwrap())
        );
        let out = j["output_num_tokens"].as_f64().unwrap();
        let tpot =
            (j["latency_ms"].as_f64().unwrap() - j["ttft_ms"].as_f64().unwrap()) / (out - 1.0);
        assert!(out < 2.0 || close(j["tpot_ms"].as_f64().unwrap(), tpot));
    }

    // The summaries: 0 % and 50 % warmup.
    assert_eq!(outcome.summaries.len(), 2);
    let all = &outcome.summaries[0];
    let n = outcome.stats.len() as f64;
    assert_eq!(all.row("ttft_ms").unwrap().count, n);
    assert_eq!(
        outcome.summaries[1].row("latency_ms").unwrap().count,
        n - (n * 0.5).floor()
    );
    let mean_latency = outcome.stats.iter().map(|s| s.latency_ms).sum::<f64>() / n;
    assert!(close(
        all.row("latency_ms").unwrap().mean.unwrap(),
        mean_latency
    ));
    let first = outcome
        .stats
        .iter()
        .map(|s| s.start_time_ms)
        .fold(f64::MAX, f64::min);
    let mut sorted = outcome.stats.clone();
    sorted.sort_by(|a, b| a.start_time_ms.total_cmp(&b.start_time_ms));
    let last = sorted.last().unwrap();
    let runtime = (last.start_time_ms + last.latency_ms - first) / 1000.0;
    assert!(close(all.param("runtime_sec").unwrap(), runtime));
    assert!(close(all.param("requests_per_sec").unwrap(), n / runtime));

    // The workbook, read back.
    let mut wb: Xlsx<_> = open_workbook(&xlsx).expect("open the workbook");
    assert_eq!(wb.sheet_names(), ["Summary", "Raw data"]);
    let summary = wb.worksheet_range("Summary").unwrap();
    let head: Vec<String> = (0..5).map(|c| text(&cell(&summary, 0, c))).collect();
    assert_eq!(
        head,
        [
            "model",
            "num_clients",
            "num_conversations",
            "active_conversations",
            "seed"
        ]
    );
    assert_eq!(text(&cell(&summary, 1, 0)), MODEL);
    assert_eq!(num(&cell(&summary, 1, 1)), 2.0);
    assert_eq!(num(&cell(&summary, 1, 2)), original.len() as f64);
    assert_eq!(num(&cell(&summary, 1, 3)), 2.0);
    // First summary block: its runtime row at row 4, the describe table from row 7.
    assert_eq!(text(&cell(&summary, 4, 0)), "runtime_sec");
    assert_eq!(text(&cell(&summary, 4, 1)), "requests_per_sec");
    assert!(close(num(&cell(&summary, 5, 0)), runtime));
    assert!(close(num(&cell(&summary, 5, 1)), n / runtime));
    let columns: Vec<String> = (1..=7).map(|c| text(&cell(&summary, 7, c))).collect();
    assert_eq!(
        columns,
        ["count", "mean", "std", "min", "25%", "50%", "75%"]
    );
    assert_eq!(text(&cell(&summary, 7, 9)), "max");
    let metrics: Vec<String> = (8..15).map(|r| text(&cell(&summary, r, 0))).collect();
    assert_eq!(
        metrics,
        [
            "ttft_ms",
            "tpot_ms",
            "latency_ms",
            "input_num_turns",
            "input_num_tokens",
            "output_num_tokens",
            "output_num_chunks"
        ]
    );
    assert_eq!(num(&cell(&summary, 10, 1)), n);
    assert!(close(num(&cell(&summary, 10, 2)), mean_latency));
    let max_out = outcome
        .stats
        .iter()
        .map(|s| s.output_num_tokens)
        .max()
        .unwrap();
    assert_eq!(num(&cell(&summary, 13, 9)), max_out as f64);
    // The second block (50 % warmup) follows after two empty rows.
    assert_eq!(text(&cell(&summary, 17, 0)), "runtime_sec");
    assert_eq!(text(&cell(&summary, 21, 0)), "ttft_ms");
    assert_eq!(
        num(&cell(&summary, 21, 1)),
        outcome.summaries[1].row("ttft_ms").unwrap().count
    );
    let raw = wb.worksheet_range("Raw data").unwrap();
    assert_eq!(raw.height(), outcome.stats.len() + 1);
    assert_eq!(text(&cell(&raw, 0, 0)), "ttft_ms");
    assert_eq!(text(&cell(&raw, 0, 10)), "conversation_id");
    assert_eq!(text(&cell(&raw, 0, 12)), "end_time_ms");
    for (i, s) in sorted.iter().enumerate() {
        let row = i as u32 + 1;
        assert!(close(num(&cell(&raw, row, 2)), s.latency_ms));
        assert_eq!(text(&cell(&raw, row, 10)), s.conversation_id);
        assert_eq!(num(&cell(&raw, row, 5)), s.input_num_tokens as f64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_conversations_and_the_request_cap() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("answers.json");
    let xlsx = dir.path().join("synthetic.xlsx");
    let url = sim.base_url();
    // The shipped config names sonnet.txt, found beside it.
    let config = root().join("datasets/multi-turn-synthetic.json");
    let args = parse(&[
        "--input-file",
        config.to_str().unwrap(),
        "--model",
        MODEL,
        "--url",
        &url,
        "--num-clients",
        "2",
        "--max-active-conversations",
        "4",
        "--max-num-requests",
        "9",
        "--no-early-stop",
        "--conversation-sampling",
        "random",
        "--seed",
        "3",
        "--output-file",
        out_file.to_str().unwrap(),
        "--excel-file",
        xlsx.to_str().unwrap(),
    ]);
    let outcome = run(&args).await;

    // 9 requests over 2 clients: 4 each, as vLLM splits the cap.
    assert_eq!(outcome.records.len(), 8);
    assert_eq!(outcome.stats.len(), 8);
    let per_client = outcome.records.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.client.unwrap()).or_insert(0) += 1;
        m
    });
    assert_eq!(per_client.values().copied().collect::<Vec<_>>(), [4, 4]);

    // The synthetic conversations: vLLM's ids and prompt shape, history growing turn by turn.
    let convs = by_conversation(&outcome.stats);
    assert!(convs.len() >= 2 && convs.len() <= 4, "{convs:?}");
    let tokenizer = llmb_engine::tokenizer::HostTokenizer::Words;
    let config_v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let gen_args =
        llmb::multi_turn::input::GenConvArgs::parse(&config_v, &root().join("datasets")).unwrap();
    let generated = llmb::multi_turn::input::generate(
        &gen_args,
        &tokenizer,
        &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3),
    )
    .unwrap();
    assert_eq!(generated.len(), 8);
    for c in &generated {
        assert!(c.id.starts_with("CONV_ID_"));
        assert_eq!(c.messages.len() % 2, 0);
        assert!((4..=6).contains(&c.messages.len()));
        assert!(c.messages[0].content.contains("is a nice number... "));
        assert!(
            c.messages[0]
                .content
                .contains("Please rewrite the following text")
        );
    }
    for (id, turns) in &convs {
        let conv = generated
            .iter()
            .find(|c| &c.id == id)
            .expect("generated id");
        assert_eq!(turns[0].input_num_turns, 1);
        assert_eq!(
            turns[0].input_num_tokens,
            words(&conv.messages[0].content) + TEMPLATE_PER_MESSAGE + GENERATION_PROMPT
        );
        // Output lengths come from the generated assistant turns (the sim stops between half
        // and all of max_tokens).
        for t in turns {
            let want = words(&conv.messages[t.input_num_turns as usize].content);
            assert!(t.output_num_tokens <= want && t.output_num_tokens >= want.div_ceil(2));
        }
        assert_history_grows(turns, |n| words(&conv.messages[n as usize - 1].content));
    }
    // Only finished conversations go to -o, with the server's answers.
    let written: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(written.len(), outcome.conversations.len());
    for c in &written {
        let id = c["id"].as_str().unwrap();
        let msgs = c["messages"].as_array().unwrap();
        let conv = generated.iter().find(|g| g.id == id).unwrap();
        assert_eq!(msgs.len(), conv.messages.len());
        for (k, t) in convs[id].iter().enumerate() {
            assert_eq!(
                words(msgs[2 * k + 1]["content"].as_str().unwrap()),
                t.output_num_tokens
            );
        }
    }
    // The workbook names the generation parameters.
    let mut wb: Xlsx<_> = open_workbook(&xlsx).unwrap();
    let summary = wb.worksheet_range("Summary").unwrap();
    assert_eq!(text(&cell(&summary, 3, 0)), "text_files");
    assert_eq!(text(&cell(&summary, 4, 0)), "sonnet.txt");
    assert_eq!(text(&cell(&summary, 3, 1)), "input_num_turns");
    assert_eq!(text(&cell(&summary, 4, 1)), "UniformDistribution[4, 6]");
    assert_eq!(text(&cell(&summary, 8, 0)), "runtime_sec");

    // With early stop (the default) the run ends when the first client is done.
    let args = parse(&[
        "-i",
        config.to_str().unwrap(),
        "-m",
        MODEL,
        "-u",
        &url,
        "-p",
        "2",
        "-k",
        "2",
        "-n",
        "6",
    ]);
    let outcome = run(&args).await;
    sim.shutdown().await;
    assert!(outcome.records.len() <= 6 && outcome.records.len() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_step_sends_first_turns_apart() {
    let sim = sim();
    let url = sim.base_url();
    let input = root().join("datasets/multi-turn-conversations.json");
    let args = parse(&[
        "-i",
        input.to_str().unwrap(),
        "-m",
        "local/path/of/the/model",
        "--served-model-name",
        MODEL,
        "-u",
        &url,
        "-p",
        "3",
        "--warmup-step",
        "--no-early-stop",
        "--request-rate",
        "200",
        "--limit-min-tokens",
        "3",
        "--limit-max-tokens",
        "7",
        "--header",
        "X-Test: yes",
    ]);
    let outcome = run(&args).await;
    sim.shutdown().await;
    let original = input_conversations(&input);
    let warmups: Vec<&RequestRecord> = outcome.records.iter().filter(|r| r.warmup).collect();
    assert_eq!(warmups.len(), original.len());
    assert!(warmups.iter().all(|r| r.turn == Some(0)));
    let user_turns: usize = original
        .values()
        .map(|m| m.iter().filter(|(r, _)| r == "user").count())
        .sum();
    assert_eq!(outcome.stats.len(), user_turns - original.len());
    // The measured turns start at the second user message, after the warmup's answer.
    for (id, turns) in by_conversation(&outcome.stats) {
        let system = original[&id]
            .iter()
            .take_while(|(r, _)| r != "user")
            .count() as u64;
        assert_eq!(turns[0].input_num_turns, system + 3);
        let warm = outcome
            .records
            .iter()
            .find(|r| {
                r.warmup && outcome.conversations.iter().any(|c| c.id == id) && {
                    let idx = outcome
                        .conversations
                        .iter()
                        .position(|c| c.id == id)
                        .unwrap();
                    r.generated_text
                        == outcome.conversations[idx].messages[system as usize + 1].content
                }
            })
            .expect("the warmup answer is in the conversation");
        assert_eq!(
            turns[0].input_num_tokens,
            u64::from(warm.server_prompt_tokens.unwrap())
                + u64::from(warm.output_tokens)
                + words(&original[&id][turns[0].input_num_turns as usize - 1].1)
                + 2 * TEMPLATE_PER_MESSAGE
        );
        // --limit-max-tokens 7 replaced the dataset's answer lengths.
        assert!(turns.iter().all(|t| (4..=7).contains(&t.output_num_tokens)));
    }
    let s = &outcome.summaries[0];
    assert_eq!(outcome.summaries.len(), 1);
    assert!(s.param("warmup_runtime_sec").unwrap() > 0.0);
    assert!(close(
        s.param("total_runtime_incl_warmup_sec").unwrap(),
        s.param("runtime_sec").unwrap() + s.param("warmup_runtime_sec").unwrap()
    ));
}

/// The binary: `llmb multi-turn ... --sim -e` writes vLLM's workbook name in the current folder
/// and prints the statistics table.
#[test]
fn command_line_against_the_in_process_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("datasets/multi-turn-conversations.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmb"))
        .current_dir(dir.path())
        .args(["multi-turn", "-i"])
        .arg(&input)
        .args([
            "-m",
            "some-model",
            "--sim",
            "--sim-ttft-ms",
            "2",
            "--sim-itl-ms",
            "0.5",
            "-p",
            "2",
            "-k",
            "4",
            "-n",
            "10",
            "--request-rate",
            "100",
            "--excel-output",
            "--stats-json-output",
            "stats.json",
        ])
        .output()
        .expect("run llmb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Statistics summary:"), "{stdout}");
    assert!(stdout.contains("runtime_sec = "), "{stdout}");
    for metric in [
        "ttft_ms",
        "tpot_ms",
        "latency_ms",
        "input_num_tokens",
        "output_num_chunks",
    ] {
        assert!(stdout.contains(metric), "{stdout}");
    }
    assert!(stderr.contains("model_id=\"some-model\""), "{stderr}");
    let xlsx: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("statistics_2_clients__") && name.ends_with(".xlsx")
        })
        .collect();
    assert_eq!(
        xlsx.len(),
        1,
        "{:?}",
        std::fs::read_dir(dir.path()).unwrap().collect::<Vec<_>>()
    );
    let mut wb: Xlsx<_> = open_workbook(&xlsx[0]).unwrap();
    let raw = wb.worksheet_range("Raw data").unwrap();
    let stats: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap())
            .unwrap();
    assert!(!stats.is_empty() && stats.len() <= 10);
    assert_eq!(raw.height(), stats.len() + 1);
}
