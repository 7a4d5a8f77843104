//! The pixel-space pipeline: x_T -> U-Net -> (classifier-free guidance with a null class) ->
//! scheduler step -> x_{t-1}, one call per step. Mirrors diffusers' `DDPMPipeline` /
//! `DDIMPipeline` (`pipelines/ddpm/pipeline_ddpm.py`, `pipelines/ddim/pipeline_ddim.py`) with
//! any of the schedulers, plus class labels and guidance.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::memory::MemoryBudget;
use crate::models::unets::unet_2d_memory::check_run;
use crate::models::unets::UNet2DModel;
use crate::models::LoadedModel;
use crate::noise::BatchNoise;
use crate::pipelines::img2img::start_index;
use crate::pipelines::{step_noise, SampleOptions, StepInfo, MAX_BATCH, MAX_GUIDANCE};
use crate::schedulers::SchedulerConfig;
use crate::schedulers::{self, Scheduler};

/// One sampling run in progress.
pub struct SamplingRun {
    unet: Arc<UNet2DModel>,
    scheduler: Box<dyn Scheduler>,
    noise: BatchNoise,
    /// Per-image labels for the conditional branch (empty for unconditional models).
    labels: Vec<usize>,
    null_class: Option<usize>,
    guidance: f64,
    shape: [usize; 4],
    x: Tensor<4>,
    x0: Option<Tensor<4>>,
    /// Inpainting: what the mask keeps of the image.
    blend: Option<MaskBlend>,
    /// The first scheduled step this run takes (from an image: `strength`).
    first: usize,
    /// The index of the next scheduled step.
    step: usize,
}

/// Mask-blending inpainting in pixel space (as diffusers' `StableDiffusionInpaintPipeline` does
/// for ordinary U-Nets): after each step the unmasked pixels become the image noised to the next
/// timestep, and the image itself after the last.
struct MaskBlend {
    /// `[B, 1, H, W]`, 1 where the image is repainted.
    mask: Tensor<4>,
    image: Tensor<4>,
    /// The run's initial noise, reused for every re-noising.
    noise: Tensor<4>,
}

impl SamplingRun {
    /// Prepares a run: validates the options, draws x_T (or takes `init_noise`), builds the
    /// scheduler from the model's scheduler config.
    pub fn new(model: &LoadedModel, opts: &SampleOptions) -> Result<Self> {
        Self::with_config(
            model.unet.clone(),
            &model.meta.scheduler,
            model.meta.null_class,
            opts,
            &model.budget,
            model.resident_bytes,
        )
    }

