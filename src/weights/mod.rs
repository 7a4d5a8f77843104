//! Weights: the safetensors container ([`container`]) and quantization with its inverse
//! ([`quant`]); no model knowledge (the model file that ties a model's configs to its tensors is
//! `models::model_file`). A model asks a [`TensorSource`] for each parameter by its diffusers
//! name.

pub mod container;
pub mod quant;

use burn::tensor::Tensor;

pub use container::{Container, Dtype, OwnedTensor, TensorView};
pub use quant::{Quant, QuantError, INT4_GROUP};

use crate::error::Result;

/// Suffix of the scale tensor stored beside each int8 / int4 weight.
pub const SCALE_SUFFIX: &str = ".scale";

/// Where the model's parameters come from, by diffusers name and expected shape.
pub trait TensorSource {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>>;
}
