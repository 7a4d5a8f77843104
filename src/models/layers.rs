//! The primitive layers the U-Net is made of (torch.nn.Conv2d, Linear, GroupNorm), as plain
//! structs over burn tensors whose field names are the diffusers parameter names.

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

use crate::backend::{cpu, Param};
use crate::error::Result;
use crate::weights::TensorSource;

/// `{prefix}.{name}`, or `name` at the top level.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// `torch.nn.Conv2d` with square kernel, stride and (possibly asymmetric) zero padding.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// `[out, in, k, k]`
    pub weight: Param<4>,
    /// `[out]`
    pub bias: Param<1>,
    stride: usize,
    /// `(begin, end)` on both spatial axes.
    padding: (usize, usize),
}

/// The shape of a [`Conv2d`] (diffusers' `nn.Conv2d(in, out, kernel, stride, padding)`).
#[derive(Debug, Clone, Copy)]
pub struct Conv2dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// `(begin, end)` on both spatial axes.
    pub padding: (usize, usize),
}

impl Conv2dConfig {
    /// A `kernel` x `kernel` convolution, stride 1, "same" padding.
    pub fn same(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: (kernel / 2, kernel / 2),
        }
    }
}

impl Conv2d {
    /// Loads `{prefix}.weight` `[out, in, k, k]` and `{prefix}.bias` `[out]`.
    pub fn load(src: &mut impl TensorSource, prefix: &str, c: Conv2dConfig) -> Result<Self> {
        Self::load_with_bias(src, prefix, c, true)
    }

    /// [`load`](Self::load); without `bias` (`bias=False`) the bias is zero.
    pub fn load_with_bias(
        src: &mut impl TensorSource,
        prefix: &str,
        c: Conv2dConfig,
        bias: bool,
    ) -> Result<Self> {
        let k = c.kernel;
        let weight = src.get(
            &join(prefix, "weight"),
            [c.out_channels, c.in_channels, k, k],
        )?;
        let bias = if bias {
            src.get(&join(prefix, "bias"), [c.out_channels])?
        } else {
            Tensor::zeros([c.out_channels], &weight.device())
        };
        Ok(Self {
            weight: Param::new_conv_weight(weight, c.stride, c.padding),
            bias: Param::new(bias),
            stride: c.stride,
            padding: c.padding,
        })
    }

    fn geometry(&self) -> cpu::ConvGeometry {
        let [c_out, c_in, kernel, _] = self.weight.dims();
        cpu::ConvGeometry {
            c_in,
            c_out,
            kernel,
            stride: self.stride,
            padding: self.padding,
        }
    }

    /// `[B, in, H, W] -> [B, out, H', W']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let g = self.geometry();
        let weight = match &self.weight {
            Param::Host { values, .. } => Some(cpu::ConvWeight::Values(values)),
            Param::Packed { matrix, .. } => Some(cpu::ConvWeight::Packed(matrix)),
            Param::Winograd { weight, .. } => Some(cpu::ConvWeight::Winograd(weight)),
            Param::Device(_) => None,
        };
        match (weight, self.bias.host()) {
            (Some(w), Some(b)) if cpu::conv2d_applies(&x, w, b, g) => cpu::conv2d(x, w, b, g),
            _ => self.forward_generic(x),
        }
    }

    /// The same with burn's conv2d (every backend; WebGPU uses this).
    pub(crate) fn forward_generic(&self, x: Tensor<4>) -> Tensor<4> {
        let s = self.stride;
        let options = ConvOptions::new_with_padding([s, s], [self.padding; 2], [1, 1], 1);
        conv2d(x, self.weight.tensor(), Some(self.bias.tensor()), options)
    }
}

/// `torch.nn.Linear`. The weight is kept as `[in, out]` (transposed once at load) so that the
/// forward pass is one matmul; on the CPU backend in the browser ([`cpu::PACK_WEIGHTS`]) it is
/// the `[out, in]` weight packed once for [`cpu::linear`] instead.
#[derive(Debug, Clone)]
pub struct Linear {
    params: LinearParams,
}

/// The bias is absent for `bias=False` (the attention projections of the transformer blocks).
#[derive(Debug, Clone)]
// As `Param`: the tensor variant is the large one and the common one on the GPU.
#[allow(clippy::large_enum_variant)]
enum LinearParams {
    Tensor {
        weight: Tensor<2>,
        bias: Option<Tensor<1>>,
    },
    Packed {
        weight: cpu::PackedMatrix,
        bias: Option<Vec<f32>>,
    },
}

impl Linear {
    /// Loads `{prefix}.weight` `[out, in]` and `{prefix}.bias` `[out]`.
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<Self> {
        Self::load_with_bias(src, prefix, d_in, d_out, true)
    }

    /// [`load`](Self::load), with a bias only when `bias`.
    pub fn load_with_bias(
        src: &mut impl TensorSource,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight: Tensor<2> = src.get(&join(prefix, "weight"), [d_out, d_in])?;
        let bias = if bias {
            Some(src.get(&join(prefix, "bias"), [d_out])?)
        } else {
            None
        };
        let params = if cpu::PACK_WEIGHTS && cpu::on_cpu(&weight.device()) {
            // The tensor's own dims: a shape recorder hands out 1-element placeholders.
            let [rows, cols] = weight.dims();
            LinearParams::Packed {
                weight: cpu::PackedMatrix::pack(&cpu::host_values(weight), rows, cols),
                bias: bias.map(cpu::host_values),
            }
        } else {
            LinearParams::Tensor {
                weight: weight.transpose(),
                bias,
            }
        };
        Ok(Self { params })
    }

