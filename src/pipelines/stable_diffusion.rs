//! Text-to-image latent diffusion: diffusers `pipelines/stable_diffusion/pipeline_stable_diffusion.py`
//! (Rombach et al. 2022). The prompt is tokenized and encoded by CLIP, the U-Net denoises a
//! latent with classifier-free guidance against the negative prompt (`encode_prompt`, the
//! guided loop), and the autoencoder decodes the result. Loaded from a diffusers pipeline folder
//! (`model_index.json` and its `tokenizer/`, `text_encoder/`, `unet/`, `vae/`, `scheduler/`);
//! run one step at a time like the pixel pipeline.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use super::pipeline_file::{read_configs, read_weights};
use crate::error::{Error, Result};
use crate::models::autoencoders::AutoencoderKL;
use crate::models::unets::UNet2DConditionModel;
use crate::noise::BatchNoise;
use crate::pipelines::{step_noise, StepInfo, MAX_GUIDANCE};
use crate::schedulers::{self, Scheduler, SchedulerConfig, SchedulerKind};
use crate::text::clip::state_dict_prefix;
use crate::text::{CLIPTextModel, ClipTokenizer, MAX_LENGTH};
use crate::weights::{Container, ContainerSource};

/// A Stable Diffusion pipeline's components.
#[derive(Debug, Clone)]
pub struct StableDiffusion {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: CLIPTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub scheduler: SchedulerConfig,
}

/// What to generate. `Default`: 50 DDIM steps, guidance 7.5, an empty negative prompt, the
/// U-Net's native size.
#[derive(Debug, Clone, PartialEq)]
pub struct TextToImage {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance_scale: f64,
    pub scheduler: SchedulerKind,
    pub eta: f64,
    pub seed: u64,
    /// The initial latents (`[1, latent, h, w]` values, standard normal) instead of the seed's;
    /// either is scaled by the scheduler's `init_noise_sigma`, as in diffusers' `prepare_latents`.
    pub latents: Option<Vec<f32>>,
}

impl Default for TextToImage {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 50,
            guidance_scale: 7.5,
            scheduler: SchedulerKind::Ddim,
            eta: 0.0,
            seed: 0,
            latents: None,
        }
    }
}

impl StableDiffusion {
    /// Loads a diffusers Stable Diffusion pipeline folder onto `device` (f32 or fp16
    /// safetensors).
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        let c = read_configs(dir)?;
        let tokenizer = ClipTokenizer::from_files(&c.vocab_json, &c.merges_txt)?;
        let bytes = read_weights(&dir.join("text_encoder"), "model")?;
        let container = Container::parse(&bytes)?;
        let prefix = state_dict_prefix(&container);
        let mut src = ContainerSource {
            container: &container,
            device: device.clone(),
        };
        let text_encoder = CLIPTextModel::load(&c.text_encoder, &mut src, prefix, device)?;
        let bytes = read_weights(&dir.join("unet"), "diffusion_pytorch_model")?;
        let container = Container::parse(&bytes)?;
        let mut src = ContainerSource {
            container: &container,
            device: device.clone(),
        };
        let unet = UNet2DConditionModel::load(&c.unet, &mut src, device)?;
        let bytes = read_weights(&dir.join("vae"), "diffusion_pytorch_model")?;
        let container = Container::parse(&bytes)?;
        let mut src = ContainerSource {
            container: &container,
            device: device.clone(),
        };
        let vae = AutoencoderKL::load(&c.vae, &mut src, device)?;
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler: c.scheduler,
        })
    }

    /// The text states of `prompt` (`[1, 77, hidden]`), as diffusers' `encode_prompt`: padded
    /// to 77 tokens and truncated.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Tensor<3>> {
        let ids = self.tokenizer.encode_padded(prompt, MAX_LENGTH)?.ids;
        Ok(self.text_encoder.forward(&[ids])?.last_hidden_state)
    }

    /// `[latent, h, w]` of the U-Net's native size.
    pub fn latent_shape(&self) -> Result<[usize; 3]> {
        let [h, w] = self
            .unet
            .config
            .sample_size
            .map(|s| s.hw())
            .ok_or_else(|| {
                Error::config("unet sample_size: expected the latent size, found none")
            })?;
        Ok([self.unet.config.in_channels, h, w])
    }

    /// Starts a run: encodes both prompts, draws (or takes) the latents, builds the scheduler.
    pub fn start(&self, opts: &TextToImage) -> Result<TextToImageRun<'_>> {
        if !(opts.guidance_scale.is_finite() && opts.guidance_scale.abs() <= MAX_GUIDANCE) {
            return Err(Error::invalid(format!(
                "guidance scale: expected a number from -{MAX_GUIDANCE} to {MAX_GUIDANCE}, found {}",
                opts.guidance_scale
            )));
        }
        let device = self.unet.device().clone();
        let [c, h, w] = self.latent_shape()?;
        let guided = opts.guidance_scale > 1.0;
        let cond = self.encode_prompt(&opts.prompt)?;
        // [uncond; cond], as diffusers concatenates them.
        let context = if guided {
            Tensor::cat(vec![self.encode_prompt(&opts.negative_prompt)?, cond], 0)
        } else {
            cond
        };
        let scheduler = schedulers::build(opts.scheduler, &self.scheduler, opts.steps, opts.eta)?;
        let mut noise = BatchNoise::new(opts.seed, 1);
        let x = match &opts.latents {
            Some(v) if v.len() == c * h * w && v.iter().all(|x| x.is_finite()) => v.clone(),
            Some(v) => {
                return Err(Error::invalid(format!(
                    "latents: expected {} finite values (1x{c}x{h}x{w}), found {} values",
                    c * h * w,
                    v.len()
                )))
            }
            None => noise.sample(c * h * w),
        };
        Ok(TextToImageRun {
            pipe: self,
            noise,
            context,
            guidance: if guided { opts.guidance_scale } else { 1.0 },
            latents: Tensor::from_data(TensorData::new(x, [1, c, h, w]), &device)
                * scheduler.init_noise_sigma(),
            scheduler,
            step: 0,
        })
    }
}

