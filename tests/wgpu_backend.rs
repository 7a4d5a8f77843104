//! The same U-Net and sampler on burn's wgpu backend (Vulkan; lavapipe on CI) agree with the
//! CPU backend. Without a Vulkan driver this test fails when WASM_DIFFUSION_REQUIRE_WGPU=1
//! (set by scripts/test.sh, which installs the driver) and otherwise says it was skipped.

mod common;

use burn::tensor::Device;
use common::*;
use wasm_diffusion::convert::{convert_dir, ConvertOptions};
use wasm_diffusion::load_model;
use wasm_diffusion::pipelines::{read_back, SampleOptions, SamplingRun};
use wasm_diffusion::weights::Quant;

fn wgpu_device() -> Option<Device> {
    match Device::wgpu_options().init() {
        Ok(d) => Some(d),
        Err(e) => {
            let required = std::env::var("WASM_DIFFUSION_REQUIRE_WGPU").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "wgpu required but no adapter: {e} (install mesa-vulkan-drivers)"
            );
            // Straight to the process's stderr: libtest captures eprintln! of passing tests, and
            // a skip must be visible in the test log.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: wgpu_backend: no wgpu adapter ({e}); install mesa-vulkan-drivers to run this test"
            );
            None
        }
    }
}

#[test]
fn wgpu_forward_and_sampling_match_cpu() {
    let Some(gpu) = wgpu_device() else { return };
    let cpu = Device::flex();
    let (bytes, _) = convert_dir(
        &unet_dir("classcond"),
        Quant::Int8,
        &ConvertOptions {
            null_class: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    let io = std::fs::read(unet_dir("classcond").join("io.safetensors")).unwrap();
    let (shape, sample) = read_tensor(&io, "sample");
    let (_, ts) = read_tensor(&io, "timesteps");
    let labels = [1usize, 4];
    let m_cpu = load_model(&bytes, &cpu).unwrap();
    let m_gpu = load_model(&bytes, &gpu).unwrap();
    let a = to_vec(
        m_cpu
            .unet
            .forward(tensor4(&shape, sample.clone(), &cpu), &ts, Some(&labels))
            .unwrap(),
    );
    let b = to_vec(
        m_gpu
            .unet
            .forward(tensor4(&shape, sample, &gpu), &ts, Some(&labels))
            .unwrap(),
    );
    let e = rel_err(&b, &a);
    println!("wgpu vs cpu forward relative error {e:.3e}");
    assert!(e < 1e-4, "wgpu forward differs from cpu: {e:.3e}");

    let opts = SampleOptions {
        steps: 5,
        seed: 9,
        batch: 2,
        class_labels: Some(vec![0, 2]),
        guidance_scale: 2.0,
        ..Default::default()
    };
    let run = |m: &wasm_diffusion::LoadedModel| {
        let mut s = SamplingRun::new(m, &opts).unwrap();
        while !s.is_done() {
            s.step().unwrap();
        }
        read_back(s.current()).unwrap()
    };
    let e = max_abs_diff(&run(&m_gpu), &run(&m_cpu));
    println!("wgpu vs cpu 5-step sample max abs difference {e:.3e}");
    assert!(e < 1e-3, "wgpu sample differs from cpu: {e:.3e}");
}
