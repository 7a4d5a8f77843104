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

fn check_keys(value: Value, known: &[&str], what: &str) -> Result<serde_json::Map<String, Value>> {
    let obj = match value {
        Value::Object(obj) => obj,
        other => {
            return Err(Error::config(format!(
                "{what}: expected a JSON object, found {}",
                json_kind(&other)
            )))
        }
    };
    for key in obj.keys() {
        if key.starts_with('_') {
            continue; // diffusers bookkeeping: _class_name, _diffusers_version, _name_or_path
        }
        if !known.contains(&key.as_str()) {
            return Err(Error::unsupported(format!(
                "{what}: unknown option `{}` (expected one of: {})",
                shown(key),
                known.join(", ")
            )));
        }
    }
    Ok(obj)
}

/// A value as a message shows it: compact JSON, cut after [`SHOWN_CHARS`] characters.
fn shown_json(v: &Value) -> String {
    shown(&v.to_string())
}

/// Longest value quoted whole in an error message; longer ones are cut with `...`.
const SHOWN_CHARS: usize = 64;

/// `s` cut to [`SHOWN_CHARS`] characters, so a hostile megabyte string cannot flood a message.
pub(crate) fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((i, _)) => format!("{}... ({} bytes)", &s[..i], s.len()),
        None => s.to_string(),
    }
}

