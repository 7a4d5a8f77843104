//! Text-to-image latent diffusion: diffusers `pipelines/stable_diffusion/pipeline_stable_diffusion.py`
//! (Rombach et al. 2022). The prompt is tokenized and encoded by CLIP, the U-Net denoises a
//! latent with classifier-free guidance against the negative prompt (`encode_prompt`, the
//! guided loop), and the autoencoder decodes the result. Loaded from a diffusers pipeline folder
//! (`model_index.json` and its `tokenizer/`, `text_encoder/`, `unet/`, `vae/`, `scheduler/`);
//! run one step at a time like the pixel pipeline.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use super::pipeline_file::{read_configs, read_weights};
use super::preview::Preview;
use crate::error::{Error, Result};
use crate::memory::{fmt_bytes, MemoryBudget};
use crate::models::autoencoders::AutoencoderKL;
use crate::models::unets::UNet2DConditionModel;
use crate::noise::{BatchNoise, NoiseStream};
use crate::pipelines::img2img::{resize_nearest, start_index, ImageInput};
use crate::pipelines::{step_noise, StepInfo, MAX_BATCH, MAX_GUIDANCE};
use crate::schedulers::{self, Scheduler, SchedulerConfig, SchedulerKind};
use crate::text::clip::state_dict_prefix;
use crate::text::{CLIPTextModel, ClipTokenizer, MAX_LENGTH};
use crate::weights::{Container, ContainerSource};

/// Largest latent side accepted (1024 pixels for SD's factor 8): the U-Net's attention grows with
/// the square of the latent pixels.
pub const MAX_LATENT_SIDE: usize = 128;

/// A Stable Diffusion pipeline's components.
#[derive(Debug, Clone)]
pub struct StableDiffusion {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: CLIPTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub scheduler: SchedulerConfig,
    /// How runs preview their latents (none: only the full VAE decode).
    pub preview: Option<Preview>,
    /// What a run may use ([`LatentRunEstimate`] is checked against it when a run starts):
    /// the native budget unless the loader says otherwise (the browser's heap or adapter).
    pub budget: MemoryBudget,
    /// Bytes of weights held inside the budget's memory (on the CPU; 0 on a GPU).
    pub resident_bytes: u64,
    /// Parameters of every component.
    pub parameters: u64,
    /// Bytes those parameters take on the CPU ([`crate::memory::cpu_weight_bytes`]).
    pub cpu_weight_bytes: u64,
}

/// What to generate. `Default`: 50 DDIM steps, guidance 7.5, an empty negative prompt, one
/// image at the U-Net's native size.
#[derive(Debug, Clone, PartialEq)]
pub struct TextToImage {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance_scale: f64,
    pub scheduler: SchedulerKind,
    pub eta: f64,
    pub seed: u64,
    /// One prompt per image instead of `prompt` for all (empty: `prompt`); its length must be
    /// `batch`.
    pub prompts: Vec<String>,
    /// One negative prompt per image instead of `negative_prompt` for all (empty: that one).
    pub negative_prompts: Vec<String>,
    /// Images per run (diffusers' `num_images_per_prompt`).
    pub batch: usize,
    /// Image size in pixels (multiples of the VAE's factor); `None`: the U-Net's native size.
    pub height: Option<usize>,
    pub width: Option<usize>,
    /// The initial latents (`[batch, latent, h, w]` values, NCHW) instead of the seed's, as
    /// diffusers' `latents=`: the run scales them by the scheduler's initial sigma. Starting
    /// from an image they are the noise added to its latents.
    pub latents: Option<Vec<f32>>,
    /// img2img and inpainting: the image to start from, `strength`, and the mask.
    pub image: Option<ImageInput>,
    /// The standard-normal draws of the VAE posterior samples (the init image's latents, then
    /// the masked image's for an inpainting U-Net; `1 x latent x h x w` each) instead of the
    /// seed's: diffusers draws them from its generator, so parity tests pass them in.
    pub posterior_noise: Vec<Vec<f32>>,
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
            prompts: Vec::new(),
            negative_prompts: Vec::new(),
            batch: 1,
            height: None,
            width: None,
            latents: None,
            image: None,
            posterior_noise: Vec::new(),
        }
    }
}

