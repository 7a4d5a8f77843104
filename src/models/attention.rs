//! Attention: diffusers `models/attention_processor.py` (`Attention` with `AttnProcessor2_0`):
//! the spatial self-attention of `AttnDownBlock2D`, `AttnUpBlock2D` and `UNetMidBlock2D` (a group
//! norm and a residual connection around it), and the self- and cross-attention of the
//! transformer blocks (on tokens, keys and values from a context such as the text states).
//! `models/attention.py`'s `BasicTransformerBlock` and `FeedForward` (GEGLU) are here too.

use burn::tensor::activation::softmax;
use burn::tensor::Tensor;

use super::layers::{GroupNorm, LayerNorm, Linear};
use crate::backend::cpu;
use crate::error::Result;
use crate::memory::MAX_SCORE_ELEMS;
use crate::weights::TensorSource;

#[derive(Debug, Clone)]
pub struct Attention {
    /// Absent only in a scale-shift mid block without `attn_norm_num_groups` (as in diffusers).
    pub group_norm: Option<GroupNorm>,
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    /// `to_out.0` in diffusers (`to_out.1` is dropout).
    pub to_out: Linear,
    heads: usize,
    rescale_output_factor: f64,
}

/// What an [`Attention`] is made of (diffusers' `Attention(query_dim, heads, dim_head,
/// norm_num_groups, eps, rescale_output_factor, residual_connection=True)` of the U-Net blocks).
#[derive(Debug, Clone, Copy)]
pub struct AttentionConfig {
    /// Query (and output) width.
    pub channels: usize,
    pub head_dim: usize,
    /// Width of the keys' and values' input (`cross_attention_dim`); `None`: `channels`.
    pub context_dim: Option<usize>,
    /// Whether to_q / to_k / to_v have biases (`bias=True`; the transformer blocks have none).
    pub qkv_bias: bool,
    /// GroupNorm groups; `None`: no norm.
    pub groups: Option<usize>,
    pub eps: f64,
    pub rescale_output_factor: f64,
}

impl Attention {
    pub fn load(src: &mut impl TensorSource, prefix: &str, c: AttentionConfig) -> Result<Self> {
        let p = |n: &str| format!("{prefix}.{n}");
        let ch = c.channels;
        Ok(Self {
            group_norm: match c.groups {
                Some(g) => Some(GroupNorm::load(src, &p("group_norm"), g, ch, c.eps)?),
                None => None,
            },
            to_q: Linear::load_with_bias(src, &p("to_q"), ch, ch, c.qkv_bias)?,
            to_k: Linear::load_with_bias(
                src,
                &p("to_k"),
                c.context_dim.unwrap_or(ch),
                ch,
                c.qkv_bias,
            )?,
            to_v: Linear::load_with_bias(
                src,
                &p("to_v"),
                c.context_dim.unwrap_or(ch),
                ch,
                c.qkv_bias,
            )?,
            to_out: Linear::load(src, &p("to_out.0"), ch, ch)?,
            heads: ch / c.head_dim,
            rescale_output_factor: c.rescale_output_factor,
        })
    }

    /// `[B, C, H, W] -> [B, C, H, W]`: `(x + out(softmax(q k^T / sqrt(d)) v)) / rescale`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let normed = match &self.group_norm {
            Some(norm) => norm.forward(x.clone()),
            None => x.clone(),
        };
        // [B, C, H, W] -> [B, HW, C] and back
        let tokens = normed.reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self
            .forward_tokens(tokens, None)
            .swap_dims(1, 2)
            .reshape([b, c, h, w]);
        let out = out + x;
        if self.rescale_output_factor == 1.0 {
            out
        } else {
            out / self.rescale_output_factor
        }
    }

    /// `[B, N, C]` queries attending over `context` `[B, M, context_dim]` (itself when `None`)
    /// -> `[B, N, C]`: `out(softmax(q k^T / sqrt(d)) v)`, no norm, no residual.
    pub fn forward_tokens(&self, x: Tensor<3>, context: Option<Tensor<3>>) -> Tensor<3> {
        let [b, n, c] = x.dims();
        let d = c / self.heads;
        let context = context.unwrap_or_else(|| x.clone());
        let m = context.dims()[1];
        let (q, k, v) = (
            self.to_q.forward(x),
            self.to_k.forward(context.clone()),
            self.to_v.forward(context),
        );
        if cpu::attention_applies(&q, &k, &v, self.heads) {
            return self.to_out.forward(cpu::attention(q, k, v, self.heads));
        }
        let split = |t: Tensor<3>, len: usize| t.reshape([b, len, self.heads, d]).swap_dims(1, 2); // [B, heads, len, d]
        let (q, k, v) = (split(q, n), split(k, m), split(v, m));
        let attn = attend(q, k, v, MAX_SCORE_ELEMS); // [B, heads, N, d]
        self.to_out.forward(attn.swap_dims(1, 2).reshape([b, n, c]))
    }
}

