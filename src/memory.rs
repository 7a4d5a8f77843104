//! Memory estimates and budgets: before a model is loaded or a run starts, its peak memory is
//! estimated from the config, the image size, the batch and guidance, and refused with a
//! [`MemoryLimit`](crate::error::ErrorKind::MemoryLimit) error above the budget of the device
//! (the wasm32 heap on the CPU; the adapter's buffer limits on WebGPU) instead of trapping or
//! losing the device half-way through a run.
//!
//! The estimate follows the U-Net's data flow (`unet_2d.rs`, steps 2-6): the skip connections
//! kept from the down path, the working tensors of the widest resnet (its input, norm, activation
//! and convolution outputs, the concatenated skip in the up path), attention's q/k/v and its score
//! matrix (chunked, see [`MAX_SCORE_ELEMS`]), the CPU convolution's im2col scratch (bounded, see
//! `backend::cpu`), and the sampler's own tensors. `tests/memory.rs` checks it against the peak the
//! allocator actually sees on the CPU backend.

use crate::error::{Error, Result};
use crate::models::unets::UNet2DConfig;

/// Largest attention score block materialised at once, in elements (`batch * heads * rows * N`).
/// Larger attention is computed in query chunks (`model::attention`). 8 Mi elements = 32 MiB.
pub const MAX_SCORE_ELEMS: usize = 1 << 23;

/// Largest im2col patch matrix of the CPU convolution, in elements; larger ones are tiled.
/// 8 Mi elements = 32 MiB.
pub(crate) const MAX_IM2COL_ELEMS: usize = 1 << 23;

/// Most tokens (pixels of one feature map) a spatial attention layer may attend over: 128x128.
/// Its cost grows with the square of the tokens; at 1024x1024 one U-Net call would take hours
/// (the memory is bounded by chunking, the time is not), which a user cannot tell from a hang.
pub const MAX_ATTENTION_TOKENS: usize = 128 * 128;

/// What a device can hold. `total` bounds the estimated peak of weights + activations living in
/// the budget's memory; `largest_buffer` bounds any single tensor (WebGPU's
/// `maxStorageBufferBindingSize` / `maxBufferSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    pub total: u64,
    pub largest_buffer: u64,
    /// What the budget is, for messages ("the wasm32 heap", "WebGPU's maxBufferSize", ...).
    pub what: &'static str,
    /// Whether the model's weights live in this memory (the CPU backend) or elsewhere (GPU).
    pub weights_inside: bool,
}

impl MemoryBudget {
    /// The native CPU: a generous bound that still refuses a config asking for terabytes.
    pub const NATIVE: MemoryBudget = MemoryBudget {
        total: 64 << 30,
        largest_buffer: u64::MAX,
        what: "the native memory budget (64 GiB)",
        weights_inside: true,
    };
}

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

/// Human-readable bytes: "512 KiB", "3.2 GiB".
pub(crate) fn fmt_bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let f = b as f64;
    if f < K * K {
        format!("{:.0} KiB", (f / K).ceil())
    } else if f < K * K * K {
        format!("{:.1} MiB", f / (K * K))
    } else if f < K * K * K * K {
        format!("{:.1} GiB", f / (K * K * K))
    } else {
        format!("{:.1} TiB", f / (K * K * K * K))
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
