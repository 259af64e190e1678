//! Vision datasets: image columns in parquet (binary, the `Image` struct, VisionArena's lists),
//! JSON and CSV become multimodal prompts; bad images are refused naming the row.

use std::sync::Arc;

use base64::Engine as _;
use llmb_plugin_sdk::dataset::{ContentPart, Image, MultimodalMessage};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::*;

/// The first bytes of a PNG of the given size (all a header reader looks at).
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    b.extend_from_slice(&width.to_be_bytes());
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    b
}

fn gif(width: u16, height: u16) -> Vec<u8> {
    let mut b = b"GIF89a".to_vec();
    b.extend_from_slice(&width.to_le_bytes());
    b.extend_from_slice(&height.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b
}

/// SOI, a JFIF APP0 segment, then a baseline SOF0 frame header.
fn jpeg(width: u16, height: u16) -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    b.extend_from_slice(b"JFIF\0\x01\x01\x00\x00\x01\x00\x01\x00\x00");
    b.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&width.to_be_bytes());
    b.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    b
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// One leaf column's data: values, definition and repetition levels.
type Leaf<'a> = (Vec<&'a [u8]>, Vec<i16>, Vec<i16>);

/// Writes a one-row-group parquet file of byte-array leaf columns, levels given by hand.
fn parquet_file(path: &Path, schema: &str, leaves: &[Leaf]) {
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let file = std::fs::File::create(path).unwrap();
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut leaves = leaves.iter();
    while let Some(mut column) = group.next_column().unwrap() {
        let (values, def, rep) = leaves.next().unwrap();
        let values: Vec<ByteArray> = values.iter().map(|v| ByteArray::from(v.to_vec())).collect();
        let max_rep = column
            .typed::<ByteArrayType>()
            .get_descriptor()
            .max_rep_level();
        let rep = (max_rep > 0).then_some(rep.as_slice());
        column
            .typed::<ByteArrayType>()
            .write_batch(&values, Some(def), rep)
            .unwrap();
        column.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

fn messages(sample: &Sample) -> &[MultimodalMessage] {
    match &sample.prompt {
        Prompt::Multimodal(m) => m,
        other => panic!("expected a multimodal prompt, got {other:?}"),
    }
}

/// A message's parts in short: text, or `mime WxH` / `url` for an image.
fn parts(message: &MultimodalMessage) -> Vec<String> {
    message
        .parts
        .iter()
        .map(|p| match p {
            ContentPart::Text(t) => t.clone(),
            ContentPart::Image(Image {
                url: Some(url),
                mime_type,
                data,
                ..
            }) => {
                assert!(data.is_empty());
                format!("{url} ({mime_type})")
            }
            ContentPart::Image(i) => format!(
                "{} {}x{} {}B",
                i.mime_type,
                i.width.unwrap(),
                i.height.unwrap(),
                i.data.len()
            ),
        })
        .collect()
}

const IMAGE_STRUCT: &str = "message schema {
    optional binary prompt (UTF8);
    optional group image {
        optional binary bytes;
        optional binary path (UTF8);
    }
}";

#[test]
fn parquet_image_structs_join_the_text_prompt() {
    let dir = scratch("pq-image");
    let (a, c) = (png(4, 3), jpeg(640, 480));
    parquet_file(
        &dir.join("d.parquet"),
        IMAGE_STRUCT,
        &[
            (
                vec![b"describe this", b"no image here", b"and this one"],
                vec![1, 1, 1],
                vec![],
            ),
            (vec![&a, &c], vec![2, 0, 2], vec![]),
            (vec![b"a.png"], vec![2, 0, 1], vec![]),
        ],
    );
    let samples = run(&dir, "d.parquet", &all(&[])).unwrap();
    assert_eq!(samples.len(), 3);
    let m = messages(&samples[0]);
    assert_eq!(m.len(), 1);
    assert!(matches!(m[0].role, Role::User));
    assert_eq!(
        parts(&m[0]),
        ["describe this", &format!("image/png 4x3 {}B", a.len())]
    );
    // The text alone is counted.
    assert_eq!(samples[0].input_tokens, 2);
    assert_eq!(text(&samples[1]), "no image here");
    assert_eq!(
        parts(&messages(&samples[2])[0]),
        ["and this one", &format!("image/jpeg 640x480 {}B", c.len())]
    );
}

#[test]
fn a_parquet_binary_column_named_by_the_option_holds_images() {
    let dir = scratch("pq-binary");
    let g = gif(7, 8);
    parquet_file(
        &dir.join("d.parquet"),
        "message schema { optional binary question (UTF8); optional binary picture; }",
        &[
            (vec![b"what is it?"], vec![1], vec![]),
            (vec![&g], vec![1], vec![]),
        ],
    );
    // Not a name the reader looks for: a text prompt without the option.
    let samples = run(&dir, "d.parquet", &all(&[])).unwrap();
    assert_eq!(text(&samples[0]), "what is it?");
    let samples = run(&dir, "d.parquet", &all(&[("hf-image-column", "picture")])).unwrap();
    assert_eq!(
        parts(&messages(&samples[0])[0]),
        ["what is it?", &format!("image/gif 7x8 {}B", g.len())]
    );
    assert_eq!(
        run(&dir, "d.parquet", &all(&[("hf-image-column", "photo")])).unwrap_err(),
        "d.parquet: no column \"photo\" (--hf-image-column); its columns: question, picture"
    );
}

/// VisionArena-Chat: `conversation` a list of turns, each a list of `{content, role}`, and
/// `images` a list of `Image` structs.
#[test]
fn vision_arena_rows_read_as_a_conversation_with_its_images() {
    let dir = scratch("pq-arena");
    let schema = "message schema {
        optional group conversation (LIST) {
            repeated group list {
                optional group element (LIST) {
                    repeated group list {
                        optional group element {
                            optional binary content (UTF8);
                            optional binary role (UTF8);
                        }
                    }
                }
            }
        }
        optional group images (LIST) {
            repeated group list {
                optional group element {
                    optional binary bytes;
                    optional binary path (UTF8);
                }
            }
        }
    }";
    let (one, two, three) = (png(100, 50), gif(3, 3), jpeg(20, 10));
    parquet_file(
        &dir.join("train-00000-of-00001.parquet"),
        schema,
        &[
            (
                vec![
                    b"What is in this picture?",
                    b"A cat on a mat.",
                    b"compare them",
                    b"they differ",
                    b"and now?",
                    b"the same",
                ],
                vec![6; 6],
                vec![0, 2, 0, 2, 1, 2],
            ),
            (
                vec![
                    b"user",
                    b"assistant",
                    b"user",
                    b"assistant",
                    b"user",
                    b"assistant",
                ],
                vec![6; 6],
                vec![0, 2, 0, 2, 1, 2],
            ),
            (vec![&one, &two, &three], vec![4, 4, 4], vec![0, 0, 1]),
            (vec![b"b.gif", b"c.jpg"], vec![3, 4, 4], vec![0, 0, 1]),
        ],
    );
    let samples = run(&dir, ".", &all(&[])).unwrap();
    assert_eq!(samples.len(), 2);
    let m = messages(&samples[0]);
    assert_eq!(m.len(), 1);
    assert_eq!(
        parts(&m[0]),
        ["What is in this picture?", "image/png 100x50 33B"]
    );
    // The trailing reply sizes the output.
    assert_eq!(samples[0].output_tokens, words("A cat on a mat."));
    let m = messages(&samples[1]);
    assert_eq!(m.len(), 3);
    assert_eq!(
        parts(&m[0]),
        [
            "compare them".to_owned(),
            format!("image/gif 3x3 {}B", two.len()),
            format!("image/jpeg 20x10 {}B", three.len())
        ]
    );
    assert!(matches!(m[1].role, Role::Assistant));
    assert_eq!(parts(&m[1]), ["they differ"]);
    assert_eq!(parts(&m[2]), ["and now?"]);
    assert_eq!(
        samples[1].input_tokens,
        words("compare them they differ and now?")
    );
    assert_eq!(samples[1].output_tokens, words("the same"));
}

