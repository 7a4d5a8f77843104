//! The model file: round trips at every quantization level, the error bounds of int8 and int4,
//! and a clear error (never a panic) for every kind of bad input.

mod common;

use burn::tensor::Device;
use common::*;
use wasm_diffusion::convert::{convert_bytes, convert_dir, ConvertOptions};
use wasm_diffusion::models::model_file::ModelFile;
use wasm_diffusion::models::parameter_shapes;
use wasm_diffusion::weights::quant::{
    dequantize_int4, dequantize_int8, quant_error, quantize_int4, quantize_int8,
};
use wasm_diffusion::weights::Quant;
use wasm_diffusion::{load_model, SchedulerConfig, UNet2DConfig};

fn plain_bytes(q: Quant) -> Vec<u8> {
    convert_dir(&unet_dir("plain"), q, &ConvertOptions::default())
        .unwrap()
        .0
}

fn load_err(bytes: &[u8]) -> String {
    load_model(bytes, &Device::flex())
        .expect_err("must be rejected")
        .to_string()
}

/// Deterministic pseudo-random weights with a spread of row magnitudes.
fn weights(rows: usize, k: usize) -> Vec<f32> {
    (0..rows * k)
        .map(|i| {
            ((i as f32 * 0.7311).sin() * 1.3 + (i as f32 * 0.011).cos() * 0.2)
                * (1.0 + (i / k) as f32 * 0.5)
        })
        .collect()
}

#[test]
fn int8_round_trip_error_is_bounded() {
    let (rows, k) = (16, 300);
    let w = weights(rows, k);
    let (q, s) = quantize_int8(&w, rows);
    let r = dequantize_int8(&q, &s);
    // Rounding error is at most half a step: max|row| / 254 per element.
    for (row, (orig, back)) in w.chunks(k).zip(r.chunks(k)).enumerate() {
        let max = orig.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = orig
            .iter()
            .zip(back)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= max / 254.0 * 1.0001,
            "row {row}: {worst} > {}",
            max / 254.0
        );
    }
    let e = quant_error(&w, &r);
    assert!(e.rel_rms < 0.005, "int8 relative RMS {}", e.rel_rms);
}

#[test]
fn int4_round_trip_error_is_bounded_per_group() {
    let (rows, k) = (8, 100); // 100 = 3 full groups of 32 + a padded group of 4
    let w = weights(rows, k);
    let (packed, s) = quantize_int4(&w, rows);
    assert_eq!(packed.len(), rows * 4 * 32 / 2);
    assert_eq!(s.len(), rows * 4);
    let r = dequantize_int4(&packed, &s, rows, k);
    for row in 0..rows {
        for g in 0..4 {
            let lo = row * k + g * 32;
            let hi = (lo + 32).min((row + 1) * k);
            let max = w[lo..hi].iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = (lo..hi).fold(0f32, |m, i| m.max((w[i] - r[i]).abs()));
            assert!(
                worst <= max / 14.0 * 1.0001,
                "row {row} group {g}: {worst} > {}",
                max / 14.0
            );
        }
    }
    let e = quant_error(&w, &r);
    assert!(e.rel_rms < 0.12, "int4 relative RMS {}", e.rel_rms);
}

#[test]
fn every_quantization_loads_and_stays_close_to_f32() {
    let io = std::fs::read(unet_dir("attn").join("io.safetensors")).unwrap();
    let (shape, sample) = read_tensor(&io, "sample");
    let (_, ts) = read_tensor(&io, "timesteps");
    let (_, want) = read_tensor(&io, "output");
    let device = Device::flex();
    let mut sizes = Vec::new();
    for (q, tol) in [
        (Quant::F32, 1e-4),
        (Quant::F16, 5e-3),
        (Quant::Int8, 5e-2),
        (Quant::Int4, 0.5),
    ] {
        let (bytes, report) =
            convert_dir(&unet_dir("attn"), q, &ConvertOptions::default()).unwrap();
        sizes.push(bytes.len());
        let m = load_model(&bytes, &device).unwrap();
        assert_eq!(m.meta.quant, q);
        let out = m
            .unet
            .forward(tensor4(&shape, sample.clone(), &device), &ts, None)
            .unwrap();
        let e = rel_err(&to_vec(out), &want);
        let worst_tensor = report.iter().map(|r| r.error.rel_rms).fold(0f32, f32::max);
        println!(
            "{}: {} bytes, output relative error {e:.3e}, worst tensor rel RMS {worst_tensor:.3e}",
            q.name(),
            bytes.len()
        );
        assert!(
            e < tol,
            "{}: output relative error {e:.3e} > {tol}",
            q.name()
        );
        // 1-D tensors, conv_in and conv_out stay exact.
        for r in &report {
            if r.shape.len() == 1 || r.name == "conv_in.weight" || r.name == "conv_out.weight" {
                assert_eq!(r.stored_as, "f32", "{}", r.name);
                assert_eq!(r.error.max_abs, 0.0, "{}", r.name);
            }
        }
    }
    assert!(
        sizes[1] < sizes[0] && sizes[2] < sizes[1] && sizes[3] < sizes[2],
        "sizes {sizes:?}"
    );
}

