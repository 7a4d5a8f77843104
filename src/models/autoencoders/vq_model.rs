//! `VQModel`: diffusers `models/autoencoders/vq_model.py`, the vector-quantized autoencoder of
//! latent diffusion (Rombach et al. 2022, sec. 3, "VQ-reg."; Esser et al. 2021, VQGAN): the
//! first stage of the unconditional LDMs (`CompVis/ldm-celebahq-256`). The encoder and decoder
//! are [`vae`](super::vae)'s (the encoder without `double_z`), between them a 1x1 `quant_conv`
//! to the codebook's width, the [`VectorQuantizer`] and a 1x1 `post_quant_conv` back. The config
//! is diffusers' `config.json`; the parameter paths are its state-dict names
//! (`encoder.conv_in.weight`, `quantize.embedding.weight`, ...).

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::autoencoder_kl::{DownEncoderBlockType, UpDecoderBlockType};
use super::vae::{Decoder, Encoder, Quantized, VaeShape, VectorQuantizer};
use crate::config::{config_enum, in_range, parse_model_config};
use crate::error::{Error, Result};
use crate::models::layers::{Conv2d, Conv2dConfig};
use crate::models::unets::unet_2d_config::{ActFn, SampleSize, MAX_CHANNELS};
use crate::weights::TensorSource;

/// Largest codebook accepted (`num_vq_embeddings`); LDM's largest is 16384.
pub const MAX_CODEBOOK: usize = 1 << 20;

config_enum! {
    /// `norm_type` of the decoder. diffusers also has `spatial` (MoVQ's `SpatialNorm`,
    /// conditioned on the quantized latents), not implemented.
    pub enum NormType {
        Group = "group",
    }
}

/// The config of diffusers' `VQModel`, with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VQModelConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<DownEncoderBlockType>,
    pub up_block_types: Vec<UpDecoderBlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: ActFn,
    pub latent_channels: usize,
    pub sample_size: Option<SampleSize>,
    /// Entries of the codebook.
    pub num_vq_embeddings: usize,
    pub norm_num_groups: usize,
    /// Width of the codebook entries; `None`: `latent_channels`.
    pub vq_embed_dim: Option<usize>,
    /// `LDMPipeline` divides the final latents by it before decoding (the pipeline does this,
    /// not the model).
    pub scaling_factor: f64,
    pub norm_type: NormType,
    pub mid_block_add_attention: bool,
    /// Whether `decode(h, force_not_quantize=True)` reads `h` as codebook indices (aMUSEd's
    /// VQ); refused, as decoding indices is [`VectorQuantizer::get_codebook_entry`]'s.
    pub lookup_from_codebook: bool,
    /// Whether diffusers runs this model in f32 even in an f16 pipeline.
    pub force_upcast: bool,
}

impl Default for VQModelConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec![DownEncoderBlockType::DownEncoderBlock2D],
            up_block_types: vec![UpDecoderBlockType::UpDecoderBlock2D],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: ActFn::Silu,
            latent_channels: 3,
            sample_size: Some(SampleSize::Square(32)),
            num_vq_embeddings: 256,
            norm_num_groups: 32,
            vq_embed_dim: None,
            scaling_factor: 0.18215,
            norm_type: NormType::Group,
            mid_block_add_attention: true,
            lookup_from_codebook: false,
            force_upcast: false,
        }
    }
}

impl VQModelConfig {
    /// Parses a diffusers `config.json` and validates it.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = parse_model_config(text, "VQModel")?;
        config.validate()?;
        Ok(config)
    }

    /// The config as diffusers writes it (what a pipeline file stores).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The codebook's width: `vq_embed_dim`, else `latent_channels`.
    pub fn embed_dim(&self) -> usize {
        self.vq_embed_dim.unwrap_or(self.latent_channels)
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

    /// The cross-field checks and limits: the autoencoders' shared ones ([`VaeShape::validate`])
    /// and the codebook's.
    pub fn validate(&self) -> Result<()> {
        self.shape().validate(
            self.down_block_types.len(),
            self.up_block_types.len(),
            [self.in_channels, self.out_channels, self.latent_channels],
            self.scaling_factor,
        )?;
        in_range("vq_embed_dim", self.embed_dim(), MAX_CHANNELS)?;
        in_range("num_vq_embeddings", self.num_vq_embeddings, MAX_CODEBOOK)?;
        if self.lookup_from_codebook {
            return Err(Error::unsupported(
                "lookup_from_codebook: expected false (decode quantizes its input), found true (decoding codebook indices)",
            ));
        }
        Ok(())
    }
}

/// What [`VQModel::decode`] returns (diffusers' `DecoderOutput`).
#[derive(Debug, Clone)]
pub struct VqDecoderOutput {
    /// The image `[B, out, H, W]`, in about [-1, 1].
    pub sample: Tensor<4>,
    /// The quantizer's commitment loss (`[1]`), or zeros `[B]` when nothing was quantized.
    pub commit_loss: Tensor<1>,
}

/// `VQModel`: `encode` an image to latents, `decode` latents (quantized first) to an image.
#[derive(Debug, Clone)]
pub struct VQModel {
    pub config: VQModelConfig,
    pub encoder: Encoder,
    pub quant_conv: Conv2d,
    pub quantize: VectorQuantizer,
    pub post_quant_conv: Conv2d,
    pub decoder: Decoder,
    device: Device,
}

impl VQModel {
    /// Builds the autoencoder, taking every parameter from `src` by its diffusers name.
    pub fn load(
        config: &VQModelConfig,
        src: &mut impl TensorSource,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let shape = config.shape();
        let (l, d) = (config.latent_channels, config.embed_dim());
        Ok(Self {
            encoder: Encoder::load(src, "encoder", &shape, config.in_channels, l, false)?,
            quant_conv: Conv2d::load(src, "quant_conv", Conv2dConfig::same(l, d, 1))?,
            quantize: VectorQuantizer::load(src, "quantize", config.num_vq_embeddings, d)?,
            post_quant_conv: Conv2d::load(src, "post_quant_conv", Conv2dConfig::same(d, l, 1))?,
            decoder: Decoder::load(src, "decoder", &shape, l, config.out_channels)?,
            config: config.clone(),
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `[B, in, H, W]` in [-1, 1] -> the latents before quantization,
    /// `[B, vq_embed_dim, H / f, W / f]` (diffusers' `encode(x).latents`).
    pub fn encode(&self, x: Tensor<4>) -> Tensor<4> {
        self.quant_conv.forward(self.encoder.forward(x))
    }

    /// Latents `[B, vq_embed_dim, h, w]` -> their nearest codebook entries, the loss and the
    /// indices.
    pub fn quantize(&self, h: Tensor<4>) -> Quantized {
        self.quantize.forward(h)
    }

    /// Latents `[B, vq_embed_dim, h, w]` -> the image: quantized first unless
    /// `force_not_quantize`, then `post_quant_conv` and the decoder. `LDMPipeline` calls it
    /// with the final latents divided by `scaling_factor`, quantizing them.
    pub fn decode(&self, h: Tensor<4>, force_not_quantize: bool) -> VqDecoderOutput {
        let (quant, commit_loss) = if force_not_quantize {
            let zeros = Tensor::zeros([h.dims()[0]], &h.device());
            (h, zeros)
        } else {
            let q = self.quantize.forward(h);
            (q.quant, q.loss)
        };
        VqDecoderOutput {
            sample: self.decoder.forward(self.post_quant_conv.forward(quant)),
            commit_loss,
        }
    }
}
