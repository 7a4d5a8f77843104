//! Euler's method on the probability-flow ODE in sigma space, x = x_0 + sigma noise (Karras et
//! al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models", Algorithm 2
//! without churn): diffusers `scheduling_euler_discrete.py`. The sampler of SD-Turbo (`trailing`
//! spacing, one to four steps). Also the sigma schedule the Euler ancestral sampler shares
//! ([`SigmaSchedule`]).

use burn::tensor::Tensor;

use super::config::{FinalSigmasType, InterpolationType, TimestepType};
use super::{
    check_begin_index, check_sigmas, check_steps, f32_round, linspace, spaced, timestep_at,
    BetaTable, PredictionType, Scheduler, SchedulerConfig, SchedulerOutput, TimestepSpacing,
};
use crate::error::{Error, Result};

/// diffusers' `EulerDiscreteScheduler` default `timestep_spacing`.
pub const DEFAULT_SPACING: TimestepSpacing = TimestepSpacing::Linspace;

/// Karras et al.'s rho for the `use_karras_sigmas` ramp: diffusers' Euler fixes it at 7 (the
/// paper's value); `rho` in the config is the consistency models' option.
const KARRAS_RHO: f64 = 7.0;

/// A sigma-space schedule from a VP training schedule: the timesteps to visit, the sigma
/// `sqrt((1 - a_t) / a_t)` at each and the one after the last step, and the initial noise's
/// standard deviation. Timesteps and sigmas are rounded to f32, as diffusers stores them.
#[derive(Debug, Clone)]
pub(crate) struct SigmaSchedule {
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f64>,
    pub init_noise_sigma: f64,
}

/// Which of Euler's options a schedule honours (Euler ancestral has none of them).
pub(crate) struct SigmaOptions {
    pub karras: bool,
    pub final_sigma: FinalSigmasType,
}

impl SigmaSchedule {
    /// diffusers' `set_timesteps(n)` of the Euler schedulers: 1. timesteps by spacing,
    /// 2. sigmas interpolated at them, 3. optionally a Karras ramp between the end sigmas (with
    /// the timesteps moved to match), 4. the final sigma.
    pub fn new(
        config: &SchedulerConfig,
        spacing: TimestepSpacing,
        n: usize,
        opts: SigmaOptions,
    ) -> Result<Self> {
        check_steps(config, n)?;
        let t_train = config.num_train_timesteps;
        let table = BetaTable::new(config)?;
        let train_sigmas: Vec<f64> = table
            .alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect();

        // 1. timesteps: `linspace` keeps fractions (as f32), `leading` / `trailing` are whole.
        let mut timesteps: Vec<f64> = match spacing {
            TimestepSpacing::Linspace => linspace(0.0, (t_train - 1) as f64, n)
                .into_iter()
                .rev()
                .map(f32_round)
                .collect(),
            _ => spaced(config, spacing, t_train, n, false)?
                .into_iter()
                .map(|t| t as f64)
                .collect(),
        };

        // 2. sigmas at the timesteps (`np.interp` over the training timesteps)
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| interp(&train_sigmas, t))
            .collect();

        // 3. Karras et al. eq. 5: a ramp in sigma^(1/rho) between sigma_max and sigma_min.
        if opts.karras {
            let lo = config.sigma_min.unwrap_or(sigmas[n - 1]);
            let hi = config.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras_sigmas(lo, hi, KARRAS_RHO, &linspace(0.0, 1.0, n));
            let log_sigmas: Vec<f64> = train_sigmas.iter().map(|s| s.ln()).collect();
            timesteps = sigmas
                .iter()
                .map(|&s| f32_round(sigma_to_t(s, &log_sigmas)))
                .collect();
        }

        // 4. the sigma after the last step
        let last = match opts.final_sigma {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => train_sigmas[0],
        };
        sigmas.push(last);
        let sigmas: Vec<f64> = sigmas.into_iter().map(f32_round).collect();

        // x_T ~ N(0, sigma_max^2): `leading` never visits the last training timestep, and
        // diffusers then takes sqrt(sigma_max^2 + 1), the std of x_0 + sigma noise for unit x_0.
        let max = sigmas.iter().copied().fold(0.0, f64::max);
        let init_noise_sigma = match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        };
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
        })
    }

    /// `sample / sqrt(sigma^2 + 1)`: the VP model's input x_t = x / sqrt(1 + sigma^2).
    pub fn scale_model_input(&self, sample: Tensor<4>, i: usize) -> Result<Tensor<4>> {
        timestep_at(&self.timesteps, i)?;
        let sigma = self.sigmas[i];
        Ok(sample / (sigma * sigma + 1.0).sqrt())
    }

    /// x_0 from the model output at noise level `sigma` of x = x_0 + sigma noise.
    pub fn predicted_x0(
        prediction: PredictionType,
        model_output: Tensor<4>,
        sample: &Tensor<4>,
        sigma: f64,
    ) -> Tensor<4> {
        match prediction {
            PredictionType::Epsilon => sample.clone() - model_output * sigma,
            PredictionType::Sample => model_output,
            // v = alpha noise - sigma_t x_0 of the VP sample x / sqrt(sigma^2 + 1).
            PredictionType::VPrediction => {
                model_output * (-sigma / (sigma * sigma + 1.0).sqrt())
                    + sample.clone() / (sigma * sigma + 1.0)
            }
        }
    }

    /// `x_0 + sigma_i noise`.
    pub fn add_noise(&self, x0: Tensor<4>, noise: Tensor<4>, i: usize) -> Result<Tensor<4>> {
        timestep_at(&self.timesteps, i)?;
        Ok(x0 + noise * self.sigmas[i])
    }
}

