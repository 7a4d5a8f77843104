//! `CLIPTextModel`: transformers `models/clip/modeling_clip.py`, the text encoder of Stable
//! Diffusion 1.x (quick_gelu) and 2.x (gelu): token and position embeddings, pre-norm
//! transformer layers with causal self-attention, a final layer norm. Parameter paths are the
//! state-dict names, under `text_model.` as transformers 4.x saves them (SD checkpoints) or
//! without it as 5.x does ([`CLIPTextModel::load`] takes the prefix, [`state_dict_prefix`]
//! finds it).

use burn::tensor::activation::{gelu, sigmoid, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::config::{config_enum, from_fields, in_range, parse_config_json, shown};
use crate::error::{Error, Result};
use crate::models::layers::{join, LayerNorm, Linear};
use crate::weights::{Container, TensorSource};

config_enum! {
    /// `hidden_act` of the MLPs.
    pub enum HiddenAct {
        /// `x * sigmoid(1.702 x)` (OpenAI's CLIP, SD 1.x).
        QuickGelu = "quick_gelu",
        /// The exact (erf) GELU (OpenCLIP, SD 2.x).
        Gelu = "gelu",
    }
}

/// The config of transformers' `CLIPTextModel` (`CLIPTextConfig`), with its defaults. Keys of
/// transformers' generic `PretrainedConfig` (architectures, dtype, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CLIPTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: HiddenAct,
    pub layer_norm_eps: f64,
    pub eos_token_id: usize,
}

impl Default for CLIPTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }
}

/// Largest sizes accepted (SD's encoders: 49408 tokens, width 1024, 24 layers).
const MAX_VOCAB: usize = 1 << 20;
const MAX_WIDTH: usize = 16384;
const MAX_LAYERS: usize = 64;
const MAX_POSITIONS: usize = 4096;

impl CLIPTextConfig {
    /// Parses a transformers `config.json` and validates it.
    pub fn from_json(text: &str) -> Result<Self> {
        let what = "CLIPTextModel config";
        let value = parse_config_json(text, what)?;
        let serde_json::Value::Object(mut obj) = value else {
            return Err(Error::config(format!("{what}: expected a JSON object")));
        };
        if let Some(t) = obj.get("model_type").and_then(|v| v.as_str()) {
            if t != "clip_text_model" {
                return Err(Error::unsupported(format!(
                    "{what} `model_type`: expected `clip_text_model`, found `{}`",
                    shown(t)
                )));
            }
        }
        let known = crate::config::known_keys::<Self>();
        obj.retain(|k, _| known.contains(k));
        let config: Self = from_fields(obj, what)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        in_range("vocab_size", self.vocab_size, MAX_VOCAB)?;
        in_range("hidden_size", self.hidden_size, MAX_WIDTH)?;
        in_range("intermediate_size", self.intermediate_size, 4 * MAX_WIDTH)?;
        in_range("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS)?;
        in_range("num_attention_heads", self.num_attention_heads, MAX_WIDTH)?;
        in_range(
            "max_position_embeddings",
            self.max_position_embeddings,
            MAX_POSITIONS,
        )?;
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::config(format!(
                "hidden_size = {} is not divisible by num_attention_heads = {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            return Err(Error::config(format!(
                "layer_norm_eps: expected a small positive number, found {}",
                self.layer_norm_eps
            )));
        }
        Ok(())
    }
}

