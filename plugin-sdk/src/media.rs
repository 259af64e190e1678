//! Images in requests: how the JSON APIs embed them (base64 data URLs and blocks).

use base64::Engine as _;

use crate::backend::{ContentPart, Image, MultimodalMessage};

/// The error of an adapter whose API takes no images, handed an image dataset.
pub const IMAGES_NOT_SUPPORTED: &str = "this adapter sends text only; the dataset produced \
     images (use a chat adapter that takes them: --backend openai-chat, openai-responses or \
     anthropic)";

/// Standard base64 (with padding), as data URLs and Anthropic's blocks want it.
pub fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The URL an OpenAI-style `image_url` part carries: the image's own URL, or its bytes as a
/// `data:` URL.
pub fn image_url(image: &Image) -> String {
    match &image.url {
        Some(url) => url.clone(),
        None => format!("data:{};base64,{}", image.mime_type, base64(&image.data)),
    }
}

/// The text of a multimodal message (its text parts joined by newlines), for APIs and
/// tokenizers that see only text.
pub fn message_text(message: &MultimodalMessage) -> String {
    let texts: Vec<&str> = message
        .parts
        .iter()
        .filter_map(|p| match p {
            ContentPart::Text(t) => Some(t.as_str()),
            ContentPart::Image(_) => None,
        })
        .collect();
    texts.join("\n")
}

/// [`message_text`] for a dataset reader's messages (the dataset world has its own types).
pub fn dataset_message_text(message: &crate::dataset::MultimodalMessage) -> String {
    let texts: Vec<&str> = message
        .parts
        .iter()
        .filter_map(|p| match p {
            crate::dataset::ContentPart::Text(t) => Some(t.as_str()),
            crate::dataset::ContentPart::Image(_) => None,
        })
        .collect();
    texts.join("\n")
}

/// An image's format (by content) and size, as its header gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
}

/// The format and size of the image `reader` starts with (a file, or `Cursor` over bytes):
/// JPEG, PNG, WebP or GIF, what vision APIs take; anything else, or a zero size, is an error
/// saying so.
pub fn image_header<R: std::io::BufRead + std::io::Seek>(
    reader: &mut R,
) -> Result<ImageHeader, String> {
    let not_image = "not a JPEG, PNG, WebP or GIF image";
    let kind = imagesize::reader_type(&mut *reader).map_err(|_| not_image.to_owned())?;
    let mime = match kind {
        imagesize::ImageType::Jpeg => "image/jpeg",
        imagesize::ImageType::Png => "image/png",
        imagesize::ImageType::Webp => "image/webp",
        imagesize::ImageType::Gif => "image/gif",
        #[allow(unreachable_patterns)]
        _ => return Err(not_image.into()),
    };
    let size = kind
        .reader_size(reader)
        .map_err(|e| format!("cannot read its size from the {mime} header: {e}"))?;
    let side = |n: usize| u32::try_from(n).ok().filter(|&n| n > 0);
    match (side(size.width), side(size.height)) {
        (Some(width), Some(height)) => Ok(ImageHeader {
            mime,
            width,
            height,
        }),
        _ => Err(format!(
            "its {mime} header gives a size of {}x{}",
            size.width, size.height
        )),
    }
}

/// The MIME type a URL names (a `data:` URL) or its extension suggests; empty when it says
/// nothing (the server fetches the image and reads its type itself).
pub fn url_mime(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("data:") {
        return rest.split([';', ',']).next().unwrap_or("").to_owned();
    }
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => "",
    }
    .to_owned()
}

/// Refuses a path a list names that cannot lie inside the list's folder: empty, absolute
/// (Unix, UNC or drive-letter), or with a `..` component. `kind` names the file in the message
/// ("audio", "image").
pub fn check_relative_path(path: &str, kind: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err(format!("an {kind} path is empty"));
    }
    let bytes = path.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if path.starts_with('/') || path.starts_with('\\') || drive {
        return Err(format!(
            "the {kind} path {path:?} is absolute; give it relative to the list's folder"
        ));
    }
    if path.split(['/', '\\']).any(|c| c == "..") {
        return Err(format!(
            "the {kind} path {path:?} leaves the list's folder (\"..\"); only files under it can be read"
        ));
    }
    Ok(())
}

/// How many images a prompt's messages carry.
pub fn image_count(messages: &[MultimodalMessage]) -> usize {
    messages
        .iter()
        .flat_map(|m| &m.parts)
        .filter(|p| matches!(p, ContentPart::Image(_)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_become_a_data_url_and_urls_pass_through() {
        let mut image = Image {
            data: b"abc".to_vec(),
            mime_type: "image/png".into(),
            url: None,
            width: Some(1),
            height: Some(1),
        };
        assert_eq!(image_url(&image), "data:image/png;base64,YWJj");
        image.url = Some("https://example.com/cat.jpg".into());
        assert_eq!(image_url(&image), "https://example.com/cat.jpg");
    }
}
