//! diffusers' `models/autoencoders/`: the first stage of latent diffusion, which maps images to
//! latents and back (`AutoencoderKL`: Stable Diffusion's VAE; `VQModel`: the vector-quantized
//! autoencoder of the unconditional LDMs; `AutoencoderTiny`: TAESD, for cheap previews).

pub mod autoencoder_kl;
pub mod autoencoder_tiny;
pub mod vae;
pub mod vq_model;

pub use autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
pub use autoencoder_tiny::{AutoencoderTiny, AutoencoderTinyConfig};
pub use vae::{Decoder, DiagonalGaussianDistribution, Encoder, Quantized, VectorQuantizer};
pub use vq_model::{VQModel, VQModelConfig};
