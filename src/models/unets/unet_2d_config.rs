//! The config of diffusers' `UNet2DModel` (`models/unets/unet_2d.py`), read from its
//! `config.json`: the constructor arguments with their defaults. String options are enums with
//! diffusers' names; [`UNet2DConfig::validate`] keeps the cross-field checks and the limits.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{
    check_keys, config_enum, from_fields, in_range, known_keys, parse_config_json, shown,
};
use crate::error::{Error, Result};
use crate::models::resnet::TimeScaleShift;

/// Limits that keep a hostile or corrupt config from asking for absurd allocations.
pub const MAX_CHANNELS: usize = 8192;
pub const MAX_SAMPLE_SIZE: usize = 1024;
pub const MAX_BLOCKS: usize = 8;
pub const MAX_LAYERS_PER_BLOCK: usize = 16;
pub const MAX_CLASSES: usize = 1 << 20;
pub const MAX_IMAGE_CHANNELS: usize = 64;

config_enum! {
    /// `down_block_types[i]`.
    pub enum DownBlockType {
        DownBlock2D = "DownBlock2D",
        AttnDownBlock2D = "AttnDownBlock2D",
        /// `DownBlock2D` whose downsampler is a resnet block (consistency models).
        ResnetDownsampleBlock2D = "ResnetDownsampleBlock2D",
    }
}

config_enum! {
    /// `up_block_types[i]`.
    pub enum UpBlockType {
        UpBlock2D = "UpBlock2D",
        AttnUpBlock2D = "AttnUpBlock2D",
        /// `UpBlock2D` whose upsampler is a resnet block (consistency models).
        ResnetUpsampleBlock2D = "ResnetUpsampleBlock2D",
    }
}

config_enum! {
    /// `mid_block_type` (`null`: no mid block).
    pub enum MidBlockType {
        UNetMidBlock2D = "UNetMidBlock2D",
    }
}

config_enum! {
    /// `time_embedding_type` (diffusers also has `fourier`, not implemented).
    pub enum TimeEmbeddingType {
        Positional = "positional",
    }
}

config_enum! {
    /// `act_fn` (`swish` is diffusers' other name for SiLU).
    pub enum ActFn {
        Silu = "silu" | "swish",
    }
}

config_enum! {
    /// `downsample_type` / `upsample_type` of the attention blocks: a strided conv / an
    /// upsample and conv, or a resampling resnet block.
    pub enum ResampleType {
        Conv = "conv",
        Resnet = "resnet",
    }
}

impl DownBlockType {
    pub fn has_attention(self) -> bool {
        self == Self::AttnDownBlock2D
    }

    /// The downsampler this block gets (diffusers' `get_down_block`: only `AttnDownBlock2D`
    /// reads `downsample_type`).
    pub fn downsampler(self, downsample_type: ResampleType) -> ResampleType {
        match self {
            Self::DownBlock2D => ResampleType::Conv,
            Self::AttnDownBlock2D => downsample_type,
            Self::ResnetDownsampleBlock2D => ResampleType::Resnet,
        }
    }
}

impl UpBlockType {
    pub fn has_attention(self) -> bool {
        self == Self::AttnUpBlock2D
    }

    /// The upsampler this block gets (only `AttnUpBlock2D` reads `upsample_type`).
    pub fn upsampler(self, upsample_type: ResampleType) -> ResampleType {
        match self {
            Self::UpBlock2D => ResampleType::Conv,
            Self::AttnUpBlock2D => upsample_type,
            Self::ResnetUpsampleBlock2D => ResampleType::Resnet,
        }
    }
}

/// `sample_size` is an int or an `[height, width]` pair in diffusers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    Rect([usize; 2]),
}

impl SampleSize {
    pub fn hw(self) -> [usize; 2] {
        match self {
            SampleSize::Square(s) => [s, s],
            SampleSize::Rect(hw) => hw,
        }
    }
}

/// The config of diffusers' `UNet2DModel` (models/unets/unet_2d.py), with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConfig {
    pub sample_size: Option<SampleSize>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub time_embedding_type: TimeEmbeddingType,
    pub time_embedding_dim: Option<usize>,
    pub freq_shift: f64,
    pub flip_sin_to_cos: bool,
    pub down_block_types: Vec<DownBlockType>,
    pub mid_block_type: Option<MidBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub mid_block_scale_factor: f64,
    pub downsample_padding: usize,
    pub downsample_type: ResampleType,
    pub upsample_type: ResampleType,
    pub dropout: f64,
    pub act_fn: ActFn,
    pub attention_head_dim: Option<usize>,
    pub norm_num_groups: Option<usize>,
    pub attn_norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    pub resnet_time_scale_shift: TimeScaleShift,
    pub add_attention: bool,
    pub class_embed_type: Option<String>,
    pub num_class_embeds: Option<usize>,
    pub num_train_timesteps: Option<usize>,
}

