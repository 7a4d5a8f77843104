//! Seeded Gaussian noise that gives the same numbers on every platform (native and wasm32):
//! ChaCha20 for the bits, Box-Muller in f64 with `libm` (not the platform's libm) for the
//! normals, rounded to f32.
//!
//! Each batch item has its own ChaCha stream (stream id = its index in the batch), so image
//! `i` of a run depends only on the seed and `i`, not on the batch size. Within a stream the
//! initial noise `x_T` comes first (C*H*W values, NCHW order), then each step's noise in turn.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// A standard-normal generator for one batch item.
#[derive(Debug, Clone)]
pub struct NoiseStream {
    rng: ChaCha20Rng,
    spare: Option<f64>,
}

impl NoiseStream {
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Self { rng, spare: None }
    }

    /// A uniform number in the open interval (0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// One standard-normal value (Box-Muller: two uniforms give two normals).
    pub fn next_normal(&mut self) -> f32 {
        if let Some(z) = self.spare.take() {
            return z as f32;
        }
        let u1 = self.uniform();
        let u2 = self.uniform();
        let r = libm::sqrt(-2.0 * libm::log(u1));
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * libm::sin(theta));
        (r * libm::cos(theta)) as f32
    }

    pub(crate) fn fill(&mut self, out: &mut [f32]) {
        out.iter_mut().for_each(|v| *v = self.next_normal());
    }
}

/// Noise for a whole batch: one [`NoiseStream`] per item.
#[derive(Debug, Clone)]
pub struct BatchNoise {
    streams: Vec<NoiseStream>,
}

impl BatchNoise {
    pub fn new(seed: u64, batch: usize) -> Self {
        Self {
            streams: (0..batch as u64)
                .map(|i| NoiseStream::new(seed, i))
                .collect(),
        }
    }

    /// `batch * per_item` values, item after item (NCHW when `per_item = C*H*W`).
    pub fn sample(&mut self, per_item: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.streams.len() * per_item];
        for (s, chunk) in self.streams.iter_mut().zip(out.chunks_mut(per_item.max(1))) {
            s.fill(chunk);
        }
        out
    }
}
