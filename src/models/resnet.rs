//! `ResnetBlock2D`, `Downsample2D` and `Upsample2D`: diffusers `models/resnet.py`
//! and `models/downsampling.py` / `models/upsampling.py`.

use burn::tensor::Tensor;

use super::layers::{silu, Conv2d, Conv2dConfig, GroupNorm, Linear};
use crate::config::config_enum;
use crate::error::Result;
use crate::weights::TensorSource;

config_enum! {
    /// How the time embedding enters a resnet block (`resnet_time_scale_shift` of the U-Net
    /// config, `time_embedding_norm` of diffusers' `ResnetBlock2D`).
    pub enum TimeScaleShift {
        /// `h = norm2(conv1(...) + proj(temb))`
        Default = "default",
        /// `h = norm2(conv1(...)) * (1 + scale) + shift`
        ScaleShift = "scale_shift",
    }
}

/// `ResnetBlock2D` with pre-norm, SiLU, no up/down sampling inside (as UNet2DModel and the
/// autoencoders build it); without a time embedding in the autoencoders.
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    /// Absent when the block takes no time embedding (`temb_channels=None`: the autoencoders).
    pub time_emb_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    /// 1x1 conv when the channel count changes.
    pub conv_shortcut: Option<Conv2d>,
    time_shift: TimeScaleShift,
    output_scale_factor: f64,
    /// `up=True` / `down=True`: the block resamples by 2 after its first norm (the
    /// `resnet` up/down-samplers of consistency-model U-Nets).
    resample: Resample,
}

/// What a resnet block does to the resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resample {
    #[default]
    Keep,
    /// Nearest-neighbour 2x (`Upsample2D(use_conv=False)`).
    Up,
    /// 2x2 average pooling (`Downsample2D(use_conv=False)`).
    Down,
}

/// Options shared by every resnet block of a model.
#[derive(Debug, Clone, Copy)]
pub struct ResnetOptions {
    /// Width of the time embedding; `None`: no time embedding (the autoencoders).
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub time_shift: TimeScaleShift,
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        opt: ResnetOptions,
    ) -> Result<Self> {
        let p = |n: &str| format!("{prefix}.{n}");
        let proj_out = match opt.time_shift {
            TimeScaleShift::Default => out_channels,
            TimeScaleShift::ScaleShift => 2 * out_channels,
        };
        Ok(Self {
            norm1: GroupNorm::load(src, &p("norm1"), opt.groups, in_channels, opt.eps)?,
            conv1: Conv2d::load(
                src,
                &p("conv1"),
                Conv2dConfig::same(in_channels, out_channels, 3),
            )?,
            time_emb_proj: match opt.temb_channels {
                Some(t) => Some(Linear::load(src, &p("time_emb_proj"), t, proj_out)?),
                None => None,
            },
            norm2: GroupNorm::load(src, &p("norm2"), opt.groups, out_channels, opt.eps)?,
            conv2: Conv2d::load(
                src,
                &p("conv2"),
                Conv2dConfig::same(out_channels, out_channels, 3),
            )?,
            conv_shortcut: if in_channels != out_channels {
                Some(Conv2d::load(
                    src,
                    &p("conv_shortcut"),
                    Conv2dConfig::same(in_channels, out_channels, 1),
                )?)
            } else {
                None
            },
            time_shift: opt.time_shift,
            output_scale_factor: opt.output_scale_factor,
            resample: Resample::Keep,
        })
    }

    /// A block that resamples (diffusers `ResnetBlock2D(up=True)` / `(down=True)`), as the
    /// `resnet` up/down-samplers are.
    pub fn load_resampling(
        src: &mut impl TensorSource,
        prefix: &str,
        channels: usize,
        opt: ResnetOptions,
        resample: Resample,
    ) -> Result<Self> {
        Ok(Self {
            resample,
            ..Self::load(src, prefix, channels, channels, opt)?
        })
    }

    /// `x: [B, in, H, W]`, `temb: [B, temb_channels]` (before SiLU; `None` for a block
    /// without a time embedding) `-> [B, out, H, W]`
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let h = self.norm1.forward_silu(x.clone());
        let (x, h) = match self.resample {
            Resample::Keep => (x, h),
            Resample::Up => (upsample_nearest_2x(x), upsample_nearest_2x(h)),
            Resample::Down => (avg_pool_2x(x), avg_pool_2x(h)),
        };
        let h = self.conv1.forward(h);
        let t = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(temb)) => {
                let t = proj.forward(silu(temb.clone()));
                let [b, c] = t.dims();
                Some(t.reshape([b, c, 1, 1]))
            }
            _ => None,
        };
        let h = match (self.time_shift, t) {
            (TimeScaleShift::Default, Some(t)) => self.norm2.forward_silu(h + t),
            (TimeScaleShift::ScaleShift, Some(t)) => {
                let half = t.dims()[1] / 2;
                let scale = t.clone().narrow(1, 0, half);
                let shift = t.narrow(1, half, half);
                silu(self.norm2.forward(h) * (scale + 1.0) + shift)
            }
            (_, None) => self.norm2.forward_silu(h),
        };
        // (dropout sits here in diffusers; it is the identity at inference)
        let h = self.conv2.forward(h);
        let skip = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        let out = skip + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        }
    }
}

/// `Downsample2D(use_conv=True, name="op")`: a 3x3 stride-2 conv. With `padding = 0`
/// diffusers pads one zero row and column at the end first, which the conv options express.
#[derive(Debug, Clone)]
pub struct Downsample2D {
    pub conv: Conv2d,
}

impl Downsample2D {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        channels: usize,
        padding: usize,
    ) -> Result<Self> {
        let pad = if padding == 0 {
            (0, 1)
        } else {
            (padding, padding)
        };
        Ok(Self {
            conv: Conv2d::load(
                src,
                &format!("{prefix}.conv"),
                Conv2dConfig {
                    stride: 2,
                    padding: pad,
                    ..Conv2dConfig::same(channels, channels, 3)
                },
            )?,
        })
    }

    /// `[B, C, H, W] -> [B, C, H/2, W/2]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }
}

/// `Upsample2D(use_conv=True)`: nearest-neighbour 2x, then a 3x3 conv.
#[derive(Debug, Clone)]
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn load(src: &mut impl TensorSource, prefix: &str, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(
                src,
                &format!("{prefix}.conv"),
                Conv2dConfig::same(channels, channels, 3),
            )?,
        })
    }

    /// `[B, C, H, W] -> [B, C, 2H, 2W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(upsample_nearest_2x(x))
    }
}

/// Nearest-neighbour 2x upsampling (`F.interpolate(scale_factor=2, mode="nearest")`):
/// every pixel becomes a 2x2 block.
pub fn upsample_nearest_2x(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, 2, w, 2])
        .reshape([b, c, 2 * h, 2 * w])
}

/// 2x2 average pooling with stride 2 (`nn.AvgPool2d(2, 2)`; an odd last row or column is
/// dropped, as PyTorch floors).
pub fn avg_pool_2x(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let (oh, ow) = (h / 2, w / 2);
    x.narrow(2, 0, 2 * oh)
        .narrow(3, 0, 2 * ow)
        .reshape([b, c, oh, 2, ow, 2])
        .sum_dim(5)
        .sum_dim(3)
        .reshape([b, c, oh, ow])
        / 4.0
}
