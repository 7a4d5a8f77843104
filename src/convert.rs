//! diffusers model folder -> model file. Reads `config.json`, `scheduler_config.json` (diffusers
//! defaults where absent) and the f32/f16 safetensors weights, checks them against the config
//! and writes one quantized file. Used by the CLI; kept in the library so tests can call it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::models::model_file::{write_model_file, ModelMeta, TensorReport};
use crate::models::parameter_shapes;
use crate::models::unets::UNet2DConfig;
use crate::schedulers::SchedulerConfig;
use crate::weights::{Container, Quant};

/// The files of a diffusers model: a `UNet2DModel` folder, or a pipeline folder with `unet/`
/// and `scheduler/` inside.
#[derive(Debug, Clone)]
pub struct DiffusersDir {
    pub config: PathBuf,
    pub weights: PathBuf,
    pub scheduler_config: Option<PathBuf>,
}

impl DiffusersDir {
    pub fn locate(dir: &Path) -> Result<Self> {
        let unet_dir = if dir.join("unet").join("config.json").is_file() {
            dir.join("unet")
        } else {
            dir.to_path_buf()
        };
        let config = unet_dir.join("config.json");
        if !config.is_file() {
            return Err(Error::io(format!(
                "{}: expected a diffusers UNet2DModel folder with config.json (or a pipeline folder with unet/config.json), found none",
                dir.display()
            )));
        }
        let weights = weights_file(&unet_dir, "diffusion_pytorch_model")
            .or_else(|| weights_file(&unet_dir, "model"))
            .ok_or_else(|| {
                Error::io(format!(
                    "{}: expected diffusion_pytorch_model.safetensors, found none (convert .bin weights to safetensors first)",
                    unet_dir.display()
                ))
            })?;
        let scheduler_config = [
            dir.join("scheduler").join("scheduler_config.json"),
            unet_dir.join("scheduler_config.json"),
            dir.join("scheduler_config.json"),
        ]
        .into_iter()
        .find(|p| p.is_file());
        Ok(Self {
            config,
            weights,
            scheduler_config,
        })
    }
}

/// The weights of a diffusers component folder: `{stem}.safetensors`, else its fp16 variant.
pub(crate) fn weights_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [
        format!("{stem}.safetensors"),
        format!("{stem}.fp16.safetensors"),
    ]
    .iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("{}: {e}", path.display())))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("{}: {e}", path.display())))
}

/// Options of a conversion besides the quantization.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    pub name: Option<String>,
    pub null_class: Option<usize>,
    pub class_names: Vec<String>,
}

/// Converts diffusers weights in memory: returns the file bytes and a per-tensor report.
pub fn convert_bytes(
    config: UNet2DConfig,
    scheduler: SchedulerConfig,
    weights: &[u8],
    quant: Quant,
    opts: &ConvertOptions,
) -> Result<(Vec<u8>, Vec<TensorReport>)> {
    let expected = parameter_shapes(&config)?;
    let container = Container::parse(weights)?;
    let mut tensors = BTreeMap::new();
    for (name, shape) in &expected {
        let view = container.expect(name, shape, "config.json")?;
        if &view.shape != shape {
            return Err(Error::format(format!(
                "weights: tensor `{name}`: expected shape {shape:?} (from config.json), found {:?}",
                view.shape
            )));
        }
        tensors.insert(name.clone(), (shape.clone(), view.to_f32(name)?));
    }
    container.only(&tensors.keys().cloned().collect(), "config.json")?;
    if let Some(n) = opts.null_class {
        let k = config.num_class_embeds.unwrap_or(0);
        if n >= k {
            return Err(Error::invalid(format!(
                "null class: expected 0 to {} (num_class_embeds - 1), found {n}",
                k.saturating_sub(1)
            )));
        }
    }
    if !opts.class_names.is_empty() && Some(opts.class_names.len()) > config.num_class_embeds {
        return Err(Error::invalid(format!(
            "class names: expected at most num_class_embeds = {:?}, found {}",
            config.num_class_embeds,
            opts.class_names.len()
        )));
    }
    let meta = ModelMeta {
        quant,
        unet: config,
        scheduler,
        null_class: opts.null_class,
        class_names: opts.class_names.clone(),
        name: opts.name.clone(),
    };
    write_model_file(&meta, &tensors)
}

/// Converts a diffusers folder into model-file bytes.
pub fn convert_dir(
    dir: &Path,
    quant: Quant,
    opts: &ConvertOptions,
) -> Result<(Vec<u8>, Vec<TensorReport>)> {
    let files = DiffusersDir::locate(dir)?;
    let config = UNet2DConfig::from_json(&read_text(&files.config)?)?;
    let scheduler = match &files.scheduler_config {
        Some(p) => SchedulerConfig::from_json(&read_text(p)?)?,
        None => SchedulerConfig::default(),
    };
    let weights = read(&files.weights)?;
    convert_bytes(config, scheduler, &weights, quant, opts)
}

/// A model file with random weights for `config` (a diffusers `config.json`): for tests and
/// benchmarks of real configurations without their checkpoints. Weights of rank >= 2 are
/// normal with std `1 / sqrt(fan_in)` (PyTorch's scale), norm scales 1, biases 0; the
/// scheduler is diffusers' default DDPM schedule. Deterministic in `seed`.
pub fn random_model(config: &UNet2DConfig, quant: Quant, seed: u64) -> Result<Vec<u8>> {
    let shapes = parameter_shapes(config)?;
    let mut noise = crate::noise::BatchNoise::new(seed, 1);
    let mut tensors = BTreeMap::new();
    for (name, shape) in shapes {
        let numel: usize = shape.iter().product();
        let values = if shape.len() >= 2 {
            let fan_in: usize = shape[1..].iter().product();
            let scale = 1.0 / (fan_in.max(1) as f32).sqrt();
            noise.sample(numel).into_iter().map(|v| v * scale).collect()
        } else if name.ends_with(".weight") {
            vec![1.0; numel]
        } else {
            vec![0.0; numel]
        };
        tensors.insert(name, (shape, values));
    }
    let meta = ModelMeta {
        quant,
        unet: config.clone(),
        scheduler: SchedulerConfig::default(),
        null_class: None,
        class_names: Vec::new(),
        name: Some("random weights".into()),
    };
    Ok(write_model_file(&meta, &tensors)?.0)
}
