//! What the fuzz targets (fuzz/fuzz_targets/) and their stable replay (tests/fuzz_corpus.rs) do
//! with one input. Both include this file with `#[path]`, so the replay runs exactly the checks
//! the fuzzer ran. Each entry point returns normally whatever the bytes are: a panic (including
//! a failed invariant below) is the bug.
//!
//! The work per input is bounded so that millions of executions fit in an hour of one core:
//! models are loaded only below [`MAX_LOAD_PARAMS`] parameters, U-Nets are synthesised from a
//! config only below [`MAX_SYNTH_PARAMS`], a sampler is built only for images of at most
//! [`MAX_SAMPLE_VALUES`] values and stepped only at most [`MAX_STEP_VALUES`], and scheduler
//! loops are walked only for runs of at most [`MAX_WALK_STEPS`] steps.
#![allow(dead_code)]

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};
use wasm_diffusion::models::model_file::{write_model_file, ModelFile};
use wasm_diffusion::models::{load_model, parameter_shapes, LoadedModel};
use wasm_diffusion::pipelines::{SampleOptions, SamplingRun};
use wasm_diffusion::schedulers;
use wasm_diffusion::weights::{container, OwnedTensor};
use wasm_diffusion::Result;
use wasm_diffusion::{SchedulerConfig, SchedulerKind, UNet2DConfig};

/// Models below this many parameters are loaded (the tiny test fixtures have 40k-220k).
pub const MAX_LOAD_PARAMS: usize = 200_000;
/// Configs from the metadata target are turned into a model file when this small.
pub const MAX_SYNTH_PARAMS: usize = 60_000;
/// Largest `in_channels * height * width` a sampler is built for.
pub const MAX_SAMPLE_VALUES: usize = 3 * 32 * 32;
/// Largest `in_channels * height * width` a U-Net step is run for.
pub const MAX_STEP_VALUES: usize = 3 * 16 * 16;
/// Scheduler runs of at most this many steps are walked to the end.
pub const MAX_WALK_STEPS: usize = 3;
/// Above this many training timesteps, schedulers are built for 1 and 2 steps only.
pub const MAX_TABLE_FOR_ALL_STEPS: usize = 4096;

pub const KINDS: [SchedulerKind; 3] = [
    SchedulerKind::Ddpm,
    SchedulerKind::Ddim,
    SchedulerKind::DpmSolverMultistep,
];

/// Byte that separates the metadata target's segments (never part of valid UTF-8).
pub const SEPARATOR: u8 = 0xFF;
/// A segment of exactly this byte means "leave the key out".
pub const ABSENT: u8 = 0x00;

/// The metadata keys the metadata target fills, in segment order.
pub const META_KEYS: [&str; 9] = [
    "unet_config",
    "scheduler_config",
    "quantization",
    "null_class",
    "class_names",
    "name",
    "format_version",
    "int4_group_size",
    "format",
];

/// A tiny class-conditional U-Net (about 26k parameters) that the metadata target mutates.
pub const TINY_UNET: &str = r#"{"_class_name":"UNet2DModel","sample_size":8,"in_channels":3,"out_channels":3,"block_out_channels":[8,16],"down_block_types":["DownBlock2D","AttnDownBlock2D"],"up_block_types":["AttnUpBlock2D","UpBlock2D"],"layers_per_block":1,"norm_num_groups":4,"attention_head_dim":4,"num_class_embeds":3}"#;

