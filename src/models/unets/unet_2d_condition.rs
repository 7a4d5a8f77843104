//! `UNet2DConditionModel`: diffusers `models/unets/unet_2d_condition.py`, the text-conditioned
//! U-Net of latent diffusion (Stable Diffusion 1.x / 2.x, SD-Turbo): `UNet2DModel`'s levels with
//! cross-attention blocks (`CrossAttnDownBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `CrossAttnUpBlock2D`) that attend to the encoder's hidden states. The config is diffusers'
//! `config.json`; options this crate does not implement are refused by name.

use crate::models::unets::unet_2d_config::ResampleType;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::unet_2d_blocks::{
    CrossAttnDownBlock2D, CrossAttnOptions, CrossAttnUpBlock2D, DownBlock2D, DownBlock2DConfig,
    UNetMidBlock2DCrossAttn, UpBlock2D, UpBlock2DConfig,
};
use super::unet_2d_config::{
    check_skip_concats, ActFn, SampleSize, TimeEmbeddingType, MAX_BLOCKS, MAX_CHANNELS,
    MAX_IMAGE_CHANNELS, MAX_LAYERS_PER_BLOCK,
};
use crate::config::{config_enum, in_range, parse_model_config, shown};
use crate::error::{Error, Result};
use crate::models::embeddings::{per_item_timesteps, TimestepEmbedding, Timesteps};
use crate::models::layers::{Conv2d, Conv2dConfig, GroupNorm};
use crate::models::resnet::{ResnetOptions, TimeScaleShift};
use crate::weights::TensorSource;

config_enum! {
    /// `down_block_types[i]` of a conditional U-Net.
    pub enum CondDownBlockType {
        CrossAttnDownBlock2D = "CrossAttnDownBlock2D",
        DownBlock2D = "DownBlock2D",
    }
}

config_enum! {
    /// `up_block_types[i]` of a conditional U-Net.
    pub enum CondUpBlockType {
        CrossAttnUpBlock2D = "CrossAttnUpBlock2D",
        UpBlock2D = "UpBlock2D",
    }
}

config_enum! {
    /// `mid_block_type` of a conditional U-Net (`null`: none).
    pub enum CondMidBlockType {
        UNetMidBlock2DCrossAttn = "UNetMidBlock2DCrossAttn",
    }
}

/// An option diffusers takes as one value for every block or as a list with one per block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    /// The value of block `i`.
    pub fn at(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.get(i).copied().unwrap_or(0),
        }
    }

    fn check(&self, name: &str, n: usize) -> Result<()> {
        if let PerBlock::Each(v) = self {
            if v.len() != n {
                return Err(Error::config(format!(
                    "{name}: expected one value or {n} (one per block), found {} values",
                    v.len()
                )));
            }
        }
        for i in 0..n {
            if self.at(i) == 0 || self.at(i) > MAX_CHANNELS {
                return Err(Error::config(format!(
                    "{name}: expected values from 1 to {MAX_CHANNELS}, found {}",
                    self.at(i)
                )));
            }
        }
        Ok(())
    }
}

/// The config of diffusers' `UNet2DConditionModel`, with its defaults. Options that only other
/// model families use are kept as they are read and must hold their defaults ([`validate`]).
///
/// [`validate`]: UNet2DConditionConfig::validate
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    pub sample_size: Option<SampleSize>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<CondDownBlockType>,
    pub mid_block_type: Option<CondMidBlockType>,
    pub up_block_types: Vec<CondUpBlockType>,
    pub only_cross_attention: Value,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub dropout: f64,
    pub act_fn: ActFn,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: PerBlock,
    pub transformer_layers_per_block: PerBlock,
    pub reverse_transformer_layers_per_block: Value,
    pub encoder_hid_dim: Value,
    pub encoder_hid_dim_type: Value,
    /// Despite the name, the number of heads when `num_attention_heads` is null (a diffusers
    /// legacy every SD checkpoint relies on).
    pub attention_head_dim: PerBlock,
    pub num_attention_heads: Option<PerBlock>,
    pub dual_cross_attention: bool,
    pub use_linear_projection: bool,
    pub class_embed_type: Value,
    pub addition_embed_type: Value,
    pub addition_time_embed_dim: Value,
    pub num_class_embeds: Value,
    /// Attention computed in f32 (all of it is, here).
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: TimeScaleShift,
    pub resnet_skip_time_act: bool,
    pub resnet_out_scale_factor: f64,
    pub time_embedding_type: TimeEmbeddingType,
    pub time_embedding_dim: Option<usize>,
    pub time_embedding_act_fn: Value,
    pub timestep_post_act: Value,
    pub time_cond_proj_dim: Value,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub projection_class_embeddings_input_dim: Value,
    pub attention_type: String,
    pub class_embeddings_concat: bool,
    pub mid_block_only_cross_attention: Value,
    pub cross_attention_norm: Value,
    pub addition_embed_type_num_heads: usize,
}

