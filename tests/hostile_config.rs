//! Property test: every field of the shipped model's metadata, replaced one at a time by each of
//! a list of hostile values (and deleted), gives a model that loads and samples or an error that
//! names the field, and never a panic.
//!
//! The mutated file goes through what a user's load does: `ModelFile::parse`, `parameter_shapes`,
//! `check`, `load_model` (when the tensors fit the new config), and `SamplingRun::new` for each
//! scheduler. A config that validates but no longer fits the file's tensors gets weights of
//! its own (tests/common/fuzz_harness.rs `synthesize`) and is loaded too when it has fewer
//! parameters than the shipped model.

mod common;

#[path = "common/fuzz_harness.rs"]
#[allow(unused)]
mod harness;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use burn::tensor::Device;
use serde_json::{Map, Value};
use wasm_diffusion::models::model_file::ModelFile;
use wasm_diffusion::models::parameter_shapes;
use wasm_diffusion::pipelines::{SampleOptions, SamplingRun};
use wasm_diffusion::weights::{container, Container, OwnedTensor};
use wasm_diffusion::SchedulerKind;
use wasm_diffusion::{load_model, LoadedModel};

const SHIPPED: &str = "models/emoji/emoji.int8.safetensors";
const SHIPPED_INT4: &str = "models/emoji/emoji.int4.safetensors";

/// Hostile values as JSON text: written into the config JSON as they are, so the bare tokens
/// `NaN` and `Infinity` (which Python's json module writes) reach the parser.
fn hostile_values() -> Vec<String> {
    let mut v: Vec<String> = [
        "0",
        "-1",
        "1",
        "2",
        "3",
        "7",
        "1e12",
        "1000000000000",
        "18446744073709551615",
        "18446744073709551616",
        "1e308",
        "-1e308",
        "0.5",
        "NaN",
        "\"NaN\"",
        "Infinity",
        "-Infinity",
        "null",
        "true",
        "\"\"",
        "\"x\"",
        "[]",
        "[0]",
        "[1e12]",
        "{}",
    ]
    .map(String::from)
    .to_vec();
    v.push(format!("\"{}\"", "x".repeat(100_000)));
    v.push(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)));
    v
}

/// The same values as metadata strings (the top-level keys are strings in the container).
fn hostile_strings() -> Vec<String> {
    let mut v: Vec<String> = hostile_values()
        .into_iter()
        .map(|s| s.trim_matches('"').to_string())
        .collect();
    v.push("8".into()); // the shipped null class: fine for null_class, wrong elsewhere
    v.push("32".into()); // the int4 group size
    v.push("[\"a\",\"b\"]".into());
    v
}

struct Shipped {
    meta: BTreeMap<String, String>,
    tensors: BTreeMap<String, OwnedTensor>,
    params: usize,
    /// The file as shipped, loaded.
    base: LoadedModel,
}

fn read_shipped(path: &str) -> Shipped {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let c = Container::parse(&bytes).expect("shipped model parses");
    let tensors = c
        .tensors
        .iter()
        .map(|(k, v)| {
            let t = OwnedTensor {
                dtype: v.dtype,
                shape: v.shape.clone(),
                data: v.data.to_vec(),
            };
            (k.clone(), t)
        })
        .collect();
    let file = ModelFile::parse(&bytes).expect("shipped model parses");
    let params = harness::param_count(&parameter_shapes(&file.meta.unet).unwrap());
    Shipped {
        meta: c.metadata.clone(),
        tensors,
        params,
        base: load_model(&bytes, &Device::flex()).expect("shipped model loads"),
    }
}

/// `config` JSON text with `key` set to the raw JSON `value` (or deleted when `None`).
fn with_field(config: &str, key: &str, value: Option<&str>) -> String {
    let mut obj: Map<String, Value> = serde_json::from_str(config).unwrap();
    const MARK: &str = "\u{1}hostile\u{1}";
    match value {
        Some(_) => obj.insert(key.into(), Value::String(MARK.into())),
        None => obj.remove(key),
    };
    let text = serde_json::to_string(&obj).unwrap();
    match value {
        Some(v) => text.replacen(&format!("\"{}\"", "\\u0001hostile\\u0001"), v, 1),
        None => text,
    }
}

/// What happened to one mutated file.
#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    rejected: usize,
    loaded: usize,
    synthesized: usize,
    sampler_ok: usize,
    sampler_err: usize,
}

