//! The text-to-image pipeline against diffusers' `StableDiffusionPipeline`
//! (tests/fixtures/pipelines/sd_tiny, made by tools/make_latent_fixtures.py): a random-weight
//! pipeline folder loaded as diffusers saved it; the prompt embeddings and the image of a
//! 4-step DDIM run with guidance 7.5 from the same latents match.

mod common;

use burn::tensor::Device;
use common::{read_tensor, rel_err, to_vec};
use wasm_diffusion::pipelines::stable_diffusion::{StableDiffusion, TextToImage};
use wasm_diffusion::SchedulerKind;

fn values<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

#[test]
fn text_to_image_matches_diffusers() {
    let dir = common::fixtures().join("pipelines").join("sd_tiny");
    let pipe = StableDiffusion::load_dir(&dir, &Device::flex()).unwrap();
    let io = std::fs::read(dir.join("io.safetensors")).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("io.json")).unwrap()).unwrap();
    let prompt = meta["prompt"].as_str().unwrap();
    let negative = meta["negative_prompt"].as_str().unwrap();

    // 1. prompt embeddings
    for (text, key) in [
        (prompt, "prompt_embeds"),
        (negative, "negative_prompt_embeds"),
    ] {
        let (_, want) = read_tensor(&io, key);
        let e = rel_err(&values(pipe.encode_prompt(text).unwrap()), &want);
        assert!(e < 1e-5, "{key}: relative error {e:e}");
    }

    // 2. the guided run from diffusers' latents, decoded
    let (_, latents) = read_tensor(&io, "latents");
    let opts = TextToImage {
        prompt: prompt.into(),
        negative_prompt: negative.into(),
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
    let (h, w) = (s[1], s[2]);
    let got: Vec<f32> = (0..h * w * 3)
        .map(|i| {
            let (p, c) = (i / 3, i % 3);
            (image[c * h * w + p] / 2.0 + 0.5).clamp(0.0, 1.0)
        })
        .collect();
    let e = rel_err(&got, &want);
    eprintln!("sd_tiny image: relative error {e:e}");
    assert!(e < 1e-4, "image: relative error {e:e}");
}

#[test]
fn a_folder_that_is_not_a_pipeline_is_refused() {
    let dir = common::fixtures().join("unets_cond").join("sd1_tiny");
    let e = StableDiffusion::load_dir(&dir, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model_index.json") && e.contains("expected a readable file"),
        "{e}"
    );
}
