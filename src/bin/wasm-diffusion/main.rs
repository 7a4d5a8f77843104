//! The native command line: `convert`, `sample`, `tokenize`, `info`. See README "CLI".
//! The pixel models live here, the latent pipelines in `latent.rs`.

mod latent;

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
use wasm_diffusion::pipelines::latent_diffusion::{is_ldm_dir, LatentDiffusion, LDM_PIPELINE};
use wasm_diffusion::pipelines::pipeline_file::{
    convert_ldm_pipeline_dir, convert_pipeline_dir, PipelineConvertOptions, PipelineQuant,
};
use wasm_diffusion::pipelines::{default_steps, read_back, SampleOptions, SamplingRun};
use wasm_diffusion::weights::Quant;
use wasm_diffusion::{load_model, Error, Result, SchedulerKind, UNet2DConfig};

#[derive(Parser)]
#[command(
    name = "wasm-diffusion",
    version,
    about = "Convert diffusers UNet2DModel checkpoints and Stable Diffusion pipeline folders into one quantized file, and sample from them"
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

#[derive(clap::Args)]
struct ConvertArgs {
    /// diffusers UNet2DModel folder, a pixel pipeline folder with unet/ and scheduler/, or
    /// a Stable Diffusion pipeline folder (model_index.json, tokenizer/, text_encoder/,
    /// unet/, vae/, scheduler/)
    dir: PathBuf,
    /// Storage of the U-Net and text encoder; the autoencoders default to f16 at most
    #[arg(long, value_enum, default_value = "int8")]
    quant: QuantArg,
    /// Pipeline folders: the U-Net's storage, instead of --quant
    #[arg(long, value_enum)]
    unet_quant: Option<QuantArg>,
    /// Pipeline folders: the text encoder's storage, instead of --quant
    #[arg(long, value_enum)]
    text_encoder_quant: Option<QuantArg>,
    /// Pipeline folders: the VAE's (and preview VAE's) storage (default: f16, or f32 with
    /// --quant f32)
    #[arg(long, value_enum)]
    vae_quant: Option<QuantArg>,
    /// Pipeline folders: a diffusers AutoencoderTiny (TAESD) folder carried in the file for
    /// previews (without one, a linear latent-to-RGB map is fitted and stored)
    #[arg(long)]
    preview_vae: Option<PathBuf>,
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
}