/// `GEGLU` (diffusers `models/activations.py`): `a * gelu(g)` for `[a, g] = proj(x)`.
#[derive(Debug, Clone)]
pub struct Geglu {
    pub proj: Linear,
}

/// `FeedForward(dim, activation_fn="geglu")`: `net.0` (GEGLU to 4 dim), `net.2` (back to dim).
#[derive(Debug, Clone)]
pub struct FeedForward {
    pub geglu: Geglu,
    pub out: Linear,
}

impl FeedForward {
    pub fn load(src: &mut impl TensorSource, prefix: &str, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            geglu: Geglu {
                proj: Linear::load(src, &format!("{prefix}.net.0.proj"), dim, 2 * inner)?,
            },
            out: Linear::load(src, &format!("{prefix}.net.2"), inner, dim)?,
        })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.geglu.proj.forward(x);
        if cpu::geglu_applies(&h) {
            return self.out.forward(cpu::geglu(h));
        }
        let inner = h.dims()[2] / 2;
        let a = h.clone().narrow(2, 0, inner);
        let g = h.narrow(2, inner, inner);
        self.out.forward(a * burn::tensor::activation::gelu(g))
    }
}

/// `BasicTransformerBlock` (diffusers `models/attention.py`, `norm_type="layer_norm"`):
/// self-attention, cross-attention on the context, feed-forward, each pre-normed and residual.
#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff: FeedForward,
}

impl BasicTransformerBlock {
    /// `dim = heads * head_dim`; `context_dim` the width of the cross-attention's context.
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        dim: usize,
        head_dim: usize,
        context_dim: usize,
    ) -> Result<Self> {
        let p = |n: &str| format!("{prefix}.{n}");
        let attn = |context_dim| AttentionConfig {
            channels: dim,
            head_dim,
            context_dim,
            qkv_bias: false,
            groups: None,
            eps: 1e-5,
            rescale_output_factor: 1.0,
        };
        Ok(Self {
            norm1: LayerNorm::load(src, &p("norm1"), dim, 1e-5)?,
            attn1: Attention::load(src, &p("attn1"), attn(None))?,
            norm2: LayerNorm::load(src, &p("norm2"), dim, 1e-5)?,
            attn2: Attention::load(src, &p("attn2"), attn(Some(context_dim)))?,
            norm3: LayerNorm::load(src, &p("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(src, &p("ff"), dim)?,
        })
    }

    /// `x: [B, N, dim]`, `context: [B, M, context_dim]` -> `[B, N, dim]`.
    pub fn forward(&self, x: Tensor<3>, context: &Tensor<3>) -> Tensor<3> {
        let x = self
            .attn1
            .forward_tokens(self.norm1.forward(x.clone()), None)
            + x;
        let x = self
            .attn2
            .forward_tokens(self.norm2.forward(x.clone()), Some(context.clone()))
            + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

/// `softmax(q k^T / sqrt(d)) v` over `[B, heads, N, d]`, materialising at most `max_scores`
/// score elements at once: above that the queries are taken in chunks of rows (each row's
/// softmax only needs its own scores, so the result is the same), so a large image's attention
/// never asks for the whole `[B, heads, N, N]` matrix.
pub fn attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, max_scores: usize) -> Tensor<4> {
    let [b, heads, n, d] = q.dims();
    let scale = 1.0 / (d as f64).sqrt();
    let kt = k.swap_dims(2, 3);
    let rows = (max_scores / (b * heads * n).max(1)).max(1);
    if rows >= n {
        return softmax(q.matmul(kt) * scale, 3).matmul(v);
    }
    let chunks: Vec<Tensor<4>> = (0..n)
        .step_by(rows)
        .map(|start| {
            let len = rows.min(n - start);
            let scores = q.clone().narrow(2, start, len).matmul(kt.clone()) * scale;
            softmax(scores, 3).matmul(v.clone())
        })
        .collect();
    Tensor::cat(chunks, 2)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    #[test]
    fn chunked_attention_equals_whole() {
        let device = Device::flex();
        let shape = [2, 3, 50, 8];
        let q = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let whole = super::attend(q.clone(), k.clone(), v.clone(), usize::MAX);
        // 2 * 3 * 50 = 300 scores per query row: 7 rows per chunk, the last one shorter.
        let chunked = super::attend(q, k, v, 300 * 7);
        let diff: f32 = (whole - chunked).abs().max().into_scalar();
        assert!(diff < 1e-6, "chunked attention differs by {diff}");
    }
}
