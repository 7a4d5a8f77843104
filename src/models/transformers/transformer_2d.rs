//! `Transformer2DModel` with continuous input: diffusers `models/transformers/transformer_2d.py`.
//! A feature map becomes tokens (GroupNorm, then a 1x1 conv or, with `use_linear_projection`,
//! a linear layer), goes through `BasicTransformerBlock`s that attend to the context (the text
//! states), and comes back as a feature map added to its input.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::models::attention::BasicTransformerBlock;
use crate::models::layers::{Conv2d, Conv2dConfig, GroupNorm, Linear};
use crate::weights::TensorSource;

/// What a [`Transformer2DModel`] is made of.
#[derive(Debug, Clone, Copy)]
pub struct Transformer2DConfig {
    /// Channels in and out (= heads * head_dim in the U-Nets).
    pub channels: usize,
    pub heads: usize,
    pub context_dim: usize,
    pub num_layers: usize,
    pub norm_num_groups: usize,
    /// SD 2.x: linear `proj_in` / `proj_out` instead of 1x1 convolutions.
    pub use_linear_projection: bool,
}

/// `proj_in` / `proj_out`: a 1x1 convolution on the map, or a linear layer on the tokens.
#[derive(Debug, Clone)]
pub enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn load(src: &mut impl TensorSource, prefix: &str, c: usize, linear: bool) -> Result<Self> {
        Ok(if linear {
            Projection::Linear(Linear::load(src, prefix, c, c)?)
        } else {
            Projection::Conv(Conv2d::load(src, prefix, Conv2dConfig::same(c, c, 1))?)
        })
    }
}

#[derive(Debug, Clone)]
pub struct Transformer2DModel {
    pub norm: GroupNorm,
    pub proj_in: Projection,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    pub proj_out: Projection,
}

impl Transformer2DModel {
    pub fn load(src: &mut impl TensorSource, prefix: &str, c: Transformer2DConfig) -> Result<Self> {
        let p = |n: &str| format!("{prefix}.{n}");
        let ch = c.channels;
        let transformer_blocks = (0..c.num_layers)
            .map(|i| {
                let block = p(&format!("transformer_blocks.{i}"));
                BasicTransformerBlock::load(src, &block, ch, ch / c.heads, c.context_dim)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::load(src, &p("norm"), c.norm_num_groups, ch, 1e-6)?,
            proj_in: Projection::load(src, &p("proj_in"), ch, c.use_linear_projection)?,
            transformer_blocks,
            proj_out: Projection::load(src, &p("proj_out"), ch, c.use_linear_projection)?,
        })
    }

    /// `x: [B, C, H, W]`, `context: [B, M, context_dim]` -> `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>, context: &Tensor<3>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let to_tokens = |t: Tensor<4>| t.reshape([b, c, h * w]).swap_dims(1, 2);
        let to_map = |t: Tensor<3>| t.swap_dims(1, 2).reshape([b, c, h, w]);
        // 1. input: norm, projection, tokens [B, HW, C]
        let normed = self.norm.forward(x.clone());
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(normed)),
            Projection::Linear(linear) => linear.forward(to_tokens(normed)),
        };
        // 2. blocks
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, context);
        }
        // 3. output: projection back to the map, plus the input
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(to_map(tokens)),
            Projection::Linear(linear) => to_map(linear.forward(tokens)),
        };
        out + x
    }
}
