//! Model and scheduler configs, read from diffusers' `config.json` and `scheduler_config.json`.
//!
//! Field names and defaults are those of diffusers' `UNet2DModel.__init__` and the scheduler
//! constructors, so a diffusers config file deserializes as it is. Options this crate does not
//! implement are refused by [`UNet2DConfig::validate`] with a message naming them; nothing falls
//! back silently to a default.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// `sample_size` is an int or an `[height, width]` pair in diffusers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    Rect([usize; 2]),
}

impl SampleSize {
    pub fn hw(self) -> [usize; 2] {
        match self {
            SampleSize::Square(s) => [s, s],
            SampleSize::Rect(hw) => hw,
        }
    }
}

/// The config of diffusers' `UNet2DModel` (models/unets/unet_2d.py), with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConfig {
    pub sample_size: Option<SampleSize>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub time_embedding_type: String,
    pub time_embedding_dim: Option<usize>,
    pub freq_shift: f64,
    pub flip_sin_to_cos: bool,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub mid_block_scale_factor: f64,
    pub downsample_padding: usize,
    pub downsample_type: String,
    pub upsample_type: String,
    pub dropout: f64,
    pub act_fn: String,
    pub attention_head_dim: Option<usize>,
    pub norm_num_groups: Option<usize>,
    pub attn_norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    pub resnet_time_scale_shift: String,
    pub add_attention: bool,
    pub class_embed_type: Option<String>,
    pub num_class_embeds: Option<usize>,
    pub num_train_timesteps: Option<usize>,
}

