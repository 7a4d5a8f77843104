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
//! The seam: each op has an applicability check (`*_applies`: the tensor lives on the flex
//! device and the shapes are ones the kernel handles) and the kernel itself, which the layers in
//! [`crate::models::layers`] call when the check passes; every other case (WebGPU, wgpu) takes
//! burn's generic ops there, which the parity tests compare against the same diffusers numbers.
//! The reference implementations the kernels are tested against are those generic ops.

mod conv;
mod norm;

pub use conv::{conv2d, conv2d_applies, release_scratch, ConvGeometry};
pub use norm::{exp_f32, group_norm, group_norm_applies, silu, silu_applies, silu_f32};

use burn::tensor::{DType, Device, Tensor, TensorData};

/// Whether `device` is the CPU (flex) backend these kernels run on.
pub fn on_cpu(device: &Device) -> bool {
    *device == Device::flex()
}

/// Whether `x` lives on the CPU backend in f32 (what every kernel here reads).
fn on_cpu_f32<const D: usize>(x: &Tensor<D>) -> bool {
    on_cpu(&x.device()) && x.dtype() == DType::F32
}

/// The values of a flex tensor, moving its buffer out when nothing else shares it (layer
/// parameters at load: no copy).
pub fn host_values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    let mut data = x.into_data();
    if data.dtype() != DType::F32 {
        data = data.convert::<f32>();
    }
    data.try_into_vec::<f32>().unwrap_or_default()
}

/// Takes the host data of a flex tensor and runs `f` on it in place. A tensor the caller no
/// longer shares is not copied at all: flex hands its buffer over; a shared one is copied once by
/// flex. (flex computes on the calling thread: its read future is ready at the first poll and
/// does not fail, which burn's own synchronous `into_data` relies on for this backend.)
fn take_host<const D: usize, R>(x: Tensor<D>, f: impl FnOnce(&mut [f32]) -> R) -> (TensorData, R) {
    let mut data = x.into_data();
    if data.dtype() != DType::F32 {
        data = data.convert::<f32>();
    }
    let r = match data.as_mut_slice::<f32>() {
        Ok(v) => f(v),
        // Unreachable after the conversion above; an empty slice keeps it panic-free.
        Err(_) => f(&mut []),
    };
    (data, r)
}

fn from_host<const D: usize>(v: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

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
            assert!(
                conv2d_applies(&xt, &wt, &bias, g),
                "fast path refused {g:?}"
            );
            let got = conv2d(xt, &wt, &bias, g);
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
