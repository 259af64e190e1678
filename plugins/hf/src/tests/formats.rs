//! File formats: CSV and TSV cells, every JSON layout, malformed files named with their line,
//! parquet refusals and corruption, and the fuzzing of each format.

use super::*;

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
