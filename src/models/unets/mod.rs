//! diffusers' `models/unets/`: the denoising U-Nets, their blocks and their configs.

pub mod unet_2d;
pub mod unet_2d_blocks;
pub mod unet_2d_condition;
pub mod unet_2d_config;
pub mod unet_2d_memory;

pub use unet_2d::{Trace, UNet2DModel};
pub use unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
pub use unet_2d_config::UNet2DConfig;
