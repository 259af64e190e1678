//! Image cells: what a vision dataset's image column holds, as each format hands it over, and
//! how it becomes the images of a prompt.
//!
//! A cell holds one image or a list of them. An image is encoded bytes (a parquet binary
//! column, or the `bytes` of the Hugging Face `Image` feature's `{bytes, path}` struct; in JSON
//! a base64 string or a list of byte values), an `http(s)://` URL the server fetches itself, or
//! a `data:` URL (decoded here). Bytes must be a JPEG, PNG, WebP or GIF image: the format and
//! size come from its header, which is all that is read. A path without bytes (an `Image`
//! feature stored by reference, a local file name) is refused: the reader does not open files a
//! dataset refers to.

use crate::rows::kind;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use llmb_plugin_sdk::dataset::Image;
use parquet::record::Field;
use serde_json::Value;

/// Image columns tried in order when `hf-image-column` is not given.
pub const IMAGE_COLUMNS: [&str; 4] = ["image", "images", "image_url", "image_urls"];

/// Larger images are refused: no vision API takes them (OpenAI's cap is 20 MB), and the
/// reader's sandbox could not hold many.
pub const MAX_IMAGE_BYTES: usize = 64 << 20;

/// An image cell before it is checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Media {
    /// No image (an unmapped column, a null or empty cell).
    #[default]
    Null,
    /// Encoded image bytes; `path` is the file name the dataset gives them (errors only).
    Bytes { data: Vec<u8>, path: Option<String> },
    /// A URL (`http(s)://` or `data:`), or text that should be one.
    Text(String),
    /// A file path with no bytes.
    Path(String),
    /// Several images, in order.
    List(Vec<Media>),
    /// Something that is no image (a number, an object without `bytes`, `url` or `path`).
    Other(String),
}

/// Base64 with or without padding, as data URLs and JSON exports write it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl Media {
    /// A JSON cell (JSON, JSON Lines): a URL string, `{"bytes": base64 or [byte, ...], "path"}`
    /// (the `Image` feature), `{"url": ...}` or `{"image_url": {"url": ...}}` (OpenAI's
    /// parts), or a list of those.
    pub fn from_json(value: Value) -> Media {
        match value {
            Value::Null => Media::Null,
            Value::String(s) => Media::Text(s),
            Value::Array(items) => Media::List(items.into_iter().map(Media::from_json).collect()),
            Value::Object(mut map) => {
                let path = match map.remove("path") {
                    Some(Value::String(p)) if !p.is_empty() => Some(p),
                    _ => None,
                };
                match map.remove("bytes") {
                    Some(Value::String(s)) => {
                        return match BASE64.decode(s.trim()) {
                            Ok(data) => Media::Bytes { data, path },
                            Err(e) => Media::Other(format!(
                                "an object whose \"bytes\" is not base64 ({e})"
                            )),
                        };
                    }
                    Some(Value::Array(items)) => {
                        let data: Option<Vec<u8>> = items
                            .iter()
                            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                            .collect();
                        return match data {
                            Some(data) => Media::Bytes { data, path },
                            None => Media::Other(
                                "an object whose \"bytes\" list holds other than bytes".into(),
                            ),
                        };
                    }
                    Some(Value::Null) | None => {}
                    Some(other) => {
                        return Media::Other(format!(
                            "an object whose \"bytes\" is {}",
                            kind(&other)
                        ));
                    }
                }
                match map.remove("url").or_else(|| map.remove("image_url")) {
                    Some(Value::String(url)) => Media::Text(url),
                    Some(Value::Object(mut inner)) => match inner.remove("url") {
                        Some(Value::String(url)) => Media::Text(url),
                        _ => Media::Other("an image_url object without a \"url\" string".into()),
                    },
                    _ => path.map_or_else(
                        || {
                            Media::Other(
                                "an object without \"bytes\", \"url\" or \"path\"".to_owned(),
                            )
                        },
                        Media::Path,
                    ),
                }
            }
            other => Media::Other(kind(&other).to_owned()),
        }
    }

    /// A parquet cell: a binary column, a string column of URLs, the `Image` feature's
    /// `{bytes, path}` struct, or a list of those.
    pub fn from_field(field: Field) -> Media {
        match field {
            Field::Null => Media::Null,
            Field::Bytes(b) => Media::Bytes {
                data: b.data().to_vec(),
                path: None,
            },
            Field::Str(s) => Media::Text(s),
            Field::ListInternal(list) => Media::List(
                list.elements()
                    .iter()
                    .cloned()
                    .map(Media::from_field)
                    .collect(),
            ),
            Field::Group(row) => {
                let (mut bytes, mut path, mut url) = (None, None, None);
                for (name, value) in row.into_columns() {
                    match (name.as_str(), value) {
                        ("bytes", Field::Bytes(b)) => bytes = Some(b.data().to_vec()),
                        ("bytes", Field::Str(s)) => bytes = Some(s.into_bytes()),
                        ("path", Field::Str(p)) if !p.is_empty() => path = Some(p),
                        ("url", Field::Str(u)) => url = Some(u),
                        _ => {}
                    }
                }
                match (bytes, url, path) {
                    (Some(data), _, path) => Media::Bytes { data, path },
                    (None, Some(url), _) => Media::Text(url),
                    (None, None, Some(path)) => Media::Path(path),
                    (None, None, None) => Media::Null,
                }
            }
            _ => {
                Media::Other("a parquet value that is not binary, text, a struct or a list".into())
            }
        }
    }

    fn flatten(self, out: &mut Vec<Media>) {
        match self {
            Media::Null => {}
            Media::List(items) => items.into_iter().for_each(|m| m.flatten(out)),
            Media::Bytes { ref data, .. } if data.is_empty() => {}
            Media::Text(ref s) if s.trim().is_empty() => {}
            other => out.push(other),
        }
    }
}

