//! The peak memory of a `UNet2DModel` run, estimated from its config before anything is
//! allocated, and the check against a [`MemoryBudget`].
//!
//! The estimate follows the U-Net's data flow (`unet_2d.rs`, steps 2-6): the skip connections
//! kept from the down path, the working tensors of the widest resnet (its input, norm, activation
//! and convolution outputs, the concatenated skip in the up path), attention's q/k/v and its score
//! matrix (chunked, see [`MAX_SCORE_ELEMS`]), the CPU convolution's im2col scratch (bounded, see
//! `backend::cpu`), and the sampler's own tensors. `tests/memory.rs` checks it against the peak the
//! allocator actually sees on the CPU backend.

use super::UNet2DConfig;
use crate::error::{Error, Result};
use crate::memory::{
    fmt_bytes, MemoryBudget, MAX_ATTENTION_TOKENS, MAX_IM2COL_ELEMS, MAX_SCORE_ELEMS,
};

/// The estimated peak of one U-Net evaluation plus the sampler's tensors, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEstimate {
    /// Images per U-Net call (the batch, doubled by classifier-free guidance).
    pub unet_batch: usize,
    pub activations: u64,
    pub attention: u64,
    /// CPU im2col scratch (0 on the GPU).
    pub scratch: u64,
    /// Largest single tensor.
    pub largest_buffer: u64,
    /// Tokens of the largest attention layer (`H x W` of its feature map; 0 without attention).
    pub attention_tokens: usize,
}

impl RunEstimate {
    pub fn total(&self) -> u64 {
        self.activations + self.attention + self.scratch
    }
}

fn ceil_half(x: usize) -> usize {
    x.div_ceil(2)
}

/// Estimates the peak memory of sampling `batch` images of `hw` (guided: two U-Net branches).
/// `cpu` adds the CPU convolution's im2col scratch. The config must be validated.
pub fn estimate_run(
    config: &UNet2DConfig,
    hw: [usize; 2],
    batch: usize,
    guided: bool,
    cpu: bool,
) -> RunEstimate {
    let ch = &config.block_out_channels;
    let n = ch.len();
    let lpb = config.layers_per_block as u64;
    let ub = (batch * if guided { 2 } else { 1 }) as u64;
    let [mut h, mut w] = hw;
    let mut skips: u64 = (ch[0] * h * w) as u64; // conv_in output
    let mut working: u64 = 0;
    let mut largest: u64 = 0;
    let mut attention: u64 = 0;
    let mut scratch: u64 = 0;
    let mut attention_tokens = 0;
    for (i, &c) in ch.iter().enumerate() {
        let area = (h * w) as u64;
        let c = c as u64;
        // Down path: each resnet's output is kept as a skip, plus the downsampled one.
        skips += lpb * c * area;
        // Up path at this level: input = previous level's channels + the skip, up to 2 * c_max
        // of the neighbours; the resnet holds its input, norm+act, conv1, conv2, shortcut.
        let c_prev = ch.get(i + 1).copied().unwrap_or(ch[i]) as u64;
        let c_in = c.max(c_prev) + c;
        working = working.max((2 * c_in + 3 * c) * area);
        largest = largest.max(c_in * area);
        if cpu {
            // im2col of a 3x3 conv on c_in channels, one image at a time, tiled (backend::cpu).
            scratch = scratch.max(((9 * c_in * area) as usize).min(MAX_IM2COL_ELEMS) as u64);
        }
        let attn_here = config.level_has_attention(i);
        if attn_here {
            attention_tokens = attention_tokens.max(h * w);
            let head_dim = config.attention_head_dim.unwrap_or(c as usize).max(1) as u64;
            let heads = (c / head_dim).max(1);
            let scores = ub * heads * area * area;
            let scores = scores.min((MAX_SCORE_ELEMS as u64).max(ub * heads * area));
            // normed tokens, q, k, v, merged, out (per image) + the score block and its softmax.
            attention = attention.max(6 * ub * c * area + 2 * scores);
            largest = largest.max(scores);
        }
        if i + 1 < n {
            h = ceil_half(h);
            w = ceil_half(w);
            skips += c * (h * w) as u64;
        }
    }
    // The sampler keeps x_t, x_0, the model output (and its guided halves) and the noise.
    let image = (config.in_channels.max(config.out_channels) * hw[0] * hw[1]) as u64;
    let sampler = 8 * ub * image;
    RunEstimate {
        unet_batch: ub as usize,
        activations: 4 * (ub * (skips + working) + sampler),
        attention: 4 * attention,
        scratch: 4 * scratch,
        largest_buffer: 4 * (ub * largest).max(largest),
        attention_tokens,
    }
}

/// Checks a run against `budget`, where `resident` bytes (the weights, when they live in the
/// budget's memory) are already taken. The error names the estimate, the budget and the largest
/// batch that would fit.
pub fn check_run(
    config: &UNet2DConfig,
    hw: [usize; 2],
    batch: usize,
    guided: bool,
    resident: u64,
    budget: &MemoryBudget,
    cpu: bool,
) -> Result<RunEstimate> {
    let est = estimate_run(config, hw, batch, guided, cpu);
    if est.attention_tokens > MAX_ATTENTION_TOKENS {
        let [h, w] = hw;
        return Err(Error::unsupported(format!(
            "sampling {h}x{w} images: attention over {} tokens, expected at most {MAX_ATTENTION_TOKENS} (a 128x128 feature map): one step would take hours",
            est.attention_tokens
        )));
    }
    let fits = |e: &RunEstimate| {
        resident.saturating_add(e.total()) <= budget.total
            && e.largest_buffer <= budget.largest_buffer
    };
    if fits(&est) {
        return Ok(est);
    }
    let max_batch = (1..batch)
        .rev()
        .find(|&b| fits(&estimate_run(config, hw, b, guided, cpu)));
    let advice = match max_batch {
        Some(b) => format!("use a batch of at most {b}"),
        None if guided => {
            "even one image does not fit, with or without guidance at this size".to_string()
        }
        None => "even one image does not fit at this size".to_string(),
    };
    let [h, w] = hw;
    let what = if est.largest_buffer > budget.largest_buffer {
        format!(
            "its largest tensor needs an estimated {}, above {} ({})",
            fmt_bytes(est.largest_buffer),
            fmt_bytes(budget.largest_buffer),
            budget.what
        )
    } else {
        format!(
            "it needs an estimated {} (activations {}, attention {}, scratch {}{}), above {} ({})",
            fmt_bytes(resident + est.total()),
            fmt_bytes(est.activations),
            fmt_bytes(est.attention),
            fmt_bytes(est.scratch),
            if resident > 0 {
                format!(", weights {}", fmt_bytes(resident))
            } else {
                String::new()
            },
            fmt_bytes(budget.total),
            budget.what
        )
    };
    Err(Error::memory(format!(
        "sampling {batch} image(s) of {h}x{w}{}: {what}; {advice}",
        if guided { " with guidance" } else { "" }
    )))
}
