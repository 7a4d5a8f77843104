//! The one-file Stable Diffusion model (diffusers' `pipeline_utils.py` save / load in spirit): a
//! safetensors file with every component's tensors under `{component}.{name}` (`unet.`, `vae.`,
//! `text_encoder.`), quantized or not like the pixel model file, and in its `__metadata__` the
//! components' configs and the tokenizer's vocabulary and merges, so one URL is a whole
//! pipeline. `format_version` 2 marks it: version-1 readers refuse it by name. The same format
//! holds an unconditional latent-diffusion pipeline (`LDMPipeline`: `unet.`, `vqvae.`), told
//! apart by `__metadata__["pipeline"]`.
//!
//! Writing reads a diffusers pipeline folder; reading checks every tensor's dtype and shape
//! against the lists the configs imply before anything is dequantized, from the whole file or
//! from the header of one still downloading ([`PipelineStream`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::tensor::Device;

use super::latent_diffusion::{self, LatentDiffusion, LdmConfigs, LDM_PIPELINE};
use super::preview::{LatentRgb, Preview};
use super::stable_diffusion::StableDiffusion;
use crate::config::shown;
use crate::convert::{read, weights_file};
use crate::error::{Error, Result};
use crate::memory::MemoryBudget;
use crate::models::autoencoders::{
    AutoencoderKL, AutoencoderKLConfig, AutoencoderTiny, AutoencoderTinyConfig, VQModel,
    VQModelConfig,
};
use crate::models::model_file::{TensorReport, FORMAT_TAG};
use crate::models::unets::{
    UNet2DConditionConfig, UNet2DConditionModel, UNet2DConfig, UNet2DModel,
};
use crate::schedulers::SchedulerConfig;
use crate::text::clip::state_dict_prefix;
use crate::text::{CLIPTextConfig, CLIPTextModel, ClipTokenizer};
use crate::weights::container::{self, Container};
use crate::weights::quant::{self, Quant, INT4_GROUP};
use crate::weights::stream::{DeviceTensors, StreamSink, UPLOAD_CHUNK_VALUES};
use crate::weights::{
    ContainerSource, Entry, Header, Prefixed, ShapeRecorder, StoredSource, TensorSource, TensorView,
};

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
    /// The tokenizer's `pad_token` when it is not `<|endoftext|>` (SD 2.x pads with `!`).
    pub pad_token: Option<String>,
    /// The preview autoencoder's config (TAESD), when the pipeline carries one.
    pub preview_vae: Option<AutoencoderTinyConfig>,
    /// The fitted linear preview, when the pipeline carries no preview autoencoder.
    pub latent_rgb: Option<LatentRgb>,
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
    if let Some(t) = &c.preview_vae {
        AutoencoderTiny::load(
            t,
            &mut Prefixed {
                inner: &mut rec,
                prefix: "preview_vae".into(),
            },
            &device,
        )?;
    }
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
        pad_token: pad_token(&dir.join("tokenizer"))?,
        preview_vae: None,
        latent_rgb: None,
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

impl PipelineConfigs {
    /// The pipeline's tokenizer: its vocabulary and merges, its pad token, and ids that fit the
    /// text encoder's embedding table.
    pub fn tokenizer(&self) -> Result<ClipTokenizer> {
        let mut t = ClipTokenizer::from_files(&self.vocab_json, &self.merges_txt)?;
        if let Some(p) = &self.pad_token {
            t = t.with_pad_token(p)?;
        }
        let v = self.text_encoder.vocab_size;
        if t.max_id() as usize >= v {
            return Err(Error::config(format!(
                "tokenizer: expected token ids below the text encoder's vocab_size {v}, found a vocabulary with ids up to {}",
                t.max_id()
            )));
        }
        Ok(t)
    }
}