/// `text_model` when the file has transformers 4.x's names (SD checkpoints), else empty.
pub fn state_dict_prefix(container: &Container<'_>) -> &'static str {
    if container
        .get("text_model.embeddings.token_embedding.weight")
        .is_some()
    {
        "text_model"
    } else {
        ""
    }
}

/// One encoder layer: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Debug, Clone)]
pub struct CLIPEncoderLayer {
    pub layer_norm1: LayerNorm,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub layer_norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

#[derive(Debug, Clone)]
pub struct CLIPTextModel {
    pub config: CLIPTextConfig,
    /// `[vocab, hidden]`
    pub token_embedding: Tensor<2>,
    /// `[max_positions, hidden]`
    pub position_embedding: Tensor<2>,
    pub layers: Vec<CLIPEncoderLayer>,
    pub final_layer_norm: LayerNorm,
    device: Device,
}

/// What [`CLIPTextModel::forward`] returns.
#[derive(Debug, Clone)]
pub struct CLIPTextOutput {
    /// `[B, N, hidden]`: what Stable Diffusion's U-Net attends to.
    pub last_hidden_state: Tensor<3>,
    /// `[B, hidden]`: the state at each sequence's first end token.
    pub pooler_output: Tensor<2>,
}

impl CLIPTextModel {
    /// Loads the encoder from `src`; `prefix` is `"text_model"` or `""` ([`state_dict_prefix`]).
    pub fn load(
        config: &CLIPTextConfig,
        src: &mut impl TensorSource,
        prefix: &str,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let (d, eps) = (config.hidden_size, config.layer_norm_eps);
        let p = |n: &str| join(prefix, n);
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = |n: &str| p(&format!("encoder.layers.{i}.{n}"));
                Ok(CLIPEncoderLayer {
                    layer_norm1: LayerNorm::load(src, &l("layer_norm1"), d, eps)?,
                    q_proj: Linear::load(src, &l("self_attn.q_proj"), d, d)?,
                    k_proj: Linear::load(src, &l("self_attn.k_proj"), d, d)?,
                    v_proj: Linear::load(src, &l("self_attn.v_proj"), d, d)?,
                    out_proj: Linear::load(src, &l("self_attn.out_proj"), d, d)?,
                    layer_norm2: LayerNorm::load(src, &l("layer_norm2"), d, eps)?,
                    fc1: Linear::load(src, &l("mlp.fc1"), d, config.intermediate_size)?,
                    fc2: Linear::load(src, &l("mlp.fc2"), config.intermediate_size, d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding: src.get(
                &p("embeddings.token_embedding.weight"),
                [config.vocab_size, d],
            )?,
            position_embedding: src.get(
                &p("embeddings.position_embedding.weight"),
                [config.max_position_embeddings, d],
            )?,
            layers,
            final_layer_norm: LayerNorm::load(src, &p("final_layer_norm"), d, eps)?,
            config: config.clone(),
            device: device.clone(),
        })
    }

    /// Token ids `[B][N]` (all of equal length, at most `max_position_embeddings`, each below
    /// the vocabulary) -> the last hidden state and the pooled output.
    pub fn forward(&self, ids: &[Vec<u32>]) -> Result<CLIPTextOutput> {
        self.forward_skip(ids, 0)
    }

    /// [`forward`](Self::forward) with diffusers' `clip_skip`: the hidden state `clip_skip`
    /// layers before the last, through the final layer norm (0: the last layer's).
    pub fn forward_skip(&self, ids: &[Vec<u32>], clip_skip: usize) -> Result<CLIPTextOutput> {
        let (b, n) = self.check_ids(ids)?;
        if clip_skip >= self.layers.len() {
            return Err(Error::invalid(format!(
                "clip_skip: expected 0 to {}, found {clip_skip}",
                self.layers.len() - 1
            )));
        }
        // 1. embeddings
        let flat: Vec<i32> = ids.iter().flatten().map(|&t| t as i32).collect();
        let flat = Tensor::<1, Int>::from_data(TensorData::new(flat, [b * n]), &self.device);
        let d = self.config.hidden_size;
        let tokens = self
            .token_embedding
            .clone()
            .select(0, flat)
            .reshape([b, n, d]);
        let positions = self
            .position_embedding
            .clone()
            .narrow(0, 0, n)
            .reshape([1, n, d]);
        let mut x = tokens + positions;
        // 2. encoder layers, causal
        let mask = self.causal_mask(n);
        for layer in &self.layers[..self.layers.len() - clip_skip] {
            x = self.layer_forward(layer, x, &mask);
        }
        // 3. final norm, pooled at the first end token
        let last = self.final_layer_norm.forward(x);
        let eos: Vec<i32> = ids
            .iter()
            .map(|row| {
                let eos = self.config.eos_token_id as u32;
                row.iter().position(|&t| t == eos).unwrap_or(n - 1) as i32
            })
            .collect();
        let rows: Vec<Tensor<2>> = eos
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                last.clone()
                    .narrow(0, i, 1)
                    .narrow(1, p as usize, 1)
                    .reshape([1, d])
            })
            .collect();
        Ok(CLIPTextOutput {
            pooler_output: Tensor::cat(rows, 0),
            last_hidden_state: last,
        })
    }

    fn check_ids(&self, ids: &[Vec<u32>]) -> Result<(usize, usize)> {
        let b = ids.len();
        let n = ids.first().map_or(0, Vec::len);
        let max = self.config.max_position_embeddings;
        if b == 0 || n == 0 || n > max {
            return Err(Error::invalid(format!(
                "token ids: expected 1 or more sequences of 1 to {max} tokens, found {b} of {n}"
            )));
        }
        if let Some(row) = ids.iter().find(|r| r.len() != n) {
            return Err(Error::invalid(format!(
                "token ids: expected sequences of equal length {n}, found one of {}",
                row.len()
            )));
        }
        let v = self.config.vocab_size as u32;
        if let Some(&t) = ids.iter().flatten().find(|&&t| t >= v) {
            return Err(Error::invalid(format!(
                "token ids: expected ids below the vocabulary size {v}, found {t}"
            )));
        }
        Ok((b, n))
    }

    /// `[1, 1, N, N]`: 0 on and below the diagonal, a large negative number above it.
    fn causal_mask(&self, n: usize) -> Tensor<4> {
        let v: Vec<f32> = (0..n * n)
            .map(|i| if i % n > i / n { f32::MIN } else { 0.0 })
            .collect();
        Tensor::from_data(TensorData::new(v, [1, 1, n, n]), &self.device)
    }

    fn layer_forward(&self, l: &CLIPEncoderLayer, x: Tensor<3>, mask: &Tensor<4>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let heads = self.config.num_attention_heads;
        let hd = d / heads;
        // self-attention
        let h = l.layer_norm1.forward(x.clone());
        let split = |t: Tensor<3>| t.reshape([b, n, heads, hd]).swap_dims(1, 2);
        let q = split(l.q_proj.forward(h.clone())) * (1.0 / (hd as f64).sqrt());
        let k = split(l.k_proj.forward(h.clone()));
        let v = split(l.v_proj.forward(h));
        let scores = q.matmul(k.swap_dims(2, 3)) + mask.clone();
        let attn = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, n, d]);
        let x = x + l.out_proj.forward(attn);
        // MLP
        let h = l.fc1.forward(l.layer_norm2.forward(x.clone()));
        let h = match self.config.hidden_act {
            HiddenAct::QuickGelu => h.clone() * sigmoid(h * 1.702),
            HiddenAct::Gelu => gelu(h),
        };
        x + l.fc2.forward(h)
    }
}
