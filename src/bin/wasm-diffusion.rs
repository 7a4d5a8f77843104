//! The native command line: `convert`, `sample`, `info`. See README "CLI".

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use burn::tensor::Device;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use npyz::WriterBuilder;

use wasm_diffusion::convert::{convert_dir, random_model, ConvertOptions};
use wasm_diffusion::image::{encode_png, grid_rgba};
use wasm_diffusion::models::model_file::ModelFile;
use wasm_diffusion::models::parameter_count;
use wasm_diffusion::pipelines::pipeline_file::convert_pipeline_dir;
use wasm_diffusion::pipelines::stable_diffusion::{StableDiffusion, TextToImage};
use wasm_diffusion::pipelines::{default_steps, read_back, SampleOptions, SamplingRun};
use wasm_diffusion::weights::Quant;
use wasm_diffusion::{load_model, Error, Result, SchedulerKind, UNet2DConfig};

#[derive(Parser)]
#[command(
    name = "wasm-diffusion",
    version,
    about = "Convert diffusers UNet2DModel checkpoints and sample from them; text-to-image from Stable Diffusion pipeline folders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum QuantArg {
    F32,
    F16,
    Int8,
    Int4,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Cpu,
    Wgpu,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a diffusers model folder (config.json + safetensors) into one model file.
    Convert {
        /// diffusers UNet2DModel folder, or a pipeline folder with unet/ and scheduler/
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "int8")]
        quant: QuantArg,
        #[arg(short, long)]
        output: PathBuf,
        /// Model name stored in the file
        #[arg(long)]
        name: Option<String>,
        /// Class used as the unconditional branch of classifier-free guidance
        #[arg(long)]
        null_class: Option<usize>,
        /// Comma-separated class names, in label order
        #[arg(long)]
        class_names: Option<String>,
        /// Print the error of every tensor, not only the summary
        #[arg(long)]
        verbose: bool,
    },
    /// Sample a grid of images from a model file.
    Sample(SampleArgs),
    /// Generate an image from a prompt with a diffusers Stable Diffusion pipeline folder
    /// (model_index.json, tokenizer/, text_encoder/, unet/, vae/, scheduler/).
    Txt2img(Txt2imgArgs),
    /// Show a model file's config, quantization, parameter count and size.
    Info { file: PathBuf },
    /// Write a model file with random weights for a diffusers config.json (tests, benchmarks).
    Random {
        /// diffusers UNet2DModel config.json
        config: PathBuf,
        #[arg(long, value_enum, default_value = "int8")]
        quant: QuantArg,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert {
            dir,
            quant,
            output,
            name,
            null_class,
            class_names,
            verbose,
        } => run_convert(&dir, quant, &output, name, null_class, class_names, verbose),
        Command::Sample(args) => run_sample(args),
        Command::Txt2img(args) => run_txt2img(args),
        Command::Info { file } => run_info(&file),
        Command::Random {
            config,
            quant,
            output,
            seed,
        } => run_random(&config, quant, &output, seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io(format!("{}: {e}", path.display()))
}

fn quant_of(q: QuantArg) -> Quant {
    match q {
        QuantArg::F32 => Quant::F32,
        QuantArg::F16 => Quant::F16,
        QuantArg::Int8 => Quant::Int8,
        QuantArg::Int4 => Quant::Int4,
    }
}

/// Writes `bytes` to a temporary name first so a failure never leaves a half-written file.
fn write_atomically(output: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = output.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, output).map_err(|e| io_err(output, e))
}

fn run_random(config: &Path, quant: QuantArg, output: &Path, seed: u64) -> Result<()> {
    let text = std::fs::read_to_string(config).map_err(|e| io_err(config, e))?;
    let config = UNet2DConfig::from_json(&text)?;
    let bytes = random_model(&config, quant_of(quant), seed)?;
    write_atomically(output, &bytes)?;
    println!(
        "wrote {} ({} parameters of random weights, {:.2} MB)",
        output.display(),
        parameter_count(&config)?,
        bytes.len() as f64 / 1e6
    );
    Ok(())
}