/// Default values of [`META_KEYS`] (`None`: absent).
pub const META_DEFAULTS: [Option<&str>; 9] = [
    Some(TINY_UNET),
    Some("{}"),
    Some("int8"),
    Some("2"),
    Some(r#"["a","b","c"]"#),
    Some("tiny"),
    Some("1"),
    None,
    Some("wasm-diffusion"),
];

/// Raw bytes as a model file: parse, check the tensors against the config, load when small,
/// build samplers.
pub fn model_file(data: &[u8]) {
    let Ok(file) = ModelFile::parse(data) else {
        return;
    };
    let Ok(expected) = parameter_shapes(&file.meta.unet) else {
        return;
    };
    if file.check(&expected).is_err() {
        return;
    }
    if param_count(&expected) >= MAX_LOAD_PARAMS {
        return;
    }
    // `check` promises that loading cannot fail on the file's contents.
    let model = load_model(data, &Device::flex())
        .unwrap_or_else(|e| panic!("checked file failed to load: {e}"));
    samplers(&model);
}

/// Bytes as metadata strings. The first byte picks what the rest is:
/// 0: a `unet_config` JSON; 1: a `scheduler_config` JSON; 2: the values of [`META_KEYS`], in
/// order, separated by [`SEPARATOR`] (missing trailing ones take [`META_DEFAULTS`], a lone
/// [`ABSENT`] byte leaves the key out). Whatever parses becomes a model file; small ones are
/// loaded and sampled.
pub fn metadata(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    let mut values: Vec<Option<String>> = META_DEFAULTS
        .iter()
        .map(|v| v.map(str::to_string))
        .collect();
    match mode % 3 {
        0 => {
            let t = text();
            unet_config(&t);
            values[0] = Some(t);
        }
        1 => {
            let t = text();
            scheduler_config(&t);
            values[1] = Some(t);
        }
        _ => {
            for (slot, seg) in values.iter_mut().zip(rest.split(|&b| b == SEPARATOR)) {
                *slot = (seg != [ABSENT]).then(|| String::from_utf8_lossy(seg).into_owned());
            }
        }
    }
    let meta: BTreeMap<String, String> = META_KEYS
        .iter()
        .zip(values)
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .collect();
    metadata_file(meta);
}

/// A `unet_config` JSON: validation, and a lossless round trip of what validates.
pub fn unet_config(text: &str) {
    if let Ok(cfg) = UNet2DConfig::from_json(text) {
        let again = UNet2DConfig::from_json(&cfg.to_json())
            .unwrap_or_else(|e| panic!("a valid UNet config failed to read back: {e}"));
        assert_same(&cfg, &again, "UNet config");
        let _ = parameter_shapes(&cfg);
    }
}

/// A `scheduler_config` JSON: validation, a round trip, and every scheduler (DDIM with eta 0
/// and 1) at 1, 2, 3, 1000, num_train_timesteps and one more steps, the short runs walked to
/// the end. Each build costs O(num_train_timesteps), so above [`MAX_TABLE_FOR_ALL_STEPS`]
/// training steps only 1 and 2 steps are built.
pub fn scheduler_config(text: &str) {
    let Ok(cfg) = SchedulerConfig::from_json(text) else {
        return;
    };
    let again = SchedulerConfig::from_json(&cfg.to_json())
        .unwrap_or_else(|e| panic!("a valid scheduler config failed to read back: {e}"));
    assert_same(&cfg, &again, "scheduler config");
    let t = cfg.num_train_timesteps;
    let all = [1, 2, 3, 1000, t, t + 1];
    let steps_list = if t <= MAX_TABLE_FOR_ALL_STEPS {
        &all[..]
    } else {
        &all[..2]
    };
    for (kind, eta) in [
        (SchedulerKind::Ddpm, 0.0),
        (SchedulerKind::Ddim, 0.0),
        (SchedulerKind::Ddim, 1.0),
        (SchedulerKind::DpmSolverMultistep, 0.0),
    ] {
        for &steps in steps_list {
            let Ok(mut s) = schedulers::build(kind, &cfg, steps, eta) else {
                continue;
            };
            if steps <= MAX_WALK_STEPS {
                walk(s.as_mut(), t);
            }
        }
    }
}

/// Runs every step of a scheduler on a 1x1x1x1 sample.
fn walk(s: &mut dyn schedulers::Scheduler, num_train_timesteps: usize) {
    let device = Device::flex();
    let mut x = Tensor::<4>::ones([1, 1, 1, 1], &device);
    for (i, t) in s.timesteps().to_vec().into_iter().enumerate() {
        assert!(
            t >= 0.0 && t < num_train_timesteps as f64,
            "scheduler visits timestep {t}, outside 0..{num_train_timesteps}"
        );
        let eps = Tensor::<4>::ones([1, 1, 1, 1], &device) * 0.5;
        let noise = s
            .needs_noise(i)
            .then(|| Tensor::<4>::ones([1, 1, 1, 1], &device) * -0.25);
        match s.step(eps, i, x.clone(), noise) {
            Ok(out) => x = out.prev_sample,
            Err(_) => return,
        }
    }
}

/// A metadata map in a container without tensors: parse it; if it describes a small model,
/// write that model (deterministic weights) at the file's quantization, load and sample it.
pub fn metadata_file(meta: BTreeMap<String, String>) {
    let Ok(bytes) = container::serialize(&BTreeMap::<String, OwnedTensor>::new(), meta) else {
        return;
    };
    let Ok(file) = ModelFile::parse(&bytes) else {
        return;
    };
    let Ok(expected) = parameter_shapes(&file.meta.unet) else {
        return;
    };
    if param_count(&expected) >= MAX_SYNTH_PARAMS {
        return;
    }
    let bytes = synthesize(&file.meta, &expected)
        .unwrap_or_else(|e| panic!("writing a valid config's model file failed: {e}"));
    let model = load_model(&bytes, &Device::flex())
        .unwrap_or_else(|e| panic!("a written model file failed to load: {e}"));
    samplers(&model);
}

/// A model file for `meta` with deterministic small weights of the `expected` shapes.
pub fn synthesize(
    meta: &wasm_diffusion::models::model_file::ModelMeta,
    expected: &[(String, Vec<usize>)],
) -> Result<Vec<u8>> {
    let tensors = expected
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values = (0..n)
                .map(|i| ((i * 7919 % 29) as f32 - 14.0) * 0.01)
                .collect();
            (name.clone(), (shape.clone(), values))
        })
        .collect();
    Ok(write_model_file(meta, &tensors)?.0)
}

