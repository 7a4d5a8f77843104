//! Memory estimates and budgets: before a model is loaded or a run starts, its peak memory is
//! estimated from the config, the image size, the batch and guidance, and refused with a
//! [`MemoryLimit`](crate::error::ErrorKind::MemoryLimit) error above the budget of the device
//! (the wasm32 heap on the CPU; the adapter's buffer limits on WebGPU) instead of trapping or
//! losing the device half-way through a run.
//!
//! This file holds the budgets and the chunking limits every layer shares; each model estimates
//! its own peak beside it (the U-Net: `models::unets::unet_2d_memory`).

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

/// Bytes the weights of `shapes` take where they live in the budget's memory (the CPU backend):
/// f32, except that a 3x3 convolution weight is held as its Winograd transform, 16/9 of its
/// size (`backend::cpu::winograd`; counted for every 3x3 weight, also the stride-2 ones kept as
/// they are, so this is an upper bound).
pub(crate) fn cpu_weight_bytes<'a>(shapes: impl IntoIterator<Item = &'a [usize]>) -> u64 {
    shapes
        .into_iter()
        .map(|s| {
            let n = s.iter().product::<usize>() as u64;
            if s.len() == 4 && s[2] == 3 && s[3] == 3 {
                4 * n / 9 * 16
            } else {
                4 * n
            }
        })
        .sum()
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
