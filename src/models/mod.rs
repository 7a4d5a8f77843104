//! diffusers' `models/`: the networks, one file per diffusers file (the U-Nets in [`unets`],
//! the layers they share beside it), and loading one from a model file. Backend-agnostic: the
//! same code runs on WebGPU (wgpu) and the CPU (flex); CPU kernels live in [`crate::backend`].

pub mod attention;
pub mod autoencoders;
pub mod embeddings;
pub mod layers;
pub mod model_file;
pub mod resnet;
pub mod transformers;
pub mod unets;

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::memory::{fmt_bytes, MemoryBudget};
use crate::models::model_file::{ModelFile, ModelMeta};
use crate::models::unets::unet_2d_memory::check_run;
use crate::models::unets::{UNet2DConfig, UNet2DModel};
use crate::weights::{ShapeRecorder, StoredSource};

/// Every parameter of the U-Net described by `config`: (diffusers name, shape), in load order.
pub fn parameter_shapes(config: &UNet2DConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let mut rec = ShapeRecorder::default();
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
    /// What the device can hold; every run is checked against it ([`crate::memory`]).
    pub budget: MemoryBudget,
    /// Bytes of the f32 weights held in the budget's memory (0 when they live on a GPU).
    pub resident_bytes: u64,
}

/// Bytes of a model file -> validated U-Net on `device`, with the native memory budget.
pub fn load_model(bytes: &[u8], device: &Device) -> Result<LoadedModel> {
    load_model_within(bytes, device, MemoryBudget::NATIVE)
}

/// Bytes of a model file -> validated U-Net on `device`. Everything in the file is checked
/// against the config, and the weights plus one image's run against `budget`, before any
/// tensor is dequantized or uploaded.
pub fn load_model_within(
    bytes: &[u8],
    device: &Device,
    budget: MemoryBudget,
) -> Result<LoadedModel> {
    let file = ModelFile::parse(bytes)?;
    let expected = parameter_shapes(&file.meta.unet)?;
    file.check(&expected)?;
    let resident_bytes = check_weights(&file.meta, &expected, bytes.len(), &budget, device)?;
    let mut src = StoredSource {
        container: &file.container,
        device: device.clone(),
    };
    let unet = UNet2DModel::load(&file.meta.unet, &mut src, device)?;
    Ok(LoadedModel {
        unet: std::sync::Arc::new(unet),
        meta: file.meta.clone(),
        budget,
        resident_bytes,
    })
}

/// Refuses a model whose f32 weights (beside the file's own bytes, still held by the caller)
/// and one unguided image do not fit `budget`, or one of whose tensors exceeds the largest
/// buffer. Returns the bytes the weights take inside the budget.
fn check_weights(
    meta: &ModelMeta,
    expected: &[(String, Vec<usize>)],
    file_bytes: usize,
    budget: &MemoryBudget,
    device: &Device,
) -> Result<u64> {
    let name = meta.name.as_deref().unwrap_or("this model");
    let params: u64 = expected
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum();
    if let Some((tensor, shape)) = expected
        .iter()
        .find(|(_, s)| 4 * s.iter().product::<usize>() as u64 > budget.largest_buffer)
    {
        return Err(Error::memory(format!(
            "{name}: tensor `{tensor}` {shape:?} needs {} in f32, above {} ({})",
            fmt_bytes(4 * shape.iter().product::<usize>() as u64),
            fmt_bytes(budget.largest_buffer),
            budget.what
        )));
    }
    // Held once on every backend: on the CPU as the host values its kernels read
    // (backend::Param), elsewhere as device tensors.
    let resident = if budget.weights_inside {
        crate::memory::cpu_weight_bytes(expected.iter().map(|(_, s)| &s[..]))
    } else {
        0
    };
    let held = resident + file_bytes as u64;
    if held > budget.total {
        return Err(Error::memory(format!(
            "{name}: its {params} parameters take {} on the CPU beside the {} file, above {} ({})",
            fmt_bytes(resident),
            fmt_bytes(file_bytes as u64),
            fmt_bytes(budget.total),
            budget.what
        )));
    }
    if let Some(hw) = meta.unet.sample_hw() {
        let cpu = *device == Device::flex();
        check_run(&meta.unet, hw, 1, false, held, budget, cpu)?;
    }
    Ok(resident)
}
