//! diffusers' `models/autoencoders/`: the first stage of latent diffusion, which maps images to
//! latents and back (`AutoencoderKL`: Stable Diffusion's VAE).

pub mod autoencoder_kl;
pub mod vae;

pub use autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
pub use vae::{Decoder, DiagonalGaussianDistribution, Encoder};
