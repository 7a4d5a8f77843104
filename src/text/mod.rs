//! Text conditioning for latent diffusion; mirrors transformers' `models/clip/`.
//!
//! [`tokenizer`] is `tokenization_clip.py`: prompt -> the 77 token ids a Stable Diffusion text
//! encoder reads; [`clip`] is `modeling_clip.py`'s `CLIPTextModel`: ids -> the hidden states the
//! U-Net attends to.

pub mod clip;
pub mod tokenizer;

pub use clip::{CLIPTextConfig, CLIPTextModel, CLIPTextOutput};
pub use tokenizer::{ClipTokenizer, Encoded, Flavor, MAX_LENGTH, MAX_PADDED_LENGTH};