#[test]
fn an_undecodable_image_names_the_file_and_row() {
    let dir = scratch("pq-bad");
    let a = png(4, 3);
    parquet_file(
        &dir.join("bad.parquet"),
        IMAGE_STRUCT,
        &[
            (vec![b"fine", b"broken"], vec![1, 1], vec![]),
            (vec![&a, b"not an image at all"], vec![2, 2], vec![]),
            (vec![b"a.png", b"b.png"], vec![2, 2], vec![]),
        ],
    );
    assert_eq!(
        run(&dir, "bad.parquet", &all(&[])).unwrap_err(),
        "bad.parquet: row 2: column \"image\": \"b.png\": not a JPEG, PNG, WebP or GIF image (hf-text-only sends the text alone)"
    );
    // Stored by reference: a path without bytes.
    parquet_file(
        &dir.join("paths.parquet"),
        IMAGE_STRUCT,
        &[
            (vec![b"p"], vec![1], vec![]),
            (vec![], vec![1], vec![]),
            (vec![b"/data/x.png"], vec![2], vec![]),
        ],
    );
    let err = run(&dir, "paths.parquet", &all(&[])).unwrap_err();
    assert!(
        err.starts_with(
            "paths.parquet: row 1: column \"image\": a file path (\"/data/x.png\") without the \
             image's bytes"
        ),
        "{err}"
    );
}

