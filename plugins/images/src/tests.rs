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

/// An extended (VP8X) WebP header.
fn webp(width: u32, height: u32) -> Vec<u8> {
    let mut b = b"RIFF\x20\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00".to_vec();
    b.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    b.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    b.extend_from_slice(&[0; 8]);
    b
}

fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn params(seed: u64, count: u64, options: &[(&str, &str)]) -> DatasetParams {
    llmb_plugin_sdk::testing::dataset_params(seed, count, options, &["list.jsonl"])
}

/// One token per word, as the host's default tokenizer.
fn words(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

/// A request as comparable values: its text, then (mime, width, height, bytes or URL) per image.
type Summary = (
    String,
    Vec<(String, Option<u32>, Option<u32>, String)>,
    u32,
    u32,
);

fn summary(s: &Sample) -> Summary {
    let Prompt::Multimodal(m) = &s.prompt else {
        panic!("not multimodal")
    };
    assert_eq!(m.len(), 1);
    assert!(matches!(m[0].role, Role::User));
    assert!(s.timestamp.is_none());
    let images = m[0]
        .parts
        .iter()
        .filter_map(|p| match p {
            ContentPart::Image(i) => Some((
                i.mime_type.clone(),
                i.width,
                i.height,
                match &i.url {
                    Some(url) => {
                        assert!(i.data.is_empty());
                        url.clone()
                    }
                    None => format!("{} bytes", i.data.len()),
                },
            )),
            ContentPart::Text(_) => None,
        })
        .collect();
    let text = llmb_plugin_sdk::media::dataset_message_text(&m[0]);
    (text, images, s.input_tokens, s.output_tokens)
}

fn run(st: &mut State, max: u32) -> Vec<Summary> {
    st.next(max, &words).unwrap().iter().map(summary).collect()
}

/// A folder of three images (one in a sub-folder) and a stray text file.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.png", &png(10, 20));
    write(dir.path(), "a.jpg", &jpeg(30, 40));
    write(dir.path(), "sub/c.webp", &webp(50, 60));
    write(dir.path(), "readme.txt", b"not an image");
    dir
}

fn folder_state(dir: &Path, seed: u64, count: u64, options: &[(&str, &str)]) -> State {
    let files = list_folder(dir).unwrap();
    State::new(
        &params(seed, count, options),
        dir.to_path_buf(),
        folder_entries("photos", files),
    )
    .unwrap()
}

#[test]
fn headers_give_format_and_size_whatever_the_name() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, mime, w, h) in [
        ("a.png", png(640, 480), "image/png", 640, 480),
        ("b.gif", gif(3, 2), "image/gif", 3, 2),
        ("c.jpeg", jpeg(1280, 720), "image/jpeg", 1280, 720),
        ("d.webp", webp(100, 7), "image/webp", 100, 7),
        ("actually-a-gif.png", gif(5, 6), "image/gif", 5, 6),
    ] {
        write(dir.path(), name, &bytes);
        let header = probe(&dir.path().join(name)).unwrap();
        assert_eq!(
            header,
            Header {
                mime,
                width: w,
                height: h
            },
            "{name}"
        );
    }
    write(dir.path(), "text.png", b"hello, this is not an image");
    let err = probe(&dir.path().join("text.png")).unwrap_err();
    assert!(err.contains("not a JPEG, PNG, WebP or GIF image"), "{err}");
    write(
        dir.path(),
        "bmp.png",
        b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    );
    assert!(probe(&dir.path().join("bmp.png")).is_err());
    write(dir.path(), "cut.jpg", &jpeg(4, 4)[..14]);
    let err = probe(&dir.path().join("cut.jpg")).unwrap_err();
    assert!(err.contains("cannot read its size"), "{err}");
    write(dir.path(), "zero.png", &png(0, 5));
    let err = probe(&dir.path().join("zero.png")).unwrap_err();
    assert!(err.contains("0x5"), "{err}");
    assert!(probe(&dir.path().join("missing.png")).is_err());
}

