//! Keys a `scheduler_config.json` omits take the defaults of the scheduler that is RUN, as in
//! diffusers, not those of the scheduler the file names (tests/fixtures/scheduler_absent_keys.json,
//! made by `python tools/make_fixtures.py --only absent-keys`).
//!
//! Each case is a raw config text (a DDPM, DDIM or DPM-Solver++ config with keys missing, or a
//! full one) run with DDPM, DDIM or DPM-Solver++ the way a diffusers pipeline swaps schedulers
//! (`Target.from_config(source.config)`). E.g. google/ddpm-cifar10-32's config has no
//! `timestep_spacing`: DPM-Solver++ must then use its own default `linspace`, DDIM and DDPM
//! their `leading`. The raw text is parsed as it is, and again after the model file's round
//! trip (`SchedulerConfig::to_json`, which the converter writes into the model's metadata).

mod common;

use common::golden::*;
use common::to_vec;

use burn::tensor::Device;
use serde_json::Value;
use wasm_diffusion::schedulers;
use wasm_diffusion::SchedulerConfig;

/// The keys of diffusers' resolved target config whose value differs from ours (a hint for a
/// failing case: which default was taken from the wrong scheduler).
fn config_differences(config: &SchedulerConfig, target: &str, want: &Value) -> Vec<String> {
    let ours = serde_json::to_value(config).unwrap();
    let mut out = Vec::new();
    for (key, w) in want.as_object().unwrap() {
        // DPM-Solver's `variance_type` (null or learned) is kept apart from DDPM's.
        let our_key = if target == "DPMSolverMultistepScheduler" && key == "variance_type" {
            "variance_type_dpm"
        } else {
            key.as_str()
        };
        let Some(o) = ours.get(our_key) else {
            continue; // a key this crate does not read
        };
        let same = match (o, w) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            // DPM-Solver reads its variance_type only for "learned" / "learned_range"; a DDPM
            // config's "fixed_small" that diffusers passes on means the same as null.
            _ if our_key == "variance_type_dpm" => {
                o.is_null() && !matches!(w.as_str(), Some("learned" | "learned_range"))
            }
            // JSON has no -inf: serde writes ours as null, the fixture as "-inf".
            _ if key == "lambda_min_clipped" => {
                config.lambda_min_clipped == f64::NEG_INFINITY && w.as_str() == Some("-inf")
            }
            _ => o == w,
        };
        if !same {
            out.push(format!("{key}: ours {o}, diffusers {w}"));
        }
    }
    out
}

/// Runs one case on `config`; `Err` says what differed from diffusers.
fn check_case(f: &Value, c: &Value, config: &SchedulerConfig) -> Result<String, String> {
    let device = Device::flex();
    let target = c["target"].as_str().unwrap();
    let kind = kind_of(target);
    let n = c["num_inference_steps"].as_u64().unwrap() as usize;
    let eta = c["eta"].as_f64().unwrap();
    let diffs = config_differences(config, target, &c["target_config"]);
    let hint = if diffs.is_empty() {
        String::new()
    } else {
        format!("; config differs: {}", diffs.join(", "))
    };
    let mut s = schedulers::build(kind, config, n, eta)
        .map_err(|e| format!("build({kind:?}, {n} steps, eta {eta}) failed: {e}{hint}"))?;
    let want_ts = usizes(&c["timesteps"]);
    let ours_ts: Vec<usize> = s.timesteps().iter().map(|&t| t as usize).collect();

    let shape: [usize; 4] = usizes(&f["x_T_shape"]).try_into().unwrap();
    let numel = shape.iter().product();
    let mut x = to_tensor(shape, f32s(&f["x_T"]), &device);
    for (k, &t) in ours_ts.iter().enumerate() {
        let tf = t as f32;
        let model_output = (x.clone() * tf) / (tf + 1.0);
        let nz = s
            .needs_noise(k)
            .then(|| to_tensor(shape, noise(k, numel), &device));
        x = s
            .step(model_output, k, x, nz)
            .map_err(|e| format!("step {k} (t={t}) failed: {e}{hint}"))?
            .prev_sample;
    }
    let err = common::rel_err(&to_vec(x), &f32s(&c["final_sample"]));
    // As in tests/schedulers.rs: loops from t >= 990 magnify f32 differences most.
    let tol = if want_ts.first().is_some_and(|&t| t >= 990) {
        2e-4
    } else {
        1e-4
    };
    if ours_ts != want_ts {
        return Err(format!(
            "timesteps: we visit {ours_ts:?}, diffusers {want_ts:?} (final sample relative error {err:.2e}){hint}"
        ));
    }
    if err >= tol {
        return Err(format!(
            "final sample: relative error {err:.3e} > {tol:e} (same timesteps){hint}"
        ));
    }
    Ok(format!("final sample relative error {err:.2e}{hint}"))
}

/// Runs every case on the config `prepare` makes from the raw text; panics listing each
/// failing case.
fn check_all(what: &str, prepare: impl Fn(&str) -> SchedulerConfig) {
    let f = json_fixture("scheduler_absent_keys.json");
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 24, "expected at least 24 cases");
    let mut failures = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let source = c["source"].as_str().unwrap();
        let raw = f["sources"][source]["raw_config"].as_str().unwrap();
        let line = format!(
            "{name} ({} -> {}, {} steps, eta {}) [{what}]",
            f["sources"][source]["class"].as_str().unwrap(),
            c["target"].as_str().unwrap(),
            c["num_inference_steps"],
            c["eta"]
        );
        match check_case(&f, c, &prepare(raw)) {
            Ok(msg) => println!("ok   {line}: {msg}"),
            Err(msg) => {
                println!("FAIL {line}: {msg}");
                failures.push(format!("{line}: {msg}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from diffusers:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn absent_keys_take_the_run_schedulers_defaults() {
    check_all("raw scheduler_config.json", |raw| {
        SchedulerConfig::from_json(raw).expect("raw config parses")
    });
}

#[test]
fn absent_keys_survive_the_model_file_round_trip() {
    check_all("after SchedulerConfig::to_json round trip", |raw| {
        let config = SchedulerConfig::from_json(raw).expect("raw config parses");
        SchedulerConfig::from_json(&config.to_json()).expect("round-tripped config parses")
    });
}
