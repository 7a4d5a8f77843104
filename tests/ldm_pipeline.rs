//! The unconditional latent-diffusion pipeline against diffusers' `LDMPipeline`
//! (tests/fixtures/pipelines/ldm_tiny, made by tools/make_latent_fixtures.py --only ldm): a
//! random-weight pipeline folder loaded as diffusers saved it gives, from diffusers' initial
//! latents, the latents along a 20-step DDIM run (eta 0), the same codebook entries for the
//! final latents and the same image. The pipeline file made from the folder samples the same
//! (exactly in f32), the CLI converts and samples it, and bad folders are refused clearly.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use common::{read_tensor, rel_err, to_vec};
use wasm_diffusion::pipelines::latent_diffusion::LatentDiffusion;
use wasm_diffusion::pipelines::pipeline_file::convert_ldm_pipeline_dir;
use wasm_diffusion::pipelines::SampleOptions;
use wasm_diffusion::weights::Quant;
use wasm_diffusion::SchedulerKind;

fn dir() -> PathBuf {
    common::fixtures().join("pipelines").join("ldm_tiny")
}

fn io() -> (Vec<u8>, serde_json::Value) {
    let d = dir();
    let io = std::fs::read(d.join("io.safetensors")).unwrap();
    let meta = serde_json::from_str(&std::fs::read_to_string(d.join("io.json")).unwrap()).unwrap();
    (io, meta)
}

/// diffusers' run: its initial latents, steps and eta.
fn diffusers_options(meta: &serde_json::Value, latents: Vec<f32>) -> SampleOptions {
    SampleOptions {
        scheduler: SchedulerKind::Ddim,
        steps: meta["num_inference_steps"].as_u64().unwrap() as usize,
        eta: meta["eta"].as_f64().unwrap(),
        batch: meta["batch_size"].as_u64().unwrap() as usize,
        init_noise: Some(latents),
        ..SampleOptions::default()
    }
}

fn indices_of(t: Tensor<3, burn::tensor::Int>) -> Vec<i64> {
    t.into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .unwrap()
}