impl Default for UNet2DConfig {
    fn default() -> Self {
        Self {
            sample_size: None,
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            freq_shift: 0.0,
            flip_sin_to_cos: true,
            down_block_types: [
                "DownBlock2D",
                "AttnDownBlock2D",
                "AttnDownBlock2D",
                "AttnDownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            mid_block_type: Some("UNetMidBlock2D".into()),
            up_block_types: [
                "AttnUpBlock2D",
                "AttnUpBlock2D",
                "AttnUpBlock2D",
                "UpBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 1,
            downsample_type: "conv".into(),
            upsample_type: "conv".into(),
            dropout: 0.0,
            act_fn: "silu".into(),
            attention_head_dim: Some(8),
            norm_num_groups: Some(32),
            attn_norm_num_groups: None,
            norm_eps: 1e-5,
            resnet_time_scale_shift: "default".into(),
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            num_train_timesteps: None,
        }
    }
}

const UNET_KEYS: &[&str] = &[
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "time_embedding_type",
    "time_embedding_dim",
    "freq_shift",
    "flip_sin_to_cos",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "mid_block_scale_factor",
    "downsample_padding",
    "downsample_type",
    "upsample_type",
    "dropout",
    "act_fn",
    "attention_head_dim",
    "norm_num_groups",
    "attn_norm_num_groups",
    "norm_eps",
    "resnet_time_scale_shift",
    "add_attention",
    "class_embed_type",
    "num_class_embeds",
    "num_train_timesteps",
];

/// Limits that keep a hostile or corrupt config from asking for absurd allocations.
pub const MAX_CHANNELS: usize = 8192;
pub const MAX_SAMPLE_SIZE: usize = 1024;
pub const MAX_BLOCKS: usize = 8;
pub const MAX_LAYERS_PER_BLOCK: usize = 16;
pub const MAX_CLASSES: usize = 1 << 20;
pub const MAX_IMAGE_CHANNELS: usize = 64;

fn check_keys(value: &Value, known: &[&str], what: &str) -> Result<()> {
    let obj = value.as_object().ok_or_else(|| {
        Error::config(format!(
            "{what}: expected a JSON object, found {}",
            json_kind(value)
        ))
    })?;
    for key in obj.keys() {
        if key.starts_with('_') {
            continue; // diffusers bookkeeping: _class_name, _diffusers_version, _name_or_path
        }
        if !known.contains(&key.as_str()) {
            return Err(Error::unsupported(format!(
                "{what}: unknown option `{key}` (expected one of: {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl UNet2DConfig {
    /// Parses a diffusers `config.json` and validates it.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            Error::config(format!(
                "UNet config: expected JSON, found a parse error: {e}"
            ))
        })?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self> {
        if let Some(name) = value.get("_class_name").and_then(Value::as_str) {
            if name != "UNet2DModel" {
                return Err(Error::unsupported(format!(
                    "model class: expected `UNet2DModel`, found `{name}`"
                )));
            }
        }
        check_keys(&value, UNET_KEYS, "UNet config")?;
        let config: Self = serde_json::from_value(value)
            .map_err(|e| Error::config(format!("UNet config: a field has the wrong type: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serializes");
        v.as_object_mut()
            .expect("object")
            .insert("_class_name".into(), Value::String("UNet2DModel".into()));
        serde_json::to_string(&v).expect("config serializes")
    }

    /// Width of the time embedding (`time_embedding_dim or block_out_channels[0] * 4`).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or_else(|| self.block_out_channels.first().copied().unwrap_or(0) * 4)
    }

    /// GroupNorm groups used everywhere (validated to be set).
    pub fn groups(&self) -> usize {
        self.norm_num_groups.unwrap_or(32)
    }

    /// `[height, width]` of the samples; a model without `sample_size` needs one from the caller.
    pub fn sample_hw(&self) -> Option<[usize; 2]> {
        self.sample_size.map(SampleSize::hw)
    }

    /// Checks every option against what this crate implements and against sane limits.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || n > MAX_BLOCKS {
            return Err(Error::config(format!(
                "block_out_channels: expected 1 to {MAX_BLOCKS} entries, found {n}"
            )));
        }
        if self.down_block_types.len() != n {
            return Err(Error::config(format!(
                "down_block_types has {} entries but block_out_channels has {n}; they must match",
                self.down_block_types.len()
            )));
        }
        if self.up_block_types.len() != n {
            return Err(Error::config(format!(
                "up_block_types has {} entries but down_block_types has {n}; they must match",
                self.up_block_types.len()
            )));
        }
        for (i, t) in self.down_block_types.iter().enumerate() {
            if t != "DownBlock2D" && t != "AttnDownBlock2D" {
                return Err(Error::unsupported(format!(
                    "down_block_types[{i}]: expected DownBlock2D or AttnDownBlock2D, found `{t}`"
                )));
            }
        }
        for (i, t) in self.up_block_types.iter().enumerate() {
            if t != "UpBlock2D" && t != "AttnUpBlock2D" {
                return Err(Error::unsupported(format!(
                    "up_block_types[{i}]: expected UpBlock2D or AttnUpBlock2D, found `{t}`"
                )));
            }
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2D") => {}
            Some(t) => {
                return Err(Error::unsupported(format!(
                    "mid_block_type: expected UNetMidBlock2D or null, found `{t}`"
                )))
            }
        }
        if self.time_embedding_type != "positional" {
            return Err(Error::unsupported(format!(
                "time_embedding_type: expected `positional`, found `{}`",
                self.time_embedding_type
            )));
        }
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return Err(Error::unsupported(format!(
                "act_fn: expected `silu`, found `{}`",
                self.act_fn
            )));
        }
        if self.resnet_time_scale_shift != "default"
            && self.resnet_time_scale_shift != "scale_shift"
        {
            return Err(Error::unsupported(format!(
                "resnet_time_scale_shift: expected `default` or `scale_shift`, found `{}`",
                self.resnet_time_scale_shift
            )));
        }
        if self.downsample_type != "conv" {
            return Err(Error::unsupported(format!(
                "downsample_type: expected `conv`, found `{}`",
                self.downsample_type
            )));
        }
        if self.upsample_type != "conv" {
            return Err(Error::unsupported(format!(
                "upsample_type: expected `conv`, found `{}`",
                self.upsample_type
            )));
        }
        if let Some(t) = &self.class_embed_type {
            return Err(Error::unsupported(format!(
                "class_embed_type: expected null (a learned table from num_class_embeds), found `{t}`"
            )));
        }
        if self.downsample_padding > 1 {
            return Err(Error::unsupported(format!(
                "downsample_padding: expected 0 or 1, found {}",
                self.downsample_padding
            )));
        }
        let Some(groups) = self.norm_num_groups else {
            return Err(Error::unsupported(
                "norm_num_groups: expected an integer, found null",
            ));
        };
        let check_dim = |name: &str, v: usize, max: usize| -> Result<()> {
            if v == 0 || v > max {
                Err(Error::config(format!(
                    "{name}: expected 1 to {max}, found {v}"
                )))
            } else {
                Ok(())
            }
        };
        check_dim("in_channels", self.in_channels, MAX_IMAGE_CHANNELS)?;
        check_dim("out_channels", self.out_channels, MAX_IMAGE_CHANNELS)?;
        check_dim(
            "layers_per_block",
            self.layers_per_block,
            MAX_LAYERS_PER_BLOCK,
        )?;
        check_dim("norm_num_groups", groups, MAX_CHANNELS)?;
        if let Some([h, w]) = self.sample_hw() {
            check_dim("sample_size (height)", h, MAX_SAMPLE_SIZE)?;
            check_dim("sample_size (width)", w, MAX_SAMPLE_SIZE)?;
        }
        if let Some(c) = self.num_class_embeds {
            check_dim("num_class_embeds", c, MAX_CLASSES)?;
        }
        if !(self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(Error::config(format!(
                "norm_eps: expected a small positive number, found {}",
                self.norm_eps
            )));
        }
        if !(self.mid_block_scale_factor.is_finite() && self.mid_block_scale_factor != 0.0) {
            return Err(Error::config(format!(
                "mid_block_scale_factor: expected a finite non-zero number, found {}",
                self.mid_block_scale_factor
            )));
        }
        let attn_groups = self.attn_norm_num_groups.unwrap_or(groups);
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            check_dim(&format!("block_out_channels[{i}]"), c, MAX_CHANNELS)?;
            if c % groups != 0 {
                return Err(Error::config(format!(
                    "block_out_channels[{i}] = {c} is not divisible by norm_num_groups = {groups}"
                )));
            }
            let head_dim = self.attention_head_dim.unwrap_or(c);
            let uses_attn = self.down_block_types[i].starts_with("Attn")
                || self.up_block_types[n - 1 - i].starts_with("Attn")
                || (i == n - 1 && self.mid_block_type.is_some() && self.add_attention);
            if uses_attn {
                if head_dim == 0 || c % head_dim != 0 {
                    return Err(Error::config(format!(
                        "block_out_channels[{i}] = {c} is not divisible by attention_head_dim = {head_dim}"
                    )));
                }
                if i == n - 1 && c % attn_groups != 0 {
                    return Err(Error::config(format!(
                        "block_out_channels[{i}] = {c} is not divisible by attn_norm_num_groups = {attn_groups}"
                    )));
                }
            }
        }
        check_dim(
            "time embedding dim",
            self.time_embed_dim(),
            MAX_CHANNELS * 4,
        )?;
        // Skip connections concatenate channels of neighbouring levels: every sum must divide too.
        for i in 0..n {
            let prev = if i == 0 {
                self.block_out_channels[n - 1]
            } else {
                self.block_out_channels[n - i]
            };
            let skip = self.block_out_channels[n - 1 - i.min(n - 1)];
            for c in [prev + skip, self.block_out_channels[n - 1 - i] * 2] {
                if c % groups != 0 {
                    return Err(Error::config(format!(
                        "up block {i} concatenates {c} channels, not divisible by norm_num_groups = {groups}"
                    )));
                }
            }
        }
        if self.time_embed_dim() % 2 != 0 && self.block_out_channels[0] % 2 != 0 {
            return Err(Error::unsupported(format!(
                "block_out_channels[0]: expected an even number (sinusoidal embedding), found {}",
                self.block_out_channels[0]
            )));
        }
        Ok(())
    }
}

