//! Noise schedulers, one file per diffusers scheduler, over f64 tables on the CPU.
//! The per-step update runs on the sample's device as a few tensor ops.
//!
//! API as in diffusers: build from a [`SchedulerConfig`] and a number of inference steps,
//! read [`Scheduler::timesteps`], call [`Scheduler::step`] once per timestep in order.
//!
//! One self-contained file per scheduler, as in diffusers (their `Scheduler` impls repeat the
//! same signatures on purpose); what they share is here, written once: the beta tables and the
//! forward process ([`BetaTable`]), timestep spacing ([`spaced`]), x_0 from any prediction type
//! ([`predicted_x0`]) and the schedule checks ([`build`]).

pub mod config;
pub mod scheduling_ddim;
pub mod scheduling_ddpm;
pub mod scheduling_dpmsolver_multistep;

use burn::tensor::Tensor;

use crate::error::{Error, Result};

pub use config::{
    BetaSchedule, PredictionType, SchedulerConfig, SchedulerKind, TimestepSpacing, VarianceType,
};

pub use scheduling_ddim::DdimScheduler;
pub use scheduling_ddpm::DdpmScheduler;
pub use scheduling_dpmsolver_multistep::DpmSolverMultistepScheduler;

/// Result of one denoising step.
#[derive(Debug, Clone)]
pub struct SchedulerOutput {
    /// x_{t-1}: the sample to feed to the next step.
    pub prev_sample: Tensor<4>,
    /// The model's current estimate of the clean image x_0 (a free preview).
    pub pred_original_sample: Tensor<4>,
}

