//! wasm-diffusion: diffusers-compatible `UNet2DModel` sampling (DDPM, DDIM, DPM-Solver++) on
//! burn, for WebGPU in the browser and a native CLI. Module map, in data-path order:
//! bytes -> [`weights`] -> [`model`] (U-Net) -> [`pipeline`] ([`schedulers`], [`noise`]) -> [`image`].

pub mod config;
pub mod convert;
pub mod error;
pub mod image;
pub mod memory;
pub mod model;
pub mod noise;
pub mod pipeline;
pub mod schedulers;
pub mod weights;

pub use config::{SchedulerConfig, SchedulerKind, UNet2DConfig};
pub use error::{Error, ErrorKind, Result};
pub use memory::MemoryBudget;
pub use model::{load_model, load_model_within, LoadedModel, UNet2DModel};

#[cfg(all(target_arch = "wasm32", feature = "web"))]
pub mod web;