/// Whether `dir` is a diffusers latent-diffusion pipeline (its U-Net a UNet2DConditionModel).
fn is_latent_pipeline(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("unet/config.json"))
        .is_ok_and(|t| t.contains("\"UNet2DConditionModel\""))
}

fn run_convert(
    dir: &Path,
    quant: QuantArg,
    output: &Path,
    name: Option<String>,
    null_class: Option<usize>,
    class_names: Option<String>,
    verbose: bool,
) -> Result<()> {
    let quant = quant_of(quant);
    let class_names = class_names
        .map(|s| s.split(',').map(|c| c.trim().to_string()).collect())
        .unwrap_or_default();
    let start = Instant::now();
    // A Stable Diffusion pipeline folder becomes a pipeline file; anything else a U-Net file.
    let (bytes, report) = if is_latent_pipeline(dir) {
        convert_pipeline_dir(dir, quant, name.as_deref())?
    } else {
        convert_dir(
            dir,
            quant,
            &ConvertOptions {
                name,
                null_class,
                class_names,
            },
        )?
    };
    write_atomically(output, &bytes)?;

    let params: usize = report
        .iter()
        .map(|r| r.shape.iter().product::<usize>())
        .sum();
    println!(
        "{:<60} {:>16} {:>6} {:>12} {:>10}",
        "tensor", "shape", "as", "max abs err", "rel rms"
    );
    let mut worst = report.clone();
    worst.sort_by(|a, b| b.error.rel_rms.total_cmp(&a.error.rel_rms));
    let shown: Vec<_> = if verbose {
        report.iter().collect()
    } else {
        worst.iter().take(10).collect()
    };
    for r in &shown {
        println!(
            "{:<60} {:>16} {:>6} {:>12.3e} {:>10.3e}",
            r.name,
            format!("{:?}", r.shape),
            r.stored_as,
            r.error.max_abs,
            r.error.rel_rms
        );
    }
    if !verbose && report.len() > shown.len() {
        println!(
            "({} more tensors; --verbose lists all; sorted by relative error)",
            report.len() - shown.len()
        );
    }
    let max_rel = report.iter().map(|r| r.error.rel_rms).fold(0f32, f32::max);
    let mean_rel =
        report.iter().map(|r| r.error.rel_rms as f64).sum::<f64>() / report.len().max(1) as f64;
    println!(
        "wrote {} ({} quantization): {} tensors, {params} parameters, {:.2} MB (f32 would be {:.2} MB); relative RMS error mean {mean_rel:.3e}, max {max_rel:.3e}; {:.1}s",
        output.display(),
        quant.name(),
        report.len(),
        bytes.len() as f64 / 1e6,
        params as f64 * 4.0 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(clap::Args)]
struct SampleArgs {
    file: PathBuf,
    #[arg(long, default_value = "ddim")]
    scheduler: String,
    /// Denoising steps (default: ddpm every training timestep, ddim, euler, euler-a 50, dpm++ 20,
    /// lcm 4, cm 1)
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Class label (index or name); a comma-separated list gives one per image
    #[arg(long)]
    class: Option<String>,
    #[arg(long, default_value_t = 1.0)]
    guidance: f64,
    /// x_T as float32 NCHW .npy instead of the seed
    #[arg(long)]
    init_noise: Option<PathBuf>,
    /// Write the final sample (float32 NCHW in [-1, 1]) as .npy
    #[arg(long)]
    out_npy: Option<PathBuf>,
    #[arg(short, long)]
    output: PathBuf,
    /// Write previews of x_t and the predicted x_0 after each step into this folder
    #[arg(long)]
    frames: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
}

#[derive(clap::Args)]
struct Txt2imgArgs {
    /// diffusers Stable Diffusion pipeline folder, or a pipeline file made by `convert`
    dir: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// ddpm, ddim, dpm++, euler, euler-a, lcm or cm (whatever class the model's scheduler
    /// config names: it gives the noise schedule)
    #[arg(long, default_value = "ddim")]
    scheduler: String,
    /// Denoising steps (default: ddim, euler, euler-a 50, dpm++ 20, lcm 4, cm 1; ddpm every
    /// training timestep)
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
}

fn run_txt2img(a: Txt2imgArgs) -> Result<()> {
    let device = device_for(a.backend)?;
    let t0 = Instant::now();
    let pipe = if a.dir.is_dir() {
        StableDiffusion::load_dir(&a.dir, &device)?
    } else {
        let bytes = std::fs::read(&a.dir).map_err(|e| io_err(&a.dir, e))?;
        StableDiffusion::load_file(&bytes, &device)?
    };
    let load_s = t0.elapsed().as_secs_f64();
    let scheduler = SchedulerKind::parse(&a.scheduler)?;
    let opts = TextToImage {
        prompt: a.prompt,
        negative_prompt: a.negative_prompt,
        steps: a
            .steps
            .unwrap_or_else(|| default_steps(scheduler, pipe.scheduler.num_train_timesteps)),
        guidance_scale: a.guidance,
        scheduler,
        seed: a.seed,
        ..TextToImage::default()
    };
    let t1 = Instant::now();
    let mut run = pipe.start(&opts)?;
    while !run.is_done() {
        run.step()?;
    }
    let image = run.decode();
    let shape = image.dims();
    write_png(&a.output, &read_back(image)?, shape)?;
    println!(
        "wrote {} ({}x{}); load {load_s:.2}s, {} steps + decode in {:.2}s",
        a.output.display(),
        shape[3],
        shape[2],
        run.total_steps(),
        t1.elapsed().as_secs_f64()
    );
    Ok(())
}

fn parse_classes(spec: &str, names: &[String]) -> Result<Vec<usize>> {
    spec.split(',')
        .map(|c| {
            let c = c.trim();
            c.parse::<usize>().or_else(|_| {
                names.iter().position(|n| n.eq_ignore_ascii_case(c)).ok_or_else(|| {
                    Error::invalid(format!(
                        "class: expected an index or one of the model's class names [{}], found `{c}`",
                        names.join(", ")
                    ))
                })
            })
        })
        .collect()
}

fn device_for(backend: BackendArg) -> Result<Device> {
    match backend {
        BackendArg::Cpu => Ok(Device::flex()),
        BackendArg::Wgpu => Device::wgpu_options().init().map_err(|e| {
            Error::backend(format!(
                "wgpu: expected a GPU adapter (e.g. Vulkan), found none: {e}"
            ))
        }),
    }
}

fn write_png(path: &Path, values: &[f32], shape: [usize; 4]) -> Result<()> {
    let cols = (shape[0] as f64).sqrt().ceil() as usize;
    let (rgba, w, h) = grid_rgba(values, shape, cols)?;
    std::fs::write(path, encode_png(&rgba, w, h)?).map_err(|e| io_err(path, e))
}

fn run_sample(a: SampleArgs) -> Result<()> {
    let bytes = std::fs::read(&a.file).map_err(|e| io_err(&a.file, e))?;
    let device = device_for(a.backend)?;
    let t0 = Instant::now();
    let model = load_model(&bytes, &device)?;
    let load_s = t0.elapsed().as_secs_f64();
    let class_labels = match &a.class {
        Some(spec) => Some(parse_classes(spec, &model.meta.class_names)?),
        None => None,
    };
    let init_noise = match &a.init_noise {
        Some(p) => Some(read_npy(p)?),
        None => None,
    };
    let scheduler = SchedulerKind::parse(&a.scheduler)?;
    let opts = SampleOptions {
        scheduler,
        steps: a
            .steps
            .unwrap_or_else(|| default_steps(scheduler, model.meta.scheduler.num_train_timesteps)),
        seed: a.seed,
        eta: a.eta,
        batch: a.batch,
        class_labels,
        guidance_scale: a.guidance,
        init_noise,
    };
    let mut sampler = SamplingRun::new(&model, &opts)?;
    if let Some(dir) = &a.frames {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let bar = ProgressBar::new(sampler.total_steps() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} steps  t={msg}  {elapsed_precise} ({per_sec})",
        )
        .expect("valid template"),
    );
    let t1 = Instant::now();
    while !sampler.is_done() {
        let info = sampler.step()?;
        bar.set_message(info.timestep.to_string());
        bar.inc(1);
        if let Some(dir) = &a.frames {
            let shape = sampler.shape();
            write_png(
                &dir.join(format!("step{:04}_xt.png", info.step)),
                &read_back(sampler.current())?,
                shape,
            )?;
            if let Some(x0) = sampler.predicted_x0() {
                write_png(
                    &dir.join(format!("step{:04}_x0.png", info.step)),
                    &read_back(x0)?,
                    shape,
                )?;
            }
        }
    }
    let final_values = read_back(sampler.current())?;
    let sample_s = t1.elapsed().as_secs_f64();
    bar.finish();
    let shape = sampler.shape();
    write_png(&a.output, &final_values, shape)?;
    if let Some(p) = &a.out_npy {
        write_npy(p, &final_values, shape)?;
    }
    println!(
        "wrote {} ({}x{}x{}x{}); load {:.2}s, {} steps in {:.2}s ({:.1} ms/step)",
        a.output.display(),
        shape[0],
        shape[1],
        shape[2],
        shape[3],
        load_s,
        sampler.total_steps(),
        sample_s,
        sample_s * 1000.0 / sampler.total_steps() as f64
    );
    Ok(())
}

