//! Image prompts, as vLLM's multimodal OpenAI server takes them: every image part is decoded
//! (a base64 data URL, or Anthropic's base64 block), its width and height read from its header,
//! and it costs [`image_tokens`] prompt tokens. An image that cannot be decoded is the request's
//! 400, as on vLLM. Remote images (`http(s)://`) are never fetched: the simulator touches no
//! network, so each counts as a [`REMOTE_IMAGE_SIDE`]-pixel square.
//!
//! Only PNG, JPEG, WebP and GIF are recognised (what clients send to vision models), and only
//! their headers are read: a file with a valid header and broken pixels passes here where vLLM
//! would refuse it.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use base64::Engine as _;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};

/// Pixels on each side of the square one image token covers: Qwen2-VL's 14-pixel patches,
/// merged 2 × 2.
pub(crate) const IMAGE_PATCH_PIXELS: u32 = 28;

/// Width and height assumed for an image given by a remote URL, which the simulator never
/// fetches (it must not touch the network): 512 × 512, so 19 × 19 = 361 tokens.
pub(crate) const REMOTE_IMAGE_SIDE: u32 = 512;

/// Prompt tokens of one image of `width` × `height` pixels: one per 28 × 28 patch, each side
/// rounded up, `ceil(h / 28) · ceil(w / 28)` (Qwen2-VL's count, without its resizing to a
/// minimum and maximum number of pixels). A 448 × 448 image is 16 × 16 = 256 tokens.
pub(crate) fn image_tokens(width: u32, height: u32) -> u32 {
    width
        .div_ceil(IMAGE_PATCH_PIXELS)
        .saturating_mul(height.div_ceil(IMAGE_PATCH_PIXELS))
}

/// One image of a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// Identifies the image for the prefix cache (like vLLM's multimodal hash): of its bytes,
    /// or of its URL when it is remote.
    pub(crate) hash: u64,
}

impl Image {
    pub(crate) fn tokens(&self) -> u32 {
        image_tokens(self.width, self.height)
    }
}

/// Python's `base64.b64decode`, which vLLM uses: padding required, stray bits in the last
/// symbol tolerated.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The image an OpenAI `image_url` (or Responses `input_image`) names: a base64 `data:` URL,
/// decoded, or an `http(s)://` URL, counted without fetching. The error says why it is not an
/// image, in vLLM's words where vLLM has them.
pub(crate) fn image_of_url(url: &str) -> Result<Image, String> {
    let scheme = url.split_once(':').map_or("", |(s, _)| s);
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
        return Ok(remote(url));
    }
    if scheme.eq_ignore_ascii_case("file") {
        return Err("Cannot load local files without `--allowed-local-media-path`.".into());
    }
    if !scheme.eq_ignore_ascii_case("data") {
        return Err("The URL must be either a HTTP, data or file URL.".into());
    }
    let Some((header, data)) = url[scheme.len() + 1..].split_once(',') else {
        return Err("The data URL has no `,` before its data.".into());
    };
    if !header
        .rsplit(';')
        .next()
        .is_some_and(|t| t.eq_ignore_ascii_case("base64"))
    {
        return Err("Only base64 data URLs are supported for now.".into());
    }
    image_of_base64(data)
}

/// A remote image, counted as a [`REMOTE_IMAGE_SIDE`] square.
pub(crate) fn remote(url: &str) -> Image {
    let mut hasher = DefaultHasher::new();
    url.hash(&mut hasher);
    Image {
        width: REMOTE_IMAGE_SIDE,
        height: REMOTE_IMAGE_SIDE,
        hash: hasher.finish(),
    }
}

/// An image given as base64 (a data URL's data, Anthropic's `source.data`).
pub(crate) fn image_of_base64(data: &str) -> Result<Image, String> {
    let bytes = BASE64
        .decode(data)
        .map_err(|e| format!("The image data is not valid base64: {e}"))?;
    image_of_bytes(&bytes)
}

/// An image's size from its header: PNG, JPEG, WebP or GIF.
pub(crate) fn image_of_bytes(bytes: &[u8]) -> Result<Image, String> {
    let size = imagesize::blob_size(bytes).map_err(|e| {
        format!("Cannot identify the image: it is not a PNG, JPEG, WebP or GIF image ({e}).")
    })?;
    let side = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let (width, height) = (side(size.width), side(size.height));
    if width == 0 || height == 0 {
        return Err(format!(
            "The image is {width} × {height} pixels: it is empty."
        ));
    }
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    Ok(Image {
        width,
        height,
        hash: hasher.finish(),
    })
}

/// Test images built by hand, so the tests need no encoder.
#[cfg(test)]
pub(crate) mod samples {
    use base64::Engine as _;

