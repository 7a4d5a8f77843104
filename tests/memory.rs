//! The memory estimate (src/memory.rs) against the peak the allocator really sees during a
//! sampling step on the CPU backend, and the budget checks that refuse runs and models which
//! would not fit (the wasm32 heap: 4 GiB less a margin) with a message that says why.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use burn::tensor::Device;
use common::*;
use wasm_diffusion::convert::random_model;
use wasm_diffusion::error::ErrorKind;
use wasm_diffusion::memory::MemoryBudget;
use wasm_diffusion::models::unets::unet_2d_config::{DownBlockType, UpBlockType};
use wasm_diffusion::models::unets::unet_2d_memory::{check_run, estimate_run};
use wasm_diffusion::pipelines::{SampleOptions, SamplingRun};
use wasm_diffusion::weights::Quant;
use wasm_diffusion::{load_model, load_model_within, SchedulerKind, UNet2DConfig};

/// Counts live heap bytes and their peak.
struct Tracking;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now =
                    LIVE.fetch_add(new_size - layout.size(), Relaxed) + new_size - layout.size();
                PEAK.fetch_max(now, Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// The wasm32 heap budget of the browser's CPU backend (src/web/mod.rs: 4 GiB - 256 MiB).
const WASM_CPU: MemoryBudget = MemoryBudget {
    total: (4 << 30) - (256 << 20),
    largest_buffer: u64::MAX,
    what: "the wasm32 heap of the CPU backend",
    weights_inside: true,
};

fn config(json: &str) -> UNet2DConfig {
    UNet2DConfig::from_json(json).expect("config parses")
}

fn fixture_config(name: &str) -> UNet2DConfig {
    config(&std::fs::read_to_string(fixtures().join(name)).unwrap())
}

/// Attention at the full 32x32 resolution (N = 1024 tokens, 4 heads): at batch 4 its score
/// matrix (16 Mi elements) is above MAX_SCORE_ELEMS, so the chunked path runs.
const FULL_RES_ATTENTION: &str = r#"{
    "sample_size": 32, "block_out_channels": [32, 64], "layers_per_block": 1,
    "down_block_types": ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D"],
    "attention_head_dim": 8, "norm_num_groups": 8
}"#;

