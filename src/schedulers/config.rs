//! The config of the schedulers, read from diffusers' `scheduler_config.json`: the training
//! noise schedule and every scheduler's options, typed (enums with diffusers' names).
//!
//! One struct serves every scheduler, as one file serves them in diffusers. Keys whose default
//! differs between diffusers' schedulers (`timestep_spacing`: `leading` for DDPM, DDIM and LCM,
//! `linspace` for DPM-Solver++ and the Euler schedulers; `sigma_min` / `sigma_max`: taken from
//! the beta table by Euler, 0.002 / 80 for consistency models) are `Option`s: absent from the
//! file, they take the default of the scheduler that runs, as diffusers' `from_config` does, not
//! of the one the file names. Other keys have one default (DDPM's where diffusers' schedulers
//! disagree: LCM's and CM's own defaults for the beta table, `clip_sample` and
//! `num_train_timesteps` apply only when the file says so; their published configs all do).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{config_enum, from_fields, json_kind, known_keys, parse_config_json, shown};
use crate::error::{Error, Result};

config_enum! {
    /// A sampler of this crate; its names are the ones the CLI and the JS API take (diffusers'
    /// class names are accepted too). The scheduler is chosen at run time: a model's
    /// `scheduler_config.json` gives the noise schedule whatever class it names (e.g.
    /// `PNDMScheduler`, which most Stable Diffusion checkpoints name, and which is not one of these).
    pub enum SchedulerKind {
        Ddpm = "ddpm" | "DDPMScheduler",
        Ddim = "ddim" | "DDIMScheduler",
        DpmSolverMultistep = "dpm++" | "dpmsolver++" | "dpm" | "DPMSolverMultistepScheduler",
        Euler = "euler" | "EulerDiscreteScheduler",
        EulerAncestral = "euler-a" | "euler_a" | "EulerAncestralDiscreteScheduler",
        Lcm = "lcm" | "LCMScheduler",
        ConsistencyModel = "cm" | "CMStochasticIterativeScheduler",
    }
}

impl SchedulerKind {
    /// Every kind, in the order of [`SchedulerKind::NAMES`].
    pub const ALL: [SchedulerKind; 7] = [
        SchedulerKind::Ddpm,
        SchedulerKind::Ddim,
        SchedulerKind::DpmSolverMultistep,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::Lcm,
        SchedulerKind::ConsistencyModel,
    ];

    /// The scheduler a user names (`ddpm`, `ddim`, `dpm++`, `euler`, `euler-a`, `lcm`, `cm`, or
    /// diffusers' class name).
    pub fn parse(name: &str) -> Result<Self> {
        Self::from_name(name).ok_or_else(|| {
            Error::invalid(format!(
                "scheduler: expected {}, found `{}`",
                crate::config::one_of(Self::NAMES),
                shown(name)
            ))
        })
    }
}

config_enum! {
    /// `beta_schedule`: how the training betas grow.
    pub enum BetaSchedule {
        Linear = "linear",
        /// Latent diffusion's: linear in sqrt(beta).
        ScaledLinear = "scaled_linear",
        /// Improved DDPM's cosine schedule.
        SquaredcosCapV2 = "squaredcos_cap_v2",
    }
}

config_enum! {
    /// `prediction_type`: what the network predicts.
    pub enum PredictionType {
        Epsilon = "epsilon",
        Sample = "sample",
        VPrediction = "v_prediction",
    }
}

config_enum! {
    /// DDPM's `variance_type`: the reverse-step variance.
    pub enum VarianceType {
        /// beta~_t = (1 - a_{t-1}) / (1 - a_t) beta_t: the posterior variance (DDPM sec. 3.2).
        FixedSmall = "fixed_small",
        /// Same variance, returned as a standard deviation.
        FixedSmallLog = "fixed_small_log",
        /// beta_t.
        FixedLarge = "fixed_large",
        /// log beta_t.
        FixedLargeLog = "fixed_large_log",
    }
}

config_enum! {
    /// `timestep_spacing`: how the inference timesteps are spread (Lin et al. 2023, Table 2).
    pub enum TimestepSpacing {
        Leading = "leading",
        Trailing = "trailing",
        Linspace = "linspace",
    }
}

config_enum! {
    /// DPM-Solver's `algorithm_type` (`dpmsolver`, `sde-dpmsolver++`, ... are not implemented).
    pub enum AlgorithmType {
        DpmSolverPlusPlus = "dpmsolver++",
    }
}

config_enum! {
    /// DPM-Solver's second-order `solver_type`.
    pub enum SolverType {
        Midpoint = "midpoint",
        Heun = "heun",
    }
}