impl TextToImage {
    /// The keys [`from_json`](Self::from_json) reads.
    pub const KEYS: [&'static str; 11] = [
        "prompt",
        "negativePrompt",
        "guidanceScale",
        "steps",
        "scheduler",
        "seed",
        "eta",
        "batch",
        "width",
        "height",
        "strength",
    ];

    /// The options a caller names in a JSON-like object (the JS API's `sample()` argument, in
    /// camelCase; see [`Self::KEYS`]). Absent or null keys take this crate's defaults (50 DDIM
    /// steps or the scheduler's default, guidance 7.5, the native size; `seed` from
    /// `random_seed`); other keys belong to the caller. Types and ranges are checked here,
    /// what depends on the model when the run starts. `image` is the init image and mask the
    /// caller read from elsewhere (`strength` is theirs, default 0.8, or 1 with a mask, as in
    /// diffusers; refused without an image).
    pub fn from_json(
        options: &serde_json::Value,
        num_train_timesteps: usize,
        random_seed: impl FnOnce() -> u64,
        image: Option<ImageInput>,
    ) -> Result<Self> {
        use serde_json::Value;
        let empty = serde_json::Map::new();
        let mut pixel = serde_json::Map::new();
        let obj = match options {
            Value::Object(o) => o,
            Value::Null => &empty,
            other => {
                return Err(Error::invalid(format!(
                    "sample options: expected an object, found {}",
                    crate::config::json_kind(other)
                )))
            }
        };
        // The options shared with the pixel pipeline are read (and checked) by its reader.
        for k in [
            "scheduler",
            "steps",
            "seed",
            "eta",
            "batch",
            "guidanceScale",
        ] {
            if let Some(v) = obj.get(k) {
                pixel.insert(k.to_string(), v.clone());
            }
        }
        let shared = super::SampleOptions::from_json(
            &Value::Object(pixel),
            num_train_timesteps,
            random_seed,
        )?;
        let get = |key: &str| obj.get(key).filter(|v| !v.is_null());
        // A string for every image, or an array of one string per image.
        let text = |key: &str| -> Result<(String, Vec<String>)> {
            let bad = |v: &Value| {
                Error::invalid(format!(
                    "{key}: expected a string or an array of strings (one per image), found {}",
                    crate::config::json_kind(v)
                ))
            };
            match get(key) {
                None => Ok((String::new(), Vec::new())),
                Some(Value::String(s)) => Ok((s.clone(), Vec::new())),
                Some(Value::Array(items)) if !items.is_empty() => Ok((
                    String::new(),
                    items
                        .iter()
                        .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(v)))
                        .collect::<Result<_>>()?,
                )),
                Some(v) => Err(bad(v)),
            }
        };
        let (prompt, prompts) = text("prompt")?;
        let (negative_prompt, negative_prompts) = text("negativePrompt")?;
        let side = |key: &str| -> Result<Option<usize>> {
            get(key)
                .map(|v| super::int_in(key, v, 1, 1 << 16).map(|x| x as usize))
                .transpose()
        };
        let strength = get("strength")
            .map(|v| super::finite_number("strength", v))
            .transpose()?;
        let image = match (image, strength) {
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "strength: expected an initImage to go with it, found none",
                ))
            }
            (None, None) => None,
            (Some(i), s) => Some(ImageInput {
                strength: s.unwrap_or(if i.mask.is_some() { 1.0 } else { 0.8 }),
                ..i
            }),
        };
        // `batch` defaults to the number of prompts given.
        let batch = match get("batch") {
            None if !prompts.is_empty() => prompts.len(),
            _ => shared.batch,
        };
        Ok(Self {
            prompt,
            negative_prompt,
            prompts,
            negative_prompts,
            steps: shared.steps,
            guidance_scale: match get("guidanceScale") {
                Some(_) => shared.guidance_scale,
                None => TextToImage::default().guidance_scale,
            },
            scheduler: shared.scheduler,
            eta: shared.eta,
            seed: shared.seed,
            batch,
            height: side("height")?,
            width: side("width")?,
            latents: None,
            image,
            posterior_noise: Vec::new(),
        })
    }
}

