//! The encoder, the decoder and the latent distribution of the variational autoencoders:
//! diffusers `models/autoencoders/vae.py` (`Encoder`, `Decoder`, `DiagonalGaussianDistribution`).
//! Their blocks are the U-Net's: `DownEncoderBlock2D` is [`DownBlock2D`] without a time embedding
//! (and its skip states unused), the mid block is [`UNetMidBlock2D`] with one attention head,
//! [`UpDecoderBlock2D`] upsamples without skip connections.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::models::layers::{Conv2d, Conv2dConfig, GroupNorm};
use crate::models::resnet::{ResnetOptions, TimeScaleShift};
use crate::models::unets::unet_2d_blocks::{
    AttnOptions, DownBlock2D, DownBlock2DConfig, UNetMidBlock2D, UpDecoderBlock2D,
    UpDecoderBlock2DConfig,
};
use crate::models::unets::unet_2d_config::ResampleType;
use crate::weights::TensorSource;

/// The norm eps of every block of the autoencoders (`resnet_eps=1e-6` in vae.py).
const EPS: f64 = 1e-6;

/// The shape shared by an encoder and its decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeShape {
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    /// Whether the mid block has its attention (`mid_block_add_attention`).
    pub mid_attention: bool,
}

impl VaeShape {
    fn resnet(&self) -> ResnetOptions {
        ResnetOptions {
            temb_channels: None,
            groups: self.norm_num_groups,
            eps: EPS,
            time_shift: TimeScaleShift::Default,
            output_scale_factor: 1.0,
        }
    }

    /// The mid block at the deepest level: resnet, single-head attention, resnet.
    fn load_mid(&self, src: &mut impl TensorSource, prefix: &str) -> Result<UNetMidBlock2D> {
        let c = *self.block_out_channels.last().unwrap_or(&0);
        let attn = self.mid_attention.then_some(AttnOptions {
            head_dim: c,
            groups: Some(self.norm_num_groups),
            eps: EPS,
        });
        UNetMidBlock2D::load(src, &format!("{prefix}.mid_block"), c, self.resnet(), attn)
    }
}

/// `Encoder(double_z=True)`: image `[B, in, H, W]` -> the moments (mean and log-variance) of
/// the latent distribution, `[B, 2 latent, H / f, W / f]` with `f = 2^(levels - 1)`.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownBlock2D>,
    pub mid_block: UNetMidBlock2D,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Encoder {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        shape: &VaeShape,
        in_channels: usize,
        latent_channels: usize,
    ) -> Result<Self> {
        let ch = &shape.block_out_channels;
        let n = ch.len();
        // 1. conv_in
        let conv_in = Conv2d::load(
            src,
            &format!("{prefix}.conv_in"),
            Conv2dConfig::same(in_channels, ch[0], 3),
        )?;
        // 2. down: each level but the last halves the image (asymmetric padding, as diffusers'
        //    `downsample_padding=0`)
        let mut down_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let c = DownBlock2DConfig {
                in_channels: if i == 0 { ch[0] } else { ch[i - 1] },
                out_channels: ch[i],
                num_layers: shape.layers_per_block,
                resnet: shape.resnet(),
                attn: None,
                add_downsample: i + 1 < n,
                downsample_padding: 0,
                downsampler: ResampleType::Conv,
            };
            down_blocks.push(DownBlock2D::load(
                src,
                &format!("{prefix}.down_blocks.{i}"),
                c,
            )?);
        }
        // 3. mid, 4. out
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block: shape.load_mid(src, prefix)?,
            conv_norm_out: GroupNorm::load(
                src,
                &format!("{prefix}.conv_norm_out"),
                shape.norm_num_groups,
                ch[n - 1],
                EPS,
            )?,
            conv_out: Conv2d::load(
                src,
                &format!("{prefix}.conv_out"),
                Conv2dConfig::same(ch[n - 1], 2 * latent_channels, 3),
            )?,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.conv_in.forward(x);
        let mut unused_skips = Vec::new();
        for block in &self.down_blocks {
            x = block.forward(x, None, &mut unused_skips);
            unused_skips.clear();
        }
        let x = self.mid_block.forward(x, None);
        self.conv_out.forward(self.conv_norm_out.forward_silu(x))
    }
}

/// `Decoder`: latent `[B, latent, h, w]` -> image `[B, out, h f, w f]`.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: UNetMidBlock2D,
    pub up_blocks: Vec<UpDecoderBlock2D>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Decoder {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        shape: &VaeShape,
        latent_channels: usize,
        out_channels: usize,
    ) -> Result<Self> {
        let rev: Vec<usize> = shape.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        // 1. conv_in, 2. mid
        let conv_in = Conv2d::load(
            src,
            &format!("{prefix}.conv_in"),
            Conv2dConfig::same(latent_channels, rev[0], 3),
        )?;
        let mid_block = shape.load_mid(src, prefix)?;
        // 3. up: from the deepest level, each but the last doubles the image
        let mut up_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let c = UpDecoderBlock2DConfig {
                in_channels: if i == 0 { rev[0] } else { rev[i - 1] },
                out_channels: rev[i],
                num_layers: shape.layers_per_block + 1,
                resnet: shape.resnet(),
                add_upsample: i + 1 < n,
            };
            up_blocks.push(UpDecoderBlock2D::load(
                src,
                &format!("{prefix}.up_blocks.{i}"),
                c,
            )?);
        }
        // 4. out
        Ok(Self {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(
                src,
                &format!("{prefix}.conv_norm_out"),
                shape.norm_num_groups,
                rev[n - 1],
                EPS,
            )?,
            conv_out: Conv2d::load(
                src,
                &format!("{prefix}.conv_out"),
                Conv2dConfig::same(rev[n - 1], out_channels, 3),
            )?,
        })
    }

    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let mut x = self.mid_block.forward(self.conv_in.forward(z), None);
        for block in &self.up_blocks {
            x = block.forward(x);
        }
        self.conv_out.forward(self.conv_norm_out.forward_silu(x))
    }
}

/// `DiagonalGaussianDistribution`: the encoder's moments as a Gaussian per latent element.
#[derive(Debug, Clone)]
pub struct DiagonalGaussianDistribution {
    pub mean: Tensor<4>,
    /// Clamped to [-30, 20], as diffusers does.
    pub logvar: Tensor<4>,
}

impl DiagonalGaussianDistribution {
    /// From moments `[B, 2C, H, W]`: the first C channels are the mean, the rest the log-variance.
    pub fn new(moments: Tensor<4>) -> Self {
        let c = moments.dims()[1] / 2;
        let mean = moments.clone().narrow(1, 0, c);
        let logvar = moments.narrow(1, c, c).clamp(-30.0, 20.0);
        Self { mean, logvar }
    }

    /// The most likely latent (img2img and inpainting pipelines use `sample` instead).
    pub fn mode(&self) -> Tensor<4> {
        self.mean.clone()
    }

    /// `mean + std * noise` with standard-normal `noise` of the mean's shape.
    pub fn sample(&self, noise: Tensor<4>) -> Tensor<4> {
        self.mean.clone() + (self.logvar.clone() * 0.5).exp() * noise
    }
}
