//! Sinusoidal timestep features and the timestep MLP: diffusers `models/embeddings.py`
//! (`get_timestep_embedding`, `Timesteps`, `TimestepEmbedding`).

use burn::tensor::{Device, Tensor, TensorData};

use super::layers::{silu, Linear};
use crate::error::Result;
use crate::weights::TensorSource;

/// `Timesteps(num_channels, flip_sin_to_cos, downscale_freq_shift)`: the sinusoidal features
/// of DDPM (Ho et al. 2020, after the Transformer's positional encoding).
#[derive(Debug, Clone)]
pub struct Timesteps {
    pub num_channels: usize,
    pub flip_sin_to_cos: bool,
    pub downscale_freq_shift: f64,
}

impl Timesteps {
    /// Features for each timestep, `[B] -> [B, num_channels]`, computed on the CPU the way
    /// torch does (frequencies and products rounded to f32) so the numbers agree with diffusers.
    pub fn features(&self, timesteps: &[f32]) -> Vec<f32> {
        let half = self.num_channels / 2;
        let max_period = 10000f32;
        let denom = (half as f64 - self.downscale_freq_shift) as f32;
        let freqs: Vec<f32> = (0..half)
            .map(|i| ((-(max_period.ln()) * i as f32) / denom).exp())
            .collect();
        let mut out = Vec::with_capacity(timesteps.len() * self.num_channels);
        for &t in timesteps {
            let args: Vec<f32> = freqs.iter().map(|&f| t * f).collect();
            let sin = args.iter().map(|&a| (a as f64).sin() as f32);
            let cos = args.iter().map(|&a| (a as f64).cos() as f32);
            let (first, second): (Vec<f32>, Vec<f32>) = if self.flip_sin_to_cos {
                (cos.collect(), sin.collect())
            } else {
                (sin.collect(), cos.collect())
            };
            out.extend(first);
            out.extend(second);
            if self.num_channels % 2 == 1 {
                out.push(0.0);
            }
        }
        out
    }

    pub fn forward(&self, timesteps: &[f32], device: &Device) -> Tensor<2> {
        let data = TensorData::new(
            self.features(timesteps),
            [timesteps.len(), self.num_channels],
        );
        Tensor::from_data(data, device)
    }
}

/// `TimestepEmbedding`: linear_1 -> SiLU -> linear_2.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        d_in: usize,
        d_emb: usize,
    ) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::load(src, &format!("{prefix}.linear_1"), d_in, d_emb)?,
            linear_2: Linear::load(src, &format!("{prefix}.linear_2"), d_emb, d_emb)?,
        })
    }

    /// `[B, d_in] -> [B, d_emb]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}

/// One timestep per batch item: `timesteps` as given (one each), or its single value repeated.
pub fn per_item_timesteps(timesteps: &[f32], b: usize) -> Result<Vec<f32>> {
    match timesteps.len() {
        1 => Ok(vec![timesteps[0]; b]),
        n if n == b => Ok(timesteps.to_vec()),
        n => Err(crate::error::Error::invalid(format!(
            "timesteps: expected 1 or {b} (the batch size) values, found {n}"
        ))),
    }
}
