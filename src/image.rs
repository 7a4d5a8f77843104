//! Samples in [-1, 1] -> 8-bit pixels, as diffusers' `numpy_to_pil` does:
//! `round(clamp(x / 2 + 0.5, 0, 1) * 255)`. And PNG grids for the CLI.

use crate::error::{Error, Result};

/// One image's pixels as RGBA (`width * height * 4` bytes), from NCHW values of image `index`.
/// One channel is shown as grey; three as RGB; other counts show their first three channels.
pub fn to_rgba(values: &[f32], shape: [usize; 4], index: usize) -> Result<Vec<u8>> {
    let [b, c, h, w] = shape;
    if index >= b || values.len() != b * c * h * w || c == 0 {
        return Err(Error::invalid(format!(
            "image {index} of a {b}x{c}x{h}x{w} batch: expected {} values, found {}",
            b * c * h * w,
            values.len()
        )));
    }
    let plane = h * w;
    let img = &values[index * c * plane..(index + 1) * c * plane];
    let to_u8 = |v: f32| ((v / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
    let mut out = Vec::with_capacity(plane * 4);
    for p in 0..plane {
        let ch = |k: usize| to_u8(img[k.min(c - 1) * plane + p]);
        if c < 3 {
            let g = ch(0);
            out.extend([g, g, g, 255]);
        } else {
            out.extend([ch(0), ch(1), ch(2), 255]);
        }
    }
    Ok(out)
}

/// All images of a batch tiled into one RGBA grid with `cols` columns and a 2-pixel gap.
pub fn grid_rgba(
    values: &[f32],
    shape: [usize; 4],
    cols: usize,
) -> Result<(Vec<u8>, usize, usize)> {
    let [b, _, h, w] = shape;
    let cols = cols.clamp(1, b.max(1));
    let rows = b.div_ceil(cols);
    let gap = 2;
    let gw = cols * w + (cols - 1) * gap;
    let gh = rows * h + (rows - 1) * gap;
    let mut out = vec![255u8; gw * gh * 4];
    for i in 0..b {
        let img = to_rgba(values, shape, i)?;
        let (ox, oy) = ((i % cols) * (w + gap), (i / cols) * (h + gap));
        for y in 0..h {
            let dst = ((oy + y) * gw + ox) * 4;
            out[dst..dst + w * 4].copy_from_slice(&img[y * w * 4..(y + 1) * w * 4]);
        }
    }
    Ok((out, gw, gh))
}

/// Encodes RGBA pixels as a PNG file.
pub fn encode_png(rgba: &[u8], width: usize, height: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .map_err(|e| Error::io(format!("PNG header: {e}")))?;
        writer
            .write_image_data(rgba)
            .map_err(|e| Error::io(format!("PNG data: {e}")))?;
    }
    Ok(buf)
}

/// A decoded 8-bit image: `width * height` pixels of `channels` bytes (1 grey, 2 grey+alpha,
/// 3 RGB, 4 RGBA).
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    pub data: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

/// Decodes a PNG (any colour type; 16-bit and palette images are expanded to 8 bits).
pub fn decode_png(bytes: &[u8]) -> Result<Pixels> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .map_err(|e| Error::format(format!("PNG: expected a PNG image, found {e}")))?;
    let size = reader.output_buffer_size().ok_or_else(|| {
        Error::format("PNG: expected an image size that fits in memory, found a larger one")
    })?;
    let mut data = vec![0u8; size];
    let info = reader
        .next_frame(&mut data)
        .map_err(|e| Error::format(format!("PNG: expected image data, found {e}")))?;
    data.truncate(info.buffer_size());
    Ok(Pixels {
        width: info.width as usize,
        height: info.height as usize,
        channels: info.color_type.samples(),
        data,
    })
}

impl Pixels {
    /// The RGB planes, `[3, height, width]` in [-1, 1] (`x / 127.5 - 1`, as diffusers'
    /// `VaeImageProcessor` normalizes); grey images give three equal planes, alpha is dropped.
    pub fn to_rgb_planes(&self) -> Vec<f32> {
        let plane = self.width * self.height;
        let mut out = vec![0f32; 3 * plane];
        for p in 0..plane {
            let px = &self.data[p * self.channels..(p + 1) * self.channels];
            for c in 0..3 {
                let v = if self.channels >= 3 { px[c] } else { px[0] };
                out[c * plane + p] = v as f32 / 127.5 - 1.0;
            }
        }
        out
    }

    /// One grey plane in [0, 1], `[height, width]`: PIL's `convert("L")` luminance
    /// (`(299 R + 587 G + 114 B) / 1000`) for colour images, as diffusers reads masks.
    pub fn to_grey_plane(&self) -> Vec<f32> {
        (0..self.width * self.height)
            .map(|p| {
                let px = &self.data[p * self.channels..(p + 1) * self.channels];
                let l = if self.channels >= 3 {
                    (px[0] as u32 * 299 + px[1] as u32 * 587 + px[2] as u32 * 114) / 1000
                } else {
                    px[0] as u32
                };
                l as f32 / 255.0
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_gives_planes_and_grey() {
        // 2x1 RGBA: pure red, then white.
        let rgba = [255, 0, 0, 255, 255, 255, 255, 255];
        let px = decode_png(&encode_png(&rgba, 2, 1).unwrap()).unwrap();
        assert_eq!((px.width, px.height, px.channels), (2, 1, 4));
        assert_eq!(px.to_rgb_planes(), vec![1.0, 1.0, -1.0, 1.0, -1.0, 1.0]);
        let grey = px.to_grey_plane();
        assert!(
            (grey[0] - 76.0 / 255.0).abs() < 1e-6 && grey[1] == 1.0,
            "{grey:?}"
        );
        let e = decode_png(b"not a png").unwrap_err().to_string();
        assert!(e.contains("expected a PNG image"), "{e}");
    }
}
