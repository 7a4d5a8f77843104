//! `AutoencoderKL`: diffusers `models/autoencoders/autoencoder_kl.py`, the KL-regularised
//! autoencoder of latent diffusion (Rombach et al. 2022, sec. 3): Stable Diffusion's VAE. The
//! config is diffusers' `config.json`; the parameter paths are its state-dict names
//! (`encoder.down_blocks.0.resnets.0.conv1.weight`, `quant_conv.weight`, ...).

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::vae::{Decoder, DiagonalGaussianDistribution, Encoder, VaeShape};
use crate::config::{config_enum, parse_model_config};
use crate::error::Result;
use crate::models::layers::{Conv2d, Conv2dConfig};
use crate::models::unets::unet_2d_config::{ActFn, SampleSize};
use crate::weights::TensorSource;

config_enum! {
    /// `down_block_types[i]` of an autoencoder.
    pub enum DownEncoderBlockType {
        DownEncoderBlock2D = "DownEncoderBlock2D",
    }
}

config_enum! {
    /// `up_block_types[i]` of an autoencoder.
    pub enum UpDecoderBlockType {
        UpDecoderBlock2D = "UpDecoderBlock2D",
    }
}

/// The config of diffusers' `AutoencoderKL`, with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<DownEncoderBlockType>,
    pub up_block_types: Vec<UpDecoderBlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: ActFn,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub sample_size: Option<SampleSize>,
    /// Latents are multiplied by it after encoding and divided by it before decoding (the
    /// pipelines do this, not the model).
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub latents_mean: Option<Vec<f64>>,
    pub latents_std: Option<Vec<f64>>,
    /// Whether diffusers runs this VAE in f32 even in an f16 pipeline (SD's VAE overflows f16).
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

impl Default for AutoencoderKLConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec![DownEncoderBlockType::DownEncoderBlock2D],
            up_block_types: vec![UpDecoderBlockType::UpDecoderBlock2D],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: ActFn::Silu,
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: Some(SampleSize::Square(32)),
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl AutoencoderKLConfig {
    /// Parses a diffusers `config.json` and validates it.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = parse_model_config(text, "AutoencoderKL")?;
        config.validate()?;
        Ok(config)
    }

    /// How much smaller the latent is than the image on each side.
    pub fn downscale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// The encoder's and decoder's shape.
    pub(crate) fn shape(&self) -> VaeShape {
        VaeShape {
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: self.layers_per_block,
            norm_num_groups: self.norm_num_groups,
            mid_attention: self.mid_block_add_attention,
        }
    }

    /// The cross-field checks and limits ([`VaeShape::validate`]).
    pub fn validate(&self) -> Result<()> {
        self.shape().validate(
            self.down_block_types.len(),
            self.up_block_types.len(),
            [self.in_channels, self.out_channels, self.latent_channels],
            self.scaling_factor,
        )
    }
}

/// `AutoencoderKL`: `encode` an image to a latent distribution, `decode` a latent to an image.
#[derive(Debug, Clone)]
pub struct AutoencoderKL {
    pub config: AutoencoderKLConfig,
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub quant_conv: Option<Conv2d>,
    pub post_quant_conv: Option<Conv2d>,
    device: Device,
}

impl AutoencoderKL {
    /// Builds the autoencoder, taking every parameter from `src` by its diffusers name.
    pub fn load(
        config: &AutoencoderKLConfig,
        src: &mut impl TensorSource,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let shape = config.shape();
        let l = config.latent_channels;
        let one_by_one = |src: &mut _, name: &str, c: usize, on: bool| -> Result<Option<Conv2d>> {
            if on {
                Ok(Some(Conv2d::load(src, name, Conv2dConfig::same(c, c, 1))?))
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            encoder: Encoder::load(src, "encoder", &shape, config.in_channels, l, true)?,
            decoder: Decoder::load(src, "decoder", &shape, l, config.out_channels)?,
            quant_conv: one_by_one(src, "quant_conv", 2 * l, config.use_quant_conv)?,
            post_quant_conv: one_by_one(src, "post_quant_conv", l, config.use_post_quant_conv)?,
            config: config.clone(),
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `[B, in, H, W]` in [-1, 1] -> the latent distribution (`[B, latent, H / f, W / f]`),
    /// before `scaling_factor`.
    pub fn encode(&self, x: Tensor<4>) -> DiagonalGaussianDistribution {
        let h = self.encoder.forward(x);
        let moments = match &self.quant_conv {
            Some(conv) => conv.forward(h),
            None => h,
        };
        DiagonalGaussianDistribution::new(moments)
    }

    /// A latent `[B, latent, h, w]` (already divided by `scaling_factor`) -> the image.
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z),
            None => z,
        };
        self.decoder.forward(z)
    }
}
