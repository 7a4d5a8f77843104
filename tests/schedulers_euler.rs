//! Golden tests of the Euler family against diffusers (tests/fixtures/schedulers_euler.json,
//! made by `python tools/make_fixtures.py --only euler-family`): Euler (linspace, leading,
//! trailing spacing; epsilon, v and sample prediction; Karras sigmas; SD-Turbo's config),
//! Euler ancestral, LCM and consistency models: their timesteps, sigmas and init_noise_sigma,
//! whole loops with the dummy model `model_output = model_input * t / (t + 1)` on
//! `model_input = scale_model_input(x)`, and img2img starts (add_noise + set_begin_index) of
//! every scheduler. Also: the published SD 1.5 (PNDMScheduler) and SD-Turbo scheduler configs
//! build every kind, and bad values of the new keys are clear errors.

mod common;

use common::golden::*;
use common::{rel_err, to_vec};

use burn::tensor::{Device, Tensor};
use serde_json::Value;
use wasm_diffusion::pipelines::default_steps;
use wasm_diffusion::schedulers::{self, Scheduler};
use wasm_diffusion::{SchedulerConfig, SchedulerKind};

/// The fixture's scheduler config as diffusers resolved it, tagged with its class name.
fn config_of(r: &Value) -> SchedulerConfig {
    let mut full = r["full_config"].clone();
    full.as_object_mut()
        .unwrap()
        .insert("_class_name".into(), r["scheduler"].clone());
    SchedulerConfig::from_json(&full.to_string()).expect("fixture config parses")
}

/// The kind diffusers' class name names (the class names are aliases of our names).
fn kind(r: &Value) -> SchedulerKind {
    SchedulerKind::parse(r["scheduler"].as_str().unwrap()).unwrap()
}

