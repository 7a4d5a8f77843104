//! `AutoencoderTiny` (TAESD's architecture) against diffusers (tests/fixtures/autoencoders/
//! taesd_tiny, made by tools/make_latent_fixtures.py): encoding an image and decoding a latent
//! match diffusers' on the same random weights.

mod common;

use burn::tensor::Device;
use common::{read_tensor, rel_err, tensor4, to_vec};
use wasm_diffusion::models::autoencoders::{AutoencoderTiny, AutoencoderTinyConfig};

#[test]
fn encode_and_decode_match_diffusers() {
    let dir = common::fixtures().join("autoencoders").join("taesd_tiny");
    let vae = common::load_saved(
        &dir,
        "diffusion_pytorch_model.safetensors",
        |config, src, device| {
            AutoencoderTiny::load(
                &AutoencoderTinyConfig::from_json(config).unwrap(),
                src,
                device,
            )
            .unwrap()
        },
    );
    let device = Device::flex();
    let io = std::fs::read(dir.join("io.safetensors")).unwrap();
    let (xs, x) = read_tensor(&io, "x");
    let (_, want) = read_tensor(&io, "latents");
    let e = rel_err(&to_vec(vae.encode(tensor4(&xs, x, &device))), &want);
    assert!(e < 1e-5, "latents: relative error {e:e}");
    let (zs, z) = read_tensor(&io, "z");
    let (_, want) = read_tensor(&io, "decoded");
    let e = rel_err(&to_vec(vae.decode(tensor4(&zs, z, &device))), &want);
    assert!(e < 1e-5, "decoded: relative error {e:e}");
}

#[test]
fn config_refuses_what_it_cannot_run() {
    let e = AutoencoderTinyConfig::from_json(r#"{"act_fn": "gelu"}"#)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "unsupported: act_fn: expected `relu`, found `gelu`");
    let e = AutoencoderTinyConfig::from_json(r#"{"encoder_block_out_channels": [8, 16, 16, 16]}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected one width"), "{e}");
    // TAESD's own config is diffusers' default.
    let d = AutoencoderTinyConfig::from_json("{}").unwrap();
    assert_eq!(d.num_decoder_blocks, vec![3, 3, 3, 1]);
}