/// Runs one mutated file; returns Err(description) for a violated expectation.
fn run_case(
    shipped: &Shipped,
    meta: BTreeMap<String, String>,
    key: &str,
    tally: &mut Tally,
) -> Result<(), String> {
    tally.cases += 1;
    let bytes = container::serialize(&shipped.tensors, meta).map_err(|e| e.to_string())?;
    let names = |msg: &str| -> Result<(), String> {
        if msg.contains(key) {
            Ok(())
        } else {
            Err(format!("error does not name `{key}`: {msg}"))
        }
    };
    let file = match ModelFile::parse(&bytes) {
        Ok(f) => f,
        Err(e) => {
            tally.rejected += 1;
            return names(&e.to_string());
        }
    };
    let expected = parameter_shapes(&file.meta.unet).map_err(|e| format!("shapes: {e}"))?;
    let model: LoadedModel = match file.check(&expected) {
        Ok(()) if file.meta.unet == shipped.base.meta.unet => {
            // Same U-Net config and tensors as the shipped file: the load would give the
            // shipped U-Net again (6.8M parameters), so only the metadata is swapped in.
            tally.loaded += 1;
            LoadedModel {
                meta: file.meta.clone(),
                ..shipped.base.clone()
            }
        }
        Ok(()) => {
            tally.loaded += 1;
            load_model(&bytes, &Device::flex()).map_err(|e| format!("checked file: {e}"))?
        }
        Err(e) => {
            // The config is valid but describes other tensors than the file holds: the error
            // is about a tensor, not the field. Give the new config weights of its own.
            let msg = e.to_string();
            if !msg.contains("tensor `") {
                return Err(format!("check failed without naming a tensor: {msg}"));
            }
            let params = harness::param_count(&expected);
            if params >= shipped.params {
                tally.rejected += 1;
                return Ok(());
            }
            tally.synthesized += 1;
            let bytes = harness::synthesize(&file.meta, &expected)
                .map_err(|e| format!("writing a valid config's file: {e}"))?;
            load_model(&bytes, &Device::flex())
                .map_err(|e| format!("a written model file failed to load: {e}"))?
        }
    };
    let classes = model.unet.config.num_class_embeds;
    for kind in [
        SchedulerKind::Ddpm,
        SchedulerKind::Ddim,
        SchedulerKind::DpmSolverMultistep,
    ] {
        let opts = SampleOptions {
            scheduler: kind,
            steps: 20,
            class_labels: classes.map(|_| vec![0]),
            guidance_scale: if model.meta.null_class.is_some() {
                1.5
            } else {
                1.0
            },
            ..SampleOptions::default()
        };
        match SamplingRun::new(&model, &opts) {
            Ok(_) => tally.sampler_ok += 1,
            Err(e) => {
                tally.sampler_err += 1;
                names(&e.to_string())?;
            }
        }
    }
    Ok(())
}

/// Runs `case` under catch_unwind, recording a panic or a failed expectation as a failure.
fn guarded(failures: &mut Vec<String>, label: String, case: impl FnOnce() -> Result<(), String>) {
    match catch_unwind(AssertUnwindSafe(case)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("{label}: {}", short_msg(&e))),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{label}: PANIC {}", short_msg(&msg)));
        }
    }
}

fn short_msg(m: &str) -> String {
    match m.char_indices().nth(400) {
        Some((i, _)) => format!("{}...", &m[..i]),
        None => m.to_string(),
    }
}

fn short(v: &str) -> String {
    if v.len() > 24 {
        format!("{}...({} bytes)", &v[..24], v.len())
    } else {
        v.to_string()
    }
}

#[test]
fn every_config_field_hostile_value_errors_or_works_never_panics() {
    let shipped = read_shipped(SHIPPED);
    let mut failures = Vec::new();
    let mut tally = Tally::default();
    let mut values: Vec<Option<String>> = hostile_values().into_iter().map(Some).collect();
    values.push(None);

    for config_key in ["unet_config", "scheduler_config"] {
        let config = shipped.meta[config_key].clone();
        let obj: Map<String, Value> = serde_json::from_str(&config).unwrap();
        for field in obj.keys() {
            for v in &values {
                let mut meta = shipped.meta.clone();
                meta.insert(config_key.into(), with_field(&config, field, v.as_deref()));
                let label = format!(
                    "{config_key}.{field} = {}",
                    v.as_deref().map_or("<deleted>".into(), short)
                );
                guarded(&mut failures, label, || {
                    run_case(&shipped, meta, field, &mut tally)
                });
            }
        }
    }

    let mut strings: Vec<Option<String>> = hostile_strings().into_iter().map(Some).collect();
    strings.push(None);
    let int4 = read_shipped(SHIPPED_INT4);
    for (file, key) in [
        (&shipped, "format"),
        (&shipped, "format_version"),
        (&shipped, "quantization"),
        (&shipped, "null_class"),
        (&shipped, "class_names"),
        (&shipped, "name"),
        (&int4, "int4_group_size"),
    ] {
        assert!(file.meta.contains_key(key), "shipped metadata lacks {key}");
        for v in &strings {
            let mut meta = file.meta.clone();
            match v {
                Some(v) => meta.insert(key.into(), v.clone()),
                None => meta.remove(key),
            };
            let label = format!(
                "metadata {key} = {}",
                v.as_deref().map_or("<deleted>".into(), short)
            );
            guarded(&mut failures, label, || {
                run_case(file, meta, key, &mut tally)
            });
        }
    }

    println!(
        "hostile_config: {} cases: {} rejected with the field named, {} loaded as they are, {} \
         loaded with weights of their own; SamplingRun::new {} ok / {} refused",
        tally.cases,
        tally.rejected,
        tally.loaded,
        tally.synthesized,
        tally.sampler_ok,
        tally.sampler_err
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        tally.cases,
        failures.join("\n")
    );
    // The test must reach every stage, or it checks less than it claims.
    assert!(tally.rejected > 500 && tally.loaded > 50 && tally.synthesized > 0);
}

