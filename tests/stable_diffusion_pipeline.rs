//! The text-to-image pipeline against diffusers' `StableDiffusionPipeline`
//! (tests/fixtures/pipelines/sd_tiny, made by tools/make_latent_fixtures.py): a random-weight
//! pipeline folder loaded as diffusers saved it; the prompt embeddings and the image of a
//! 4-step DDIM run with guidance 7.5 from the same latents match.

mod common;

use burn::tensor::Device;
use common::{read_tensor, rel_err, to_vec};
use wasm_diffusion::pipelines::stable_diffusion::{StableDiffusion, TextToImage};
use wasm_diffusion::SchedulerKind;

fn values<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

#[test]
fn text_to_image_matches_diffusers() {
    let dir = common::fixtures().join("pipelines").join("sd_tiny");
    let pipe = StableDiffusion::load_dir(&dir, &Device::flex()).unwrap();
    let io = std::fs::read(dir.join("io.safetensors")).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("io.json")).unwrap()).unwrap();
    let prompt = meta["prompt"].as_str().unwrap();
    let negative = meta["negative_prompt"].as_str().unwrap();

    // 1. prompt embeddings
    for (text, key) in [
        (prompt, "prompt_embeds"),
        (negative, "negative_prompt_embeds"),
    ] {
        let (_, want) = read_tensor(&io, key);
        let e = rel_err(&values(pipe.encode_prompt(text).unwrap()), &want);
        assert!(e < 1e-5, "{key}: relative error {e:e}");
    }

    // 2. the guided run from diffusers' latents, decoded
    let (_, latents) = read_tensor(&io, "latents");
    let opts = TextToImage {
        prompt: prompt.into(),
        negative_prompt: negative.into(),
        steps: meta["num_inference_steps"].as_u64().unwrap() as usize,
        guidance_scale: meta["guidance_scale"].as_f64().unwrap(),
        scheduler: SchedulerKind::Ddim,
        latents: Some(latents),
        ..TextToImage::default()
    };
    let mut run = pipe.start(&opts).unwrap();
    while !run.is_done() {
        run.step().unwrap();
    }
    let image = to_vec(run.decode()); // [1, 3, H, W] in [-1, 1]
    let (s, want) = read_tensor(&io, "image"); // [1, H, W, 3] in [0, 1]
    let got = common::to_np_image(&image, &s);
    let e = rel_err(&got, &want);
    eprintln!("sd_tiny image: relative error {e:e}");
    assert!(e < 1e-4, "image: relative error {e:e}");
}

#[test]
fn a_folder_that_is_not_a_pipeline_is_refused() {
    let dir = common::fixtures().join("unets_cond").join("sd1_tiny");
    let e = StableDiffusion::load_dir(&dir, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model_index.json") && e.contains("expected a readable file"),
        "{e}"
    );
}

/// The image of a short guided run of `pipe` (seeded latents), NCHW in [-1, 1].
fn image_of(pipe: &StableDiffusion) -> Vec<f32> {
    let opts = TextToImage {
        prompt: "a red apple".into(),
        negative_prompt: "blurry".into(),
        steps: 3,
        seed: 7,
        ..TextToImage::default()
    };
    let mut run = pipe.start(&opts).unwrap();
    while !run.is_done() {
        run.step().unwrap();
    }
    to_vec(run.decode())
}