impl StableDiffusion {
    /// Loads a diffusers Stable Diffusion pipeline folder onto `device` (f32 or fp16
    /// safetensors).
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        let c = read_configs(dir)?;
        let tokenizer = c.tokenizer()?;
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
        let shapes = super::pipeline_file::parameter_shapes(&c)?;
        let parameters = shapes
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum();
        let cpu_weight_bytes = crate::memory::cpu_weight_bytes(shapes.iter().map(|(_, s)| &s[..]));
        Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler: c.scheduler,
            preview: None,
            budget: MemoryBudget::NATIVE,
            resident_bytes: 0,
            parameters,
            cpu_weight_bytes,
        }
        .with_budget(MemoryBudget::NATIVE)
    }

    /// The text states of `prompt` (`[1, 77, hidden]`), as diffusers' `encode_prompt`: padded
    /// to 77 tokens and truncated.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Tensor<3>> {
        let ids = self.tokenizer.encode_padded(prompt, MAX_LENGTH)?.ids;
        Ok(self.text_encoder.forward(&[ids])?.last_hidden_state)
    }

    /// `[latent, h, w]` of an image of `height` x `width` pixels (each `None`: the U-Net's
    /// native size). Sizes must be multiples of the VAE's downscale factor.
    pub fn latent_shape(&self, height: Option<usize>, width: Option<usize>) -> Result<[usize; 3]> {
        let f = self.vae.config.downscale_factor();
        let native = self.unet.config.sample_size.map(|s| s.hw());
        let side = |name: &str, px: Option<usize>, i: usize| -> Result<usize> {
            match (px, native) {
                (Some(px), _) if px >= f && px % f == 0 && px / f <= MAX_LATENT_SIDE => Ok(px / f),
                (Some(px), _) => Err(Error::invalid(format!(
                    "{name}: expected a multiple of {f} (the VAE's downscale factor) from {f} to {}, found {px}",
                    MAX_LATENT_SIDE * f
                ))),
                (None, Some(hw)) => Ok(hw[i]),
                (None, None) => Err(Error::config(format!(
                    "unet sample_size: expected the native size, found none (give the {name})"
                ))),
            }
        };
        Ok([
            self.vae.config.latent_channels,
            side("height", height, 0)?,
            side("width", width, 1)?,
        ])
    }

    /// Decodes latents (U-Net space) with the full VAE: `[B, 3, H, W]`, about [-1, 1] and
    /// not clamped (diffusers' `vae.decode(latents / scaling_factor)`; its image processor
    /// clamps when it makes pictures, as the CLI does).
    pub fn decode_latents(&self, latents: Tensor<4>) -> Tensor<4> {
        let vae = &self.vae;
        vae.decode(latents / vae.config.scaling_factor)
    }

    /// Starts a run: encodes both prompts, builds the scheduler, prepares the image input
    /// (img2img, inpainting) and draws (or takes) the latents.
    pub fn start(&self, opts: &TextToImage) -> Result<TextToImageRun<&Self>> {
        Self::start_with(self, opts)
    }

    /// [`start`](Self::start) for a run that owns a share of the pipeline (the browser's runs
    /// outlive any borrow).
    pub fn start_shared(self: &Arc<Self>, opts: &TextToImage) -> Result<TextToImageRun<Arc<Self>>> {
        Self::start_with(self.clone(), opts)
    }

    fn start_with<P: Deref<Target = Self>>(
        pipe: P,
        opts: &TextToImage,
    ) -> Result<TextToImageRun<P>> {
        let this: &Self = &pipe;
        let prepared = this.prepare(opts)?;
        Ok(TextToImageRun {
            pipe,
            scheduler: prepared.scheduler,
            noise: prepared.noise,
            context: prepared.context,
            guidance: prepared.guidance,
            latents: prepared.latents,
            inpaint: prepared.inpaint,
            x0: None,
            first: prepared.first,
            step: prepared.first,
        })
    }

    /// Everything a run needs: checks the options, encodes the prompts, builds the scheduler,
    /// prepares the image input and draws (or takes) the latents.
    fn prepare(&self, opts: &TextToImage) -> Result<Prepared> {
        if !(opts.guidance_scale.is_finite() && opts.guidance_scale.abs() <= MAX_GUIDANCE) {
            return Err(Error::invalid(format!(
                "guidance scale: expected a number from -{MAX_GUIDANCE} to {MAX_GUIDANCE}, found {}",
                opts.guidance_scale
            )));
        }
        let b = opts.batch;
        if b == 0 || b > MAX_BATCH {
            return Err(Error::invalid(format!(
                "batch: expected 1 to {MAX_BATCH}, found {b}"
            )));
        }
        let device = self.unet.device().clone();
        // An init image sets the size unless height and width are given.
        let (height, width) = match &opts.image {
            Some(i) => (
                opts.height.or(Some(i.shape[1])),
                opts.width.or(Some(i.shape[2])),
            ),
            None => (opts.height, opts.width),
        };
        let [c, h, w] = self.latent_shape(height, width)?;
        let f = self.vae.config.downscale_factor();
        let inpainting_unet = self.unet.config.in_channels == 2 * c + 1;
        let mask = match &opts.image {
            Some(i) => {
                i.check(self.vae.config.in_channels, [h * f, w * f])?;
                i.binary_mask()
            }
            None => None,
        };
        if inpainting_unet && mask.is_none() {
            return Err(Error::invalid(format!(
                "this U-Net takes {} input channels (an inpainting U-Net): expected an init image and a mask, found {}",
                self.unet.config.in_channels,
                if opts.image.is_some() { "no mask" } else { "neither" }
            )));
        }
        let guided = opts.guidance_scale > 1.0;
        self.check_run(b, guided, [h, w])?;
        // One prompt for all images, or one each (diffusers: a list of prompts).
        let encode_each = |one: &str, each: &[String], name: &str| -> Result<Tensor<3>> {
            match each.len() {
                0 => Ok(self.encode_prompt(one)?.repeat_dim(0, b)),
                n if n == b => Ok(Tensor::cat(
                    each.iter()
                        .map(|p| self.encode_prompt(p))
                        .collect::<Result<Vec<_>>>()?,
                    0,
                )),
                n => Err(Error::invalid(format!(
                    "{name}: expected one prompt or {b} (the batch size), found {n}"
                ))),
            }
        };
        let cond = encode_each(&opts.prompt, &opts.prompts, "prompt")?;
        // [uncond; cond], as diffusers concatenates them.
        let context = if guided {
            let uncond = encode_each(
                &opts.negative_prompt,
                &opts.negative_prompts,
                "negative prompt",
            )?;
            Tensor::cat(vec![uncond, cond], 0)
        } else {
            cond
        };
        let mut scheduler =
            schedulers::build(opts.scheduler, &self.scheduler, opts.steps, opts.eta)?;
        // img2img and inpainting run the last `strength` of the schedule (`get_timesteps`).
        let first = match &opts.image {
            Some(i) => start_index(scheduler.timesteps().len(), i.strength)?,
            None => 0,
        };
        scheduler.set_begin_index(first)?;

        // The VAE posterior samples (image, then masked image) take the given draws in order,
        // else their own seeded stream, one sample shared by the batch as in diffusers.
        let mut posterior_draws = opts.posterior_noise.iter();
        let mut posterior_stream = NoiseStream::new(opts.seed, b as u64);
        let mut encode = |pixels: Vec<f32>| -> Result<Tensor<4>> {
            let [ci, hi, wi] = [self.vae.config.in_channels, h * f, w * f];
            let x = Tensor::from_data(TensorData::new(pixels, [1, ci, hi, wi]), &device);
            let dist = self.vae.encode(x);
            let eps = match posterior_draws.next() {
                Some(v) if v.len() == c * h * w => v.clone(),
                Some(v) => {
                    return Err(Error::invalid(format!(
                        "posterior noise: expected {} values (1x{c}x{h}x{w}), found {}",
                        c * h * w,
                        v.len()
                    )))
                }
                None => {
                    let mut v = vec![0f32; c * h * w];
                    posterior_stream.fill(&mut v);
                    v
                }
            };
            let eps = Tensor::from_data(TensorData::new(eps, [1, c, h, w]), &device);
            Ok((dist.sample(eps) * self.vae.config.scaling_factor).repeat_dim(0, b))
        };
        // diffusers encodes the image when it starts from it (strength < 1) or blends it back
        // (an ordinary U-Net with a mask), then the masked image for an inpainting U-Net.
        let image_latents = match &opts.image {
            Some(i) if i.strength < 1.0 || (mask.is_some() && !inpainting_unet) => {
                Some(encode(i.image.clone())?)
            }
            _ => None,
        };

        let mut noise = BatchNoise::new(opts.seed, b);
        let n = b * c * h * w;
        let eps = match &opts.latents {
            Some(v) if v.len() == n && v.iter().all(|x| x.is_finite()) => v.clone(),
            Some(v) => {
                return Err(Error::invalid(format!(
                    "latents: expected {n} finite values ({b}x{c}x{h}x{w}), found {} values{}",
                    v.len(),
                    if v.len() == n {
                        " with a NaN or infinity"
                    } else {
                        ""
                    }
                )))
            }
            None => noise.sample(c * h * w),
        };
        let eps = Tensor::<4>::from_data(TensorData::new(eps, [b, c, h, w]), &device);
        let latents = match (&opts.image, &image_latents) {
            // Starting part-way: the image's latents noised to the first timestep run.
            (Some(i), Some(x0)) if i.strength < 1.0 => {
                scheduler.add_noise(x0.clone(), eps.clone(), first)?
            }
            // From noise: at the scheduler's initial noise level (`init_noise_sigma`).
            _ => eps.clone() * scheduler.init_noise_sigma(),
        };

        let inpaint = match (&opts.image, mask) {
            (Some(i), Some(m)) => {
                let full = |data: Vec<f32>, c: usize| {
                    Tensor::<4>::from_data(TensorData::new(data, [1, c, h * f, w * f]), &device)
                        .repeat_dim(0, b)
                };
                let overlay = (full(i.image.clone(), 3), full(m.clone(), 1));
                let m = resize_nearest(&m, [h * f, w * f], [h, w]);
                let m = Tensor::<4>::from_data(TensorData::new(m, [1, 1, h, w]), &device)
                    .repeat_dim(0, b);
                // [mask, masked image latents], built once, doubled for the guided batch.
                let unet_extra = if inpainting_unet {
                    let extra = Tensor::cat(vec![m.clone(), encode(i.masked_image())?], 1);
                    Some(if guided {
                        extra.repeat_dim(0, 2)
                    } else {
                        extra
                    })
                } else {
                    None
                };
                Some(Inpainting {
                    mask: m,
                    unet_extra,
                    image_latents: if inpainting_unet {
                        None
                    } else {
                        image_latents.clone()
                    },
                    noise: eps,
                    overlay,
                })
            }
            _ => None,
        };
        Ok(Prepared {
            scheduler,
            noise,
            context,
            guidance: if guided { opts.guidance_scale } else { 1.0 },
            latents,
            inpaint,
            first,
        })
    }
}

