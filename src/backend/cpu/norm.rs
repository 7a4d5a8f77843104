//! GroupNorm (+ SiLU) and SiLU on host memory, with a vectorisable exponential.

use burn::tensor::Tensor;

use super::{on_cpu_f32, take_host};

/// `e^x` in f32 to within a few ulp: Cody-Waite reduction `x = n ln 2 + r`, `|r| <= ln2 / 2`,
/// and the degree-7 Taylor polynomial of `e^r` (truncation error < 6e-9 relative), scaled by
/// `2^n` through the exponent bits. Inputs are clamped to [-87.3, 88.3] (the normal range).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| < 2^8.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `x * sigmoid(x)` written as `x / (1 + e^-x)`.
#[inline(always)]
pub fn silu_f32(x: f32) -> f32 {
    x / (1.0 + exp_f32(-x))
}

/// Whether [`silu`] runs on `x` (an f32 flex tensor).
pub fn silu_applies<const D: usize>(x: &Tensor<D>) -> bool {
    on_cpu_f32(x)
}

/// SiLU in place on a flex tensor ([`silu_applies`]).
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    let (data, ()) = take_host(x, |v| {
        for e in v.iter_mut() {
            *e = silu_f32(*e);
        }
    });
    Tensor::from_data(data, &device)
}

/// Whether [`group_norm`] runs on `x` with `groups` groups and `channels` affine parameters.
pub fn group_norm_applies(x: &Tensor<4>, groups: usize, channels: usize) -> bool {
    let [_, c, _, _] = x.dims();
    on_cpu_f32(x) && groups != 0 && c % groups == 0 && c == channels
}

/// GroupNorm over `[B, C, H, W]` with per-channel affine (host values `gamma`, `beta`),
/// optionally followed by SiLU, on a flex tensor ([`group_norm_applies`]). Mean and biased
/// variance are accumulated in f64 (two passes over each group, as torch does in spirit), then
/// each channel is one multiply-add (+ SiLU).
pub fn group_norm(
    x: Tensor<4>,
    gamma: &[f32],
    beta: &[f32],
    groups: usize,
    eps: f64,
    with_silu: bool,
) -> Tensor<4> {
    let [_, c, h, w] = x.dims();
    let hw = h * w;
    let cpg = c / groups;
    let n = (cpg * hw) as f64;
    let device = x.device();
    let normalise = |v: &mut [f32]| {
        for sample in v.chunks_exact_mut(c * hw) {
            for (g, group) in sample.chunks_exact_mut(cpg * hw).enumerate() {
                let mean = group.iter().map(|&e| e as f64).sum::<f64>() / n;
                let var = group
                    .iter()
                    .map(|&e| {
                        let d = e as f64 - mean;
                        d * d
                    })
                    .sum::<f64>()
                    / n;
                let rstd = 1.0 / (var + eps).sqrt();
                for (ci, plane) in group.chunks_exact_mut(hw).enumerate() {
                    let ch = g * cpg + ci;
                    let scale = (rstd * gamma[ch] as f64) as f32;
                    let shift = (beta[ch] as f64 - mean * rstd * gamma[ch] as f64) as f32;
                    if with_silu {
                        for e in plane.iter_mut() {
                            *e = silu_f32(*e * scale + shift);
                        }
                    } else {
                        for e in plane.iter_mut() {
                            *e = *e * scale + shift;
                        }
                    }
                }
            }
        }
    };
    let (data, ()) = take_host(x, normalise);
    Tensor::from_data(data, &device)
}
