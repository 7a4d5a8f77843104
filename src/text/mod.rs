//! Text conditioning for latent diffusion; mirrors transformers' `models/clip/`.
//!
//! [`tokenizer`] is `tokenization_clip.py`: prompt -> the 77 token ids a Stable Diffusion text
//! encoder reads.

pub mod tokenizer;

pub use tokenizer::{ClipTokenizer, Encoded, Flavor, MAX_LENGTH, MAX_PADDED_LENGTH};