/// A run's state before its first step.
struct Prepared {
    scheduler: Box<dyn Scheduler>,
    noise: BatchNoise,
    context: Tensor<3>,
    guidance: f64,
    latents: Tensor<4>,
    inpaint: Option<Inpainting>,
    first: usize,
}

/// What an inpainting run adds to each step.
struct Inpainting {
    /// `[B, 1, h, w]`: 1 where the image is repainted.
    mask: Tensor<4>,
    /// An inpainting U-Net's extra input channels: the mask and the masked image's latents
    /// (`[B or 2B, 1 + latent, h, w]`, doubled when guided).
    unet_extra: Option<Tensor<4>>,
    /// An ordinary U-Net's blend target: the image's latents, noised to each next timestep.
    image_latents: Option<Tensor<4>>,
    /// The initial noise, reused to noise the image latents (as diffusers does).
    noise: Tensor<4>,
    /// The init image `[B, 3, H, W]` and the binarized mask `[B, 1, H, W]` at full size, to
    /// paste the kept pixels back over the final decode ([`TextToImageRun::image`]).
    overlay: (Tensor<4>, Tensor<4>),
}

/// One text-to-image run in progress.
pub struct TextToImageRun<P: Deref<Target = StableDiffusion>> {
    pipe: P,
    scheduler: Box<dyn Scheduler>,
    noise: BatchNoise,
    context: Tensor<3>,
    guidance: f64,
    latents: Tensor<4>,
    inpaint: Option<Inpainting>,
    /// The latest prediction of the clean latents.
    x0: Option<Tensor<4>>,
    /// The first scheduled step this run takes (img2img, inpainting: `strength`).
    first: usize,
    /// The index of the next scheduled step.
    step: usize,
}