#[test]
fn the_pipeline_file_samples_as_the_folder_does_at_every_quantization() {
    use wasm_diffusion::pipelines::pipeline_file::{
        convert_pipeline_dir, PipelineConvertOptions, PipelineQuant,
    };
    use wasm_diffusion::weights::Quant;
    let dir = common::fixtures().join("pipelines").join("sd_tiny");
    let device = Device::flex();
    let want = image_of(&StableDiffusion::load_dir(&dir, &device).unwrap());
    for (quant, tolerance) in [
        (Quant::F32, 1e-6),
        (Quant::F16, 1e-2),
        (Quant::Int8, 5e-2),
        (Quant::Int4, 0.5),
    ] {
        let options = PipelineConvertOptions {
            name: Some("sd tiny"),
            ..Default::default()
        };
        let (bytes, report) =
            convert_pipeline_dir(&dir, PipelineQuant::uniform(quant), &options).unwrap();
        assert!(report.iter().any(|r| r.name.starts_with("text_encoder.")));
        let pipe = StableDiffusion::load_file(&bytes, &device).unwrap();
        let got = image_of(&pipe);
        let e = rel_err(&got, &want);
        eprintln!(
            "{quant:?}: {} bytes, image relative error {e:e}",
            bytes.len()
        );
        assert!(e <= tolerance, "{quant:?}: image relative error {e:e}");
        assert!(got.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn a_pipeline_file_is_refused_clearly_where_it_does_not_belong() {
    use wasm_diffusion::models::model_file::ModelFile;
    use wasm_diffusion::pipelines::pipeline_file::{convert_pipeline_dir, PipelineQuant};
    use wasm_diffusion::weights::Quant;
    let dir = common::fixtures().join("pipelines").join("sd_tiny");
    let (bytes, _) = convert_pipeline_dir(
        &dir,
        PipelineQuant::defaults(Quant::Int8),
        &Default::default(),
    )
    .unwrap();
    // The pixel loader names the version it expects.
    let e = ModelFile::parse(&bytes).unwrap_err().to_string();
    assert_eq!(
        e,
        "unsupported: metadata `format_version`: expected 1, found `2`"
    );
    // A cut file, and a U-Net file given to the pipeline loader.
    let e = StableDiffusion::load_file(&bytes[..bytes.len() / 2], &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected") && e.contains("found"), "{e}");
    let unet_file = wasm_diffusion::convert::convert_dir(
        &common::unet_dir("plain"),
        Quant::F32,
        &Default::default(),
    )
    .unwrap()
    .0;
    let e = StableDiffusion::load_file(&unet_file, &Device::flex())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "unsupported: metadata `format_version`: expected 2 (a pipeline file), found `1`"
    );
}

#[test]
fn a_folder_with_only_tokenizer_json_loads_the_same() {
    // transformers 5.x saves the tokenizer as tokenizer.json alone.
    let src = common::fixtures().join("pipelines").join("sd_tiny");
    let dir = std::env::temp_dir().join(format!("wd-sd-tokjson-{}", std::process::id()));
    for sub in ["", "tokenizer", "text_encoder", "unet", "vae", "scheduler"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for entry in std::fs::read_dir(src.join(sub)).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if p.is_file() && name != "vocab.json" && name != "merges.txt" {
                std::fs::copy(&p, dir.join(sub).join(&name)).unwrap();
            }
        }
    }
    let device = Device::flex();
    let a = StableDiffusion::load_dir(&src, &device).unwrap();
    let b = StableDiffusion::load_dir(&dir, &device).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    for prompt in ["a red apple", "Ünïcode, 123 & emoji 🍎"] {
        assert_eq!(
            a.tokenizer.encode(prompt),
            b.tokenizer.encode(prompt),
            "{prompt}"
        );
    }
}

/// The image error of quantizing one component at a time (the rest f32): what the defaults of
/// `PipelineQuant::defaults` rest on. Printed for the record; the bounds are loose ceilings.
#[test]
fn component_quantization_errors() {
    use wasm_diffusion::pipelines::pipeline_file::{convert_pipeline_dir, PipelineQuant};
    use wasm_diffusion::weights::Quant;
    let dir = common::fixtures().join("pipelines").join("sd_tiny");
    let device = Device::flex();
    let want = image_of(&StableDiffusion::load_dir(&dir, &device).unwrap());
    let f32s = PipelineQuant::uniform(Quant::F32);
    let mut errors = Vec::new();
    for q in [Quant::F16, Quant::Int8, Quant::Int4] {
        for (name, quants) in [
            ("unet", PipelineQuant { unet: q, ..f32s }),
            (
                "text_encoder",
                PipelineQuant {
                    text_encoder: q,
                    ..f32s
                },
            ),
            ("vae", PipelineQuant { vae: q, ..f32s }),
        ] {
            let (bytes, _) = convert_pipeline_dir(&dir, quants, &Default::default()).unwrap();
            let e = rel_err(
                &image_of(&StableDiffusion::load_file(&bytes, &device).unwrap()),
                &want,
            );
            eprintln!("{name} at {q:?} alone: image relative error {e:.3e}");
            errors.push((name, q, e));
        }
    }
    let (bytes, _) = convert_pipeline_dir(
        &dir,
        PipelineQuant::defaults(Quant::Int8),
        &Default::default(),
    )
    .unwrap();
    let e = rel_err(
        &image_of(&StableDiffusion::load_file(&bytes, &device).unwrap()),
        &want,
    );
    eprintln!("defaults for int8 (unet, text encoder int8; vae f16): {e:.3e}");
    for (name, q, e) in errors {
        let ceiling = match q {
            Quant::F16 => 1e-2,
            Quant::Int8 => 5e-2,
            _ => 0.6,
        };
        assert!(e <= ceiling, "{name} at {q:?}: {e:e}");
    }
}

/// Without a preview autoencoder the file carries a fitted linear preview; with one (TAESD),
/// runs preview through it. Both give finite images in [-1, 1] once a step is done.
#[test]
fn previews_come_from_the_linear_map_or_the_tiny_autoencoder() {
    use wasm_diffusion::pipelines::pipeline_file::{
        convert_pipeline_dir, read_file_configs, PipelineConvertOptions, PipelineQuant,
    };
    use wasm_diffusion::pipelines::preview::Preview;
    use wasm_diffusion::weights::container::Container;
    use wasm_diffusion::weights::Quant;
    let dir = common::fixtures().join("pipelines").join("sd_tiny");
    let taesd = common::fixtures().join("autoencoders").join("taesd_tiny");
    let device = Device::flex();
    let opts = TextToImage {
        prompt: "a red apple".into(),
        steps: 2,
        ..TextToImage::default()
    };
    for preview_vae in [None, Some(taesd.as_path())] {
        let options = PipelineConvertOptions {
            preview_vae,
            ..Default::default()
        };
        let (bytes, _) =
            convert_pipeline_dir(&dir, PipelineQuant::defaults(Quant::Int8), &options).unwrap();
        let (configs, quants, _) = read_file_configs(&Container::parse(&bytes).unwrap()).unwrap();
        assert_eq!(quants.vae, Quant::F16);
        let pipe = StableDiffusion::load_file(&bytes, &device).unwrap();
        let mut run = pipe.start(&opts).unwrap();
        assert!(run.preview().unwrap().is_none(), "no preview before a step");
        run.step().unwrap();
        let p = run.preview().unwrap().expect("a preview after a step");
        let v = to_vec(p.clone());
        assert!(v.iter().all(|x| x.is_finite() && (-1.0..=1.0).contains(x)));
        match (&pipe.preview, preview_vae) {
            (Some(Preview::Linear(map)), None) => {
                // latent resolution; the fit explains the images better than their mean does
                assert_eq!(p.dims(), [1, 3, 8, 8]);
                assert_eq!(configs.latent_rgb.as_ref(), Some(map));
                eprintln!(
                    "linear preview fit RMS {} (mean colour {})",
                    map.fit_rms, map.baseline_rms
                );
                assert!(map.fit_rms < map.baseline_rms, "{map:?}");
            }
            (Some(Preview::Tiny(_)), Some(_)) => {
                assert!(configs.latent_rgb.is_none());
                assert_eq!(p.dims()[..2], [1, 3]);
            }
            (other, _) => panic!("unexpected preview {other:?}"),
        }
    }
}

/// Whole runs against diffusers (tests/fixtures/pipelines/sd_runs.*, made by
/// tools/make_sd_run_fixtures.py): `StableDiffusionPipeline` for 20 DDIM steps, 4 Euler steps and
/// SD-Turbo's one trailing Euler step (guidance 0), and on an SD 2.x-shaped pipeline (linear
/// projections, upcast attention, gelu CLIP, `!` padding, v-prediction) 10 DDIM and 4 Euler steps; `StableDiffusionImg2ImgPipeline` with DDIM
/// and with DPM-Solver++ started part-way; `StableDiffusionInpaintPipeline` with mask blending on
/// the ordinary U-Net (from noise and part-way) and with the 9-channel inpainting U-Net. The same
/// prompts, image, mask, strength and random draws give the same image.
///
/// Tolerance: the fixture records how far diffusers' own image moves when its initial noise is
/// perturbed by 1e-6: 1.5e-6 to 6.3e-6 of the image's scale. Our errors sit at that floor
/// (f32 arithmetic in another order is such a perturbation); 1e-4 leaves room for other CPUs'
/// summation orders and fails on any real divergence (a wrong timestep or scaling moves the
/// image by 1e-2 or more).
#[test]
fn whole_runs_match_diffusers() {
    use wasm_diffusion::pipelines::img2img::ImageInput;
    use wasm_diffusion::schedulers::TimestepSpacing;
    let root = common::fixtures().join("pipelines");
    let io = std::fs::read(root.join("sd_runs.safetensors")).unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("sd_runs.json")).unwrap()).unwrap();
    let (_, image) = read_tensor(&io, "image"); // [1, 3, 16, 16] in [-1, 1]
    let (_, mask) = read_tensor(&io, "mask"); // [16, 16]
    let device = Device::flex();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut pipe =
            StableDiffusion::load_dir(&root.join(case["folder"].as_str().unwrap()), &device)
                .unwrap();
        let scheduler = match case["scheduler"].as_str().unwrap() {
            "euler-trailing" => {
                pipe.scheduler.timestep_spacing = Some(TimestepSpacing::Trailing);
                "euler"
            }
            other => other,
        };
        let opts = TextToImage {
            prompt: case["prompt"].as_str().unwrap().into(),
            negative_prompt: case["negative_prompt"].as_str().unwrap().into(),
            steps: case["steps"].as_u64().unwrap() as usize,
            guidance_scale: case["guidance_scale"].as_f64().unwrap(),
            scheduler: SchedulerKind::parse(scheduler).unwrap(),
            latents: Some(read_tensor(&io, &format!("{name}.noise")).1),
            image: case["image"].as_bool().unwrap().then(|| ImageInput {
                image: image.clone(),
                shape: [3, 16, 16],
                strength: case["strength"].as_f64().unwrap(),
                mask: case["mask"].as_bool().unwrap().then(|| mask.clone()),
            }),
            posterior_noise: case["posterior"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| read_tensor(&io, n.as_str().unwrap()).1)
                .collect(),
            ..TextToImage::default()
        };
        let mut run = pipe.start(&opts).unwrap();
        while !run.is_done() {
            run.step().unwrap();
        }
        let image_out = to_vec(run.decode());
        let (s, want) = read_tensor(&io, &format!("{name}.out")); // [1, H, W, 3] in [0, 1]
        let got = common::to_np_image(&image_out, &s);
        let e = rel_err(&got, &want);
        let floor = case["sensitivity_1e-6"].as_f64().unwrap();
        eprintln!(
            "{name}: {} steps, relative error {e:.2e} (a 1e-6 perturbation moves diffusers by {floor:.2e})",
            run.total_steps()
        );
        assert!(e < 1e-4, "{name}: relative error {e:e}");
    }
}

