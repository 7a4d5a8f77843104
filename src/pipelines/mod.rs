//! Pipelines: a loaded model plus a scheduler, run one step at a time so that the caller (the
//! CLI, the browser) drives the loop, shows previews and stops when it likes. One file per
//! diffusers pipeline ([`ddpm`]: pixel space, classes, guidance; [`stable_diffusion`]:
//! text-to-image; [`latent_diffusion`]: unconditional latent diffusion); this file owns what every
//! run shares: the sampling options, their defaults and limits (the CLI and the JS API take
//! them from here), and what a step reports. Nothing here knows about JS.

pub mod ddpm;
pub mod img2img;
pub mod latent_diffusion;
pub mod pipeline_file;
pub mod preview;
pub mod stable_diffusion;

pub use ddpm::SamplingRun;

use burn::tensor::Tensor;
use serde_json::Value;

use crate::config::shown;
use crate::error::{Error, Result};
use crate::schedulers::SchedulerKind;

/// Largest batch one sampler accepts (guidance doubles it inside); the memory estimate
/// ([`crate::memory`]) usually bounds it lower for large images.
pub const MAX_BATCH: usize = 64;

/// Largest |guidance scale| accepted: beyond it the guided noise prediction overflows f32 for
/// ordinary model outputs and the image turns to NaN.
pub const MAX_GUIDANCE: f64 = 100.0;

/// What to sample. `Default` gives 50 DDIM steps, seed 0, batch 1, no guidance.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOptions {
    pub scheduler: SchedulerKind,
    pub steps: usize,
    pub seed: u64,
    /// DDIM's eta (0 = deterministic). Ignored by the other schedulers.
    pub eta: f64,
    pub batch: usize,
    /// One label per image, or one for all; `None` samples unconditionally (the null class
    /// for class-conditional models that have one).
    pub class_labels: Option<Vec<usize>>,
    /// Classifier-free guidance scale w: `eps = eps_null + w (eps_class - eps_null)`;
    /// 1 disables guidance (one U-Net call per step instead of two).
    pub guidance_scale: f64,
    /// x_T supplied by the caller (NCHW, `batch * C * H * W` values) instead of the seed.
    /// Starting from an image it is the noise added to the image.
    pub init_noise: Option<Vec<f32>>,
    /// Image-to-image (SDEdit) and mask-blending inpainting: the image to start from,
    /// `strength` and the mask ([`img2img`]).
    pub image: Option<img2img::ImageInput>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            scheduler: SchedulerKind::Ddim,
            steps: 50,
            seed: 0,
            eta: 0.0,
            batch: 1,
            class_labels: None,
            guidance_scale: 1.0,
            init_noise: None,
            image: None,
        }
    }
}

/// What one [`SamplingRun::step`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// 1-based index of the step just taken.
    pub step: usize,
    pub total_steps: usize,
    /// The model timestep of that step: a training timestep, or a fractional one for Euler
    /// with Karras sigmas or `linspace` spacing and for consistency models.
    pub timestep: f64,
    pub last: bool,
}

/// Steps a run takes when the caller names none, each at most the model's
/// `num_train_timesteps`: DDPM visits every training timestep (as diffusers' `DDPMPipeline`
/// does); DDIM, Euler and Euler ancestral 50 (`DDIMPipeline`'s and `StableDiffusionPipeline`'s
/// default); DPM-Solver++ 20 (its second order needs far fewer); LCM 4
/// (`LatentConsistencyModelPipeline`'s default, the low end of the 4-8 its paper uses); a
/// consistency model 1 (`ConsistencyModelPipeline`'s default: one step is the whole sampler).
pub fn default_steps(scheduler: SchedulerKind, num_train_timesteps: usize) -> usize {
    let steps = match scheduler {
        SchedulerKind::Ddpm => num_train_timesteps,
        SchedulerKind::Ddim | SchedulerKind::Euler | SchedulerKind::EulerAncestral => 50,
        SchedulerKind::DpmSolverMultistep => 20,
        SchedulerKind::Lcm => 4,
        SchedulerKind::ConsistencyModel => 1,
    };
    steps.min(num_train_timesteps)
}

/// Largest seed: every integer up to it is exact in a JS number.
pub const MAX_SEED: u64 = (1 << 53) - 1;

impl SampleOptions {
    /// The keys [`from_json`](Self::from_json) reads.
    pub const KEYS: [&'static str; 7] = [
        "scheduler",
        "steps",
        "seed",
        "eta",
        "batch",
        "classLabels",
        "guidanceScale",
    ];

