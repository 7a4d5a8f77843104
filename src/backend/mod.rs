//! Backend-specific kernels behind one seam. The models call one function per op
//! ([`cpu::conv2d`], [`cpu::group_norm`], [`cpu::silu`]) where the CPU kernel applies and burn's
//! generic tensor ops everywhere else (WebGPU, wgpu); the model structs stay diffusers mirrors.

pub mod cpu;

use burn::tensor::{Device, Tensor, TensorData};

/// A layer parameter where the backend's kernels read it: a burn tensor on the device (WebGPU,
/// wgpu), or on the CPU backend the host values the CPU kernels take, held once (not also as a
/// burn tensor; the generic ops get a tensor made from them, which only happens where a CPU
/// kernel does not apply).
#[derive(Debug, Clone)]
// The tensor variant is the large one and the common one on the GPU; boxing it would add an
// indirection to every parameter read for a few hundred bytes per layer.
#[allow(clippy::large_enum_variant)]
pub enum Param<const D: usize> {
    Device(Tensor<D>),
    Host {
        values: Vec<f32>,
        shape: [usize; D],
    },
    /// A GEMM's left operand packed for the CPU kernels (`[shape[0], product of the rest]`),
    /// held instead of the values.
    Packed {
        matrix: cpu::PackedMatrix,
        shape: [usize; D],
    },
    /// A 3x3, stride-1, padding-1 convolution weight as its Winograd transform (the CPU
    /// convolution's form of it), held instead of the values.
    Winograd {
        weight: cpu::WinogradWeight,
        shape: [usize; D],
    },
}

impl<const D: usize> Param<D> {
    /// Keeps `t` on its device, or on the CPU backend as host values (its buffer moved out).
    pub fn new(t: Tensor<D>) -> Self {
        if cpu::on_cpu(&t.device()) {
            let shape = t.dims();
            Param::Host {
                values: cpu::host_values(t),
                shape,
            }
        } else {
            Param::Device(t)
        }
    }

    /// [`new`](Self::new), but on the CPU backend with [`cpu::PACK_WEIGHTS`] the values
    /// are packed as the left operand of a GEMM: `[dim 0, the other dims flattened]`.
    pub fn new_gemm_lhs(t: Tensor<D>) -> Self {
        match Self::new(t) {
            Param::Host { values, shape } if cpu::PACK_WEIGHTS => {
                let rows = shape.first().copied().unwrap_or(1);
                let cols = shape.iter().skip(1).product();
                Param::Packed {
                    matrix: cpu::PackedMatrix::pack(&values, rows, cols),
                    shape,
                }
            }
            p => p,
        }
    }

    /// The host values, on the CPU backend (not for a packed parameter: see [`packed`](Self::packed)).
    pub fn host(&self) -> Option<&[f32]> {
        match self {
            Param::Host { values, .. } => Some(values),
            Param::Device(_) | Param::Packed { .. } | Param::Winograd { .. } => None,
        }
    }

    /// The packed values, on the CPU backend where they are kept packed.
    pub fn packed(&self) -> Option<&cpu::PackedMatrix> {
        match self {
            Param::Packed { matrix, .. } => Some(matrix),
            Param::Device(_) | Param::Host { .. } | Param::Winograd { .. } => None,
        }
    }

    /// The parameter as a tensor on its device (on the CPU backend a copy of the host values).
    pub fn tensor(&self) -> Tensor<D> {
        match self {
            Param::Device(t) => t.clone(),
            Param::Host { values, shape } => {
                Tensor::from_data(TensorData::new(values.clone(), *shape), &Device::flex())
            }
            Param::Packed { matrix, shape } => {
                Tensor::from_data(TensorData::new(matrix.unpack(), *shape), &Device::flex())
            }
            Param::Winograd { weight, shape } => {
                Tensor::from_data(TensorData::new(weight.weight(), *shape), &Device::flex())
            }
        }
    }

    pub fn dims(&self) -> [usize; D] {
        match self {
            Param::Device(t) => t.dims(),
            Param::Host { shape, .. }
            | Param::Packed { shape, .. }
            | Param::Winograd { shape, .. } => *shape,
        }
    }
}

impl Param<4> {
    /// The weight `[out, in, k, k]` of a convolution with `stride` and `padding`: on the CPU
    /// backend a 3x3, stride-1, padding-1 one becomes its Winograd transform (its only use is
    /// that convolution), any other is [`new_gemm_lhs`](Self::new_gemm_lhs).
    pub fn new_conv_weight(t: Tensor<4>, stride: usize, padding: (usize, usize)) -> Self {
        let [c_out, c_in, kh, kw] = t.dims();
        let winograd = kh == 3 && kw == 3 && stride == 1 && padding == (1, 1);
        if winograd && cpu::on_cpu(&t.device()) {
            let shape = t.dims();
            let values = cpu::host_values(t);
            return Param::Winograd {
                weight: cpu::WinogradWeight::new(&values, c_out, c_in, cpu::PACK_WEIGHTS),
                shape,
            };
        }
        Self::new_gemm_lhs(t)
    }
}