config_enum! {
    /// Euler's `interpolation_type`: how sigmas between training timesteps are found.
    pub enum InterpolationType {
        /// `np.interp` of the training sigmas at the (fractional) timesteps.
        Linear = "linear",
        /// Log-linear from the last to the first training sigma (not implemented).
        LogLinear = "log_linear",
    }
}

config_enum! {
    /// Euler's `timestep_type`: what the U-Net is given as the timestep.
    pub enum TimestepType {
        Discrete = "discrete",
        /// 0.25 ln(sigma) with v-prediction (not implemented).
        Continuous = "continuous",
    }
}

config_enum! {
    /// DPM-Solver's and Euler's `final_sigmas_type`: the sigma after the last step.
    pub enum FinalSigmasType {
        Zero = "zero",
        SigmaMin = "sigma_min",
    }
}

/// The training-time noise schedule and the options the schedulers share, as in diffusers'
/// `scheduler_config.json`. Options only one scheduler reads are ignored by the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub variance_type: VarianceType,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    /// `None`: absent from the file; the running scheduler's default applies
    /// ([`SchedulerConfig::spacing_or`]).
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: usize,
    pub rescale_betas_zero_snr: bool,
    /// DDIM: whether the final step uses alpha_cumprod = 1.
    pub set_alpha_to_one: bool,
    /// DPM-Solver++: order (1 or 2 supported).
    pub solver_order: usize,
    pub algorithm_type: AlgorithmType,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_lu_lambdas: bool,
    pub use_flow_sigmas: bool,
    pub final_sigmas_type: FinalSigmasType,
    pub lambda_min_clipped: f64,
    pub variance_type_dpm: Option<String>,
    /// Euler: how sigmas are interpolated between training timesteps.
    pub interpolation_type: InterpolationType,
    /// Euler: the timestep the U-Net is given.
    pub timestep_type: TimestepType,
    /// Euler with Karras sigmas: the smallest sigma (`None`: the last interpolated one);
    /// consistency models: the sigma of clean data (`None`: 0.002).
    pub sigma_min: Option<f64>,
    /// Euler with Karras sigmas: the largest sigma (`None`: the first interpolated one);
    /// consistency models: the sigma of pure noise (`None`: 80).
    pub sigma_max: Option<f64>,
    /// Consistency models: the standard deviation of the data (EDM's sigma_data).
    pub sigma_data: f64,
    /// Consistency models: the exponent of the Karras sigma ramp.
    pub rho: f64,
    /// Consistency models: the scale of the noise added between steps.
    pub s_noise: f64,
    /// Consistency models: whether the denoised sample is clamped to [-1, 1].
    pub clip_denoised: bool,
    /// LCM: the number of steps of the schedule the model was distilled on.
    pub original_inference_steps: usize,
    /// LCM: the factor on the timestep in the boundary-condition scalings c_skip, c_out.
    pub timestep_scaling: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            clip_sample_range: 1.0,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            timestep_spacing: None,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            set_alpha_to_one: true,
            solver_order: 2,
            algorithm_type: AlgorithmType::DpmSolverPlusPlus,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type_dpm: None,
            interpolation_type: InterpolationType::Linear,
            timestep_type: TimestepType::Discrete,
            sigma_min: None,
            sigma_max: None,
            sigma_data: 0.5,
            rho: 7.0,
            s_noise: 1.0,
            clip_denoised: true,
            original_inference_steps: 50,
            timestep_scaling: 10.0,
        }
    }
}

/// Largest training schedule accepted (diffusers models use 1000; some use 4000).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