fn build(r: &Value) -> Box<dyn Scheduler> {
    let n = r["num_inference_steps"].as_u64().unwrap() as usize;
    let name = r["name"].as_str().unwrap();
    schedulers::build(kind(r), &config_of(r), n, 0.0).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// max |a - b| / max |b|, over f64 tables.
fn rel64(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch: {a:?} vs {b:?}");
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn shape(f: &Value) -> [usize; 4] {
    usizes(&f["x_T_shape"]).try_into().unwrap()
}

/// The dummy model on the scaled input, with the step's timestep as f32 (what a U-Net gets).
fn dummy(model_input: Tensor<4>, t: f64) -> Tensor<4> {
    let tf = t as f32;
    (model_input * tf) / (tf + 1.0)
}

#[test]
fn tables_match_diffusers() {
    let f = json_fixture("schedulers_euler.json");
    let runs = f["runs"].as_array().unwrap();
    assert!(runs.len() >= 20);
    let (mut worst_f64, mut worst_sigma, mut worst_t, mut worst_init) = (0f64, 0f64, 0f64, 0f64);
    for r in runs {
        let name = r["name"].as_str().unwrap();
        let s = build(r);
        let ts = s.timesteps();
        let sigmas = s.sigmas().unwrap_or(&[]);
        // 1. Against diffusers' code run on float64 alphas_cumprod (Euler, Euler ancestral), or
        // against diffusers itself where its tables are float64 (LCM's integer timesteps, CM's
        // timesteps from float64 sigmas, and CM's sigmas, the same float64 ramp cast to f32):
        // the same formulas in the same precision, so agreement to rounding (1e-10 leaves
        // room for a libm ulp in ln / powf, far below any formula error).
        let exact = r.get("f64").unwrap_or(r);
        let e = rel64(ts, &f64s(&exact["timesteps"]));
        worst_f64 = worst_f64.max(e);
        assert!(
            e < 1e-10,
            "{name}: timesteps {ts:?}, want {}",
            exact["timesteps"]
        );
        if let Some(want) = exact["sigmas"].as_array().filter(|a| !a.is_empty()) {
            let want: Vec<f64> = want.iter().map(|v| v.as_f64().unwrap()).collect();
            let e = rel64(sigmas, &want);
            worst_f64 = worst_f64.max(e);
            assert!(e < 1e-10, "{name}: sigmas {sigmas:?}, want {want:?}");
        }
        let want_init = exact["init_noise_sigma"].as_f64().unwrap();
        let e = (s.init_noise_sigma() - want_init).abs() / want_init;
        worst_f64 = worst_f64.max(e);
        assert!(
            e < 1e-10,
            "{name}: init_noise_sigma {}",
            s.init_noise_sigma()
        );

        // 2. Against diffusers as it runs: its alphas_cumprod is a float32 cumulative product
        // (relative error up to ~2e-6 at t = 999 on SD's betas), which moves sigma by as much;
        // its Karras timesteps interpolate in float32 log sigma, whose spacing (~4e-3 per
        // training step at high t) turns that into up to ~1e-3 of a timestep.
        if r.get("f64").is_some() {
            let e = rel64(sigmas, &f64s(&r["sigmas"]));
            worst_sigma = worst_sigma.max(e);
            assert!(e < 5e-6, "{name}: sigmas differ from diffusers by {e:.2e}");
            let dt = ts
                .iter()
                .zip(f64s(&r["timesteps"]))
                .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            worst_t = worst_t.max(dt);
            assert!(
                dt < 2e-3,
                "{name}: timesteps differ from diffusers by {dt:.2e}"
            );
            let want = r["init_noise_sigma"].as_f64().unwrap();
            let e = (s.init_noise_sigma() - want).abs() / want;
            worst_init = worst_init.max(e);
            assert!(e < 5e-6, "{name}: init_noise_sigma differs by {e:.2e}");
        }
    }
    println!(
        "tables: worst rel err vs f64 reference {worst_f64:.2e}; vs diffusers f32: sigmas {worst_sigma:.2e}, timesteps {worst_t:.2e} (abs), init_noise_sigma {worst_init:.2e}"
    );
}

#[test]
fn whole_loops_match_diffusers() {
    let f = json_fixture("schedulers_euler.json");
    let device = Device::flex();
    let shape = shape(&f);
    let numel = shape.iter().product();
    let mut worst_by_kind = std::collections::BTreeMap::<String, f64>::new();
    for r in f["runs"].as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        let mut s = build(r);
        let mut x = to_tensor(shape, f32s(&r["x_T"]), &device) * s.init_noise_sigma();
        let mut worst = 0f64;
        for (i, st) in r["steps"].as_array().unwrap().iter().enumerate() {
            let t = s.timesteps()[i];
            let input = s.scale_model_input(x.clone(), i).unwrap();
            let e_in = rel_err(&to_vec(input.clone()), &f32s(&st["scaled_model_input"]));
            let nz = s
                .needs_noise(i)
                .then(|| to_tensor(shape, noise(i, numel), &device));
            let out = s
                .step(dummy(input, t), i, x, nz)
                .unwrap_or_else(|e| panic!("{name} step {i}: {e}"));
            x = out.prev_sample;
            let e_x = rel_err(&to_vec(x.clone()), &f32s(&st["prev_sample"]));
            let e_x0 = match st["pred_original_sample"].as_array() {
                Some(_) => rel_err(
                    &to_vec(out.pred_original_sample),
                    &f32s(&st["pred_original_sample"]),
                ),
                None => 0.0,
            };
            worst = worst.max(e_in).max(e_x).max(e_x0);
        }
        let e = rel_err(&to_vec(x), &f32s(&r["final_sample"]));
        worst = worst.max(e);
        println!("{name}: worst relative error {worst:.2e}");
        let w = worst_by_kind.entry(kind(r).name().to_string()).or_default();
        *w = w.max(worst);
        // diffusers runs in f32 from its f32 alphas_cumprod (sigmas off by up to 6.2e-7
        // relative, see tables_match_diffusers); we form each step's coefficients in f64 from
        // f64 tables and apply them in f32. The first Euler step's x_0 = x - sigma eps is a
        // difference of nearly equal terms at sigma_max (the dummy model's eps is nearly
        // x / sigma): it magnifies the sigma error ~40x at SD's sigma_max 14.6 (2.3e-5
        // measured) and ~130x at the linear schedule's 157 (8.1e-5 measured). LCM, CM and
        // later steps stay below 1.2e-5.
        assert!(worst < 1e-4, "{name}: relative error {worst:.3e}");
    }
    println!("worst per scheduler: {worst_by_kind:?}");
}

#[test]
fn img2img_starts_match_diffusers() {
    let f = json_fixture("schedulers_euler.json");
    let device = Device::flex();
    let shape = shape(&f);
    let numel = shape.iter().product();
    for r in f["img2img"].as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        let mut s = build(r);
        let begin = r["begin_index"].as_u64().unwrap() as usize;
        s.set_begin_index(begin).unwrap();
        assert_eq!(s.begin_index(), begin);
        let x0 = to_tensor(shape, f32s(&r["x0"]), &device);
        let mut x = s
            .add_noise(x0, to_tensor(shape, noise(99, numel), &device), begin)
            .unwrap();
        let mut worst = rel_err(&to_vec(x.clone()), &f32s(&r["x_start"]));
        for st in r["steps"].as_array().unwrap() {
            let i = st["k"].as_u64().unwrap() as usize;
            let t = s.timesteps()[i];
            // Karras timesteps differ from diffusers' by its f32 table (tables_match_diffusers).
            let want_t = st["t"].as_f64().unwrap();
            assert!(
                (t - want_t).abs() < 2e-3,
                "{name}: step {i} at {t}, want {want_t}"
            );
            let input = s.scale_model_input(x.clone(), i).unwrap();
            let nz = s
                .needs_noise(i)
                .then(|| to_tensor(shape, noise(i, numel), &device));
            x = s
                .step(dummy(input, t), i, x, nz)
                .unwrap_or_else(|e| panic!("{name} step {i}: {e}"))
                .prev_sample;
            worst = worst.max(rel_err(&to_vec(x.clone()), &f32s(&st["prev_sample"])));
        }
        println!("{name}: worst relative error {worst:.2e}");
        // As whole_loops_match_diffusers; DDPM's and DDIM's coefficients come from the same
        // f64-vs-f32 tables.
        assert!(worst < 1e-4, "{name}: relative error {worst:.3e}");
    }
}