/// Bad image inputs are refused up front, naming what was expected and found.
#[test]
fn bad_image_inputs_are_refused() {
    use wasm_diffusion::pipelines::img2img::ImageInput;
    let root = common::fixtures().join("pipelines");
    let device = Device::flex();
    let pipe = StableDiffusion::load_dir(&root.join("sd_tiny"), &device).unwrap();
    let image = |shape: [usize; 3], strength: f64, mask: Option<Vec<f32>>| TextToImage {
        image: Some(ImageInput {
            image: vec![0.0; shape.iter().product()],
            shape,
            strength,
            mask,
        }),
        steps: 4,
        ..TextToImage::default()
    };
    let err = |o: TextToImage| match pipe.start(&o) {
        Err(e) => e.to_string(),
        Ok(_) => "accepted".to_string(),
    };
    let e = err(image([1, 16, 16], 0.5, None));
    assert!(
        e.contains("init image: expected 3 channels of 16x16") && e.contains("found 1 channels"),
        "{e}"
    );
    let e = err(TextToImage {
        height: Some(32),
        ..image([3, 16, 16], 0.5, None)
    });
    assert!(
        e.contains("expected 3 channels of 32x16") && e.contains("of 16x16"),
        "{e}"
    );
    for s in [0.0, 1.5, f64::NAN] {
        let e = err(image([3, 16, 16], s, None));
        assert!(e.contains("strength: expected a number in (0, 1]"), "{e}");
    }
    let e = err(image([3, 16, 16], 0.1, None));
    assert!(e.contains("expected at least one step to run"), "{e}");
    let e = err(image([3, 16, 16], 1.0, Some(vec![1.0; 15])));
    assert!(
        e.contains("mask: expected one channel of 16x16 (256 values"),
        "{e}"
    );
    let e = err(image([3, 16, 15], 1.0, None));
    assert!(
        e.contains("width: expected a multiple of 2") && e.contains("found 15"),
        "{e}"
    );
    // The inpainting U-Net needs an image and a mask.
    let inpaint = StableDiffusion::load_dir(&root.join("sd_inpaint_tiny"), &device).unwrap();
    let e = inpaint
        .start(&TextToImage::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("9 input channels (an inpainting U-Net): expected an init image and a mask, found neither"), "{e}");
    let e = inpaint
        .start(&image([3, 16, 16], 1.0, None))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("found no mask"), "{e}");
}