impl SchedulerConfig {
    /// Parses a diffusers `scheduler_config.json`. Keys of other schedulers are ignored, but
    /// values this crate cannot honour are refused by [`SchedulerConfig::validate`].
    pub fn from_json(text: &str) -> Result<Self> {
        let mut obj = match parse_config_json(text, "scheduler config")? {
            Value::Object(obj) => obj,
            other => {
                return Err(Error::config(format!(
                    "scheduler config: expected a JSON object, found {}",
                    json_kind(&other)
                )))
            }
        };
        // DPM-Solver's `variance_type` (null or learned) shares a name with DDPM's; keep them apart.
        let is_dpm = obj
            .get("_class_name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with("DPMSolver"));
        if is_dpm {
            if let Some(v) = obj.remove("variance_type") {
                obj.insert("variance_type_dpm".into(), v);
            }
        }
        // JSON has no -inf: diffusers writes its default as -Infinity (quoted by
        // `parse_config_json`), Python's str() as "-inf", or omits it; null also means "no
        // clipping". Any other non-number is refused by name below.
        if obj
            .get("lambda_min_clipped")
            .is_some_and(|v| v.is_null() || matches!(v.as_str(), Some("-Infinity" | "-inf")))
        {
            obj.remove("lambda_min_clipped");
        }
        let known = known_keys::<Self>();
        obj.retain(|k, _| known.contains(k));
        let config: Self = from_fields(obj, "scheduler config")?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serializes");
        let obj = v.as_object_mut().expect("object");
        if !self.lambda_min_clipped.is_finite() {
            obj.remove("lambda_min_clipped");
        }
        // Absent keys stay absent (null is what serde writes for them): the scheduler that runs
        // supplies its own default, and older readers of the file keep theirs.
        obj.retain(|_, v| !v.is_null());
        serde_json::to_string(&v).expect("config serializes")
    }

    /// The range x_0 predictions are clipped to (`clip_sample`, `clip_sample_range`).
    pub fn clip_range(&self) -> Option<f64> {
        self.clip_sample.then_some(self.clip_sample_range)
    }

    /// `timestep_spacing` as the file gives it, else `default` (the running scheduler's).
    pub fn spacing_or(&self, default: TimestepSpacing) -> TimestepSpacing {
        self.timestep_spacing.unwrap_or(default)
    }

    /// The cross-field checks and limits (single values are checked by their types).
    pub fn validate(&self) -> Result<()> {
        let t = self.num_train_timesteps;
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&t) {
            return Err(Error::config(format!(
                "num_train_timesteps: expected 2 to {MAX_TRAIN_TIMESTEPS}, found {t}"
            )));
        }
        if self.trained_betas.is_some() {
            return Err(Error::unsupported(
                "trained_betas: expected null, found a list",
            ));
        }
        if !(self.beta_start > 0.0 && self.beta_end < 1.0 && self.beta_start <= self.beta_end) {
            return Err(Error::config(format!(
                "beta_start/beta_end: expected 0 < beta_start <= beta_end < 1, found {} and {}",
                self.beta_start, self.beta_end
            )));
        }
        if self.thresholding {
            return Err(Error::unsupported(
                "thresholding: expected false, found true",
            ));
        }
        if self.rescale_betas_zero_snr {
            return Err(Error::unsupported(
                "rescale_betas_zero_snr: expected false, found true",
            ));
        }
        // Also refuses NaN (set programmatically; JSON has none).
        if self.clip_sample_range.is_nan() || self.clip_sample_range <= 0.0 {
            return Err(Error::config(format!(
                "clip_sample_range: expected a positive number, found {}",
                self.clip_sample_range
            )));
        }
        // DPM-Solver's `variance_type` (stored apart from DDPM's): "learned" / "learned_range"
        // models predict a variance too, an output no scheduler here reads.
        if let Some(v) = &self.variance_type_dpm {
            return Err(Error::unsupported(format!(
                "variance_type_dpm (DPM-Solver's variance_type): expected null, found `{}`",
                shown(v)
            )));
        }
        if self.steps_offset >= t {
            return Err(Error::config(format!(
                "steps_offset: expected less than num_train_timesteps = {t}, found {}",
                self.steps_offset
            )));
        }
        self.validate_sigma_options()
    }

    /// The options of the Euler schedulers, LCM and consistency models. Cross-field limits that
    /// depend on the scheduler that runs (`original_inference_steps` <= `num_train_timesteps`)
    /// are checked when that scheduler is built.
    fn validate_sigma_options(&self) -> Result<()> {
        let positive = |name: &str, x: f64| {
            if x.is_finite() && x > 0.0 {
                Ok(())
            } else {
                Err(Error::config(format!(
                    "{name}: expected a finite number > 0, found {x}"
                )))
            }
        };
        if let Some(x) = self.sigma_min {
            positive("sigma_min", x)?;
        }
        if let Some(x) = self.sigma_max {
            positive("sigma_max", x)?;
        }
        if let (Some(lo), Some(hi)) = (self.sigma_min, self.sigma_max) {
            if lo >= hi {
                return Err(Error::config(format!(
                    "sigma_min/sigma_max: expected sigma_min < sigma_max, found {lo} and {hi}"
                )));
            }
        }
        positive("sigma_data", self.sigma_data)?;
        positive("rho", self.rho)?;
        positive("timestep_scaling", self.timestep_scaling)?;
        if !(self.s_noise.is_finite() && self.s_noise >= 0.0) {
            return Err(Error::config(format!(
                "s_noise: expected a finite number >= 0, found {}",
                self.s_noise
            )));
        }
        if self.original_inference_steps == 0 {
            return Err(Error::config(
                "original_inference_steps: expected at least 1, found 0",
            ));
        }
        Ok(())
    }
}