#[test]
fn a_folder_gives_one_request_per_image() {
    let dir = folder();
    let all = run(
        &mut folder_state(dir.path(), 1, 0, &[("disable-shuffle", "true")]),
        100,
    );
    let prompt = DEFAULT_PROMPT.to_owned();
    assert_eq!(
        all,
        [
            (
                prompt.clone(),
                vec![(
                    "image/jpeg".into(),
                    Some(30),
                    Some(40),
                    format!("{} bytes", jpeg(30, 40).len())
                )],
                5,
                128
            ),
            (
                prompt.clone(),
                vec![(
                    "image/png".into(),
                    Some(10),
                    Some(20),
                    format!("{} bytes", png(10, 20).len())
                )],
                5,
                128
            ),
            (
                prompt,
                vec![(
                    "image/webp".into(),
                    Some(50),
                    Some(60),
                    format!("{} bytes", webp(50, 60).len())
                )],
                5,
                128
            ),
        ]
    );
    let opts = [
        ("images-prompt", "What is it?"),
        ("images-output-len", "7"),
        ("disable-shuffle", ""),
    ];
    let first = &run(&mut folder_state(dir.path(), 1, 1, &opts), 100)[0];
    assert_eq!((first.0.as_str(), first.2, first.3), ("What is it?", 3, 7));
    // An empty prompt sends the image alone.
    let bare = folder_state(dir.path(), 1, 1, &[("images-prompt", "")])
        .next(1, &words)
        .unwrap();
    let Prompt::Multimodal(m) = &bare[0].prompt else {
        panic!()
    };
    assert!(matches!(m[0].parts[..], [ContentPart::Image(_)]));
    assert_eq!(bare[0].input_tokens, 0);
}

#[test]
fn shuffle_follows_the_seed_and_cycle_repeats() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..12 {
        write(dir.path(), &format!("{i:02}.gif"), &gif(i + 1, 1));
    }
    let widths = |st: &mut State, max| -> Vec<u32> {
        run(st, max).iter().map(|s| s.1[0].1.unwrap()).collect()
    };
    let sorted: Vec<u32> = (1..=12).collect();
    let unshuffled = widths(
        &mut folder_state(dir.path(), 1, 0, &[("disable-shuffle", "1")]),
        100,
    );
    assert_eq!(unshuffled, sorted);
    let shuffled = widths(&mut folder_state(dir.path(), 1, 0, &[]), 100);
    assert_ne!(shuffled, sorted);
    let mut again = shuffled.clone();
    again.sort();
    assert_eq!(again, sorted);
    assert_eq!(
        widths(&mut folder_state(dir.path(), 1, 0, &[]), 100),
        shuffled
    );
    assert_ne!(
        widths(&mut folder_state(dir.path(), 2, 0, &[]), 100),
        shuffled
    );

    // More asked than there are: what there is, unless `cycle`.
    assert_eq!(
        widths(&mut folder_state(dir.path(), 1, 30, &[]), 100).len(),
        12
    );
    assert_eq!(
        widths(&mut folder_state(dir.path(), 1, 5, &[]), 100),
        shuffled[..5]
    );
    let mut st = folder_state(dir.path(), 1, 30, &[("cycle", "true")]);
    let mut cycled = Vec::new();
    for max in [7, 7, 100] {
        cycled.extend(widths(&mut st, max));
    }
    assert!(st.next(100, &words).unwrap().is_empty());
    assert_eq!(cycled.len(), 30);
    assert_eq!(cycled[..12], shuffled[..]);
    assert_eq!(cycled[12..24], shuffled[..]);
    assert_eq!(cycled[24..], shuffled[..6]);
}

#[test]
fn a_jsonl_list_names_files_and_urls() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cats/1.png", &png(8, 9));
    write(dir.path(), "b.jpg", &jpeg(2, 3));
    let list = "{\"prompt\": \"one two\", \"image\": \"cats/1.png\", \"output_tokens\": 5}\n\
        {\"images\": [\"b.jpg\", \"cats/1.png\"], \"image_url\": \"https://e.com/x.webp?s=1\"}\n\
        {\"prompt\": \"url only\", \"image_url\": \"https://e.com/photo\"}\n";
    let entries = parse_list("list.jsonl", list).unwrap();
    let mut st = State::new(
        &params(
            1,
            0,
            &[("disable-shuffle", "true"), ("images-output-len", "64")],
        ),
        dir.path().to_path_buf(),
        entries,
    )
    .unwrap();
    let all = run(&mut st, 100);
    let png_len = format!("{} bytes", png(8, 9).len());
    assert_eq!(
        all,
        [
            (
                "one two".into(),
                vec![("image/png".into(), Some(8), Some(9), png_len.clone())],
                2,
                5
            ),
            (
                DEFAULT_PROMPT.into(),
                vec![
                    (
                        "image/jpeg".into(),
                        Some(2),
                        Some(3),
                        format!("{} bytes", jpeg(2, 3).len())
                    ),
                    ("image/png".into(), Some(8), Some(9), png_len),
                    (
                        "image/webp".into(),
                        None,
                        None,
                        "https://e.com/x.webp?s=1".into()
                    ),
                ],
                5,
                64
            ),
            (
                "url only".into(),
                vec![("".into(), None, None, "https://e.com/photo".into())],
                2,
                64
            ),
        ]
    );
}

