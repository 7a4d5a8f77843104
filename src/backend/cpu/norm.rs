//! GroupNorm (+ SiLU), LayerNorm, SiLU and GEGLU on host memory, with a vectorisable exponential.

use burn::tensor::Tensor;

use super::{on_cpu_f32, par, take_host};

/// `e^x` in f32 to within a few ulp: Cody-Waite reduction `x = n ln 2 + r`, `|r| <= ln2 / 2`,
/// and the degree-7 Taylor polynomial of `e^r` (truncation error < 6e-9 relative), scaled by
/// `2^n` through the exponent bits. Inputs are clamped to [-87.3, 88.3] (the normal range).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| < 2^8.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.3, 88.3);
    // n = floor(x log2(e) + 0.5), from a truncation of a positive number: `f32::floor` is a
    // libm call on x86-64's baseline (no SSE4.1), 7.5% of a native batch-8 step in `perf`; this
    // vectorises everywhere. t + 256 may round up to the next integer when t is within 2^-16 of
    // it; r below then comes out slightly negative past -ln2/2, where the polynomial is still
    // exact to f32 precision (|r| < 0.35), so e^x is unchanged.
    let n = ((x * LOG2E + 0.5 + 256.0) as i32 - 256) as f32;
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
pub(crate) fn silu_f32(x: f32) -> f32 {
    x / (1.0 + exp_f32(-x))
}

/// `sum f(e)` over `v` in f64, in 8 independent lanes (then added up): one running sum is a
/// chain of dependent adds at the adder's latency per element, which kept GroupNorm's two
/// statistics passes scalar; lanes vectorise (f64x2 in wasm simd128) and overlap.
#[inline(always)]
pub(crate) fn lane_sum(v: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0f64; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &e) in acc.iter_mut().zip(c) {
            *a += f(e as f64);
        }
    }
    let tail: f64 = rest.iter().map(|&e| f(e as f64)).sum();
    acc.iter().sum::<f64>() + tail
}

/// Whether [`silu`] runs on `x` (an f32 flex tensor).
pub(crate) fn silu_applies<const D: usize>(x: &Tensor<D>) -> bool {
    on_cpu_f32(x)
}

/// `0.5 x (1 + erf(x / √2))`, torch's exact GELU, with erf from Abramowitz & Stegun 7.1.26
/// (absolute error below 1.5e-7) on a vectorisable exp: for x < 0, `1 + erf` is computed as the
/// formula's `erfc` directly (no cancellation), so the tail keeps its relative accuracy too.
#[inline(always)]
pub(crate) fn gelu_f32(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let y = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * y);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    // erfc(|x| / √2).
    let erfc = poly * exp_f32(-y * y);
    let one_plus_erf = if x < 0.0 { erfc } else { 2.0 - erfc };
    0.5 * x * one_plus_erf
}

/// Whether [`geglu`] runs on `h` (an f32 flex tensor whose last axis has two halves).
pub(crate) fn geglu_applies(h: &Tensor<3>) -> bool {
    on_cpu_f32(h) && h.dims()[2] % 2 == 0
}

/// diffusers' `GEGLU` after its projection: `[B, N, 2 inner] -> [B, N, inner]`, `a * gelu(g)`
/// for the halves `[a, g]` of the last axis, in one pass ([`geglu_applies`]; the generic form
/// is two strided views, the GELU's passes and the product).
pub(crate) fn geglu(h: Tensor<3>) -> Tensor<3> {
    let [b, n, two_inner] = h.dims();
    let inner = two_inner / 2;
    let device = h.device();
    let (_, out) = take_host(h, |v| {
        let mut out = vec![0f32; b * n * inner];
        let part = par::part_len(b * n, inner, 8);
        par::for_each_chunk_mut(&mut out, part, |i, o| {
            let rows = part / inner.max(1);
            geglu_rows(&v[i * rows * 2 * inner..], o, inner);
        });
        out
    });
    super::from_host(out, [b, n, inner], &device)
}

wide_simd! {
    /// [`geglu`] on host rows `[a, g]` of `2 inner` values into rows of `inner`.
    fn geglu_rows(v: &[f32], out: &mut [f32], inner: usize) = geglu_rows_body
}

#[inline(always)]
fn geglu_rows_body(v: &[f32], out: &mut [f32], inner: usize) {
    for (row, o) in v
        .chunks_exact(2 * inner.max(1))
        .zip(out.chunks_exact_mut(inner.max(1)))
    {
        let (a, g) = row.split_at(inner);
        for ((o, &a), &g) in o.iter_mut().zip(a).zip(g) {
            *o = a * gelu_f32(g);
        }
    }
}

/// SiLU in place on a flex tensor ([`silu_applies`]).
pub(crate) fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    let (data, ()) = take_host(x, |v| {
        let part = par::part_len(v.len().div_ceil(4096), 4096, 4);
        par::for_each_chunk_mut(v, part, |_, v| silu_slice(v));
    });
    Tensor::from_data(data, &device)
}

