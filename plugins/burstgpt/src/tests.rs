//! Tests of the `burstgpt` reader: CSV splitting, filters, count and shuffle, exact prompts,
//! line-numbered errors and file quirks.

use super::*;
use llmb_plugin_sdk::tokens::testing::{Merging, PIECES, Words};

const SAMPLE: &str = include_str!("../../../datasets/burstgpt-sample.csv");

fn params(count: u64, seed: u64, options: &[(&str, &str)]) -> DatasetParams {
    llmb_plugin_sdk::testing::dataset_params(seed, count, options, &["trace.csv"])
}

fn replay_with<T: Tokenizer>(
    text: &str,
    p: &DatasetParams,
    tok: T,
    vocab: Vocab,
) -> Result<Vec<Sample>, String> {
    let mut replay = Replay::new(text.as_bytes(), "trace.csv", &config(p)?, tok, vocab)?;
    let mut out = Vec::new();
    loop {
        let batch = replay.next_batch(7)?;
        if batch.is_empty() {
            return Ok(out);
        }
        out.extend(batch);
    }
}

fn replay(text: &str, p: &DatasetParams) -> Result<Vec<Sample>, String> {
    replay_with(text, p, Words, Vocab::new(500, &[0]).unwrap())
}

/// Samples as comparable values (the bindings' types have no `PartialEq`).
fn flat(samples: &[Sample]) -> Vec<(String, u32, u32, Option<f64>)> {
    samples
        .iter()
        .map(|s| {
            let t = text(s).to_owned();
            (t, s.input_tokens, s.output_tokens, s.timestamp)
        })
        .collect()
}

fn text(s: &Sample) -> &str {
    match &s.prompt {
        Prompt::Text(t) => t,
        _ => panic!("a text prompt"),
    }
}

/// (timestamp, request tokens, response tokens) of the sample's rows.
fn shape(samples: &[Sample]) -> Vec<(f64, u32, u32)> {
    samples
        .iter()
        .map(|s| (s.timestamp.unwrap(), s.input_tokens, s.output_tokens))
        .collect()
}