/// The `pad_token` of `tokenizer_config.json` (a string, or `{"content": ...}`), else of
/// `special_tokens_map.json`; `None` when neither names one.
fn pad_token(dir: &Path) -> Result<Option<String>> {
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&read_text(&path)?)
            .map_err(|e| Error::format(format!("{}: expected JSON, found {e}", path.display())))?;
        let pad = &v["pad_token"];
        if let Some(p) = pad.as_str().or_else(|| pad["content"].as_str()) {
            return Ok(Some(p.to_string()));
        }
    }
    Ok(None)
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
    let latent = c.vae.latent_channels;
    // An inpainting U-Net reads [latents, mask, masked image latents].
    if c.unet.in_channels != latent && c.unet.in_channels != 2 * latent + 1 {
        return Err(Error::config(format!(
            "unet in_channels {}: expected the VAE's latent_channels {latent} (or {} for an inpainting U-Net)",
            c.unet.in_channels,
            2 * latent + 1
        )));
    }
    if c.unet.out_channels != latent {
        return Err(Error::config(format!(
            "unet out_channels {}: expected the VAE's latent_channels {latent}",
            c.unet.out_channels
        )));
    }
    Ok(())
}

/// How each component of a pipeline file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineQuant {
    pub unet: Quant,
    pub text_encoder: Quant,
    pub vae: Quant,
    /// The preview autoencoder (TAESD), when the file carries one.
    pub preview_vae: Quant,
}

impl PipelineQuant {
    /// The defaults for a requested quantization `q`: the U-Net and the text encoder at `q`,
    /// the autoencoders at `q` but never below f16. The VAE is a few percent of the weights and
    /// decodes every pixel the user sees; measured on the parity pipeline (tests/
    /// stable_diffusion_pipeline.rs, `component_quantization_errors`), an int8 VAE alone moves
    /// the final image about as much as an int8 U-Net and text encoder together.
    pub fn defaults(q: Quant) -> Self {
        let at_least_f16 = if q == Quant::F32 {
            Quant::F32
        } else {
            Quant::F16
        };
        Self {
            unet: q,
            text_encoder: q,
            vae: at_least_f16,
            preview_vae: at_least_f16,
        }
    }

    /// Every component at `q`.
    pub fn uniform(q: Quant) -> Self {
        Self {
            unet: q,
            text_encoder: q,
            vae: q,
            preview_vae: q,
        }
    }

    fn of(&self, component: &str) -> Quant {
        match component {
            "unet" => self.unet,
            "text_encoder" => self.text_encoder,
            "vae" => self.vae,
            _ => self.preview_vae,
        }
    }
}

/// What `convert` makes of a pipeline folder besides its own components.
#[derive(Debug, Clone, Default)]
pub struct PipelineConvertOptions<'a> {
    /// Model name stored in the file.
    pub name: Option<&'a str>,
    /// A diffusers `AutoencoderTiny` folder (TAESD) to carry for previews.
    pub preview_vae: Option<&'a Path>,
}