#[test]
fn ldm_pipeline_matches_diffusers() {
    let pipe = LatentDiffusion::load_dir(&dir(), &Device::flex()).unwrap();
    let (io, meta) = io();
    let (_, latents) = read_tensor(&io, "latents");
    let mut run = pipe.start(&diffusers_options(&meta, latents)).unwrap();
    let want_ts: Vec<f64> = meta["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert_eq!(run.timesteps(), &want_ts[..]);

    // The tolerance: diffusers' own final latents move by `sensitivity` (about 1e-6) when its
    // initial latents move by 1e-6; f32 rounding in a different order of operations is a
    // perturbation of that size at every step, so the run is allowed 100 times it (1.1e-4).
    // Measured: 4.5e-7 on the final latents, 2.8e-7 on the decoding, 4.8e-7 on the image.
    let sensitivity = meta["perturbed_final_latents_rel_change"].as_f64().unwrap();
    let tolerance = 100.0 * sensitivity;

    // 1. the latents after the recorded steps
    let recorded: Vec<usize> = meta["recorded_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap() as usize)
        .collect();
    let (s, at_steps) = read_tensor(&io, "latents_at_steps");
    let per = s[1..].iter().product::<usize>();
    let mut worst = 0f64;
    while !run.is_done() {
        let info = run.step().unwrap();
        if let Some(k) = recorded.iter().position(|&r| r == info.step) {
            let want = &at_steps[k * per..(k + 1) * per];
            let e = rel_err(&to_vec(run.latents()), want);
            eprintln!(
                "ldm_tiny latents after step {}: relative error {e:e}",
                info.step
            );
            worst = worst.max(e);
        }
    }
    let (_, want_final) = read_tensor(&io, "final_latents");
    let e = rel_err(&to_vec(run.latents()), &want_final);
    eprintln!("ldm_tiny final latents: relative error {e:e} (tolerance {tolerance:e})");
    assert!(
        worst.max(e) < tolerance,
        "latents: relative error {:e}, tolerance {tolerance:e}",
        worst.max(e)
    );

    // 2. the codebook entries the final latents snap to, exactly
    let scaled = run.latents() / pipe.vqvae.config.scaling_factor;
    let got_idx = indices_of(pipe.vqvae.quantize(scaled).indices);
    let (_, want_idx) = read_tensor(&io, "indices");
    let want_idx: Vec<i64> = want_idx.iter().map(|&v| v as i64).collect();
    assert_eq!(got_idx, want_idx, "codebook indices of the final latents");

    // 3. the decoded image, and the pipeline's output (NHWC in [0, 1])
    let image = to_vec(run.decode());
    let (_, want_decoded) = read_tensor(&io, "decoded");
    let e = rel_err(&image, &want_decoded);
    eprintln!("ldm_tiny decoded: relative error {e:e}");
    assert!(e < tolerance, "decoded: relative error {e:e}");
    let (s, want_image) = read_tensor(&io, "image");
    let got = common::to_np_image(&image, &s);
    let e = rel_err(&got, &want_image);
    eprintln!("ldm_tiny image: relative error {e:e}");
    assert!(e < tolerance, "image: relative error {e:e}");
}

/// The image of a short seeded run of `pipe` (batch 2, DDIM with eta 0.5: the step noise is
/// drawn too), NCHW in about [-1, 1].
fn image_of(pipe: &LatentDiffusion) -> Vec<f32> {
    let opts = SampleOptions {
        steps: 5,
        seed: 7,
        eta: 0.5,
        batch: 2,
        ..SampleOptions::default()
    };
    let mut run = pipe.start(&opts).unwrap();
    while !run.is_done() {
        run.step().unwrap();
    }
    to_vec(run.decode())
}

#[test]
fn the_pipeline_file_samples_as_the_folder_does() {
    let device = Device::flex();
    let folder = LatentDiffusion::load_dir(&dir(), &device).unwrap();
    let want = image_of(&folder);
    assert!(want.iter().all(|v| v.is_finite()));
    // The same seed gives the same images.
    assert_eq!(image_of(&folder), want);
    // Measured image errors: f16 4.0e-4, int8 3.6e-2 (the codebook stays f32, but rounded U-Net
    // weights move the latents, and a moved latent can snap to another codebook entry).
    for (quant, tolerance) in [(Quant::F32, 0.0), (Quant::F16, 2e-3), (Quant::Int8, 5e-2)] {
        let (bytes, report) = convert_ldm_pipeline_dir(&dir(), quant, Some("ldm tiny")).unwrap();
        assert!(report.iter().any(|r| r.name.starts_with("unet.")));
        let codebook = report
            .iter()
            .find(|r| r.name == "vqvae.quantize.embedding.weight")
            .unwrap();
        assert_eq!(codebook.stored_as, "f32", "the codebook stays f32");
        let pipe = LatentDiffusion::load_file(&bytes, &device).unwrap();
        let got = image_of(&pipe);
        let e = rel_err(&got, &want);
        eprintln!(
            "ldm_tiny {quant:?}: {} bytes, image relative error {e:e}",
            bytes.len()
        );
        if quant == Quant::F32 {
            assert_eq!(got, want, "an f32 file samples exactly as the folder");
        }
        assert!(e <= tolerance, "{quant:?}: image relative error {e:e}");
    }
}

#[test]
fn pipeline_files_are_told_apart() {
    use wasm_diffusion::pipelines::pipeline_file::{
        convert_pipeline_dir, file_pipeline, PipelineQuant,
    };
    use wasm_diffusion::pipelines::stable_diffusion::StableDiffusion;
    let device = Device::flex();
    let (ldm, _) = convert_ldm_pipeline_dir(&dir(), Quant::Int8, None).unwrap();
    assert_eq!(file_pipeline(&ldm).as_deref(), Some("LDMPipeline"));
    let e = StableDiffusion::load_file(&ldm, &device)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "unsupported: metadata `pipeline`: expected `StableDiffusionPipeline`, found `LDMPipeline`"
    );
    let sd_dir = common::fixtures().join("pipelines").join("sd_tiny");
    let (sd, _) = convert_pipeline_dir(
        &sd_dir,
        PipelineQuant::defaults(Quant::Int8),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(
        file_pipeline(&sd).as_deref(),
        Some("StableDiffusionPipeline")
    );
    let e = LatentDiffusion::load_file(&sd, &device)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "unsupported: metadata `pipeline`: expected `LDMPipeline`, found `StableDiffusionPipeline`"
    );
    // A U-Net model file is no pipeline file.
    let unet_file = wasm_diffusion::convert::convert_dir(
        &common::unet_dir("plain"),
        Quant::F32,
        &Default::default(),
    )
    .unwrap()
    .0;
    assert_eq!(file_pipeline(&unet_file), None);
    // A cut file.
    let e = LatentDiffusion::load_file(&ldm[..ldm.len() / 2], &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected") && e.contains("found"), "{e}");
}

/// A copy of the fixture folder in a fresh temporary folder, without the paths in `skip`.
fn copy_fixture(tag: &str, skip: &[&str]) -> PathBuf {
    fn copy(src: &Path, dst: &Path, rel: &str, skip: &[&str]) {
        std::fs::create_dir_all(dst).unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if skip.contains(&r.as_str()) {
                continue;
            }
            if p.is_dir() {
                copy(&p, &dst.join(&name), &r, skip);
            } else {
                std::fs::copy(&p, dst.join(&name)).unwrap();
            }
        }
    }
    let d = std::env::temp_dir().join(format!("wd-ldm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    copy(&dir(), &d, "", skip);
    d
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn bad_folders_are_refused_naming_expected_and_found() {
    let device = Device::flex();
    let load = |d: &Path| {
        let e = LatentDiffusion::load_dir(d, &device)
            .unwrap_err()
            .to_string();
        let c = convert_ldm_pipeline_dir(d, Quant::F32, None)
            .unwrap_err()
            .to_string();
        assert_eq!(e, c, "the loader and the converter refuse alike");
        let _ = std::fs::remove_dir_all(d);
        e
    };

    // 1. no vqvae folder
    let d = copy_fixture("novq", &["vqvae"]);
    let e = load(&d);
    assert!(
        e.contains("vqvae/config.json") && e.contains("expected a readable file"),
        "{e}"
    );

    // 2. model_index.json without a vqvae
    let d = copy_fixture("noindex", &[]);
    edit_json(&d.join("model_index.json"), |v| {
        v.as_object_mut().unwrap().remove("vqvae");
    });
    assert_eq!(
        load(&d),
        "unsupported: model_index.json `vqvae`: expected [\"diffusers\", \"VQModel\"], found none"
    );

    // 3. an autoencoder of another kind
    let d = copy_fixture("kl", &[]);
    edit_json(&d.join("model_index.json"), |v| {
        v["vqvae"] = serde_json::json!(["diffusers", "AutoencoderKL"]);
    });
    assert_eq!(
        load(&d),
        "unsupported: model_index.json `vqvae`: expected [\"diffusers\", \"VQModel\"], found [\"diffusers\",\"AutoencoderKL\"]"
    );

    // 4. unsupported VQ options
    for (key, value, want) in [
        (
            "norm_type",
            serde_json::json!("spatial"),
            "unsupported: norm_type: expected `group`, found `spatial`",
        ),
        (
            "lookup_from_codebook",
            serde_json::json!(true),
            "unsupported: lookup_from_codebook: expected false",
        ),
    ] {
        let d = copy_fixture(key, &[]);
        edit_json(&d.join("vqvae/config.json"), |v| v[key] = value);
        let e = load(&d);
        assert!(e.starts_with(want), "{key}: {e}");
    }

    // 5. a codebook that does not fit the U-Net's latents
    let d = copy_fixture("dim", &[]);
    edit_json(&d.join("vqvae/config.json"), |v| {
        v["vq_embed_dim"] = 4.into()
    });
    assert_eq!(
        load(&d),
        "invalid config: unet in_channels 3 and out_channels 3: expected both equal to the vqvae's vq_embed_dim 4 (the latents it quantizes)"
    );

    // 6. weights that do not match the config (the loader and the converter word it apart)
    let d = copy_fixture("codebook", &[]);
    edit_json(&d.join("vqvae/config.json"), |v| {
        v["num_vq_embeddings"] = 32.into()
    });
    let e = LatentDiffusion::load_dir(&d, &device)
        .unwrap_err()
        .to_string();
    let c = convert_ldm_pipeline_dir(&d, Quant::F32, None)
        .unwrap_err()
        .to_string();
    let _ = std::fs::remove_dir_all(&d);
    for e in [e, c] {
        assert!(
            e.contains("quantize.embedding.weight")
                && e.contains("expected shape [32, 3]")
                && e.contains("found [64, 3]"),
            "{e}"
        );
    }
}

#[test]
fn an_unconditional_pipeline_refuses_labels_and_guidance() {
    let pipe = LatentDiffusion::load_dir(&dir(), &Device::flex()).unwrap();
    for opts in [
        SampleOptions {
            class_labels: Some(vec![1]),
            ..SampleOptions::default()
        },
        SampleOptions {
            guidance_scale: 3.0,
            ..SampleOptions::default()
        },
    ] {
        let e = pipe.start(&opts).err().unwrap().to_string();
        assert!(
            e.contains("LDMPipeline is unconditional: expected no class labels and guidance 1"),
            "{e}"
        );
    }
    let e = pipe
        .start(&SampleOptions {
            init_noise: Some(vec![0.0; 5]),
            ..SampleOptions::default()
        })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("expected 192 values (1x3x8x8), found 5"), "{e}");
}

#[test]
fn cli_converts_and_samples_an_ldm_pipeline() {
    let bin = env!("CARGO_BIN_EXE_wasm-diffusion");
    let tmp = std::env::temp_dir().join(format!("wd-ldm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let file = tmp.join("ldm.int8.safetensors");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?} failed: {text}");
        text
    };
    let text = run(&[
        "convert".as_ref(),
        dir().as_os_str(),
        "--quant".as_ref(),
        "int8".as_ref(),
        "-o".as_ref(),
        file.as_os_str(),
    ]);
    assert!(text.contains("vqvae.") || text.contains("unet."), "{text}");
    let info = run(&["info".as_ref(), file.as_os_str()]);
    for want in ["LDMPipeline", "unet ", "vqvae ", "int8", "codebook entries"] {
        assert!(info.contains(want), "{want}: {info}");
    }
    let e = std::process::Command::new(bin)
        .args(["sample".as_ref(), file.as_os_str()])
        .args(["--prompt", "a cat", "-o"])
        .arg(tmp.join("x.png"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&e.stderr);
    assert!(
        e.contains(
            "--prompt: expected a text-to-image pipeline, found an unconditional LDM pipeline"
        ),
        "{e}"
    );
    let png = tmp.join("grid.png");
    let npy = tmp.join("image.npy");
    let text = run(&[
        "sample".as_ref(),
        file.as_os_str(),
        "--scheduler".as_ref(),
        "ddim".as_ref(),
        "--steps".as_ref(),
        "4".as_ref(),
        "--seed".as_ref(),
        "3".as_ref(),
        "--eta".as_ref(),
        "0.3".as_ref(),
        "--batch".as_ref(),
        "4".as_ref(),
        "--out-npy".as_ref(),
        npy.as_os_str(),
        "-o".as_ref(),
        png.as_os_str(),
    ]);
    assert!(text.contains("4x3x16x16"), "{text}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    // Four 16x16 images in a 2x2 grid, 2 pixels apart.
    assert_eq!((reader.info().width, reader.info().height), (34, 34));
    assert!(std::fs::metadata(&npy).unwrap().len() > 4 * 4 * 3 * 16 * 16);
    // The folder itself samples too; a class label is refused.
    let out = std::process::Command::new(bin)
        .args(["sample".as_ref(), dir().as_os_str()])
        .args(["--steps", "2", "--class", "1", "-o"])
        .arg(tmp.join("x.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected no --class"), "{err}");
    let text = run(&[
        "sample".as_ref(),
        dir().as_os_str(),
        "--steps".as_ref(),
        "2".as_ref(),
        "-o".as_ref(),
        tmp.join("one.png").as_os_str(),
    ]);
    assert!(text.contains("1x3x16x16"), "{text}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