    /// `[..., in] -> [..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        use burn::tensor::module::linear;
        match &self.params {
            LinearParams::Tensor { weight, bias } => linear(x, weight.clone(), bias.clone()),
            LinearParams::Packed { weight, bias } => {
                let bias = bias.as_deref();
                if cpu::linear_applies(&x, weight, bias) {
                    return cpu::linear(x, weight, bias);
                }
                // Where the kernel does not apply (a wrong input width: burn's op reports it).
                let device = x.device();
                let w = TensorData::new(weight.unpack(), [weight.rows(), weight.cols()]);
                let b = bias
                    .map(|b| Tensor::from_data(TensorData::new(b.to_vec(), [b.len()]), &device));
                linear(x, Tensor::from_data(w, &device).transpose(), b)
            }
        }
    }
}

/// `torch.nn.LayerNorm(dim, eps, elementwise_affine=True)` over the last axis.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Param<1>,
    pub bias: Param<1>,
    eps: f64,
}

impl LayerNorm {
    pub fn load(src: &mut impl TensorSource, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self::new(
            src.get(&join(prefix, "weight"), [dim])?,
            src.get(&join(prefix, "bias"), [dim])?,
            eps,
        ))
    }

    /// From the affine parameters `[dim]`.
    pub fn new(weight: Tensor<1>, bias: Tensor<1>, eps: f64) -> Self {
        Self {
            weight: Param::new(weight),
            bias: Param::new(bias),
            eps,
        }
    }

    /// `[B, N, dim] -> [B, N, dim]`, normalised per token with the biased variance: the CPU
    /// kernel where it applies, else the generic ops.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if let (Some(g), Some(b)) = (self.weight.host(), self.bias.host()) {
            if cpu::layer_norm_applies(&x, g.len()) && b.len() == g.len() {
                return cpu::layer_norm(x, g, b, self.eps);
            }
        }
        self.forward_generic(x)
    }

    /// The same with burn's generic ops (every backend; WebGPU uses this).
    pub(crate) fn forward_generic(&self, x: Tensor<3>) -> Tensor<3> {
        let [_, _, d] = x.dims();
        let (var, mean) = x.clone().var_mean_bias(2);
        let normed = (x - mean).div((var + self.eps).sqrt());
        normed * self.weight.tensor().reshape([1, 1, d]) + self.bias.tensor().reshape([1, 1, d])
    }
}

/// `torch.nn.GroupNorm(num_groups, num_channels, eps, affine=True)` over `[B, C, ...]`.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    pub weight: Param<1>,
    pub bias: Param<1>,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        groups: usize,
        channels: usize,
        eps: f64,
    ) -> Result<Self> {
        let weight = src.get(&join(prefix, "weight"), [channels])?;
        let bias = src.get(&join(prefix, "bias"), [channels])?;
        Ok(Self::new(weight, bias, groups, eps))
    }

    /// From tensors already in hand (`weight` and `bias` of length C).
    pub fn new(weight: Tensor<1>, bias: Tensor<1>, groups: usize, eps: f64) -> Self {
        Self {
            weight: Param::new(weight),
            bias: Param::new(bias),
            groups,
            eps,
        }
    }

    /// `[B, C, H, W] -> [B, C, H, W]`, normalised per (sample, group) with the biased variance.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, false)
    }

    /// `silu(self.forward(x))`, fused into one pass on the CPU backend.
    pub fn forward_silu(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, true)
    }

    /// The CPU kernel where it applies, else the generic ops; SiLU after if asked.
    fn forward_then(&self, x: Tensor<4>, with_silu: bool) -> Tensor<4> {
        let [channels] = self.weight.dims();
        if let (Some(g), Some(b)) = (self.weight.host(), self.bias.host()) {
            if cpu::group_norm_applies(&x, self.groups, channels) {
                return cpu::group_norm(x, g, b, self.groups, self.eps, with_silu);
            }
        }
        let y = self.forward_generic(x);
        if with_silu {
            burn::tensor::activation::silu(y)
        } else {
            y
        }
    }

    /// The same with generic tensor ops (every backend; WebGPU uses this).
    pub(crate) fn forward_generic(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let grouped = x.reshape([b, self.groups, (c / self.groups) * h * w]);
        let (var, mean) = grouped.clone().var_mean_bias(2);
        let normed = (grouped - mean).div((var + self.eps).sqrt());
        let normed = normed.reshape([b, c, h, w]);
        normed * self.weight.tensor().reshape([1, c, 1, 1])
            + self.bias.tensor().reshape([1, c, 1, 1])
    }
}

/// SiLU / swish, the only activation `UNet2DModel` configs use in practice.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if cpu::silu_applies(&x) {
        cpu::silu(x)
    } else {
        burn::tensor::activation::silu(x)
    }
}
