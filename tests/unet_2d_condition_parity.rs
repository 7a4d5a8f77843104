//! `UNet2DConditionModel` against diffusers (tests/fixtures/unets_cond, made by
//! tools/make_latent_fixtures.py): random-weight U-Nets in Stable Diffusion 1.x's shape
//! (1x1-conv projections, `attention_head_dim` as the number of heads) and 2.x's (linear
//! projections, heads per level), loaded from diffusers' own safetensors; each block's output
//! and the prediction match diffusers' for the same sample, timesteps and text states.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::{read_tensor, rel_err, tensor4, to_vec};
use wasm_diffusion::models::unets::{UNet2DConditionConfig, UNet2DConditionModel};

fn check(name: &str) {
    let dir = common::fixtures().join("unets_cond").join(name);
    let unet = common::load_saved(
        &dir,
        "diffusion_pytorch_model.safetensors",
        |config, src, device| {
            UNet2DConditionModel::load(
                &UNet2DConditionConfig::from_json(config).unwrap(),
                src,
                device,
            )
            .unwrap()
        },
    );
    let device = Device::flex();
    let io = std::fs::read(dir.join("io.safetensors")).unwrap();
    let (ss, s) = read_tensor(&io, "sample");
    let (_, t) = read_tensor(&io, "timesteps");
    let (cs, c) = read_tensor(&io, "encoder_hidden_states");
    let context = Tensor::<3>::from_data(TensorData::new(c, [cs[0], cs[1], cs[2]]), &device);
    let out = unet
        .forward(tensor4(&ss, s, &device), &t, &context)
        .unwrap();
    let (os, want) = read_tensor(&io, "out");
    assert_eq!(out.dims().to_vec(), os, "{name}: output shape");
    let e = rel_err(&to_vec(out), &want);
    eprintln!("{name}: prediction relative error {e:e}");
    assert!(e < 1e-4, "{name}: prediction relative error {e:e}");
}

#[test]
fn sd1_shaped_unet_matches_diffusers() {
    check("sd1_tiny");
}

#[test]
fn sd2_shaped_unet_matches_diffusers() {
    check("sd2_tiny");
}

#[test]
fn config_refuses_other_families_by_name() {
    let e = UNet2DConditionConfig::from_json(r#"{"addition_embed_type": "text_time"}"#)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "unsupported: addition_embed_type: expected null, found \"text_time\""
    );
    let e = UNet2DConditionConfig::from_json(r#"{"down_block_types": ["CrossAttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"]}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "unsupported: down_block_types[1]: expected `CrossAttnDownBlock2D` or `DownBlock2D`"
        ),
        "{e}"
    );
    let e = UNet2DConditionConfig::from_json(r#"{"attention_head_dim": [8, 8]}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("attention_head_dim: expected one value or 4 (one per block), found 2 values"),
        "{e}"
    );
    // diffusers' defaults are SD 1.x's U-Net.
    let d = UNet2DConditionConfig::from_json("{}").unwrap();
    assert_eq!(d.block_out_channels, vec![320, 640, 1280, 1280]);
    assert_eq!((d.heads(0), d.cross_attention_dim.at(0)), (8, 1280));
}
