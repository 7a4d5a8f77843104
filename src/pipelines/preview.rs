//! Cheap previews of latents while a latent pipeline runs: the predicted x_0 decoded by a tiny
//! autoencoder (TAESD, diffusers' `AutoencoderTiny`) when the pipeline carries one, else a
//! per-pixel linear map from latent channels to RGB ([`LatentRgb`]), fitted when the file is
//! made (no diffusers counterpart: the full VAE decode costs as much as several U-Net steps,
//! the projection a few multiply-adds per latent pixel). The full VAE decodes only the final
//! frame, or a preview when asked.

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::autoencoders::{AutoencoderKL, AutoencoderTiny};

/// `rgb = weight · z + bias` per latent pixel, with `z` the latents as the U-Net sees them
/// (scaled by the VAE's `scaling_factor`), `rgb` in about [-1, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentRgb {
    /// `[3][latent_channels]`.
    pub weight: Vec<Vec<f32>>,
    pub bias: [f32; 3],
    /// RMS error of the fit on its own images, in [-1, 1] units (how far a preview is from the
    /// downscaled image; stored so `info` can say how good the preview is).
    pub fit_rms: f32,
    /// RMS error of the best constant (the mean colour) on the same images: the fit is worth
    /// something when `fit_rms` is well below it.
    pub baseline_rms: f32,
}

/// How a latent run shows its progress.
#[derive(Debug, Clone)]
pub enum Preview {
    /// TAESD: a full-resolution preview for a few percent of the VAE's cost.
    Tiny(Box<AutoencoderTiny>),
    /// A latent-resolution preview for almost nothing.
    Linear(LatentRgb),
}

impl Preview {
    /// The preview image of `latents` (U-Net space): `[B, 3, H, W]` in [-1, 1], at full
    /// resolution for TAESD and at latent resolution for the linear map.
    pub fn show(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        match self {
            Preview::Tiny(tiny) => Ok(tiny.decode(latents).clamp(-1.0, 1.0)),
            Preview::Linear(map) => map.project(latents),
        }
    }
}

impl LatentRgb {
    /// Checks the map against the latent channel count it will be applied to.
    pub fn check(&self, latent_channels: usize) -> Result<()> {
        let ok = self.weight.len() == 3
            && self.weight.iter().all(|r| r.len() == latent_channels)
            && self
                .weight
                .iter()
                .flatten()
                .chain(&self.bias)
                .all(|x| x.is_finite());
        if !ok {
            return Err(Error::format(format!(
                "latent_rgb: expected a 3x{latent_channels} finite weight and 3 biases, found {}x{}",
                self.weight.len(),
                self.weight.first().map_or(0, Vec::len)
            )));
        }
        Ok(())
    }

    /// Applies the map: `[B, C, h, w]` latents -> `[B, 3, h, w]` in [-1, 1].
    pub fn project(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        let [_, c, _, _] = latents.dims();
        self.check(c)?;
        let device = latents.device();
        let w: Vec<f32> = self.weight.iter().flatten().copied().collect();
        let w = Tensor::<2>::from_data(TensorData::new(w, [3, c]), &device);
        let b = Tensor::<4>::from_data(TensorData::new(self.bias.to_vec(), [1, 3, 1, 1]), &device);
        let [bsz, _, h, wd] = latents.dims();
        // [B, C, h*w] -> [B, 3, h*w] as one matmul per image.
        let z = latents.reshape([bsz, c, h * wd]);
        let rgb = w.unsqueeze::<3>().repeat_dim(0, bsz).matmul(z);
        Ok((rgb.reshape([bsz, 3, h, wd]) + b).clamp(-1.0, 1.0))
    }

