//! The model the demo ships (models/emoji, named by models/index.json): every quantization
//! parses, describes the trained network (classes, null class, 32x32), and predicts the same
//! noise as diffusers' UNet2DModel on the training export (tests/fixtures/shipped, made by
//! tools/make_shipped_fixture.py), within the error its quantization allows.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use common::*;
use wasm_diffusion::load_model;
use wasm_diffusion::models::model_file::ModelFile;
use wasm_diffusion::weights::Quant;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn index() -> serde_json::Value {
    let text =
        std::fs::read_to_string(repo().join("models/index.json")).expect("models/index.json");
    serde_json::from_str(&text).expect("models/index.json is JSON")
}

fn shipped(quant: &str) -> PathBuf {
    repo().join(format!("models/emoji/emoji.{quant}.safetensors"))
}

#[test]
fn index_names_an_existing_model_and_a_usable_guidance() {
    let index = index();
    let default = index["default"].as_str().expect("`default` is a string");
    assert!(
        repo().join("models").join(default).is_file(),
        "models/{default} missing"
    );
    let g = index["guidance"].as_f64().expect("`guidance` is a number");
    assert!(
        (1.0..=20.0).contains(&g),
        "guidance {g} outside the demo's input range"
    );
    let total: u64 = std::fs::read_dir(repo().join("models/emoji"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        total < 40_000_000,
        "models/emoji holds {total} bytes; the budget is 40 MB"
    );
}

#[test]
fn every_quantization_describes_the_trained_model() {
    // The trainer's record of the run: class names in label order, the null class after them.
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("models/emoji/train_info.json")).unwrap(),
    )
    .expect("train_info.json is JSON");
    let classes: Vec<&str> = info["classes"]
        .as_array()
        .expect("`classes` is a list")
        .iter()
        .map(|c| c.as_str().expect("class names are strings"))
        .collect();
    assert_eq!(classes.len(), 8);
    let null_class = info["null_class"].as_u64().expect("`null_class`") as usize;
    for (q, quant) in [
        ("f16", Quant::F16),
        ("int8", Quant::Int8),
        ("int4", Quant::Int4),
    ] {
        let bytes = std::fs::read(shipped(q)).unwrap();
        let file = ModelFile::parse(&bytes).unwrap_or_else(|e| panic!("{q}: {e}"));
        let m = &file.meta;
        assert_eq!(m.quant, quant, "{q}");
        assert_eq!(m.null_class, Some(null_class), "{q}");
        assert_eq!(&m.class_names[..classes.len()], &classes[..], "{q}");
        assert_eq!(m.unet.sample_hw(), Some([32, 32]), "{q}");
        assert_eq!(m.name.as_deref(), Some("emoji-ddpm-32"), "{q}");
    }
}

#[test]
fn shipped_files_predict_what_diffusers_predicts() {
    let io = std::fs::read(repo().join("tests/fixtures/shipped/emoji_io.safetensors")).unwrap();
    let (shape, sample) = read_tensor(&io, "sample");
    let (_, timesteps) = read_tensor(&io, "timesteps");
    let labels: Vec<usize> = read_tensor(&io, "class_labels")
        .1
        .iter()
        .map(|&v| v as usize)
        .collect();
    let (_, expected) = read_tensor(&io, "out");
    let device = Device::flex();
    let mut errs = Vec::new();
    // Bounds: about 4x what was measured when the fixture was made (f16 1.8e-4, int8 5.2e-3,
    // int4 5.8e-2); a file that is not this network is off by order 1.
    for (q, bound) in [("f16", 1e-3), ("int8", 2e-2), ("int4", 0.25)] {
        let model = load_model(&std::fs::read(shipped(q)).unwrap(), &device).expect("loads");
        let out = model
            .unet
            .forward(
                tensor4(&shape, sample.clone(), &device),
                &timesteps,
                Some(&labels),
            )
            .expect("forward");
        let e = rel_err(&to_vec(out), &expected);
        println!("{q}: relative error vs diffusers {e:.3e}");
        assert!(e < bound, "{q}: relative error {e:.3e} >= {bound:e}");
        errs.push(e);
    }
    assert!(
        errs[0] < errs[1] && errs[1] < errs[2],
        "error should grow f16 < int8 < int4: {errs:?}"
    );
}
