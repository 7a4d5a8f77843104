//! `VQModel` against diffusers (tests/fixtures/autoencoders/vq_tiny, made by
//! tools/make_latent_fixtures.py --only ldm): the same random weights loaded from diffusers' own
//! safetensors file give the pre-quantization latents, the codebook indices (exactly: the image
//! was chosen so that every nearest entry wins by a clear margin), the quantized latents, the
//! commitment loss and both decodings that diffusers computed, on the CPU backend. Measured
//! relative errors: encode 5.1e-7, quantized latents 4.5e-8, decode 1.5e-6 (quantized) and
//! 1.9e-6 (force_not_quantize).

mod common;

use burn::tensor::{Device, Tensor};
use common::{read_tensor, rel_err, tensor4, to_vec};
use wasm_diffusion::models::autoencoders::{VQModel, VQModelConfig};

fn load() -> (VQModel, Vec<u8>) {
    let dir = common::fixtures().join("autoencoders").join("vq_tiny");
    let vq = common::load_saved(
        &dir,
        "diffusion_pytorch_model.safetensors",
        |config, src, device| {
            VQModel::load(&VQModelConfig::from_json(config).unwrap(), src, device).unwrap()
        },
    );
    (vq, std::fs::read(dir.join("io.safetensors")).unwrap())
}

fn indices_of(t: Tensor<3, burn::tensor::Int>) -> Vec<i64> {
    t.into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .unwrap()
}

#[test]
fn config_reads_diffusers() {
    let (vq, _) = load();
    let c = &vq.config;
    assert_eq!(
        (c.latent_channels, c.embed_dim(), c.num_vq_embeddings),
        (3, 4, 64)
    );
    assert_eq!(c.scaling_factor, 0.5);
    assert!(!c.force_upcast);
    assert_eq!(c.downscale_factor(), 2);
    // diffusers' defaults: the codebook as wide as the latents.
    let d = VQModelConfig::from_json("{}").unwrap();
    assert_eq!((d.embed_dim(), d.scaling_factor), (3, 0.18215));
}

#[test]
fn unsupported_options_are_refused_naming_expected_and_found() {
    for (json, want) in [
        (
            r#"{"norm_type": "spatial"}"#,
            "unsupported: norm_type: expected `group`, found `spatial`",
        ),
        (
            r#"{"lookup_from_codebook": true}"#,
            "unsupported: lookup_from_codebook: expected false (decode quantizes its input), found true (decoding codebook indices)",
        ),
        (
            r#"{"down_block_types": ["DownBlock2D"]}"#,
            "unsupported: down_block_types[0]: expected `DownEncoderBlock2D`, found `DownBlock2D`",
        ),
        (
            r#"{"num_vq_embeddings": 0}"#,
            "invalid config: num_vq_embeddings: expected 1 to 1048576, found 0",
        ),
        (
            r#"{"vq_embed_dim": 0}"#,
            "invalid config: vq_embed_dim: expected 1 to 8192, found 0",
        ),
        (
            r#"{"_class_name": "AutoencoderKL"}"#,
            "unsupported: VQModel config `_class_name`: expected `VQModel`, found `AutoencoderKL`",
        ),
        (
            r#"{"legacy": false}"#,
            "unsupported: VQModel config: unknown option `legacy`",
        ),
    ] {
        let e = VQModelConfig::from_json(json).unwrap_err().to_string();
        assert!(e.starts_with(want), "{json}: {e}");
    }
}

#[test]
fn encode_quantize_and_decode_match_diffusers() {
    let (vq, io) = load();
    let device = Device::flex();
    let (xs, x) = read_tensor(&io, "x");

    // 1. encode: the latents before quantization
    let h = vq.encode(tensor4(&xs, x, &device));
    let (hs, want_h) = read_tensor(&io, "h");
    assert_eq!(h.dims().to_vec(), hs);
    let e = rel_err(&to_vec(h.clone()), &want_h);
    eprintln!("vq_tiny encode: relative error {e:e}");
    assert!(e < 1e-5, "encode: relative error {e:e}");

    // 2. quantize: the same codebook entries, exactly
    let q = vq.quantize(h.clone());
    let (is, want_idx) = read_tensor(&io, "indices");
    assert_eq!(q.indices.dims().to_vec(), is);
    let got_idx = indices_of(q.indices.clone());
    let want_idx: Vec<i64> = want_idx.iter().map(|&v| v as i64).collect();
    assert_eq!(got_idx, want_idx, "codebook indices");
    let (_, want_quant) = read_tensor(&io, "quant");
    let e = rel_err(&to_vec(q.quant.clone()), &want_quant);
    eprintln!("vq_tiny quant: relative error {e:e}");
    assert!(e < 1e-5, "quantized latents: relative error {e:e}");
    let (_, want_loss) = read_tensor(&io, "commit_loss");
    let loss = q.loss.into_data().try_into_vec::<f32>().unwrap();
    let e = rel_err(&loss, &want_loss);
    assert!(e < 1e-4, "commit loss {loss:?} vs {want_loss:?}");
    // The entries are the codebook's rows at those indices.
    let rows = to_vec(vq.quantize.get_codebook_entry(q.indices));
    assert!(rel_err(&rows, &want_quant) < 1e-5);

    // 3. decode: quantized first, and with force_not_quantize
    for (force, key) in [(false, "decoded"), (true, "decoded_unquantized")] {
        let out = vq.decode(h.clone(), force);
        let (ds, want) = read_tensor(&io, key);
        assert_eq!(out.sample.dims().to_vec(), ds);
        let e = rel_err(&to_vec(out.sample), &want);
        eprintln!("vq_tiny {key}: relative error {e:e}");
        assert!(e < 1e-4, "{key}: relative error {e:e}");
        let loss_len = out.commit_loss.dims()[0];
        assert_eq!(loss_len, if force { 2 } else { 1 });
    }
}

#[test]
fn quantizing_a_codebook_entry_gives_it_back() {
    let (vq, _) = load();
    let device = Device::flex();
    // Every codebook row as a 1x1 latent: each is its own nearest entry, so the indices run
    // 0..64 and the quantized latents equal the input.
    let e = vq.quantize.embedding.clone(); // [64, 4]
    let [k, c] = e.dims();
    let z: Tensor<4> = e.clone().reshape([k, 1, 1, c]).permute([0, 3, 1, 2]);
    let q = vq.quantize(z.clone().to_device(&device));
    assert_eq!(indices_of(q.indices), (0..k as i64).collect::<Vec<_>>());
    assert_eq!(to_vec(q.quant), to_vec(z));
    let loss = q.loss.into_data().try_into_vec::<f32>().unwrap();
    assert_eq!(loss, vec![0.0]);
}
