//! `CLIPTextModel` against transformers (tests/fixtures/text_encoders, made by
//! tools/make_latent_fixtures.py): random-weight encoders with SD 1.x's activation (quick_gelu)
//! and SD 2.x's (gelu), saved by transformers 5.x (no `text_model.` prefix); the last hidden
//! state, the pooled output and the penultimate layer (diffusers' `clip_skip=1`) match.

mod common;

use burn::tensor::{Device, Tensor};
use common::read_tensor;
use wasm_diffusion::text::clip::state_dict_prefix;
use wasm_diffusion::text::{CLIPTextConfig, CLIPTextModel};
use wasm_diffusion::weights::{Container, ContainerSource};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

fn check(name: &str) {
    let dir = common::fixtures().join("text_encoders").join(name);
    let config =
        CLIPTextConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap())
            .unwrap();
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let container = Container::parse(&weights).unwrap();
    let device = Device::flex();
    let prefix = state_dict_prefix(&container);
    let mut src = ContainerSource {
        container: &container,
        device: device.clone(),
    };
    let model = CLIPTextModel::load(&config, &mut src, prefix, &device).unwrap();
    let io = std::fs::read(dir.join("io.safetensors")).unwrap();
    let (s, ids) = read_tensor(&io, "input_ids");
    let ids: Vec<Vec<u32>> = ids
        .chunks(s[1])
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect();
    let out = model.forward(&ids).unwrap();
    for (got, key) in [
        (values(out.last_hidden_state), "last_hidden_state"),
        (values(out.pooler_output), "pooler_output"),
    ] {
        let (_, want) = read_tensor(&io, key);
        let e = common::rel_err(&got, &want);
        assert!(e < 1e-5, "{name} {key}: relative error {e:e}");
    }
    // clip_skip = 1: the penultimate layer, through the final layer norm (as diffusers).
    let skipped = model.forward_skip(&ids, 1).unwrap();
    let (_, penultimate) = read_tensor(&io, "penultimate_hidden_state");
    let want = values(model.final_layer_norm.forward(Tensor::from_data(
        burn::tensor::TensorData::new(penultimate, [2, 77, config.hidden_size]),
        &device,
    )));
    let e = common::rel_err(&values(skipped.last_hidden_state), &want);
    assert!(e < 1e-5, "{name} clip_skip 1: relative error {e:e}");
}

#[test]
fn sd1_style_encoder_matches_transformers() {
    check("clip_quick_gelu");
}

#[test]
fn sd2_style_encoder_matches_transformers() {
    check("clip_gelu");
}

#[test]
fn bad_ids_and_configs_are_clear_errors() {
    let dir = common::fixtures().join("text_encoders").join("clip_gelu");
    let model = common::load_saved(&dir, "model.safetensors", |config, src, device| {
        CLIPTextModel::load(&CLIPTextConfig::from_json(config).unwrap(), src, "", device).unwrap()
    });
    let e = model.forward(&[vec![5, 1000]]).unwrap_err().message;
    assert_eq!(
        e,
        "token ids: expected ids below the vocabulary size 1000, found 1000"
    );
    let e = model.forward(&[vec![1; 78]]).unwrap_err().message;
    assert_eq!(
        e,
        "token ids: expected 1 or more sequences of 1 to 77 tokens, found 1 of 78"
    );
    let e = model.forward(&[vec![1, 2], vec![1]]).unwrap_err().message;
    assert_eq!(
        e,
        "token ids: expected sequences of equal length 2, found one of 1"
    );
    let e = model.forward_skip(&[vec![1]], 2).unwrap_err().message;
    assert_eq!(e, "clip_skip: expected 0 to 1, found 2");
    let e = CLIPTextConfig::from_json(r#"{"hidden_act": "relu"}"#)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "unsupported: hidden_act: expected `quick_gelu` or `gelu`, found `relu`"
    );
    let e = CLIPTextConfig::from_json(r#"{"model_type": "clip_vision_model"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("expected `clip_text_model`, found `clip_vision_model`"),
        "{e}"
    );
}