/// Builds samplers for each scheduler at 1, 2 and 1000 steps (with the first class and guidance
/// where the model has classes), then takes one U-Net step when the image is small.
pub fn samplers(model: &LoadedModel) {
    let cfg = &model.unet.config;
    let Some([h, w]) = cfg.sample_hw() else {
        return;
    };
    let values = cfg.in_channels.saturating_mul(h).saturating_mul(w);
    if values > MAX_SAMPLE_VALUES {
        return;
    }
    let class_labels = cfg.num_class_embeds.map(|_| vec![0]);
    let guidance = if model.meta.null_class.is_some() && class_labels.is_some() {
        1.5
    } else {
        1.0
    };
    for kind in KINDS {
        for steps in [1, 2, 1000] {
            let opts = SampleOptions {
                scheduler: kind,
                steps,
                eta: if kind == SchedulerKind::Ddim {
                    1.0
                } else {
                    0.0
                },
                class_labels: class_labels.clone(),
                guidance_scale: guidance,
                ..SampleOptions::default()
            };
            let sampler = SamplingRun::new(model, &opts);
            if values <= MAX_STEP_VALUES && kind == SchedulerKind::Ddim && steps == 2 {
                if let Ok(mut s) = sampler {
                    let _ = s.step();
                }
            }
        }
    }
}

/// Asserts that a config survived a trip through JSON. serde_json (without its
/// `float_roundtrip` feature) may read a printed float back one ulp off (1e-30 ->
/// 9.999999999999999e-31), so numbers are compared to 1e-12 relative.
fn assert_same<T: serde::Serialize + std::fmt::Debug>(a: &T, b: &T, what: &str) {
    fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value::*;
        match (a, b) {
            (Number(x), Number(y)) => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
            }
            (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
            (Object(x), Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }
    let (va, vb) = (
        serde_json::to_value(a).unwrap(),
        serde_json::to_value(b).unwrap(),
    );
    assert!(
        same(&va, &vb),
        "{what} changed in a round trip:\n{a:?}\n{b:?}"
    );
}

pub fn param_count(shapes: &[(String, Vec<usize>)]) -> usize {
    shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}
