//! The encoder, the decoder, the latent distribution and the codebook of the autoencoders:
//! diffusers `models/autoencoders/vae.py` (`Encoder`, `Decoder`, `DiagonalGaussianDistribution`,
//! `VectorQuantizer`).
//! Their blocks are the U-Net's: `DownEncoderBlock2D` is [`DownBlock2D`] without a time embedding
//! (and its skip states unused), the mid block is [`UNetMidBlock2D`] with one attention head,
//! [`UpDecoderBlock2D`] upsamples without skip connections.

use burn::tensor::{Int, Tensor};

use crate::config::in_range;
use crate::error::{Error, Result};
use crate::models::layers::{Conv2d, Conv2dConfig, GroupNorm};
use crate::models::resnet::{ResnetOptions, TimeScaleShift};
use crate::models::unets::unet_2d_blocks::{
    AttnOptions, DownBlock2D, DownBlock2DConfig, UNetMidBlock2D, UpDecoderBlock2D,
    UpDecoderBlock2DConfig,
};
use crate::models::unets::unet_2d_config::{
    ResampleType, MAX_BLOCKS, MAX_CHANNELS, MAX_IMAGE_CHANNELS, MAX_LAYERS_PER_BLOCK,
};
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
    /// The checks and limits both autoencoders' configs share: the block lists match
    /// `block_out_channels`, every size is in range and divisible by the norm groups, and the
    /// latents' `scaling_factor` is usable. `channels` are `in_channels`, `out_channels` and
    /// `latent_channels`.
    pub(crate) fn validate(
        &self,
        down_blocks: usize,
        up_blocks: usize,
        [in_channels, out_channels, latent_channels]: [usize; 3],
        scaling_factor: f64,
    ) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || n > MAX_BLOCKS {
            return Err(Error::config(format!(
                "block_out_channels: expected 1 to {MAX_BLOCKS} entries, found {n}"
            )));
        }
        for (what, len) in [
            ("down_block_types", down_blocks),
            ("up_block_types", up_blocks),
        ] {
            if len != n {
                return Err(Error::config(format!(
                    "{what} has {len} entries but block_out_channels has {n}; they must match"
                )));
            }
        }
        in_range("in_channels", in_channels, MAX_IMAGE_CHANNELS)?;
        in_range("out_channels", out_channels, MAX_IMAGE_CHANNELS)?;
        in_range("latent_channels", latent_channels, MAX_IMAGE_CHANNELS)?;
        in_range(
            "layers_per_block",
            self.layers_per_block,
            MAX_LAYERS_PER_BLOCK,
        )?;
        in_range("norm_num_groups", self.norm_num_groups, MAX_CHANNELS)?;
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            in_range(&format!("block_out_channels[{i}]"), c, MAX_CHANNELS)?;
            if c % self.norm_num_groups != 0 {
                return Err(Error::config(format!(
                    "block_out_channels[{i}] = {c} is not divisible by norm_num_groups = {}",
                    self.norm_num_groups
                )));
            }
        }
        if !(scaling_factor.is_finite() && scaling_factor != 0.0) {
            return Err(Error::config(format!(
                "scaling_factor: expected a finite non-zero number, found {scaling_factor}"
            )));
        }
        Ok(())
    }

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

/// `Encoder`: image `[B, in, H, W]` -> `[B, latent, H / f, W / f]` with `f = 2^(levels - 1)`;
/// with `double_z` (`AutoencoderKL`) twice the channels: the moments (mean and log-variance) of
/// the latent distribution. `VQModel`'s encoder has `double_z=False`.
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
        double_z: bool,
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
                Conv2dConfig::same(ch[n - 1], (1 + usize::from(double_z)) * latent_channels, 3),
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

/// Largest distance matrix (rows x codebook entries) that [`VectorQuantizer::nearest`] builds at
/// once: 4M f32 (16 MB); larger inputs go through in slices of rows.
const MAX_DISTANCES: usize = 1 << 22;

