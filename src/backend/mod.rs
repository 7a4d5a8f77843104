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

    /// [`new`](Self::new), but on the CPU backend with [`cpu::PACK_CONV_WEIGHTS`] the values
    /// are packed as the left operand of a GEMM: `[dim 0, the other dims flattened]`.
    pub fn new_gemm_lhs(t: Tensor<D>) -> Self {
        match Self::new(t) {
            Param::Host { values, shape } if cpu::PACK_CONV_WEIGHTS => {
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
            Param::Device(_) | Param::Packed { .. } => None,
        }
    }

    /// The packed values, on the CPU backend where they are kept packed.
    pub fn packed(&self) -> Option<&cpu::PackedMatrix> {
        match self {
            Param::Packed { matrix, .. } => Some(matrix),
            Param::Device(_) | Param::Host { .. } => None,
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
        }
    }

    pub fn dims(&self) -> [usize; D] {
        match self {
            Param::Device(t) => t.dims(),
            Param::Host { shape, .. } | Param::Packed { shape, .. } => *shape,
        }
    }
}