/// Converts a diffusers Stable Diffusion pipeline folder into one file, each component stored as
/// `quant` says; without a preview autoencoder, fits and stores the linear latent-to-RGB
/// preview ([`LatentRgb::fit`]). Returns the bytes and a per-tensor report.
pub fn convert_pipeline_dir(
    dir: &Path,
    quant: PipelineQuant,
    options: &PipelineConvertOptions<'_>,
) -> Result<(Vec<u8>, Vec<TensorReport>)> {
    let mut configs = read_configs(dir)?;
    configs.tokenizer()?;
    if let Some(p) = options.preview_vae {
        let config = AutoencoderTinyConfig::from_json(&read_text(&p.join("config.json"))?)?;
        if config.latent_channels != configs.vae.latent_channels {
            return Err(Error::config(format!(
                "preview vae ({}) latent_channels: expected {} (the pipeline VAE's), found {}",
                p.display(),
                configs.vae.latent_channels,
                config.latent_channels
            )));
        }
        configs.preview_vae = Some(config);
    }
    let expected = parameter_shapes(&configs)?;
    let mut out = BTreeMap::new();
    let mut report = Vec::new();
    let mut components = vec![
        ("unet", dir.join("unet"), "diffusion_pytorch_model"),
        ("vae", dir.join("vae"), "diffusion_pytorch_model"),
        ("text_encoder", dir.join("text_encoder"), "model"),
    ];
    if let Some(p) = options.preview_vae {
        components.push(("preview_vae", p.to_path_buf(), "diffusion_pytorch_model"));
    }
    for (component, folder, stem) in components {
        let bytes = read_weights(&folder, stem)?;
        let src = Container::parse(&bytes)?;
        if component == "vae" && configs.preview_vae.is_none() {
            configs.latent_rgb = Some(fit_latent_rgb(&configs.vae, &src)?);
        }
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
            quant.of(component),
            &mut out,
            &mut report,
        )?;
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".into(), FORMAT_TAG.to_string());
    meta.insert("format_version".into(), PIPELINE_FORMAT_VERSION.to_string());
    meta.insert("pipeline".into(), STABLE_DIFFUSION.to_string());
    // `quantization` is the U-Net's (what earlier readers show); each component has its own.
    meta.insert("quantization".into(), quant.unet.name().to_string());
    let mut names = vec!["unet", "text_encoder", "vae"];
    if configs.preview_vae.is_some() {
        names.push("preview_vae");
    }
    for c in &names {
        meta.insert(format!("{c}_quantization"), quant.of(c).name().to_string());
    }
    if names.iter().any(|c| quant.of(c) == Quant::Int4) {
        meta.insert("int4_group_size".into(), INT4_GROUP.to_string());
    }
    meta.insert("unet_config".into(), to_json(&configs.unet));
    meta.insert("vae_config".into(), to_json(&configs.vae));
    meta.insert("text_encoder_config".into(), to_json(&configs.text_encoder));
    meta.insert("scheduler_config".into(), configs.scheduler.to_json());
    meta.insert("tokenizer_vocab".into(), configs.vocab_json.clone());
    meta.insert("tokenizer_merges".into(), configs.merges_txt.clone());
    if let Some(p) = &configs.pad_token {
        meta.insert("tokenizer_pad_token".into(), p.clone());
    }
    if let Some(t) = &configs.preview_vae {
        meta.insert("preview_vae_config".into(), to_json(t));
    }
    if let Some(m) = &configs.latent_rgb {
        meta.insert("latent_rgb".into(), to_json(m));
    }
    if let Some(n) = options.name {
        meta.insert("name".into(), n.to_string());
    }
    Ok((container::serialize(&out, meta)?, report))
}

/// The linear preview map of the VAE whose f32 or f16 weights `src` holds.
fn fit_latent_rgb(config: &AutoencoderKLConfig, src: &Container<'_>) -> Result<LatentRgb> {
    let device = Device::flex();
    let mut tensors = ContainerSource {
        container: src,
        device: device.clone(),
    };
    let vae = AutoencoderKL::load(config, &mut tensors, &device)?;
    // Eight latent pixels a side per image, six images: 384 rows for latent_channels + 1
    // unknowns per colour, at the cost of encoding six small images.
    LatentRgb::fit(&vae, 8 * config.downscale_factor(), 6)
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
) -> Result<(PipelineConfigs, PipelineQuant, Option<String>)> {
    let quants = read_header(container, STABLE_DIFFUSION)?;
    let m = &container.metadata;
    let need = |k: &str| need_key(m, k);
    let preview_vae = m
        .get("preview_vae_config")
        .map(|t| AutoencoderTinyConfig::from_json(t))
        .transpose()?;
    let latent_rgb = m
        .get("latent_rgb")
        .map(|t| {
            serde_json::from_str::<LatentRgb>(t).map_err(|e| {
                Error::format(format!(
                    "metadata `latent_rgb`: expected {{\"weight\": [[..]; 3], \"bias\": [..; 3], \"fit_rms\": ..}}, found {e}"
                ))
            })
        })
        .transpose()?;
    let configs = PipelineConfigs {
        unet: UNet2DConditionConfig::from_json(need("unet_config")?)?,
        vae: AutoencoderKLConfig::from_json(need("vae_config")?)?,
        text_encoder: CLIPTextConfig::from_json(need("text_encoder_config")?)?,
        scheduler: SchedulerConfig::from_json(need("scheduler_config")?)?,
        vocab_json: need("tokenizer_vocab")?.clone(),
        merges_txt: need("tokenizer_merges")?.clone(),
        pad_token: m.get("tokenizer_pad_token").cloned(),
        preview_vae,
        latent_rgb,
    };
    check_compatible(&configs)?;
    Ok((configs, quants, m.get("name").cloned()))
}