impl Default for UNet2DConfig {
    fn default() -> Self {
        Self {
            sample_size: None,
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            time_embedding_type: TimeEmbeddingType::Positional,
            time_embedding_dim: None,
            freq_shift: 0.0,
            flip_sin_to_cos: true,
            down_block_types: vec![
                DownBlockType::DownBlock2D,
                DownBlockType::AttnDownBlock2D,
                DownBlockType::AttnDownBlock2D,
                DownBlockType::AttnDownBlock2D,
            ],
            mid_block_type: Some(MidBlockType::UNetMidBlock2D),
            up_block_types: vec![
                UpBlockType::AttnUpBlock2D,
                UpBlockType::AttnUpBlock2D,
                UpBlockType::AttnUpBlock2D,
                UpBlockType::UpBlock2D,
            ],
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 1,
            downsample_type: ResampleType::Conv,
            upsample_type: ResampleType::Conv,
            dropout: 0.0,
            act_fn: ActFn::Silu,
            attention_head_dim: Some(8),
            norm_num_groups: Some(32),
            attn_norm_num_groups: None,
            norm_eps: 1e-5,
            resnet_time_scale_shift: TimeScaleShift::Default,
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            num_train_timesteps: None,
        }
    }
}

impl UNet2DConfig {
    /// Parses a diffusers `config.json` and validates it.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_value(parse_config_json(text, "UNet config")?)
    }

    pub fn from_value(value: Value) -> Result<Self> {
        if let Some(name) = value.get("_class_name").and_then(Value::as_str) {
            if name != "UNet2DModel" {
                return Err(Error::unsupported(format!(
                    "UNet config `_class_name`: expected `UNet2DModel`, found `{}`",
                    shown(name)
                )));
            }
        }
        let obj = check_keys(value, &known_keys::<Self>(), "UNet config")?;
        let config: Self = from_fields(obj, "UNet config")?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serializes");
        v.as_object_mut()
            .expect("object")
            .insert("_class_name".into(), Value::String("UNet2DModel".into()));
        serde_json::to_string(&v).expect("config serializes")
    }

    /// Width of the time embedding (`time_embedding_dim or block_out_channels[0] * 4`).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim.unwrap_or_else(|| {
            self.block_out_channels
                .first()
                .copied()
                .unwrap_or(0)
                .saturating_mul(4)
        })
    }

    /// GroupNorm groups used everywhere (validated to be set).
    pub fn groups(&self) -> usize {
        self.norm_num_groups.unwrap_or(32)
    }

    /// `[height, width]` of the samples; a model without `sample_size` needs one from the caller.
    pub fn sample_hw(&self) -> Option<[usize; 2]> {
        self.sample_size.map(SampleSize::hw)
    }

    /// Whether level `i` (0 = full resolution) has attention: its down block, the up block at
    /// the same resolution, or (deepest level) the mid block.
    pub fn level_has_attention(&self, i: usize) -> bool {
        let n = self.block_out_channels.len();
        self.down_block_types[i].has_attention()
            || self.up_block_types[n - 1 - i].has_attention()
            || (i == n - 1 && self.mid_block_type.is_some() && self.add_attention)
    }

    /// The cross-field checks and limits (single values are checked by their types), in order:
    /// the block lists, the options this crate implements, the sizes, the channel arithmetic.
    pub fn validate(&self) -> Result<()> {
        let n = self.check_block_lists()?;
        let groups = self.check_options()?;
        self.check_sizes(n, groups)?;
        self.check_channels(n, groups)
    }

    /// 1. One down and one up block type per `block_out_channels` entry; returns the count.
    fn check_block_lists(&self) -> Result<usize> {
        let n = self.block_out_channels.len();
        if n == 0 || n > MAX_BLOCKS {
            return Err(Error::config(format!(
                "block_out_channels: expected 1 to {MAX_BLOCKS} entries, found {n}"
            )));
        }
        if self.down_block_types.len() != n {
            return Err(Error::config(format!(
                "down_block_types has {} entries but block_out_channels has {n}; they must match",
                self.down_block_types.len()
            )));
        }
        if self.up_block_types.len() != n {
            return Err(Error::config(format!(
                "up_block_types has {} entries but down_block_types has {n}; they must match",
                self.up_block_types.len()
            )));
        }
        Ok(n)
    }

    /// 2. Options with a single implemented value; returns `norm_num_groups`.
    fn check_options(&self) -> Result<usize> {
        if let Some(t) = &self.class_embed_type {
            return Err(Error::unsupported(format!(
                "class_embed_type: expected null (a learned table from num_class_embeds), found `{}`",
                shown(t)
            )));
        }
        if self.downsample_padding > 1 {
            return Err(Error::unsupported(format!(
                "downsample_padding: expected 0 or 1, found {}",
                self.downsample_padding
            )));
        }
        self.norm_num_groups
            .ok_or_else(|| Error::unsupported("norm_num_groups: expected an integer, found null"))
    }

    /// 3. Channel counts, image size and the numeric options within their limits.
    fn check_sizes(&self, n: usize, groups: usize) -> Result<()> {
        in_range("in_channels", self.in_channels, MAX_IMAGE_CHANNELS)?;
        in_range("out_channels", self.out_channels, MAX_IMAGE_CHANNELS)?;
        // The schedulers combine the output with the sample element by element; a model with
        // more outputs (diffusers' learned variance: 2 x in_channels) is not implemented.
        if self.out_channels != self.in_channels {
            return Err(Error::unsupported(format!(
                "out_channels: expected in_channels = {} (the schedulers step the sample with the model's output), found {}",
                self.in_channels, self.out_channels
            )));
        }
        in_range(
            "layers_per_block",
            self.layers_per_block,
            MAX_LAYERS_PER_BLOCK,
        )?;
        in_range("norm_num_groups", groups, MAX_CHANNELS)?;
        if let Some([h, w]) = self.sample_hw() {
            in_range("sample_size (height)", h, MAX_SAMPLE_SIZE)?;
            in_range("sample_size (width)", w, MAX_SAMPLE_SIZE)?;
            // Each down block but the last halves the image, each up block doubles it back;
            // the skip connections only line up when every halving is exact.
            let factor = 1usize << (n - 1);
            if h % factor != 0 || w % factor != 0 {
                return Err(Error::config(format!(
                    "sample_size: expected a height and width divisible by {factor} (one halving per down block after the first), found {h}x{w}"
                )));
            }
        }
        if let Some(g) = self.attn_norm_num_groups {
            in_range("attn_norm_num_groups", g, MAX_CHANNELS)?;
        }
        if let Some(c) = self.num_class_embeds {
            in_range("num_class_embeds", c, MAX_CLASSES)?;
        }
        if !(self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(Error::config(format!(
                "norm_eps: expected a small positive number, found {}",
                self.norm_eps
            )));
        }
        if !self.freq_shift.is_finite() {
            return Err(Error::config(format!(
                "freq_shift: expected a finite number, found {}",
                self.freq_shift
            )));
        }
        // torch's Dropout refuses a probability outside [0, 1] (it is unused at inference).
        if !(0.0..=1.0).contains(&self.dropout) {
            return Err(Error::config(format!(
                "dropout: expected a probability from 0 to 1, found {}",
                self.dropout
            )));
        }
        if !(self.mid_block_scale_factor.is_finite() && self.mid_block_scale_factor != 0.0) {
            return Err(Error::config(format!(
                "mid_block_scale_factor: expected a finite non-zero number, found {}",
                self.mid_block_scale_factor
            )));
        }
        Ok(())
    }

    /// 4. Every GroupNorm, attention head split and skip concatenation divides evenly.
    fn check_channels(&self, n: usize, groups: usize) -> Result<()> {
        let attn_groups = self.attn_norm_num_groups.unwrap_or(groups);
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            in_range(&format!("block_out_channels[{i}]"), c, MAX_CHANNELS)?;
            if c % groups != 0 {
                return Err(Error::config(format!(
                    "block_out_channels[{i}] = {c} is not divisible by norm_num_groups = {groups}"
                )));
            }
            let head_dim = self.attention_head_dim.unwrap_or(c);
            let uses_attn = self.level_has_attention(i);
            if uses_attn {
                if head_dim == 0 || c % head_dim != 0 {
                    return Err(Error::config(format!(
                        "block_out_channels[{i}] = {c} is not divisible by attention_head_dim = {head_dim}"
                    )));
                }
                if i == n - 1 && c % attn_groups != 0 {
                    return Err(Error::config(format!(
                        "block_out_channels[{i}] = {c} is not divisible by attn_norm_num_groups = {attn_groups}"
                    )));
                }
            }
        }
        in_range(
            "time_embedding_dim (default: block_out_channels[0] * 4)",
            self.time_embed_dim(),
            MAX_CHANNELS * 4,
        )?;
        // Skip connections concatenate channels of neighbouring levels: every sum must divide too.
        check_skip_concats(&self.block_out_channels, groups)?;
        if self.time_embed_dim() % 2 != 0 && self.block_out_channels[0] % 2 != 0 {
            return Err(Error::unsupported(format!(
                "block_out_channels[0]: expected an even number (sinusoidal embedding), found {}",
                self.block_out_channels[0]
            )));
        }
        Ok(())
    }
}

/// The channel counts the up path concatenates (the state from below with a skip state, for each
/// up block) are each divisible by the norm's `groups`; shared by both U-Nets, whose up paths
/// are laid out alike.
pub(crate) fn check_skip_concats(ch: &[usize], groups: usize) -> Result<()> {
    let n = ch.len();
    for i in 0..n {
        let prev = if i == 0 { ch[n - 1] } else { ch[n - i] };
        let skip = ch[n - 1 - i.min(n - 1)];
        for c in [prev + skip, ch[n - 1 - i] * 2] {
            if c % groups != 0 {
                return Err(Error::config(format!(
                    "up block {i} concatenates {c} channels, not divisible by norm_num_groups = {groups}"
                )));
            }
        }
    }
    Ok(())
}
