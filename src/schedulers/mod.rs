//! Noise schedulers, one file per diffusers scheduler, over f64 tables on the CPU.
//! The per-step update runs on the sample's device as a few tensor ops.
//!
//! API as in diffusers: build from a [`SchedulerConfig`] and a number of inference steps, start
//! from noise times [`Scheduler::init_noise_sigma`], then for each step index `i` in order give
//! the model [`Scheduler::scale_model_input`]`(x, i)` at [`Scheduler::timesteps`]`[i]` and call
//! [`Scheduler::step`] with its output. Steps are addressed by index, as diffusers' `step_index`
//! (two steps may share a timestep value; a sigma-space timestep is fractional).
//!
//! One self-contained file per scheduler, as in diffusers (their `Scheduler` impls repeat the
//! same signatures on purpose); what they share is here, written once: the beta tables and the
//! forward process ([`BetaTable`]), timestep spacing ([`spaced`]), x_0 from any prediction type
//! ([`predicted_x0`]) and the schedule checks ([`build`]).

pub mod config;
pub mod scheduling_consistency_models;
pub mod scheduling_ddim;
pub mod scheduling_ddpm;
pub mod scheduling_dpmsolver_multistep;
pub mod scheduling_euler_ancestral_discrete;
pub mod scheduling_euler_discrete;
pub mod scheduling_lcm;

use burn::tensor::Tensor;

use crate::error::{Error, Result};

pub use config::{
    BetaSchedule, InterpolationType, PredictionType, SchedulerConfig, SchedulerKind,
    TimestepSpacing, TimestepType, VarianceType,
};

pub use scheduling_consistency_models::CMStochasticIterativeScheduler;
pub use scheduling_ddim::DdimScheduler;
pub use scheduling_ddpm::DdpmScheduler;
pub use scheduling_dpmsolver_multistep::DpmSolverMultistepScheduler;
pub use scheduling_euler_ancestral_discrete::EulerAncestralDiscreteScheduler;
pub use scheduling_euler_discrete::EulerDiscreteScheduler;
pub use scheduling_lcm::LcmScheduler;

/// Result of one denoising step.
#[derive(Debug, Clone)]
pub struct SchedulerOutput {
    /// x_{t-1}: the sample to feed to the next step.
    pub prev_sample: Tensor<4>,
    /// The model's current estimate of the clean image x_0 (a free preview; LCM's and
    /// consistency models' `denoised`).
    pub pred_original_sample: Tensor<4>,
}

/// A sampler's per-step rule. Steps are addressed by their index `i` into
/// [`timesteps`](Scheduler::timesteps) (diffusers' `step_index`).
pub trait Scheduler: Send {
    /// The model timestep of each step, in order (diffusers' `scheduler.timesteps`): training
    /// timesteps for DDPM, DDIM, DPM-Solver++ and LCM; fractional ones for Euler with Karras
    /// sigmas or `linspace` spacing and for consistency models (what the U-Net is given, as f32).
    fn timesteps(&self) -> &[f64];

    /// The noise levels of a sigma-space scheduler (x = x_0 + sigma noise; Euler, Euler
    /// ancestral, consistency models): one per step and the one after the last step. `None` for
    /// the schedulers that work on `alphas_cumprod`.
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    /// The standard deviation of the initial noise: a run starts from `noise * init_noise_sigma`
    /// (1 for the variance-preserving schedulers).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The model's input at step `i` (diffusers' `scale_model_input`): `sample` itself, or
    /// `sample` scaled to unit variance by the sigma-space schedulers.
    fn scale_model_input(&self, sample: Tensor<4>, step_index: usize) -> Result<Tensor<4>> {
        timestep_at(self.timesteps(), step_index)?;
        Ok(sample)
    }

    /// Whether [`step`](Scheduler::step) at step `i` consumes a noise tensor (DDPM for t > 0,
    /// DDIM with eta > 0, Euler ancestral, LCM and consistency models before their last step).
    fn needs_noise(&self, step_index: usize) -> bool;

    /// One reverse step from `sample` (x_t) given the model output at step `i`. `noise` must be
    /// given (same shape as `sample`, standard normal) when [`Scheduler::needs_noise`] says so.
    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<SchedulerOutput>;

    /// The forward process: `original` (x_0) noised with `noise` to the noise level of step `i`,
    /// the sample a run that starts at step `i` takes (img2img).
    fn add_noise(
        &self,
        original: Tensor<4>,
        noise: Tensor<4>,
        step_index: usize,
    ) -> Result<Tensor<4>>;

    /// The step a run starts at (0 unless [`set_begin_index`](Scheduler::set_begin_index)).
    fn begin_index(&self) -> usize;

    /// Starts the run at step `i` (diffusers' `set_begin_index`; img2img denoises
    /// `timesteps[i..]` from [`add_noise`](Scheduler::add_noise)`(x0, noise, i)`). Multistep
    /// schedulers forget their history and take step `i` next.
    fn set_begin_index(&mut self, begin_index: usize) -> Result<()>;
}

