//! The one-file Stable Diffusion model (diffusers' `pipeline_utils.py` save / load in spirit): a
//! safetensors file with every component's tensors under `{component}.{name}` (`unet.`, `vae.`,
//! `text_encoder.`), quantized or not like the pixel model file, and in its `__metadata__` the
//! components' configs and the tokenizer's vocabulary and merges, so one URL is a whole
//! pipeline. `format_version` 2 marks it: version-1 readers refuse it by name. The same format
//! holds an unconditional latent-diffusion pipeline (`LDMPipeline`: `unet.`, `vqvae.`), told
//! apart by `__metadata__["pipeline"]`.
//!
//! Writing reads a diffusers pipeline folder; reading checks every tensor's dtype and shape
//! against the lists the configs imply before anything is dequantized.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::tensor::Device;

use super::latent_diffusion::{self, LatentDiffusion, LdmConfigs, LDM_PIPELINE};
use super::stable_diffusion::StableDiffusion;
use crate::config::shown;
use crate::convert::{read, weights_file};
use crate::error::{Error, Result};
use crate::models::autoencoders::{AutoencoderKL, AutoencoderKLConfig, VQModel, VQModelConfig};
use crate::models::model_file::{TensorReport, FORMAT_TAG};
use crate::models::unets::{
    UNet2DConditionConfig, UNet2DConditionModel, UNet2DConfig, UNet2DModel,
};
use crate::schedulers::SchedulerConfig;
use crate::text::clip::state_dict_prefix;
use crate::text::{CLIPTextConfig, CLIPTextModel, ClipTokenizer};
use crate::weights::container::{self, Container};
use crate::weights::quant::{self, Quant, INT4_GROUP};
use crate::weights::{Prefixed, ShapeRecorder, StoredSource};

/// `__metadata__["format_version"]` of a pipeline file.
pub const PIPELINE_FORMAT_VERSION: u32 = 2;
/// `__metadata__["pipeline"]` of a Stable Diffusion pipeline file.
pub const STABLE_DIFFUSION: &str = "StableDiffusionPipeline";

/// The configs and tokenizer files of a pipeline, as text (what the metadata holds).
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfigs {
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub text_encoder: CLIPTextConfig,
    pub scheduler: SchedulerConfig,
    pub vocab_json: String,
    pub merges_txt: String,
}

/// Every parameter of the pipeline, `(component.name, shape)`, in load order.
pub fn parameter_shapes(c: &PipelineConfigs) -> Result<Vec<(String, Vec<usize>)>> {
    let device = Device::flex();
    let mut out = Vec::new();
    let mut rec = ShapeRecorder::default();
    UNet2DConditionModel::load(
        &c.unet,
        &mut Prefixed {
            inner: &mut rec,
            prefix: "unet".into(),
        },
        &device,
    )?;
    AutoencoderKL::load(
        &c.vae,
        &mut Prefixed {
            inner: &mut rec,
            prefix: "vae".into(),
        },
        &device,
    )?;
    CLIPTextModel::load(&c.text_encoder, &mut rec, "text_encoder", &device)?;
    out.append(&mut rec.entries);
    Ok(out)
}

/// Which tensors stay f32 whatever the quantization: every 1-D tensor, the convolutions that
/// touch pixels or latents directly (`conv_in`, `conv_out`, the VAE's 1x1 `quant_conv`s), the
/// text encoder's position table and the VQ codebook (rounding it would move the nearest
/// entries that decoding snaps to).
fn keeps_f32(name: &str, shape: &[usize]) -> bool {
    shape.len() < 2
        || [
            "conv_in.weight",
            "conv_out.weight",
            "quant_conv.weight",
            "position_embedding.weight",
            "quantize.embedding.weight",
        ]
        .iter()
        .any(|s| name.ends_with(s))
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::io(format!(
            "{}: expected a readable file, found {e}",
            path.display()
        ))
    })
}

/// The weights of a component folder: the f32 file, else the fp16 variant.
pub(crate) fn read_weights(dir: &Path, stem: &str) -> Result<Vec<u8>> {
    let path = weights_file(dir, stem).ok_or_else(|| {
        Error::io(format!(
            "{}: expected {stem}.safetensors (or .fp16.safetensors), found none",
            dir.display()
        ))
    })?;
    read(&path)
}