    /// Fits the map for `vae`: synthetic images (smooth colour fields, colour patches, stripes)
    /// go through the encoder (the distribution's mean, times `scaling_factor`), and the map is
    /// the least-squares fit from each latent pixel to the mean colour of the `f x f` image
    /// patch it covers (`f` the VAE's downscale factor). `side` is the image size in pixels.
    pub fn fit(vae: &AutoencoderKL, side: usize, images: usize) -> Result<Self> {
        let f = vae.config.downscale_factor();
        if side % f != 0 || side < f {
            return Err(Error::invalid(format!(
                "latent_rgb fit: expected an image side divisible by {f}, found {side}"
            )));
        }
        let device = vae.device().clone();
        let pixels = synthetic_images(images, side);
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels.clone(), [images, 3, side, side]),
            &device,
        );
        let z = vae.encode(x).mean * vae.config.scaling_factor;
        let c = z.dims()[1];
        let zs = super::read_back(z)?;
        let s = side / f;
        // Rows: one per latent pixel, [z_0 .. z_{c-1}, 1]; targets: the patch's mean colour.
        let n = images * s * s;
        let mut rows = Vec::with_capacity(n);
        let mut targets = Vec::with_capacity(n);
        for i in 0..images {
            for y in 0..s {
                for xx in 0..s {
                    let mut row: Vec<f64> = (0..c)
                        .map(|k| zs[((i * c + k) * s + y) * s + xx] as f64)
                        .collect();
                    row.push(1.0);
                    rows.push(row);
                    let mut rgb = [0f64; 3];
                    for (ch, v) in rgb.iter_mut().enumerate() {
                        let mut acc = 0.0;
                        for dy in 0..f {
                            for dx in 0..f {
                                acc += pixels
                                    [((i * 3 + ch) * side + y * f + dy) * side + xx * f + dx]
                                    as f64;
                            }
                        }
                        *v = acc / (f * f) as f64;
                    }
                    targets.push(rgb);
                }
            }
        }
        let coef = least_squares(&rows, &targets, 1e-6)?;
        let mean: [f64; 3] =
            [0, 1, 2].map(|ch| targets.iter().map(|t| t[ch]).sum::<f64>() / n as f64);
        let baseline: f64 = targets
            .iter()
            .flat_map(|t| (0..3).map(move |ch| (t[ch] - mean[ch]).powi(2)))
            .sum();
        let mut sq = 0.0;
        for (row, t) in rows.iter().zip(&targets) {
            for ch in 0..3 {
                let p: f64 = row.iter().zip(&coef).map(|(a, w)| a * w[ch]).sum();
                sq += (p.clamp(-1.0, 1.0) - t[ch]).powi(2);
            }
        }
        Ok(Self {
            weight: (0..3)
                .map(|ch| (0..c).map(|k| coef[k][ch] as f32).collect())
                .collect(),
            bias: [0, 1, 2].map(|ch| coef[c][ch] as f32),
            fit_rms: (sq / (3 * n) as f64).sqrt() as f32,
            baseline_rms: (baseline / (3 * n) as f64).sqrt() as f32,
        })
    }
}

/// `images` deterministic RGB images `[images, 3, side, side]` in [-1, 1]: smooth gradients,
/// low-frequency waves and flat colour patches, the colours a generator paints with.
fn synthetic_images(images: usize, side: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(images * 3 * side * side);
    for i in 0..images {
        for ch in 0..3 {
            let phase = (i * 3 + ch) as f32 * 1.7;
            let fx = 1.0 + ((i + ch) % 3) as f32;
            let fy = 1.0 + ((i * 2 + ch) % 4) as f32;
            for y in 0..side {
                for x in 0..side {
                    let (u, v) = (x as f32 / side as f32, y as f32 / side as f32);
                    let value = match i % 3 {
                        // smooth waves
                        0 => {
                            (std::f32::consts::TAU * (fx * u + phase)).sin() * 0.5
                                + (std::f32::consts::TAU * (fy * v - phase)).cos() * 0.4
                        }
                        // gradients
                        1 => (u * fx - v * fy + phase).sin() * 0.9,
                        // flat patches on a 4x4 grid
                        _ => {
                            let cell = (x * 4 / side) + 4 * (y * 4 / side);
                            ((cell as f32 * 2.3 + phase).sin()) * 0.9
                        }
                    };
                    out.push(value.clamp(-1.0, 1.0));
                }
            }
        }
    }
    out
}

