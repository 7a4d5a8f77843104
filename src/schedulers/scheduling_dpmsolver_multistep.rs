//! DPM-Solver++ multistep, orders 1 and 2 (Lu et al. 2022, "DPM-Solver++", Algorithm 2, the
//! "2M" sampler): diffusers `scheduling_dpmsolver_multistep.py` with
//! `algorithm_type="dpmsolver++"`. Works on data predictions x_0, in half-log-SNR time
//! lambda = log(alpha_t / sigma_t).

use burn::tensor::Tensor;

use super::config::{FinalSigmasType, SolverType};
use super::{
    check_begin_index, check_steps, predicted_x0, spaced, timestep_at, BetaTable, PredictionType,
    Scheduler, SchedulerConfig, SchedulerOutput, TimestepSpacing,
};
use crate::error::{Error, Result};

/// diffusers' `DPMSolverMultistepScheduler` default `timestep_spacing`.
pub const DEFAULT_SPACING: TimestepSpacing = TimestepSpacing::Linspace;

#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler {
    pub table: BetaTable,
    /// The training timesteps visited, as the model is given them.
    timesteps: Vec<f64>,
    /// sigma = sqrt((1 - a) / a) at each timestep, then the final sigma; rounded to f32 as in
    /// diffusers.
    pub sigmas: Vec<f64>,
    prediction: PredictionType,
    solver_order: usize,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_zero: bool,
    /// The last `solver_order` data predictions since the run began, newest last.
    model_outputs: Vec<Tensor<4>>,
    /// The step to take next.
    step_index: usize,
    begin_index: usize,
}

fn refuse(flag: bool, name: &str) -> Result<()> {
    if flag {
        Err(Error::unsupported(format!(
            "DPM-Solver++: `{name}`: expected false, found true"
        )))
    } else {
        Ok(())
    }
}

impl DpmSolverMultistepScheduler {
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        check_steps(config, num_inference_steps)?;
        if !(1..=2).contains(&config.solver_order) {
            return Err(Error::unsupported(format!(
                "DPM-Solver++: solver_order: expected 1 or 2, found {}",
                config.solver_order
            )));
        }
        let final_zero = config.final_sigmas_type == FinalSigmasType::Zero;
        refuse(config.use_karras_sigmas, "use_karras_sigmas")?;
        refuse(config.use_exponential_sigmas, "use_exponential_sigmas")?;
        refuse(config.use_beta_sigmas, "use_beta_sigmas")?;
        refuse(config.use_lu_lambdas, "use_lu_lambdas")?;
        refuse(config.use_flow_sigmas, "use_flow_sigmas")?;
        if let Some(v) = &config.variance_type_dpm {
            return Err(Error::unsupported(format!(
                "DPM-Solver++: variance_type: expected null, found `{v}`"
            )));
        }