impl<P: Deref<Target = StableDiffusion>> TextToImageRun<P> {
    /// The steps this run takes (fewer than scheduled when it starts from an image).
    pub fn total_steps(&self) -> usize {
        self.scheduler.timesteps().len() - self.first
    }

    /// The pipeline this run uses.
    pub fn pipe(&self) -> &StableDiffusion {
        &self.pipe
    }

    pub fn is_done(&self) -> bool {
        self.step >= self.scheduler.timesteps().len()
    }

    /// The current latents.
    pub fn latents(&self) -> Tensor<4> {
        self.latents.clone()
    }

    /// One guided U-Net evaluation and one scheduler step (then, inpainting with an ordinary
    /// U-Net, the kept region blended back in).
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
        let b = self.latents.dims()[0];
        let guided = self.guidance != 1.0;
        // The U-Net's input at this step's noise level (diffusers' `scale_model_input`).
        let scaled = self.scheduler.scale_model_input(self.latents.clone(), i)?;
        let mut input = if guided {
            Tensor::cat(vec![scaled.clone(), scaled], 0)
        } else {
            scaled
        };
        if let Some(Inpainting {
            unet_extra: Some(extra),
            ..
        }) = &self.inpaint
        {
            // The inpainting U-Net reads [latents, mask, masked image latents].
            input = Tensor::cat(vec![input, extra.clone()], 1);
        }
        let out = if guided {
            let both = unet.forward(input, &[t as f32], &self.context)?;
            let uncond = both.clone().narrow(0, 0, b);
            let cond = both.narrow(0, b, b);
            uncond.clone() + (cond - uncond) * self.guidance
        } else {
            unet.forward(input, &[t as f32], &self.context)?
        };
        let shape = self.latents.dims();
        let noise = step_noise(&*self.scheduler, i, &mut self.noise, shape, unet.device());
        let out = self.scheduler.step(out, i, self.latents.clone(), noise)?;
        self.latents = out.prev_sample;
        if let Some(Inpainting {
            mask,
            image_latents: Some(image),
            noise,
            ..
        }) = &self.inpaint
        {
            // Keep the unmasked region: the image's latents at the next timestep (clean after
            // the last step).
            let kept = if i + 1 < self.scheduler.timesteps().len() {
                self.scheduler
                    .add_noise(image.clone(), noise.clone(), i + 1)?
            } else {
                image.clone()
            };
            let keep = mask.clone().neg() + 1.0;
            self.latents = kept * keep + self.latents.clone() * mask.clone();
        }
        self.x0 = Some(out.pred_original_sample);
        self.step += 1;
        Ok(StepInfo {
            step: self.step - self.first,
            total_steps: total,
            timestep: t,
            last: self.is_done(),
        })
    }

    /// The latest prediction of the clean latents (none before the first step).
    pub fn predicted_x0(&self) -> Option<Tensor<4>> {
        self.x0.clone()
    }

    /// The preview of the latest predicted x_0 ([`Preview::show`]): none before the first step
    /// or when the pipeline has no preview decoder.
    pub fn preview(&self) -> Result<Option<Tensor<4>>> {
        match (&self.pipe.preview, &self.x0) {
            (Some(p), Some(x0)) => p.show(x0.clone()).map(Some),
            _ => Ok(None),
        }
    }

    /// The current latents decoded by the autoencoder: the images `[B, 3, H, W]` in [-1, 1]
    /// (diffusers' output).
    pub fn decode(&self) -> Tensor<4> {
        self.pipe.decode_latents(self.latents.clone())
    }

    /// The picture to show: [`decode`](Self::decode), clamped to [-1, 1], and for an inpainting
    /// run the init image's pixels pasted back outside the mask (diffusers' `apply_overlay`):
    /// what was not masked is the image exactly, not its round trip through the autoencoder.
    pub fn image(&self) -> Tensor<4> {
        let decoded = self.decode().clamp(-1.0, 1.0);
        match &self.inpaint {
            Some(Inpainting {
                overlay: (image, mask),
                ..
            }) => decoded * mask.clone() + image.clone() * (mask.clone().neg() + 1.0),
            None => decoded,
        }
    }
}