/// JSON has no NaN or infinities, but Python's `json.dump` (hence diffusers' `save_config`)
/// writes the bare tokens `NaN`, `Infinity` and `-Infinity`. They are quoted here so the text
/// parses; a field that expects a number then names itself and the string it found, and
/// `lambda_min_clipped: -Infinity` (diffusers' default written out) reads as its default.
fn quote_non_finite(text: &str) -> std::borrow::Cow<'_, str> {
    const TOKENS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        match b[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            _ if !in_string => {
                let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
                if let Some(tok) = TOKENS
                    .iter()
                    .find(|t| boundary && b[i..].starts_with(t.as_bytes()))
                {
                    let o = out.get_or_insert_with(String::new);
                    o.push_str(&text[copied..i]);
                    o.push('"');
                    o.push_str(tok);
                    o.push('"');
                    i += tok.len();
                    copied = i;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    match out {
        Some(mut o) => {
            o.push_str(&text[copied..]);
            std::borrow::Cow::Owned(o)
        }
        None => std::borrow::Cow::Borrowed(text),
    }
}

/// Parses a config's JSON text. A parse error names the top-level key whose value it is in,
/// when there is one (e.g. an array nested past serde_json's depth limit).
fn parse_config_json(text: &str, what: &str) -> Result<Value> {
    let text = quote_non_finite(text);
    serde_json::from_str(&text).map_err(|e| {
        let offset = text
            .split_inclusive('\n')
            .take(e.line().saturating_sub(1))
            .map(str::len)
            .sum::<usize>()
            + e.column();
        match key_at(&text, offset) {
            Some(key) => Error::config(format!(
                "{what} `{key}`: expected a JSON value, found a parse error: {e}"
            )),
            None => Error::config(format!("{what}: expected JSON, found a parse error: {e}")),
        }
    })
}

/// The key of the top-level object member that byte `offset` of `text` lies in, if any.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let b = text.as_bytes();
    let end = offset.min(b.len());
    let (mut depth, mut i, mut expect_key) = (0usize, 0usize, false);
    let mut key = None;
    while i < end {
        match b[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && expect_key {
                    key = text.get(start..i.min(b.len())).map(shown);
                    expect_key = false;
                }
            }
            b'{' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    key
}

/// Deserializes a config object. serde's message for a bad field says what it expected and
/// found but not which field, so on failure the fields are tried one at a time (every field
/// has a default) to name the one at fault.
fn from_fields<T: serde::de::DeserializeOwned>(
    obj: serde_json::Map<String, Value>,
    what: &str,
) -> Result<T> {
    match serde_json::from_value(Value::Object(obj.clone())) {
        Ok(v) => Ok(v),
        Err(e) => {
            for (k, v) in obj {
                let one = Value::Object([(k.clone(), v.clone())].into_iter().collect());
                if let Err(e) = serde_json::from_value::<T>(one) {
                    return Err(Error::config(format!(
                        "{what} `{k}`: expected {}, found {}",
                        expected_type(&k, &e),
                        shown_json(&v)
                    )));
                }
            }
            Err(Error::config(format!(
                "{what}: a field has the wrong type: {e}"
            )))
        }
    }
}

/// What field `key` holds, in words, from serde's "..., expected X" (or a table, where serde's
/// wording would be about an element or an untagged enum).
fn expected_type(key: &str, e: &serde_json::Error) -> String {
    match key {
        "sample_size" => return "a positive integer or [height, width]".into(),
        "block_out_channels" => return "a list of positive integers".into(),
        "down_block_types" | "up_block_types" => return "a list of block type names".into(),
        "trained_betas" => return "null".into(),
        _ => {}
    }
    let msg = e.to_string();
    let tail = msg
        .rsplit_once(", expected ")
        .map_or("another type", |(_, t)| t);
    let tail = tail.split(" at line ").next().unwrap_or(tail);
    match tail {
        "usize" | "u32" | "u64" => "a non-negative integer".into(),
        "f64" | "f32" => "a number".into(),
        t => t.to_string(),
    }
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
        Self::from_value(parse_config_json(text, "UNet config")?)
    }

    pub fn from_value(value: Value) -> Result<Self> {
        if let Some(name) = value.get("_class_name").and_then(Value::as_str) {
            if name != "UNet2DModel" {
                return Err(Error::unsupported(format!(
                    "UNet config `_class_name`: expected `UNet2DModel`, found `{}`",
                    shown(name)
                )));
            }
        }
        let obj = check_keys(value, UNET_KEYS, "UNet config")?;
        let config: Self = from_fields(obj, "UNet config")?;
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
        self.time_embedding_dim.unwrap_or_else(|| {
            self.block_out_channels
                .first()
                .copied()
                .unwrap_or(0)
                .saturating_mul(4)
        })
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
                    "down_block_types[{i}]: expected DownBlock2D or AttnDownBlock2D, found `{}`",
                    shown(t)
                )));
            }
        }
        for (i, t) in self.up_block_types.iter().enumerate() {
            if t != "UpBlock2D" && t != "AttnUpBlock2D" {
                return Err(Error::unsupported(format!(
                    "up_block_types[{i}]: expected UpBlock2D or AttnUpBlock2D, found `{}`",
                    shown(t)
                )));
            }
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2D") => {}
            Some(t) => {
                return Err(Error::unsupported(format!(
                    "mid_block_type: expected UNetMidBlock2D or null, found `{}`",
                    shown(t)
                )))
            }
        }
        if self.time_embedding_type != "positional" {
            return Err(Error::unsupported(format!(
                "time_embedding_type: expected `positional`, found `{}`",
                shown(&self.time_embedding_type)
            )));
        }
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return Err(Error::unsupported(format!(
                "act_fn: expected `silu`, found `{}`",
                shown(&self.act_fn)
            )));
        }
        if self.resnet_time_scale_shift != "default"
            && self.resnet_time_scale_shift != "scale_shift"
        {
            return Err(Error::unsupported(format!(
                "resnet_time_scale_shift: expected `default` or `scale_shift`, found `{}`",
                shown(&self.resnet_time_scale_shift)
            )));
        }
        if self.downsample_type != "conv" {
            return Err(Error::unsupported(format!(
                "downsample_type: expected `conv`, found `{}`",
                shown(&self.downsample_type)
            )));
        }
        if self.upsample_type != "conv" {
            return Err(Error::unsupported(format!(
                "upsample_type: expected `conv`, found `{}`",
                shown(&self.upsample_type)
            )));
        }
        if let Some(t) = &self.class_embed_type {
            return Err(Error::unsupported(format!(
                "class_embed_type: expected null (a learned table from num_class_embeds), found `{}`",
                shown(t)
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
        // The schedulers combine the output with the sample element by element; a model with
        // more outputs (diffusers' learned variance: 2 x in_channels) is not implemented.
        if self.out_channels != self.in_channels {
            return Err(Error::unsupported(format!(
                "out_channels: expected in_channels = {} (the schedulers step the sample with the model's output), found {}",
                self.in_channels, self.out_channels
            )));
        }
        check_dim(
            "layers_per_block",
            self.layers_per_block,
            MAX_LAYERS_PER_BLOCK,
        )?;
        check_dim("norm_num_groups", groups, MAX_CHANNELS)?;
        if let Some([h, w]) = self.sample_hw() {
            check_dim("sample_size (height)", h, MAX_SAMPLE_SIZE)?;
            check_dim("sample_size (width)", w, MAX_SAMPLE_SIZE)?;
            // Each down block but the last halves the image, each up block doubles it back;
            // the skip connections only line up when every halving is exact.
            let factor = 1usize << (n - 1);
            if h % factor != 0 || w % factor != 0 {
                return Err(Error::config(format!(
                    "sample_size: expected a height and width divisible by {factor} (one halving per down block after the first), found {h}x{w}"
                )));
            }
        }
        if let Some(g) = self.attn_norm_num_groups {
            check_dim("attn_norm_num_groups", g, MAX_CHANNELS)?;
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
        if !self.freq_shift.is_finite() {
            return Err(Error::config(format!(
                "freq_shift: expected a finite number, found {}",
                self.freq_shift
            )));
        }
        // torch's Dropout refuses a probability outside [0, 1] (it is unused at inference).
        if !(0.0..=1.0).contains(&self.dropout) {
            return Err(Error::config(format!(
                "dropout: expected a probability from 0 to 1, found {}",
                self.dropout
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
            "time_embedding_dim (default: block_out_channels[0] * 4)",
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
        let known = serde_json::to_value(SchedulerConfig::default()).expect("serializes");
        let known = known.as_object().expect("object");
        obj.retain(|k, _| known.contains_key(k));
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
        serde_json::to_string(&v).expect("config serializes")
    }

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
        match self.beta_schedule.as_str() {
            "linear" | "scaled_linear" | "squaredcos_cap_v2" => {}
            other => {
                return Err(Error::unsupported(format!(
                "beta_schedule: expected linear, scaled_linear or squaredcos_cap_v2, found `{}`",
                shown(other)
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
                    "variance_type: expected fixed_small, fixed_small_log, fixed_large or fixed_large_log, found `{}`",
                    shown(other)
                )))
            }
        }
        match self.prediction_type.as_str() {
            "epsilon" | "sample" | "v_prediction" => {}
            other => {
                return Err(Error::unsupported(format!(
                    "prediction_type: expected epsilon, sample or v_prediction, found `{}`",
                    shown(other)
                )))
            }
        }
        match self.timestep_spacing.as_str() {
            "leading" | "trailing" | "linspace" => {}
            other => {
                return Err(Error::unsupported(format!(
                    "timestep_spacing: expected leading, trailing or linspace, found `{}`",
                    shown(other)
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
        Ok(())
    }
}
