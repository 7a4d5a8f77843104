//! DDIM (Song et al. 2021, eq. 12): diffusers `scheduling_ddim.py`. `eta = 0` is the
//! deterministic sampler; `eta = 1` adds DDPM-like noise.

use burn::tensor::Tensor;

use super::{
    check_begin_index, predicted_x0, required_noise, spaced_timesteps, timestep_at, BetaTable,
    PredictionType, Scheduler, SchedulerConfig, SchedulerOutput, TimestepSpacing,
};
use crate::error::{Error, Result};

/// diffusers' `DDIMScheduler` default `timestep_spacing`.
pub const DEFAULT_SPACING: TimestepSpacing = TimestepSpacing::Leading;

#[derive(Debug, Clone)]
pub struct DdimScheduler {
    pub table: BetaTable,
    timesteps: Vec<usize>,
    /// `timesteps` as the model is given them.
    model_timesteps: Vec<f64>,
    prediction: PredictionType,
    clip_sample: Option<f64>,
    /// alpha_cumprod used after the last step (1, or alphas_cumprod[0]).
    final_alpha_cumprod: f64,
    step_ratio: usize,
    eta: f64,
    begin_index: usize,
}

impl DdimScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize, eta: f64) -> Result<Self> {
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(Error::invalid(format!(
                "eta: expected a number >= 0, found {eta}"
            )));
        }
        let table = BetaTable::new(config)?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            table.alphas_cumprod[0]
        };
        let timesteps = spaced_timesteps(config, DEFAULT_SPACING, num_inference_steps)?;
        Ok(Self {
            table,
            model_timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            prediction: config.prediction_type,
            clip_sample: config.clip_range(),
            final_alpha_cumprod,
            step_ratio: config.num_train_timesteps / num_inference_steps,
            eta,
            begin_index: 0,
        })
    }

    fn alpha_prev(&self, t: usize) -> f64 {
        match t.checked_sub(self.step_ratio) {
            Some(p) => self.table.alphas_cumprod[p],
            None => self.final_alpha_cumprod,
        }
    }

    /// sigma_t^2 / eta^2 of DDIM eq. 16.
    pub fn variance(&self, t: usize) -> f64 {
        let a_t = self.table.alphas_cumprod[t];
        let a_prev = self.alpha_prev(t);
        (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
    }
}

impl Scheduler for DdimScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.model_timesteps
    }

    fn needs_noise(&self, _step_index: usize) -> bool {
        self.eta > 0.0
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
        // 1-2. alphas of t and of the previous timestep t - T/n
        let a_t = self.table.alphas_cumprod[t];
        let a_prev = self.alpha_prev(t);
        let beta_t = 1.0 - a_t;

        // 3. predicted x_0 and epsilon ("predicted x_0" of eq. 12)
        let (alpha_t, sigma_t) = (a_t.sqrt(), beta_t.sqrt());
        let eps = match self.prediction {
            PredictionType::Epsilon => model_output.clone(),
            PredictionType::Sample => (sample.clone() - model_output.clone() * alpha_t) / sigma_t,
            PredictionType::VPrediction => {
                model_output.clone() * alpha_t + sample.clone() * sigma_t
            }
        };
        let mut x0 = predicted_x0(self.prediction, model_output, &sample, alpha_t, sigma_t);

        // 4. clip
        if let Some(r) = self.clip_sample {
            x0 = x0.clamp(-r, r);
        }

        // 5-6. sigma_t (eq. 16) and the "direction pointing to x_t" of eq. 12
        let std_dev = self.eta * self.variance(t).sqrt();
        let direction = eps * (1.0 - a_prev - std_dev * std_dev).max(0.0).sqrt();

        // 7. x_{t-1} without the random noise, then the noise
        let mut prev = x0.clone() * a_prev.sqrt() + direction;
        if self.eta > 0.0 {
            let noise = required_noise(noise, "DDIM (eta > 0)", step_index)?;
            prev = prev + noise * std_dev;
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
