//! What the user named, as a list of requests: a folder's image files, one image file, or a
//! JSONL list naming images by path (relative to the list's folder) or by URL.

use std::path::Path;

use serde_json::Value;

/// File extensions a folder's images are found by (lower case).
pub const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "gif"];

/// One image of a request, before it is read.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageRef {
    /// A path relative to the dataset's folder.
    File(String),
    /// A URL the server fetches itself (no bytes are sent).
    Url(String),
}

/// One request as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// How errors name the entry: `list.jsonl:3`, or the folder or file the user gave.
    pub at: String,
    /// The text; `None` takes the `images-prompt` option.
    pub prompt: Option<String>,
    pub images: Vec<ImageRef>,
    pub output_tokens: Option<u32>,
}

/// Whether a file name has one of the [`EXTENSIONS`] (any case).
pub fn is_image_name(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e)))
}

/// Refuses image paths that cannot lie inside the list's folder
/// ([`llmb_plugin_sdk::media::check_relative_path`]), and URLs, which belong in `"image_url"`.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.starts_with("http://") || path.starts_with("https://") || path.starts_with("data:") {
        return Err(format!(
            "{path:?} is a URL, not a file: give URLs as \"image_url\""
        ));
    }
    llmb_plugin_sdk::media::check_relative_path(path, "image")
}

/// A string or an array of strings under `key` (absent or null: none).
fn strings(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Vec<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{at}: \"{key}\" must hold strings, not {v}"))
            })
            .collect(),
        Some(v) => Err(format!(
            "{at}: \"{key}\" must be a string or a list of strings, not {v}"
        )),
    }
}

fn entry(v: &Value, at: String) -> Result<Entry, String> {
    let obj = v.as_object().ok_or_else(|| {
        format!(
            "{at}: expected a JSON object such as {{\"prompt\": \"...\", \"image\": \"a.png\"}}"
        )
    })?;
    let prompt = match obj.get("prompt") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => return Err(format!("{at}: \"prompt\" must be a string, not {v}")),
    };
    let mut images = Vec::new();
    for key in ["image", "images"] {
        for path in strings(obj, key, &at)? {
            check_path(&path).map_err(|e| format!("{at}: {e}"))?;
            images.push(ImageRef::File(path));
        }
    }
    for url in strings(obj, "image_url", &at)? {
        let scheme_ok = ["http://", "https://", "data:"]
            .iter()
            .any(|s| url.starts_with(s));
        if !scheme_ok {
            return Err(format!(
                "{at}: \"image_url\" {url:?} must be an http(s) or data: URL (local files go in \"image\")"
            ));
        }
        images.push(ImageRef::Url(url));
    }
    if images.is_empty() {
        return Err(format!(
            "{at}: no image (give \"image\", \"images\" or \"image_url\")"
        ));
    }
    let output_tokens = obj
        .get("output_tokens")
        .filter(|v| !v.is_null())
        .map(|v| {
            v.as_u64()
                .filter(|&n| n > 0 && n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or_else(|| {
                    format!("{at}: \"output_tokens\" must be a positive integer, not {v}")
                })
        })
        .transpose()?;
    Ok(Entry {
        at,
        prompt,
        images,
        output_tokens,
    })
}

/// Parses a JSONL list (blank lines skipped, a BOM allowed); `name` is how errors show the file.
pub fn parse_list(name: &str, text: &str) -> Result<Vec<Entry>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{name}:{}", i + 1);
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{at}: invalid JSON: {e}"))?;
        out.push(entry(&v, at)?);
    }
    if out.is_empty() {
        return Err(format!("{name}: no requests in the list"));
    }
    Ok(out)
}

/// The image files under `dir` (sub-folders included, hidden names skipped), as `/`-separated
/// paths relative to it, sorted by name. Symbolic links to folders are not followed.
pub fn list_folder(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}{name}");
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &format!("{rel}/"), out)?;
        } else if is_image_name(&name) {
            out.push(rel);
        }
    }
    Ok(())
}