impl Default for UNet2DConditionConfig {
    fn default() -> Self {
        use CondDownBlockType as D;
        use CondUpBlockType as U;
        Self {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                D::CrossAttnDownBlock2D,
                D::CrossAttnDownBlock2D,
                D::CrossAttnDownBlock2D,
                D::DownBlock2D,
            ],
            mid_block_type: Some(CondMidBlockType::UNetMidBlock2DCrossAttn),
            up_block_types: vec![
                U::UpBlock2D,
                U::CrossAttnUpBlock2D,
                U::CrossAttnUpBlock2D,
                U::CrossAttnUpBlock2D,
            ],
            only_cross_attention: Value::Bool(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            dropout: 0.0,
            act_fn: ActFn::Silu,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(1280),
            transformer_layers_per_block: PerBlock::One(1),
            reverse_transformer_layers_per_block: Value::Null,
            encoder_hid_dim: Value::Null,
            encoder_hid_dim_type: Value::Null,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            class_embed_type: Value::Null,
            addition_embed_type: Value::Null,
            addition_time_embed_dim: Value::Null,
            num_class_embeds: Value::Null,
            upcast_attention: false,
            resnet_time_scale_shift: TimeScaleShift::Default,
            resnet_skip_time_act: false,
            resnet_out_scale_factor: 1.0,
            time_embedding_type: TimeEmbeddingType::Positional,
            time_embedding_dim: None,
            time_embedding_act_fn: Value::Null,
            timestep_post_act: Value::Null,
            time_cond_proj_dim: Value::Null,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            projection_class_embeddings_input_dim: Value::Null,
            attention_type: "default".into(),
            class_embeddings_concat: false,
            mid_block_only_cross_attention: Value::Null,
            cross_attention_norm: Value::Null,
            addition_embed_type_num_heads: 64,
        }
    }
}

