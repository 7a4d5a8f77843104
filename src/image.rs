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