#[derive(Subcommand)]
enum Command {
    /// Convert a diffusers model folder (config.json + safetensors) into one model file.
    Convert(ConvertArgs),
    /// Sample a grid of images from a model file, a pipeline file or a diffusers Stable
    /// Diffusion pipeline folder.
    Sample(Box<SampleArgs>),
    /// Print the input ids a pipeline feeds its text encoder for TEXT, as a JSON array.
    Tokenize {
        /// Pipeline file or diffusers pipeline folder
        file: PathBuf,
        text: String,
    },
    /// Show a model or pipeline file's components, quantization, parameter counts and sizes.
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
        Command::Convert(args) => run_convert(args),
        Command::Sample(args) => run_sample(*args),
        Command::Tokenize { file, text } => latent::run_tokenize(&file, &text),
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

fn run_convert(a: ConvertArgs) -> Result<()> {
    let output = &a.output;
    let quant = quant_of(a.quant);
    let class_names = a
        .class_names
        .map(|s| s.split(',').map(|c| c.trim().to_string()).collect())
        .unwrap_or_default();
    let start = Instant::now();
    // A Stable Diffusion or LDM pipeline folder becomes a pipeline file; anything else a U-Net
    // file.
    let sd_only = a.unet_quant.is_some()
        || a.text_encoder_quant.is_some()
        || a.vae_quant.is_some()
        || a.preview_vae.is_some();
    let (bytes, report) = if is_ldm_dir(&a.dir) {
        if sd_only {
            return Err(Error::invalid(format!(
                "{}: expected a Stable Diffusion pipeline folder for --unet-quant, --text-encoder-quant, --vae-quant or --preview-vae, found an LDM pipeline folder",
                a.dir.display()
            )));
        }
        convert_ldm_pipeline_dir(&a.dir, quant, a.name.as_deref())?
    } else if is_latent_pipeline(&a.dir) {
        let d = PipelineQuant::defaults(quant);
        let vae = a.vae_quant.map_or(d.vae, quant_of);
        let quants = PipelineQuant {
            unet: a.unet_quant.map_or(d.unet, quant_of),
            text_encoder: a.text_encoder_quant.map_or(d.text_encoder, quant_of),
            vae,
            preview_vae: vae,
        };
        let options = PipelineConvertOptions {
            name: a.name.as_deref(),
            preview_vae: a.preview_vae.as_deref(),
        };
        convert_pipeline_dir(&a.dir, quants, &options)?
    } else {
        if a.unet_quant.is_some()
            || a.text_encoder_quant.is_some()
            || a.vae_quant.is_some()
            || a.preview_vae.is_some()
        {
            return Err(Error::invalid(format!(
                "{}: expected a Stable Diffusion pipeline folder for --unet-quant, --text-encoder-quant, --vae-quant or --preview-vae, found a U-Net folder",
                a.dir.display()
            )));
        }
        convert_dir(
            &a.dir,
            quant,
            &ConvertOptions {
                name: a.name,
                null_class: a.null_class,
                class_names,
            },
        )?
    };
    let verbose = a.verbose;
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
    /// Model file, pipeline file, or diffusers Stable Diffusion pipeline folder
    file: PathBuf,
    /// Text-to-image pipelines: what to generate
    #[arg(long)]
    prompt: Option<String>,
    /// Text-to-image pipelines: what to steer away from (the unconditional branch of guidance)
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Text-to-image pipelines: image height in pixels (default: the U-Net's native size)
    #[arg(long)]
    height: Option<usize>,
    /// Text-to-image pipelines: image width in pixels (default: the U-Net's native size)
    #[arg(long)]
    width: Option<usize>,
    /// Latent pipelines: write the final latents (before decoding) as float32 NCHW .npy
    #[arg(long)]
    out_latents: Option<PathBuf>,
    /// Start from this PNG (image-to-image; with --mask, inpainting); sets the size
    #[arg(long)]
    init_image: Option<PathBuf>,
    /// How much of the schedule runs from the init image, in (0, 1] (default 0.8; 1 with --mask)
    #[arg(long)]
    strength: Option<f64>,
    /// Inpainting: a PNG of the init image's size, white (>= 0.5) where to repaint
    #[arg(long)]
    mask: Option<PathBuf>,
    /// ddpm, ddim, dpm++, euler, euler-a, lcm or cm (the model's scheduler config gives the noise
    /// schedule, whatever class it names)
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
    /// Classifier-free guidance scale (default: 7.5 for text-to-image, 1 = none for pixel models)
    #[arg(long)]
    guidance: Option<f64>,
    /// x_T as float32 NCHW .npy instead of the seed (latent pipelines: the latents, as
    /// diffusers' `latents=`, scaled by the scheduler's initial sigma)
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
    /// Write the wall time of each denoising step to this file, one per line in milliseconds
    /// with microsecond resolution (for benchmarks; on wgpu each step is read back to time it)
    #[arg(long)]
    step_times: Option<PathBuf>,
}

/// `--step-times`: the wall time of each step. On the CPU backend a step's work is done when
/// `step()` returns; on wgpu it is only queued, so the sample is read back to wait for it.
struct StepTimes {
    path: Option<PathBuf>,
    sync: bool,
    ms: Vec<f64>,
    last: Instant,
}

impl StepTimes {
    fn new(path: Option<&Path>, backend: BackendArg) -> Self {
        Self {
            path: path.map(Path::to_path_buf),
            sync: !matches!(backend, BackendArg::Cpu),
            ms: Vec::new(),
            last: Instant::now(),
        }
    }

    /// Starts the clock of the next step.
    fn start(&mut self) {
        self.last = Instant::now();
    }

    /// Ends the step begun at the last `start` or `record`; `wait` reads the sample back.
    fn record(&mut self, wait: impl FnOnce() -> Result<()>) -> Result<()> {
        if self.path.is_none() {
            return Ok(());
        }
        if self.sync {
            wait()?;
        }
        let now = Instant::now();
        self.ms
            .push(now.duration_since(self.last).as_secs_f64() * 1000.0);
        self.last = now;
        Ok(())
    }

    fn write(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text: String = self.ms.iter().map(|ms| format!("{ms:.3}\n")).collect();
        std::fs::write(path, text).map_err(|e| io_err(path, e))
    }
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

impl SampleArgs {
    /// Refuses the text-to-image flags (and with `images`, the image flags) on a model that
    /// takes no text (`what` it is, for the message).
    fn refuse_text_flags(&self, images: bool, what: &str) -> Result<()> {
        let text = [
            ("--prompt", self.prompt.is_some()),
            ("--negative-prompt", !self.negative_prompt.is_empty()),
            ("--height", self.height.is_some()),
            ("--width", self.width.is_some()),
            ("--out-latents", self.out_latents.is_some()),
        ];
        let image = [
            ("--init-image", self.init_image.is_some()),
            ("--mask", self.mask.is_some()),
            ("--strength", self.strength.is_some()),
        ];
        let given = text
            .iter()
            .chain(if images { &image[..] } else { &[] })
            .find(|(_, given)| *given);
        match given {
            Some((flag, _)) => Err(Error::invalid(format!(
                "{flag}: expected a text-to-image pipeline, found {what} ({})",
                self.file.display()
            ))),
            None => Ok(()),
        }
    }
}

fn run_sample(a: SampleArgs) -> Result<()> {
    match latent::pipeline_of(&a.file).as_deref() {
        Some(LDM_PIPELINE) => return run_ldm(a),
        Some(_) => return latent::run_sample(&a, &device_for(a.backend)?),
        None => {}
    }
    let device = device_for(a.backend)?;
    a.refuse_text_flags(false, "a pixel model file")?;
    let bytes = std::fs::read(&a.file).map_err(|e| io_err(&a.file, e))?;
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
        guidance_scale: a.guidance.unwrap_or(1.0),
        init_noise,
        image: latent::image_input(&a, model.unet.config.in_channels)?,
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
    let mut times = StepTimes::new(a.step_times.as_deref(), a.backend);
    let t1 = Instant::now();
    times.start();
    while !sampler.is_done() {
        let info = sampler.step()?;
        times.record(|| read_back(sampler.current()).map(drop))?;
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
    times.write()?;
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

/// `sample` of an unconditional latent-diffusion pipeline (a pipeline file made by `convert`
/// from a diffusers `LDMPipeline` folder, given as `bytes`, or the folder itself): denoise the
/// latents, decode them with the VQ model, write the images.
fn run_ldm(a: SampleArgs) -> Result<()> {
    if a.class.is_some() || a.frames.is_some() {
        return Err(Error::invalid(
            "LDM pipeline: expected no --class (it is unconditional) and no --frames, found one",
        ));
    }
    a.refuse_text_flags(true, "an unconditional LDM pipeline")?;
    let device = device_for(a.backend)?;
    let t0 = Instant::now();
    let pipe = if a.file.is_dir() {
        LatentDiffusion::load_dir(&a.file, &device)?
    } else {
        let bytes = std::fs::read(&a.file).map_err(|e| io_err(&a.file, e))?;
        LatentDiffusion::load_file(&bytes, &device)?
    };
    let load_s = t0.elapsed().as_secs_f64();
    let scheduler = SchedulerKind::parse(&a.scheduler)?;
    let opts = SampleOptions {
        scheduler,
        steps: a
            .steps
            .unwrap_or_else(|| default_steps(scheduler, pipe.scheduler.num_train_timesteps)),
        seed: a.seed,
        eta: a.eta,
        batch: a.batch,
        class_labels: None,
        guidance_scale: a.guidance.unwrap_or(1.0),
        init_noise: a.init_noise.as_deref().map(read_npy).transpose()?,
        image: None,
    };
    let t1 = Instant::now();
    let mut run = pipe.start(&opts)?;
    let bar = ProgressBar::new(run.total_steps() as u64);
    let mut times = StepTimes::new(a.step_times.as_deref(), a.backend);
    while !run.is_done() {
        run.step()?;
        times.record(|| read_back(run.latents()).map(drop))?;
        bar.inc(1);
    }
    bar.finish();
    times.write()?;
    let image = run.decode();
    let shape = image.dims();
    let values = read_back(image)?;
    write_png(&a.output, &values, shape)?;
    if let Some(p) = &a.out_npy {
        write_npy(p, &values, shape)?;
    }
    println!(
        "wrote {} ({}x{}x{}x{}); load {load_s:.2}s, {} steps + decode in {:.2}s",
        a.output.display(),
        shape[0],
        shape[1],
        shape[2],
        shape[3],
        run.total_steps(),
        t1.elapsed().as_secs_f64()
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
    match latent::pipeline_of(path).as_deref() {
        Some(LDM_PIPELINE) => return latent::run_info_ldm(path, &bytes),
        Some(_) => return latent::run_info(path, &bytes),
        None => {}
    }
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