/// The estimated peak of a latent run beyond the weights, in bytes: the larger of one guided
/// U-Net call and the VAE decode of the batch, and the largest single tensor either makes.
/// Follows the data flow of `unet_2d_condition.rs` (skip states, the widest resnet's working
/// tensors, the transformer's q/k/v and its GEGLU feed-forward, attention scores chunked to
/// [`MAX_SCORE_ELEMS`](crate::memory::MAX_SCORE_ELEMS)) and of the decoder (each level's
/// resnet tensors at its resolution, after the 2x upsample). With SD-Turbo's shapes (512x512,
/// batch 1) it gives 144 MiB for the step and 768 MiB for the decode, against 64 and 770 MiB
/// measured on the CPU (BENCHMARKS.md, "Latent diffusion at scale"): the step errs on the safe
/// side (it counts every transformer buffer alive at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatentRunEstimate {
    pub unet: u64,
    pub decode: u64,
    pub largest_buffer: u64,
}

impl LatentRunEstimate {
    pub fn total(&self) -> u64 {
        self.unet.max(self.decode)
    }
}

impl StableDiffusion {
    /// The pipeline checked against `budget` from now on (its weights counted as resident when
    /// they live in the budget's memory). Refuses weights that alone exceed it.
    pub fn with_budget(mut self, budget: MemoryBudget) -> Result<Self> {
        let params = self.parameters;
        self.resident_bytes = if budget.weights_inside {
            self.cpu_weight_bytes
        } else {
            0
        };
        if self.resident_bytes > budget.total {
            return Err(Error::memory(format!(
                "this pipeline's weights: expected at most {} ({}), found {} ({params} parameters on the CPU)",
                fmt_bytes(budget.total),
                budget.what,
                fmt_bytes(self.resident_bytes)
            )));
        }
        self.budget = budget;
        Ok(self)
    }