/// A sampler's per-step rule.
pub trait Scheduler {
    /// The timesteps to visit, in order (descending).
    fn timesteps(&self) -> &[usize];
    /// Whether `step` at `timestep` consumes a noise tensor (DDPM for t > 0, DDIM with eta > 0).
    fn needs_noise(&self, timestep: usize) -> bool;
    /// One reverse step from `sample` (x_t) given the model output at `timestep`. `noise` must
    /// be given (same shape as `sample`, standard normal) when [`Scheduler::needs_noise`] says so.
    fn step(
        &mut self,
        model_output: Tensor<4>,
        timestep: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<SchedulerOutput>;
    /// Makes the next [`step`](Scheduler::step) the schedule's step `index` (diffusers'
    /// `set_begin_index`: img2img and inpainting start part-way). Multistep solvers restart
    /// their history; one-step rules need nothing.
    fn set_begin_index(&mut self, _index: usize) {}
}

impl SchedulerKind {
    /// diffusers' default `timestep_spacing` of this scheduler, used when the config omits it.
    pub fn default_spacing(self) -> TimestepSpacing {
        match self {
            SchedulerKind::Ddpm => scheduling_ddpm::DEFAULT_SPACING,
            SchedulerKind::Ddim => scheduling_ddim::DEFAULT_SPACING,
            SchedulerKind::DpmSolverMultistep => scheduling_dpmsolver_multistep::DEFAULT_SPACING,
        }
    }
}

/// Builds the scheduler `kind` for `num_inference_steps` steps (`eta` is used by DDIM only).
/// Schedules that would be empty, visit a timestep twice or divide by zero are refused here,
/// up front, with the usable range of steps ([`check_schedule`]).
pub fn build(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    num_inference_steps: usize,
    eta: f64,
) -> Result<Box<dyn Scheduler>> {
    let scheduler = build_unchecked(kind, config, num_inference_steps, eta)?;
    check_schedule(
        kind,
        config,
        num_inference_steps,
        eta,
        scheduler.timesteps(),
    )?;
    Ok(scheduler)
}

fn build_unchecked(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    num_inference_steps: usize,
    eta: f64,
) -> Result<Box<dyn Scheduler>> {
    Ok(match kind {
        SchedulerKind::Ddpm => Box::new(DdpmScheduler::new(config, num_inference_steps)?),
        SchedulerKind::Ddim => Box::new(DdimScheduler::new(config, num_inference_steps, eta)?),
        SchedulerKind::DpmSolverMultistep => Box::new(DpmSolverMultistepScheduler::new(
            config,
            num_inference_steps,
        )?),
    })
}

/// The first timestep of `ts` that is not strictly below its predecessor.
fn repeated_timestep(ts: &[usize]) -> Option<usize> {
    ts.windows(2).find(|w| w[1] >= w[0]).map(|w| w[1])
}

/// Refuses a schedule that would give no frame or NaN: an empty one (DPM-Solver++'s
/// `lambda_min_clipped` can clip every timestep), one that visits a timestep twice (DPM-Solver++
/// then divides by a zero step in lambda: `leading` spacing with many steps), or one whose
/// training schedule has equal or zero `alphas_cumprod` at two visited timesteps (betas too
/// small to change an f32, or a product that underflows).
fn check_schedule(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    n: usize,
    eta: f64,
    ts: &[usize],
) -> Result<()> {
    let name = kind.name();
    let t = config.num_train_timesteps;
    if ts.is_empty() {
        return Err(Error::config(format!(
            "scheduler `{name}`: expected at least one timestep, found none: lambda_min_clipped = {} clips all {t} training timesteps (use a lower lambda_min_clipped)",
            config.lambda_min_clipped
        )));
    }
    if let Some(rep) = repeated_timestep(ts) {
        // The largest step count that still gives distinct timesteps, by bisection (the
        // schedules only get denser with more steps).
        let ok = |m: usize| {
            build_unchecked(kind, config, m, eta).is_ok_and(|s| {
                !s.timesteps().is_empty() && repeated_timestep(s.timesteps()).is_none()
            })
        };
        let usable = if ok(1) {
            let (mut lo, mut hi) = (1, n);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if ok(mid) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            format!("expected 1 to {lo} steps")
        } else {
            "no step count gives distinct timesteps".to_string()
        };
        return Err(Error::invalid(format!(
            "steps: scheduler `{name}` with timestep_spacing `{}` visits timestep {rep} twice at {n} steps on {t} training timesteps (the update would divide by zero); {usable}",
            config.spacing_or(kind.default_spacing())
        )));
    }
    let table = BetaTable::new(config)?;
    let alpha = |i: usize| table.alphas_cumprod[i] as f32;
    if let Some(&z) = ts
        .iter()
        .find(|&&i| !alpha(i).is_finite() || alpha(i) <= 0.0)
    {
        return Err(Error::config(format!(
            "beta schedule: expected alphas_cumprod > 0 at every visited timestep, found {} at timestep {z} (beta_end = {} over {t} training steps drives it to zero)",
            table.alphas_cumprod[z], config.beta_end
        )));
    }
    if let Some(w) = ts.windows(2).find(|w| alpha(w[0]) >= alpha(w[1])) {
        return Err(Error::config(format!(
            "beta schedule: expected alphas_cumprod to differ between timesteps {} and {} in f32, found {} for both (beta_start = {} is too small)",
            w[0],
            w[1],
            alpha(w[0]),
            config.beta_start
        )));
    }
    Ok(())
}

/// The training noise schedule: betas and their cumulative products, in f64.
#[derive(Debug, Clone)]
pub struct BetaTable {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
}

impl BetaTable {
    /// The betas of `config.beta_schedule` and `alphas_cumprod = prod(1 - beta)`, in f64.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        config.validate()?;
        let t = config.num_train_timesteps;
        let (start, end) = (config.beta_start, config.beta_end);
        let frac = |i: usize| i as f64 / (t - 1) as f64;
        let betas: Vec<f64> = match config.beta_schedule {
            BetaSchedule::Linear => (0..t).map(|i| start + (end - start) * frac(i)).collect(),
            // Latent-diffusion schedule: linear in sqrt(beta).
            BetaSchedule::ScaledLinear => (0..t)
                .map(|i| (start.sqrt() + (end.sqrt() - start.sqrt()) * frac(i)).powi(2))
                .collect(),
            // Improved DDPM (Nichol & Dhariwal 2021), eq. 17, betas capped at 0.999.
            BetaSchedule::SquaredcosCapV2 => {
                let alpha_bar = |x: f64| {
                    ((x + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..t)
                    .map(|i| {
                        (1.0 - alpha_bar((i + 1) as f64 / t as f64)
                            / alpha_bar(i as f64 / t as f64))
                        .min(0.999)
                    })
                    .collect()
            }
        };
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Ok(Self {
            betas,
            alphas_cumprod,
        })
    }

    /// sqrt(alphas_cumprod[t]) and sqrt(1 - alphas_cumprod[t]): the weights of x_0 and of the
    /// noise in x_t (DDPM eq. 4).
    pub fn forward_weights(&self, timestep: usize) -> Result<(f64, f64)> {
        let a = *self.alphas_cumprod.get(timestep).ok_or_else(|| {
            Error::invalid(format!(
                "timestep: expected 0 to {}, found {timestep}",
                self.alphas_cumprod.len() - 1
            ))
        })?;
        Ok((a.sqrt(), (1.0 - a).sqrt()))
    }

    /// The forward process q(x_t | x_0) (DDPM eq. 4): `sqrt(a_t) x_0 + sqrt(1 - a_t) noise`.
    pub fn add_noise(&self, x0: Tensor<4>, noise: Tensor<4>, timestep: usize) -> Result<Tensor<4>> {
        let (w0, wn) = self.forward_weights(timestep)?;
        Ok(x0 * w0 + noise * wn)
    }

    /// [`add_noise`](Self::add_noise) on host values (same length), in f64.
    pub fn add_noise_host(&self, x0: &[f32], noise: &[f32], timestep: usize) -> Result<Vec<f32>> {
        let (w0, wn) = self.forward_weights(timestep)?;
        Ok(x0
            .iter()
            .zip(noise)
            .map(|(&x, &e)| (w0 * x as f64 + wn * e as f64) as f32)
            .collect())
    }
}

/// x_0 from the model output, for every prediction type (DDPM eq. 15, DPM-Solver++ eq. 11):
/// `alpha_t` and `sigma_t` are the weights of x_0 and of the noise in x_t
/// (`sqrt(a_t)` and `sqrt(1 - a_t)`).
pub(crate) fn predicted_x0(
    prediction: PredictionType,
    model_output: Tensor<4>,
    sample: &Tensor<4>,
    alpha_t: f64,
    sigma_t: f64,
) -> Tensor<4> {
    match prediction {
        PredictionType::Epsilon => (sample.clone() - model_output * sigma_t) / alpha_t,
        PredictionType::Sample => model_output,
        PredictionType::VPrediction => sample.clone() * alpha_t - model_output * sigma_t,
    }
}

/// Checks a requested number of inference steps.
pub(crate) fn check_steps(config: &SchedulerConfig, n: usize) -> Result<()> {
    let t = config.num_train_timesteps;
    if n == 0 || n > t {
        return Err(Error::invalid(format!(
            "steps: expected 1 to {t} (num_train_timesteps), found {n}"
        )));
    }
    Ok(())
}

/// Inference timesteps, descending, the way diffusers' `set_timesteps` computes them with numpy
/// (round half to even), for `timestep_spacing` (Table 2 of Lin et al. 2023). `last` is the
/// number of usable training timesteps (`num_train_timesteps` but for DPM-Solver++'s
/// `lambda_min_clipped`); `one_extra`: DPM-Solver++ spaces `n + 1` points and drops the final
/// one (timestep 0 for `linspace`/`leading`), DDPM and DDIM space `n`.
pub(crate) fn spaced(
    config: &SchedulerConfig,
    spacing: TimestepSpacing,
    last: usize,
    n: usize,
    one_extra: bool,
) -> Result<Vec<usize>> {
    check_steps(config, n)?;
    let t = config.num_train_timesteps;
    let points = n + usize::from(one_extra);
    let ts: Vec<i64> = match spacing {
        TimestepSpacing::Linspace => linspace(0.0, (last - 1) as f64, points)
            .into_iter()
            .rev()
            .take(n)
            .map(|x| x.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = last / points;
            (points - n..points)
                .rev()
                .map(|i| (i * ratio + config.steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t as f64 / n as f64;
            arange_down(last as f64, ratio)
                .into_iter()
                .map(|x| x.round_ties_even() as i64 - 1)
                .collect()
        }
    };
    to_valid_timesteps(ts, t)
}

/// DDPM's and DDIM's inference timesteps: `n` over every training timestep, spaced as the
/// config says or, when it says nothing, as `default` (the running scheduler's default).
pub(crate) fn spaced_timesteps(
    config: &SchedulerConfig,
    default: TimestepSpacing,
    n: usize,
) -> Result<Vec<usize>> {
    spaced(
        config,
        config.spacing_or(default),
        config.num_train_timesteps,
        n,
        false,
    )
}

fn to_valid_timesteps(ts: Vec<i64>, t: usize) -> Result<Vec<usize>> {
    ts.into_iter()
        .map(|x| {
            usize::try_from(x).ok().filter(|&x| x < t).ok_or_else(|| {
                Error::config(format!(
                    "timestep spacing produced timestep {x}, expected 0 to {} (check steps_offset)",
                    t - 1
                ))
            })
        })
        .collect()
}

/// `np.linspace(start, end, n)`.
fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i == n - 1 {
                end
            } else {
                start + i as f64 * step
            }
        })
        .collect()
}

/// `np.arange(start, 0, -step)` for positive `start` and `step`.
fn arange_down(start: f64, step: f64) -> Vec<f64> {
    let len = (start / step).ceil() as usize;
    (0..len).map(|i| start - i as f64 * step).collect()
}