wide_simd! {
    /// [`silu_f32`] over `v` in place.
    fn silu_slice(v: &mut [f32]) = silu_slice_body
}

#[inline(always)]
fn silu_slice_body(v: &mut [f32]) {
    for e in v.iter_mut() {
        *e = silu_f32(*e);
    }
}

/// Whether [`group_norm`] runs on `x` with `groups` groups and `channels` affine parameters.
pub(crate) fn group_norm_applies(x: &Tensor<4>, groups: usize, channels: usize) -> bool {
    let [_, c, _, _] = x.dims();
    on_cpu_f32(x) && groups != 0 && c % groups == 0 && c == channels
}

/// GroupNorm over `[B, C, H, W]` with per-channel affine (host values `gamma`, `beta`),
/// optionally followed by SiLU, on a flex tensor ([`group_norm_applies`]). Mean and biased
/// variance are accumulated in f64 (two passes over each group, as torch does in spirit), then
/// each channel is one multiply-add (+ SiLU).
pub(crate) fn group_norm(
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
    let shape = GroupShape {
        c,
        hw,
        cpg,
        n,
        eps,
        with_silu,
    };
    let (data, ()) = take_host(x, |v| {
        let group = cpg * hw;
        let part = par::part_len(v.len() / group.max(1), group, 3);
        par::for_each_chunk_mut(v, part, |i, v| {
            normalise(v, shape, i * part / group.max(1), gamma, beta)
        });
    });
    Tensor::from_data(data, &device)
}

/// Whether [`layer_norm`] runs on `x` with `dim` affine parameters: an f32 flex tensor whose last
/// axis has `dim` values.
pub(crate) fn layer_norm_applies(x: &Tensor<3>, dim: usize) -> bool {
    on_cpu_f32(x) && dim != 0 && x.dims()[2] == dim
}

/// `torch.nn.LayerNorm(dim)` over the last axis of a flex tensor `[B, N, dim]`
/// ([`layer_norm_applies`]) with the host values of its weight and bias: per token the mean and
/// biased variance in f64 lanes, then one pass of normalise and affine (the generic form is six
/// passes with a buffer each: var_mean, sub, div, mul, add).
pub(crate) fn layer_norm(x: Tensor<3>, gamma: &[f32], beta: &[f32], eps: f64) -> Tensor<3> {
    let device = x.device();
    let (data, ()) = take_host(x, |v| {
        let d = gamma.len();
        let part = par::part_len(v.len() / d.max(1), d, 3);
        par::for_each_chunk_mut(v, part, |_, v| normalise_tokens(v, gamma, beta, eps));
    });
    Tensor::from_data(data, &device)
}

wide_simd! {
    /// [`layer_norm`] on the host values of `[B, N, dim]`, in place.
    fn normalise_tokens(v: &mut [f32], gamma: &[f32], beta: &[f32], eps: f64) = normalise_tokens_body
}

#[inline(always)]
fn normalise_tokens_body(v: &mut [f32], gamma: &[f32], beta: &[f32], eps: f64) {
    let d = gamma.len();
    let n = d as f64;
    for token in v.chunks_exact_mut(d.max(1)) {
        let mean = lane_sum(token, |e| e) / n;
        let var = lane_sum(token, |e| {
            let dv = e - mean;
            dv * dv
        }) / n;
        let rstd = (1.0 / (var + eps).sqrt()) as f32;
        let mean = mean as f32;
        for ((e, &g), &b) in token.iter_mut().zip(gamma).zip(beta) {
            *e = (*e - mean) * rstd * g + b;
        }
    }
}

/// The sizes of a [`group_norm`].
#[derive(Clone, Copy)]
struct GroupShape {
    c: usize,
    hw: usize,
    cpg: usize,
    /// Elements per group, as f64.
    n: f64,
    eps: f64,
    with_silu: bool,
}

wide_simd! {
    /// [`group_norm`] in place on the host values `v` of whole groups of `[B, C, H, W]`, the
    /// first one group number `first` (counted over the batch).
    fn normalise(v: &mut [f32], s: GroupShape, first: usize, gamma: &[f32], beta: &[f32]) = normalise_body
}