#[test]
fn json_images_are_urls_data_urls_and_byte_structs() {
    let dir = scratch("json-images");
    let lines = [
        r#"{"question": "a url", "image": "https://example.com/cat.JPG?x=1"}"#.to_owned(),
        format!(
            r#"{{"question": "a data url", "image": "data:image/png;base64,{}"}}"#,
            b64(&png(2, 5))
        ),
        format!(
            r#"{{"question": "two", "image": ["http://h/x", {{"bytes": "{}", "path": "g.gif"}}]}}"#,
            b64(&gif(9, 4))
        ),
        r#"{"question": "none", "image": null}"#.to_owned(),
        r#"{"question": "openai", "image": {"image_url": {"url": "https://h/y.webp"}}}"#.to_owned(),
    ];
    write(&dir, "d.jsonl", &lines.join("\n"));
    let samples = run(&dir, "d.jsonl", &all(&[])).unwrap();
    let shown: Vec<Vec<String>> = samples
        .iter()
        .map(|s| match &s.prompt {
            Prompt::Text(t) => vec![t.clone()],
            _ => parts(&messages(s)[0]),
        })
        .collect();
    assert_eq!(
        shown,
        [
            vec!["a url", "https://example.com/cat.JPG?x=1 (image/jpeg)"],
            vec!["a data url", &format!("image/png 2x5 {}B", png(2, 5).len())],
            vec![
                "two",
                "http://h/x ()",
                &format!("image/gif 9x4 {}B", gif(9, 4).len())
            ],
            vec!["none"],
            vec!["openai", "https://h/y.webp (image/webp)"],
        ]
    );
    write(
        &dir,
        "path.jsonl",
        r#"{"prompt": "p", "images": ["cat.jpg"]}"#,
    );
    assert_eq!(
        run(&dir, "path.jsonl", &all(&[])).unwrap_err(),
        "path.jsonl:1: column \"images\": text that is not an http(s) or data: URL (\"cat.jpg\") (hf-text-only sends the text alone)"
    );
    write(
        &dir,
        "bad.jsonl",
        "{\"prompt\": \"p\", \"image\": \"https://h/a.png\"}\n{\"prompt\": \"q\", \"image\": \
         [\"https://h/b.png\", \"data:image/png;base64,aGVsbG8=\"]}\n",
    );
    assert_eq!(
        run(&dir, "bad.jsonl", &all(&[])).unwrap_err(),
        "bad.jsonl:2: column \"image\": image 2: not a JPEG, PNG, WebP or GIF image (hf-text-only sends the text alone)"
    );
    // A number is no image: not detected, refused when named.
    write(&dir, "n.jsonl", r#"{"prompt": "p", "image": 3}"#);
    assert_eq!(text(&run(&dir, "n.jsonl", &all(&[])).unwrap()[0]), "p");
    assert_eq!(
        run(&dir, "n.jsonl", &all(&[("hf-image-column", "image")])).unwrap_err(),
        "n.jsonl:1: column \"image\": a number, not an image (hf-text-only sends the text alone)"
    );
}

#[test]
fn csv_image_cells_are_urls_and_chat_prompts_get_them_on_the_first_user_message() {
    let dir = scratch("csv-images");
    write(
        &dir,
        "d.csv",
        "prompt,image_url\nlook,https://h/a.png\nplain,\n",
    );
    let samples = run(&dir, "d.csv", &all(&[])).unwrap();
    assert_eq!(
        parts(&messages(&samples[0])[0]),
        ["look", "https://h/a.png (image/png)"]
    );
    assert_eq!(text(&samples[1]), "plain");
    let record = format!(
        r#"{{"messages": [{{"role": "system", "content": "be brief"}}, {{"role": "user", "content": "hi"}}], "image": "data:image/png;base64,{}"}}"#,
        b64(&png(1, 1))
    );
    write(&dir, "chat.jsonl", &record);
    let samples = run(&dir, "chat.jsonl", &all(&[])).unwrap();
    let m = messages(&samples[0]);
    assert_eq!(parts(&m[0]), ["be brief"]);
    assert_eq!(
        parts(&m[1]),
        ["hi", &format!("image/png 1x1 {}B", png(1, 1).len())]
    );
    assert_eq!(samples[0].input_tokens, 3);
    assert_eq!(
        run(&dir, "d.csv", &all(&[("hf-image-column", "prompt")])).unwrap_err(),
        "d.csv: --hf-image-column names \"prompt\", the column the prompt is read from"
    );
}

#[test]
fn image_bytes_count_against_the_memory_budget() {
    let dir = scratch("json-budget");
    let mut big = png(8, 8);
    big.resize(40_000, 0);
    let line = format!(
        r#"{{"prompt": "p", "image": "data:image/png;base64,{}"}}"#,
        b64(&big)
    );
    write(&dir, "d.jsonl", &[line.as_str(); 5].join("\n"));
    let mut config = all(&[]);
    config.memory_budget = 100_000;
    let err = run(&dir, "d.jsonl", &config).unwrap_err();
    assert!(
        err.starts_with("d.jsonl:3: the 3 rows read so far take more than"),
        "{err}"
    );
}

#[test]
fn a_batch_stops_once_its_images_reach_the_byte_cap() {
    let image = |n: usize| {
        let mut data = png(1, 1);
        data.resize(n, 0);
        rows::Row {
            prompt: Prompt::Multimodal(vec![MultimodalMessage {
                role: Role::User,
                parts: vec![
                    ContentPart::Text("x".into()),
                    ContentPart::Image(image::decode(data).unwrap()),
                ],
            }]),
            output: rows::Output::Default,
        }
    };
    let half = pool::BATCH_BYTES / 2 + 1;
    let rows = vec![image(half), image(half), image(half)];
    let mut pool = Pool::new(rows, all(&[]).plan, None, 5);
    assert_eq!(pool.next_batch(10, &words).len(), 2);
    assert_eq!(pool.next_batch(10, &words).len(), 1);
    assert!(pool.next_batch(10, &words).is_empty());
}

/// `HuggingFaceH4/llava-instruct-mix-vsft`: `{"type": "image"}` parts mark where the images of
/// the `images` column go.
#[test]
fn image_placeholders_in_content_parts_take_the_image_column() {
    let dir = scratch("placeholders");
    let messages_json = r#"[{"role": "user", "content": [{"type": "image", "text": null}, {"type": "text", "text": "What is this?"}]}, {"role": "assistant", "content": [{"type": "text", "text": "A dog."}]}]"#;
    write(
        &dir,
        "d.jsonl",
        &format!(r#"{{"messages": {messages_json}, "images": ["https://h/d.png"]}}"#),
    );
    let samples = run(&dir, "d.jsonl", &all(&[])).unwrap();
    let m = messages(&samples[0]);
    assert_eq!(m.len(), 1);
    assert_eq!(
        parts(&m[0]),
        ["What is this?", "https://h/d.png (image/png)"]
    );
    assert_eq!(samples[0].output_tokens, 2);
    write(
        &dir,
        "none.jsonl",
        &format!(r#"{{"messages": {messages_json}}}"#),
    );
    assert_eq!(
        run(&dir, "none.jsonl", &all(&[])).unwrap_err(),
        "none.jsonl:1: column \"messages\": the conversation has image parts but no image \
         column (image, images, image_url, image_urls) was found; name it with \
         --hf-image-column, or pass hf-text-only to send the text alone"
    );
}

#[test]
fn text_only_leaves_the_images_out() {
    let dir = scratch("text-only");
    write(
        &dir,
        "d.jsonl",
        r#"{"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]}], "image": "cat.jpg"}"#,
    );
    assert!(run(&dir, "d.jsonl", &all(&[])).is_err());
    let samples = run(&dir, "d.jsonl", &all(&[("hf-text-only", "true")])).unwrap();
    assert_eq!(chat(&samples[0])[0].content, "q");
    assert_eq!(
        config(&params(
            &[("hf-text-only", "true"), ("hf-image-column", "image")],
            0,
            0
        ))
        .unwrap_err(),
        "--hf-image-column and --hf-text-only exclude each other: one reads images, the other \
         leaves them out"
    );
}