#[test]
fn unreadable_files_are_named_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.png", &png(1, 1));
    write(dir.path(), "cats/2.png", b"plain text, not a png");
    let list = "{\"image\": \"a.png\"}\n\n{\"image\": \"cats/1.png\"}\n";
    let err = State::new(
        &params(1, 0, &[]),
        dir.path().to_path_buf(),
        parse_list("list.jsonl", list).unwrap(),
    )
    .err()
    .unwrap();
    assert!(
        err.starts_with("list.jsonl:3: cannot read cats/1.png: "),
        "{err}"
    );
    let list = "{\"images\": [\"a.png\", \"cats/2.png\"]}\n";
    let err = State::new(
        &params(1, 0, &[]),
        dir.path().to_path_buf(),
        parse_list("list.jsonl", list).unwrap(),
    )
    .err()
    .unwrap();
    assert!(
        err.starts_with("list.jsonl:1: cannot read cats/2.png: not a JPEG"),
        "{err}"
    );
    // A file gone between opening and its batch: the error names it too.
    let list = "{\"image\": \"a.png\"}\n";
    let mut st = State::new(
        &params(1, 0, &[]),
        dir.path().to_path_buf(),
        parse_list("list.jsonl", list).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("a.png")).unwrap();
    let err = st.next(10, &words).unwrap_err();
    assert!(
        err.starts_with("list.jsonl:1: cannot read a.png: "),
        "{err}"
    );
}

#[test]
fn batches_stop_at_their_byte_budget() {
    let dir = folder();
    let mut st = folder_state(dir.path(), 1, 0, &[]);
    st.batch_bytes = 1;
    assert_eq!(st.next(100, &words).unwrap().len(), 1);
    st.batch_bytes = usize::MAX;
    assert_eq!(st.next(100, &words).unwrap().len(), 2);
}

#[test]
fn option_errors_name_the_option() {
    let dir = folder();
    for (key, value) in [
        ("images-output-len", "0"),
        ("images-output-len", "x"),
        ("cycle", "maybe"),
        ("disable-shuffle", "2"),
    ] {
        let err = State::new(
            &params(1, 0, &[(key, value)]),
            dir.path().to_path_buf(),
            Vec::new(),
        )
        .err()
        .unwrap();
        assert!(err.contains(&format!("--{key}")), "{key}={value}: {err}");
    }
}

#[test]
fn url_mime_types() {
    assert_eq!(url_mime("https://e.com/a.JPG"), "image/jpeg");
    assert_eq!(url_mime("https://e.com/a.png?x=1#y"), "image/png");
    assert_eq!(url_mime("data:image/webp;base64,AAAA"), "image/webp");
    assert_eq!(url_mime("https://e.com/a"), "");
}

/// Any list file: requests or an error naming the file and line, never a panic.
#[test]
fn fuzz() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.png", &png(4, 4));
    write(dir.path(), "b/c.jpg", &jpeg(4, 4));
    let seed = "{\"prompt\": \"hi\", \"image\": \"a.png\"}\n{\"images\": [\"a.png\", \"b/c.jpg\"], \"output_tokens\": 3}\n{\"image_url\": \"https://e.com/x.png\"}\n";
    llmb_plugin_sdk::testing::fuzz::reader("list.jsonl", &[seed.as_bytes()], |content| {
        let text =
            std::str::from_utf8(content).map_err(|e| format!("list.jsonl: cannot read: {e}"))?;
        let entries = parse_list("list.jsonl", text)?;
        let params = params(1, 5, &[("cycle", "true")]);
        State::new(&params, dir.path().to_path_buf(), entries)?.next(5, &words)?;
        Ok(())
    });
}

/// Odd option values: an error naming the option, never a panic.
#[test]
fn fuzz_options() {
    let dir = folder();
    let files = list_folder(dir.path()).unwrap();
    llmb_plugin_sdk::testing::fuzz::options(
        &[
            "images-prompt",
            "images-output-len",
            "disable-shuffle",
            "cycle",
        ],
        |p| {
            let entries = folder_entries("photos", files.clone());
            State::new(p, dir.path().to_path_buf(), entries)?.next(5, &words)?;
            Ok(())
        },
    );
}
