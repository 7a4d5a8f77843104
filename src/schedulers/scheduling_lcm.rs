//! Latent consistency models (Luo et al. 2023, "Latent Consistency Models", Algorithm 1,
//! multistep sampling): diffusers `scheduling_lcm.py`. Each step maps x_t to the clean sample
//! with the consistency function `c_skip x_t + c_out x_0` and, before the last step, noises that
//! estimate to the next timestep with fresh noise. 4 to 8 steps on a schedule of
//! `original_inference_steps` (50) timesteps the model was distilled on.

use burn::tensor::Tensor;

use super::{
    check_begin_index, check_steps, predicted_x0, required_noise, timestep_at, BetaTable,
    PredictionType, Scheduler, SchedulerConfig, SchedulerOutput, TimestepSpacing,
};
use crate::error::{Error, Result};

/// diffusers' `LCMScheduler` default `timestep_spacing` (it does not read it).
pub const DEFAULT_SPACING: TimestepSpacing = TimestepSpacing::Leading;

/// The data standard deviation in LCM's boundary-condition scalings (fixed in diffusers).
const SIGMA_DATA: f64 = 0.5;

#[derive(Debug, Clone)]
pub struct LcmScheduler {
    pub table: BetaTable,
    timesteps: Vec<usize>,
    /// `timesteps` as the model is given them.
    model_timesteps: Vec<f64>,
    prediction: PredictionType,
    clip_sample: Option<f64>,
    timestep_scaling: f64,
    begin_index: usize,
}

impl LcmScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        let n = num_inference_steps;
        check_steps(config, n)?;
        let t_train = config.num_train_timesteps;
        let original = config.original_inference_steps;
        if original > t_train {
            return Err(Error::config(format!(
                "original_inference_steps: expected at most num_train_timesteps = {t_train}, found {original}"
            )));
        }
        if n > original {
            return Err(Error::invalid(format!(
                "steps: expected 1 to {original} (LCM's original_inference_steps), found {n}"
            )));
        }
        // The distillation schedule: every k-th training timestep, ending at T - 1 (or below).
        let k = t_train / original;
        let origin: Vec<usize> = (1..=original).rev().map(|j| j * k - 1).collect();
        // n of them, evenly by index: floor(np.linspace(0, len, n, endpoint=False)).
        let stride = original as f64 / n as f64;
        let timesteps: Vec<usize> = (0..n)
            .map(|i| origin[(i as f64 * stride).floor() as usize])
            .collect();
        Ok(Self {
            table: BetaTable::new(config)?,
            model_timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            prediction: config.prediction_type,
            clip_sample: config.clip_range(),
            timestep_scaling: config.timestep_scaling,
            begin_index: 0,
        })
    }

    /// LCM eq. 9: the consistency function's `(c_skip, c_out)` at timestep `t`, which make
    /// f(x, 0) = x (the boundary condition) with the timestep scaled by `timestep_scaling`.
    pub fn boundary_scalings(&self, t: usize) -> (f64, f64) {
        let s = t as f64 * self.timestep_scaling;
        let d2 = SIGMA_DATA * SIGMA_DATA;
        (d2 / (s * s + d2), s / (s * s + d2).sqrt())
    }
}

impl Scheduler for LcmScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.model_timesteps
    }

    /// Every step but the last re-noises its estimate.
    fn needs_noise(&self, step_index: usize) -> bool {
        step_index + 1 < self.timesteps.len()
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<SchedulerOutput> {
        timestep_at(&self.model_timesteps, step_index)?;
        // 1. alphas of this timestep and the next (the last step's own)
        let t = self.timesteps[step_index];
        let prev_t = self.timesteps.get(step_index + 1).copied().unwrap_or(t);
        let a_t = self.table.alphas_cumprod[t];
        let a_prev = self.table.alphas_cumprod[prev_t];

        // 2. x_0 from the model output, clipped as configured
        let mut x0 = predicted_x0(
            self.prediction,
            model_output,
            &sample,
            a_t.sqrt(),
            (1.0 - a_t).sqrt(),
        );
        if let Some(r) = self.clip_sample {
            x0 = x0.clamp(-r, r);
        }

        // 3. the consistency function's estimate
        let (c_skip, c_out) = self.boundary_scalings(t);
        let denoised = x0 * c_out + sample * c_skip;

        // 4. noised to the next timestep (DDPM eq. 4), except after the last step
        let prev = if self.needs_noise(step_index) {
            let noise = required_noise(noise, "LCM", step_index)?;
            denoised.clone() * a_prev.sqrt() + noise * (1.0 - a_prev).sqrt()
        } else {
            denoised.clone()
        };
        Ok(SchedulerOutput {
            prev_sample: prev,
            pred_original_sample: denoised,
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