/// What [`VectorQuantizer::forward`] returns (diffusers' `(z_q, loss, (_, _, indices))`).
#[derive(Debug, Clone)]
pub struct Quantized {
    /// `[B, dim, H, W]`: every vector replaced by its nearest codebook entry.
    pub quant: Tensor<4>,
    /// The commitment loss `[1]`: `(1 + beta) mean((z_q - z)^2)`.
    pub loss: Tensor<1>,
    /// `[B, H, W]`: the codebook index of every vector.
    pub indices: Tensor<3, Int>,
}

/// `VectorQuantizer` (van den Oord et al. 2017, "Neural Discrete Representation Learning",
/// eq. 1): each latent vector becomes its nearest entry of a learned codebook. As diffusers'
/// `VQModel` builds it: no index remapping (`remap=None`), `beta = 0.25`, `legacy=True`.
/// `legacy` only chooses which of the loss's two terms carries `beta`; the terms are equal in
/// value (they differ in what is detached for the gradient), so inference needs nothing of it.
#[derive(Debug, Clone)]
pub struct VectorQuantizer {
    /// `embedding.weight`: `[num_vq_embeddings, vq_embed_dim]`.
    pub embedding: Tensor<2>,
    pub beta: f64,
}

impl VectorQuantizer {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        num_embeddings: usize,
        dim: usize,
    ) -> Result<Self> {
        Ok(Self {
            embedding: src.get(&format!("{prefix}.embedding.weight"), [num_embeddings, dim])?,
            beta: 0.25,
        })
    }

    /// `[B, dim, H, W]` -> the nearest codebook entries, the commitment loss and the indices.
    pub fn forward(&self, z: Tensor<4>) -> Quantized {
        let [b, c, h, w] = z.dims();
        // 1. (B, H, W, C), flattened to one vector per row
        let flat = z.clone().permute([0, 2, 3, 1]).reshape([b * h * w, c]);
        // 2. the nearest entry of each
        let indices = self.nearest(flat);
        let z_q = self
            .embedding
            .clone()
            .select(0, indices.clone())
            .reshape([b, h, w, c])
            .permute([0, 3, 1, 2]);
        // 3. the loss, and z_q as diffusers' straight-through estimator computes it:
        //    `z + (z_q - z)`, which differs from z_q by rounding.
        let diff = z_q - z.clone();
        let loss = diff.clone().powi_scalar(2).mean() * (1.0 + self.beta);
        Quantized {
            quant: z + diff,
            loss,
            indices: indices.reshape([b, h, w]),
        }
    }

    /// The codebook index nearest to each row of `flat` `[N, dim]`. The squared distances are
    /// `|z|^2 - 2 z.e + |e|^2`, the product form torch's `cdist` takes for inputs of this size;
    /// a near tie can resolve either way under rounding, in diffusers as here.
    pub fn nearest(&self, flat: Tensor<2>) -> Tensor<1, Int> {
        let [n, _] = flat.dims();
        let [k, _] = self.embedding.dims();
        let e_sq = self
            .embedding
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .reshape([1, k]);
        let e_t = self.embedding.clone().transpose();
        if n == 0 {
            return Tensor::zeros([0], &flat.device());
        }
        let rows = (MAX_DISTANCES / k.max(1)).max(1);
        let parts: Vec<Tensor<1, Int>> = (0..n)
            .step_by(rows)
            .map(|start| {
                let len = rows.min(n - start);
                let z = flat.clone().narrow(0, start, len);
                let z_sq = z.clone().powi_scalar(2).sum_dim(1);
                let d = z_sq.expand([len, k]) - z.matmul(e_t.clone()) * 2.0
                    + e_sq.clone().expand([len, k]);
                d.argmin(1).reshape([len])
            })
            .collect();
        Tensor::cat(parts, 0)
    }

    /// The codebook entries of `indices` `[B, H, W]`, as `[B, dim, H, W]` (diffusers'
    /// `get_codebook_entry` with `shape = (B, H, W, dim)`).
    pub fn get_codebook_entry(&self, indices: Tensor<3, Int>) -> Tensor<4> {
        let [b, h, w] = indices.dims();
        let [_, c] = self.embedding.dims();
        self.embedding
            .clone()
            .select(0, indices.reshape([b * h * w]))
            .reshape([b, h, w, c])
            .permute([0, 3, 1, 2])
    }
}