/// `np.interp(x, arange(len(fp)), fp)`: linear between neighbouring entries, exact at whole x,
/// clamped at the ends.
fn interp(fp: &[f64], x: f64) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0];
    }
    if x >= last as f64 {
        return fp[last];
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return fp[j];
    }
    (fp[j + 1] - fp[j]) * (x - j as f64) + fp[j]
}

/// Karras et al. 2022, eq. 5: `(max^(1/rho) + ramp (min^(1/rho) - max^(1/rho)))^rho` for each
/// ramp value in [0, 1].
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, rho: f64, ramp: &[f64]) -> Vec<f64> {
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    ramp.iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// The fractional training timestep whose sigma is `sigma`: linear in log sigma between the two
/// training timesteps around it, clamped to the table (diffusers' `_sigma_to_t`).
fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // log_sigmas grow with t: the last index whose value is <= log_sigma (0 when none is).
    let below = log_sigmas.partition_point(|&l| l <= log_sigma);
    let low = below.saturating_sub(1).min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// Refuses an Euler option this crate does not implement.
pub(crate) fn refuse(name: &str, flag: bool, option: &str) -> Result<()> {
    if flag {
        Err(Error::unsupported(format!(
            "{name}: `{option}`: expected false, found true"
        )))
    } else {
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler {
    schedule: SigmaSchedule,
    prediction: PredictionType,
    begin_index: usize,
}

impl EulerDiscreteScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        const NAME: &str = "Euler";
        refuse(
            NAME,
            config.use_exponential_sigmas,
            "use_exponential_sigmas",
        )?;
        refuse(NAME, config.use_beta_sigmas, "use_beta_sigmas")?;
        if config.interpolation_type != InterpolationType::Linear {
            return Err(Error::unsupported(format!(
                "Euler: interpolation_type: expected `linear`, found `{}`",
                config.interpolation_type
            )));
        }
        if config.timestep_type == TimestepType::Continuous
            && config.prediction_type == PredictionType::VPrediction
        {
            return Err(Error::unsupported(
                "Euler: timestep_type: expected `discrete` with v_prediction, found `continuous`",
            ));
        }
        let schedule = SigmaSchedule::new(
            config,
            config.spacing_or(DEFAULT_SPACING),
            num_inference_steps,
            SigmaOptions {
                karras: config.use_karras_sigmas,
                final_sigma: config.final_sigmas_type,
            },
        )?;
        check_sigmas("euler", &schedule.sigmas, false)?;
        Ok(Self {
            schedule,
            prediction: config.prediction_type,
            begin_index: 0,
        })
    }
}

impl Scheduler for EulerDiscreteScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.schedule.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.schedule.init_noise_sigma
    }

    fn scale_model_input(&self, sample: Tensor<4>, step_index: usize) -> Result<Tensor<4>> {
        self.schedule.scale_model_input(sample, step_index)
    }

    fn needs_noise(&self, _step_index: usize) -> bool {
        false
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        _noise: Option<Tensor<4>>,
    ) -> Result<SchedulerOutput> {
        timestep_at(&self.schedule.timesteps, step_index)?;
        let sigma = self.schedule.sigmas[step_index];
        let sigma_next = self.schedule.sigmas[step_index + 1];
        // 1. x_0, then the ODE's derivative dx/dsigma = (x - x_0) / sigma (Karras eq. 3)
        let x0 = SigmaSchedule::predicted_x0(self.prediction, model_output, &sample, sigma);
        let derivative = (sample.clone() - x0.clone()) / sigma;
        // 2. one Euler step to the next sigma (to x_0 itself when it is 0)
        let prev = sample + derivative * (sigma_next - sigma);
        Ok(SchedulerOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    fn add_noise(
        &self,
        original: Tensor<4>,
        noise: Tensor<4>,
        step_index: usize,
    ) -> Result<Tensor<4>> {
        self.schedule.add_noise(original, noise, step_index)
    }

    fn begin_index(&self) -> usize {
        self.begin_index
    }

    fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        self.begin_index = check_begin_index(&self.schedule.timesteps, begin_index)?;
        Ok(())
    }
}
