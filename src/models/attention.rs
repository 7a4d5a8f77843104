//! The spatial self-attention of `AttnDownBlock2D`, `AttnUpBlock2D` and `UNetMidBlock2D`:
//! diffusers `models/attention_processor.py` (`Attention` with a group norm, residual
//! connection and `AttnProcessor2_0`).

use burn::tensor::activation::softmax;
use burn::tensor::Tensor;

use super::layers::{GroupNorm, Linear};
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
    pub channels: usize,
    pub head_dim: usize,
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
            to_q: Linear::load(src, &p("to_q"), ch, ch)?,
            to_k: Linear::load(src, &p("to_k"), ch, ch)?,
            to_v: Linear::load(src, &p("to_v"), ch, ch)?,
            to_out: Linear::load(src, &p("to_out.0"), ch, ch)?,
            heads: ch / c.head_dim,
            rescale_output_factor: c.rescale_output_factor,
        })
    }

    /// `[B, C, H, W] -> [B, C, H, W]`: `(x + out(softmax(q k^T / sqrt(d)) v)) / rescale`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let n = h * w;
        let d = c / self.heads;
        let normed = match &self.group_norm {
            Some(norm) => norm.forward(x.clone()),
            None => x.clone(),
        };
        // [B, C, H, W] -> [B, HW, C]
        let tokens = normed.reshape([b, c, n]).swap_dims(1, 2);
        let split = |t: Tensor<3>| t.reshape([b, n, self.heads, d]).swap_dims(1, 2); // [B, heads, N, d]
        let q = split(self.to_q.forward(tokens.clone()));
        let k = split(self.to_k.forward(tokens.clone()));
        let v = split(self.to_v.forward(tokens));
        let attn = attend(q, k, v, MAX_SCORE_ELEMS); // [B, heads, N, d]
        let merged = attn.swap_dims(1, 2).reshape([b, n, c]);
        let out = self
            .to_out
            .forward(merged)
            .swap_dims(1, 2)
            .reshape([b, c, h, w]);
        let out = out + x;
        if self.rescale_output_factor == 1.0 {
            out
        } else {
            out / self.rescale_output_factor
        }
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