#[test]
fn file_is_plain_safetensors_with_metadata() {
    let bytes = plain_bytes(Quant::Int8);
    let f = ModelFile::parse(&bytes).unwrap();
    let md = &f.container.metadata;
    assert_eq!(md["format"], "wasm-diffusion");
    assert_eq!(md["format_version"], "1");
    assert_eq!(md["quantization"], "int8");
    let unet = UNet2DConfig::from_json(&md["unet_config"]).unwrap();
    assert_eq!(unet, f.meta.unet);
    assert!(SchedulerConfig::from_json(&md["scheduler_config"]).is_ok());
    assert!(f.container.get("conv_in.weight").is_some());
    assert!(f
        .container
        .get("down_blocks.0.resnets.0.conv1.weight.scale")
        .is_some());
}

// ---- bad input: each is an error that says what was expected and what was found ----

#[test]
fn truncated_file_is_rejected() {
    let bytes = plain_bytes(Quant::Int8);
    for cut in [0, 4, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let e = load_err(&bytes[..cut]);
        assert!(
            e.contains("expected") && e.contains("found"),
            "cut at {cut}: {e}"
        );
    }
    assert!(load_err(&bytes[..bytes.len() - 1]).contains("data section"));
}

#[test]
fn header_length_past_the_end_is_rejected() {
    let mut bytes = plain_bytes(Quant::F32);
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let e = load_err(&bytes);
    assert!(e.contains("runs past the end of the file"), "{e}");
}

/// Rewrites the JSON header with `edit` (keeping the data section) and returns the new file.
fn with_header(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    out
}

#[test]
fn overlapping_or_out_of_range_offsets_are_rejected() {
    let bytes = plain_bytes(Quant::F32);
    let overlap = with_header(&bytes, |h| {
        // conv_norm_out.bias has the same size as conv_in.bias: point it at the same bytes.
        let o = h["conv_in.bias"]["data_offsets"].clone();
        h["conv_norm_out.bias"]["data_offsets"] = o;
    });
    let e = load_err(&overlap);
    assert!(e.contains("data_offsets") && e.contains("expected"), "{e}");
    let out_of_range = with_header(&bytes, |h| {
        h["conv_in.bias"]["data_offsets"] = serde_json::json!([0, 1u64 << 40]);
    });
    let e = load_err(&out_of_range);
    assert!(e.contains("out of range"), "{e}");
}

#[test]
fn unknown_dtype_is_rejected() {
    let bytes = plain_bytes(Quant::F32);
    let bad = with_header(&bytes, |h| h["conv_in.bias"]["dtype"] = "Q7".into());
    let e = load_err(&bad);
    assert!(
        e.contains("expected dtype") && e.contains("found `Q7`"),
        "{e}"
    );
}

#[test]
fn shape_disagreeing_with_config_is_rejected() {
    let bytes = plain_bytes(Quant::F32);
    // Same byte count, other shape: the container is valid, the config check catches it.
    let bad = with_header(&bytes, |h| {
        let s = h["conv_in.weight"]["shape"].clone();
        let v: Vec<u64> = s
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        h["conv_in.weight"]["shape"] = serde_json::json!([v[1], v[0], v[2], v[3]]);
    });
    let e = load_err(&bad);
    assert!(
        e.contains("conv_in.weight") && e.contains("expected shape"),
        "{e}"
    );
}