pub use llmb_plugin_sdk::media::url_mime;

/// Bytes made into an image: format and size from the header.
pub fn decode(data: Vec<u8>) -> Result<Image, String> {
    if data.len() > MAX_IMAGE_BYTES {
        return Err(format!(
            "{} MiB is too large (images are limited to {} MiB)",
            data.len() >> 20,
            MAX_IMAGE_BYTES >> 20
        ));
    }
    let header = llmb_plugin_sdk::media::image_header(&mut std::io::Cursor::new(&data))?;
    Ok(Image {
        data,
        mime_type: header.mime.into(),
        url: None,
        width: Some(header.width),
        height: Some(header.height),
    })
}

fn one(media: Media) -> Result<Image, String> {
    match media {
        Media::Bytes { data, path } => decode(data).map_err(|e| match path {
            Some(path) => format!("{path:?}: {e}"),
            None => e,
        }),
        Media::Text(text) => {
            let text = text.trim();
            let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
            if lower.starts_with("http://") || lower.starts_with("https://") {
                return Ok(Image {
                    data: Vec::new(),
                    mime_type: url_mime(text),
                    url: Some(text.to_owned()),
                    width: None,
                    height: None,
                });
            }
            if lower.starts_with("data:") {
                let (head, payload) = text
                    .split_once(',')
                    .ok_or("a data: URL without a comma before its data")?;
                if !head.to_ascii_lowercase().ends_with(";base64") {
                    return Err("a data: URL that is not base64".into());
                }
                let data = BASE64
                    .decode(payload.trim())
                    .map_err(|e| format!("a data: URL whose data is not base64 ({e})"))?;
                return decode(data);
            }
            Err(format!(
                "text that is not an http(s) or data: URL ({:?})",
                text.chars().take(60).collect::<String>()
            ))
        }
        Media::Path(path) => {
            let lower = path.to_ascii_lowercase();
            if lower.starts_with("http://") || lower.starts_with("https://") {
                return one(Media::Text(path));
            }
            Err(format!(
                "a file path ({path:?}) without the image's bytes; llmb's hf reader takes \
                 image bytes, http(s) URLs and data: URLs, and does not open files a dataset \
                 refers to"
            ))
        }
        Media::Other(what) => Err(format!("{what}, not an image")),
        Media::Null | Media::List(_) => unreachable!("flattened away"),
    }
}

/// The images of a cell, in order (none for a null or empty cell). `at` names the record.
pub fn images(media: Media, column: &str, at: &str) -> Result<Vec<Image>, String> {
    let mut flat = Vec::new();
    media.flatten(&mut flat);
    let many = flat.len() > 1;
    flat.into_iter()
        .enumerate()
        .map(|(i, m)| {
            one(m).map_err(|e| {
                if many {
                    format!("{at}: column {column:?}: image {}: {e}", i + 1)
                } else {
                    format!("{at}: column {column:?}: {e}")
                }
            })
        })
        .collect()
}

/// Whether a parquet column's type can hold images: binary or text, the `Image` feature's
/// struct (a group with a `bytes` field), or a list of those.
pub fn parquet_type_holds_images(t: &parquet::schema::types::Type) -> bool {
    use parquet::basic::Type as Physical;
    if t.is_primitive() {
        return t.get_physical_type() == Physical::BYTE_ARRAY;
    }
    let fields = t.get_fields();
    if fields
        .iter()
        .any(|f| matches!(f.name(), "bytes" | "url") && f.is_primitive())
    {
        return true;
    }
    // A LIST wrapper (`list` / `element`) or a legacy repeated field: look inside.
    fields.len() == 1 && parquet_type_holds_images(&fields[0])
}

/// Whether a JSON value can hold images (anything but null, booleans and numbers).
pub fn json_holds_images(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Array(_) | Value::Object(_))
}
