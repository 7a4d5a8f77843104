//! Weights: the safetensors container ([`container`]), quantization and its inverse
//! ([`quant`]) and the model file that holds a model's tensors and configs ([`model_file`]).
//! A model asks a [`TensorSource`] for each parameter by its diffusers name.

pub mod container;
pub mod model_file;
pub mod quant;

use burn::tensor::Tensor;

pub use container::{Container, Dtype, OwnedTensor, TensorView};
pub use model_file::{write_model_file, FileSource, ModelFile, ModelMeta, TensorReport};
pub use quant::{Quant, QuantError, INT4_GROUP};

use crate::error::Result;

/// `__metadata__["format"]` of every model file.
pub const FORMAT_TAG: &str = "wasm-diffusion";
/// `__metadata__["format_version"]` written by this version.
pub const FORMAT_VERSION: u32 = 1;
/// Suffix of the scale tensor stored beside each int8 / int4 weight.
pub const SCALE_SUFFIX: &str = ".scale";

/// Where the model's parameters come from, by diffusers name and expected shape.
pub trait TensorSource {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>>;
}

/// Which tensors are kept in f32 whatever the quantization: every 1-D tensor (biases and norm
/// scales are tiny, and an error there shifts a whole channel), `conv_in` / `conv_out` (they
/// touch pixels directly and hold a few thousand values) and the class embedding table (a
/// lookup table, not a matrix with output channels).
pub fn keeps_f32(name: &str, shape: &[usize]) -> bool {
    shape.len() < 2
        || matches!(
            name,
            "conv_in.weight" | "conv_out.weight" | "class_embedding.weight"
        )
}
