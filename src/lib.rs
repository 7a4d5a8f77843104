//! wasm-diffusion: diffusers-compatible `UNet2DModel` sampling (DDPM, DDIM, DPM-Solver++) on
//! burn, for WebGPU in the browser and a native CLI. Module map, in data-path order (lower
//! layers never import upper ones):
//!
//! bytes -> [`weights`] (model file, quantization) -> [`models`] (U-Net, layers; CPU kernels in
//! [`backend`]) -> [`pipelines`] (the step-wise run: [`schedulers`], [`noise`], guidance)
//! -> [`image`] -> `web` (the only wasm-bindgen face) / the CLI.

pub mod backend;
pub mod config;
pub mod convert;
pub mod error;
pub mod image;
pub mod memory;
pub mod models;
pub mod noise;
pub mod pipelines;
pub mod schedulers;
pub mod text;
pub mod weights;

pub use error::{Error, ErrorKind, Result};
pub use memory::MemoryBudget;
pub use models::unets::{UNet2DConfig, UNet2DModel};
pub use models::{load_model, load_model_within, LoadedModel};
pub use pipelines::{SampleOptions, SamplingRun};
pub use schedulers::{SchedulerConfig, SchedulerKind};

#[cfg(all(target_arch = "wasm32", feature = "web"))]
pub mod web;