impl UNet2DConditionConfig {
    /// Parses a diffusers `config.json` and validates it.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = parse_model_config(text, "UNet2DConditionModel")?;
        config.validate()?;
        Ok(config)
    }

    /// Heads of the transformers at level `i` (`num_attention_heads`, else the legacy
    /// `attention_head_dim`).
    pub fn heads(&self, i: usize) -> usize {
        self.num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .at(i)
    }

    /// Width of the time embedding (`time_embedding_dim or block_out_channels[0] * 4`).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or_else(|| self.block_out_channels.first().copied().unwrap_or(0) * 4)
    }

    /// The cross-field checks, the limits, and the options of other families at their defaults:
    /// block lists, other families' options, sizes, channel arithmetic.
    pub fn validate(&self) -> Result<()> {
        let n = self.check_block_lists()?;
        self.check_other_families()?;
        self.check_sizes(n)?;
        self.check_channels()
    }

    /// 1. One down and one up block type per `block_out_channels` entry; returns the count.
    fn check_block_lists(&self) -> Result<usize> {
        let n = self.block_out_channels.len();
        if n == 0 || n > MAX_BLOCKS {
            return Err(Error::config(format!(
                "block_out_channels: expected 1 to {MAX_BLOCKS} entries, found {n}"
            )));
        }
        for (what, len) in [
            ("down_block_types", self.down_block_types.len()),
            ("up_block_types", self.up_block_types.len()),
        ] {
            if len != n {
                return Err(Error::config(format!(
                    "{what} has {len} entries but block_out_channels has {n}; they must match"
                )));
            }
        }
        Ok(n)
    }

    /// 2. Options of other model families (SDXL, Kandinsky, LCM, ...): refused unless default.
    fn check_other_families(&self) -> Result<()> {
        let nulls: [(&str, &Value); 13] = [
            (
                "reverse_transformer_layers_per_block",
                &self.reverse_transformer_layers_per_block,
            ),
            ("encoder_hid_dim", &self.encoder_hid_dim),
            ("encoder_hid_dim_type", &self.encoder_hid_dim_type),
            ("class_embed_type", &self.class_embed_type),
            ("addition_embed_type", &self.addition_embed_type),
            ("addition_time_embed_dim", &self.addition_time_embed_dim),
            ("num_class_embeds", &self.num_class_embeds),
            ("time_embedding_act_fn", &self.time_embedding_act_fn),
            ("timestep_post_act", &self.timestep_post_act),
            ("time_cond_proj_dim", &self.time_cond_proj_dim),
            (
                "projection_class_embeddings_input_dim",
                &self.projection_class_embeddings_input_dim,
            ),
            (
                "mid_block_only_cross_attention",
                &self.mid_block_only_cross_attention,
            ),
            ("cross_attention_norm", &self.cross_attention_norm),
        ];
        if let Some((key, v)) = nulls.iter().find(|(_, v)| !v.is_null()) {
            return Err(Error::unsupported(format!(
                "{key}: expected null, found {}",
                shown(&v.to_string())
            )));
        }
        for (key, on) in [
            ("dual_cross_attention", self.dual_cross_attention),
            ("resnet_skip_time_act", self.resnet_skip_time_act),
            ("class_embeddings_concat", self.class_embeddings_concat),
            (
                "only_cross_attention",
                self.only_cross_attention != Value::Bool(false),
            ),
        ] {
            if on {
                return Err(Error::unsupported(format!(
                    "{key}: expected false, found true"
                )));
            }
        }
        if self.attention_type != "default" {
            return Err(Error::unsupported(format!(
                "attention_type: expected `default`, found `{}`",
                shown(&self.attention_type)
            )));
        }
        for (key, k) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if k != 3 {
                return Err(Error::unsupported(format!("{key}: expected 3, found {k}")));
            }
        }
        if self.resnet_out_scale_factor != 1.0 || self.downsample_padding != 1 {
            return Err(Error::unsupported(format!(
                "resnet_out_scale_factor / downsample_padding: expected 1 and 1, found {} and {}",
                self.resnet_out_scale_factor, self.downsample_padding
            )));
        }
        Ok(())
    }

    /// 3. Widths, layer counts and per-block lists within their limits.
    fn check_sizes(&self, n: usize) -> Result<()> {
        in_range("in_channels", self.in_channels, MAX_IMAGE_CHANNELS)?;
        in_range("out_channels", self.out_channels, MAX_IMAGE_CHANNELS)?;
        in_range(
            "layers_per_block",
            self.layers_per_block,
            MAX_LAYERS_PER_BLOCK,
        )?;
        in_range("norm_num_groups", self.norm_num_groups, MAX_CHANNELS)?;
        self.cross_attention_dim.check("cross_attention_dim", n)?;
        self.transformer_layers_per_block
            .check("transformer_layers_per_block", n)?;
        self.attention_head_dim.check("attention_head_dim", n)?;
        if let Some(h) = &self.num_attention_heads {
            h.check("num_attention_heads", n)?;
        }
        if !(self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(Error::config(format!(
                "norm_eps: expected a small positive number, found {}",
                self.norm_eps
            )));
        }
        Ok(())
    }

    /// 4. Every GroupNorm, head split and skip concatenation divides evenly.
    fn check_channels(&self) -> Result<()> {
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            in_range(&format!("block_out_channels[{i}]"), c, MAX_CHANNELS)?;
            if c % self.norm_num_groups != 0 {
                return Err(Error::config(format!(
                    "block_out_channels[{i}] = {c} is not divisible by norm_num_groups = {}",
                    self.norm_num_groups
                )));
            }
            if c % self.heads(i) != 0 {
                return Err(Error::config(format!(
                    "block_out_channels[{i}] = {c} is not divisible by its {} attention heads",
                    self.heads(i)
                )));
            }
        }
        // The up path's concatenations, as UNet2DModel's.
        check_skip_concats(&self.block_out_channels, self.norm_num_groups)?;
        Ok(())
    }
}

