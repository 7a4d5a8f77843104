//! Scheduler settings and sampling options that used to give NaN, an empty run or a panic are
//! refused up front with a message that says the usable range; every other combination
//! samples finite values.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use wasm_diffusion::convert::{convert_dir, ConvertOptions};
use wasm_diffusion::error::ErrorKind;
use wasm_diffusion::pipelines::{SampleOptions, SamplingRun};
use wasm_diffusion::schedulers::{self, TimestepSpacing};
use wasm_diffusion::weights::Quant;
use wasm_diffusion::SchedulerConfig;
use wasm_diffusion::{load_model, LoadedModel, SchedulerKind};

const KINDS: [SchedulerKind; 7] = SchedulerKind::ALL;

fn classcond() -> LoadedModel {
    let (bytes, _) = convert_dir(
        &unet_dir("classcond"),
        Quant::F32,
        &ConvertOptions {
            null_class: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    load_model(&bytes, &Device::flex()).unwrap()
}

fn build_err(kind: SchedulerKind, cfg: &SchedulerConfig, steps: usize) -> wasm_diffusion::Error {
    match schedulers::build(kind, cfg, steps, 0.0) {
        Err(e) => e,
        Ok(s) => panic!(
            "{kind:?} {steps} steps: expected an error, found {:?}",
            s.timesteps()
        ),
    }
}

#[test]
fn dpm_solver_with_repeated_leading_timesteps_is_refused_with_the_usable_range() {
    // leading spacing: ratio = 1000 / (steps + 1) is 0 at 1000 steps: every timestep would be
    // 0, and the second-order update divides by a zero step in lambda (a black NaN image).
    let cfg = SchedulerConfig {
        timestep_spacing: Some(TimestepSpacing::Leading),
        ..Default::default()
    };
    let e = build_err(SchedulerKind::DpmSolverMultistep, &cfg, 1000);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert_eq!(
        e.message,
        "steps: scheduler `dpm++` with timestep_spacing `leading` visits timestep 0 twice at 1000 steps on 1000 training timesteps (the update would divide by zero); expected 1 to 999 steps"
    );
    assert!(schedulers::build(SchedulerKind::DpmSolverMultistep, &cfg, 999, 0.0).is_ok());
    let linspace = SchedulerConfig {
        timestep_spacing: Some(TimestepSpacing::Linspace),
        ..Default::default()
    };
    let e = build_err(SchedulerKind::DpmSolverMultistep, &linspace, 1000);
    assert!(
        e.message.ends_with("expected 1 to 999 steps"),
        "{}",
        e.message
    );
}

#[test]
fn a_lambda_min_clipped_that_clips_everything_is_refused() {
    let cfg = SchedulerConfig {
        lambda_min_clipped: 7.5,
        ..Default::default()
    };
    let e = build_err(SchedulerKind::DpmSolverMultistep, &cfg, 20);
    assert_eq!(e.kind, ErrorKind::Config);
    assert_eq!(
        e.message,
        "scheduler `dpm++`: expected at least one timestep, found none: lambda_min_clipped = 7.5 clips all 1000 training timesteps (use a lower lambda_min_clipped)"
    );
    // Clipping most of the schedule leaves few usable steps.
    let cfg = SchedulerConfig {
        lambda_min_clipped: 4.0,
        ..Default::default()
    };
    let e = build_err(SchedulerKind::DpmSolverMultistep, &cfg, 500);
    assert!(e.message.contains("visits timestep"), "{}", e.message);
    assert!(e.message.contains("; expected 1 to "), "{}", e.message);
}

#[test]
fn betas_too_small_for_f32_are_refused() {
    let cfg = SchedulerConfig {
        beta_start: 1e-12,
        beta_end: 1e-12,
        ..Default::default()
    };
    let e = build_err(SchedulerKind::DpmSolverMultistep, &cfg, 10);
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(
        e.message
            .starts_with("beta schedule: expected alphas_cumprod to differ between timesteps")
            && e.message
                .ends_with("(beta_start = 0.000000000001 is too small)"),
        "{}",
        e.message
    );
}

/// Every scheduler, spacing, clipping and step count either is refused at build time or runs
/// to the end with finite values (zero model output on a tiny sample: the scheduler math only).
#[test]
fn every_schedule_is_refused_or_finite() {
    let device = Device::flex();
    let mut refused = 0;
    let mut ran = 0;
    for spacing in [
        TimestepSpacing::Leading,
        TimestepSpacing::Linspace,
        TimestepSpacing::Trailing,
    ] {
        for lambda_min_clipped in [f64::NEG_INFINITY, -5.1, 0.0, 3.0, 9.0] {
            for steps_offset in [0, 1] {
                let cfg = SchedulerConfig {
                    timestep_spacing: Some(spacing),
                    lambda_min_clipped,
                    steps_offset,
                    ..Default::default()
                };
                for kind in KINDS {
                    for steps in [1, 2, 3, 7, 50, 333, 998, 999, 1000] {
                        let mut s = match schedulers::build(kind, &cfg, steps, 0.5) {
                            Err(_) => {
                                refused += 1;
                                continue;
                            }
                            Ok(s) => s,
                        };
                        ran += 1;
                        let mut x = Tensor::<4>::from_data(
                            TensorData::new(vec![0.3f32, -0.7, 1.2, 0.1], [1, 1, 2, 2]),
                            &device,
                        );
                        for i in 0..s.timesteps().len() {
                            let noise = s
                                .needs_noise(i)
                                .then(|| Tensor::<4>::ones([1, 1, 2, 2], &device) * 0.5);
                            let out = s
                                .step(Tensor::zeros([1, 1, 2, 2], &device), i, x, noise)
                                .unwrap();
                            x = out.prev_sample;
                        }
                        let v = to_vec(x);
                        assert!(
                            v.iter().all(|x| x.is_finite()),
                            "{kind:?} {spacing} clip {lambda_min_clipped} offset {steps_offset} {steps} steps: {v:?}"
                        );
                    }
                }
            }
        }
    }
    println!("{ran} schedules ran to finite values, {refused} refused");
    assert!(ran > 300 && refused > 10, "ran {ran}, refused {refused}");
}

#[test]
fn sampling_options_that_would_give_nan_are_refused() {
    let model = classcond();
    let err = |opts: SampleOptions| match SamplingRun::new(&model, &opts) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected an error for {opts:?}"),
    };
    let base = SampleOptions {
        class_labels: Some(vec![1]),
        steps: 3,
        ..Default::default()
    };
    assert_eq!(
        err(SampleOptions {
            guidance_scale: 1e308,
            ..base.clone()
        }),
        "invalid argument: guidance scale: expected a number from -100 to 100, found 1e308"
    );
    assert_eq!(
        err(SampleOptions {
            guidance_scale: f64::NAN,
            ..base.clone()
        }),
        "invalid argument: guidance scale: expected a number from -100 to 100, found NaN"
    );
    let mut noise = vec![0.0f32; 3 * 16 * 16];
    noise[7] = f32::NAN;
    assert_eq!(
        err(SampleOptions {
            init_noise: Some(noise),
            ..base.clone()
        }),
        "invalid argument: initial noise: expected finite values, found NaN at index 7"
    );
    assert_eq!(
        err(SampleOptions {
            eta: f64::INFINITY,
            ..base.clone()
        }),
        "invalid argument: eta: expected a number >= 0, found inf"
    );
    assert_eq!(
        err(SampleOptions {
            steps: 0,
            ..base.clone()
        }),
        "invalid argument: steps: expected 1 to 1000 (num_train_timesteps), found 0"
    );
}