/// Ridge least squares `min |A w - t|^2 + lambda |w|^2` by the normal equations (A is tall and
/// thin: one row per latent pixel, latent_channels + 1 columns). Returns `w[col][target]`.
fn least_squares(rows: &[Vec<f64>], targets: &[[f64; 3]], lambda: f64) -> Result<Vec<[f64; 3]>> {
    let m = rows.first().map_or(0, Vec::len);
    let mut ata = vec![vec![0f64; m]; m];
    let mut atb = vec![[0f64; 3]; m];
    for (row, t) in rows.iter().zip(targets) {
        for i in 0..m {
            for j in 0..m {
                ata[i][j] += row[i] * row[j];
            }
            for ch in 0..3 {
                atb[i][ch] += row[i] * t[ch];
            }
        }
    }
    for (i, r) in ata.iter_mut().enumerate() {
        r[i] += lambda * rows.len() as f64;
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..m {
        let pivot = (col..m)
            .max_by(|&a, &b| ata[a][col].abs().total_cmp(&ata[b][col].abs()))
            .unwrap_or(col);
        if ata[pivot][col].abs() < 1e-12 || !ata[pivot][col].is_finite() {
            return Err(Error::invalid(
                "latent_rgb fit: expected latents that vary, found a singular system (the VAE encodes every image alike)",
            ));
        }
        ata.swap(col, pivot);
        atb.swap(col, pivot);
        let (pivot_row, pivot_rhs) = (ata[col].clone(), atb[col]);
        for r in col + 1..m {
            let k = ata[r][col] / pivot_row[col];
            for (a, p) in ata[r][col..].iter_mut().zip(&pivot_row[col..]) {
                *a -= k * p;
            }
            for (b, p) in atb[r].iter_mut().zip(pivot_rhs) {
                *b -= k * p;
            }
        }
    }
    let mut w = vec![[0f64; 3]; m];
    for col in (0..m).rev() {
        for ch in 0..3 {
            let s: f64 = (col + 1..m).map(|c| ata[col][c] * w[c][ch]).sum();
            w[col][ch] = (atb[col][ch] - s) / ata[col][col];
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_an_exact_linear_map() {
        // t = 2 a - b + 0.5 (and two other targets) from 50 rows.
        let rows: Vec<Vec<f64>> = (0..50)
            .map(|i| vec![(i as f64 * 0.37).sin(), (i as f64 * 0.91).cos(), 1.0])
            .collect();
        let targets: Vec<[f64; 3]> = rows
            .iter()
            .map(|r| [2.0 * r[0] - r[1] + 0.5, r[1], -r[0] + 0.1])
            .collect();
        let w = least_squares(&rows, &targets, 0.0).unwrap();
        let want = [[2.0, 0.0, -1.0], [-1.0, 1.0, 0.0], [0.5, 0.0, 0.1]];
        for (got, want) in w.iter().zip(want) {
            for ch in 0..3 {
                assert!((got[ch] - want[ch]).abs() < 1e-9, "{w:?}");
            }
        }
    }

    #[test]
    fn least_squares_refuses_constant_inputs() {
        let rows = vec![vec![1.0, 1.0]; 10];
        let targets = vec![[0.0; 3]; 10];
        let e = least_squares(&rows, &targets, 0.0).unwrap_err();
        assert!(e.to_string().contains("singular"), "{e}");
    }

    #[test]
    fn synthetic_images_stay_in_range_and_vary() {
        let v = synthetic_images(3, 16);
        assert_eq!(v.len(), 3 * 3 * 16 * 16);
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(var > 0.05, "variance {var}");
    }
}
