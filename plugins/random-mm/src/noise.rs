//! Random RGB noise encoded as JPEG, as vLLM's `random-mm` makes its images (uniform random
//! pixels saved by PIL at its default quality, 75, with 4:2:0 chroma). Noise is the worst case
//! for compression, so the bytes on the wire are as large as such an image gets.
//!
//! The encoder asks for the pixels a row at a time and each row is drawn from its own seed, so
//! an image is never held as raw pixels (a 720x1280 one would be 2.7 MB) and the same seed gives
//! the same bytes whatever order the rows are asked in.

use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, rgb_to_ycbcr};
use llmb_plugin_sdk::SplitMix64;

/// PIL's default JPEG quality (below 90 the encoder subsamples chroma 4:2:0, as PIL does).
pub const QUALITY: u8 = 75;

/// Noise pixels of one image, generated row by row.
struct Noise {
    width: u16,
    height: u16,
    seed: u64,
}

impl Noise {
    /// Row `y`'s own stream: its seed is mixed so that neighbouring rows do not share values.
    fn row_rng(&self, y: u16) -> SplitMix64 {
        let mixed = self.seed ^ (u64::from(y) + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        SplitMix64::new(SplitMix64::new(mixed).next_u64())
    }
}

impl ImageBuffer for Noise {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let mut rng = self.row_rng(y);
        let mut word = 0u64;
        let mut left = 0;
        let mut byte = move || {
            if left == 0 {
                word = rng.next_u64();
                left = 8;
            }
            let b = word as u8;
            word >>= 8;
            left -= 1;
            b
        };
        for _ in 0..self.width {
            let (l, cb, cr) = rgb_to_ycbcr(byte(), byte(), byte());
            buffers[0].push(l);
            buffers[1].push(cb);
            buffers[2].push(cr);
        }
    }
}

/// A `width` x `height` JPEG of RGB noise drawn from `seed`; sides must be 1 to 65535.
pub fn jpeg(width: u32, height: u32, seed: u64) -> Result<Vec<u8>, String> {
    let side = |n: u32| u16::try_from(n).ok().filter(|&n| n > 0);
    let (Some(w), Some(h)) = (side(width), side(height)) else {
        return Err(format!(
            "cannot make a {width}x{height} JPEG: sides are 1 to 65535 pixels"
        ));
    };
    // Noise at quality 75 takes about 0.6 bytes a pixel: reserve that much up front.
    let mut out = Vec::with_capacity(width as usize * height as usize * 2 / 3 + 1024);
    Encoder::new(&mut out, QUALITY)
        .encode_image(Noise {
            width: w,
            height: h,
            seed,
        })
        .map_err(|e| format!("cannot encode a {width}x{height} JPEG: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (u16, u16, Vec<u8>) {
        let mut decoder = jpeg_decoder::Decoder::new(bytes);
        let pixels = decoder.decode().expect("a valid JPEG");
        let info = decoder.info().unwrap();
        assert_eq!(info.pixel_format, jpeg_decoder::PixelFormat::RGB24);
        (info.width, info.height, pixels)
    }

    #[test]
    fn jpegs_decode_back_to_their_size() {
        for (w, h) in [(1, 1), (16, 8), (17, 33), (256, 256), (1280, 720)] {
            let bytes = jpeg(w, h, 42).unwrap();
            assert_eq!(&bytes[..2], [0xFF, 0xD8], "SOI");
            let (dw, dh, pixels) = decode(&bytes);
            assert_eq!((dw as u32, dh as u32), (w, h));
            assert_eq!(pixels.len(), (w * h * 3) as usize);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let a = jpeg(64, 48, 7).unwrap();
        assert_eq!(a, jpeg(64, 48, 7).unwrap());
        assert_ne!(a, jpeg(64, 48, 8).unwrap());
    }

    #[test]
    fn pixels_are_noise_and_rows_differ() {
        let (w, _, pixels) = decode(&jpeg(256, 256, 1).unwrap());
        let row = w as usize * 3;
        let mean = pixels.iter().map(|&p| p as f64).sum::<f64>() / pixels.len() as f64;
        assert!((110.0..145.0).contains(&mean), "{mean}");
        let spread =
            pixels.iter().map(|&p| (p as f64 - mean).abs()).sum::<f64>() / pixels.len() as f64;
        assert!(spread > 40.0, "{spread}");
        for y in 0..255 {
            assert_ne!(
                pixels[y * row..(y + 1) * row],
                pixels[(y + 1) * row..(y + 2) * row]
            );
        }
    }

    #[test]
    fn a_noise_image_is_as_large_as_vllm_sends() {
        // Noise does not compress: a 720x1280 image is hundreds of kilobytes, 256x256 tens.
        let big = jpeg(1280, 720, 5).unwrap().len();
        assert!((250_000..900_000).contains(&big), "{big}");
        let small = jpeg(256, 256, 5).unwrap().len();
        assert!((20_000..80_000).contains(&small), "{small}");
    }

    #[test]
    fn sides_out_of_range_are_refused() {
        for (w, h) in [(0, 5), (5, 0), (65_536, 1)] {
            let err = jpeg(w, h, 1).unwrap_err();
            assert!(err.contains("1 to 65535"), "{err}");
        }
    }
}
