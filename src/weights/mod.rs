//! The model file: one safetensors file holding the U-Net weights under their diffusers names,
//! quantized or not, with the model and scheduler configs in its `__metadata__`, so that one
//! URL is all a user needs. See README "Model file format".
//!
//! Loading is two-phase: [`ModelFile::parse`] reads and checks the header, the metadata and
//! every tensor's dtype and shape against the list the config implies ([`ModelFile::check`])
//! before [`FileSource`] dequantizes anything into f32 device tensors.

pub mod container;
pub mod quant;

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::{Device, Tensor, TensorData};

pub use container::{Container, Dtype, OwnedTensor, TensorView};
pub use quant::{Quant, QuantError, INT4_GROUP};

use crate::config::shown;
use crate::error::{Error, Result};
use crate::models::unets::UNet2DConfig;
use crate::schedulers::SchedulerConfig;

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
        let need = |k: &str| {
            m.get(k).ok_or_else(|| {
                Error::format(format!(
                    "metadata: expected key `{k}`, found none (not a {FORMAT_TAG} model file)"
                ))
            })
        };
        let tag = need("format")?;
        if tag != FORMAT_TAG {
            return Err(Error::format(format!(
                "metadata `format`: expected `{FORMAT_TAG}`, found `{}`",
                shown(tag)
            )));
        }
        let version = need("format_version")?;
        if version.parse::<u32>().ok() != Some(FORMAT_VERSION) {
            return Err(Error::unsupported(format!(
                "metadata `format_version`: expected {FORMAT_VERSION}, found `{}`",
                shown(version)
            )));
        }
        let q = need("quantization")?;
        let quant = Quant::parse(q).ok_or_else(|| {
            Error::format(format!(
                "metadata `quantization`: expected f32, f16, int8 or int4, found `{}`",
                shown(q)
            ))
        })?;
        if quant == Quant::Int4 {
            let g = need("int4_group_size")?;
            if g.parse::<usize>().ok() != Some(INT4_GROUP) {
                return Err(Error::unsupported(format!(
                    "metadata `int4_group_size`: expected {INT4_GROUP}, found `{}`",
                    shown(g)
                )));
            }
        }
        let unet = UNet2DConfig::from_json(need("unet_config")?)?;
        let scheduler = SchedulerConfig::from_json(need("scheduler_config")?)?;
        let null_class = match m.get("null_class") {
            Some(s) => Some(s.parse::<usize>().map_err(|_| {
                Error::format(format!(
                    "metadata `null_class`: expected a non-negative integer, found `{}`",
                    shown(s)
                ))
            })?),
            None => None,
        };
        if let Some(n) = null_class {
            let k = unet.num_class_embeds.unwrap_or(0);
            if n >= k {
                return Err(Error::config(format!(
                    "metadata `null_class`: expected a class below num_class_embeds = {k}, found {n}"
                )));
            }
        }
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
        let classes = unet.num_class_embeds.unwrap_or(0);
        if class_names.len() > classes {
            return Err(Error::config(format!(
                "metadata `class_names`: expected at most {classes} names (num_class_embeds), found {}",
                class_names.len()
            )));
        }
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
        let mut used: BTreeSet<String> = BTreeSet::new();
        for (name, shape) in expected {
            let view = self.container.get(name).ok_or_else(|| {
                Error::format(format!(
                    "tensor `{name}` {shape:?}: expected by the model config, found missing"
                ))
            })?;
            used.insert(name.clone());
            match view.dtype {
                Dtype::F32 | Dtype::F16 | Dtype::BF16 => {
                    if &view.shape != shape {
                        return Err(Error::format(format!(
                            "tensor `{name}`: expected shape {shape:?} (from the config), found {:?}",
                            view.shape
                        )));
                    }
                }
                Dtype::I8 | Dtype::U8 => {
                    let scale_name = format!("{name}{SCALE_SUFFIX}");
                    let scale = self.container.get(&scale_name).ok_or_else(|| {
                        Error::format(format!(
                            "tensor `{name}` is quantized ({}), expected its scales `{scale_name}`, found none",
                            view.dtype.name()
                        ))
                    })?;
                    used.insert(scale_name.clone());
                    let (packed, scales) = quantized_shapes(view.dtype, shape).ok_or_else(|| {
                        Error::format(format!(
                            "tensor `{name}`: expected a float dtype for a tensor of shape {shape:?}, found {}",
                            view.dtype.name()
                        ))
                    })?;
                    if view.shape != packed {
                        return Err(Error::format(format!(
                            "tensor `{name}`: expected {} shape {packed:?} for logical shape {shape:?}, found {:?}",
                            view.dtype.name(),
                            view.shape
                        )));
                    }
                    if scale.dtype != Dtype::F32 || scale.shape != scales {
                        return Err(Error::format(format!(
                            "tensor `{scale_name}`: expected F32 {scales:?}, found {} {:?}",
                            scale.dtype.name(),
                            scale.shape
                        )));
                    }
                }
                Dtype::I64 => {
                    return Err(Error::format(format!(
                        "tensor `{name}`: expected F32, F16, BF16, I8 or U8, found I64"
                    )))
                }
            }
        }
        if let Some(extra) = self.container.tensors.keys().find(|k| !used.contains(*k)) {
            return Err(Error::format(format!(
                "tensor `{extra}`: not part of the model the config describes (expected {} tensors, found {})",
                used.len(),
                self.container.tensors.len()
            )));
        }
        Ok(())
    }

    /// The f32 values of tensor `name` (logical `shape`), dequantized if needed.
    pub fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let view = self.container.get(name).ok_or_else(|| {
            Error::format(format!(
                "tensor `{name}`: expected in the file, found missing"
            ))
        })?;
        let scales = || -> Result<Vec<f32>> {
            let s = self
                .container
                .get(&format!("{name}{SCALE_SUFFIX}"))
                .ok_or_else(|| {
                    Error::format(format!(
                        "tensor `{name}`: expected scales `{name}{SCALE_SUFFIX}`, found none"
                    ))
                })?;
            s.to_f32(name)
        };
        let rows = shape.first().copied().unwrap_or(1).max(1);
        let k = shape.iter().product::<usize>() / rows;
        match view.dtype {
            Dtype::I8 => {
                let q: Vec<i8> = view.data.iter().map(|&b| b as i8).collect();
                Ok(quant::dequantize_int8(&q, &scales()?))
            }
            Dtype::U8 => Ok(quant::dequantize_int4(view.data, &scales()?, rows, k)),
            _ => view.to_f32(name),
        }
    }
}