/// A down block of the conditional U-Net.
#[derive(Debug, Clone)]
pub enum CondDownBlock {
    CrossAttn(CrossAttnDownBlock2D),
    Plain(DownBlock2D),
}

/// An up block of the conditional U-Net.
#[derive(Debug, Clone)]
pub enum CondUpBlock {
    CrossAttn(CrossAttnUpBlock2D),
    Plain(UpBlock2D),
}

#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    pub config: UNet2DConditionConfig,
    pub conv_in: Conv2d,
    pub time_proj: Timesteps,
    pub time_embedding: TimestepEmbedding,
    pub down_blocks: Vec<CondDownBlock>,
    pub mid_block: Option<UNetMidBlock2DCrossAttn>,
    pub up_blocks: Vec<CondUpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    device: Device,
}

impl UNet2DConditionModel {
    /// Builds the U-Net, taking every parameter from `src` by its diffusers name.
    pub fn load(
        config: &UNet2DConditionConfig,
        src: &mut impl TensorSource,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let temb = config.time_embed_dim();
        let resnet = ResnetOptions {
            temb_channels: Some(temb),
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            time_shift: config.resnet_time_scale_shift,
            output_scale_factor: 1.0,
        };
        // 1. time
        let time_proj = Timesteps {
            num_channels: ch[0],
            flip_sin_to_cos: config.flip_sin_to_cos,
            downscale_freq_shift: config.freq_shift,
        };
        let time_embedding = TimestepEmbedding::load(src, "time_embedding", ch[0], temb)?;
        // 2. pre-process
        let conv_in = Conv2d::load(
            src,
            "conv_in",
            Conv2dConfig::same(config.in_channels, ch[0], 3),
        )?;
        // 3-5. down, mid, up
        let down_blocks = Self::load_down_blocks(config, src, resnet)?;
        let mid_block = match config.mid_block_type {
            Some(_) => {
                let n = ch.len();
                let resnet = ResnetOptions {
                    output_scale_factor: config.mid_block_scale_factor,
                    ..resnet
                };
                let cross = Self::cross(config, n - 1, config.heads(n - 1));
                Some(UNetMidBlock2DCrossAttn::load(
                    src,
                    "mid_block",
                    ch[n - 1],
                    resnet,
                    cross,
                )?)
            }
            None => None,
        };
        let up_blocks = Self::load_up_blocks(config, src, resnet)?;
        // 6. post-process
        Ok(Self {
            conv_norm_out: GroupNorm::load(
                src,
                "conv_norm_out",
                config.norm_num_groups,
                ch[0],
                config.norm_eps,
            )?,
            conv_out: Conv2d::load(
                src,
                "conv_out",
                Conv2dConfig::same(ch[0], config.out_channels, 3),
            )?,
            config: config.clone(),
            conv_in,
            time_proj,
            time_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            device: device.clone(),
        })
    }

    /// The transformer settings of level `level` with `heads` heads.
    fn cross(config: &UNet2DConditionConfig, level: usize, heads: usize) -> CrossAttnOptions {
        CrossAttnOptions {
            heads,
            context_dim: config.cross_attention_dim.at(level),
            transformer_layers: config.transformer_layers_per_block.at(level),
            norm_num_groups: config.norm_num_groups,
            use_linear_projection: config.use_linear_projection,
        }
    }