    /// Refuses a run whose [`LatentRunEstimate`] does not fit beside the weights, naming the
    /// estimate, the budget and a batch that would fit.
    fn check_run(&self, batch: usize, guided: bool, hw: [usize; 2]) -> Result<()> {
        let b = &self.budget;
        let fits = |e: &LatentRunEstimate| {
            self.resident_bytes.saturating_add(e.total()) <= b.total
                && e.largest_buffer <= b.largest_buffer
        };
        let est = self.estimate_run(batch, guided, hw);
        if fits(&est) {
            return Ok(());
        }
        let f = self.vae.config.downscale_factor();
        let smaller = (1..batch)
            .rev()
            .find(|&k| fits(&self.estimate_run(k, guided, hw)));
        let advice = match smaller {
            Some(k) => format!("use a batch of at most {k}"),
            None => "use a smaller image".to_string(),
        };
        Err(Error::memory(format!(
            "a {}x{} run of {batch} image(s): expected at most {} of activations beside {} of weights and no tensor over {} ({}), found an estimated {} (largest tensor {}); {advice}",
            hw[0] * f,
            hw[1] * f,
            fmt_bytes(b.total.saturating_sub(self.resident_bytes)),
            fmt_bytes(self.resident_bytes),
            fmt_bytes(b.largest_buffer),
            b.what,
            fmt_bytes(est.total()),
            fmt_bytes(est.largest_buffer)
        )))
    }