/// One request per image of a folder.
pub fn folder_entries(shown: &str, files: Vec<String>) -> Vec<Entry> {
    files
        .into_iter()
        .map(|rel| Entry {
            at: shown.to_owned(),
            prompt: None,
            images: vec![ImageRef::File(rel)],
            output_tokens: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> ImageRef {
        ImageRef::File(path.into())
    }

    #[test]
    fn parses_every_form_of_line() {
        let text = "\u{feff}{\"prompt\": \"What is this?\", \"image\": \"cats/1.png\"}\n\n\
            {\"images\": [\"a.png\", \"b.jpg\"], \"output_tokens\": 12}\n\
            {\"prompt\": \"Two\", \"image\": \"x.gif\", \"images\": \"y.webp\", \"image_url\": \"https://e.com/z.jpg\"}\n\
            {\"image_url\": [\"https://e.com/1.png\", \"data:image/png;base64,AAAA\"], \"prompt\": null, \"output_tokens\": null}\n";
        let entries = parse_list("list.jsonl", text).unwrap();
        assert_eq!(
            entries,
            [
                Entry {
                    at: "list.jsonl:1".into(),
                    prompt: Some("What is this?".into()),
                    images: vec![file("cats/1.png")],
                    output_tokens: None,
                },
                Entry {
                    at: "list.jsonl:3".into(),
                    prompt: None,
                    images: vec![file("a.png"), file("b.jpg")],
                    output_tokens: Some(12),
                },
                Entry {
                    at: "list.jsonl:4".into(),
                    prompt: Some("Two".into()),
                    images: vec![
                        file("x.gif"),
                        file("y.webp"),
                        ImageRef::Url("https://e.com/z.jpg".into())
                    ],
                    output_tokens: None,
                },
                Entry {
                    at: "list.jsonl:5".into(),
                    prompt: None,
                    images: vec![
                        ImageRef::Url("https://e.com/1.png".into()),
                        ImageRef::Url("data:image/png;base64,AAAA".into())
                    ],
                    output_tokens: None,
                },
            ]
        );
    }

    #[test]
    fn list_errors_name_file_and_line() {
        for (text, line, what) in [
            ("{\"image\":\"a.png\"}\n{\"image\": ", 2, "invalid JSON"),
            ("[1]", 1, "expected a JSON object"),
            ("{\"prompt\":\"hi\"}", 1, "no image"),
            ("{\"image\":3}", 1, "must be a string or a list"),
            ("{\"images\":[\"a.png\", 2]}", 1, "must hold strings"),
            (
                "{\"image\":\"a.png\",\"prompt\":1}",
                1,
                "\"prompt\" must be a string",
            ),
            (
                "\n\n{\"image\":\"a.png\",\"output_tokens\":0}",
                3,
                "positive integer",
            ),
            (
                "{\"image\":\"a.png\",\"output_tokens\":\"5\"}",
                1,
                "positive integer",
            ),
            ("{\"image\":\"../a.png\"}", 1, "leaves the list's folder"),
            ("{\"images\":[\"ok.png\",\"/etc/a.png\"]}", 1, "absolute"),
            ("{\"image\":\"\"}", 1, "empty"),
            (
                "{\"image\":\"https://e.com/a.png\"}",
                1,
                "give URLs as \"image_url\"",
            ),
            (
                "{\"image_url\":\"ftp://e.com/a.png\"}",
                1,
                "http(s) or data: URL",
            ),
            (
                "{\"image_url\":\"cats/1.png\"}",
                1,
                "local files go in \"image\"",
            ),
        ] {
            let err = parse_list("data/list.jsonl", text).unwrap_err();
            assert!(
                err.starts_with(&format!("data/list.jsonl:{line}: ")) && err.contains(what),
                "{text:?}: {err}"
            );
        }
        let err = parse_list("list.jsonl", "\n  \n").unwrap_err();
        assert_eq!(err, "list.jsonl: no requests in the list");
    }

    #[test]
    fn image_paths_must_stay_inside_the_folder() {
        for ok in [
            "a.png",
            "cats/1.png",
            "./cats/1.png",
            "cats/..1.png",
            "C.png",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/a.png",
            "\\\\srv\\a.png",
            "C:\\a.png",
            "../a.png",
            "a/../../b.png",
            " ",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn folders_list_image_files_sorted_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "b.png",
            "a.JPG",
            "c.jpeg",
            "notes.txt",
            "noext",
            ".hidden.png",
            "sub/z.webp",
            "sub/deeper/y.gif",
            ".git/x.png",
        ] {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("sub"), root.join("loop")).unwrap();
        assert_eq!(
            list_folder(root).unwrap(),
            ["a.JPG", "b.png", "c.jpeg", "sub/deeper/y.gif", "sub/z.webp"]
        );
        let entries = folder_entries("photos", vec!["a.JPG".into()]);
        assert_eq!(entries[0].at, "photos");
        assert_eq!(entries[0].images, [file("a.JPG")]);
        assert!(list_folder(&root.join("missing")).is_err());
    }

    #[test]
    fn image_names_by_extension() {
        for yes in ["a.jpg", "a.JPEG", "x.y.png", "a.webp", "a.Gif"] {
            assert!(is_image_name(yes), "{yes}");
        }
        for no in ["a", "a.bmp", "a.png.txt", "png", "a.tiff"] {
            assert!(!is_image_name(no), "{no}");
        }
    }
}
