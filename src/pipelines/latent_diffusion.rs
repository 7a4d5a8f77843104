//! Unconditional latent diffusion: diffusers' `LDMPipeline`
//! (`pipelines/deprecated/latent_diffusion_uncond/pipeline_latent_diffusion_uncond.py`;
//! Rombach et al. 2022), e.g. `CompVis/ldm-celebahq-256`. A `UNet2DModel` denoises latents
//! `[B, C, h, w]` with a scheduler (DDIM in diffusers' checkpoints), and the `VQModel` decodes
//! them: `vqvae.decode(latents / scaling_factor)`, which snaps every latent vector to the
//! codebook first. Loaded from a diffusers pipeline folder (`model_index.json`, `unet/`,
//! `vqvae/`, `scheduler/`) or a pipeline file ([`super::pipeline_file`]).
//!
//! The denoising loop is the pixel pipeline's ([`SamplingRun`]) on latents; what this file adds
//! is the autoencoder at the end. Run one step at a time like the other pipelines.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Device, Tensor};

use super::pipeline_file::{read_text, read_weights};
use crate::config::shown;
use crate::error::{Error, Result};
use crate::memory::MemoryBudget;
use crate::models::autoencoders::{VQModel, VQModelConfig};
use crate::models::unets::{UNet2DConfig, UNet2DModel};
use crate::pipelines::{SampleOptions, SamplingRun, StepInfo};
use crate::schedulers::SchedulerConfig;
use crate::weights::{Container, ContainerSource, ShapeRecorder};

/// diffusers' class name of this pipeline (`model_index.json`, the pipeline file's metadata).
pub const LDM_PIPELINE: &str = "LDMPipeline";

/// The configs of an LDM pipeline's components.
#[derive(Debug, Clone, PartialEq)]
pub struct LdmConfigs {
    pub unet: UNet2DConfig,
    pub vqvae: VQModelConfig,
    pub scheduler: SchedulerConfig,
}

impl LdmConfigs {
    /// The components fit together: the U-Net denoises what the quantizer quantizes
    /// (`vq_embed_dim` channels) and says at what size.
    pub fn check_compatible(&self) -> Result<()> {
        let (u, d) = (&self.unet, self.vqvae.embed_dim());
        if u.in_channels != d || u.out_channels != d {
            return Err(Error::config(format!(
                "unet in_channels {} and out_channels {}: expected both equal to the vqvae's vq_embed_dim {d} (the latents it quantizes)",
                u.in_channels, u.out_channels
            )));
        }
        if u.sample_hw().is_none() {
            return Err(Error::config(
                "unet sample_size: expected the latent size, found none",
            ));
        }
        if u.num_class_embeds.is_some() {
            return Err(Error::unsupported(
                "unet num_class_embeds: expected none (LDMPipeline is unconditional), found a class-conditional U-Net",
            ));
        }
        Ok(())
    }
}

/// The configs of a diffusers `LDMPipeline` folder: `model_index.json` names the pipeline and
/// its `unet`, `vqvae` and `scheduler`, each folder holds its config.
pub fn read_configs(dir: &Path) -> Result<LdmConfigs> {
    let path = dir.join("model_index.json");
    let index: serde_json::Value = serde_json::from_str(&read_text(&path)?)
        .map_err(|e| Error::format(format!("{}: expected JSON, found {e}", path.display())))?;
    let class = index
        .get("_class_name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if class != LDM_PIPELINE {
        return Err(Error::unsupported(format!(
            "model_index.json `_class_name`: expected `{LDM_PIPELINE}`, found `{}`",
            shown(class)
        )));
    }
    for (component, want) in [("unet", "UNet2DModel"), ("vqvae", "VQModel")] {
        let found = index
            .get(component)
            .and_then(|v| v.as_array())
            .and_then(|a| a.get(1))
            .and_then(|v| v.as_str());
        if found != Some(want) {
            return Err(Error::unsupported(format!(
                "model_index.json `{component}`: expected [\"diffusers\", \"{want}\"], found {}",
                index
                    .get(component)
                    .map_or("none".into(), |v| shown(&v.to_string()))
            )));
        }
    }
    let c = LdmConfigs {
        unet: UNet2DConfig::from_json(&read_text(&dir.join("unet/config.json"))?)?,
        vqvae: VQModelConfig::from_json(&read_text(&dir.join("vqvae/config.json"))?)?,
        scheduler: SchedulerConfig::from_json(&read_text(
            &dir.join("scheduler/scheduler_config.json"),
        )?)?,
    };
    c.check_compatible()?;
    Ok(c)
}

/// Whether `dir` is a diffusers `LDMPipeline` folder (what `convert` makes a pipeline file of).
pub fn is_ldm_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("model_index.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("_class_name").and_then(|c| c.as_str()) == Some(LDM_PIPELINE))
}

/// An LDM pipeline's components.
#[derive(Debug, Clone)]
pub struct LatentDiffusion {
    pub unet: Arc<UNet2DModel>,
    pub vqvae: VQModel,
    pub scheduler: SchedulerConfig,
}