/// A copy of the sd_tiny folder under a fresh temporary name, for tests that edit it.
fn sd_tiny_copy(tag: &str) -> std::path::PathBuf {
    let src = common::fixtures().join("pipelines").join("sd_tiny");
    let dir = std::env::temp_dir().join(format!("wd-sd-{tag}-{}", std::process::id()));
    for sub in ["", "tokenizer", "text_encoder", "unet", "vae", "scheduler"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for entry in std::fs::read_dir(src.join(sub)).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, dir.join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    dir
}

/// SD 2.x's tokenizer pads with `!` (`pad_token` in tokenizer_config.json): the folder and the
/// file made from it pad the same way; a vocabulary larger than the text encoder's table is
/// refused, naming both sizes.
#[test]
fn the_pad_token_and_vocabulary_size_come_from_the_folder() {
    use wasm_diffusion::pipelines::pipeline_file::{convert_pipeline_dir, PipelineQuant};
    use wasm_diffusion::text::MAX_LENGTH;
    use wasm_diffusion::weights::Quant;
    let dir = sd_tiny_copy("pad");
    let config = dir.join("tokenizer/tokenizer_config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    v["pad_token"] = serde_json::json!({"content": "!", "lstrip": false});
    std::fs::write(&config, v.to_string()).unwrap();
    let device = Device::flex();
    let folder = StableDiffusion::load_dir(&dir, &device).unwrap();
    let bang = folder.tokenizer.token_id("!").unwrap();
    let ids = folder
        .tokenizer
        .encode_padded("a red apple", MAX_LENGTH)
        .unwrap()
        .ids;
    assert_eq!(ids[MAX_LENGTH - 1], bang, "{ids:?}");
    let (bytes, _) = convert_pipeline_dir(
        &dir,
        PipelineQuant::defaults(Quant::Int8),
        &Default::default(),
    )
    .unwrap();
    let file = StableDiffusion::load_file(&bytes, &device).unwrap();
    assert_eq!(
        file.tokenizer
            .encode_padded("a red apple", MAX_LENGTH)
            .unwrap()
            .ids,
        ids
    );
    // A text encoder whose table is smaller than the vocabulary.
    let te = dir.join("text_encoder/config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&te).unwrap()).unwrap();
    v["vocab_size"] = serde_json::json!(300);
    std::fs::write(&te, v.to_string()).unwrap();
    let e = StableDiffusion::load_dir(&dir, &device)
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        e.contains("expected token ids below the text encoder's vocab_size 300")
            && e.contains("ids up to 513"),
        "{e}"
    );
}

/// A folder missing a component, or naming another pipeline, is refused with the path and
/// what was expected.
#[test]
fn missing_or_unsupported_components_are_named() {
    let device = Device::flex();
    let dir = sd_tiny_copy("missing");
    std::fs::remove_dir_all(dir.join("vae")).unwrap();
    let e = StableDiffusion::load_dir(&dir, &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("vae/config.json") && e.contains("expected a readable file"),
        "{e}"
    );
    let index = dir.join("model_index.json");
    std::fs::write(&index, r#"{"_class_name": "KandinskyPipeline"}"#).unwrap();
    let e = StableDiffusion::load_dir(&dir, &device)
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        e.contains("expected a StableDiffusion pipeline, found `KandinskyPipeline`"),
        "{e}"
    );
}

/// One prompt per image: image i of a batch with prompts [a, b] is the image of a one-image run
/// of prompt i from the same seed (each image has its own noise stream). The JS-style options
/// object says the same, and a wrong count or type is refused.
#[test]
fn one_prompt_per_image() {
    let pipe = StableDiffusion::load_dir(
        &common::fixtures().join("pipelines").join("sd_tiny"),
        &Device::flex(),
    )
    .unwrap();
    let run = |opts: &TextToImage| {
        let mut r = pipe.start(opts).unwrap();
        while !r.is_done() {
            r.step().unwrap();
        }
        to_vec(r.decode())
    };
    let json =
        serde_json::json!({"prompt": ["a red apple", "a green pear"], "steps": 3, "seed": 5});
    let both = TextToImage::from_json(&json, 1000, || 0, None).unwrap();
    assert_eq!(both.batch, 2);
    let pair = run(&both);
    let single = |p: &str| {
        run(&TextToImage {
            prompt: p.into(),
            steps: 3,
            seed: 5,
            ..TextToImage::default()
        })
    };
    let per = pair.len() / 2;
    assert_eq!(&pair[..per], &single("a red apple")[..]);
    // The second image has its own noise stream: compare with the second item of a batch of
    // two equal prompts.
    let same = run(&TextToImage {
        prompt: "a green pear".into(),
        steps: 3,
        seed: 5,
        batch: 2,
        ..TextToImage::default()
    });
    assert_eq!(&pair[per..], &same[per..]);
    for (json, want) in [
        (
            serde_json::json!({"prompt": ["a", 3]}),
            "prompt: expected a string or an array of strings (one per image), found a number",
        ),
        (
            serde_json::json!({"prompt": []}),
            "prompt: expected a string or an array of strings (one per image), found an array",
        ),
    ] {
        let e = TextToImage::from_json(&json, 1000, || 0, None).unwrap_err();
        assert_eq!(e.message, want);
    }
    let three = TextToImage::from_json(
        &serde_json::json!({"prompt": ["a", "b", "c"], "batch": 2}),
        1000,
        || 0,
        None,
    )
    .unwrap();
    let e = pipe.start(&three).err().unwrap();
    assert_eq!(
        e.message,
        "prompt: expected one prompt or 2 (the batch size), found 3"
    );
}

/// The latent run's memory estimate against what the scale benchmark measured for SD-Turbo's
/// shapes on the CPU (BENCHMARKS.md, "Latent diffusion at scale": +64 MiB for a 512x512 U-Net
/// step at batch 1, +770 MiB for the decode): within a factor of 3 of each, never below half.
/// At WebGPU's default 128 MiB binding limit a 512x512 decode does not fit (its 256-channel
/// 512x512 tensor is 256 MiB), which a browser run is told up front.
#[test]
fn latent_run_estimate_follows_the_measured_peaks() {
    use wasm_diffusion::models::autoencoders::AutoencoderKLConfig;
    use wasm_diffusion::models::unets::UNet2DConditionConfig;
    use wasm_diffusion::pipelines::stable_diffusion::estimate_latent_run;
    let read =
        |n: &str| std::fs::read_to_string(common::fixtures().join("configs").join(n)).unwrap();
    let unet = UNet2DConditionConfig::from_json(&read("sd-turbo-unet.json")).unwrap();
    let vae = AutoencoderKLConfig::from_json(&read("sd-turbo-vae.json")).unwrap();
    let e = estimate_latent_run(&unet, &vae, 1, false, [64, 64]);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "sd-turbo 512x512: U-Net {:.0} MiB, decode {:.0} MiB, largest {:.0} MiB",
        mib(e.unet),
        mib(e.decode),
        mib(e.largest_buffer)
    );
    for (est, measured) in [(mib(e.unet), 64.0), (mib(e.decode), 770.0)] {
        assert!(
            est >= measured / 2.0 && est <= measured * 3.0,
            "{est} MiB vs {measured} MiB measured"
        );
    }
    assert!(e.largest_buffer > 128 << 20);
    // Guidance doubles the U-Net's batch, not the decode's.
    let g = estimate_latent_run(&unet, &vae, 1, true, [64, 64]);
    assert!(g.unet > e.unet && g.decode == e.decode);
}

/// A run that does not fit its budget is refused when it starts, naming the estimate, the
/// budget and a batch that fits; weights alone over the budget are refused at once.
#[test]
fn runs_over_the_memory_budget_are_refused_up_front() {
    use wasm_diffusion::memory::MemoryBudget;
    let dir = common::fixtures().join("pipelines").join("sd_tiny");
    let pipe = StableDiffusion::load_dir(&dir, &Device::flex()).unwrap();
    let resident = pipe.resident_bytes;
    // f32, the 3x3 convolution weights as their 16/9-times larger Winograd transform.
    assert_eq!(resident, pipe.cpu_weight_bytes);
    assert!(resident > 4 * pipe.parameters && resident <= 4 * pipe.parameters / 9 * 16);
    let one = pipe.estimate_run(1, true, [8, 8]).total();
    let four = pipe.estimate_run(4, true, [8, 8]).total();
    assert!(four > one);
    let budget = MemoryBudget {
        total: resident + (one + four) / 2,
        largest_buffer: u64::MAX,
        what: "a test budget",
        weights_inside: true,
    };
    let pipe = pipe.with_budget(budget).unwrap();
    let opts = |batch| TextToImage {
        prompt: "a red apple".into(),
        steps: 1,
        batch,
        ..TextToImage::default()
    };
    assert!(pipe.start(&opts(1)).is_ok());
    let e = pipe.start(&opts(4)).err().unwrap();
    assert_eq!(e.kind, wasm_diffusion::ErrorKind::MemoryLimit);
    assert!(
        e.message.contains("(a test budget)") && e.message.contains("use a batch of at most"),
        "{}",
        e.message
    );
    // No tensor may exceed the buffer limit (WebGPU's binding size).
    let tight = MemoryBudget {
        largest_buffer: 1024,
        ..budget
    };
    let pipe = pipe.with_budget(tight).unwrap();
    let e = pipe.start(&opts(1)).err().unwrap();
    assert!(
        e.message.contains("no tensor over 1 KiB") && e.message.contains("use a smaller image"),
        "{}",
        e.message
    );
    // Weights alone over the budget.
    let tiny = MemoryBudget {
        total: resident / 2,
        ..budget
    };
    let e = pipe.with_budget(tiny).err().unwrap();
    assert!(
        e.message
            .contains("this pipeline's weights: expected at most"),
        "{}",
        e.message
    );
}

#[test]
fn inpainting_keeps_the_unmasked_pixels_of_the_image_exactly() {
    use wasm_diffusion::pipelines::img2img::ImageInput;
    let device = Device::flex();
    let dir = common::fixtures().join("pipelines");
    // An ordinary U-Net (mask blending) and an inpainting U-Net (9 input channels).
    for name in ["sd_tiny", "sd_inpaint_tiny"] {
        let pipe = StableDiffusion::load_dir(&dir.join(name), &device).unwrap();
        let image: Vec<f32> = (0..3 * 16 * 16)
            .map(|i| ((i as f32) * 0.37).sin())
            .collect();
        let run = |mask: Vec<f32>| {
            let opts = TextToImage {
                prompt: "a red apple".into(),
                steps: 3,
                seed: 5,
                image: Some(ImageInput {
                    image: image.clone(),
                    shape: [3, 16, 16],
                    strength: 1.0,
                    mask: Some(mask),
                }),
                ..TextToImage::default()
            };
            let mut r = pipe.start(&opts).unwrap();
            while !r.is_done() {
                r.step().unwrap();
            }
            (to_vec(r.image()), to_vec(r.decode()))
        };
        // A mask of zeros: the image itself, although the autoencoder's round trip is not.
        let (kept, decoded) = run(vec![0.0; 256]);
        assert_eq!(kept, image, "{name}: a mask of zeros");
        assert!(
            rel_err(&decoded, &image) > 1e-2,
            "{name}: the raw decode should differ"
        );
        // The left half masked: the right half is the image, the left half is repainted.
        let (half, _) = run((0..256)
            .map(|i| if i % 16 < 8 { 1.0 } else { 0.0 })
            .collect());
        for (i, (&got, &want)) in half.iter().zip(&image).enumerate() {
            if i % 16 >= 8 {
                assert_eq!(got, want, "{name}: kept pixel {i}");
            }
        }
        let repainted = (0..half.len())
            .filter(|i| i % 16 < 8 && half[*i] != image[*i])
            .count();
        assert!(
            repainted > 300,
            "{name}: only {repainted} of 384 masked values changed"
        );
    }
}
