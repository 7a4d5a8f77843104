//! The sampling options as the JS API passes them (`SampleOptions::from_json`): the crate owns
//! their defaults and limits; a bad value is refused naming the key, what was expected and what
//! was found.

use serde_json::json;
use wasm_diffusion::error::ErrorKind;
use wasm_diffusion::pipelines::{default_steps, SampleOptions, MAX_SEED};
use wasm_diffusion::SchedulerKind;

fn parse(v: serde_json::Value, t: usize) -> wasm_diffusion::Result<SampleOptions> {
    SampleOptions::from_json(&v, t, || 777)
}

#[test]
fn absent_and_null_keys_take_the_crates_defaults() {
    for v in [
        json!({}),
        json!(null),
        json!({"steps": null, "seed": null, "other": [1, 2]}),
    ] {
        let o = parse(v, 1000).unwrap();
        let d = SampleOptions::default();
        assert_eq!(o.scheduler, d.scheduler);
        assert_eq!(o.steps, 50);
        assert_eq!(
            o.seed, 777,
            "a missing seed comes from the caller's random source"
        );
        assert_eq!((o.eta, o.batch, o.guidance_scale), (0.0, 1, 1.0));
        assert_eq!(o.class_labels, None);
    }
    // Default steps per scheduler, never above the model's training timesteps.
    for (name, t, want) in [
        ("ddpm", 1000, 1000),
        ("ddpm", 4000, 4000),
        ("ddim", 1000, 50),
        ("ddim", 30, 30),
        ("dpm++", 1000, 20),
        ("dpm++", 10, 10),
        ("euler", 1000, 50),
        ("euler-a", 1000, 50),
        ("lcm", 1000, 4),
        ("cm", 40, 1),
        ("EulerDiscreteScheduler", 1000, 50),
    ] {
        let o = parse(json!({ "scheduler": name }), t).unwrap();
        assert_eq!(o.steps, want, "{name} on {t} training timesteps");
        assert_eq!(
            o.steps,
            default_steps(SchedulerKind::parse(name).unwrap(), t)
        );
    }
}

#[test]
fn given_values_are_kept() {
    let o = parse(
        json!({"scheduler": "dpm++", "steps": 7, "seed": MAX_SEED, "eta": 0.5, "batch": 3,
               "classLabels": [1, 0], "guidanceScale": -2.5}),
        1000,
    )
    .unwrap();
    assert_eq!(o.scheduler, SchedulerKind::DpmSolverMultistep);
    assert_eq!((o.steps, o.seed, o.eta, o.batch), (7, MAX_SEED, 0.5, 3));
    assert_eq!(o.class_labels, Some(vec![1, 0]));
    assert_eq!(o.guidance_scale, -2.5);
    // Integers written as floats (all JS numbers are) are integers.
    assert_eq!(parse(json!({"steps": 12.0}), 1000).unwrap().steps, 12);
}

#[test]
fn bad_values_name_the_key_the_expected_and_the_found() {
    let cases = [
        (
            json!({"scheduler": "heun"}),
            "scheduler: expected `ddpm`, `ddim`, `dpm++`, `euler`, `euler-a`, `lcm` or `cm`, found `heun`",
        ),
        (
            json!({"scheduler": 3}),
            "scheduler: expected `ddpm`, `ddim`, `dpm++`, `euler`, `euler-a`, `lcm` or `cm`, found 3",
        ),
        (
            json!({"steps": 0}),
            "steps: expected an integer from 1 to 1000, found 0",
        ),
        (
            json!({"steps": 1001}),
            "steps: expected an integer from 1 to 1000, found 1001",
        ),
        (
            json!({"steps": 2.5}),
            "steps: expected an integer from 1 to 1000, found 2.5",
        ),
        (
            json!({"steps": "10"}),
            "steps: expected an integer from 1 to 1000, found \"10\"",
        ),
        (
            json!({"seed": -1}),
            "seed: expected an integer from 0 to 9007199254740991, found -1",
        ),
        (
            json!({"batch": 65}),
            "batch: expected an integer from 1 to 64, found 65",
        ),
        (
            json!({"eta": -0.1}),
            "eta: expected a number >= 0, found -0.1",
        ),
        (
            json!({"eta": "x"}),
            "eta: expected a finite number, found \"x\"",
        ),
        (
            json!({"guidanceScale": [1]}),
            "guidanceScale: expected a finite number, found [1]",
        ),
        (
            json!({"classLabels": 3}),
            "classLabels: expected an array of class indices, found 3",
        ),
        (
            json!({"classLabels": [1, -2]}),
            "classLabels: expected class indices (integers >= 0), found -2",
        ),
        (
            json!([1, 2]),
            "sample options: expected an object, found an array",
        ),
    ];
    for (v, want) in cases {
        let e = parse(v.clone(), 1000).expect_err(&format!("{v} was accepted"));
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{v}");
        assert_eq!(e.message, want, "{v}");
    }
}
