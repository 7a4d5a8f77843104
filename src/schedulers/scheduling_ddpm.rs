//! DDPM ancestral sampling (Ho et al. 2020, Algorithm 2): diffusers `scheduling_ddpm.py`.

use burn::tensor::Tensor;

use super::{
    check_begin_index, predicted_x0, required_noise, spaced_timesteps, timestep_at, BetaTable,
    PredictionType, Scheduler, SchedulerConfig, SchedulerOutput, TimestepSpacing, VarianceType,
};
use crate::error::Result;

/// diffusers' `DDPMScheduler` default `timestep_spacing`.
pub const DEFAULT_SPACING: TimestepSpacing = TimestepSpacing::Leading;

#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    pub table: BetaTable,
    timesteps: Vec<usize>,
    /// `timesteps` as the model is given them.
    model_timesteps: Vec<f64>,
    prediction: PredictionType,
    variance_type: VarianceType,
    clip_sample: Option<f64>,
    begin_index: usize,
}

impl DdpmScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let timesteps = spaced_timesteps(config, DEFAULT_SPACING, num_inference_steps)?;
        Ok(Self {
            table: BetaTable::new(config)?,
            model_timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            prediction: config.prediction_type,
            variance_type: config.variance_type,
            clip_sample: config.clip_range(),
            begin_index: 0,
        })
    }

    /// The timestep after `t` in this run's schedule, or `None` after the last one.
    fn previous_timestep(&self, t: usize) -> Option<usize> {
        let i = self.timesteps.iter().position(|&x| x == t)?;
        self.timesteps.get(i + 1).copied()
    }

    fn alpha_prev(&self, t: usize) -> f64 {
        self.previous_timestep(t)
            .map_or(1.0, |p| self.table.alphas_cumprod[p])
    }

    /// diffusers `_get_variance(t)`: the number its `variance_type` names (a variance, a
    /// standard deviation for `fixed_small_log`, a log for `fixed_large_log`).
    pub fn variance(&self, t: usize) -> f64 {
        let a_t = self.table.alphas_cumprod[t];
        let a_prev = self.alpha_prev(t);
        let beta_t = 1.0 - a_t / a_prev;
        // DDPM eq. 7, clamped as diffusers does so that log() is finite at t = 0.
        let posterior = ((1.0 - a_prev) / (1.0 - a_t) * beta_t).max(1e-20);
        match self.variance_type {
            VarianceType::FixedSmall => posterior,
            VarianceType::FixedSmallLog => (0.5 * posterior.ln()).exp(),
            VarianceType::FixedLarge => beta_t,
            VarianceType::FixedLargeLog => beta_t.ln(),
        }
    }

    /// Standard deviation of the noise added at `t`.
    fn noise_std(&self, t: usize) -> f64 {
        match self.variance_type {
            VarianceType::FixedSmallLog => self.variance(t),
            // diffusers takes sqrt(log beta) here, which is NaN; use the standard deviation.
            VarianceType::FixedLargeLog => self.variance(t).exp().sqrt(),
            _ => self.variance(t).sqrt(),
        }
    }
}

impl Scheduler for DdpmScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.model_timesteps
    }

    fn needs_noise(&self, step_index: usize) -> bool {
        self.timesteps.get(step_index).is_some_and(|&t| t > 0)
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<SchedulerOutput> {
        timestep_at(&self.model_timesteps, step_index)?;
        let t = self.timesteps[step_index];
        // 1. alphas and betas
        let a_t = self.table.alphas_cumprod[t];
        let a_prev = self.alpha_prev(t);
        let beta_prod_t = 1.0 - a_t;
        let beta_prod_prev = 1.0 - a_prev;
        let current_alpha = a_t / a_prev;
        let current_beta = 1.0 - current_alpha;

        // 2. predicted x_0 (DDPM eq. 15)
        let mut x0 = predicted_x0(
            self.prediction,
            model_output,
            &sample,
            a_t.sqrt(),
            beta_prod_t.sqrt(),
        );

        // 3. clip
        if let Some(r) = self.clip_sample {
            x0 = x0.clamp(-r, r);
        }

        // 4-5. posterior mean mu~_t(x_t, x_0) (DDPM eq. 7)
        let x0_coeff = a_prev.sqrt() * current_beta / beta_prod_t;
        let xt_coeff = current_alpha.sqrt() * beta_prod_prev / beta_prod_t;
        let mut prev = x0.clone() * x0_coeff + sample * xt_coeff;

        // 6. add noise
        if t > 0 {
            let noise = required_noise(noise, "DDPM", step_index)?;
            prev = prev + noise * self.noise_std(t);
        }
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
        timestep_at(&self.model_timesteps, step_index)?;
        self.table
            .add_noise(original, noise, self.timesteps[step_index])
    }

    fn begin_index(&self) -> usize {
        self.begin_index
    }

    fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        self.begin_index = check_begin_index(&self.model_timesteps, begin_index)?;
        Ok(())
    }
}
