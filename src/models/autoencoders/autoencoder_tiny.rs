//! `AutoencoderTiny` (TAESD, madebyollin/taesd): diffusers `models/autoencoders/autoencoder_tiny.py`
//! and `vae.py`'s `EncoderTiny` / `DecoderTiny`. A small convolutional autoencoder distilled to
//! Stable Diffusion's latent space: cheap enough to decode a preview of every step.
//!
//! Both halves are one `nn.Sequential` in diffusers (`layers.{k}` counts activations and
//! upsamplers too, which hold no parameters); [`TinyLayer`] mirrors its entries.

use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::{config_enum, parse_model_config};
use crate::error::{Error, Result};
use crate::models::layers::{Conv2d, Conv2dConfig};
use crate::models::resnet::upsample_nearest_2x;
use crate::models::unets::unet_2d_config::{MAX_BLOCKS, MAX_CHANNELS, MAX_IMAGE_CHANNELS};
use crate::weights::TensorSource;

config_enum! {
    /// `act_fn` of TAESD's blocks.
    pub enum TinyActFn {
        Relu = "relu",
    }
}

config_enum! {
    /// `upsample_fn` of the decoder.
    pub enum UpsampleFn {
        Nearest = "nearest",
    }
}

/// The config of diffusers' `AutoencoderTiny`, with its defaults (TAESD's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderTinyConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub encoder_block_out_channels: Vec<usize>,
    pub decoder_block_out_channels: Vec<usize>,
    /// Written by diffusers (a copy of the decoder's); not read.
    pub block_out_channels: Option<Vec<usize>>,
    pub act_fn: TinyActFn,
    pub upsample_fn: UpsampleFn,
    pub latent_channels: usize,
    pub upsampling_scaling_factor: usize,
    pub num_encoder_blocks: Vec<usize>,
    pub num_decoder_blocks: Vec<usize>,
    pub latent_magnitude: f64,
    pub latent_shift: f64,
    pub force_upcast: bool,
    pub scaling_factor: f64,
    pub shift_factor: f64,
}

impl Default for AutoencoderTinyConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: vec![64; 4],
            decoder_block_out_channels: vec![64; 4],
            block_out_channels: None,
            act_fn: TinyActFn::Relu,
            upsample_fn: UpsampleFn::Nearest,
            latent_channels: 4,
            upsampling_scaling_factor: 2,
            num_encoder_blocks: vec![1, 3, 3, 3],
            num_decoder_blocks: vec![3, 3, 3, 1],
            latent_magnitude: 3.0,
            latent_shift: 0.5,
            force_upcast: false,
            scaling_factor: 1.0,
            shift_factor: 0.0,
        }
    }
}

impl AutoencoderTinyConfig {
    /// Parses a diffusers `config.json` and validates it.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = parse_model_config(text, "AutoencoderTiny")?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        for (name, channels, blocks) in [
            (
                "encoder",
                &self.encoder_block_out_channels,
                &self.num_encoder_blocks,
            ),
            (
                "decoder",
                &self.decoder_block_out_channels,
                &self.num_decoder_blocks,
            ),
        ] {
            let n = channels.len();
            if n == 0 || n > MAX_BLOCKS || blocks.len() != n {
                return Err(Error::config(format!(
                    "{name}_block_out_channels / num_{name}_blocks: expected 1 to {MAX_BLOCKS} levels each, the same number, found {n} and {}",
                    blocks.len()
                )));
            }
            // Each level's blocks keep its width; a level change happens in a convolution that
            // diffusers builds with the new width on both sides, so all levels must agree.
            if channels
                .iter()
                .any(|&c| c == 0 || c > MAX_CHANNELS || c != channels[0])
            {
                return Err(Error::unsupported(format!(
                    "{name}_block_out_channels: expected one width from 1 to {MAX_CHANNELS} for every level, found {channels:?}"
                )));
            }
            if blocks.iter().any(|&b| b > 64) {
                return Err(Error::config(format!(
                    "num_{name}_blocks: expected at most 64 per level, found {blocks:?}"
                )));
            }
        }
        for (name, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
        ] {
            if v == 0 || v > MAX_IMAGE_CHANNELS {
                return Err(Error::config(format!(
                    "{name}: expected 1 to {MAX_IMAGE_CHANNELS}, found {v}"
                )));
            }
        }
        if self.upsampling_scaling_factor != 2 {
            return Err(Error::unsupported(format!(
                "upsampling_scaling_factor: expected 2, found {}",
                self.upsampling_scaling_factor
            )));
        }
        Ok(())
    }
}

/// `AutoencoderTinyBlock`: `relu(conv(x) + skip(x))`, `conv` = 3x3, ReLU, 3x3, ReLU, 3x3.
#[derive(Debug, Clone)]
pub struct TinyBlock {
    pub conv: [Conv2d; 3],
    /// A 1x1 conv without bias when the width changes.
    pub skip: Option<Conv2d>,
}