/// Which diffusers scheduler a `scheduler_config.json` came from (its `_class_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedulerKind {
    #[serde(rename = "ddpm")]
    Ddpm,
    #[serde(rename = "ddim")]
    Ddim,
    #[serde(rename = "dpm++")]
    DpmSolverMultistep,
}

impl SchedulerKind {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "ddpm" => Ok(Self::Ddpm),
            "ddim" => Ok(Self::Ddim),
            "dpm++" | "dpmsolver++" | "dpm" => Ok(Self::DpmSolverMultistep),
            other => Err(Error::invalid(format!(
                "scheduler: expected `ddpm`, `ddim` or `dpm++`, found `{other}`"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddpm => "ddpm",
            Self::Ddim => "ddim",
            Self::DpmSolverMultistep => "dpm++",
        }
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
    pub beta_schedule: String,
    pub trained_betas: Option<Vec<f64>>,
    pub variance_type: String,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub prediction_type: String,
    pub thresholding: bool,
    pub timestep_spacing: String,
    pub steps_offset: usize,
    pub rescale_betas_zero_snr: bool,
    /// DDIM: whether the final step uses alpha_cumprod = 1.
    pub set_alpha_to_one: bool,
    /// DPM-Solver++: order (1 or 2 supported).
    pub solver_order: usize,
    pub algorithm_type: String,
    pub solver_type: String,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_lu_lambdas: bool,
    pub use_flow_sigmas: bool,
    pub final_sigmas_type: String,
    pub lambda_min_clipped: f64,
    pub variance_type_dpm: Option<String>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02,
            beta_schedule: "linear".into(),
            trained_betas: None,
            variance_type: "fixed_small".into(),
            clip_sample: true,
            clip_sample_range: 1.0,
            prediction_type: "epsilon".into(),
            thresholding: false,
            timestep_spacing: "leading".into(),
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            set_alpha_to_one: true,
            solver_order: 2,
            algorithm_type: "dpmsolver++".into(),
            solver_type: "midpoint".into(),
            lower_order_final: true,
            euler_at_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            final_sigmas_type: "zero".into(),
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type_dpm: None,
        }
    }
}

