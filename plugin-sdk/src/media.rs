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