    /// [`LatentRunEstimate`] for `batch` images of `[h, w]` latents.
    pub fn estimate_run(&self, batch: usize, guided: bool, hw: [usize; 2]) -> LatentRunEstimate {
        estimate_latent_run(&self.unet.config, &self.vae.config, batch, guided, hw)
    }
}

/// [`LatentRunEstimate`] of a pipeline with these U-Net and VAE configs, for `batch` images of
/// `[h, w]` latents (`guided`: both branches of classifier-free guidance in one U-Net call).
pub fn estimate_latent_run(
    u: &crate::models::unets::UNet2DConditionConfig,
    v: &crate::models::autoencoders::AutoencoderKLConfig,
    batch: usize,
    guided: bool,
    [h, w]: [usize; 2],
) -> LatentRunEstimate {
    {
        let ub = (batch * if guided { 2 } else { 1 }) as u64;
        let (mut hh, mut ww) = (h as u64, w as u64);
        let (mut skips, mut working, mut largest) = (0u64, 0u64, 0u64);
        let n = u.block_out_channels.len();
        for (i, &c) in u.block_out_channels.iter().enumerate() {
            let (c, area) = (c as u64, hh * ww);
            skips += c * area * (u.layers_per_block as u64 + 1);
            // resnet: input (with the concatenated skip), norm, conv1, conv2, shortcut
            working = working.max(7 * c * area);
            // transformer: tokens, q, k, v, out, the GEGLU projection (8c) and its product (4c)
            let heads = u.heads(i).max(1) as u64;
            let scores = (ub * heads * area * area).min(crate::memory::MAX_SCORE_ELEMS as u64);
            working = working.max(17 * c * area + scores / ub.max(1));
            largest = largest.max(8 * c * area);
            if i + 1 < n {
                hh = hh.div_ceil(2);
                ww = ww.div_ceil(2);
            }
        }
        let unet = 4 * ub * (skips + working);
        // The decoder runs its levels widest-last; each resnet holds ~5 tensors of its level.
        let f = v.downscale_factor() as u64;
        let b = batch as u64;
        let (mut decode, mut decode_largest) = (0u64, 0u64);
        let rev: Vec<u64> = v
            .block_out_channels
            .iter()
            .rev()
            .map(|&c| c as u64)
            .collect();
        let mut scale = f;
        for (i, &c) in rev.iter().enumerate() {
            let area = (h as u64 * w as u64 * f * f) / (scale * scale);
            // The level's input arrives upsampled from the level before it.
            let c_in = if i == 0 { c } else { rev[i - 1] };
            decode = decode.max(b * (c_in + 4 * c) * area);
            decode_largest = decode_largest.max(b * c_in.max(c) * area);
            if i + 1 < rev.len() {
                scale /= 2;
            }
        }
        LatentRunEstimate {
            unet,
            decode: 4 * decode,
            largest_buffer: 4 * (ub * largest).max(decode_largest),
        }
    }
}
