//! How rows become samples: prompt and conversation columns, alpaca rows, trailing replies,
//! output lengths, and rows without a usable prompt.

use super::*;

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
