//! The CLI's latent-diffusion side: `sample` with a prompt on a pipeline file or a diffusers
//! pipeline folder, `tokenize`, and `info` on a pipeline file.

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;

use wasm_diffusion::image::{decode_png, Pixels};
use wasm_diffusion::models::autoencoders::AutoencoderKLConfig;
use wasm_diffusion::pipelines::img2img::ImageInput;
use wasm_diffusion::pipelines::pipeline_file::{read_file_configs, PipelineConfigs};
use wasm_diffusion::pipelines::read_back;
use wasm_diffusion::pipelines::stable_diffusion::{StableDiffusion, TextToImage};
use wasm_diffusion::text::MAX_LENGTH;
use wasm_diffusion::weights::container::Container;
use wasm_diffusion::{Error, Result, SchedulerKind};

use crate::{io_err, read_npy, write_npy, write_png, SampleArgs, StepTimes};

/// The pipeline `path` holds: the `_class_name` of a diffusers pipeline folder's
/// `model_index.json`, or the `pipeline` a pipeline file's metadata names (read from its header
/// alone). `None` for a U-Net model file or folder; unreadable paths are left to the loaders,
/// which say what they expected.
pub fn pipeline_of(path: &Path) -> Option<String> {
    if path.is_dir() {
        let text = std::fs::read_to_string(path.join("model_index.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        return Some(
            v.get("_class_name")?
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return None;
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    Some(
        v.get("__metadata__")?
            .get("pipeline")?
            .as_str()?
            .to_string(),
    )
}

/// Loads a pipeline file or a diffusers pipeline folder.
pub fn load(path: &Path, device: &Device) -> Result<StableDiffusion> {
    if path.is_dir() {
        StableDiffusion::load_dir(path, device)
    } else {
        let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
        StableDiffusion::load_file(&bytes, device)
    }
}

/// Refuses the pixel pipeline's options on a text-to-image pipeline.
fn refuse_pixel_options(a: &SampleArgs) -> Result<()> {
    if a.class.is_some() {
        return Err(Error::invalid(
            "--class: expected a class-conditional pixel model, found a text-to-image pipeline (use --prompt)",
        ));
    }
    Ok(())
}

pub fn run_sample(a: &SampleArgs, device: &Device) -> Result<()> {
    refuse_pixel_options(a)?;
    let t0 = Instant::now();
    let pipe = load(&a.file, device)?;
    let load_s = t0.elapsed().as_secs_f64();
    let scheduler = SchedulerKind::parse(&a.scheduler)?;
    let opts = TextToImage {
        prompt: a.prompt.clone().unwrap_or_default(),
        negative_prompt: a.negative_prompt.clone(),
        steps: a.steps.unwrap_or_else(|| {
            wasm_diffusion::pipelines::default_steps(scheduler, pipe.scheduler.num_train_timesteps)
        }),
        guidance_scale: a.guidance.unwrap_or(TextToImage::default().guidance_scale),
        scheduler,
        eta: a.eta,
        seed: a.seed,
        batch: a.batch,
        height: a.height,
        width: a.width,
        latents: a.init_noise.as_deref().map(read_npy).transpose()?,
        image: image_input(a, 3)?,
        ..TextToImage::default()
    };
    if let Some(dir) = &a.frames {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let t1 = Instant::now();
    let mut run = pipe.start(&opts)?;
    let mut times = StepTimes::new(a.step_times.as_deref(), a.backend);
    while !run.is_done() {
        let info = run.step()?;
        times.record(|| read_back(run.latents()).map(drop))?;
        if let Some(dir) = &a.frames {
            if let Some(p) = run.preview()? {
                let shape = p.dims();
                write_png(
                    &dir.join(format!("step{:04}_x0.png", info.step)),
                    &read_back(p)?,
                    shape,
                )?;
            }
        }
    }
    let steps_s = t1.elapsed().as_secs_f64();
    times.write()?;
    let latents = run.latents();
    if let Some(p) = &a.out_latents {
        let shape = latents.dims();
        write_npy(p, &read_back(latents)?, shape)?;
    }
    let t2 = Instant::now();
    // Clamped to [-1, 1] as diffusers' image processor does; inpainting keeps the unmasked
    // pixels of the init image exactly.
    let image = run.image();
    let shape = image.dims();
    let values: Vec<f32> = read_back(image)?;
    let decode_s = t2.elapsed().as_secs_f64();
    write_png(&a.output, &values, shape)?;
    if let Some(p) = &a.out_npy {
        write_npy(p, &values, shape)?;
    }
    println!(
        "wrote {} ({}x{}x{}x{}); load {load_s:.2}s, {} steps in {steps_s:.2}s ({:.1} ms/step), decode {decode_s:.2}s",
        a.output.display(),
        shape[0],
        shape[1],
        shape[2],
        shape[3],
        run.total_steps(),
        steps_s * 1000.0 / run.total_steps() as f64,
    );
    Ok(())
}

/// `--init-image`, `--strength` and `--mask` as the pipelines take them, the image as
/// `channels` planes (3: RGB; 1: grey).
pub fn image_input(a: &SampleArgs, channels: usize) -> Result<Option<ImageInput>> {
    let Some(path) = &a.init_image else {
        if a.mask.is_some() || a.strength.is_some() {
            return Err(Error::invalid(
                "--mask and --strength: expected an --init-image to go with them, found none",
            ));
        }
        return Ok(None);
    };
    let read = |p: &Path| -> Result<Pixels> {
        let bytes = std::fs::read(p).map_err(|e| io_err(p, e))?;
        decode_png(&bytes).map_err(|e| Error::invalid(format!("{}: {e}", p.display())))
    };
    let image = read(path)?;
    let mask = match &a.mask {
        Some(p) => {
            let m = read(p)?;
            if (m.width, m.height) != (image.width, image.height) {
                return Err(Error::invalid(format!(
                    "--mask {}: expected the init image's size {}x{}, found {}x{}",
                    p.display(),
                    image.width,
                    image.height,
                    m.width,
                    m.height
                )));
            }
            Some(m.to_grey_plane())
        }
        None => None,
    };
    let planes = match channels {
        1 => image
            .to_grey_plane()
            .into_iter()
            .map(|v| v * 2.0 - 1.0)
            .collect(),
        3 => image.to_rgb_planes(),
        c => {
            return Err(Error::invalid(format!(
                "--init-image: expected a model of 1 or 3 image channels, found {c}"
            )))
        }
    };
    Ok(Some(ImageInput {
        image: planes,
        shape: [channels, image.height, image.width],
        // diffusers' defaults: img2img 0.8, inpainting 1.
        strength: a.strength.unwrap_or(if mask.is_some() { 1.0 } else { 0.8 }),
        mask,
    }))
}

/// `tokenize FILE TEXT`: the input ids the pipeline feeds its text encoder, as a JSON array.
pub fn run_tokenize(path: &Path, text: &str) -> Result<()> {
    let pipe = load(path, &Device::flex())?;
    let ids = pipe.tokenizer.encode_padded(text, MAX_LENGTH)?.ids;
    println!(
        "{}",
        serde_json::to_string(&ids).map_err(|e| Error::invalid(e.to_string()))?
    );
    Ok(())
}

/// The parameters and stored bytes of each `(component, storage)` of a pipeline file.
fn component_table(
    container: &Container<'_>,
    shapes: &[(String, Vec<usize>)],
    components: &[(&str, &str)],
) {
    println!(
        "{:<14} {:>14} {:>8} {:>12}",
        "component", "parameters", "stored", "MB"
    );
    for (component, quant) in components {
        let prefix = format!("{component}.");
        let params: usize = shapes
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        if params == 0 {
            continue;
        }
        let stored: usize = container
            .tensors
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(_, t)| t.data.len())
            .sum();
        println!(
            "{component:<14} {params:>14} {quant:>8} {:>12.2}",
            stored as f64 / 1e6
        );
    }
}

/// `info` on an LDM pipeline file: its U-Net and VQ autoencoder.
pub fn run_info_ldm(path: &Path, bytes: &[u8]) -> Result<()> {
    use wasm_diffusion::pipelines::pipeline_file::{ldm_parameter_shapes, read_ldm_file_configs};
    let container = Container::parse(bytes)?;
    let (c, quant, name) = read_ldm_file_configs(&container)?;
    println!(
        "file:           {} ({:.2} MB)",
        path.display(),
        bytes.len() as f64 / 1e6
    );
    if let Some(n) = name {
        println!("name:           {n}");
    }
    println!("pipeline:       LDMPipeline (unconditional latent diffusion)");
    let shapes = ldm_parameter_shapes(&c)?;
    component_table(
        &container,
        &shapes,
        &[("unet", quant.name()), ("vqvae", quant.name())],
    );
    println!(
        "unet:           {:?} channels, latent size {}, {} latent channels",
        c.unet.block_out_channels,
        c.unet
            .sample_hw()
            .map_or("not given".to_string(), |[h, w]| format!("{h}x{w}")),
        c.unet.in_channels
    );
    println!(
        "vqvae:          {:?} channels, {} codebook entries of {} (codebook kept f32)",
        c.vqvae.block_out_channels,
        c.vqvae.num_vq_embeddings,
        c.vqvae.embed_dim()
    );
    Ok(())
}

/// `info` on a pipeline file: each component with its parameters, storage and size.
pub fn run_info(path: &Path, bytes: &[u8]) -> Result<()> {
    let container = Container::parse(bytes)?;
    let (c, quants, name) = read_file_configs(&container)?;
    println!(
        "file:           {} ({:.2} MB)",
        path.display(),
        bytes.len() as f64 / 1e6
    );
    if let Some(n) = name {
        println!("name:           {n}");
    }
    println!(
        "pipeline:       {}",
        container
            .metadata
            .get("pipeline")
            .map_or("", String::as_str)
    );
    let shapes = wasm_diffusion::pipelines::pipeline_file::parameter_shapes(&c)?;
    component_table(
        &container,
        &shapes,
        &[
            ("unet", quants.unet.name()),
            ("text_encoder", quants.text_encoder.name()),
            ("vae", quants.vae.name()),
            ("preview_vae", quants.preview_vae.name()),
        ],
    );
    describe(&c);
    Ok(())
}

fn describe(c: &PipelineConfigs) {
    let u = &c.unet;
    println!(
        "unet:           {:?} channels, {:?} / {:?}, cross-attention {}, latent size {}",
        u.block_out_channels,
        u.down_block_types,
        u.up_block_types,
        u.cross_attention_dim.at(0),
        u.sample_size
            .map(|s| s.hw())
            .map_or("not given".to_string(), |[h, w]| format!("{h}x{w}"))
    );
    let t = &c.text_encoder;
    println!(
        "text encoder:   CLIP, {} layers, width {}, {} heads, {}",
        t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.hidden_act
    );
    let v: &AutoencoderKLConfig = &c.vae;
    println!(
        "vae:            {:?} channels, {} latent channels, factor {}, scaling {}",
        v.block_out_channels,
        v.latent_channels,
        v.downscale_factor(),
        v.scaling_factor
    );
    let s = &c.scheduler;
    println!(
        "scheduler:      {} betas {}..{} over {} steps, predicts {}",
        s.beta_schedule, s.beta_start, s.beta_end, s.num_train_timesteps, s.prediction_type
    );
    match (&c.preview_vae, &c.latent_rgb) {
        (Some(t), _) => println!(
            "previews:       AutoencoderTiny (TAESD), decoder {:?}",
            t.decoder_block_out_channels
        ),
        (None, Some(m)) => println!(
            "previews:       linear latent-to-RGB map (RMS error {:.3}; the mean colour's {:.3})",
            m.fit_rms, m.baseline_rms
        ),
        (None, None) => println!("previews:       none"),
    }
}