/// The published configs: runwayml's SD 1.5 (names PNDMScheduler, which this crate does not
/// have: the config gives the noise schedule, the scheduler is picked at run time) and
/// stabilityai's SD-Turbo (EulerDiscreteScheduler, trailing).
#[test]
fn published_configs_build_every_kind() {
    let read = |name: &str| {
        let text = std::fs::read_to_string(common::fixtures().join("configs").join(name)).unwrap();
        SchedulerConfig::from_json(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    for file in ["sd15-scheduler.json", "sd-turbo-scheduler.json"] {
        let c = read(file);
        for kind in SchedulerKind::ALL {
            // DDPM's default (every training timestep) with SD's steps_offset 1 would visit
            // timestep 1000, which diffusers refuses too; 50 stands for it.
            for n in [1, 2, 4, default_steps(kind, c.num_train_timesteps).min(50)] {
                let s = schedulers::build(kind, &c, n, 0.0)
                    .unwrap_or_else(|e| panic!("{file} {kind} {n} steps: {e}"));
                assert_eq!(s.timesteps().len(), n, "{file} {kind}");
                // > 0, not >= 1: Euler's one-step `linspace` schedule is np.linspace(0, 999, 1),
                // timestep 0 (sigma 0.029), in diffusers too.
                let init = s.init_noise_sigma();
                assert!(init.is_finite() && init > 0.0, "{file} {kind} {n}: {init}");
            }
        }
    }
    // SD-Turbo's own sampler: Euler, trailing, from t = 999.
    let turbo = read("sd-turbo-scheduler.json");
    let s = schedulers::build(SchedulerKind::Euler, &turbo, 4, 0.0).unwrap();
    assert_eq!(s.timesteps(), &[999.0, 749.0, 499.0, 249.0]);
    let s = schedulers::build(SchedulerKind::Euler, &turbo, 1, 0.0).unwrap();
    assert_eq!(s.timesteps(), &[999.0]);
    assert_eq!(s.sigmas().unwrap()[1], 0.0);
    // SD 1.5 with Euler: diffusers' default linspace spacing (the config has none).
    let sd15 = read("sd15-scheduler.json");
    let s = schedulers::build(SchedulerKind::Euler, &sd15, 3, 0.0).unwrap();
    assert_eq!(s.timesteps(), &[999.0, 499.5, 0.0]);
    // diffusers' class names name the kinds too.
    for (class, kind) in [
        ("EulerDiscreteScheduler", SchedulerKind::Euler),
        (
            "EulerAncestralDiscreteScheduler",
            SchedulerKind::EulerAncestral,
        ),
        ("LCMScheduler", SchedulerKind::Lcm),
        (
            "CMStochasticIterativeScheduler",
            SchedulerKind::ConsistencyModel,
        ),
        ("DDIMScheduler", SchedulerKind::Ddim),
    ] {
        assert_eq!(SchedulerKind::parse(class).unwrap(), kind);
    }
    for name in ["euler", "euler-a", "lcm", "cm"] {
        assert_eq!(SchedulerKind::parse(name).unwrap().name(), name);
    }
    let e = SchedulerKind::parse("PNDMScheduler")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("euler-a") && e.contains("found `PNDMScheduler`"),
        "{e}"
    );
}

fn config_err(json: &str) -> String {
    SchedulerConfig::from_json(json).unwrap_err().to_string()
}

fn build_err(kind: SchedulerKind, c: &SchedulerConfig, n: usize) -> String {
    schedulers::build(kind, c, n, 0.0)
        .err()
        .unwrap()
        .to_string()
}

#[test]
fn bad_values_of_the_new_keys_are_clear_errors() {
    for (json, want) in [
        (
            r#"{"sigma_data": -1}"#,
            "sigma_data: expected a finite number > 0, found -1",
        ),
        (
            r#"{"rho": 0}"#,
            "rho: expected a finite number > 0, found 0",
        ),
        (
            r#"{"sigma_min": 2.0, "sigma_max": 1.0}"#,
            "expected sigma_min < sigma_max, found 2 and 1",
        ),
        (
            r#"{"sigma_min": 0}"#,
            "sigma_min: expected a finite number > 0, found 0",
        ),
        (
            r#"{"s_noise": -0.5}"#,
            "s_noise: expected a finite number >= 0, found -0.5",
        ),
        (
            r#"{"timestep_scaling": 0}"#,
            "timestep_scaling: expected a finite number > 0, found 0",
        ),
        (
            r#"{"original_inference_steps": 0}"#,
            "original_inference_steps: expected at least 1, found 0",
        ),
        (r#"{"interpolation_type": "cubic"}"#, "found `cubic`"),
        (r#"{"timestep_type": "ordinal"}"#, "found `ordinal`"),
        (r#"{"clip_denoised": "yes"}"#, "clip_denoised"),
    ] {
        let e = config_err(json);
        assert!(e.contains(want), "{json}: {e}");
    }

    let sd = SchedulerConfig::from_json(
        r#"{"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}"#,
    )
    .unwrap();
    let e = build_err(SchedulerKind::Lcm, &sd, 51);
    assert!(
        e.contains("steps: expected 1 to 50 (LCM's original_inference_steps), found 51"),
        "{e}"
    );
    let c = SchedulerConfig {
        original_inference_steps: 2000,
        ..sd.clone()
    };
    let e = build_err(SchedulerKind::Lcm, &c, 4);
    assert!(
        e.contains(
            "original_inference_steps: expected at most num_train_timesteps = 1000, found 2000"
        ),
        "{e}"
    );
    let c = SchedulerConfig::from_json(r#"{"interpolation_type": "log_linear"}"#).unwrap();
    let e = build_err(SchedulerKind::Euler, &c, 10);
    assert!(
        e.contains("interpolation_type: expected `linear`, found `log_linear`"),
        "{e}"
    );
    let c = SchedulerConfig {
        use_exponential_sigmas: true,
        ..sd.clone()
    };
    assert!(build_err(SchedulerKind::Euler, &c, 10).contains("use_exponential_sigmas"));
    let c = SchedulerConfig::from_json(r#"{"prediction_type": "sample"}"#).unwrap();
    let e = build_err(SchedulerKind::EulerAncestral, &c, 10);
    assert!(
        e.contains("expected `epsilon` or `v_prediction`, found `sample`"),
        "{e}"
    );
    for kind in SchedulerKind::ALL {
        let e = build_err(kind, &sd, 0);
        assert!(e.contains("steps: expected 1 to 1000"), "{kind}: {e}");
    }
}

#[test]
fn step_indices_are_checked() {
    let device = Device::flex();
    let c = SchedulerConfig::default();
    let x = || Tensor::<4>::zeros([1, 1, 2, 2], &device);
    for kind in SchedulerKind::ALL {
        let mut s = schedulers::build(kind, &c, 4, 0.0).unwrap();
        let e = s.set_begin_index(4).unwrap_err().to_string();
        assert!(e.contains("step index: expected 0 to 3"), "{kind}: {e}");
        let e = s.add_noise(x(), x(), 7).unwrap_err().to_string();
        assert!(e.contains("found 7"), "{kind}: {e}");
        let e = s.scale_model_input(x(), 4).err().unwrap().to_string();
        assert!(e.contains("found 4"), "{kind}: {e}");
        let e = s.step(x(), 9, x(), Some(x())).err().unwrap().to_string();
        assert!(e.contains("found 9"), "{kind}: {e}");
        if s.needs_noise(0) {
            let e = s.step(x(), 0, x(), None).err().unwrap().to_string();
            assert!(
                e.contains("expected a noise tensor, found none"),
                "{kind}: {e}"
            );
        }
    }
    // DPM-Solver++ carries history: steps in order from the begin index.
    let mut s = schedulers::build(SchedulerKind::DpmSolverMultistep, &c, 4, 0.0).unwrap();
    s.set_begin_index(2).unwrap();
    let e = s.step(x(), 0, x(), None).err().unwrap().to_string();
    assert!(e.contains("step index: expected 2, found 0"), "{e}");
    s.step(x(), 2, x(), None).unwrap();
    s.step(x(), 3, x(), None).unwrap();
}

/// Euler's add_noise is x_0 + sigma noise, the sample whose scale_model_input is the VP x_t.
#[test]
fn euler_add_noise_matches_the_vp_forward_process() {
    let device = Device::flex();
    let c = SchedulerConfig::default();
    let x0 = to_tensor([1, 1, 1, 2], vec![0.5, -1.0], &device);
    let eps = to_tensor([1, 1, 1, 2], vec![1.0, 0.25], &device);
    let euler = schedulers::build(SchedulerKind::Euler, &c, 10, 0.0).unwrap();
    let ddim = schedulers::build(SchedulerKind::Ddim, &c, 10, 0.0).unwrap();
    // Euler linspace and DDIM leading share no timestep but the first...
    let i_euler = 0;
    let t = euler.timesteps()[i_euler];
    let vp = euler
        .scale_model_input(
            euler.add_noise(x0.clone(), eps.clone(), i_euler).unwrap(),
            i_euler,
        )
        .unwrap();
    // ...so compare with the VP forward process at that training timestep directly.
    let table = schedulers::BetaTable::new(&c).unwrap();
    let want = table.add_noise(x0, eps, t as usize).unwrap();
    let e = rel_err(&to_vec(vp), &to_vec(want));
    assert!(e < 1e-6, "relative error {e:.2e}");
    assert_eq!(ddim.init_noise_sigma(), 1.0);
}