/// Stored shapes of a quantized tensor of logical `shape`: (values, scales).
fn quantized_shapes(dtype: Dtype, shape: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
    if shape.len() < 2 {
        return None;
    }
    let rows = shape[0];
    let k: usize = shape[1..].iter().product();
    match dtype {
        Dtype::I8 => Some((shape.to_vec(), vec![rows])),
        Dtype::U8 => {
            let g = quant::int4_groups(k);
            Some((vec![rows, g * INT4_GROUP / 2], vec![rows, g]))
        }
        _ => None,
    }
}

/// A [`TensorSource`] that dequantizes tensors of a checked [`ModelFile`] onto a device.
pub struct FileSource<'f, 'a> {
    pub file: &'f ModelFile<'a>,
    pub device: Device,
}

impl TensorSource for FileSource<'_, '_> {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let values = self.file.tensor_f32(name, &shape)?;
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
        let rows = shape.first().copied().unwrap_or(1).max(1);
        let keep = keeps_f32(name, shape) || meta.quant == Quant::F32;
        let (stored, restored, stored_as) = if keep {
            (
                vec![(name.clone(), OwnedTensor::f32(shape.clone(), values))],
                values.clone(),
                "f32",
            )
        } else {
            match meta.quant {
                Quant::F32 => unreachable!("handled above"),
                Quant::F16 => {
                    let bytes = quant::to_f16_bytes(values);
                    let restored = values
                        .iter()
                        .map(|&v| half::f16::from_f32(v).to_f32())
                        .collect();
                    (
                        vec![(
                            name.clone(),
                            OwnedTensor {
                                dtype: Dtype::F16,
                                shape: shape.clone(),
                                data: bytes,
                            },
                        )],
                        restored,
                        "f16",
                    )
                }
                Quant::Int8 => {
                    let (q, s) = quant::quantize_int8(values, rows);
                    let restored = quant::dequantize_int8(&q, &s);
                    let data = q.iter().map(|&v| v as u8).collect();
                    (
                        vec![
                            (
                                name.clone(),
                                OwnedTensor {
                                    dtype: Dtype::I8,
                                    shape: shape.clone(),
                                    data,
                                },
                            ),
                            (
                                format!("{name}{SCALE_SUFFIX}"),
                                OwnedTensor::f32(vec![rows], &s),
                            ),
                        ],
                        restored,
                        "int8",
                    )
                }
                Quant::Int4 => {
                    let k = numel / rows;
                    let (packed, s) = quant::quantize_int4(values, rows);
                    let restored = quant::dequantize_int4(&packed, &s, rows, k);
                    let (pshape, sshape) = quantized_shapes(Dtype::U8, shape).expect("rank >= 2");
                    (
                        vec![
                            (
                                name.clone(),
                                OwnedTensor {
                                    dtype: Dtype::U8,
                                    shape: pshape,
                                    data: packed,
                                },
                            ),
                            (
                                format!("{name}{SCALE_SUFFIX}"),
                                OwnedTensor::f32(sshape, &s),
                            ),
                        ],
                        restored,
                        "int4",
                    )
                }
            }
        };
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
