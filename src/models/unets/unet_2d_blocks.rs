//! The down, mid and up blocks of `UNet2DModel`: diffusers `models/unets/unet_2d_blocks.py`
//! (`DownBlock2D`, `AttnDownBlock2D`, `UNetMidBlock2D`, `UpBlock2D`, `AttnUpBlock2D`).
//! One struct covers each pair with and without attention: `attentions` is empty for the
//! plain blocks, so the parameter names stay exactly diffusers'. Each block is built from a
//! config struct, as diffusers' `get_down_block` / `get_up_block` take keyword arguments.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::models::attention::{Attention, AttentionConfig};
use crate::models::resnet::{Downsample2D, Resample, ResnetBlock2D, ResnetOptions, Upsample2D};
use crate::models::transformers::{Transformer2DConfig, Transformer2DModel};
use crate::models::unets::unet_2d_config::ResampleType;
use crate::weights::TensorSource;

/// Attention settings of a block: head size, norm groups (`None`: no norm) and eps.
#[derive(Debug, Clone, Copy)]
pub struct AttnOptions {
    pub head_dim: usize,
    pub groups: Option<usize>,
    pub eps: f64,
}

/// The `resnets.{i}` and (with `attn`) `attentions.{i}` of a block, layer `i` mapping
/// `channels[i].0` to `channels[i].1` channels. Shared by the three block kinds.
fn load_layers(
    src: &mut impl TensorSource,
    prefix: &str,
    channels: impl IntoIterator<Item = (usize, usize)>,
    resnet: ResnetOptions,
    attn: Option<AttnOptions>,
) -> Result<(Vec<ResnetBlock2D>, Vec<Attention>)> {
    let mut resnets = Vec::new();
    let mut attentions = Vec::new();
    for (i, (c_in, c_out)) in channels.into_iter().enumerate() {
        let p = format!("{prefix}.resnets.{i}");
        resnets.push(ResnetBlock2D::load(src, &p, c_in, c_out, resnet)?);
        if let Some(a) = attn {
            let config = AttentionConfig {
                channels: c_out,
                head_dim: a.head_dim,
                context_dim: None,
                qkv_bias: true,
                groups: a.groups,
                eps: a.eps,
                rescale_output_factor: resnet.output_scale_factor,
            };
            attentions.push(Attention::load(
                src,
                &format!("{prefix}.attentions.{i}"),
                config,
            )?);
        }
    }
    Ok((resnets, attentions))
}

/// The attention of layer `i`, when the block has attentions (the `Attn*` kinds).
fn attend_layer(attentions: &[Attention], i: usize, x: Tensor<4>) -> Tensor<4> {
    match attentions.get(i) {
        Some(attn) => attn.forward(x),
        None => x,
    }
}

/// What a down block is made of.
#[derive(Debug, Clone, Copy)]
pub struct DownBlock2DConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_layers: usize,
    pub resnet: ResnetOptions,
    /// `Some` for `AttnDownBlock2D`.
    pub attn: Option<AttnOptions>,
    pub add_downsample: bool,
    pub downsample_padding: usize,
    /// What kind of downsampler `add_downsample` adds.
    pub downsampler: ResampleType,
}

/// A block's `downsamplers.0`: a strided conv, or a resnet block that pools.
// One per block, built once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Downsampler {
    Conv(Downsample2D),
    Resnet(ResnetBlock2D),
}

impl Downsampler {
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        match self {
            Self::Conv(d) => d.forward(x),
            Self::Resnet(r) => r.forward(x, temb),
        }
    }
}

/// A block's `upsamplers.0`: upsample and conv, or a resnet block that upsamples.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Upsampler {
    Conv(Upsample2D),
    Resnet(ResnetBlock2D),
}

impl Upsampler {
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        match self {
            Self::Conv(u) => u.forward(x),
            Self::Resnet(r) => r.forward(x, temb),
        }
    }
}

/// `DownBlock2D` (no attention) or `AttnDownBlock2D`.
#[derive(Debug, Clone)]
pub struct DownBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
    pub downsampler: Option<Downsampler>,
}

impl DownBlock2D {
    pub fn load(src: &mut impl TensorSource, prefix: &str, c: DownBlock2DConfig) -> Result<Self> {
        let channels = (0..c.num_layers).map(|i| {
            (
                if i == 0 {
                    c.in_channels
                } else {
                    c.out_channels
                },
                c.out_channels,
            )
        });
        let (resnets, attentions) = load_layers(src, prefix, channels, c.resnet, c.attn)?;
        let p = format!("{prefix}.downsamplers.0");
        let downsampler = match (c.add_downsample, c.downsampler) {
            (false, _) => None,
            (true, ResampleType::Conv) => Some(Downsampler::Conv(Downsample2D::load(
                src,
                &p,
                c.out_channels,
                c.downsample_padding,
            )?)),
            (true, ResampleType::Resnet) => Some(Downsampler::Resnet(
                ResnetBlock2D::load_resampling(src, &p, c.out_channels, c.resnet, Resample::Down)?,
            )),
        };
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Returns the block output and pushes the states it hands to the skip connections
    /// (one per layer, plus the downsampled one).
    pub fn forward(
        &self,
        x: Tensor<4>,
        temb: Option<&Tensor<2>>,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        self.forward_each(x, temb, skips, |i, x| attend_layer(&self.attentions, i, x))
    }

    /// [`forward`](Self::forward) with `after(i, x)` applied after resnet `i` (the attention of
    /// the block kind), shared with [`CrossAttnDownBlock2D`].
    pub(crate) fn forward_each(
        &self,
        mut x: Tensor<4>,
        temb: Option<&Tensor<2>>,
        skips: &mut Vec<Tensor<4>>,
        mut after: impl FnMut(usize, Tensor<4>) -> Tensor<4>,
    ) -> Tensor<4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = after(i, resnet.forward(x, temb));
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(x, temb);
            skips.push(x.clone());
        }
        x
    }
}