    /// [`new`](Self::new) from the parts of a model: the run is checked against `budget`, of
    /// which `resident` bytes (the weights) are already taken.
    pub(crate) fn with_config(
        unet: Arc<UNet2DModel>,
        scheduler_config: &SchedulerConfig,
        null_class: Option<usize>,
        opts: &SampleOptions,
        budget: &MemoryBudget,
        resident: u64,
    ) -> Result<Self> {
        let cfg = &unet.config;
        let b = opts.batch;
        if b == 0 || b > MAX_BATCH {
            return Err(Error::invalid(format!(
                "batch: expected 1 to {MAX_BATCH}, found {b}"
            )));
        }
        if !(opts.guidance_scale.is_finite() && opts.guidance_scale.abs() <= MAX_GUIDANCE) {
            return Err(Error::invalid(format!(
                "guidance scale: expected a number from -{MAX_GUIDANCE} to {MAX_GUIDANCE}, found {:?}",
                opts.guidance_scale
            )));
        }
        let [h, w] = cfg.sample_hw().ok_or_else(|| {
            Error::config(
                "sample_size: expected the model config to give the image size, found none",
            )
        })?;
        let c = cfg.in_channels;
        let shape = [b, c, h, w];
        let per_item = c * h * w;

        // 1. labels (the null class for the unconditional branch) and guidance
        let labels = class_labels(
            cfg.num_class_embeds,
            null_class,
            opts.class_labels.as_deref(),
            b,
        )?;
        let guided = opts.guidance_scale != 1.0 && !labels.is_empty();
        if guided && null_class.is_none() {
            return Err(Error::invalid(format!(
                "guidance scale {}: expected a model with a null class for classifier-free guidance, found none (use guidance 1)",
                opts.guidance_scale
            )));
        }

        // 2. memory, then the scheduler (both refuse before anything is allocated)
        let cpu = *unet.device() == Device::flex();
        check_run(cfg, [h, w], b, guided, resident, budget, cpu)?;
        let mut scheduler =
            schedulers::build(opts.scheduler, scheduler_config, opts.steps, opts.eta)?;
        let first = match &opts.image {
            Some(i) => {
                i.check(c, [h, w])?;
                start_index(scheduler.timesteps().len(), i.strength)?
            }
            None => 0,
        };
        scheduler.set_begin_index(first)?;

        // 3. x_T: the caller's, or drawn from the seed; from an image, the image noised to the
        //    first timestep run (SDEdit)
        let mut noise = BatchNoise::new(opts.seed, b);
        let x_t = match &opts.init_noise {
            Some(v) => checked_init_noise(v, shape)?,
            None => noise.sample(per_item),
        };
        let device = unet.device().clone();
        let eps = Tensor::<4>::from_data(TensorData::new(x_t, shape), &device);
        let image = opts.image.as_ref().map(|i| {
            Tensor::<4>::from_data(TensorData::new(i.image.clone(), [1, c, h, w]), &device)
                .repeat_dim(0, b)
        });
        let x = match (&opts.image, &image) {
            (Some(i), Some(x0)) if i.strength < 1.0 => {
                scheduler.add_noise(x0.clone(), eps.clone(), first)?
            }
            // From noise: x_T at the scheduler's initial noise level (1 but for the
            // sigma-space schedulers).
            _ => eps.clone() * scheduler.init_noise_sigma(),
        };
        let blend = match (&opts.image, image) {
            (Some(i), Some(image)) => i.binary_mask().map(|m| MaskBlend {
                mask: Tensor::<4>::from_data(TensorData::new(m, [1, 1, h, w]), &device)
                    .repeat_dim(0, b),
                image,
                noise: eps,
            }),
            _ => None,
        };
        Ok(Self {
            unet,
            scheduler,
            noise,
            labels,
            null_class,
            guidance: if guided { opts.guidance_scale } else { 1.0 },
            shape,
            x,
            x0: None,
            blend,
            first,
            step: first,
        })
    }

    /// The steps this run takes (fewer than scheduled when it starts from an image).
    pub fn total_steps(&self) -> usize {
        self.scheduler.timesteps().len() - self.first
    }

    pub fn is_done(&self) -> bool {
        self.step >= self.scheduler.timesteps().len()
    }

    /// The model timesteps of the run's steps.
    pub fn timesteps(&self) -> &[f64] {
        self.scheduler.timesteps()
    }