    /// A complete, valid PNG: `width` × `height` grey pixels, 8-bit greyscale, its pixel data in
    /// stored (uncompressed) deflate blocks.
    pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
        let mut raw = Vec::new();
        for _ in 0..height {
            raw.push(0); // filter: none
            raw.extend(std::iter::repeat_n(0x80, width as usize));
        }
        let mut zlib = vec![0x78, 0x01];
        let mut blocks = raw.chunks(65_535).peekable();
        while let Some(block) = blocks.next() {
            zlib.push(u8::from(blocks.peek().is_none()));
            let len = block.len() as u16;
            zlib.extend(len.to_le_bytes());
            zlib.extend((!len).to_le_bytes());
            zlib.extend(block);
        }
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in &raw {
            a = (a + u32::from(byte)) % 65_521;
            b = (b + a) % 65_521;
        }
        zlib.extend(((b << 16) | a).to_be_bytes());
        let mut ihdr = Vec::new();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]); // 8-bit greyscale, deflate, no filter, no interlace
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &zlib), (b"IEND", &Vec::new())] {
            png.extend((data.len() as u32).to_be_bytes());
            let start = png.len();
            png.extend(kind);
            png.extend(data);
            let crc = crc32(&png[start..]);
            png.extend(crc.to_be_bytes());
        }
        png
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// The head of a baseline JPEG of `width` × `height` (SOI, JFIF APP0, SOF0), which is all a
    /// header reader looks at, then EOI.
    pub(crate) fn jpeg(width: u16, height: u16) -> Vec<u8> {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend([0xFF, 0xE0, 0x00, 0x10]);
        jpeg.extend(b"JFIF\0");
        jpeg.extend([1, 1, 0, 0, 1, 0, 1, 0, 0]);
        jpeg.extend([0xFF, 0xC0, 0x00, 0x11, 8]);
        jpeg.extend(height.to_be_bytes());
        jpeg.extend(width.to_be_bytes());
        jpeg.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        jpeg.extend([0xFF, 0xD9]);
        jpeg
    }

    /// A GIF of `width` × `height`: header, two-colour palette, image descriptor, and the pixel
    /// data of a single pixel (a header reader reads no further).
    pub(crate) fn gif(width: u16, height: u16) -> Vec<u8> {
        let mut gif = b"GIF89a".to_vec();
        gif.extend(width.to_le_bytes());
        gif.extend(height.to_le_bytes());
        gif.extend([0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF]);
        gif.extend([0x2C, 0, 0, 0, 0]);
        gif.extend(width.to_le_bytes());
        gif.extend(height.to_le_bytes());
        gif.extend([0, 2, 2, 0x44, 0x01, 0, 0x3B]);
        gif
    }

    /// The head of a lossless WebP (`VP8L`) of `width` × `height`.
    pub(crate) fn webp(width: u32, height: u32) -> Vec<u8> {
        let bits = (width - 1) | ((height - 1) << 14);
        let mut chunk = vec![0x2F];
        chunk.extend(bits.to_le_bytes());
        chunk.push(0);
        let mut webp = b"RIFF".to_vec();
        webp.extend((4 + 8 + chunk.len() as u32).to_le_bytes());
        webp.extend(b"WEBPVP8L");
        webp.extend((chunk.len() as u32).to_le_bytes());
        webp.extend(chunk);
        webp
    }

    pub(crate) fn base64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    pub(crate) fn data_url(media_type: &str, bytes: &[u8]) -> String {
        format!("data:{media_type};base64,{}", base64(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::samples::*;
    use super::*;

    #[test]
    fn one_token_per_28_pixel_patch_rounding_each_side_up() {
        assert_eq!(image_tokens(448, 448), 256);
        assert_eq!(image_tokens(449, 448), 17 * 16);
        assert_eq!(image_tokens(1, 1), 1);
        assert_eq!(image_tokens(28, 56), 2);
        assert_eq!(image_tokens(REMOTE_IMAGE_SIDE, REMOTE_IMAGE_SIDE), 361);
        assert_eq!(image_tokens(u32::MAX, u32::MAX), u32::MAX);
    }

    #[test]
    fn reads_sizes_of_the_four_formats() {
        let size = |bytes: Vec<u8>| {
            let image = image_of_bytes(&bytes).unwrap();
            (image.width, image.height)
        };
        assert_eq!(size(png(448, 300)), (448, 300));
        assert_eq!(size(jpeg(640, 480)), (640, 480));
        assert_eq!(size(gif(17, 9)), (17, 9));
        assert_eq!(size(webp(1024, 768)), (1024, 768));
        let url = data_url("image/png", &png(448, 448));
        let image = image_of_url(&url).unwrap();
        assert_eq!(image.tokens(), 256);
        // The same bytes are the same image; others are not.
        assert_eq!(image, image_of_url(&url).unwrap());
        assert_ne!(
            image.hash,
            image_of_url(&data_url("image/png", &png(448, 447)))
                .unwrap()
                .hash
        );
    }

    #[test]
    fn the_pngs_built_here_are_whole_files() {
        let bytes = png(3, 2);
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(bytes.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]));
        // A big one needs more than one stored block.
        assert_eq!(image_of_bytes(&png(448, 448)).unwrap().width, 448);
    }

    #[test]
    fn remote_urls_are_counted_unfetched_and_bad_data_refused() {
        let image = image_of_url("https://example.com/cat.jpg").unwrap();
        assert_eq!((image.width, image.height), (512, 512));
        assert_eq!(image_of_url("HTTP://example.com/a").unwrap().tokens(), 361);
        let err = |url: &str| image_of_url(url).unwrap_err();
        assert!(err("data:image/png;base64,%%%").contains("not valid base64"));
        assert!(err("data:image/png;base64,aGVsbG8=").contains("not a PNG, JPEG, WebP or GIF"));
        assert_eq!(
            err("data:text/plain,hello"),
            "Only base64 data URLs are supported for now."
        );
        assert_eq!(
            err("ftp://example.com/a.png"),
            "The URL must be either a HTTP, data or file URL."
        );
        assert!(err("file:///tmp/a.png").contains("--allowed-local-media-path"));
        assert!(err("data:image/png;base64").contains("no `,`"));
        assert!(err(&data_url("image/bmp", b"BM\0\0\0\0\0\0\0\0\0\0")).contains("Cannot identify"));
    }
}
