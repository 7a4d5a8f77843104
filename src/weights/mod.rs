//! Weights: the safetensors container ([`container`]) and quantization with its inverse
//! ([`quant`]); no model knowledge (the model file that ties a model's configs to its tensors is
//! `models::model_file`). A model asks a [`TensorSource`] for each parameter by its diffusers
//! name.

pub mod container;
pub mod quant;

use burn::tensor::{Device, Tensor, TensorData};

pub use container::{Container, Dtype, OwnedTensor, TensorView};
pub use quant::{Quant, QuantError, INT4_GROUP};

use crate::error::{Error, Result};

/// Suffix of the scale tensor stored beside each int8 / int4 weight.
pub const SCALE_SUFFIX: &str = ".scale";

/// Where the model's parameters come from, by diffusers name and expected shape.
pub trait TensorSource {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>>;
}

/// A [`TensorSource`] over a plain safetensors file as diffusers saves it
/// (`diffusion_pytorch_model.safetensors`: f32, f16 or bf16 tensors under their state-dict
/// names), read to f32 on `device`.
pub struct ContainerSource<'c, 'a> {
    pub container: &'c Container<'a>,
    pub device: Device,
}

impl TensorSource for ContainerSource<'_, '_> {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let view = self.container.expect(name, &shape, "the model config")?;
        if view.shape != shape {
            return Err(Error::format(format!(
                "tensor `{name}`: expected shape {shape:?} (from the config), found {:?}",
                view.shape
            )));
        }
        let values = view.to_f32(name)?;
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            &self.device,
        ))
    }
}