    /// `[batch, channels, height, width]` of the samples.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    pub fn device(&self) -> &Device {
        self.unet.device()
    }

    /// The current sample x_t (x_T before the first step, the final image after the last).
    pub fn current(&self) -> Tensor<4> {
        self.x.clone()
    }

    /// Replaces the current sample x_t, e.g. to go on from a sample made elsewhere. The next
    /// [`step`](Self::step) denoises it at the next timestep of the schedule.
    pub fn set_current(&mut self, x: Tensor<4>) -> Result<()> {
        if x.dims() != self.shape {
            return Err(Error::invalid(format!(
                "set_current: expected a sample of shape {:?}, found {:?}",
                self.shape,
                x.dims()
            )));
        }
        self.x = x.to_device(self.unet.device());
        Ok(())
    }

    /// The latest prediction of the clean image x_0 (none before the first step).
    pub fn predicted_x0(&self) -> Option<Tensor<4>> {
        self.x0.clone()
    }

    /// Runs one U-Net evaluation (two batched into one with guidance) and one scheduler step.
    /// Nothing is read back from the device.
    pub fn step(&mut self) -> Result<StepInfo> {
        let total = self.total_steps();
        if self.is_done() {
            return Err(Error::invalid(format!(
                "step: all {total} steps are already done"
            )));
        }
        let i = self.step;
        let t = self.scheduler.timesteps()[i];
        let b = self.shape[0];
        let x_in = self.scheduler.scale_model_input(self.x.clone(), i)?;
        let model_output = if self.guidance != 1.0 {
            // Both branches in one call: [x; x] with [labels; null].
            let null = self.null_class.expect("checked in new()");
            let mut labels = self.labels.clone();
            labels.extend(std::iter::repeat_n(null, b));
            let input = Tensor::cat(vec![x_in.clone(), x_in], 0);
            let out = self.unet.forward(input, &[t as f32], Some(&labels))?;
            let cond = out.clone().narrow(0, 0, b);
            let uncond = out.narrow(0, b, b);
            uncond.clone() + (cond - uncond) * self.guidance
        } else {
            let labels = (!self.labels.is_empty()).then_some(self.labels.as_slice());
            self.unet.forward(x_in, &[t as f32], labels)?
        };
        let noise = step_noise(
            &*self.scheduler,
            i,
            &mut self.noise,
            self.shape,
            self.unet.device(),
        );
        let out = self
            .scheduler
            .step(model_output, i, self.x.clone(), noise)?;
        self.x = out.prev_sample;
        if let Some(blend) = &self.blend {
            let kept = if i + 1 < self.scheduler.timesteps().len() {
                self.scheduler
                    .add_noise(blend.image.clone(), blend.noise.clone(), i + 1)?
            } else {
                blend.image.clone()
            };
            let keep = blend.mask.clone().neg() + 1.0;
            self.x = kept * keep + self.x.clone() * blend.mask.clone();
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
}

/// The labels of the conditional branch, one per image: the requested classes (one for all, or
/// one each); without any, a class-conditional model samples its null class (unconditional
/// generation). Empty for unconditional models.
fn class_labels(
    num_classes: Option<usize>,
    null_class: Option<usize>,
    requested: Option<&[usize]>,
    b: usize,
) -> Result<Vec<usize>> {
    let labels = match (num_classes, requested) {
        (None, None) => return Ok(Vec::new()),
        (None, Some(_)) => {
            return Err(Error::invalid(
                "class labels: this model is unconditional, expected none, found some",
            ))
        }
        (Some(_), None) => {
            return match null_class {
                Some(n) => Ok(vec![n; b]),
                None => Err(Error::invalid(
                    "class labels: this model is class-conditional and has no null class, expected a label, found none",
                )),
            }
        }
        (Some(_), Some(l)) => match l.len() {
            1 => vec![l[0]; b],
            n if n == b => l.to_vec(),
            n => {
                return Err(Error::invalid(format!(
                    "class labels: expected 1 or {b} (the batch size), found {n}"
                )))
            }
        },
    };
    let k = num_classes.unwrap_or(0);
    if let Some(bad) = labels.iter().find(|&&x| x >= k) {
        return Err(Error::invalid(format!(
            "class label: expected 0 to {}, found {bad}",
            k.saturating_sub(1)
        )));
    }
    Ok(labels)
}

/// x_T given by the caller: `shape`'s number of finite values.
fn checked_init_noise(v: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
    let [b, c, h, w] = shape;
    let n = b * c * h * w;
    if v.len() != n {
        return Err(Error::invalid(format!(
            "initial noise: expected {n} values ({b}x{c}x{h}x{w}), found {}",
            v.len()
        )));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(format!(
            "initial noise: expected finite values, found {} at index {i}",
            v[i]
        )));
    }
    Ok(v.to_vec())
}