/// `UNetMidBlock2D`: resnet, then (attention, resnet) once.
#[derive(Debug, Clone)]
pub struct UNetMidBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
}

impl UNetMidBlock2D {
    /// `channels` in and out; `attn` is `None` when the config turns attention off.
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        channels: usize,
        resnet: ResnetOptions,
        attn: Option<AttnOptions>,
    ) -> Result<Self> {
        // The layer loop gives resnets.0 (+ attentions.0); the second resnet has no attention.
        let (mut resnets, attentions) =
            load_layers(src, prefix, [(channels, channels)], resnet, attn)?;
        let p = format!("{prefix}.resnets.1");
        resnets.push(ResnetBlock2D::load(src, &p, channels, channels, resnet)?);
        Ok(Self {
            resnets,
            attentions,
        })
    }

    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let x = attend_layer(&self.attentions, 0, self.resnets[0].forward(x, temb));
        self.resnets[1].forward(x, temb)
    }
}

/// What an up block is made of.
#[derive(Debug, Clone, Copy)]
pub struct UpBlock2DConfig {
    /// Channels of the skip state the last layer takes (the level's input channels).
    pub in_channels: usize,
    /// Channels coming from the block below.
    pub prev_output_channels: usize,
    pub out_channels: usize,
    pub num_layers: usize,
    pub resnet: ResnetOptions,
    /// `Some` for `AttnUpBlock2D`.
    pub attn: Option<AttnOptions>,
    pub add_upsample: bool,
    /// What kind of upsampler `add_upsample` adds.
    pub upsampler: ResampleType,
}

/// `UpBlock2D` (no attention) or `AttnUpBlock2D`.
#[derive(Debug, Clone)]
pub struct UpBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
    pub upsampler: Option<Upsampler>,
}

impl UpBlock2D {
    pub fn load(src: &mut impl TensorSource, prefix: &str, c: UpBlock2DConfig) -> Result<Self> {
        let n = c.num_layers;
        // Layer i takes the previous state (the block below's output first) concatenated with
        // a skip state (the level's input channels for the last layer).
        let channels = (0..n).map(|i| {
            let prev = if i == 0 {
                c.prev_output_channels
            } else {
                c.out_channels
            };
            let skip = if i == n - 1 {
                c.in_channels
            } else {
                c.out_channels
            };
            (prev + skip, c.out_channels)
        });
        let (resnets, attentions) = load_layers(src, prefix, channels, c.resnet, c.attn)?;
        let p = format!("{prefix}.upsamplers.0");
        let upsampler = match (c.add_upsample, c.upsampler) {
            (false, _) => None,
            (true, ResampleType::Conv) => {
                Some(Upsampler::Conv(Upsample2D::load(src, &p, c.out_channels)?))
            }
            (true, ResampleType::Resnet) => Some(Upsampler::Resnet(
                ResnetBlock2D::load_resampling(src, &p, c.out_channels, c.resnet, Resample::Up)?,
            )),
        };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// Consumes one skip state per layer from the end of `skips`.
    pub fn forward(
        &self,
        x: Tensor<4>,
        temb: Option<&Tensor<2>>,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        self.forward_each(x, temb, skips, |i, x| attend_layer(&self.attentions, i, x))
    }

    /// [`forward`](Self::forward) with `after(i, x)` applied after resnet `i` (the attention of
    /// the block kind), shared with [`CrossAttnUpBlock2D`].
    pub(crate) fn forward_each(
        &self,
        mut x: Tensor<4>,
        temb: Option<&Tensor<2>>,
        skips: &mut Vec<Tensor<4>>,
        mut after: impl FnMut(usize, Tensor<4>) -> Tensor<4>,
    ) -> Tensor<4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            // The config validation guarantees one skip state per up-block layer; an empty
            // stack (never reached) would skip the concatenation rather than panic.
            if let Some(skip) = skips.pop() {
                x = Tensor::cat(vec![x, skip], 1);
            }
            x = after(i, resnet.forward(x, temb));
        }
        if let Some(up) = &self.upsampler {
            x = up.forward(x, temb);
        }
        x
    }
}

/// diffusers' `UpDecoderBlock2D` (the autoencoders' decoder): resnets without a time embedding
/// or skip connections, then a 2x upsampler except at the last level.
#[derive(Debug, Clone)]
pub struct UpDecoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsampler: Option<Upsample2D>,
}