/// The configs of a diffusers Stable Diffusion pipeline folder (`model_index.json` checked).
pub fn read_configs(dir: &Path) -> Result<PipelineConfigs> {
    let index: serde_json::Value = serde_json::from_str(&read_text(&dir.join("model_index.json"))?)
        .map_err(|e| Error::format(format!("model_index.json: expected JSON, found {e}")))?;
    let class = index
        .get("_class_name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if !class.starts_with("StableDiffusion") {
        return Err(Error::unsupported(format!(
            "model_index.json `_class_name`: expected a StableDiffusion pipeline, found `{}`",
            shown(class)
        )));
    }
    let c = PipelineConfigs {
        unet: UNet2DConditionConfig::from_json(&read_text(&dir.join("unet/config.json"))?)?,
        vae: AutoencoderKLConfig::from_json(&read_text(&dir.join("vae/config.json"))?)?,
        text_encoder: CLIPTextConfig::from_json(&read_text(
            &dir.join("text_encoder/config.json"),
        )?)?,
        scheduler: SchedulerConfig::from_json(&read_text(
            &dir.join("scheduler/scheduler_config.json"),
        )?)?,
        vocab_json: String::new(),
        merges_txt: String::new(),
    };
    let (vocab_json, merges_txt) = tokenizer_files(&dir.join("tokenizer"))?;
    let c = PipelineConfigs {
        vocab_json,
        merges_txt,
        ..c
    };
    check_compatible(&c)?;
    Ok(c)
}

/// The tokenizer's `vocab.json` and `merges.txt` (transformers 4.x writes them, as SD
/// checkpoints carry them), or the same taken from `tokenizer.json` (all transformers 5.x writes).
fn tokenizer_files(dir: &Path) -> Result<(String, String)> {
    if dir.join("vocab.json").is_file() {
        return Ok((
            read_text(&dir.join("vocab.json"))?,
            read_text(&dir.join("merges.txt"))?,
        ));
    }
    let path = dir.join("tokenizer.json");
    let t: serde_json::Value = serde_json::from_str(&read_text(&path)?)
        .map_err(|e| Error::format(format!("{}: expected JSON, found {e}", path.display())))?;
    let model = &t["model"];
    let (Some(vocab), Some(merges)) = (model["vocab"].as_object(), model["merges"].as_array())
    else {
        return Err(Error::format(format!(
            "{}: expected a BPE `model` with `vocab` and `merges`, found none",
            path.display()
        )));
    };
    // Merges are "a b" strings (older files) or ["a", "b"] pairs.
    let mut lines = vec!["#version: 0.2".to_string()];
    for m in merges {
        match (m.as_str(), m.as_array()) {
            (Some(s), _) => lines.push(s.to_string()),
            (_, Some(pair)) if pair.len() == 2 => lines.push(format!(
                "{} {}",
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default()
            )),
            _ => {
                return Err(Error::format(format!(
                    "{}: expected merges as \"a b\" or [a, b], found {}",
                    path.display(),
                    shown(&m.to_string())
                )))
            }
        }
    }
    Ok((
        serde_json::Value::Object(vocab.clone()).to_string(),
        lines.join("\n") + "\n",
    ))
}

/// The components fit together: the text states' width is the U-Net's cross-attention width,
/// the VAE's latent channels the U-Net's channels.
fn check_compatible(c: &PipelineConfigs) -> Result<()> {
    if c.text_encoder.hidden_size != c.unet.cross_attention_dim.at(0) {
        return Err(Error::config(format!(
            "text_encoder hidden_size {} and unet cross_attention_dim {}: expected them equal",
            c.text_encoder.hidden_size,
            c.unet.cross_attention_dim.at(0)
        )));
    }
    if c.vae.latent_channels != c.unet.in_channels {
        return Err(Error::config(format!(
            "vae latent_channels {} and unet in_channels {}: expected them equal",
            c.vae.latent_channels, c.unet.in_channels
        )));
    }
    Ok(())
}