#[test]
fn missing_tensor_is_rejected() {
    let bytes = plain_bytes(Quant::F32);
    let bad = with_header(&bytes, |h| {
        let v = h.as_object_mut().unwrap().remove("conv_out.bias").unwrap();
        h["renamed.bias"] = v;
    });
    let e = load_err(&bad);
    assert!(e.contains("conv_out.bias") && e.contains("missing"), "{e}");
}

#[test]
fn absurd_config_sizes_are_rejected() {
    let bytes = plain_bytes(Quant::F32);
    let bad = with_header(&bytes, |h| {
        let mut c: serde_json::Value =
            serde_json::from_str(h["__metadata__"]["unet_config"].as_str().unwrap()).unwrap();
        c["block_out_channels"] = serde_json::json!([1_000_000_000u64, 16]);
        h["__metadata__"]["unet_config"] = c.to_string().into();
    });
    let e = load_err(&bad);
    assert!(
        e.contains("block_out_channels[0]: expected 1 to 8192, found 1000000000"),
        "{e}"
    );
    let e = UNet2DConfig::from_json(r#"{"sample_size": 1000000, "block_out_channels": [32], "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"]}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sample_size"), "{e}");
}

#[test]
fn unsupported_block_type_is_named() {
    let e = UNet2DConfig::from_json(
        r#"{"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("down_block_types[1]") && e.contains("CrossAttnDownBlock2D"),
        "{e}"
    );
    let e = UNet2DConfig::from_json(r#"{"time_embedding_type": "fourier", "block_out_channels": [32], "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"]}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("time_embedding_type") && e.contains("fourier"),
        "{e}"
    );
    let e = UNet2DConfig::from_json(r#"{"frobnicate": 3}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown option `frobnicate`"), "{e}");
    let e = UNet2DConfig::from_json(r#"{"_class_name": "UNet2DConditionModel"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("UNet2DConditionModel"), "{e}");
}

#[test]
fn non_model_files_are_rejected() {
    let e = load_err(b"<html>not found</html>");
    assert!(e.contains("expected") && e.contains("found"), "{e}");
    // A diffusers safetensors file is a valid container but not a model file.
    let diffusers =
        std::fs::read(unet_dir("plain").join("diffusion_pytorch_model.safetensors")).unwrap();
    let e = load_err(&diffusers);
    assert!(
        e.contains("wasm-diffusion convert") || e.contains("metadata"),
        "{e}"
    );
    let e = load_err(&[]);
    assert!(e.contains("at least 8 bytes"), "{e}");
}

#[test]
fn quantized_tensor_without_scales_is_rejected() {
    let bytes = plain_bytes(Quant::Int8);
    let name = "down_blocks.0.resnets.0.conv1.weight.scale";
    let bad = with_header(&bytes, |h| {
        let v = h.as_object_mut().unwrap().remove(name).unwrap();
        h["zz.unrelated"] = v;
    });
    let e = load_err(&bad);
    assert!(e.contains("expected its scales") && e.contains(name), "{e}");
}

#[test]
fn garbage_never_panics() {
    let good = plain_bytes(Quant::Int4);
    // Flip bytes all over the header and the data; every result must be Ok or a clean Err.
    let mut rng = 12345u64;
    for _ in 0..300 {
        let mut b = good.clone();
        for _ in 0..4 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (rng >> 33) as usize % b.len().min(4096);
            b[i] = (rng >> 13) as u8;
        }
        let _ = std::panic::catch_unwind(|| load_model(&b, &Device::flex()))
            .expect("load_model panicked");
    }
}

#[test]
fn converter_rejects_weights_that_do_not_fit_the_config() {
    let dir = unet_dir("plain");
    let config =
        UNet2DConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap())
            .unwrap();
    let weights = std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let mut other = config.clone();
    other.layers_per_block = 2;
    let e = convert_bytes(
        other,
        SchedulerConfig::default(),
        &weights,
        Quant::F32,
        &ConvertOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("expected tensor") && e.contains("missing"),
        "{e}"
    );
    assert!(parameter_shapes(&config).unwrap().len() > 20);
}
