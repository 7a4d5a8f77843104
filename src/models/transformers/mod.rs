//! diffusers' `models/transformers/`: the transformers that latent diffusion's U-Nets put at
//! each level (`Transformer2DModel`).

pub mod transformer_2d;

pub use transformer_2d::{Transformer2DConfig, Transformer2DModel};
