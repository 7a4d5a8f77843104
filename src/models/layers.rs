//! The primitive layers the U-Net is made of (torch.nn.Conv2d, Linear, GroupNorm), as plain
//! structs over burn tensors whose field names are the diffusers parameter names.

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;

use crate::backend::cpu;
use crate::error::Result;
use crate::weights::TensorSource;

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// `torch.nn.Conv2d` with square kernel, stride and (possibly asymmetric) zero padding.
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Tensor<4>,
    pub bias: Tensor<1>,
    options: ConvOptions<2>,
    geometry: cpu::ConvGeometry,
    host: cpu::HostParams,
}

impl Conv2d {
    /// Loads `{prefix}.weight` `[out, in, k, k]` and `{prefix}.bias` `[out]`.
    /// `padding` is `(begin, end)` on both spatial axes.
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: (usize, usize),
    ) -> Result<Self> {
        let weight = src.get(
            &join(prefix, "weight"),
            [out_channels, in_channels, kernel, kernel],
        )?;
        let bias = src.get(&join(prefix, "bias"), [out_channels])?;
        let options =
            ConvOptions::new_with_padding([stride, stride], [padding, padding], [1, 1], 1);
        Ok(Self {
            weight,
            bias,
            options,
            geometry: cpu::ConvGeometry {
                c_in: in_channels,
                c_out: out_channels,
                kernel,
                stride,
                padding,
            },
            host: cpu::HostParams::default(),
        })
    }

    /// `[B, in, H, W] -> [B, out, H', W']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match self.host.get(&self.weight, &self.bias) {
            Some((w, b)) => match cpu::conv2d(x, w, b, self.geometry) {
                Ok(y) => return y,
                Err(x) => x,
            },
            None => x,
        };
        self.forward_generic(x)
    }

    /// The same with burn's conv2d (every backend; WebGPU uses this).
    pub(crate) fn forward_generic(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            self.options.clone(),
        )
    }
}

/// `torch.nn.Linear`. The weight is kept as `[in, out]` (transposed once at load) so that the
/// forward pass is one matmul.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor<2>,
    pub bias: Tensor<1>,
}

impl Linear {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<Self> {
        let weight: Tensor<2> = src.get(&join(prefix, "weight"), [d_out, d_in])?;
        let bias = src.get(&join(prefix, "bias"), [d_out])?;
        Ok(Self {
            weight: weight.transpose(),
            bias,
        })
    }

    /// `[..., in] -> [..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::linear(x, self.weight.clone(), Some(self.bias.clone()))
    }
}

/// `torch.nn.GroupNorm(num_groups, num_channels, eps, affine=True)` over `[B, C, ...]`.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    pub weight: Tensor<1>,
    pub bias: Tensor<1>,
    groups: usize,
    eps: f64,
    host: cpu::HostParams,
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
            weight,
            bias,
            groups,
            eps,
            host: cpu::HostParams::default(),
        }
    }

    /// Host copies of weight and bias for the CPU kernel (`None` off the flex device).
    pub(crate) fn host_params(&self) -> Option<(&[f32], &[f32])> {
        self.host.get(&self.weight, &self.bias)
    }

    /// `[B, C, H, W] -> [B, C, H, W]`, normalised per (sample, group) with the biased variance.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, false)
    }

    /// `silu(self.forward(x))`, fused into one pass on the CPU backend.
    pub fn forward_silu(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, true)
    }

    /// The CPU kernel where it applies (flex device), else the generic ops; SiLU after if asked.
    fn forward_then(&self, x: Tensor<4>, with_silu: bool) -> Tensor<4> {
        let x = match self.host_params() {
            Some((g, b)) => match cpu::group_norm(x, g, b, self.groups, self.eps, with_silu) {
                Ok(y) => return y,
                Err(x) => x,
            },
            None => x,
        };
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
        normed * self.weight.clone().reshape([1, c, 1, 1]) + self.bias.clone().reshape([1, c, 1, 1])
    }
}

/// SiLU / swish, the only activation `UNet2DModel` configs use in practice.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    cpu::silu(x).unwrap_or_else(burn::tensor::activation::silu)
}
