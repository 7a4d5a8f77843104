//! `AutoencoderKL` against diffusers (tests/fixtures/autoencoders/kl_tiny, made by
//! tools/make_latent_fixtures.py): the same random weights loaded from diffusers' own
//! safetensors file give the encoder's moments, the posterior's mode and the decoding of a
//! latent that diffusers computed, on the CPU backend.

mod common;

use burn::tensor::Device;
use common::{read_tensor, rel_err, tensor4, to_vec};
use wasm_diffusion::models::autoencoders::{AutoencoderKL, AutoencoderKLConfig};

fn load() -> (AutoencoderKL, Vec<u8>) {
    let dir = common::fixtures().join("autoencoders").join("kl_tiny");
    let vae = common::load_saved(
        &dir,
        "diffusion_pytorch_model.safetensors",
        |config, src, device| {
            AutoencoderKL::load(
                &AutoencoderKLConfig::from_json(config).unwrap(),
                src,
                device,
            )
            .unwrap()
        },
    );
    (vae, std::fs::read(dir.join("io.safetensors")).unwrap())
}

#[test]
fn config_reads_diffusers_and_refuses_what_it_cannot_run() {
    let (vae, _) = load();
    assert_eq!(vae.config.latent_channels, 4);
    assert_eq!(vae.config.downscale_factor(), 2);
    assert_eq!(vae.config.scaling_factor, 0.18215);
    let e = AutoencoderKLConfig::from_json(r#"{"down_block_types": ["DownBlock2D"]}"#)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "unsupported: down_block_types[0]: expected `DownEncoderBlock2D`, found `DownBlock2D`"
    );
    let e = AutoencoderKLConfig::from_json(r#"{"block_out_channels": [64, 128]}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("down_block_types has 1 entries but block_out_channels has 2"),
        "{e}"
    );
    let e = AutoencoderKLConfig::from_json(r#"{"_class_name": "VQModel"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("expected `AutoencoderKL`, found `VQModel`"),
        "{e}"
    );
}

#[test]
fn encode_and_decode_match_diffusers() {
    let (vae, io) = load();
    let device = Device::flex();
    let (xs, x) = read_tensor(&io, "x");
    let x = tensor4(&xs, x, &device);
    let posterior = vae.encode(x);
    let (_, want_moments) = read_tensor(&io, "moments");
    let got_moments = to_vec(burn::tensor::Tensor::cat(
        vec![posterior.mean.clone(), posterior.logvar.clone()],
        1,
    ));
    let e = rel_err(&got_moments, &want_moments);
    assert!(e < 1e-5, "encoder moments: relative error {e:e}");
    let (_, want_mean) = read_tensor(&io, "mean");
    let e = rel_err(&to_vec(posterior.mode()), &want_mean);
    assert!(e < 1e-5, "posterior mode: relative error {e:e}");

    let (zs, z) = read_tensor(&io, "z");
    let decoded = vae.decode(tensor4(&zs, z, &device));
    let (ds, want) = read_tensor(&io, "decoded");
    assert_eq!(decoded.dims().to_vec(), ds);
    let e = rel_err(&to_vec(decoded), &want);
    assert!(e < 1e-5, "decoded image: relative error {e:e}");
}

#[test]
fn sampling_the_posterior_adds_scaled_noise() {
    let (vae, io) = load();
    let device = Device::flex();
    let (xs, x) = read_tensor(&io, "x");
    let posterior = vae.encode(tensor4(&xs, x, &device));
    let zero = posterior.mean.clone().zeros_like();
    // Zero noise gives the mode; unit noise the mean plus the standard deviation.
    assert_eq!(
        to_vec(posterior.sample(zero.clone())),
        to_vec(posterior.mode())
    );
    let one = zero + 1.0;
    let std = to_vec((posterior.logvar.clone() * 0.5).exp());
    let got = to_vec(posterior.sample(one));
    let mean = to_vec(posterior.mode());
    for ((g, m), s) in got.iter().zip(&mean).zip(&std) {
        assert!((g - (m + s)).abs() <= 1e-5 * (1.0 + g.abs()));
    }
}
