//! The model file (diffusers' `models/model_loading_utils.py` in spirit: a model's config and
//! weights in one place): one safetensors file holding the U-Net weights under their diffusers names,
//! quantized or not, with the model and scheduler configs in its `__metadata__`, so that one
//! URL is all a user needs. See README "Model file format".
//!
//! Loading is two-phase: [`ModelFile::parse`] reads and checks the header, the metadata and
//! every tensor's dtype and shape against the list the config implies ([`ModelFile::check`])
//! before `weights::StoredSource` dequantizes anything into f32 device tensors.

use std::collections::BTreeMap;

use crate::config::shown;
use crate::error::{Error, Result};
use crate::models::unets::UNet2DConfig;
use crate::schedulers::SchedulerConfig;
use crate::weights::container::{self, Container};
use crate::weights::quant::{self, Quant, QuantError, INT4_GROUP};

/// `__metadata__["format"]` of every model file.
pub const FORMAT_TAG: &str = "wasm-diffusion";
/// `__metadata__["format_version"]` written by this version.
pub const FORMAT_VERSION: u32 = 1;

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

/// What the file's metadata says besides the tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    pub quant: Quant,
    pub unet: UNet2DConfig,
    pub scheduler: SchedulerConfig,
    /// The class used for the unconditional branch of classifier-free guidance.
    pub null_class: Option<usize>,
    /// Human-readable names of the classes, in label order (may be empty).
    pub class_names: Vec<String>,
    /// Free-form model name.
    pub name: Option<String>,
}

impl ModelMeta {
    fn to_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("format".into(), FORMAT_TAG.into());
        m.insert("format_version".into(), FORMAT_VERSION.to_string());
        m.insert("quantization".into(), self.quant.name().into());
        if self.quant == Quant::Int4 {
            m.insert("int4_group_size".into(), INT4_GROUP.to_string());
        }
        m.insert("unet_config".into(), self.unet.to_json());
        m.insert("scheduler_config".into(), self.scheduler.to_json());
        if let Some(n) = self.null_class {
            m.insert("null_class".into(), n.to_string());
        }
        if !self.class_names.is_empty() {
            m.insert(
                "class_names".into(),
                serde_json::to_string(&self.class_names).expect("strings"),
            );
        }
        if let Some(n) = &self.name {
            m.insert("name".into(), n.clone());
        }
        m
    }

    fn from_map(m: &BTreeMap<String, String>) -> Result<Self> {
        // 1. The format, its version and the quantization.
        let quant = format_and_quant(m)?;
        // 2. The model and scheduler configs.
        let unet = UNet2DConfig::from_json(need(m, "unet_config")?)?;
        let scheduler = SchedulerConfig::from_json(need(m, "scheduler_config")?)?;
        // 3. The class metadata, against the model's classes.
        let classes = unet.num_class_embeds.unwrap_or(0);
        let null_class = null_class(m, classes)?;
        let class_names = class_names(m, classes)?;
        Ok(Self {
            quant,
            unet,
            scheduler,
            null_class,
            class_names,
            name: m.get("name").cloned(),
        })
    }
}

/// Metadata key `k`, which every model file has.
fn need<'m>(m: &'m BTreeMap<String, String>, k: &str) -> Result<&'m str> {
    m.get(k).map(String::as_str).ok_or_else(|| {
        Error::format(format!(
            "metadata: expected key `{k}`, found none (not a {FORMAT_TAG} model file)"
        ))
    })
}

/// `format` and `format_version` name this format, and `quantization` (with
/// `int4_group_size` for int4) one this crate reads.
fn format_and_quant(m: &BTreeMap<String, String>) -> Result<Quant> {
    let tag = need(m, "format")?;
    if tag != FORMAT_TAG {
        return Err(Error::format(format!(
            "metadata `format`: expected `{FORMAT_TAG}`, found `{}`",
            shown(tag)
        )));
    }
    let version = need(m, "format_version")?;
    if version.parse::<u32>().ok() != Some(FORMAT_VERSION) {
        return Err(Error::unsupported(format!(
            "metadata `format_version`: expected {FORMAT_VERSION}, found `{}`",
            shown(version)
        )));
    }
    let q = need(m, "quantization")?;
    let quant = Quant::parse(q).ok_or_else(|| {
        Error::format(format!(
            "metadata `quantization`: expected f32, f16, int8 or int4, found `{}`",
            shown(q)
        ))
    })?;
    if quant == Quant::Int4 {
        let g = need(m, "int4_group_size")?;
        if g.parse::<usize>().ok() != Some(INT4_GROUP) {
            return Err(Error::unsupported(format!(
                "metadata `int4_group_size`: expected {INT4_GROUP}, found `{}`",
                shown(g)
            )));
        }
    }
    Ok(quant)
}

