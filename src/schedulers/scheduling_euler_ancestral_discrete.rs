//! Euler ancestral sampling (k-diffusion's `sample_euler_ancestral`; Karras et al. 2022 with
//! Song et al. 2021's ancestral split of each step): diffusers
//! `scheduling_euler_ancestral_discrete.py`. Each step goes deterministically down to
//! sigma_down and adds fresh noise of sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2.
//! The sigma schedule is Euler's ([`SigmaSchedule`]) without its options.

use burn::tensor::Tensor;

use super::config::FinalSigmasType;
use super::scheduling_euler_discrete::{SigmaOptions, SigmaSchedule};
use super::{
    check_begin_index, check_sigmas, required_noise, timestep_at, PredictionType, Scheduler,
    SchedulerConfig, SchedulerOutput, TimestepSpacing,
};
use crate::error::{Error, Result};

/// diffusers' `EulerAncestralDiscreteScheduler` default `timestep_spacing`.
pub const DEFAULT_SPACING: TimestepSpacing = TimestepSpacing::Linspace;

#[derive(Debug, Clone)]
pub struct EulerAncestralDiscreteScheduler {
    schedule: SigmaSchedule,
    prediction: PredictionType,
    begin_index: usize,
}

impl EulerAncestralDiscreteScheduler {
    /// diffusers' Euler ancestral reads neither `use_karras_sigmas` nor `final_sigmas_type` nor
    /// `interpolation_type`: its sigmas are interpolated and end at 0, whatever the config says.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        if config.prediction_type == PredictionType::Sample {
            return Err(Error::unsupported(
                "Euler ancestral: prediction_type: expected `epsilon` or `v_prediction`, found `sample`",
            ));
        }
        let schedule = SigmaSchedule::new(
            config,
            config.spacing_or(DEFAULT_SPACING),
            num_inference_steps,
            SigmaOptions {
                karras: false,
                final_sigma: FinalSigmasType::Zero,
            },
        )?;
        check_sigmas("euler-a", &schedule.sigmas, true)?;
        Ok(Self {
            schedule,
            prediction: config.prediction_type,
            begin_index: 0,
        })
    }

    /// (sigma_up, sigma_down) of step `i`: the noise added and the level the deterministic
    /// part reaches.
    fn ancestral_sigmas(&self, i: usize) -> (f64, f64) {
        let from = self.schedule.sigmas[i];
        let to = self.schedule.sigmas[i + 1];
        let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let down = (to * to - up * up).max(0.0).sqrt();
        (up, down)
    }
}

impl Scheduler for EulerAncestralDiscreteScheduler {
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

    /// Every step but the last (whose sigma_up is 0) adds noise.
    fn needs_noise(&self, step_index: usize) -> bool {
        step_index + 1 < self.schedule.sigmas.len() && self.ancestral_sigmas(step_index).0 > 0.0
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step_index: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Result<SchedulerOutput> {
        timestep_at(&self.schedule.timesteps, step_index)?;
        let sigma = self.schedule.sigmas[step_index];
        // 1. x_0 and the derivative, as Euler
        let x0 = SigmaSchedule::predicted_x0(self.prediction, model_output, &sample, sigma);
        let derivative = (sample.clone() - x0.clone()) / sigma;
        // 2. deterministic step down to sigma_down, then noise of sigma_up
        let (up, down) = self.ancestral_sigmas(step_index);
        let mut prev = sample + derivative * (down - sigma);
        if up > 0.0 {
            prev = prev + required_noise(noise, "Euler ancestral", step_index)? * up;
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