impl SchedulerKind {
    /// diffusers' default `timestep_spacing` of this scheduler, used when the config omits it.
    pub fn default_spacing(self) -> TimestepSpacing {
        match self {
            SchedulerKind::Ddpm => scheduling_ddpm::DEFAULT_SPACING,
            SchedulerKind::Ddim => scheduling_ddim::DEFAULT_SPACING,
            SchedulerKind::DpmSolverMultistep => scheduling_dpmsolver_multistep::DEFAULT_SPACING,
            SchedulerKind::Euler => scheduling_euler_discrete::DEFAULT_SPACING,
            SchedulerKind::EulerAncestral => scheduling_euler_ancestral_discrete::DEFAULT_SPACING,
            SchedulerKind::Lcm => scheduling_lcm::DEFAULT_SPACING,
            // Consistency models space their own Karras ramp (`leading`-like, no option).
            SchedulerKind::ConsistencyModel => TimestepSpacing::Leading,
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
    check_schedule(kind, config, num_inference_steps, eta, &*scheduler)?;
    Ok(scheduler)
}

fn build_unchecked(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    n: usize,
    eta: f64,
) -> Result<Box<dyn Scheduler>> {
    Ok(match kind {
        SchedulerKind::Ddpm => Box::new(DdpmScheduler::new(config, n)?),
        SchedulerKind::Ddim => Box::new(DdimScheduler::new(config, n, eta)?),
        SchedulerKind::DpmSolverMultistep => Box::new(DpmSolverMultistepScheduler::new(config, n)?),
        SchedulerKind::Euler => Box::new(EulerDiscreteScheduler::new(config, n)?),
        SchedulerKind::EulerAncestral => Box::new(EulerAncestralDiscreteScheduler::new(config, n)?),
        SchedulerKind::Lcm => Box::new(LcmScheduler::new(config, n)?),
        SchedulerKind::ConsistencyModel => {
            Box::new(CMStochasticIterativeScheduler::new(config, n)?)
        }
    })
}

/// The timestep of step `i`, or an error naming the range.
pub(crate) fn timestep_at(ts: &[f64], i: usize) -> Result<f64> {
    ts.get(i).copied().ok_or_else(|| {
        Error::invalid(format!(
            "step index: expected 0 to {} (the run's {} steps), found {i}",
            ts.len().saturating_sub(1),
            ts.len()
        ))
    })
}

/// Checks a begin index for [`Scheduler::set_begin_index`].
pub(crate) fn check_begin_index(ts: &[f64], i: usize) -> Result<usize> {
    timestep_at(ts, i).map(|_| i)
}

/// The noise a step needs, or an error naming the scheduler and step.
pub(crate) fn required_noise(noise: Option<Tensor<4>>, name: &str, i: usize) -> Result<Tensor<4>> {
    noise.ok_or_else(|| {
        Error::invalid(format!(
            "{name} step {i}: expected a noise tensor, found none"
        ))
    })
}

/// The sigmas of a sigma-space schedule: finite, > 0 at every visited step (the updates divide
/// by them), >= 0 after the last; `non_increasing` where the update takes a square root of
/// their differences (Euler ancestral).
pub(crate) fn check_sigmas(name: &str, sigmas: &[f64], non_increasing: bool) -> Result<()> {
    let n = sigmas.len().saturating_sub(1);
    for (i, &s) in sigmas.iter().enumerate() {
        let ok = s.is_finite() && (s > 0.0 || (i == n && s == 0.0));
        if !ok {
            return Err(Error::config(format!(
                "scheduler `{name}`: expected finite sigmas > 0, found {s} at step {i} of {n} (the beta schedule's alphas_cumprod underflows f32 there)"
            )));
        }
    }
    if non_increasing {
        if let Some(i) = (1..sigmas.len()).find(|&i| sigmas[i] > sigmas[i - 1]) {
            return Err(Error::config(format!(
                "scheduler `{name}`: expected sigmas that never grow, found {} after {} at step {i}",
                sigmas[i],
                sigmas[i - 1]
            )));
        }
    }
    Ok(())
}

/// Rounds to f32, as diffusers stores its sigma and timestep tables.
pub(crate) fn f32_round(x: f64) -> f64 {
    x as f32 as f64
}

/// The first timestep of `ts` that is not strictly below its predecessor.
fn repeated_timestep(ts: &[usize]) -> Option<usize> {
    ts.windows(2).find(|w| w[1] >= w[0]).map(|w| w[1])
}

/// Refuses a schedule that would give no frame or NaN: an empty one (DPM-Solver++'s
/// `lambda_min_clipped` can clip every timestep) or one with a non-finite timestep. Sigma-space
/// schedulers check their sigmas when built ([`check_sigmas`]); for the others also one that
/// visits a timestep twice (DPM-Solver++ then divides by a zero step in lambda: `leading`
/// spacing with many steps), or one whose training schedule has equal or zero `alphas_cumprod`
/// at two visited timesteps (betas too small to change an f32, or a product that underflows).
fn check_schedule(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    n: usize,
    eta: f64,
    scheduler: &dyn Scheduler,
) -> Result<()> {
    let name = kind.name();
    let t = config.num_train_timesteps;
    let ts = scheduler.timesteps();
    if ts.is_empty() {
        return Err(Error::config(format!(
            "scheduler `{name}`: expected at least one timestep, found none: lambda_min_clipped = {} clips all {t} training timesteps (use a lower lambda_min_clipped)",
            config.lambda_min_clipped
        )));
    }
    if let Some(bad) = ts.iter().find(|x| !x.is_finite()) {
        return Err(Error::config(format!(
            "scheduler `{name}`: expected finite timesteps, found {bad}"
        )));
    }
    if scheduler.sigmas().is_some() {
        return Ok(());
    }
    // The alphas_cumprod schedulers visit training timesteps (integers below t).
    let ts: Vec<usize> = ts.iter().map(|&x| x as usize).collect();
    if let Some(rep) = repeated_timestep(&ts) {
        // The largest step count that still gives distinct timesteps, by bisection (the
        // schedules only get denser with more steps).
        let ok = |m: usize| {
            build_unchecked(kind, config, m, eta).is_ok_and(|s| {
                let ts: Vec<usize> = s.timesteps().iter().map(|&x| x as usize).collect();
                !ts.is_empty() && repeated_timestep(&ts).is_none()
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
pub(crate) fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
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
