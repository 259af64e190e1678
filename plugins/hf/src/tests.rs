use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use llmb_plugin_sdk::dataset::{ChatMessage, Prompt, Role};

use super::*;
use crate::files::{in_split, split_name};

fn datasets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets")
}

fn test_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn words(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

fn params(options: &[(&str, &str)], seed: u64, count: u64) -> DatasetParams {
    llmb_plugin_sdk::testing::dataset_params(seed, count, options, &["."])
}

fn cfg(options: &[(&str, &str)], seed: u64, count: u64) -> Config {
    config(&params(options, seed, count)).unwrap()
}

/// File order, every row.
fn all(options: &[(&str, &str)]) -> Config {
    let mut options = options.to_vec();
    options.push(("disable-shuffle", "true"));
    cfg(&options, 0, 0)
}

fn drain(mut pool: Pool) -> Vec<Sample> {
    let mut out = Vec::new();
    loop {
        let batch = pool.next_batch(7, &words);
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

/// Reads `entry` under `root`, shown in errors as `entry` itself.
fn run(root: &Path, entry: &str, config: &Config) -> Result<Vec<Sample>, String> {
    load(root, entry, entry, config).map(|l| drain(l.pool))
}

fn text(sample: &Sample) -> &str {
    match &sample.prompt {
        Prompt::Text(t) => t,
        other => panic!("expected a text prompt, got {other:?}"),
    }
}

fn chat(sample: &Sample) -> &[ChatMessage] {
    match &sample.prompt {
        Prompt::Chat(m) => m,
        other => panic!("expected a chat prompt, got {other:?}"),
    }
}

fn texts(samples: &[Sample]) -> Vec<String> {
    samples.iter().map(|s| text(s).to_owned()).collect()
}

/// A fresh directory under the system's temporary one.
fn scratch(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "llmb-hf-{}-{tag}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn snapshot() -> PathBuf {
    datasets().join("hf-sample")
}

#[test]
fn each_split_of_the_sample_snapshot_has_its_rows() {
    assert_eq!(run(&snapshot(), ".", &all(&[])).unwrap().len(), 30);
    let test = run(&snapshot(), ".", &all(&[("hf-split", "test")])).unwrap();
    assert_eq!(test.len(), 10);
    assert_eq!(
        text(&test[0]),
        "Summarize the news item.\n\nA small museum in Porto has reopened after renovations that \
         added a rooftop garden and a reading room."
    );
    let files =
        files::locate(&snapshot(), ".", "snap", "test", None).expect("the test split exists");
    assert_eq!(
        files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["snap/data/test-00000-of-00001.parquet"]
    );
}

#[test]
fn a_missing_split_lists_the_splits_found() {
    let err = load(
        &snapshot(),
        ".",
        "hf-sample/",
        &all(&[("hf-split", "validation")]),
    )
    .err()
    .unwrap();
    assert_eq!(
        err,
        "no files for split \"validation\" under hf-sample; splits found: test, train"
    );
}

#[test]
fn alpaca_rows_join_a_non_empty_input_to_the_instruction() {
    let samples = run(&snapshot(), ".", &all(&[])).unwrap();
    assert_eq!(
        text(&samples[0]),
        "Summarize the paragraph in one sentence.\n\nThe city council voted on Tuesday to extend \
         the bike lane network by twelve kilometres, citing a rise in cycling commuters since the \
         bridge reopened."
    );
    assert_eq!(
        text(&samples[1]),
        "Give three tips for keeping houseplants alive in winter."
    );
    assert_eq!(samples[0].input_tokens, words(text(&samples[0])));
    let reply = "The council approved twelve more kilometres of bike lanes because more people \
                 now cycle to work.";
    assert_eq!(samples[0].output_tokens, words(reply));
    assert_eq!(samples[0].timestamp, None);
}

#[test]
fn named_columns_replace_detection_and_must_exist() {
    let loaded = load(
        &snapshot(),
        ".",
        "snap",
        &all(&[
            ("hf-prompt-column", "input"),
            ("hf-output-column", "instruction"),
        ]),
    )
    .unwrap();
    assert_eq!(loaded.skipped, 14, "rows with an empty input are skipped");
    let samples = drain(loaded.pool);
    assert_eq!(samples.len(), 16);
    assert!(text(&samples[0]).starts_with("The city council voted"));
    assert_eq!(
        samples[0].output_tokens,
        words("Summarize the paragraph in one sentence.")
    );

    let err = load(
        &snapshot(),
        ".",
        "snap",
        &all(&[("hf-prompt-column", "body")]),
    )
    .err()
    .unwrap();
    assert_eq!(
        err,
        "snap/data/train-00000-of-00001.parquet: no column \"body\" (--hf-prompt-column); its \
         columns: instruction, input, output"
    );
    let err = run(
        &datasets(),
        "hf-sample.csv",
        &all(&[("hf-output-len-column", "tokens")]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "hf-sample.csv: no column \"tokens\" (--hf-output-len-column); its columns: question, answer"
    );
}

#[test]
fn without_a_prompt_or_conversation_column_the_error_lists_the_columns_and_options() {
    let dir = scratch("nocol");
    write(&dir, "x.csv", "title,body\nHello,World\n");
    let err = run(&dir, "x.csv", &all(&[])).unwrap_err();
    assert!(
        err.starts_with("x.csv: no prompt column (prompt, question, "),
        "{err}"
    );
    assert!(err.contains("its columns: title, body;"), "{err}");
    assert!(
        err.ends_with("name the one to use with --hf-prompt-column or --hf-messages-column"),
        "{err}"
    );
    let samples = run(&dir, "x.csv", &all(&[("hf-prompt-column", "body")])).unwrap();
    assert_eq!(texts(&samples), ["World"]);
    assert_eq!(samples[0].output_tokens, DEFAULT_OUTPUT_LEN);
}

#[test]
fn conversations_drop_the_trailing_reply_and_take_the_length_column() {
    let samples = run(&datasets(), "hf-chat-sample.parquet", &all(&[])).unwrap();
    assert_eq!(samples.len(), 20, "all rows of the three row groups");
    let lens: Vec<u32> = samples.iter().map(|s| s.output_tokens).collect();
    assert_eq!(
        lens,
        [
            24, 40, 32, 8, 48, 64, 12, 56, 30, 16, 28, 50, 60, 10, 36, 40, 44, 4, 52, 20
        ]
    );
    let roles = |s: &Sample| chat(s).iter().map(|m| m.role).collect::<Vec<_>>();
    assert_eq!(roles(&samples[1]), [Role::System, Role::User]);
    assert_eq!(
        roles(&samples[3]),
        [Role::User, Role::Assistant, Role::User]
    );
    assert_eq!(
        roles(&samples[8]),
        [Role::User, Role::Assistant, Role::User]
    );
    assert_eq!(
        chat(&samples[8])[2].content,
        "Then why is it used like a vegetable?"
    );
    let prompt: u32 = chat(&samples[3]).iter().map(|m| words(&m.content)).sum();
    assert_eq!(samples[3].input_tokens, prompt);

    let fixed = run(
        &datasets(),
        "hf-chat-sample.parquet",
        &all(&[("hf-output-len", "100")]),
    )
    .unwrap();
    assert!(fixed.iter().all(|s| s.output_tokens == 100));
}

#[test]
fn a_trailing_reply_sizes_the_output_when_no_length_column() {
    let dir = scratch("reply");
    write(
        &dir,
        "chat.jsonl",
        concat!(
            r#"{"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "one two three"}]}"#,
            "\n",
            r#"{"conversations": [{"from": "human", "value": "no reply here"}]}"#,
            "\n",
        ),
    );
    let samples = run(&dir, "chat.jsonl", &all(&[])).unwrap();
    assert_eq!(samples.len(), 2);
    let messages = chat(&samples[0]);
    assert_eq!(messages.len(), 1);
    assert_eq!(
        (messages[0].role, messages[0].content.as_str()),
        (Role::User, "hi there")
    );
    assert_eq!((samples[0].input_tokens, samples[0].output_tokens), (2, 3));
    assert_eq!(samples[1].output_tokens, DEFAULT_OUTPUT_LEN);
    let samples = run(&dir, "chat.jsonl", &all(&[("custom-output-len", "9")])).unwrap();
    assert_eq!(samples[1].output_tokens, 9);
}

#[test]
fn conversations_need_a_user_message_and_known_roles() {
    let dir = scratch("roles");
    write(
        &dir,
        "a.jsonl",
        r#"{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}"#,
    );
    assert_eq!(
        run(&dir, "a.jsonl", &all(&[])).unwrap_err(),
        "a.jsonl:1: column \"messages\": the conversation has no user message"
    );
    write(
        &dir,
        "b.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n{\"messages\": [{\"role\": \"narrator\", \"content\": \"x\"}]}",
    );
    assert_eq!(
        run(&dir, "b.jsonl", &all(&[("hf-messages-column", "messages")])).unwrap_err(),
        "b.jsonl:2: column \"messages\": message 1: unknown role \"narrator\""
    );
}

#[test]
fn csv_fields_may_hold_commas_quotes_and_newlines() {
    let samples = run(&datasets(), "hf-sample.csv", &all(&[])).unwrap();
    assert_eq!(samples.len(), 15);
    assert_eq!(
        text(&samples[1]),
        "Name a fruit that is yellow, curved, and sweet."
    );
    assert_eq!(
        text(&samples[4]),
        "How do you say \"thank you\" in Japanese?"
    );
    let steps = "1. Bring water to a boil.\n2. Lower the egg in gently.\n3. Cook for nine \
                 minutes, then cool it in cold water.";
    assert_eq!(samples[5].output_tokens, words(steps));
    assert_eq!(
        text(&samples[6]),
        "Which planet is known as the Red Planet?"
    );
}

#[test]
fn tsv_and_csv_cells_hold_lengths_and_json_conversations() {
    let dir = scratch("tsv");
    write(
        &dir,
        "d.tsv",
        "prompt\tmax_tokens\nfirst prompt\t12\nsecond, with a comma\t\n",
    );
    let samples = run(&dir, "d.tsv", &all(&[])).unwrap();
    assert_eq!(texts(&samples), ["first prompt", "second, with a comma"]);
    assert_eq!(samples[0].output_tokens, 12);
    assert_eq!(samples[1].output_tokens, DEFAULT_OUTPUT_LEN);
    write(
        &dir,
        "m.csv",
        "chat,output_len\n\"[{\"\"role\"\": \"\"user\"\", \"\"content\"\": \"\"a b\"\"}]\",5\n",
    );
    let samples = run(&dir, "m.csv", &all(&[])).unwrap();
    assert_eq!(chat(&samples[0])[0].content, "a b");
    assert_eq!(samples[0].output_tokens, 5);
    write(&dir, "bad.csv", "prompt,output_len\nx,0\n");
    assert_eq!(
        run(&dir, "bad.csv", &all(&[])).unwrap_err(),
        "bad.csv:2: column \"output_len\" must hold a positive integer, found \"0\""
    );
}

const RECORDS: [&str; 3] = [
    r#"{"question": "What is one plus one?", "answer": "Two."}"#,
    r#"{"question": "Name a primary colour.", "answer": "Red, for example."}"#,
    r#"{"question": "Is ice colder than steam?", "answer": "Yes."}"#,
];

#[test]
fn every_json_layout_reads_the_same_records() {
    let dir = scratch("layouts");
    let lines = RECORDS.join("\n");
    write(&dir, "lines.jsonl", &format!("\u{feff}{lines}\n\n"));
    write(&dir, "lines.json", &lines);
    write(
        &dir,
        "array.json",
        &format!("[\n{}\n]", RECORDS.join(",\n")),
    );
    write(
        &dir,
        "holder.json",
        &format!("{{\"data\": [{}]}}", RECORDS.join(", ")),
    );
    write(
        &dir,
        "pretty.json",
        &format!(
            "{{\n  \"version\": \"1.0\",\n  \"meta\": {{\"n\": [1]}},\n  \"data\": [\n{}\n  ]\n}}\n",
            RECORDS.join(",\n")
        ),
    );
    write(&dir, "one.json", RECORDS[0]);
    let expected = [
        "What is one plus one?",
        "Name a primary colour.",
        "Is ice colder than steam?",
    ];
    for file in [
        "lines.jsonl",
        "lines.json",
        "array.json",
        "holder.json",
        "pretty.json",
    ] {
        let samples = run(&dir, file, &all(&[])).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(texts(&samples), expected, "{file}");
        assert_eq!(samples[1].output_tokens, 3, "{file}");
    }
    assert_eq!(
        texts(&run(&dir, "one.json", &all(&[])).unwrap()),
        ["What is one plus one?"]
    );
}

#[test]
fn malformed_json_names_the_file_and_line() {
    let dir = scratch("badjson");
    write(
        &dir,
        "bad.jsonl",
        &format!("{}\n{}\n{{\"question\": oops}}\n", RECORDS[0], RECORDS[1]),
    );
    assert_eq!(
        run(&dir, "bad.jsonl", &all(&[])).unwrap_err(),
        "bad.jsonl:3: column 14: expected value"
    );
    write(
        &dir,
        "bad.json",
        &format!("[\n{},\n{{\"question\":\n  tru}}\n]", RECORDS[0]),
    );
    let err = run(&dir, "bad.json", &all(&[])).unwrap_err();
    assert!(
        err.starts_with("bad.json:4: array element 2 (byte "),
        "{err}"
    );
    assert!(err.ends_with("expected ident"), "{err}");
    write(
        &dir,
        "holder.json",
        &format!(
            "{{\"data\": [\n{},\n\n  {{\"question\": 5}}\n]}}",
            RECORDS[0]
        ),
    );
    assert_eq!(
        run(&dir, "holder.json", &all(&[])).unwrap_err(),
        "holder.json:4: \"data\" element 2: column \"question\" holds a number, not text"
    );
    write(
        &dir,
        "syntax.json",
        "{\n \"data\": [\n  {\"text\": \"a\"}\n  {\"text\": \"b\"}\n]}",
    );
    assert_eq!(
        run(&dir, "syntax.json", &all(&[])).unwrap_err(),
        "syntax.json:4: column 3: expected `,` or `]`"
    );
    write(
        &dir,
        "two.json",
        "{\n \"a\": [{\"prompt\": \"x\"}],\n \"b\": []\n}",
    );
    assert_eq!(
        run(&dir, "two.json", &all(&[])).unwrap_err(),
        "two.json: the object holds more than one list (\"a\", \"b\"); expected one list of records"
    );
    write(&dir, "scalar.jsonl", "{\"prompt\": \"x\"}\n7\n");
    assert_eq!(
        run(&dir, "scalar.jsonl", &all(&[])).unwrap_err(),
        "scalar.jsonl:2: expected a JSON object (one record)"
    );
    write(&dir, "text.json", "hello");
    assert_eq!(
        run(&dir, "text.json", &all(&[])).unwrap_err(),
        "text.json: expected JSON Lines, a JSON array or an object, found 'h'"
    );
}

#[test]
fn a_csv_row_with_the_wrong_field_count_names_its_line() {
    let dir = scratch("badcsv");
    write(
        &dir,
        "bad.csv",
        "question,answer\n\"multi\nline\",ok\nfine,ok\nthree,fields,here\n",
    );
    assert_eq!(
        run(&dir, "bad.csv", &all(&[])).unwrap_err(),
        "bad.csv:5: the row has 3 fields, the header has 2"
    );
}

#[test]
fn zstd_parquet_is_refused_with_a_way_out() {
    assert_eq!(
        run(&test_data(), "zstd.parquet", &all(&[])).unwrap_err(),
        "zstd.parquet: parquet column prompt is zstd-compressed, which llmb's hf reader does not \
         support; re-save with snappy/gzip or convert to JSONL"
    );
}

#[test]
fn a_file_that_is_not_parquet_is_named() {
    let dir = scratch("notpq");
    write(&dir, "fake.parquet", "prompt\nhello\n");
    let err = run(&dir, "fake.parquet", &all(&[])).unwrap_err();
    assert!(
        err.starts_with("fake.parquet: not a readable parquet file: "),
        "{err}"
    );
    write(&dir, "notes.txt", "hello");
    assert!(
        run(&dir, "notes.txt", &all(&[]))
            .unwrap_err()
            .starts_with("notes.txt: not a file type the hf dataset reads (.parquet, ")
    );
}

#[test]
fn the_seed_fixes_the_order() {
    let order = |seed| texts(&run(&snapshot(), ".", &cfg(&[], seed, 0)).unwrap());
    let a = order(7);
    assert_eq!(a, order(7));
    assert_ne!(a, order(8));
    let plain = texts(&run(&snapshot(), ".", &all(&[])).unwrap());
    assert_ne!(a, plain);
    let (mut sorted_a, mut sorted_plain) = (a.clone(), plain);
    sorted_a.sort();
    sorted_plain.sort();
    assert_eq!(sorted_a, sorted_plain, "a shuffle draws every row once");
}

#[test]
fn a_count_below_the_rows_draws_a_seeded_uniform_subset() {
    let plain = texts(&run(&snapshot(), ".", &all(&[])).unwrap());
    let draw = |seed| texts(&run(&snapshot(), ".", &cfg(&[], seed, 5)).unwrap());
    let a = draw(11);
    assert_eq!(a.len(), 5);
    assert_eq!(a, draw(11));
    assert_ne!(a, draw(12));
    assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), 5);
    assert!(a.iter().all(|p| plain.contains(p)));
    let mut picks = vec![0u32; plain.len()];
    for seed in 0..600 {
        for p in draw(seed) {
            picks[plain.iter().position(|q| *q == p).unwrap()] += 1;
        }
    }
    // 600 draws of 5 from 30 pick each row 100 times on average.
    assert!(picks.iter().all(|&n| (60..=140).contains(&n)), "{picks:?}");
}

#[test]
fn an_unshuffled_count_takes_the_first_rows_and_reads_no_further() {
    let first = texts(&run(&snapshot(), ".", &cfg(&[("disable-shuffle", "true")], 0, 3)).unwrap());
    let plain = texts(&run(&snapshot(), ".", &all(&[])).unwrap());
    assert_eq!(first, plain[..3]);
    let dir = scratch("stop");
    write(
        &dir,
        "d.jsonl",
        &format!("{}\n{}\nnot json\n", RECORDS[0], RECORDS[1]),
    );
    let unshuffled = cfg(&[("disable-shuffle", "true")], 0, 2);
    assert_eq!(run(&dir, "d.jsonl", &unshuffled).unwrap().len(), 2);
    assert!(
        run(&dir, "d.jsonl", &cfg(&[], 0, 2))
            .unwrap_err()
            .starts_with("d.jsonl:3: ")
    );
}

#[test]
fn cycle_repeats_the_rows_in_draw_order() {
    let test = [("hf-split", "test")];
    let once = texts(&run(&snapshot(), ".", &cfg(&test, 3, 0)).unwrap());
    assert_eq!(run(&snapshot(), ".", &cfg(&test, 3, 25)).unwrap().len(), 10);
    let cycled = run(
        &snapshot(),
        ".",
        &cfg(&[("hf-split", "test"), ("cycle", "true")], 3, 25),
    )
    .unwrap();
    assert_eq!(cycled.len(), 25);
    for (i, s) in cycled.iter().enumerate() {
        assert_eq!(text(s), once[i % 10]);
        assert_eq!(s.input_tokens, cycled[i % 10].input_tokens);
        assert_eq!(s.output_tokens, cycled[i % 10].output_tokens);
    }
}

#[test]
fn empty_prompts_are_skipped_and_none_left_is_an_error() {
    let dir = scratch("empty");
    write(
        &dir,
        "d.jsonl",
        "{\"prompt\": \"  \"}\n{\"prompt\": null}\n{\"prompt\": \"kept\"}\n{\"other\": 1}\n",
    );
    let loaded = load(&dir, "d.jsonl", "d.jsonl", &all(&[])).unwrap();
    assert_eq!(loaded.skipped, 3);
    assert_eq!(texts(&drain(loaded.pool)), ["kept"]);
    write(&dir, "e.jsonl", "{\"prompt\": \"\"}\n{\"prompt\": \"\"}\n");
    assert_eq!(
        run(&dir, "e.jsonl", &all(&[])).unwrap_err(),
        "e.jsonl: no usable rows: the prompts of all 2 are empty"
    );
    write(&dir, "f.jsonl", "\n\n");
    assert_eq!(
        run(&dir, "f.jsonl", &all(&[])).unwrap_err(),
        "f.jsonl: no rows"
    );
}

#[test]
fn split_names_follow_hub_file_layouts() {
    for (rel, split) in [
        ("data/train-00000-of-00002.parquet", "train"),
        (
            "data/train_sft-00000-of-00001-5b5d0e3a.parquet",
            "train_sft",
        ),
        ("test.jsonl", "test"),
        ("default/validation/0000.parquet", "validation"),
        ("en/dev-3.csv", "dev"),
        ("prompts.json", "prompts"),
    ] {
        assert_eq!(split_name(rel), split, "{rel}");
        assert!(in_split(rel, split), "{rel}");
    }
    assert!(in_split(
        "data/validation_matched-00000-of-00001.parquet",
        "validation"
    ));
    assert!(in_split("train.part1.jsonl", "train"));
    assert!(in_split("train/shard.jsonl", "train"));
    assert!(!in_split("data/training.jsonl", "train"));
    assert!(!in_split("pretrain.jsonl", "train"));
}

#[test]
fn directories_pick_split_and_subset_files_in_path_order() {
    let dir = scratch("tree");
    let record = |p: &str| format!("{{\"prompt\": \"{p}\"}}\n");
    write(&dir, "README.md", "# card");
    write(&dir, "en/train/dataset_info.json", "{\"features\": {}}");
    write(&dir, ".cache/train.jsonl", &record("hidden"));
    write(&dir, "en/train/0001.jsonl", &record("en 1"));
    write(&dir, "en/train/0000.jsonl", &record("en 0"));
    write(&dir, "en/test/0000.jsonl", &record("en test"));
    write(&dir, "fr/train-00000-of-00001.csv", "prompt\nfr 0\n");
    write(&dir, "en/train_sft.jsonl", &record("en sft"));

    let err = run(&dir, ".", &all(&[])).unwrap_err();
    assert_eq!(
        err,
        ".: split \"train\" has files in several subsets: en, fr; pick one with --hf-subset"
    );
    let en = run(&dir, ".", &all(&[("hf-subset", "en")])).unwrap();
    assert_eq!(texts(&en), ["en 0", "en 1"], "train only, not train_sft");
    let sft = run(
        &dir,
        ".",
        &all(&[("hf-subset", "en"), ("hf-split", "train_sft")]),
    )
    .unwrap();
    assert_eq!(texts(&sft), ["en sft"]);
    let fr = run(&dir, ".", &all(&[("hf-subset", "fr")])).unwrap();
    assert_eq!(texts(&fr), ["fr 0"]);
    assert_eq!(
        run(&dir, ".", &all(&[("hf-subset", "de")])).unwrap_err(),
        ".: no subset \"de\" (a top-level folder of data files); subsets found: en, fr"
    );
    assert_eq!(
        run(&dir, ".", &all(&[("hf-subset", "en"), ("hf-split", "dev")])).unwrap_err(),
        "no files for split \"dev\" under .; splits found: test, train, train_sft"
    );

    let flat = scratch("flat");
    write(&flat, "b.jsonl", &record("b"));
    write(&flat, "a.jsonl", &record("a"));
    assert_eq!(
        texts(&run(&flat, ".", &all(&[])).unwrap()),
        ["a", "b"],
        "files naming no split are all train"
    );
    assert!(run(&flat, ".", &all(&[("hf-split", "test")])).is_err());

    let arrow = scratch("arrow");
    write(&arrow, "dataset_dict.json", "{\"splits\": [\"train\"]}");
    write(&arrow, "train/data-00000-of-00001.arrow", "");
    write(&arrow, "train/state.json", "{}");
    assert_eq!(
        run(&arrow, ".", &all(&[])).unwrap_err(),
        ".: no data files (.parquet, .jsonl, .ndjson, .json, .csv, .tsv) in the directory \
         (other files: .arrow)"
    );
}

#[test]
fn the_sample_snapshot_is_read_through_dataset_path_display() {
    let err = load(
        &snapshot(),
        ".",
        "~/hf-sample/",
        &all(&[("hf-prompt-column", "nope")]),
    )
    .err()
    .unwrap();
    assert!(
        err.starts_with("~/hf-sample/data/train-00000-of-00001.parquet: no column \"nope\""),
        "{err}"
    );
}

#[test]
fn options_are_read_and_checked() {
    let c = cfg(&[], 5, 10);
    assert_eq!(c.split, "train");
    assert_eq!(c.subset, None);
    assert_eq!(c.columns, Columns::default());
    assert_eq!((c.output_len, c.default_output_len), (None, 256));
    assert!(c.plan.shuffle && !c.plan.cycle);
    let c = cfg(
        &[
            ("hf-split", "test"),
            ("hf-subset", "en"),
            ("hf-messages-column", "dialog"),
            ("hf-output-len-column", "n"),
            ("hf-output-column", "reply"),
            ("hf-output-len", "64"),
            ("custom-output-len", "32"),
        ],
        5,
        10,
    );
    assert_eq!(
        (c.split.as_str(), c.subset.as_deref()),
        ("test", Some("en"))
    );
    assert_eq!(c.columns.messages.as_deref(), Some("dialog"));
    assert_eq!((c.output_len, c.default_output_len), (Some(64), 32));
    let err = |options: &[(&str, &str)]| config(&params(options, 0, 0)).unwrap_err();
    assert_eq!(
        err(&[("hf-output-len", "0")]),
        "--hf-output-len must be at least 1"
    );
    assert_eq!(
        err(&[("hf-output-len", "lots")]),
        "invalid value \"lots\" for --hf-output-len"
    );
    assert_eq!(err(&[("hf-split", " ")]), "--hf-split needs a name");
    assert!(
        err(&[("hf-prompt-column", "a"), ("hf-messages-column", "b")])
            .contains("exclude each other")
    );
}

#[test]
fn rows_beyond_the_memory_budget_stop_the_read_with_advice() {
    let mut every = all(&[]);
    every.memory_budget = 4 << 10;
    let err = run(&snapshot(), ".", &every).unwrap_err();
    assert!(
        err.starts_with("./data/train-00000-of-00001.parquet: row "),
        "{err}"
    );
    assert!(
        err.contains("MiB, most of the memory")
            && err.ends_with("pass --num-prompts N to draw N rows while reading"),
        "{err}"
    );
    let mut some = cfg(&[], 1, 5);
    some.memory_budget = 4 << 10;
    assert_eq!(
        run(&snapshot(), ".", &some).unwrap().len(),
        5,
        "five rows fit"
    );
    some.plan.count = 25;
    assert!(
        run(&snapshot(), ".", &some)
            .unwrap_err()
            .ends_with("pass a smaller --num-prompts")
    );
}

/// Any file of each format the reader takes (parquet from the sample's bytes changed): rows or
/// an error naming the file (and the line, for text formats), never a panic.
#[test]
fn fuzz() {
    let dir = scratch("fuzz");
    let sharegpt = std::fs::read(datasets().join("sharegpt-sample.json")).unwrap();
    let formats: [(&str, Vec<Vec<u8>>); 5] = [
        (
            "data.jsonl",
            vec![
                std::fs::read(datasets().join("sample.jsonl")).unwrap(),
                std::fs::read(datasets().join("conversations.jsonl")).unwrap(),
            ],
        ),
        (
            "data.json",
            vec![
                sharegpt,
                br#"{"data":[{"instruction":"a","input":"b","output":"c"}],"version":1}"#.to_vec(),
            ],
        ),
        (
            "data.csv",
            vec![std::fs::read(datasets().join("hf-sample.csv")).unwrap()],
        ),
        (
            "data.tsv",
            vec![b"prompt\toutput_len\nHello there\t3\n\"quoted\ttab\"\t4\n".to_vec()],
        ),
        (
            "data.parquet",
            vec![std::fs::read(datasets().join("hf-chat-sample.parquet")).unwrap()],
        ),
    ];
    let config = all(&[]);
    for (name, seeds) in &formats {
        let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
        llmb_plugin_sdk::testing::fuzz::reader(name, &seeds, |content| {
            std::fs::write(dir.join(name), content).unwrap();
            run(&dir, name, &config).map(drop)
        });
    }
}

/// Corrupt pages the `parquet` crate's record reader would panic on fail with the file's name.
#[test]
fn a_corrupt_parquet_page_is_an_error_not_a_panic() {
    let dir = scratch("corrupt-parquet");
    let mut bytes = std::fs::read(datasets().join("hf-chat-sample.parquet")).unwrap();
    // A definition level of 6 in a column whose maximum is 4 (found by `fuzz`).
    assert_eq!(bytes[3128], 4);
    bytes[3128] = 6;
    std::fs::write(dir.join("bad.parquet"), &bytes).unwrap();
    let err = run(&dir, "bad.parquet", &all(&[])).unwrap_err();
    assert!(
        err.starts_with("bad.parquet: ") && err.contains("definition level 6"),
        "{err}"
    );
}

/// A column chunk whose pages end before the values its metadata announces (a page header
/// made unreadable, which the `parquet` crate skips) is an error, not a panic.
#[test]
fn a_parquet_column_chunk_that_ends_early_is_an_error_not_a_panic() {
    let dir = scratch("short-parquet");
    let mut bytes = std::fs::read(datasets().join("hf-chat-sample.parquet")).unwrap();
    // The type of the first data page of `content`: DATA_PAGE becomes INDEX_PAGE (found by
    // `fuzz`).
    assert_eq!(bytes[1085], 0);
    bytes[1085] = 2;
    std::fs::write(dir.join("short.parquet"), &bytes).unwrap();
    let err = run(&dir, "short.parquet", &all(&[])).unwrap_err();
    assert!(
        err.starts_with("short.parquet: ") && err.contains("fewer than the 20"),
        "{err}"
    );
}