impl TinyBlock {
    fn load(src: &mut impl TensorSource, prefix: &str, c_in: usize, c_out: usize) -> Result<Self> {
        let conv = |src: &mut _, i: usize, c: usize| {
            Conv2d::load(
                src,
                &format!("{prefix}.conv.{i}"),
                Conv2dConfig::same(c, c_out, 3),
            )
        };
        Ok(Self {
            conv: [
                conv(src, 0, c_in)?,
                conv(src, 2, c_out)?,
                conv(src, 4, c_out)?,
            ],
            skip: if c_in != c_out {
                let p = format!("{prefix}.skip");
                Some(Conv2d::load_with_bias(
                    src,
                    &p,
                    Conv2dConfig::same(c_in, c_out, 1),
                    false,
                )?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = relu(self.conv[0].forward(x.clone()));
        let h = relu(self.conv[1].forward(h));
        let h = self.conv[2].forward(h);
        let skip = match &self.skip {
            Some(s) => s.forward(x),
            None => x,
        };
        relu(h + skip)
    }
}

/// One entry of the `nn.Sequential`.
#[derive(Debug, Clone)]
// Loaded once and walked in order; the parameter-free entries being small saves nothing.
#[allow(clippy::large_enum_variant)]
pub enum TinyLayer {
    Conv(Conv2d),
    Block(TinyBlock),
    Relu,
    Upsample,
}

impl TinyLayer {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            TinyLayer::Conv(c) => c.forward(x),
            TinyLayer::Block(b) => b.forward(x),
            TinyLayer::Relu => relu(x),
            TinyLayer::Upsample => upsample_nearest_2x(x),
        }
    }
}

/// Appends the entry built by `f` at the next index of `layers` (named `{prefix}.layers.{k}`).
fn push(
    layers: &mut Vec<TinyLayer>,
    prefix: &str,
    f: impl FnOnce(&str) -> Result<TinyLayer>,
) -> Result<()> {
    let layer = f(&format!("{prefix}.layers.{}", layers.len()))?;
    layers.push(layer);
    Ok(())
}

/// `AutoencoderTiny`: `encode` an image to latents, `decode` latents to an image (both without
/// a distribution: TAESD is deterministic).
#[derive(Debug, Clone)]
pub struct AutoencoderTiny {
    pub config: AutoencoderTinyConfig,
    pub encoder: Vec<TinyLayer>,
    pub decoder: Vec<TinyLayer>,
    device: Device,
}

impl AutoencoderTiny {
    pub fn load(
        config: &AutoencoderTinyConfig,
        src: &mut impl TensorSource,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let conv3 = |c_in, c_out, stride, bias: bool| {
            move |src: &mut _, p: &str| -> Result<TinyLayer> {
                let c = Conv2dConfig {
                    stride,
                    ..Conv2dConfig::same(c_in, c_out, 3)
                };
                Ok(TinyLayer::Conv(Conv2d::load_with_bias(src, p, c, bias)?))
            }
        };
        // Encoder: a conv in, then per level (a stride-2 conv after the first) its blocks,
        // then a conv to the latent channels.
        let mut encoder = Vec::new();
        let ch = &config.encoder_block_out_channels;
        for (i, &blocks) in config.num_encoder_blocks.iter().enumerate() {
            let c = ch[i];
            let first = if i == 0 {
                conv3(config.in_channels, c, 1, true)
            } else {
                conv3(c, c, 2, false)
            };
            push(&mut encoder, "encoder", |p| first(src, p))?;
            for _ in 0..blocks {
                push(&mut encoder, "encoder", |p| {
                    Ok(TinyLayer::Block(TinyBlock::load(src, p, c, c)?))
                })?;
            }
        }
        let last = *ch.last().unwrap_or(&0);
        push(&mut encoder, "encoder", |p| {
            conv3(last, config.latent_channels, 1, true)(src, p)
        })?;
        // Decoder: a conv in and ReLU, then per level its blocks, a 2x upsample (but the last)
        // and a conv (bias-free but the last, which maps to the image channels).
        let mut decoder = Vec::new();
        let ch = &config.decoder_block_out_channels;
        push(&mut decoder, "decoder", |p| {
            conv3(config.latent_channels, ch[0], 1, true)(src, p)
        })?;
        decoder.push(TinyLayer::Relu);
        let n = config.num_decoder_blocks.len();
        for (i, &blocks) in config.num_decoder_blocks.iter().enumerate() {
            let c = ch[i];
            for _ in 0..blocks {
                push(&mut decoder, "decoder", |p| {
                    Ok(TinyLayer::Block(TinyBlock::load(src, p, c, c)?))
                })?;
            }
            let is_final = i + 1 == n;
            if !is_final {
                decoder.push(TinyLayer::Upsample);
            }
            let out = if is_final { config.out_channels } else { c };
            push(&mut decoder, "decoder", |p| {
                conv3(c, out, 1, is_final)(src, p)
            })?;
        }
        Ok(Self {
            config: config.clone(),
            encoder,
            decoder,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `[B, in, H, W]` in [-1, 1] -> latents `[B, latent, H / f, W / f]`.
    pub fn encode(&self, x: Tensor<4>) -> Tensor<4> {
        // TAESD's encoder reads images in [0, 1].
        let mut x = (x + 1.0) / 2.0;
        for layer in &self.encoder {
            x = layer.forward(x);
        }
        x
    }

    /// Latents -> the image `[B, out, H, W]` in [-1, 1].
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        // Latents are soft-clamped to [-3, 3] (diffusers' `DecoderTiny`).
        let mut x = (z / 3.0).tanh() * 3.0;
        for layer in &self.decoder {
            x = layer.forward(x);
        }
        x * 2.0 - 1.0
    }
}
