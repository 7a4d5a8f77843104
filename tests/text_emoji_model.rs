//! The text-to-emoji pipeline in models/text-emoji (trained by tools/train_text_emoji.py): the
//! shipped int8 file loads as the trained architecture (the real 49,408-token CLIP vocabulary,
//! 64x64 images from 16x16x4 latents), and a whole guided DDIM run from fixed latents gives
//! diffusers' prompt embeddings and image (tests/fixtures/shipped/text_emoji_io.*, made by
//! tools/make_text_emoji_fixture.py).
//!
//! The fixture holds two diffusers runs: one on the file's own weights dequantized in Python
//! (int8 * scale, f16 -> f32), which this file's run must match up to float rounding, and one on
//! the f32 training export, which bounds what int8 storage costs.

mod common;

use std::path::Path;

use burn::tensor::Device;
use common::{read_tensor, rel_err, to_vec};
use wasm_diffusion::pipelines::stable_diffusion::{StableDiffusion, TextToImage};
use wasm_diffusion::SchedulerKind;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load() -> StableDiffusion {
    let bytes = std::fs::read(repo().join("models/text-emoji/text-emoji.int8.safetensors"))
        .expect("models/text-emoji/text-emoji.int8.safetensors");
    StableDiffusion::load_file(&bytes, &Device::flex()).expect("the shipped file loads")
}

fn mean_abs(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn the_shipped_file_is_the_trained_architecture_within_budget() {
    let pipe = load();
    let te = &pipe.text_encoder.config;
    assert_eq!(te.vocab_size, 49408, "the real CLIP vocabulary");
    assert_eq!(te.max_position_embeddings, 77);
    assert_eq!(pipe.latent_shape(None, None).unwrap(), [4, 16, 16]);
    let total: u64 = std::fs::read_dir(repo().join("models/text-emoji"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        total < 40_000_000,
        "models/text-emoji holds {total} bytes; the budget is 40 MB"
    );
}

#[test]
fn a_guided_run_matches_diffusers_on_the_same_weights() {
    let pipe = load();
    let io = std::fs::read(repo().join("tests/fixtures/shipped/text_emoji_io.safetensors"))
        .expect("fixture");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/shipped/text_emoji_io.json")).unwrap(),
    )
    .unwrap();
    let prompt = meta["prompt"].as_str().unwrap();

    // 1. prompt embeddings: the dequantized weights exactly, the f32 export within int8's error
    let got = pipe.encode_prompt(prompt).unwrap();
    let got = got.into_data().try_into_vec::<f32>().unwrap();
    let (_, want) = read_tensor(&io, "prompt_embeds");
    let e = rel_err(&got, &want);
    eprintln!("prompt_embeds: relative error {e:e}");
    assert!(e < 1e-4, "prompt_embeds: relative error {e:e}");
    let (_, want) = read_tensor(&io, "negative_prompt_embeds");
    let empty = pipe.encode_prompt("").unwrap();
    let e = rel_err(&empty.into_data().try_into_vec::<f32>().unwrap(), &want);
    assert!(e < 1e-4, "negative_prompt_embeds: relative error {e:e}");
    let (_, want_f32) = read_tensor(&io, "prompt_embeds_f32");
    let e32 = rel_err(&got, &want_f32);
    eprintln!("prompt_embeds vs the f32 export: relative error {e32:e}");
    // measured 1.5e-3 when the fixture was made (step 2,523); the bound is about 6x that
    assert!(e32 < 1e-2, "prompt_embeds vs f32: relative error {e32:e}");

    // 2. the guided DDIM run from diffusers' latents, decoded
    let (_, latents) = read_tensor(&io, "latents");
    let opts = TextToImage {
        prompt: prompt.into(),
        negative_prompt: meta["negative_prompt"].as_str().unwrap().into(),
        steps: meta["num_inference_steps"].as_u64().unwrap() as usize,
        guidance_scale: meta["guidance_scale"].as_f64().unwrap(),
        scheduler: SchedulerKind::Ddim,
        latents: Some(latents),
        ..TextToImage::default()
    };
    let mut run = pipe.start(&opts).unwrap();
    while !run.is_done() {
        run.step().unwrap();
    }
    let image = to_vec(run.decode()); // [1, 3, H, W] in [-1, 1]
    let (s, want) = read_tensor(&io, "image"); // [1, H, W, 3] in [0, 1]
    let got = common::to_np_image(&image, &s);
    let e = rel_err(&got, &want);
    eprintln!("image: relative error {e:e}");
    assert!(e < 1e-3, "image: relative error {e:e}");
    let (_, want_f32) = read_tensor(&io, "image_f32");
    let (e32, m32) = (rel_err(&got, &want_f32), mean_abs(&got, &want_f32));
    eprintln!("image vs the f32 export: max {e32:e}, mean {m32:e}");
    // measured max 1.6e-2, mean 1.7e-3 when the fixture was made; bounds about 5x that
    assert!(
        e32 < 0.08 && m32 < 0.008,
        "image vs f32: max {e32:e}, mean {m32:e}"
    );
}