    /// The options a caller names in a JSON-like object (the JS API's `sample()` argument, in
    /// camelCase): `scheduler`, `steps`, `seed`, `eta`, `batch`, `classLabels`, `guidanceScale`.
    /// Absent or null keys take this crate's defaults ([`default_steps`]; `seed` from
    /// `random_seed`); other keys belong to the caller and are ignored. Every value is checked
    /// for its type and range here; what depends on the model (labels, guidance) when the run
    /// starts.
    pub fn from_json(
        options: &Value,
        num_train_timesteps: usize,
        random_seed: impl FnOnce() -> u64,
    ) -> Result<Self> {
        let empty = serde_json::Map::new();
        let obj = match options {
            Value::Object(obj) => obj,
            Value::Null => &empty,
            other => {
                return Err(Error::invalid(format!(
                    "sample options: expected an object, found {}",
                    crate::config::json_kind(other)
                )))
            }
        };
        let get = |key: &str| obj.get(key).filter(|v| !v.is_null());
        let int =
            |key: &str, min: u64, max: u64| get(key).map(|v| int_in(key, v, min, max)).transpose();
        let number = |key: &str| get(key).map(|v| finite_number(key, v)).transpose();
        let d = SampleOptions::default();
        let scheduler = match get("scheduler") {
            None => d.scheduler,
            Some(Value::String(s)) => SchedulerKind::parse(s)?,
            Some(v) => {
                return Err(Error::invalid(format!(
                    "scheduler: expected {}, found {}",
                    crate::config::one_of(SchedulerKind::NAMES),
                    shown(&v.to_string())
                )))
            }
        };
        let class_labels = get("classLabels").map(class_indices).transpose()?;
        let eta = number("eta")?.unwrap_or(d.eta);
        if eta < 0.0 {
            return Err(Error::invalid(format!(
                "eta: expected a number >= 0, found {eta}"
            )));
        }
        let steps = int("steps", 1, num_train_timesteps as u64)?.map_or_else(
            || default_steps(scheduler, num_train_timesteps),
            |s| s as usize,
        );
        Ok(SampleOptions {
            scheduler,
            steps,
            seed: match int("seed", 0, MAX_SEED)? {
                Some(s) => s,
                None => random_seed(),
            },
            eta,
            batch: int("batch", 1, MAX_BATCH as u64)?.map_or(d.batch, |b| b as usize),
            class_labels,
            guidance_scale: number("guidanceScale")?.unwrap_or(d.guidance_scale),
            init_noise: None,
            image: None,
        })
    }
}

/// Reads a tensor back to the host (native; the browser uses `into_data_async`).
pub fn read_back(t: Tensor<4>) -> Result<Vec<f32>> {
    t.try_into_data()
        .map_err(|e| {
            Error::backend(format!(
                "reading the sample back from the device failed: {e:?}"
            ))
        })?
        .try_into_vec::<f32>()
        .map_err(|e| Error::backend(format!("expected f32 samples from the device, found {e:?}")))
}

/// `v` as an integer from `min` to `max` (JS numbers are floats: 12.0 is 12).
pub(crate) fn int_in(key: &str, v: &Value, min: u64, max: u64) -> Result<u64> {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 && (min as f64..=max as f64).contains(&x) => Ok(x as u64),
        _ => Err(Error::invalid(format!(
            "{key}: expected an integer from {min} to {max}, found {}",
            shown(&v.to_string())
        ))),
    }
}

pub(crate) fn finite_number(key: &str, v: &Value) -> Result<f64> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(Error::invalid(format!(
            "{key}: expected a finite number, found {}",
            shown(&v.to_string())
        ))),
    }
}

/// `classLabels`: an array of class indices (their range is checked against the model later).
fn class_indices(v: &Value) -> Result<Vec<usize>> {
    let Value::Array(items) = v else {
        return Err(Error::invalid(format!(
            "classLabels: expected an array of class indices, found {}",
            shown(&v.to_string())
        )));
    };
    items
        .iter()
        .map(|v| match v.as_f64() {
            Some(x) if x.fract() == 0.0 && x >= 0.0 && x < usize::MAX as f64 => Ok(x as usize),
            _ => Err(Error::invalid(format!(
                "classLabels: expected class indices (integers >= 0), found {}",
                shown(&v.to_string())
            ))),
        })
        .collect()
}

/// The noise scheduler step `i` consumes (DDPM; DDIM with eta > 0; Euler ancestral, LCM,
/// consistency models), drawn from the run's seeded stream for a sample of `shape`; `None` when
/// the step takes none.
pub(crate) fn step_noise(
    scheduler: &dyn crate::schedulers::Scheduler,
    step_index: usize,
    noise: &mut crate::noise::BatchNoise,
    shape: [usize; 4],
    device: &burn::tensor::Device,
) -> Option<Tensor<4>> {
    scheduler.needs_noise(step_index).then(|| {
        let [_, c, h, w] = shape;
        let v = noise.sample(c * h * w);
        Tensor::from_data(burn::tensor::TensorData::new(v, shape), device)
    })
}