/// Metadata key `k`, or an error that names it.
fn need_key<'m>(m: &'m BTreeMap<String, String>, k: &str) -> Result<&'m String> {
    m.get(k).ok_or_else(|| {
        Error::format(format!(
            "metadata: expected key `{k}`, found none (not a {FORMAT_TAG} pipeline file)"
        ))
    })
}

/// Checks a pipeline file's format tag, version and `pipeline` (`expected`); returns each
/// component's storage (`{component}_quantization`, else the file's `quantization`).
fn read_header(container: &Container<'_>, expected: &str) -> Result<PipelineQuant> {
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
    let quant_of = |key: &str| -> Result<Quant> {
        let q = need(key)?;
        Quant::parse(q).ok_or_else(|| {
            Error::format(format!(
                "metadata `{key}`: expected f32, f16, int8 or int4, found `{}`",
                shown(q)
            ))
        })
    };
    let quant = quant_of("quantization")?;
    // Files from before per-component quantization name one for all.
    let component_quant = |c: &str| -> Result<Quant> {
        let key = format!("{c}_quantization");
        if m.contains_key(&key) {
            quant_of(&key)
        } else {
            Ok(quant)
        }
    };
    let quants = PipelineQuant {
        unet: component_quant("unet")?,
        text_encoder: component_quant("text_encoder")?,
        vae: component_quant("vae")?,
        preview_vae: component_quant("preview_vae")?,
    };
    let any_int4 = [
        quants.unet,
        quants.text_encoder,
        quants.vae,
        quants.preview_vae,
    ]
    .contains(&Quant::Int4);
    if any_int4 && need("int4_group_size")?.parse::<usize>().ok() != Some(INT4_GROUP) {
        return Err(Error::unsupported(format!(
            "metadata `int4_group_size`: expected {INT4_GROUP}"
        )));
    }
    Ok(quants)
}

impl StableDiffusion {
    /// A pipeline file's bytes -> the pipeline on `device`: the metadata and every tensor's
    /// dtype and shape are checked before anything is dequantized.
    pub fn load_file(bytes: &[u8], device: &Device) -> Result<Self> {
        let container = Container::parse(bytes)?;
        let (c, _, _) = read_file_configs(&container)?;
        let expected = check_file(&container, &c)?;
        let mut src = StoredSource {
            container: &container,
            device: device.clone(),
        };
        Self::assemble(&c, &expected, &mut src, device)
    }

    /// The pipeline of configs `c` from `src` (which holds the `expected` tensors).
    fn assemble(
        c: &PipelineConfigs,
        expected: &[(String, Vec<usize>)],
        src: &mut impl TensorSource,
        device: &Device,
    ) -> Result<Self> {
        let tokenizer = c.tokenizer()?;
        let unet = UNet2DConditionModel::load(
            &c.unet,
            &mut Prefixed {
                inner: &mut *src,
                prefix: "unet".into(),
            },
            device,
        )?;
        let vae = AutoencoderKL::load(
            &c.vae,
            &mut Prefixed {
                inner: &mut *src,
                prefix: "vae".into(),
            },
            device,
        )?;
        let text_encoder = CLIPTextModel::load(&c.text_encoder, &mut *src, "text_encoder", device)?;
        let preview = match (&c.preview_vae, &c.latent_rgb) {
            (Some(t), _) => Some(Preview::Tiny(Box::new(AutoencoderTiny::load(
                t,
                &mut Prefixed {
                    inner: &mut *src,
                    prefix: "preview_vae".into(),
                },
                device,
            )?))),
            (None, Some(map)) => {
                map.check(c.vae.latent_channels)?;
                Some(Preview::Linear(map.clone()))
            }
            (None, None) => None,
        };
        Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler: c.scheduler.clone(),
            preview,
            budget: MemoryBudget::NATIVE,
            resident_bytes: 0,
            parameters: expected
                .iter()
                .map(|(_, s)| s.iter().product::<usize>() as u64)
                .sum(),
            cpu_weight_bytes: crate::memory::cpu_weight_bytes(expected.iter().map(|(_, s)| &s[..])),
        }
        .with_budget(MemoryBudget::NATIVE)
    }
}