/// One text-to-image run in progress.
pub struct TextToImageRun<'a> {
    pipe: &'a StableDiffusion,
    scheduler: Box<dyn Scheduler>,
    noise: BatchNoise,
    context: Tensor<3>,
    guidance: f64,
    latents: Tensor<4>,
    step: usize,
}

impl TextToImageRun<'_> {
    pub fn total_steps(&self) -> usize {
        self.scheduler.timesteps().len()
    }

    pub fn is_done(&self) -> bool {
        self.step >= self.total_steps()
    }

    /// The current latents.
    pub fn latents(&self) -> Tensor<4> {
        self.latents.clone()
    }

    /// One guided U-Net evaluation and one scheduler step.
    pub fn step(&mut self) -> Result<StepInfo> {
        let total = self.total_steps();
        if self.is_done() {
            return Err(Error::invalid(format!(
                "step: all {total} steps are already done"
            )));
        }
        let i = self.step;
        let t = self.scheduler.timesteps()[i];
        let unet = &self.pipe.unet;
        // The U-Net's input at this step's noise level (diffusers' `scale_model_input`).
        let input = self.scheduler.scale_model_input(self.latents.clone(), i)?;
        let out = if self.guidance != 1.0 {
            let input = Tensor::cat(vec![input.clone(), input], 0);
            let both = unet.forward(input, &[t as f32], &self.context)?;
            let uncond = both.clone().narrow(0, 0, 1);
            let cond = both.narrow(0, 1, 1);
            uncond.clone() + (cond - uncond) * self.guidance
        } else {
            unet.forward(input, &[t as f32], &self.context)?
        };
        let shape = self.latents.dims();
        let noise = step_noise(&*self.scheduler, i, &mut self.noise, shape, unet.device());
        self.latents = self
            .scheduler
            .step(out, i, self.latents.clone(), noise)?
            .prev_sample;
        self.step += 1;
        Ok(StepInfo {
            step: self.step,
            total_steps: total,
            timestep: t,
            last: self.step == total,
        })
    }

    /// The current latents decoded by the autoencoder: the image `[1, 3, H, W]` in [-1, 1].
    pub fn decode(&self) -> Tensor<4> {
        let vae = &self.pipe.vae;
        vae.decode(self.latents.clone() / vae.config.scaling_factor)
    }
}
