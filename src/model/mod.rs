//! The denoising network: diffusers' `UNet2DModel` and the blocks it is made of, one file per
//! diffusers file. Backend-agnostic: the same code runs on WebGPU (wgpu) and the CPU (flex).

pub mod attention;
pub mod cpu;
pub mod embeddings;
pub mod layers;
pub mod resnet;
pub mod unet_2d;
pub mod unet_2d_blocks;

pub use unet_2d::{Trace, UNet2DModel};

use burn::tensor::{Device, Tensor};

use crate::config::UNet2DConfig;
use crate::error::Result;
use crate::weights::{FileSource, ModelFile, ModelMeta, TensorSource};

/// Records the name and shape of every parameter a config asks for, without loading any.
/// It hands back 1-element placeholders on the CPU so that [`UNet2DModel::load`] can run
/// unchanged: the U-Net code is the single description of which tensors exist.
struct ShapeRecorder {
    entries: Vec<(String, Vec<usize>)>,
    device: Device,
}

impl TensorSource for ShapeRecorder {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        self.entries.push((name.to_string(), shape.to_vec()));
        Ok(Tensor::zeros([1; D], &self.device))
    }
}

/// Every parameter of the U-Net described by `config`: (diffusers name, shape), in load order.
pub fn parameter_shapes(config: &UNet2DConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let mut rec = ShapeRecorder {
        entries: Vec::new(),
        device: Device::flex(),
    };
    UNet2DModel::load(config, &mut rec, &Device::flex())?;
    Ok(rec.entries)
}

/// Number of parameters of the U-Net described by `config`.
pub fn parameter_count(config: &UNet2DConfig) -> Result<usize> {
    Ok(parameter_shapes(config)?
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum())
}

/// A U-Net loaded from a model file, with the file's metadata (scheduler config, classes).
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub unet: std::sync::Arc<UNet2DModel>,
    pub meta: ModelMeta,
}

/// Bytes of a model file -> validated U-Net on `device`. Everything in the file is checked
/// against the config before any tensor is dequantized or uploaded.
pub fn load_model(bytes: &[u8], device: &Device) -> Result<LoadedModel> {
    let file = ModelFile::parse(bytes)?;
    let expected = parameter_shapes(&file.meta.unet)?;
    file.check(&expected)?;
    let mut src = FileSource {
        file: &file,
        device: device.clone(),
    };
    let unet = UNet2DModel::load(&file.meta.unet, &mut src, device)?;
    Ok(LoadedModel {
        unet: std::sync::Arc::new(unet),
        meta: file.meta.clone(),
    })
}