/// What an [`UpDecoderBlock2D`] is made of.
#[derive(Debug, Clone, Copy)]
pub struct UpDecoderBlock2DConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_layers: usize,
    pub resnet: ResnetOptions,
    pub add_upsample: bool,
}

impl UpDecoderBlock2D {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        c: UpDecoderBlock2DConfig,
    ) -> Result<Self> {
        let channels = (0..c.num_layers).map(|i| {
            let c_in = if i == 0 {
                c.in_channels
            } else {
                c.out_channels
            };
            (c_in, c.out_channels)
        });
        let (resnets, _) = load_layers(src, prefix, channels, c.resnet, None)?;
        let upsampler = if c.add_upsample {
            let p = format!("{prefix}.upsamplers.0");
            Some(Upsample2D::load(src, &p, c.out_channels)?)
        } else {
            None
        };
        Ok(Self { resnets, upsampler })
    }

    /// `[B, in, H, W] -> [B, out, 2H, 2W]` (`H, W` at the last level).
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for resnet in &self.resnets {
            x = resnet.forward(x, None);
        }
        match &self.upsampler {
            Some(up) => up.forward(x),
            None => x,
        }
    }
}

/// The transformer settings of a cross-attention block (`CrossAttnDownBlock2D`, ...).
#[derive(Debug, Clone, Copy)]
pub struct CrossAttnOptions {
    pub heads: usize,
    pub context_dim: usize,
    /// `transformer_layers_per_block` at this level.
    pub transformer_layers: usize,
    pub norm_num_groups: usize,
    pub use_linear_projection: bool,
}

impl CrossAttnOptions {
    /// The `attentions.{i}` of a block with `channels` channels and `n` layers.
    fn load(
        self,
        src: &mut impl TensorSource,
        prefix: &str,
        channels: usize,
        n: usize,
    ) -> Result<Vec<Transformer2DModel>> {
        let c = Transformer2DConfig {
            channels,
            heads: self.heads,
            context_dim: self.context_dim,
            num_layers: self.transformer_layers,
            norm_num_groups: self.norm_num_groups,
            use_linear_projection: self.use_linear_projection,
        };
        (0..n)
            .map(|i| Transformer2DModel::load(src, &format!("{prefix}.attentions.{i}"), c))
            .collect()
    }
}

/// `CrossAttnDownBlock2D`: a down block whose layers are (resnet, transformer on the context).
#[derive(Debug, Clone)]
pub struct CrossAttnDownBlock2D {
    /// The resnets and the downsampler (its `attentions` are empty).
    pub block: DownBlock2D,
    pub attentions: Vec<Transformer2DModel>,
}

impl CrossAttnDownBlock2D {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        c: DownBlock2DConfig,
        cross: CrossAttnOptions,
    ) -> Result<Self> {
        Ok(Self {
            block: DownBlock2D::load(src, prefix, DownBlock2DConfig { attn: None, ..c })?,
            attentions: cross.load(src, prefix, c.out_channels, c.num_layers)?,
        })
    }

    /// As [`DownBlock2D::forward`], each resnet followed by its transformer.
    pub fn forward(
        &self,
        x: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        self.block.forward_each(x, Some(temb), skips, |i, x| {
            self.attentions[i].forward(x, context)
        })
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) once.
#[derive(Debug, Clone)]
pub struct UNetMidBlock2DCrossAttn {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        channels: usize,
        resnet: ResnetOptions,
        cross: CrossAttnOptions,
    ) -> Result<Self> {
        let pairs = [(channels, channels), (channels, channels)];
        let (resnets, _) = load_layers(src, prefix, pairs, resnet, None)?;
        Ok(Self {
            resnets,
            attentions: cross.load(src, prefix, channels, 1)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>, temb: &Tensor<2>, context: &Tensor<3>) -> Tensor<4> {
        let x = self.resnets[0].forward(x, Some(temb));
        let x = self.attentions[0].forward(x, context);
        self.resnets[1].forward(x, Some(temb))
    }
}

/// `CrossAttnUpBlock2D`: an up block whose layers are (resnet on the concatenated skip,
/// transformer on the context).
#[derive(Debug, Clone)]
pub struct CrossAttnUpBlock2D {
    /// The resnets and the upsampler (its `attentions` are empty).
    pub block: UpBlock2D,
    pub attentions: Vec<Transformer2DModel>,
}

impl CrossAttnUpBlock2D {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        c: UpBlock2DConfig,
        cross: CrossAttnOptions,
    ) -> Result<Self> {
        Ok(Self {
            block: UpBlock2D::load(src, prefix, UpBlock2DConfig { attn: None, ..c })?,
            attentions: cross.load(src, prefix, c.out_channels, c.num_layers)?,
        })
    }

    /// As [`UpBlock2D::forward`], each resnet followed by its transformer.
    pub fn forward(
        &self,
        x: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        self.block.forward_each(x, Some(temb), skips, |i, x| {
            self.attentions[i].forward(x, context)
        })
    }
}