/// Converts a diffusers Stable Diffusion pipeline folder into one file, quantizing the large
/// weights as `quant` says. Returns the bytes and a per-tensor report.
pub fn convert_pipeline_dir(
    dir: &Path,
    quant: Quant,
    name: Option<&str>,
) -> Result<(Vec<u8>, Vec<TensorReport>)> {
    let configs = read_configs(dir)?;
    ClipTokenizer::from_files(&configs.vocab_json, &configs.merges_txt)?;
    let expected = parameter_shapes(&configs)?;
    let mut out = BTreeMap::new();
    let mut report = Vec::new();
    for (component, stem) in [
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
    ] {
        let bytes = read_weights(&dir.join(component), stem)?;
        let src = Container::parse(&bytes)?;
        // transformers 4.x keeps the text encoder under `text_model.`; the file does not.
        let inner = if component == "text_encoder" {
            state_dict_prefix(&src)
        } else {
            ""
        };
        pack_component(
            &src,
            component,
            inner,
            &expected,
            quant,
            &mut out,
            &mut report,
        )?;
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".into(), FORMAT_TAG.to_string());
    meta.insert("format_version".into(), PIPELINE_FORMAT_VERSION.to_string());
    meta.insert("pipeline".into(), STABLE_DIFFUSION.to_string());
    meta.insert("quantization".into(), quant.name().to_string());
    if quant == Quant::Int4 {
        meta.insert("int4_group_size".into(), INT4_GROUP.to_string());
    }
    meta.insert("unet_config".into(), to_json(&configs.unet));
    meta.insert("vae_config".into(), to_json(&configs.vae));
    meta.insert("text_encoder_config".into(), to_json(&configs.text_encoder));
    meta.insert("scheduler_config".into(), configs.scheduler.to_json());
    meta.insert("tokenizer_vocab".into(), configs.vocab_json.clone());
    meta.insert("tokenizer_merges".into(), configs.merges_txt.clone());
    if let Some(n) = name {
        meta.insert("name".into(), n.to_string());
    }
    Ok((container::serialize(&out, meta)?, report))
}

/// Packs the tensors of `component` (those of `expected` under `{component}.`, stored in `src`
/// under `{inner}.{name}`) into `out` as `quant` says, checking each one's shape against its
/// config and that `src` holds nothing else.
fn pack_component(
    src: &Container<'_>,
    component: &str,
    inner: &str,
    expected: &[(String, Vec<usize>)],
    quant: Quant,
    out: &mut BTreeMap<String, container::OwnedTensor>,
    report: &mut Vec<TensorReport>,
) -> Result<()> {
    let mut used = BTreeSet::new();
    for (full, shape) in expected
        .iter()
        .filter(|(n, _)| n.starts_with(&format!("{component}.")))
    {
        let local = &full[component.len() + 1..];
        let stored = if inner.is_empty() {
            local.to_string()
        } else {
            format!("{inner}.{local}")
        };
        let view = src.expect(&stored, shape, &format!("the {component} config"))?;
        if &view.shape != shape {
            return Err(Error::format(format!(
                "{component}: tensor `{stored}`: expected shape {shape:?} (from its config), found {:?}",
                view.shape
            )));
        }
        used.insert(stored.clone());
        let values = view.to_f32(&stored)?;
        let q = if keeps_f32(full, shape) {
            Quant::F32
        } else {
            quant
        };
        let packed = quant::pack(full, shape, &values, q);
        report.push(TensorReport {
            name: full.clone(),
            shape: shape.clone(),
            stored_as: packed.stored_as,
            bytes: packed.stored.iter().map(|(_, t)| t.data.len()).sum(),
            error: quant::quant_error(&values, &packed.restored),
        });
        out.extend(packed.stored);
    }
    src.only(&used, &format!("the {component} config"))?;
    Ok(())
}

/// A config as the metadata holds it (the configs are plain data: serializing cannot fail).
fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Reads a pipeline file's metadata (format, version, quantization, configs).
pub fn read_file_configs(
    container: &Container<'_>,
) -> Result<(PipelineConfigs, Quant, Option<String>)> {
    let quant = read_header(container, STABLE_DIFFUSION)?;
    let m = &container.metadata;
    let need = |k: &str| need_key(m, k);
    let configs = PipelineConfigs {
        unet: UNet2DConditionConfig::from_json(need("unet_config")?)?,
        vae: AutoencoderKLConfig::from_json(need("vae_config")?)?,
        text_encoder: CLIPTextConfig::from_json(need("text_encoder_config")?)?,
        scheduler: SchedulerConfig::from_json(need("scheduler_config")?)?,
        vocab_json: need("tokenizer_vocab")?.clone(),
        merges_txt: need("tokenizer_merges")?.clone(),
    };
    check_compatible(&configs)?;
    Ok((configs, quant, m.get("name").cloned()))
}

/// Metadata key `k`, or an error that names it.
fn need_key<'m>(m: &'m BTreeMap<String, String>, k: &str) -> Result<&'m String> {
    m.get(k).ok_or_else(|| {
        Error::format(format!(
            "metadata: expected key `{k}`, found none (not a {FORMAT_TAG} pipeline file)"
        ))
    })
}