#[test]
fn estimate_bounds_the_measured_peak_of_a_cpu_step() {
    let emoji = {
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models/emoji/emoji.int8.safetensors"),
        )
        .unwrap();
        wasm_diffusion::models::model_file::ModelFile::parse(&bytes)
            .unwrap()
            .meta
            .unet
    };
    let cases = [
        (
            "classcond fixture",
            fixture_config("unets/classcond/config.json"),
            2,
            true,
        ),
        ("shipped emoji", emoji.clone(), 1, false),
        ("shipped emoji", emoji, 4, true),
        (
            "full-resolution attention",
            config(FULL_RES_ATTENTION),
            4,
            false,
        ),
    ];
    let device = Device::flex();
    let mut bad = Vec::new();
    for (what, cfg, batch, guided) in cases {
        let mut cfg = cfg;
        if guided && cfg.num_class_embeds.is_none() {
            cfg.num_class_embeds = Some(2);
        }
        let bytes = random_model(&cfg, Quant::F32, 1).unwrap();
        let mut model = load_model(&bytes, &device).unwrap();
        drop(bytes);
        model.meta.null_class = cfg.num_class_embeds.map(|k| k - 1);
        let opts = SampleOptions {
            scheduler: SchedulerKind::Ddim,
            steps: 2,
            batch,
            class_labels: cfg.num_class_embeds.map(|_| vec![0]),
            guidance_scale: if guided { 2.0 } else { 1.0 },
            ..Default::default()
        };
        let mut sampler = SamplingRun::new(&model, &opts).unwrap();
        // The first step makes the CPU kernels' host copies of the weights (counted as resident
        // at load, not as the run's memory); measure the second. The im2col scratch is kept
        // between calls: start without it, as a fresh page.
        sampler.step().unwrap();
        wasm_diffusion::backend::cpu::release_scratch();
        let base = LIVE.load(Relaxed);
        PEAK.store(base, Relaxed);
        sampler.step().unwrap();
        let measured = (PEAK.load(Relaxed) - base) as u64;
        let hw = cfg.sample_hw().unwrap();
        let est = estimate_run(&cfg, hw, batch, guided, true).total();
        println!(
            "{what} b{batch}{}: measured step peak {:.2} MiB, estimate {:.2} MiB ({:.2}x)",
            if guided { " guided" } else { "" },
            measured as f64 / 1048576.0,
            est as f64 / 1048576.0,
            est as f64 / measured as f64
        );
        if measured > est || est > 4 * measured {
            bad.push(format!(
                "{what} b{batch}: estimate {est}, measured {measured}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "the estimate must lie between the measured peak and 4x it: {bad:?}"
    );
}

#[test]
fn real_configurations_fit_the_wasm_heap() {
    // The issue's bar: ddpm-cifar10 at batch 8 and ddpm-celebahq-256 at batch 1 run in the
    // browser's CPU path.
    let cifar = fixture_config("configs/ddpm-cifar10-32.json");
    // Weights are held twice on the CPU (burn tensors + the kernels' host copies).
    let params = wasm_diffusion::models::parameter_count(&cifar).unwrap() as u64;
    check_run(&cifar, [32, 32], 8, false, 8 * params, &WASM_CPU, true).unwrap();
    let celeba = fixture_config("configs/ddpm-celebahq-256.json");
    let params = wasm_diffusion::models::parameter_count(&celeba).unwrap() as u64;
    let est = check_run(&celeba, [256, 256], 1, false, 8 * params, &WASM_CPU, true).unwrap();
    println!(
        "celebahq-256 b1: {:.0} MiB + weights {:.0} MiB",
        est.total() as f64 / 1048576.0,
        8.0 * params as f64 / 1048576.0
    );
    // ... but not at a batch that asks for more than the heap; the message names the batch
    // that fits.
    let e = check_run(&celeba, [256, 256], 16, true, 8 * params, &WASM_CPU, true).unwrap_err();
    assert_eq!(e.kind, ErrorKind::MemoryLimit);
    assert!(
        e.message
            .starts_with("sampling 16 image(s) of 256x256 with guidance: it needs an estimated"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains(
            "above 3.8 GiB (the wasm32 heap of the CPU backend); use a batch of at most "
        ),
        "{}",
        e.message
    );
}

#[test]
fn a_small_file_asking_for_terabytes_is_refused_at_load() {
    // ~200 KB of weights, 1024x1024 images with attention at full resolution: unchunked its
    // scores alone would be 16 TB; chunked, one step would still take hours.
    let cfg = config(
        r#"{"sample_size": 1024, "block_out_channels": [32], "layers_per_block": 1,
            "down_block_types": ["AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D"],
            "attention_head_dim": 8, "norm_num_groups": 8}"#,
    );
    let bytes = random_model(&cfg, Quant::Int8, 1).unwrap();
    assert!(bytes.len() < 300_000, "{} bytes", bytes.len());
    let e = load_model_within(&bytes, &Device::flex(), WASM_CPU).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert_eq!(
        e.message,
        "sampling 1024x1024 images: attention over 1048576 tokens, expected at most 16384 (a 128x128 feature map): one step would take hours"
    );
    // Without attention the same size is only a matter of memory: 1024x1024 at 32 channels fits.
    let mut plain = cfg.clone();
    plain.down_block_types = vec![DownBlockType::DownBlock2D];
    plain.up_block_types = vec![UpBlockType::UpBlock2D];
    plain.add_attention = false;
    let est = check_run(&plain, [1024, 1024], 1, false, 0, &WASM_CPU, true).unwrap();
    assert_eq!(est.attention_tokens, 0);
    let e = check_run(&plain, [1024, 1024], 64, false, 0, &WASM_CPU, true).unwrap_err();
    assert_eq!(e.kind, ErrorKind::MemoryLimit);
}

#[test]
fn a_batch_too_large_for_the_budget_is_refused_with_the_batch_that_fits() {
    let dir = unet_dir("classcond");
    let (bytes, _) = wasm_diffusion::convert::convert_dir(
        &dir,
        Quant::F32,
        &wasm_diffusion::convert::ConvertOptions {
            null_class: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    let cfg = fixture_config("unets/classcond/config.json");
    // A budget that holds the weights and a few images.
    let one = estimate_run(&cfg, [16, 16], 1, true, true).total();
    let budget = MemoryBudget {
        total: 5 * one + 4 * 200_000,
        largest_buffer: u64::MAX,
        what: "a test budget",
        weights_inside: true,
    };
    let model = load_model_within(&bytes, &Device::flex(), budget).unwrap();
    let opts = |batch| SampleOptions {
        batch,
        class_labels: Some(vec![1]),
        guidance_scale: 2.0,
        ..Default::default()
    };
    let e = match SamplingRun::new(&model, &opts(64)) {
        Err(e) => e,
        Ok(_) => panic!("batch 64 must not fit"),
    };
    assert_eq!(e.kind, ErrorKind::MemoryLimit);
    let max: usize = e
        .message
        .rsplit("use a batch of at most ")
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no batch advice in: {}", e.message));
    assert!((1..64).contains(&max), "{}", e.message);
    SamplingRun::new(&model, &opts(max)).expect("the advised batch fits");
    assert!(SamplingRun::new(&model, &opts(max + 1)).is_err());
}

#[test]
fn largest_buffer_limit_refuses_a_tensor_too_big_for_webgpu() {
    let cfg = fixture_config("configs/ddpm-celebahq-256.json");
    let gpu = MemoryBudget {
        total: 4 << 30,
        largest_buffer: 128 << 20,
        what: "the WebGPU adapter's maxStorageBufferBindingSize",
        weights_inside: false,
    };
    // One 256x256 image: its widest activation (256 channels in the top up block) is 64 MiB.
    check_run(&cfg, [256, 256], 1, false, 0, &gpu, false).unwrap();
    let e = check_run(&cfg, [256, 256], 4, false, 0, &gpu, false).unwrap_err();
    assert_eq!(
        e.message,
        "sampling 4 image(s) of 256x256: its largest tensor needs an estimated 256.0 MiB, above 128.0 MiB (the WebGPU adapter's maxStorageBufferBindingSize); use a batch of at most 2"
    );
}