impl LatentDiffusion {
    /// Loads a diffusers `LDMPipeline` folder onto `device` (f32 or fp16 safetensors).
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        let c = read_configs(dir)?;
        let bytes = read_weights(&dir.join("unet"), "diffusion_pytorch_model")?;
        let container = Container::parse(&bytes)?;
        let mut src = ContainerSource {
            container: &container,
            device: device.clone(),
        };
        let unet = UNet2DModel::load(&c.unet, &mut src, device)?;
        let bytes = read_weights(&dir.join("vqvae"), "diffusion_pytorch_model")?;
        let container = Container::parse(&bytes)?;
        let mut src = ContainerSource {
            container: &container,
            device: device.clone(),
        };
        let vqvae = VQModel::load(&c.vqvae, &mut src, device)?;
        Ok(Self {
            unet: Arc::new(unet),
            vqvae,
            scheduler: c.scheduler,
        })
    }

    /// `[C, h, w]` of the latents: the U-Net's channels and native size.
    pub fn latent_shape(&self) -> Result<[usize; 3]> {
        let c = &self.unet.config;
        let [h, w] = c.sample_hw().ok_or_else(|| {
            Error::config("unet sample_size: expected the latent size, found none")
        })?;
        Ok([c.in_channels, h, w])
    }

    /// Starts a run: `opts.batch` latents drawn from `opts.seed` (or `opts.init_noise`,
    /// `batch * C * h * w` values), the scheduler `opts.scheduler` with `opts.steps` and
    /// `opts.eta`. Class labels and guidance are refused: the model is unconditional.
    pub fn start(&self, opts: &SampleOptions) -> Result<LdmRun<'_>> {
        if opts.class_labels.is_some() || opts.guidance_scale != 1.0 {
            return Err(Error::invalid(format!(
                "LDMPipeline is unconditional: expected no class labels and guidance 1, found labels {:?} and guidance {}",
                opts.class_labels, opts.guidance_scale
            )));
        }
        // The run is checked against the native budget, beside both models' f32 weights.
        let budget = MemoryBudget::NATIVE;
        let resident = if budget.weights_inside {
            self.cpu_weight_bytes()?
        } else {
            0
        };
        // The run starts at the scheduler's `init_noise_sigma`, as diffusers' `latents =
        // latents * self.scheduler.init_noise_sigma`.
        let run = SamplingRun::with_config(
            self.unet.clone(),
            &self.scheduler,
            None,
            opts,
            &budget,
            resident,
        )?;
        Ok(LdmRun { pipe: self, run })
    }

    /// Every parameter of the U-Net and the VQ model: (name, shape).
    fn parameter_shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let mut rec = ShapeRecorder::default();
        VQModel::load(&self.vqvae.config, &mut rec, &Device::flex())?;
        let mut shapes = crate::models::parameter_shapes(&self.unet.config)?;
        shapes.append(&mut rec.entries);
        Ok(shapes)
    }

    /// Bytes the U-Net's and the VQ model's weights take on the CPU
    /// ([`crate::memory::cpu_weight_bytes`]).
    fn cpu_weight_bytes(&self) -> Result<u64> {
        let shapes = self.parameter_shapes()?;
        Ok(crate::memory::cpu_weight_bytes(
            shapes.iter().map(|(_, s)| &s[..]),
        ))
    }

    /// Parameters of the U-Net and the VQ model together.
    pub fn parameter_count(&self) -> Result<usize> {
        Ok(self
            .parameter_shapes()?
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum())
    }

    /// Latents `[B, C, h, w]` -> the image `[B, 3, H, W]` in about [-1, 1], as `LDMPipeline`
    /// decodes: divided by the VQ model's `scaling_factor`, quantized, decoded.
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        let scaled = latents / self.vqvae.config.scaling_factor;
        self.vqvae.decode(scaled, false).sample
    }
}

/// One LDM run in progress.
pub struct LdmRun<'a> {
    pipe: &'a LatentDiffusion,
    run: SamplingRun,
}

impl LdmRun<'_> {
    pub fn total_steps(&self) -> usize {
        self.run.total_steps()
    }

    pub fn is_done(&self) -> bool {
        self.run.is_done()
    }

    pub fn timesteps(&self) -> &[f64] {
        self.run.timesteps()
    }

    /// `[B, C, h, w]` of the latents.
    pub fn shape(&self) -> [usize; 4] {
        self.run.shape()
    }

    /// The current latents (the initial ones before the first step).
    pub fn latents(&self) -> Tensor<4> {
        self.run.current()
    }

    /// The latest prediction of the clean latents (none before the first step).
    pub fn predicted_x0(&self) -> Option<Tensor<4>> {
        self.run.predicted_x0()
    }

    /// One U-Net evaluation and one scheduler step.
    pub fn step(&mut self) -> Result<StepInfo> {
        self.run.step()
    }

    /// The current latents decoded ([`LatentDiffusion::decode`]): the images `[B, 3, H, W]` in
    /// about [-1, 1]; `LDMPipeline`'s output is `(image / 2 + 0.5).clamp(0, 1)`.
    pub fn decode(&self) -> Tensor<4> {
        self.pipe.decode(self.run.current())
    }
}