/// Checks a pipeline file's format tag, version and `pipeline` (`expected`); returns its
/// quantization.
fn read_header(container: &Container<'_>, expected: &str) -> Result<Quant> {
    let m = &container.metadata;
    let need = |k: &str| need_key(m, k);
    let tag = need("format")?;
    if tag != FORMAT_TAG {
        return Err(Error::format(format!(
            "metadata `format`: expected `{FORMAT_TAG}`, found `{}`",
            shown(tag)
        )));
    }
    let version = need("format_version")?;
    if version.parse::<u32>().ok() != Some(PIPELINE_FORMAT_VERSION) {
        return Err(Error::unsupported(format!(
            "metadata `format_version`: expected {PIPELINE_FORMAT_VERSION} (a pipeline file), found `{}`",
            shown(version)
        )));
    }
    let pipeline = need("pipeline")?;
    if pipeline != expected {
        return Err(Error::unsupported(format!(
            "metadata `pipeline`: expected `{expected}`, found `{}`",
            shown(pipeline)
        )));
    }
    let q = need("quantization")?;
    let quant = Quant::parse(q).ok_or_else(|| {
        Error::format(format!(
            "metadata `quantization`: expected f32, f16, int8 or int4, found `{}`",
            shown(q)
        ))
    })?;
    if quant == Quant::Int4 && need("int4_group_size")?.parse::<usize>().ok() != Some(INT4_GROUP) {
        return Err(Error::unsupported(format!(
            "metadata `int4_group_size`: expected {INT4_GROUP}"
        )));
    }
    Ok(quant)
}

impl StableDiffusion {
    /// A pipeline file's bytes -> the pipeline on `device`: the metadata and every tensor's
    /// dtype and shape are checked before anything is dequantized.
    pub fn load_file(bytes: &[u8], device: &Device) -> Result<Self> {
        let container = Container::parse(bytes)?;
        let (c, _, _) = read_file_configs(&container)?;
        let tokenizer = ClipTokenizer::from_files(&c.vocab_json, &c.merges_txt)?;
        let expected = parameter_shapes(&c)?;
        quant::check_stored(&container, &expected, "the pipeline's configs")?;
        let mut src = StoredSource {
            container: &container,
            device: device.clone(),
        };
        let unet = UNet2DConditionModel::load(
            &c.unet,
            &mut Prefixed {
                inner: &mut src,
                prefix: "unet".into(),
            },
            device,
        )?;
        let vae = AutoencoderKL::load(
            &c.vae,
            &mut Prefixed {
                inner: &mut src,
                prefix: "vae".into(),
            },
            device,
        )?;
        let text_encoder = CLIPTextModel::load(&c.text_encoder, &mut src, "text_encoder", device)?;
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler: c.scheduler,
        })
    }
}

// LDMPipeline files: the same format (version 2) with `pipeline = "LDMPipeline"`, tensors
// `unet.` (a UNet2DModel) and `vqvae.` (a VQModel), configs `unet_config`, `vqvae_config`,
// `scheduler_config`.

/// Every parameter of an LDM pipeline, `(component.name, shape)`, in load order.
pub fn ldm_parameter_shapes(c: &LdmConfigs) -> Result<Vec<(String, Vec<usize>)>> {
    let device = Device::flex();
    let mut rec = ShapeRecorder::default();
    UNet2DModel::load(
        &c.unet,
        &mut Prefixed {
            inner: &mut rec,
            prefix: "unet".into(),
        },
        &device,
    )?;
    VQModel::load(
        &c.vqvae,
        &mut Prefixed {
            inner: &mut rec,
            prefix: "vqvae".into(),
        },
        &device,
    )?;
    Ok(rec.entries)
}

