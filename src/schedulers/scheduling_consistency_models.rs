//! Consistency models' multistep sampling (Song et al. 2023, "Consistency Models", Algorithm 1):
//! diffusers `scheduling_consistency_models.py` (`CMStochasticIterativeScheduler`). In EDM's
//! sigma space (x = x_0 + sigma noise, sigmas on a Karras ramp from `sigma_max` to
//! `sigma_min`): each step maps x to the clean sample with `c_skip x + c_out F(x)` and, but for
//! the last, noises it back up to the next sigma. One step is the whole sampler; more refine it.
//! The model is given `1000 * 0.25 * ln(sigma)` as its timestep.

use burn::tensor::Tensor;

use super::scheduling_euler_discrete::karras_sigmas;
use super::{
    check_begin_index, check_sigmas, check_steps, f32_round, required_noise, timestep_at,
    Scheduler, SchedulerConfig, SchedulerOutput,
};
use crate::error::{Error, Result};

/// diffusers' defaults of the sigma range (EDM's, for images in [-1, 1]).
pub const DEFAULT_SIGMA_MIN: f64 = 0.002;
pub const DEFAULT_SIGMA_MAX: f64 = 80.0;

#[derive(Debug, Clone)]
pub struct CMStochasticIterativeScheduler {
    timesteps: Vec<f64>,
    /// The sigma of each step, then `sigma_min`; rounded to f32 as in diffusers.
    sigmas: Vec<f64>,
    sigma_min: f64,
    sigma_max: f64,
    sigma_data: f64,
    s_noise: f64,
    clip_denoised: bool,
    begin_index: usize,
}

impl CMStochasticIterativeScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let n = num_inference_steps;
        check_steps(config, n)?;
        let sigma_min = config.sigma_min.unwrap_or(DEFAULT_SIGMA_MIN);
        let sigma_max = config.sigma_max.unwrap_or(DEFAULT_SIGMA_MAX);
        if sigma_min >= sigma_max {
            return Err(Error::config(format!(
                "sigma_min/sigma_max: expected sigma_min < sigma_max, found {sigma_min} and {sigma_max}"
            )));
        }
        // Every (T / n)-th training index from 0, as a fraction of the ramp (0: sigma_max).
        let t_train = config.num_train_timesteps;
        let ratio = t_train / n;
        let ramp: Vec<f64> = (0..n)
            .map(|i| (i * ratio) as f64 / (t_train - 1) as f64)
            .collect();
        let sigmas = karras_sigmas(sigma_min, sigma_max, config.rho, &ramp);
        let timesteps = sigmas.iter().map(|&s| sigma_to_t(s)).collect();
        let sigmas: Vec<f64> = sigmas
            .into_iter()
            .chain([sigma_min])
            .map(f32_round)
            .collect();
        check_sigmas("cm", &sigmas, false)?;
        Ok(Self {
            timesteps,
            sigmas,
            sigma_min,
            sigma_max,
            sigma_data: config.sigma_data,
            s_noise: config.s_noise,
            clip_denoised: config.clip_denoised,
            begin_index: 0,
        })
    }

    /// Consistency Models, appendix C: `(c_skip, c_out)` at `sigma`, which make the model the
    /// identity at `sigma_min` (the boundary condition).
    pub fn boundary_scalings(&self, sigma: f64) -> (f64, f64) {
        let d2 = self.sigma_data * self.sigma_data;
        let from_min = sigma - self.sigma_min;
        let c_skip = d2 / (from_min * from_min + d2);
        let c_out = from_min * self.sigma_data / (sigma * sigma + d2).sqrt();
        (c_skip, c_out)
    }
}

/// The model's timestep for `sigma`: `1000 * 0.25 * ln(sigma)` (the 1e-44 guards ln(0)).
fn sigma_to_t(sigma: f64) -> f64 {
    1000.0 * 0.25 * (sigma + 1e-44).ln()
}

impl Scheduler for CMStochasticIterativeScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    /// `sigma_max`: a run starts from pure noise at the top of the ramp.
    fn init_noise_sigma(&self) -> f64 {
        self.sigma_max
    }

    /// `sample / sqrt(sigma^2 + sigma_data^2)`: EDM's c_in, unit variance at every sigma.
    fn scale_model_input(&self, sample: Tensor<4>, step_index: usize) -> Result<Tensor<4>> {
        timestep_at(&self.timesteps, step_index)?;
        let sigma = self.sigmas[step_index];
        Ok(sample / (sigma * sigma + self.sigma_data * self.sigma_data).sqrt())
    }

    /// diffusers draws noise at every step of a multistep run (the last one's weight is
    /// sqrt(f32(sigma_min)^2 - sigma_min^2), a rounding error); a one-step run takes none.
    fn needs_noise(&self, _step_index: usize) -> bool {
        self.timesteps.len() > 1
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<SchedulerOutput> {
        timestep_at(&self.timesteps, step_index)?;
        let sigma = self.sigmas[step_index];
        let sigma_next = self.sigmas[step_index + 1];

        // 1. the consistency function: the clean sample, clamped to the image range
        let (c_skip, c_out) = self.boundary_scalings(sigma);
        let mut denoised = model_output * c_out + sample * c_skip;
        if self.clip_denoised {
            denoised = denoised.clamp(-1.0, 1.0);
        }

        // 2. noised up to the next sigma (Algorithm 1: sqrt(sigma^2 - sigma_min^2))
        let prev = if self.needs_noise(step_index) {
            let z = required_noise(noise, "CM", step_index)? * self.s_noise;
            let sigma_hat = sigma_next.clamp(self.sigma_min, self.sigma_max);
            let w = (sigma_hat * sigma_hat - self.sigma_min * self.sigma_min)
                .max(0.0)
                .sqrt();
            denoised.clone() + z * w
        } else {
            denoised.clone()
        };
        Ok(SchedulerOutput {
            prev_sample: prev,
            pred_original_sample: denoised,
        })
    }

    /// `x_0 + sigma_i noise`.
    fn add_noise(
        &self,
        original: Tensor<4>,
        noise: Tensor<4>,
        step_index: usize,
    ) -> Result<Tensor<4>> {
        timestep_at(&self.timesteps, step_index)?;
        Ok(original + noise * self.sigmas[step_index])
    }

    fn begin_index(&self) -> usize {
        self.begin_index
    }

    fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        self.begin_index = check_begin_index(&self.timesteps, begin_index)?;
        Ok(())
    }
}
