//! Reading the scheduler golden fixtures (JSON made by tools/make_fixtures.py) and the
//! deterministic inputs their loops use: the dummy model `eps = x * t / (t + 1)` is written in
//! each test, the noise `noise[k][i] = sin(1.7 i + 0.3 k)` is here.
#![allow(dead_code)]

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;
use wasm_diffusion::SchedulerKind;

/// tests/fixtures/`name`, parsed.
pub fn json_fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(super::fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

pub fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

pub fn usizes(v: &Value) -> Vec<usize> {
    f64s(v).into_iter().map(|x| x as usize).collect()
}

/// Our scheduler for diffusers' class name.
pub fn kind_of(name: &str) -> SchedulerKind {
    match name {
        "DDPMScheduler" => SchedulerKind::Ddpm,
        "DDIMScheduler" => SchedulerKind::Ddim,
        "DPMSolverMultistepScheduler" => SchedulerKind::DpmSolverMultistep,
        other => panic!("unknown scheduler {other}"),
    }
}

/// The fixtures' step noise: `noise[k][i] = sin(1.7 i + 0.3 k)`.
pub fn noise(k: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (1.7 * i as f64 + 0.3 * k as f64).sin() as f32)
        .collect()
}

pub fn to_tensor(shape: [usize; 4], v: Vec<f32>, d: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(v, shape), d)
}
