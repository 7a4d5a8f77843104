//! Helpers shared by the integration tests: fixture paths, reading fixture tensors, comparing.
#![allow(dead_code)]

pub mod golden;

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use wasm_diffusion::weights::{Container, ContainerSource, Dtype};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

pub fn unet_dir(name: &str) -> PathBuf {
    fixtures().join("unets").join(name)
}

/// A fixture tensor as (shape, f32 values); I64 tensors are converted.
pub fn read_tensor(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f32>) {
    let c = Container::parse(bytes).expect("fixture parses");
    let v = c
        .get(name)
        .unwrap_or_else(|| panic!("fixture tensor {name} missing"));
    let values = match v.dtype {
        Dtype::I64 => v
            .data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        _ => v.to_f32(name).unwrap(),
    };
    (v.shape.clone(), values)
}

pub fn has_tensor(bytes: &[u8], name: &str) -> bool {
    Container::parse(bytes).unwrap().get(name).is_some()
}

pub fn tensor4(shape: &[usize], values: Vec<f32>, device: &Device) -> Tensor<4> {
    let s: [usize; 4] = shape.try_into().expect("rank 4");
    Tensor::from_data(TensorData::new(values, s), device)
}

pub fn to_vec(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

/// max |a - b| / max |b|: the error relative to the reference's scale.
/// Our images (NCHW in [-1, 1]) as diffusers' `output_type="np"` gives them: NHWC in [0, 1],
/// of `shape` `[b, h, w, c]`.
pub fn to_np_image(image: &[f32], shape: &[usize]) -> Vec<f32> {
    let [b, h, w, c] = [shape[0], shape[1], shape[2], shape[3]];
    (0..b * h * w * c)
        .map(|i| {
            let (n, p, ch) = (i / (h * w * c), (i / c) % (h * w), i % c);
            (image[(n * c + ch) * h * w + p] / 2.0 + 0.5).clamp(0.0, 1.0)
        })
        .collect()
}

pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-12);
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
    diff / scale
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()))
}

/// A model saved by diffusers / transformers in `dir` (`config.json`, the safetensors file
/// `weights`), built by `load` from its config text and a source over the weights, on the CPU.
pub fn load_saved<T>(
    dir: &std::path::Path,
    weights: &str,
    load: impl FnOnce(&str, &mut ContainerSource<'_, '_>, &Device) -> T,
) -> T {
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let bytes = std::fs::read(dir.join(weights)).unwrap();
    let container = Container::parse(&bytes).unwrap();
    let device = Device::flex();
    let mut src = ContainerSource {
        container: &container,
        device: device.clone(),
    };
    load(&config, &mut src, &device)
}