        let table = BetaTable::new(config)?;
        let n = num_inference_steps;
        let t_train = config.num_train_timesteps;
        // Timesteps whose lambda is below lambda_min_clipped are never visited.
        let clipped = table
            .alphas_cumprod
            .iter()
            .filter(|&&a| 0.5 * (a.ln() - (1.0 - a).ln()) < config.lambda_min_clipped)
            .count();
        let last = t_train - clipped;
        if last == 0 {
            return Err(Error::config(format!(
                "scheduler `dpm++`: expected at least one timestep, found none: lambda_min_clipped = {} clips all {t_train} training timesteps (use a lower lambda_min_clipped)",
                config.lambda_min_clipped
            )));
        }
        let timesteps = spaced(config, config.spacing_or(DEFAULT_SPACING), last, n, true)?;
        let sigma_of = |a: f64| (((1.0 - a) / a).sqrt() as f32) as f64;
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| sigma_of(table.alphas_cumprod[t]))
            .collect();
        sigmas.push(if final_zero {
            0.0
        } else {
            sigma_of(table.alphas_cumprod[0])
        });
        Ok(Self {
            table,
            timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            sigmas,
            prediction: config.prediction_type,
            solver_order: config.solver_order,
            solver_type: config.solver_type,
            lower_order_final: config.lower_order_final,
            euler_at_final: config.euler_at_final,
            final_zero,
            model_outputs: Vec::new(),
            step_index: 0,
            begin_index: 0,
        })
    }

    /// (alpha_t, sigma_t) of the VP process for the ratio sigma = sigma_t / alpha_t.
    fn alpha_sigma(sigma: f64) -> (f64, f64) {
        let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
        (alpha, sigma * alpha)
    }

    fn lambda(sigma: f64) -> f64 {
        let (a, s) = Self::alpha_sigma(sigma);
        a.ln() - s.ln()
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
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
        let i = self.step_index;
        if step_index != i {
            return Err(Error::invalid(format!(
                "DPM-Solver++ step index: expected {i}, found {step_index} (steps must be taken in order)"
            )));
        }
        timestep_at(&self.timesteps, i)?;
        let n = self.timesteps.len();
        let last = i == n - 1;
        let lower_order_final =
            last && (self.euler_at_final || (self.lower_order_final && n < 15) || self.final_zero);

        // Convert the model output to a data prediction x_0 (eq. 11 of DPM-Solver++).
        let (alpha_s0, sigma_s0) = Self::alpha_sigma(self.sigmas[i]);
        let x0 = predicted_x0(self.prediction, model_output, &sample, alpha_s0, sigma_s0);
        self.model_outputs.push(x0.clone());
        if self.model_outputs.len() > self.solver_order {
            self.model_outputs.remove(0);
        }

        let sigma_next = self.sigmas[i + 1];
        let (alpha_t, sigma_t) = Self::alpha_sigma(sigma_next);
        let lambda_t = Self::lambda(sigma_next);
        let lambda_s0 = Self::lambda(self.sigmas[i]);
        let h = lambda_t - lambda_s0;
        // With sigma_next = 0, lambda_t = inf and exp(-h) = 0: the step lands on x_0.
        let phi = (-h).exp() - 1.0;
        let ratio = if sigma_next == 0.0 {
            0.0
        } else {
            sigma_t / sigma_s0
        };

        // The first step since the run began has no history: diffusers' `lower_order_nums < 1`.
        let first_order =
            self.solver_order == 1 || self.model_outputs.len() < 2 || lower_order_final;
        let prev = if first_order {
            // DPM-Solver++(1), i.e. DDIM in lambda time.
            sample * ratio - x0 * (alpha_t * phi)
        } else {
            // DPM-Solver++(2M): a finite difference of the last two data predictions.
            let m0 = x0;
            let m1 = self.model_outputs[0].clone();
            let lambda_s1 = Self::lambda(self.sigmas[i - 1]);
            let r0 = (lambda_s0 - lambda_s1) / h;
            let d1 = (m0.clone() - m1) / r0;
            match self.solver_type {
                SolverType::Midpoint => {
                    sample * ratio - m0 * (alpha_t * phi) - d1 * (0.5 * alpha_t * phi)
                }
                SolverType::Heun => {
                    sample * ratio - m0 * (alpha_t * phi) + d1 * (alpha_t * (phi / h + 1.0))
                }
            }
        };
        self.step_index += 1;
        let x0 = self.model_outputs.last().expect("pushed above").clone();
        Ok(SchedulerOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    /// `alpha_t x_0 + sigma_t noise` at step `i`'s sigma (diffusers' `add_noise`).
    fn add_noise(
        &self,
        original: Tensor<4>,
        noise: Tensor<4>,
        step_index: usize,
    ) -> Result<Tensor<4>> {
        timestep_at(&self.timesteps, step_index)?;
        let (alpha_t, sigma_t) = Self::alpha_sigma(self.sigmas[step_index]);
        Ok(original * alpha_t + noise * sigma_t)
    }

    fn begin_index(&self) -> usize {
        self.begin_index
    }

    /// Starts at step `i` with a fresh history (its first step is first order).
    fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        self.begin_index = check_begin_index(&self.timesteps, begin_index)?;
        self.step_index = begin_index;
        self.model_outputs.clear();
        Ok(())
    }
}
