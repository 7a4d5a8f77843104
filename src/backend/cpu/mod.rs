//! Kernels for the CPU (flex) backend: GroupNorm (+ SiLU) and SiLU as single passes over host
//! memory, and Conv2d as one NCHW im2col + GEMM with the bias folded into the GEMM.
//!
//! Why: a profile of a CPU sampling step in the browser (BENCHMARKS.md, `bench/profile.mjs`)
//! spent ~11% in the scalar `expf` of flex's sigmoid and a few % more in the 6-8 separate tensor
//! passes (each with its own allocation) that GroupNorm is made of with generic tensor ops. Here
//! the statistics are one pass, the normalisation, affine and SiLU another, and the exponential
//! is a polynomial the compiler vectorises (wasm simd128, AVX natively).
//!
//! flex's own conv2d goes through a general 3-D path that per call re-lays out the weights,
//! converts the input to NHWC, builds im2col tiles and scatters the GEMM result back to NCHW with
//! strided writes (~14% of the step in the same profile, beside the GEMM). In NCHW the im2col
//! rows are shifted copies of input rows, the PyTorch weight `[out, in, k, k]` already is the
//! GEMM's left matrix, and the GEMM writes NCHW output directly.
//!
//! Only used when the tensor lives on the flex device and its data can be read synchronously;
//! every other case (WebGPU, wgpu) takes the generic path in [`super::layers`], which the parity
//! tests compare against the same diffusers numbers.

use std::sync::OnceLock;

use burn::tensor::{try_read_sync, Device, Tensor, TensorData};

use crate::memory::MAX_IM2COL_ELEMS;

/// A copy of a (small) flex tensor's data, e.g. weights; `None` on any other device.
fn host_data<const D: usize>(x: &Tensor<D>) -> Option<Vec<f32>> {
    if x.device() != Device::flex() {
        return None;
    }
    try_read_sync(x.clone().into_data_async())?
        .ok()?
        .try_into_vec::<f32>()
        .ok()
}

/// Host copies of a layer's weight and bias for these kernels, read once, on first use, when the
/// layer lives on the flex device.
#[derive(Debug, Clone, Default)]
pub struct HostParams(OnceLock<Option<(Vec<f32>, Vec<f32>)>>);

impl HostParams {
    /// `(weight, bias)` as host slices; `None` off the flex device.
    pub fn get<const D: usize>(
        &self,
        weight: &Tensor<D>,
        bias: &Tensor<1>,
    ) -> Option<(&[f32], &[f32])> {
        if weight.device() != Device::flex() {
            return None;
        }
        let (w, b) = self
            .0
            .get_or_init(|| Some((host_data(weight)?, host_data(bias)?)))
            .as_ref()?;
        Some((w, b))
    }
}

/// Takes the host data of a flex tensor and runs `f` on it in place (`Err(x)` on any other
/// device, or if the data is not f32). A tensor the caller no longer shares is not copied at all:
/// flex hands its buffer over; a shared one is copied once by flex.
#[allow(clippy::result_large_err)]
fn take_host<const D: usize, R>(
    x: Tensor<D>,
    f: impl FnOnce(&mut [f32]) -> R,
) -> Result<(TensorData, R), Tensor<D>> {
    let device = x.device();
    if device != Device::flex() {
        return Err(x);
    }
    // flex computes on the calling thread: its read future is ready at the first poll and does
    // not fail (what burn's own synchronous `into_data` relies on for this backend).
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(v) => {
            let r = f(v);
            Ok((data, r))
        }
        Err(_) => Err(Tensor::from_data(data, &device)),
    }
}

fn from_host<const D: usize>(v: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

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

/// SiLU on a flex tensor; `Err(x)` hands the tensor back for the generic path.
// Both variants are the same tensor type; boxing the error would only add an allocation.
#[allow(clippy::result_large_err)]
pub fn silu<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    let device = x.device();
    let (data, ()) = take_host(x, |v| {
        for e in v.iter_mut() {
            *e = silu_f32(*e);
        }
    })?;
    Ok(Tensor::from_data(data, &device))
}