/// The messages RELIABILITY.md quotes, exactly: each case is one mutation of the shipped file.
#[test]
fn documented_messages_are_the_ones_users_see() {
    let shipped = read_shipped(SHIPPED);
    let unet = |field: &str, v: Option<&str>| {
        let mut m = shipped.meta.clone();
        m.insert(
            "unet_config".into(),
            with_field(&m["unet_config"], field, v),
        );
        m
    };
    let sched = |field: &str, v: Option<&str>| {
        let mut m = shipped.meta.clone();
        m.insert(
            "scheduler_config".into(),
            with_field(&m["scheduler_config"], field, v),
        );
        m
    };
    let top = |key: &str, v: Option<&str>| {
        let mut m = shipped.meta.clone();
        match v {
            Some(v) => m.insert(key.into(), v.into()),
            None => m.remove(key),
        };
        m
    };
    let long = format!("\"{}\"", "x".repeat(100_000));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let names = format!(
        "[{}]",
        (0..10)
            .map(|i| format!("\"c{i}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let cases: Vec<(BTreeMap<String, String>, &str)> = vec![
        (
            unet("attn_norm_num_groups", Some("0")),
            "invalid config: attn_norm_num_groups: expected 1 to 8192, found 0",
        ),
        (
            unet("in_channels", Some("-1")),
            "invalid config: UNet config `in_channels`: expected a non-negative integer, found -1",
        ),
        (
            unet("norm_eps", Some("NaN")),
            "invalid config: UNet config `norm_eps`: expected a number, found \"NaN\"",
        ),
        (
            unet("num_class_embeds", Some("18446744073709551616")),
            "invalid config: UNet config `num_class_embeds`: expected a non-negative integer, found 1.8446744073709552e+19",
        ),
        (
            unet("sample_size", Some("30")),
            "invalid config: sample_size: expected a height and width divisible by 4 (one halving per down block after the first), found 30x30",
        ),
        (
            unet("sample_size", Some("[]")),
            "invalid config: UNet config `sample_size`: expected a positive integer or [height, width], found []",
        ),
        (
            unet("block_out_channels", Some("[0]")),
            "invalid config: down_block_types has 3 entries but block_out_channels has 1; they must match",
        ),
        (
            unet("layers_per_block", Some("0")),
            "invalid config: layers_per_block: expected 1 to 16, found 0",
        ),
        (
            unet("dropout", Some("7")),
            "invalid config: dropout: expected a probability from 0 to 1, found 7",
        ),
        (
            unet("act_fn", Some(&long)),
            "unsupported: act_fn: expected `silu`, found `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (100000 bytes)`",
        ),
        (
            unet("freq_shift", Some(&deep)),
            "invalid config: UNet config `freq_shift`: expected a JSON value, found a parse error: recursion limit exceeded",
        ),
        (
            unet("_class_name", Some("\"UNet2DConditionModel\"")),
            "unsupported: UNet config `_class_name`: expected `UNet2DModel`, found `UNet2DConditionModel`",
        ),
        (
            unet("norm_num_groups", Some("null")),
            "unsupported: norm_num_groups: expected an integer, found null",
        ),
        (
            sched("num_train_timesteps", Some("0")),
            "invalid config: num_train_timesteps: expected 2 to 100000, found 0",
        ),
        (
            sched("beta_end", Some("Infinity")),
            "invalid config: scheduler config `beta_end`: expected a number, found \"Infinity\"",
        ),
        (
            sched("variance_type_dpm", Some("\"learned_range\"")),
            "unsupported: variance_type_dpm (DPM-Solver's variance_type): expected null, found `learned_range`",
        ),
        (
            sched("lambda_min_clipped", Some("\"x\"")),
            "invalid config: scheduler config `lambda_min_clipped`: expected a number, found \"x\"",
        ),
        (
            top("null_class", Some("-1")),
            "invalid model file: metadata `null_class`: expected a non-negative integer, found `-1`",
        ),
        (
            top("null_class", Some("9")),
            "invalid config: metadata `null_class`: expected a class below num_class_embeds = 9, found 9",
        ),
        (
            top("class_names", Some(&names)),
            "invalid config: metadata `class_names`: expected at most 9 names (num_class_embeds), found 10",
        ),
        (
            top("format_version", Some("NaN")),
            "unsupported: metadata `format_version`: expected 1, found `NaN`",
        ),
        (
            top("quantization", None),
            "invalid model file: metadata: expected key `quantization`, found none (not a wasm-diffusion model file)",
        ),
    ];
    for (meta, want) in cases {
        let bytes = container::serialize(&shipped.tensors, meta).unwrap();
        let got = ModelFile::parse(&bytes)
            .err()
            .unwrap_or_else(|| panic!("expected `{want}`, the file parsed"))
            .to_string();
        assert!(got.starts_with(want), "expected `{want}`\n   found `{got}`");
    }
    // Python's json writes diffusers' default lambda_min_clipped as a bare -Infinity: it reads.
    let bytes = container::serialize(
        &shipped.tensors,
        sched("lambda_min_clipped", Some("-Infinity")),
    )
    .unwrap();
    let file = ModelFile::parse(&bytes).expect("-Infinity is the default");
    assert_eq!(file.meta.scheduler.lambda_min_clipped, f64::NEG_INFINITY);
}

/// The tiny U-Net of the metadata fuzz target with each option set to each of a list of small
/// and odd values (alone and beside a companion change), as a `unet_config` alone and in a
/// complete int4 metadata set: through the fuzz harness, which validates, writes and loads
/// what is valid, builds samplers and takes a U-Net step. Never a panic. This found
/// out_channels != in_channels reaching the scheduler's element-wise step (a burn shape panic).
#[test]
fn tiny_unet_options_load_and_step_or_error() {
    let base: Map<String, Value> = serde_json::from_str(harness::TINY_UNET).unwrap();
    let fields = [
        "sample_size",
        "in_channels",
        "out_channels",
        "block_out_channels",
        "layers_per_block",
        "norm_num_groups",
        "attention_head_dim",
        "num_class_embeds",
        "time_embedding_dim",
        "attn_norm_num_groups",
        "freq_shift",
        "downsample_padding",
        "mid_block_scale_factor",
        "norm_eps",
        "center_input_sample",
        "flip_sin_to_cos",
        "add_attention",
        "mid_block_type",
        "resnet_time_scale_shift",
        "down_block_types",
        "up_block_types",
    ];
    let values = [
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "7",
        "8",
        "16",
        "-1",
        "0.5",
        "1e-30",
        "true",
        "false",
        "null",
        "[1,1]",
        "[2,2]",
        "[4,4]",
        "[4,8]",
        "[8,16]",
        "[16,8]",
        "[8]",
        "[2,4,8]",
        "[4,4,4,4]",
        "\"scale_shift\"",
        "[\"DownBlock2D\",\"DownBlock2D\"]",
        "[\"AttnDownBlock2D\",\"AttnDownBlock2D\"]",
        "[\"AttnUpBlock2D\",\"AttnUpBlock2D\"]",
        "[\"UpBlock2D\",\"UpBlock2D\"]",
    ];
    let companions = [
        None,
        Some(("norm_num_groups", "1")),
        Some(("block_out_channels", "[2,4]")),
        Some(("resnet_time_scale_shift", "\"scale_shift\"")),
        Some(("sample_size", "[8,16]")),
    ];
    let mut failures = Vec::new();
    let mut cases = 0;
    for field in fields {
        for v in values {
            for companion in companions {
                let mut obj = base.clone();
                obj.insert(field.into(), serde_json::from_str(v).unwrap());
                if let Some((k, x)) = companion {
                    if k == field {
                        continue;
                    }
                    obj.insert(k.into(), serde_json::from_str(x).unwrap());
                }
                let json = serde_json::to_string(&obj).unwrap();
                let alone = [&[0u8][..], json.as_bytes()].concat();
                let int4 = [
                    &[2u8][..],
                    json.as_bytes(),
                    b"\xff{}\xffint4\xff0\xff[]\xff\xff1\xff32",
                ]
                .concat();
                for input in [alone, int4] {
                    cases += 1;
                    let label = format!("{field} = {v} with {companion:?}");
                    guarded(&mut failures, label, || {
                        harness::metadata(&input);
                        Ok(())
                    });
                }
            }
        }
    }
    println!("tiny_unet: {cases} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