/// Converts a diffusers `LDMPipeline` folder into one file, quantizing the large weights as
/// `quant` says (the codebook stays f32). Returns the bytes and a per-tensor report.
pub fn convert_ldm_pipeline_dir(
    dir: &Path,
    quant: Quant,
    name: Option<&str>,
) -> Result<(Vec<u8>, Vec<TensorReport>)> {
    let configs = latent_diffusion::read_configs(dir)?;
    let expected = ldm_parameter_shapes(&configs)?;
    let mut out = BTreeMap::new();
    let mut report = Vec::new();
    for component in ["unet", "vqvae"] {
        let bytes = read_weights(&dir.join(component), "diffusion_pytorch_model")?;
        let src = Container::parse(&bytes)?;
        pack_component(&src, component, "", &expected, quant, &mut out, &mut report)?;
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".into(), FORMAT_TAG.to_string());
    meta.insert("format_version".into(), PIPELINE_FORMAT_VERSION.to_string());
    meta.insert("pipeline".into(), LDM_PIPELINE.to_string());
    meta.insert("quantization".into(), quant.name().to_string());
    if quant == Quant::Int4 {
        meta.insert("int4_group_size".into(), INT4_GROUP.to_string());
    }
    meta.insert("unet_config".into(), configs.unet.to_json());
    meta.insert("vqvae_config".into(), configs.vqvae.to_json());
    meta.insert("scheduler_config".into(), configs.scheduler.to_json());
    if let Some(n) = name {
        meta.insert("name".into(), n.to_string());
    }
    Ok((container::serialize(&out, meta)?, report))
}

/// Reads an LDM pipeline file's metadata (format, version, quantization, configs).
pub fn read_ldm_file_configs(
    container: &Container<'_>,
) -> Result<(LdmConfigs, Quant, Option<String>)> {
    let quant = read_header(container, LDM_PIPELINE)?;
    let m = &container.metadata;
    let configs = LdmConfigs {
        unet: UNet2DConfig::from_json(need_key(m, "unet_config")?)?,
        vqvae: VQModelConfig::from_json(need_key(m, "vqvae_config")?)?,
        scheduler: SchedulerConfig::from_json(need_key(m, "scheduler_config")?)?,
    };
    configs.check_compatible()?;
    Ok((configs, quant, m.get("name").cloned()))
}

/// The `pipeline` a file's metadata names (`StableDiffusionPipeline`, `LDMPipeline`), if it is
/// a pipeline file; `None` for anything else (a U-Net model file, a file that does not parse).
pub fn file_pipeline(bytes: &[u8]) -> Option<String> {
    let container = Container::parse(bytes).ok()?;
    let m = &container.metadata;
    if m.get("format_version")?.parse::<u32>().ok()? != PIPELINE_FORMAT_VERSION {
        return None;
    }
    m.get("pipeline").cloned()
}

impl LatentDiffusion {
    /// An LDM pipeline file's bytes -> the pipeline on `device`: the metadata and every
    /// tensor's dtype and shape are checked before anything is dequantized.
    pub fn load_file(bytes: &[u8], device: &Device) -> Result<Self> {
        let container = Container::parse(bytes)?;
        let (c, _, _) = read_ldm_file_configs(&container)?;
        let expected = ldm_parameter_shapes(&c)?;
        quant::check_stored(&container, &expected, "the pipeline's configs")?;
        let mut src = StoredSource {
            container: &container,
            device: device.clone(),
        };
        let unet = UNet2DModel::load(
            &c.unet,
            &mut Prefixed {
                inner: &mut src,
                prefix: "unet".into(),
            },
            device,
        )?;
        let vqvae = VQModel::load(
            &c.vqvae,
            &mut Prefixed {
                inner: &mut src,
                prefix: "vqvae".into(),
            },
            device,
        )?;
        Ok(Self {
            unet: std::sync::Arc::new(unet),
            vqvae,
            scheduler: c.scheduler,
        })
    }
}
