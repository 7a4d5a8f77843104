//! Kernels for the CPU (flex) backend: GroupNorm (+ SiLU), LayerNorm, SiLU and GEGLU as single
//! passes over host memory, Conv2d as one NCHW im2col (or indirect) GEMM with the bias folded
//! into the GEMM, the 3x3 stride-1 Conv2d of every resnet as Winograd F(2x2, 3x3)
//! ([`winograd`]), and in the browser Linear on the same packed GEMM ([`linear`]).
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

/// Defines `fn $name($args)` calling the `#[inline(always)]` function `$body` with the same
/// arguments, compiled for AVX2 when the CPU has it (natively on x86-64, checked once per call
/// through std's cached detection); elsewhere, and on older CPUs, as the target's baseline.
///
/// Why: native builds target x86-64's baseline (SSE2: 4 lanes), so the loops LLVM vectorises in
/// these kernels ran at half the width of any CPU of the last decade, while the gemm crate's
/// kernels pick AVX-512 at run time (`perf`: the transforms and GroupNorm were ~30% of a native
/// batch-8 step). The arithmetic is the same instructions, wider: no fused multiply-add is
/// enabled, so results are bit-identical across the two versions. In wasm there is one version.
macro_rules! wide_simd {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? = $body:ident) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn wide($($a: $t),*) $(-> $r)? {
                    $body($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { wide($($a),*) };
                }
            }
            $body($($a),*)
        }
    };
}

mod attention;
mod conv;
mod gemm;
mod linear;
mod norm;
mod par;
mod winograd;

pub(crate) use attention::{attention, attention_applies};
pub(crate) use conv::{conv2d, conv2d_applies, ConvGeometry, ConvWeight};
pub use gemm::PackedMatrix;
pub(crate) use linear::{linear, linear_applies};
pub use par::{on_pool, threads};
#[cfg(feature = "threads")]
pub use par::{set_threads, stats::take as thread_stats};
pub use winograd::WinogradWeight;

/// Frees the convolutions' scratch (grown to the largest layer and kept between calls); called
/// when a model is disposed.
pub fn release_scratch() {
    conv::release_scratch();
    winograd::release_scratch();
}

/// Whether convolution and linear-layer weights are packed once at load for the browser's own
/// GEMM ([`gemm`]); native builds keep the gemm crate (its AVX-512/AVX2 kernels beat a 4-lane
/// tile).
pub(crate) const PACK_WEIGHTS: bool = cfg!(target_arch = "wasm32");
pub(crate) use norm::{
    geglu, geglu_applies, group_norm, group_norm_applies, layer_norm, layer_norm_applies, silu,
    silu_applies,
};

use burn::tensor::{DType, Device, Tensor, TensorData};

/// Whether `device` is the CPU (flex) backend these kernels run on.
pub(crate) fn on_cpu(device: &Device) -> bool {
    *device == Device::flex()
}

/// Whether `x` lives on the CPU backend in f32 (what every kernel here reads).
fn on_cpu_f32<const D: usize>(x: &Tensor<D>) -> bool {
    on_cpu(&x.device()) && x.dtype() == DType::F32
}

/// The values of a flex tensor, moving its buffer out when nothing else shares it (layer
/// parameters at load: no copy).
pub(crate) fn host_values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
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

/// A deterministic test value in [-0.5, 0.5) for index `i` (a multiplicative hash mod `m`), for
/// the kernels' tests.
#[cfg(test)]
fn test_value(i: usize, m: usize) -> f32 {
    ((i * 2654435761 % m) as f32 / m as f32) - 0.5
}

/// The largest `|a[i] - b[i]|`, for the kernels' tests.
#[cfg(test)]
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}