/// Largest training schedule accepted (diffusers models use 1000; some use 4000).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

impl SchedulerConfig {
    /// Parses a diffusers `scheduler_config.json`. Keys of other schedulers are ignored, but
    /// values this crate cannot honour are refused by [`SchedulerConfig::validate`].
    pub fn from_json(text: &str) -> Result<Self> {
        let mut value: Value = serde_json::from_str(text).map_err(|e| {
            Error::config(format!(
                "scheduler config: expected JSON, found a parse error: {e}"
            ))
        })?;
        let obj = value.as_object_mut().ok_or_else(|| {
            Error::config("scheduler config: expected a JSON object, found another JSON value")
        })?;
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
        // JSON has no -inf: diffusers writes it as -Infinity or omits it; null means "no clipping".
        if obj
            .get("lambda_min_clipped")
            .is_some_and(|v| !v.is_number())
        {
            obj.remove("lambda_min_clipped");
        }
        let known = serde_json::to_value(SchedulerConfig::default()).expect("serializes");
        let known = known.as_object().expect("object");
        obj.retain(|k, _| known.contains_key(k));
        let config: Self = serde_json::from_value(value).map_err(|e| {
            Error::config(format!("scheduler config: a field has the wrong type: {e}"))
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serializes");
        let obj = v.as_object_mut().expect("object");
        if !self.lambda_min_clipped.is_finite() {
            obj.remove("lambda_min_clipped");
        }
        serde_json::to_string(&v).expect("config serializes")
    }

    pub fn validate(&self) -> Result<()> {
        let t = self.num_train_timesteps;
        if t < 2 || t > MAX_TRAIN_TIMESTEPS {
            return Err(Error::config(format!(
                "num_train_timesteps: expected 2 to {MAX_TRAIN_TIMESTEPS}, found {t}"
            )));
        }
        if self.trained_betas.is_some() {
            return Err(Error::unsupported(
                "trained_betas: expected null, found a list",
            ));
        }
        match self.beta_schedule.as_str() {
            "linear" | "scaled_linear" | "squaredcos_cap_v2" => {}
            other => {
                return Err(Error::unsupported(format!(
                    "beta_schedule: expected linear, scaled_linear or squaredcos_cap_v2, found `{other}`"
                )))
            }
        }
        if !(self.beta_start > 0.0 && self.beta_end < 1.0 && self.beta_start <= self.beta_end) {
            return Err(Error::config(format!(
                "beta_start/beta_end: expected 0 < beta_start <= beta_end < 1, found {} and {}",
                self.beta_start, self.beta_end
            )));
        }
        match self.variance_type.as_str() {
            "fixed_small" | "fixed_small_log" | "fixed_large" | "fixed_large_log" => {}
            other => {
                return Err(Error::unsupported(format!(
                    "variance_type: expected fixed_small, fixed_small_log, fixed_large or fixed_large_log, found `{other}`"
                )))
            }
        }
        match self.prediction_type.as_str() {
            "epsilon" | "sample" | "v_prediction" => {}
            other => {
                return Err(Error::unsupported(format!(
                    "prediction_type: expected epsilon, sample or v_prediction, found `{other}`"
                )))
            }
        }
        match self.timestep_spacing.as_str() {
            "leading" | "trailing" | "linspace" => {}
            other => {
                return Err(Error::unsupported(format!(
                    "timestep_spacing: expected leading, trailing or linspace, found `{other}`"
                )))
            }
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
        if !(self.clip_sample_range > 0.0) {
            return Err(Error::config(format!(
                "clip_sample_range: expected a positive number, found {}",
                self.clip_sample_range
            )));
        }
        if self.steps_offset >= t {
            return Err(Error::config(format!(
                "steps_offset: expected less than num_train_timesteps = {t}, found {}",
                self.steps_offset
            )));
        }
        Ok(())
    }
}
