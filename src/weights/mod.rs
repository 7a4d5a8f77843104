//! Weights: the safetensors container ([`container`]) and quantization with its inverse
//! ([`quant`]); no model knowledge (the model file that ties a model's configs to its tensors is
//! `models::model_file`). A model asks a [`TensorSource`] for each parameter by its diffusers
//! name.

pub mod container;
pub mod quant;
pub mod stream;

use burn::tensor::{Device, Tensor, TensorData};

pub use container::{Container, Dtype, Entry, Header, OwnedTensor, TensorView};
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

/// A [`TensorSource`] over a model's stored tensors (f32, f16, bf16, or quantized by
/// [`quant::pack`]), dequantized to f32 on `device`. Check the file first
/// ([`quant::check_stored`]).
pub struct StoredSource<'c, 'a> {
    pub container: &'c Container<'a>,
    pub device: Device,
}

impl TensorSource for StoredSource<'_, '_> {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let values = quant::read_f32(self.container, name, &shape)?;
        if values.len() != shape.iter().product::<usize>() {
            return Err(Error::format(format!(
                "tensor `{name}`: expected {} values for shape {shape:?}, found {}",
                shape.iter().product::<usize>(),
                values.len()
            )));
        }
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            &self.device,
        ))
    }
}

/// Another source's tensors under `{prefix}.{name}` (one component of a file that holds
/// several).
pub struct Prefixed<'s, S> {
    pub inner: &'s mut S,
    pub prefix: String,
}

impl<S: TensorSource> TensorSource for Prefixed<'_, S> {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        self.inner.get(&format!("{}.{name}", self.prefix), shape)
    }
}

/// Records the name and shape of every parameter a model asks for, without loading any: it
/// hands back 1-element placeholders on the CPU so that a model's `load` runs unchanged (the
/// model code is the single description of which tensors exist).
#[derive(Default)]
pub struct ShapeRecorder {
    pub entries: Vec<(String, Vec<usize>)>,
}

impl TensorSource for ShapeRecorder {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        self.entries.push((name.to_string(), shape.to_vec()));
        Ok(Tensor::zeros([1; D], &Device::flex()))
    }
}
