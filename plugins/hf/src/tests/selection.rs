//! Which files and rows are read: splits and subsets of a snapshot or directory, seed, count,
//! shuffle and cycle, options, and the memory budget.

use super::*;

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