    fn load_down_blocks(
        config: &UNet2DConditionConfig,
        src: &mut impl TensorSource,
        resnet: ResnetOptions,
    ) -> Result<Vec<CondDownBlock>> {
        let ch = &config.block_out_channels;
        let n = ch.len();
        let mut blocks = Vec::with_capacity(n);
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let c = DownBlock2DConfig {
                in_channels: if i == 0 { ch[0] } else { ch[i - 1] },
                out_channels: ch[i],
                num_layers: config.layers_per_block,
                resnet,
                attn: None,
                add_downsample: i + 1 < n,
                downsample_padding: config.downsample_padding,
                downsampler: ResampleType::Conv,
            };
            let prefix = format!("down_blocks.{i}");
            blocks.push(match kind {
                CondDownBlockType::CrossAttnDownBlock2D => {
                    let cross = Self::cross(config, i, config.heads(i));
                    CondDownBlock::CrossAttn(CrossAttnDownBlock2D::load(src, &prefix, c, cross)?)
                }
                CondDownBlockType::DownBlock2D => {
                    CondDownBlock::Plain(DownBlock2D::load(src, &prefix, c)?)
                }
            });
        }
        Ok(blocks)
    }

    /// Up block `i` works at level `n - 1 - i`; its per-block options are the down path's,
    /// reversed (diffusers' `reversed_*` lists).
    fn load_up_blocks(
        config: &UNet2DConditionConfig,
        src: &mut impl TensorSource,
        resnet: ResnetOptions,
    ) -> Result<Vec<CondUpBlock>> {
        let rev: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        let mut blocks = Vec::with_capacity(n);
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let c = UpBlock2DConfig {
                in_channels: rev[(i + 1).min(n - 1)],
                prev_output_channels: if i == 0 { rev[0] } else { rev[i - 1] },
                out_channels: rev[i],
                num_layers: config.layers_per_block + 1,
                resnet,
                attn: None,
                add_upsample: i + 1 < n,
                upsampler: ResampleType::Conv,
            };
            let prefix = format!("up_blocks.{i}");
            let level = n - 1 - i;
            blocks.push(match kind {
                CondUpBlockType::CrossAttnUpBlock2D => {
                    let cross = Self::cross(config, level, config.heads(level));
                    CondUpBlock::CrossAttn(CrossAttnUpBlock2D::load(src, &prefix, c, cross)?)
                }
                CondUpBlockType::UpBlock2D => CondUpBlock::Plain(UpBlock2D::load(src, &prefix, c)?),
            });
        }
        Ok(blocks)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Predicts the model output for `sample: [B, in, h, w]` at `timesteps` (one per item, or
    /// one for all) given the text states `context: [B, M, cross_attention_dim]`.
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        context: &Tensor<3>,
    ) -> Result<Tensor<4>> {
        let [b, c, _, _] = sample.dims();
        if c != self.config.in_channels {
            return Err(Error::invalid(format!(
                "sample: expected {} channels, found {c}",
                self.config.in_channels
            )));
        }
        let [cb, _, cd] = context.dims();
        let want_cd = self.config.cross_attention_dim.at(0);
        if cb != b || cd != want_cd {
            return Err(Error::invalid(format!(
                "encoder_hidden_states: expected [{b}, tokens, {want_cd}], found {:?}",
                context.dims()
            )));
        }
        let timesteps = per_item_timesteps(timesteps, b)?;
        let sample = if self.config.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample
        };
        // 1. time
        let emb = self
            .time_embedding
            .forward(self.time_proj.forward(&timesteps, &self.device));
        // 2. pre-process
        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        // 3. down
        for block in &self.down_blocks {
            x = match block {
                CondDownBlock::CrossAttn(b) => b.forward(x, &emb, context, &mut skips),
                CondDownBlock::Plain(b) => b.forward(x, Some(&emb), &mut skips),
            };
        }
        // 4. mid
        if let Some(mid) = &self.mid_block {
            x = mid.forward(x, &emb, context);
        }
        // 5. up
        for block in &self.up_blocks {
            x = match block {
                CondUpBlock::CrossAttn(b) => b.forward(x, &emb, context, &mut skips),
                CondUpBlock::Plain(b) => b.forward(x, Some(&emb), &mut skips),
            };
        }
        // 6. post-process
        Ok(self.conv_out.forward(self.conv_norm_out.forward_silu(x)))
    }
}