#[inline(always)]
fn normalise_body(v: &mut [f32], s: GroupShape, first: usize, gamma: &[f32], beta: &[f32]) {
    let GroupShape {
        c,
        hw,
        cpg,
        n,
        eps,
        with_silu,
    } = s;
    let groups = c / cpg.max(1);
    for (i, group) in v.chunks_exact_mut(cpg * hw).enumerate() {
        let g = (first + i) % groups.max(1);
        let mean = lane_sum(group, |e| e) / n;
        let var = lane_sum(group, |e| {
            let d = e - mean;
            d * d
        }) / n;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_give_the_same_bits() {
        use crate::backend::cpu::par::with_test_threads;
        use burn::tensor::{Device, TensorData};
        let device = Device::flex();
        let value = crate::backend::cpu::test_value;
        let (b, c, h, w, groups) = (3, 6, 5, 7, 3);
        let x: Vec<f32> = (0..b * c * h * w).map(|i| value(i, 997)).collect();
        let gamma: Vec<f32> = (0..c).map(|i| 1.0 + value(i, 7)).collect();
        let beta: Vec<f32> = (0..c).map(|i| value(i + 3, 11)).collect();
        let t4 = || Tensor::<4>::from_data(TensorData::new(x.clone(), [b, c, h, w]), &device);
        let t3 = |d: usize| {
            Tensor::<3>::from_data(TensorData::new(x.clone(), [b, c * h * w / d, d]), &device)
        };
        let bits = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        let bits3 = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
        let runs: Vec<Box<dyn Fn() -> Vec<f32>>> = vec![
            Box::new(|| bits(group_norm(t4(), &gamma, &beta, groups, 1e-5, true))),
            Box::new(|| bits(group_norm(t4(), &gamma, &beta, groups, 1e-5, false))),
            Box::new(|| bits(silu(t4()))),
            Box::new(|| {
                bits3(layer_norm(
                    t3(7),
                    &gamma[..1].repeat(7),
                    &beta[..1].repeat(7),
                    1e-5,
                ))
            }),
            Box::new(|| bits3(geglu(t3(10)))),
        ];
        for (k, run) in runs.iter().enumerate() {
            let one = run();
            for t in [2, 4] {
                assert_eq!(with_test_threads(t, run), one, "kernel {k}, {t} threads");
            }
        }
    }
    use burn::tensor::{Device, TensorData};

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
    fn gelu_matches_the_exact_definition() {
        // Against torch's exact GELU in f64 (libm erf), over the range activations take and
        // the tails.
        let mut worst = 0f64;
        let mut x = -12.0f32;
        while x <= 12.0 {
            let want = 0.5 * x as f64 * (1.0 + libm_erf(x as f64 / std::f64::consts::SQRT_2));
            worst = worst.max((gelu_f32(x) as f64 - want).abs() / want.abs().max(1.0));
            x += 0.0137;
        }
        assert!(worst < 5e-7, "max error {worst:e}");
        assert_eq!(gelu_f32(0.0), 0.0);
        assert!(gelu_f32(-100.0).abs() < 1e-30 && gelu_f32(100.0) == 100.0);
    }

    /// erf in f64, the reference:
    /// the Taylor series for |x| < 3, else 1 - erfc from its continued fraction.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 3.0 {
            let (mut term, mut sum, mut k) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                k += 1.0;
                term *= -a * a / k;
                sum += term / (2.0 * k + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = exp(-a^2) / sqrt(pi) * 1 / (a + 1/2 / (a + 1 / (a + 3/2 / (a + ...)))).
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * f)
        };
        r.copysign(x)
    }

    #[test]
    fn fused_geglu_matches_the_generic_ops() {
        let device = Device::flex();
        let [b, n, inner] = [2, 3, 10];
        let v: Vec<f32> = (0..b * n * 2 * inner)
            .map(|i| (i * 7919 % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let h = Tensor::<3>::from_data(TensorData::new(v, [b, n, 2 * inner]), &device);
        assert!(geglu_applies(&h));
        let a = h.clone().narrow(2, 0, inner);
        let g = h.clone().narrow(2, inner, inner);
        let want = (a * burn::tensor::activation::gelu(g))
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let got = geglu(h);
        assert_eq!(got.dims(), [b, n, inner]);
        let got = got.into_data().try_into_vec::<f32>().unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(worst < 2e-6, "max |fused - generic| = {worst:e}");
    }

    #[test]
    fn fused_layer_norm_matches_the_generic_ops() {
        use crate::models::layers::LayerNorm;
        let device = Device::flex();
        for [b, n, d] in [[2, 5, 7], [1, 3, 64], [1, 1, 1]] {
            let x: Vec<f32> = (0..b * n * d)
                .map(|i| ((i * 7919 % 1000) as f32 / 250.0 - 2.0) * (1.0 + (i % 3) as f32))
                .collect();
            let x = Tensor::<3>::from_data(TensorData::new(x, [b, n, d]), &device);
            let weight: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 * 0.1).collect();
            let bias: Vec<f32> = (0..d).map(|i| i as f32 * 0.05 - 0.3).collect();
            let ln = LayerNorm::new(
                Tensor::from_data(TensorData::new(weight, [d]), &device),
                Tensor::from_data(TensorData::new(bias, [d]), &device),
                1e-5,
            );
            // The fused kernel must really be what runs on flex.
            assert!(layer_norm_applies(&x, d));
            let read = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().unwrap();
            let (fused, generic) = (read(ln.forward(x.clone())), read(ln.forward_generic(x)));
            let worst = crate::backend::cpu::max_abs_diff(&fused, &generic);
            assert!(
                worst < 2e-6,
                "{b}x{n}x{d}: max |fused - generic| = {worst:e}"
            );
        }
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
            assert!(gn.weight.host().is_some() && group_norm_applies(&x, groups, c));
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
}