fn read_npy(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| io_err(path, format!("expected a .npy file: {e}")))?;
    let dtype = npy.dtype();
    if dtype.descr() != "'<f4'" && dtype.descr() != "<f4" {
        return Err(Error::invalid(format!(
            "{}: expected float32 values, found dtype {}",
            path.display(),
            dtype.descr()
        )));
    }
    if npy.order() != npyz::Order::C {
        return Err(Error::invalid(format!(
            "{}: expected C order (NCHW), found Fortran order",
            path.display()
        )));
    }
    npy.into_vec::<f32>().map_err(|e| io_err(path, e))
}

fn write_npy(path: &Path, values: &[f32], shape: [usize; 4]) -> Result<()> {
    let mut buf = Vec::new();
    {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape.map(|d| d as u64))
            .writer(&mut buf)
            .begin_nd()
            .map_err(|e| io_err(path, e))?;
        w.extend(values.iter().copied())
            .map_err(|e| io_err(path, e))?;
        w.finish().map_err(|e| io_err(path, e))?;
    }
    std::fs::write(path, buf).map_err(|e| io_err(path, e))
}

fn run_info(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let file = ModelFile::parse(&bytes)?;
    let expected = wasm_diffusion::models::parameter_shapes(&file.meta.unet)?;
    file.check(&expected)?;
    let m = &file.meta;
    let c = &m.unet;
    println!(
        "file:           {} ({:.2} MB)",
        path.display(),
        bytes.len() as f64 / 1e6
    );
    if let Some(n) = &m.name {
        println!("name:           {n}");
    }
    println!("quantization:   {}", m.quant.name());
    println!("parameters:     {}", parameter_count(c)?);
    println!(
        "tensors:        {} stored ({} parameters)",
        file.container.tensors.len(),
        expected.len()
    );
    println!(
        "sample size:    {:?}, {} -> {} channels",
        c.sample_hw(),
        c.in_channels,
        c.out_channels
    );
    println!(
        "blocks:         {:?} / {:?}, layers per block {}",
        c.down_block_types, c.up_block_types, c.layers_per_block
    );
    println!(
        "channels:       {:?}, groups {}, head dim {:?}",
        c.block_out_channels,
        c.groups(),
        c.attention_head_dim
    );
    match c.num_class_embeds {
        Some(k) => println!(
            "classes:        {k} (null class {:?}){}",
            m.null_class,
            if m.class_names.is_empty() {
                String::new()
            } else {
                format!(": {}", m.class_names.join(", "))
            }
        ),
        None => println!("classes:        none (unconditional)"),
    }
    let s = &m.scheduler;
    println!(
        "scheduler:      {} betas {}..{} over {} steps, predicts {}, variance {}, clip {}",
        s.beta_schedule,
        s.beta_start,
        s.beta_end,
        s.num_train_timesteps,
        s.prediction_type,
        s.variance_type,
        s.clip_sample
    );
    println!("unet config:    {}", c.to_json());
    Ok(())
}