/// `null_class`, if present: a class below `k` (num_class_embeds).
fn null_class(m: &BTreeMap<String, String>, k: usize) -> Result<Option<usize>> {
    let Some(s) = m.get("null_class") else {
        return Ok(None);
    };
    let n = s.parse::<usize>().map_err(|_| {
        Error::format(format!(
            "metadata `null_class`: expected a non-negative integer, found `{}`",
            shown(s)
        ))
    })?;
    if n >= k {
        return Err(Error::config(format!(
            "metadata `null_class`: expected a class below num_class_embeds = {k}, found {n}"
        )));
    }
    Ok(Some(n))
}

/// `class_names`, if present: at most one name per class of the model's `classes`.
fn class_names(m: &BTreeMap<String, String>, classes: usize) -> Result<Vec<String>> {
    let class_names = match m.get("class_names") {
        Some(s) => serde_json::from_str::<Vec<String>>(s).map_err(|e| {
            Error::format(format!(
                "metadata `class_names`: expected a JSON list of strings, found `{}` ({e})",
                shown(s)
            ))
        })?,
        None => Vec::new(),
    };
    // Names label classes 0, 1, ...; the null class may go unnamed.
    if class_names.len() > classes {
        return Err(Error::config(format!(
            "metadata `class_names`: expected at most {classes} names (num_class_embeds), found {}",
            class_names.len()
        )));
    }
    Ok(class_names)
}

/// A parsed, validated model file borrowing the input bytes.
#[derive(Debug, Clone)]
pub struct ModelFile<'a> {
    pub meta: ModelMeta,
    pub container: Container<'a>,
}

impl<'a> ModelFile<'a> {
    /// Parses the container and metadata. Call [`check`](Self::check) with the expected
    /// tensor list before loading.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let container = Container::parse(bytes)?;
        if container.metadata.is_empty() {
            return Err(Error::format(format!(
                "expected `__metadata__` with format `{FORMAT_TAG}`, found none: this is a plain safetensors file (convert diffusers weights with `wasm-diffusion convert`)"
            )));
        }
        let meta = ModelMeta::from_map(&container.metadata)?;
        Ok(Self { meta, container })
    }

    /// Checks that the file holds exactly the `expected` tensors (name, logical shape), each
    /// stored in a dtype and packed shape this crate reads, with its scales where quantized.
    pub fn check(&self, expected: &[(String, Vec<usize>)]) -> Result<()> {
        quant::check_stored(&self.container, expected, "the model config")
    }

    /// The f32 values of tensor `name` (logical `shape`), dequantized if needed.
    pub fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        quant::read_f32(&self.container, name, shape)
    }
}

/// Per-tensor report of a conversion.
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub name: String,
    pub shape: Vec<usize>,
    pub stored_as: &'static str,
    pub bytes: usize,
    pub error: QuantError,
}

/// Writes a model file from f32 tensors (diffusers names), quantizing the large weights.
/// Returns the file bytes and a per-tensor report.
pub fn write_model_file(
    meta: &ModelMeta,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) -> Result<(Vec<u8>, Vec<TensorReport>)> {
    let mut out = BTreeMap::new();
    let mut report = Vec::new();
    for (name, (shape, values)) in tensors {
        let numel: usize = shape.iter().product();
        if numel != values.len() {
            return Err(Error::invalid(format!(
                "tensor `{name}`: expected {numel} values for shape {shape:?}, found {}",
                values.len()
            )));
        }
        let quant = if keeps_f32(name, shape) {
            Quant::F32
        } else {
            meta.quant
        };
        let quant::Packed {
            stored,
            restored,
            stored_as,
        } = quant::pack(name, shape, values, quant);
        let bytes = stored.iter().map(|(_, t)| t.data.len()).sum();
        report.push(TensorReport {
            name: name.clone(),
            shape: shape.clone(),
            stored_as,
            bytes,
            error: quant::quant_error(values, &restored),
        });
        out.extend(stored);
    }
    let bytes = container::serialize(&out, meta.to_map())?;
    Ok((bytes, report))
}