/// The sample file's rows as the filters should keep them, by plain splitting.
fn expected(keep: impl Fn(&str, &str) -> bool) -> Vec<(f64, u32, u32)> {
    SAMPLE
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[3] != "0" && keep(f[1], f[5]))
        .map(|f| {
            (
                f[0].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn splits_quoted_fields() {
    assert_eq!(split_csv_line("a,b,,c").unwrap(), ["a", "b", "", "c"]);
    assert_eq!(split_csv_line("").unwrap(), [""]);
    assert_eq!(
        split_csv_line(r#"1,"GPT-4","a, ""b""",x"#).unwrap(),
        ["1", "GPT-4", r#"a, "b""#, "x"]
    );
    assert_eq!(
        split_csv_line(r#"1, "Conversation log" ,2"#).unwrap(),
        ["1", "Conversation log", "2"]
    );
    assert_eq!(split_csv_line(r#""""#).unwrap(), [""]);
    assert_eq!(split_csv_line("a\tb, c").unwrap(), ["a\tb", " c"]);
    assert!(
        split_csv_line(r#"1,"open"#)
            .unwrap_err()
            .contains("unterminated")
    );
    assert!(
        split_csv_line(r#"1,"a"b,2"#)
            .unwrap_err()
            .contains("field 2")
    );
}

#[test]
fn keeps_conversation_logs_with_responses_in_trace_order() {
    let samples = replay(SAMPLE, &params(0, 1, &[])).unwrap();
    let want = expected(|_, log| log == "Conversation log");
    assert_eq!(want.len(), 20);
    assert_eq!(shape(&samples), want);
    assert!(samples.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    for s in &samples {
        assert_eq!(Words.encode(text(s)).len() as u32, s.input_tokens);
    }
}

#[test]
fn filters_by_model_and_log_type() {
    let gpt4 = replay(SAMPLE, &params(0, 1, &[("burstgpt-model", "GPT-4")])).unwrap();
    assert_eq!(
        shape(&gpt4),
        expected(|m, log| m == "GPT-4" && log == "Conversation log")
    );
    assert_eq!(gpt4.len(), 7);
    let all = replay(SAMPLE, &params(0, 1, &[("burstgpt-log-type", "all")])).unwrap();
    assert_eq!(shape(&all), expected(|_, _| true));
    assert_eq!(all.len(), 27);
    let api_chat = replay(
        SAMPLE,
        &params(
            0,
            1,
            &[
                ("burstgpt-log-type", "api log"),
                ("burstgpt-model", "ChatGPT"),
            ],
        ),
    )
    .unwrap();
    assert_eq!(
        shape(&api_chat),
        expected(|m, log| m == "ChatGPT" && log == "API log")
    );
    let err = replay(SAMPLE, &params(0, 1, &[("burstgpt-model", "Claude")])).unwrap_err();
    assert_eq!(
        err,
        "trace.csv: no rows to replay (log type Conversation log, model Claude, response tokens > 0)"
    );
}

#[test]
fn count_takes_the_first_rows_and_reads_no_further() {
    let first = replay(SAMPLE, &params(5, 1, &[])).unwrap();
    assert_eq!(
        shape(&first),
        expected(|_, log| log == "Conversation log")[..5]
    );
    let broken = format!("{SAMPLE}oops,ChatGPT,1,1,2,Conversation log\n");
    assert_eq!(replay(&broken, &params(5, 1, &[])).unwrap().len(), 5);
    assert!(replay(&broken, &params(0, 1, &[])).is_err());
}

#[test]
fn a_row_keeps_its_prompt_whatever_the_count_or_order() {
    let all = replay(SAMPLE, &params(0, 3, &[])).unwrap();
    let few = replay(SAMPLE, &params(3, 3, &[])).unwrap();
    assert_eq!(flat(&few), flat(&all[..3]));
    let other_seed = replay(SAMPLE, &params(3, 4, &[])).unwrap();
    assert_ne!(text(&other_seed[0]), text(&all[0]));
    assert_eq!(shape(&other_seed), shape(&few));
    let shuffled = replay(SAMPLE, &params(0, 3, &[("burstgpt-shuffle", "true")])).unwrap();
    for s in flat(&shuffled) {
        assert!(flat(&all).contains(&s));
    }
}

#[test]
fn shuffle_draws_rows_at_random_reproducibly() {
    let shuffle = [("burstgpt-shuffle", "true")];
    let a = replay(SAMPLE, &params(0, 7, &shuffle)).unwrap();
    let b = replay(SAMPLE, &params(0, 7, &shuffle)).unwrap();
    let c = replay(SAMPLE, &params(0, 8, &shuffle)).unwrap();
    assert_eq!(flat(&a), flat(&b));
    assert_ne!(shape(&a), shape(&c));
    let mut sorted = shape(&a);
    sorted.sort_by(|x, y| x.0.total_cmp(&y.0));
    assert_eq!(sorted, expected(|_, log| log == "Conversation log"));
    let five = replay(SAMPLE, &params(5, 7, &shuffle)).unwrap();
    assert_eq!(flat(&five), flat(&a[..5]));
    let ordered = replay(
        SAMPLE,
        &params(
            0,
            7,
            &[("burstgpt-shuffle", "true"), ("disable-shuffle", "true")],
        ),
    )
    .unwrap();
    assert_eq!(
        shape(&ordered),
        expected(|_, log| log == "Conversation log")
    );
    let err = replay(SAMPLE, &params(0, 7, &[("burstgpt-shuffle", "yes")])).unwrap_err();
    assert!(err.contains("--burstgpt-shuffle"), "{err}");
}

#[test]
fn prompts_are_exact_even_when_tokens_merge() {
    let vocab = Vocab::new(PIECES.len() as u32, &[0]).unwrap();
    let samples = replay_with(
        SAMPLE,
        &params(0, 11, &[("burstgpt-log-type", "all")]),
        Merging,
        vocab,
    )
    .unwrap();
    assert_eq!(shape(&samples), expected(|_, _| true));
    for s in &samples {
        assert_eq!(Merging.encode(text(s)).len() as u32, s.input_tokens);
    }
}

#[test]
fn errors_name_the_file_and_line() {
    let header = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n";
    let cases = [
        (
            "5,ChatGPT,472,18,490,Conversation log\n\n7,ChatGPT,x1,18,490,Conversation log\n",
            "trace.csv:4: bad number \"x1\" in column \"Request tokens\"",
        ),
        (
            "5,ChatGPT,472,18,490,Conversation log\nsoon,ChatGPT,1,1,2,API log\n",
            "trace.csv:3: bad number \"soon\" in column \"Timestamp\"",
        ),
        (
            "5,ChatGPT,472,-1.5,490,Conversation log\n",
            "trace.csv:2: bad number \"-1.5\" in column \"Response tokens\"",
        ),
        (
            "5,ChatGPT,472,18,490\n",
            "trace.csv:2: missing column \"Log Type\" (the row has 5 fields)",
        ),
        (
            "5,ChatGPT,472\n",
            "trace.csv:2: missing column \"Response tokens\" (the row has 3 fields)",
        ),
        (
            "5,\"ChatGPT,472,18,490,Conversation log\n",
            "trace.csv:2: unterminated quoted field",
        ),
    ];
    for (rows, want) in cases {
        let err = replay(&format!("{header}{rows}"), &params(0, 1, &[])).unwrap_err();
        assert!(err.starts_with(want), "{err}");
    }
    let err = replay(
        "Timestamp,Model,Request tokens,Response tokens\n1,GPT-4,2,3\n",
        &params(0, 1, &[]),
    )
    .unwrap_err();
    assert!(
        err.starts_with("trace.csv:1: no \"Log Type\" column"),
        "{err}"
    );
    let err = replay("", &params(0, 1, &[])).unwrap_err();
    assert!(err.starts_with("trace.csv: empty file"), "{err}");
}

#[test]
fn reads_quoted_crlf_files_with_a_bom_and_float_counts() {
    let text = "\u{feff}\"Timestamp\",\"Model\",\"Request tokens\",\"Response tokens\",\"Total tokens\",\"Log Type\"\r\n\
                1.5,\"GPT-4\",\"12\",3.0,15,\"Conversation log\"\r\n\
                2,GPT-4,4,0,4,Conversation log\r\n";
    let samples = replay(text, &params(0, 1, &[])).unwrap();
    assert_eq!(shape(&samples), [(1.5, 12, 3)]);
    let no_filters = "Timestamp,Request tokens,Response tokens\n9,2,1\n";
    let p = params(
        0,
        1,
        &[("burstgpt-log-type", "ALL"), ("burstgpt-model", "all")],
    );
    assert_eq!(shape(&replay(no_filters, &p).unwrap()), [(9.0, 2, 1)]);
}

/// Any file, in trace order or shuffled, filtered or not: samples or an error naming file
/// and line.
#[test]
fn fuzz() {
    llmb_plugin_sdk::testing::fuzz::reader("trace.csv", &[SAMPLE.as_bytes()], |content| {
        let filtered = params(
            5,
            2,
            &[("burstgpt-model", "GPT-4"), ("disable-shuffle", "true")],
        );
        for p in [params(0, 1, &[]), filtered] {
            let vocab = Vocab::new(500, &[0]).unwrap();
            let mut replay = Replay::new(content, "trace.csv", &config(&p)?, Words, vocab)?;
            while !replay.next_batch(7)?.is_empty() {}
        }
        Ok(())
    });
}