/// GroupNorm over `[B, C, H, W]` with per-channel affine (host copies `gamma`, `beta`),
/// optionally followed by SiLU, on a flex tensor; `Err(x)` hands the tensor back for the generic path. Mean and biased variance are
/// accumulated in f64 (two passes over each group, as torch does in spirit), then each channel
/// is one multiply-add (+ SiLU).
#[allow(clippy::result_large_err)]
pub fn group_norm(
    x: Tensor<4>,
    gamma: &[f32],
    beta: &[f32],
    groups: usize,
    eps: f64,
    with_silu: bool,
) -> Result<Tensor<4>, Tensor<4>> {
    let [_, c, h, w] = x.dims();
    if groups == 0 || c % groups != 0 || gamma.len() != c || beta.len() != c {
        return Err(x);
    }
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
    let (data, ()) = take_host(x, normalise)?;
    Ok(Tensor::from_data(data, &device))
}

/// Geometry of a square-kernel 2-D convolution with (begin, end) zero padding on both axes.
#[derive(Debug, Clone, Copy)]
pub struct ConvGeometry {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: (usize, usize),
}

/// `torch.nn.Conv2d` on a flex tensor `[B, c_in, H, W]` with host copies of the weight
/// `[c_out, c_in, k, k]` and bias `[c_out]`; `Err(x)` hands the tensor back for the generic path.
#[allow(clippy::result_large_err)]
pub fn conv2d(
    x: Tensor<4>,
    weight: &[f32],
    bias: &[f32],
    g: ConvGeometry,
) -> Result<Tensor<4>, Tensor<4>> {
    let [b, c_in, h, w] = x.dims();
    let ConvGeometry {
        c_out,
        kernel: k,
        stride: s,
        padding: (pb, pe),
        ..
    } = g;
    if c_in != g.c_in
        || k == 0
        || s == 0
        || weight.len() != c_out * c_in * k * k
        || bias.len() != c_out
        || h + pb + pe < k
        || w + pb + pe < k
    {
        return Err(x);
    }
    let oh = (h + pb + pe - k) / s + 1;
    let ow = (w + pb + pe - k) / s + 1;
    let p = oh * ow;
    let kk = c_in * k * k;
    let pointwise = k == 1 && s == 1 && pb == 0 && pe == 0;
    // The patch matrix is bounded: above MAX_IM2COL_ELEMS it is built and multiplied in bands
    // of output rows (a 256x256 layer on 256 channels would otherwise take 600 MB of scratch).
    let band = if pointwise || kk * p <= MAX_IM2COL_ELEMS {
        oh
    } else {
        (MAX_IM2COL_ELEMS / (kk * ow)).clamp(1, oh)
    };
    let run = |v: &[f32]| {
        COL.with_borrow_mut(|col| {
            // The patch matrix is scratch kept between calls; im2col overwrites all of it.
            let band_p = band * ow;
            if !pointwise && col.len() < kk * band_p {
                col.resize(kk * band_p, 0.0);
            }
            // Output rows start as the bias (written once, no zero-fill), the GEMM adds onto them.
            let mut out: Vec<f32> = Vec::with_capacity(b * c_out * p);
            for xb in v.chunks_exact(c_in * h * w) {
                let start = out.len();
                for &bv in bias {
                    out.extend(std::iter::repeat_n(bv, p));
                }
                let ob = &mut out[start..];
                for oy0 in (0..oh).step_by(band) {
                    let oy1 = (oy0 + band).min(oh);
                    let bp = (oy1 - oy0) * ow;
                    if !pointwise {
                        im2col_nchw(xb, &mut col[..kk * bp], c_in, h, w, k, s, pb, oy0..oy1, ow);
                    }
                    let rhs = if pointwise { xb } else { &col[..kk * bp] };
                    let dst = &mut ob[oy0 * ow..];
                    // SAFETY: lhs is c_out x kk (row stride kk), rhs kk x bp (row stride bp) and
                    // dst c_out x bp with row stride p starting at column oy0 * ow, so its last
                    // element is (c_out - 1) p + oy0 ow + bp - 1 < c_out p: all inside the slices
                    // above (checked sizes). dst = 1 * dst + 1 * (W @ col): the bias rows plus the
                    // convolution.
                    unsafe {
                        gemm::gemm(
                            c_out,
                            bp,
                            kk,
                            dst.as_mut_ptr(),
                            1,
                            p as isize,
                            true,
                            weight.as_ptr(),
                            1,
                            kk as isize,
                            rhs.as_ptr(),
                            1,
                            bp as isize,
                            1.0f32,
                            1.0f32,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
            }
            out
        })
    };
    let device = x.device();
    let (_, out) = take_host(x, |v| run(v))?;
    Ok(from_host(out, [b, c_out, oh, ow], &device))
}

/// One im2col row of a stride-1 "same" convolution: `row[y w + x] = plane[(y + dy) w + (x + dx)]`,
/// zero where that falls outside the plane. In flat indices this is ONE shifted copy of the
/// plane (offset `dy w + dx`), then the `|dx|` columns that wrapped around from the
/// neighbouring row are zeroed: far fewer, longer copies than one per output row (wasm's
/// `memory.copy` has a high fixed cost per call).
fn same_shift(plane: &[f32], row: &mut [f32], h: usize, w: usize, dy: isize, dx: isize) {
    let n = (h * w) as isize;
    let off = dy * w as isize + dx;
    // Flat destination range whose source index j + off lies inside the plane.
    let lo = (-off).clamp(0, n) as usize;
    let hi = (n - off).clamp(0, n) as usize;
    row[..lo].fill(0.0);
    if lo < hi {
        row[lo..hi]
            .copy_from_slice(&plane[(lo as isize + off) as usize..(hi as isize + off) as usize]);
    }
    row[hi.max(lo)..].fill(0.0);
    // Columns whose source x + dx is outside [0, w) picked up a neighbour row's pixel.
    let (c0, c1) = if dx < 0 {
        (0, (-dx as usize).min(w))
    } else {
        (w.saturating_sub(dx as usize), w)
    };
    if c0 < c1 {
        for r in row.chunks_exact_mut(w) {
            r[c0..c1].fill(0.0);
        }
    }
}

thread_local! {
    /// im2col scratch of [`conv2d`], grown to the largest layer and reused.
    static COL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Frees the im2col scratch (it is grown to the largest layer and kept between calls); called
/// when a model is disposed.
pub fn release_scratch() {
    COL.with_borrow_mut(|col| *col = Vec::new());
}

/// Rows `(ci, ky, kx)` of the `[c_in k k, |rows| ow]` patch matrix of one image, for the output
/// rows `rows` (all `oh` of them, or a band); padding is zero.
#[allow(clippy::too_many_arguments)]
fn im2col_nchw(
    x: &[f32],
    col: &mut [f32],
    c_in: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    pad: usize,
    rows: std::ops::Range<usize>,
    ow: usize,
) {
    let oh = rows.len();
    let p = oh * ow;
    for ci in 0..c_in {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut col[((ci * k + ky) * k + kx) * p..][..p];
                if s == 1 && ow == w && oh == h && rows.start == 0 {
                    same_shift(
                        plane,
                        row,
                        h,
                        w,
                        ky as isize - pad as isize,
                        kx as isize - pad as isize,
                    );
                    continue;
                }
                for (r, oy) in rows.clone().enumerate() {
                    let dst = &mut row[r * ow..(r + 1) * ow];
                    let iy = (oy * s + ky) as isize - pad as isize;
                    if iy < 0 || iy >= h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                    if s == 1 {
                        // ix = ox + kx - pad: one contiguous run, zeros either side.
                        let lo = pad.saturating_sub(kx).min(ow);
                        let hi = (w + pad).saturating_sub(kx).clamp(lo, ow);
                        dst[..lo].fill(0.0);
                        if lo < hi {
                            dst[lo..hi].copy_from_slice(&src[lo + kx - pad..hi + kx - pad]);
                        }
                        dst[hi..].fill(0.0);
                    } else {
                        for (ox, d) in dst.iter_mut().enumerate() {
                            let ix = (ox * s + kx) as isize - pad as isize;
                            *d = if ix < 0 || ix >= w as isize {
                                0.0
                            } else {
                                src[ix as usize]
                            };
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1e-37 && exp_f32(-1000.0) >= 0.0);
        assert!(exp_f32(1000.0).is_finite() && exp_f32(1000.0) > 1e38);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn silu_matches_the_definition_and_its_limits() {
        for i in -2000..2000 {
            let x = i as f32 * 0.01;
            let want = x as f64 / (1.0 + (-(x as f64)).exp());
            let got = silu_f32(x) as f64;
            assert!(
                (got - want).abs() <= 2e-7 * want.abs().max(1e-3),
                "silu({x}) = {got}, want {want}"
            );
        }
        assert_eq!(silu_f32(1e4), 1e4);
        assert!(silu_f32(-1e4).abs() < 1e-30);
    }

    #[test]
    fn fused_group_norm_matches_the_generic_ops() {
        use crate::models::layers::GroupNorm;
        let device = Device::flex();
        // A deterministic, non-trivial input: offsets and scales differ per channel.
        let [b, c, h, w] = [2, 12, 5, 3];
        let x: Vec<f32> = (0..b * c * h * w)
            .map(|i| {
                ((i * 7919 % 1000) as f32 / 250.0 - 2.0) * (1.0 + (i / (h * w) % c) as f32)
                    + (i % 5) as f32
            })
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(x, [b, c, h, w]), &device);
        for groups in [1, 3, 4, 12] {
            let weight: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.1).collect();
            let bias: Vec<f32> = (0..c).map(|i| i as f32 * 0.05 - 0.3).collect();
            let gn = GroupNorm::new(
                Tensor::from_data(TensorData::new(weight, [c]), &device),
                Tensor::from_data(TensorData::new(bias, [c]), &device),
                groups,
                1e-5,
            );
            // The fused kernel must really be what runs on flex.
            let (gamma, beta) = gn.host_params().expect("flex layer");
            assert!(group_norm(x.clone(), gamma, beta, groups, 1e-5, true).is_ok());
            let read = |t: Tensor<4>| t.into_data().try_into_vec::<f32>().unwrap();
            let generic = read(gn.forward_generic(x.clone()));
            let generic_silu = read(burn::tensor::activation::silu(
                gn.forward_generic(x.clone()),
            ));
            for (fused, want) in [
                (read(gn.forward(x.clone())), &generic),
                (read(gn.forward_silu(x.clone())), &generic_silu),
            ] {
                let worst = fused
                    .iter()
                    .zip(want.iter())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 2e-6,
                    "groups {groups}: max |fused - generic| = {worst:e}"
                );
            }
        }
    }

    #[test]
    fn conv2d_matches_the_generic_op() {
        use burn::tensor::module::conv2d as generic_conv2d;
        use burn::tensor::ops::ConvOptions;
        let device = Device::flex();
        let value = |i: usize, m: usize| ((i * 2654435761 % m) as f32 / m as f32) - 0.5;
        // (c_in, c_out, k, stride, padding, h, w): the shapes UNet2DModel uses (3x3 same, 1x1,
        // stride-2 downsample with symmetric and asymmetric padding) on odd and even sizes.
        for (c_in, c_out, k, s, pad, h, w) in [
            (3, 8, 3, 1, (1, 1), 9, 7),
            (8, 5, 1, 1, (0, 0), 6, 6),
            (6, 6, 3, 2, (1, 1), 8, 8),
            (6, 4, 3, 2, (0, 1), 9, 8),
            (4, 4, 3, 1, (1, 1), 1, 1),
            (3, 2, 5, 1, (2, 2), 4, 6),
            (2, 3, 3, 1, (1, 1), 2, 2),
            // Patch matrices above MAX_IM2COL_ELEMS: built in bands of output rows (the last
            // band shorter), same-padded and strided.
            (64, 4, 3, 1, (1, 1), 130, 128),
            (96, 4, 3, 2, (0, 1), 200, 198),
        ] {
            let b = 2;
            let x: Vec<f32> = (0..b * c_in * h * w).map(|i| value(i, 997)).collect();
            let wt: Vec<f32> = (0..c_out * c_in * k * k)
                .map(|i| value(i + 5, 991))
                .collect();
            let bias: Vec<f32> = (0..c_out).map(|i| value(i + 11, 983)).collect();
            let xt = Tensor::<4>::from_data(TensorData::new(x, [b, c_in, h, w]), &device);
            let want = generic_conv2d(
                xt.clone(),
                Tensor::from_data(TensorData::new(wt.clone(), [c_out, c_in, k, k]), &device),
                Some(Tensor::from_data(
                    TensorData::new(bias.clone(), [c_out]),
                    &device,
                )),
                ConvOptions::new_with_padding([s, s], [pad, pad], [1, 1], 1),
            );
            let g = ConvGeometry {
                c_in,
                c_out,
                kernel: k,
                stride: s,
                padding: pad,
            };
            let got = conv2d(xt, &wt, &bias, g).unwrap_or_else(|_| panic!("fast path refused"));
            assert_eq!(got.dims(), want.dims(), "{g:?}");
            let got = got.into_data().try_into_vec::<f32>().unwrap();
            let want = want.into_data().try_into_vec::<f32>().unwrap();
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{g:?} {h}x{w}: max |diff| {worst:e}");
        }
    }
}