/// Checks that `container` (whole, or [`Container::header_only`]) stores exactly the tensors
/// configs `c` imply, in dtypes and shapes this crate reads, and that its tokenizer builds;
/// returns those tensors (name, logical shape) in load order.
fn check_file(container: &Container<'_>, c: &PipelineConfigs) -> Result<Vec<(String, Vec<usize>)>> {
    c.tokenizer()?;
    let expected = parameter_shapes(c)?;
    quant::check_stored(container, &expected, "the pipeline's configs")?;
    Ok(expected)
}

/// A Stable Diffusion pipeline file loaded as it downloads ([`StreamReader`](crate::weights::stream::StreamReader)): the header is
/// checked as soon as it is complete (a bad file, or a tensor over the device's buffer limit, is
/// refused before its data is fetched), each tensor goes to the device as soon as its bytes
/// have arrived, and [`finish`](Self::finish) assembles the pipeline. The file's bytes are never
/// held whole.
pub struct PipelineStream {
    device: Device,
    largest_buffer: u64,
    what: &'static str,
    chunk_values: usize,
    /// Set by the header.
    file: Option<StreamedFile>,
}

/// What the header of a streamed pipeline file said.
struct StreamedFile {
    configs: PipelineConfigs,
    quants: PipelineQuant,
    name: Option<String>,
    pipeline: String,
    expected: Vec<(String, Vec<usize>)>,
    tensors: DeviceTensors,
}

/// A streamed pipeline, loaded: the pipeline and what its file said of itself.
pub struct StreamedPipeline {
    pub pipeline: StableDiffusion,
    pub configs: PipelineConfigs,
    pub quants: PipelineQuant,
    pub name: Option<String>,
    /// `__metadata__["pipeline"]`.
    pub pipeline_tag: String,
    /// Each tensor (name, logical shape).
    pub parameters: Vec<(String, Vec<usize>)>,
}

impl PipelineStream {
    /// A stream onto `device`, whose buffers take at most `largest_buffer` bytes (`what` names
    /// that limit in messages).
    pub fn new(device: &Device, largest_buffer: u64, what: &'static str) -> Self {
        Self {
            device: device.clone(),
            largest_buffer,
            what,
            chunk_values: UPLOAD_CHUNK_VALUES,
            file: None,
        }
    }

    /// Uploads tensors in parts of at most `values` (tests use small parts).
    pub fn with_chunk_values(mut self, values: usize) -> Self {
        self.chunk_values = values;
        self
    }

    /// Each tensor (name, logical shape), once the header has been read.
    pub fn parameters(&self) -> Option<&[(String, Vec<usize>)]> {
        self.file.as_ref().map(|f| f.expected.as_slice())
    }

    /// The pipeline, once every tensor has arrived (the caller checks
    /// [`StreamReader::finish`](crate::weights::stream::StreamReader::finish) first).
    pub fn finish(self) -> Result<StreamedPipeline> {
        let Some(mut f) = self.file else {
            return Err(Error::format(
                "expected a pipeline file's header, found the stream ending before it",
            ));
        };
        let pipeline =
            StableDiffusion::assemble(&f.configs, &f.expected, &mut f.tensors, &self.device)?;
        Ok(StreamedPipeline {
            pipeline,
            configs: f.configs,
            quants: f.quants,
            name: f.name,
            pipeline_tag: f.pipeline,
            parameters: f.expected,
        })
    }
}

impl StreamSink for PipelineStream {
    fn header(&mut self, header: &Header) -> Result<()> {
        let container = Container::header_only(header);
        let (configs, quants, name) = read_file_configs(&container)?;
        let expected = check_file(&container, &configs)?;
        let tensors = DeviceTensors::new(&expected, &self.device, self.largest_buffer, self.what)?
            .with_chunk_values(self.chunk_values);
        self.file = Some(StreamedFile {
            pipeline: header.metadata.get("pipeline").cloned().unwrap_or_default(),
            configs,
            quants,
            name,
            expected,
            tensors,
        });
        Ok(())
    }

    fn tensor(&mut self, entry: &Entry, view: TensorView<'_>) -> Result<()> {
        match &mut self.file {
            Some(f) => f.tensors.tensor(entry, view),
            None => Err(Error::format("expected the header before any tensor")),
        }
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
    let quant = read_header(container, LDM_PIPELINE)?.unet;
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
