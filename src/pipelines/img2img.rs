//! Starting from an image: image-to-image (SDEdit, Meng et al. 2022; diffusers
//! `StableDiffusionImg2ImgPipeline`) and inpainting (`StableDiffusionInpaintPipeline`: a
//! 9-channel inpainting U-Net, or mask blending for an ordinary U-Net), shared by the latent
//! pipeline ([`super::stable_diffusion`]) and the pixel one ([`super::ddpm`]).
//!
//! What is shared is the preparation, as diffusers does it: `strength` picks how much of the
//! schedule runs (`get_timesteps`), the mask is binarized at 0.5 (`VaeImageProcessor` with
//! `do_binarize`), the masked image keeps what the mask does not cover, and the mask is resized
//! to the latents with nearest-neighbour sampling (`F.interpolate`'s default).

use crate::error::{Error, Result};

/// The image a run starts from, and optionally what to repaint.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    /// `[channels, height, width]` values in [-1, 1] (one image, used for every item).
    pub image: Vec<f32>,
    /// `[channels, height, width]` of `image`.
    pub shape: [usize; 3],
    /// How much of the schedule runs: 1 starts from pure noise, 0.3 keeps most of the image.
    /// Must be in (0, 1].
    pub strength: f64,
    /// `[height, width]` values in [0, 1]: where >= 0.5 the image is repainted, elsewhere kept.
    pub mask: Option<Vec<f32>>,
}

impl ImageInput {
    /// Checks the values against the size the run makes (`channels`, `[height, width]`).
    pub fn check(&self, channels: usize, hw: [usize; 2]) -> Result<()> {
        let [c, h, w] = self.shape;
        if c != channels || [h, w] != hw {
            return Err(Error::invalid(format!(
                "init image: expected {channels} channels of {}x{} (the image size of this run), found {c} channels of {h}x{w}",
                hw[0], hw[1]
            )));
        }
        if self.image.len() != c * h * w {
            return Err(Error::invalid(format!(
                "init image: expected {} values ({c}x{h}x{w}), found {}",
                c * h * w,
                self.image.len()
            )));
        }
        if let Some(i) = self.image.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "init image: expected finite values, found {} at index {i}",
                self.image[i]
            )));
        }
        if !(self.strength > 0.0 && self.strength <= 1.0) {
            return Err(Error::invalid(format!(
                "strength: expected a number in (0, 1], found {}",
                self.strength
            )));
        }
        if let Some(m) = &self.mask {
            if m.len() != h * w {
                return Err(Error::invalid(format!(
                    "mask: expected one channel of {h}x{w} ({} values, the init image's size), found {} values",
                    h * w,
                    m.len()
                )));
            }
            if let Some(i) = m.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid(format!(
                    "mask: expected values in [0, 1], found {} at index {i}",
                    m[i]
                )));
            }
        }
        Ok(())
    }

    /// The binarized mask (1 = repaint), `[height, width]`.
    pub fn binary_mask(&self) -> Option<Vec<f32>> {
        self.mask.as_ref().map(|m| binarize(m))
    }

    /// The image with the repainted region zeroed (diffusers: `image * (mask < 0.5)`), or the
    /// image itself without a mask.
    pub fn masked_image(&self) -> Vec<f32> {
        let [c, h, w] = self.shape;
        match &self.mask {
            None => self.image.clone(),
            Some(m) => (0..c * h * w)
                .map(|i| {
                    if m[i % (h * w)] < 0.5 {
                        self.image[i]
                    } else {
                        0.0
                    }
                })
                .collect(),
        }
    }
}

/// diffusers' `get_timesteps`: of `n` scheduled steps, the index of the first one a run at
/// `strength` takes (`n - floor(n * strength)`). Refuses a strength that leaves no step.
pub fn start_index(n: usize, strength: f64) -> Result<usize> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(Error::invalid(format!(
            "strength: expected a number in (0, 1], found {strength}"
        )));
    }
    let init = ((n as f64 * strength) as usize).min(n);
    if init == 0 {
        return Err(Error::invalid(format!(
            "strength {strength} with {n} steps: expected at least one step to run (strength >= {:.4}), found none",
            1.0 / n as f64
        )));
    }
    Ok(n - init)
}

/// `m >= 0.5 -> 1`, else 0 (diffusers' `VaeImageProcessor.binarize`).
pub fn binarize(m: &[f32]) -> Vec<f32> {
    m.iter()
        .map(|&v| if v >= 0.5 { 1.0 } else { 0.0 })
        .collect()
}

/// Nearest-neighbour resize of one `[h, w]` channel to `[oh, ow]`, as PyTorch's
/// `F.interpolate(mode="nearest")`: source index `floor(dst * in / out)`.
pub fn resize_nearest(m: &[f32], [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Vec<f32> {
    let (sy, sx) = (h as f64 / oh as f64, w as f64 / ow as f64);
    let mut out = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        let iy = ((y as f64 * sy).floor() as usize).min(h - 1);
        for x in 0..ow {
            let ix = ((x as f64 * sx).floor() as usize).min(w - 1);
            out.push(m[iy * w + ix]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_index_follows_get_timesteps() {
        assert_eq!(start_index(50, 0.8).unwrap(), 10);
        assert_eq!(start_index(50, 1.0).unwrap(), 0);
        assert_eq!(start_index(4, 0.3).unwrap(), 3);
        let e = start_index(4, 0.2).unwrap_err().to_string();
        assert!(e.contains("strength >= 0.2500"), "{e}");
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            let e = start_index(10, bad).unwrap_err().to_string();
            assert!(e.contains("expected a number in (0, 1]"), "{e}");
        }
    }

    #[test]
    fn nearest_resize_matches_pytorch() {
        // F.interpolate(arange(16).view(1,1,4,4), size=(2,3)) = [[0,1,2],[8,9,10]]
        let m: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(
            resize_nearest(&m, [4, 4], [2, 3]),
            vec![0.0, 1.0, 2.0, 8.0, 9.0, 10.0]
        );
        // Upsampling repeats.
        assert_eq!(
            resize_nearest(&[1.0, 2.0], [1, 2], [1, 4]),
            vec![1.0, 1.0, 2.0, 2.0]
        );
    }

    #[test]
    fn masked_image_keeps_what_the_mask_does_not_cover() {
        let input = ImageInput {
            image: vec![0.5; 2 * 2 * 2],
            shape: [2, 2, 2],
            strength: 1.0,
            mask: Some(vec![0.0, 0.49, 0.5, 1.0]),
        };
        assert_eq!(input.binary_mask().unwrap(), vec![0.0, 0.0, 1.0, 1.0]);
        assert_eq!(
            input.masked_image(),
            vec![0.5, 0.5, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0]
        );
        input.check(2, [2, 2]).unwrap();
        let e = input.check(3, [2, 2]).unwrap_err().to_string();
        assert!(
            e.contains("expected 3 channels of 2x2") && e.contains("found 2 channels"),
            "{e}"
        );
        let bad = ImageInput {
            mask: Some(vec![0.0; 3]),
            ..input
        };
        let e = bad.check(2, [2, 2]).unwrap_err().to_string();
        assert!(e.contains("mask: expected one channel of 2x2"), "{e}");
    }
}
