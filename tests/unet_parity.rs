//! U-Net forward parity with diffusers: every fixture model (made by tools/make_fixtures.py)
//! is converted at f32, loaded, run on the CPU backend, and compared block by block.

mod common;

use std::path::Path;

use burn::tensor::Device;
use common::*;
use wasm_diffusion::convert::{convert_dir, ConvertOptions};
use wasm_diffusion::load_model;
use wasm_diffusion::models::unets::Trace;
use wasm_diffusion::weights::Quant;

/// Runs fixture `name` and returns (output rel. error, worst intermediate rel. error).
fn parity(name: &str, device: &Device) -> (f64, f64) {
    let dir = unet_dir(name);
    let (bytes, _) = convert_dir(&dir, Quant::F32, &ConvertOptions::default()).expect("converts");
    let model = load_model(&bytes, device).expect("loads");
    let io = std::fs::read(dir.join("io.safetensors")).unwrap();
    let (s_shape, sample) = read_tensor(&io, "sample");
    let (_, timesteps) = read_tensor(&io, "timesteps");
    let labels: Option<Vec<usize>> = has_tensor(&io, "class_labels").then(|| {
        read_tensor(&io, "class_labels")
            .1
            .iter()
            .map(|&v| v as usize)
            .collect()
    });
    let x = tensor4(&s_shape, sample, device);
    let mut trace = Trace::new();
    let out = model
        .unet
        .forward_traced(x, &timesteps, labels.as_deref(), Some(&mut trace))
        .expect("forward");
    let (_, expected) = read_tensor(&io, "output");
    let out_err = rel_err(&to_vec(out), &expected);
    let mut worst = 0f64;
    for (key, t) in trace {
        let (shape, want) = read_tensor(&io, &key);
        let got = to_vec(t);
        assert_eq!(
            got.len(),
            shape.iter().product::<usize>(),
            "{name}: {key} has the wrong size"
        );
        let e = rel_err(&got, &want);
        assert!(e < 1e-4, "{name}: {key} relative error {e:.3e}");
        worst = worst.max(e);
    }
    (out_err, worst)
}

fn check(name: &str) {
    let (out, inner) = parity(name, &Device::flex());
    println!("{name}: output relative error {out:.3e}, worst block {inner:.3e}");
    assert!(
        out <= 1e-4,
        "{name}: output relative error {out:.3e} > 1e-4"
    );
}

#[test]
fn consistency_model_layout_matches_diffusers() {
    // Resnet up/down-samplers, scale-shift time conditioning, classes, fractional timesteps.
    check("consistency_tiny");
}

#[test]
fn plain_down_up_blocks_match_diffusers() {
    check("plain");
}

#[test]
fn attention_blocks_match_diffusers() {
    check("attn");
}

#[test]
fn class_conditional_three_levels_match_diffusers() {
    check("classcond");
}

#[test]
fn flip_freq_shift_center_input_no_mid_attention_match_diffusers() {
    check("flip");
}

#[test]
fn ddpm_cifar10_layout_matches_diffusers() {
    check("ddpm_cifar_like_tiny");
}

#[test]
fn fixture_dirs_exist() {
    for n in [
        "plain",
        "attn",
        "classcond",
        "flip",
        "ddpm_cifar_like_tiny",
        "consistency_tiny",
    ] {
        assert!(
            Path::new(&unet_dir(n)).join("config.json").is_file(),
            "{n} fixture missing"
        );
    }
}

/// OpenAI's consistency model cd_imagenet64_l2 as diffusers converts it (tests/fixtures/configs):
/// the config loads and names exactly diffusers' 295,899,267 parameters (counted by
/// `UNet2DModel.from_config` on the meta device; no checkpoint is needed).
#[test]
fn real_consistency_model_config_has_diffusers_parameter_count() {
    let text =
        std::fs::read_to_string(common::fixtures().join("configs/cd-imagenet64-l2.json")).unwrap();
    let config = wasm_diffusion::UNet2DConfig::from_json(&text).unwrap();
    assert_eq!(
        wasm_diffusion::models::parameter_count(&config).unwrap(),
        295_899_267
    );
}
