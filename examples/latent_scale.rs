//! The scale benchmark's native side (BENCHMARKS.md, "Latent diffusion at scale"): loads a
//! Stable Diffusion pipeline file made by `wasm-diffusion convert`, then times one U-Net call at
//! the U-Net's native size (512x512 images: a 64x64 latent) and one VAE decode, on the CPU
//! backend, printing the time and the peak RSS of each phase as one JSON line per phase.
//! tools/scale_bench_torch.py does the same in PyTorch; tools/scale_bench.sh runs both in turn.
//!
//! Peak RSS per phase: `VmHWM` of /proc/self/status, reset before each phase by writing 5 to
//! /proc/self/clear_refs (Linux), so "step" is the largest RSS while the step ran (weights
//! included), not the largest since the process started. CPU seconds per phase come from
//! /proc/self/stat: on a shared host they show the work done, where the wall clock also shows
//! the waiting. This CPU backend runs on one thread.
//!
//!     cargo run --release --example latent_scale --features scale-bench -- FILE [--batch 1]
//!         [--steps 1] [--no-decode]
//!
//! The inputs are seeded random latents and text states: speed does not depend on the values.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use wasm_diffusion::noise::BatchNoise;
use wasm_diffusion::pipelines::read_back;
use wasm_diffusion::pipelines::stable_diffusion::StableDiffusion;

/// `VmHWM` and `VmRSS` of this process, in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat (clock ticks of
/// 1/100 s, as Linux reports them to user space).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
    (f.get(11).copied().unwrap_or(f64::NAN) + f.get(12).copied().unwrap_or(f64::NAN)) / 100.0
}

/// Resets `VmHWM` to the current RSS (Linux >= 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A phase's wall clock and CPU time, from `start`.
struct Phase {
    wall: Instant,
    cpu: f64,
}

fn start() -> Phase {
    reset_peak();
    Phase {
        wall: Instant::now(),
        cpu: cpu_seconds(),
    }
}

fn report(phase: &str, p: &Phase, extra: &str) {
    let seconds = p.wall.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - p.cpu;
    let (hwm, rss) = rss_mib();
    println!(
        "{{\"impl\": \"ours\", \"phase\": \"{phase}\", \"seconds\": {seconds:.3}, \"cpu_seconds\": {cpu:.2}, \"peak_rss_mib\": {hwm:.1}, \"rss_mib\": {rss:.1}{extra}}}"
    );
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    BatchNoise::new(seed, 1).sample(n)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(file) = args.first() else {
        return Err("usage: latent_scale FILE [--batch B] [--steps N] [--no-decode]".into());
    };
    let opt = |name: &str, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or("missing value")?.parse()?),
            None => Ok(default),
        }
    };
    let batch = opt("--batch", 1)?;
    let steps = opt("--steps", 1)?;
    let decode = !args.iter().any(|a| a == "--no-decode");
    let device = Device::flex();

    // 1. load: read the file and build the pipeline (dequantized to f32), as the CLI does.
    let t = start();
    let bytes = std::fs::read(file)?;
    let pipe = StableDiffusion::load_file(&bytes, &device)?;
    report(
        "load",
        &t,
        &format!(", \"file_mb\": {:.1}", bytes.len() as f64 / 1e6),
    );
    drop(bytes);

    // 2. one U-Net call per step, batch `batch` (1: SD-Turbo, no guidance; 2: SD 1.5's CFG).
    let [c, h, w] = pipe.latent_shape(None, None)?;
    let width = pipe.unet.config.cross_attention_dim.at(0);
    let context: Tensor<3> = Tensor::from_data(
        TensorData::new(random(batch * 77 * width, 2), [batch, 77, width]),
        &device,
    );
    let latents: Tensor<4> = Tensor::from_data(
        TensorData::new(random(batch * c * h * w, 1), [batch, c, h, w]),
        &device,
    );
    for i in 0..steps {
        let t = start();
        let out = pipe.unet.forward(latents.clone(), &[999.0], &context)?;
        let v = read_back(out)?;
        report(
            "step",
            &t,
            &format!(
                ", \"batch\": {batch}, \"index\": {i}, \"latent\": [{h}, {w}], \"finite\": {}",
                v.iter().all(|x| x.is_finite())
            ),
        );
    }

    // 3. the VAE decode of one latent (a 512x512 image).
    if decode {
        let z: Tensor<4> =
            Tensor::from_data(TensorData::new(random(c * h * w, 3), [1, c, h, w]), &device);
        let t = start();
        let image = pipe.vae.decode(z / pipe.vae.config.scaling_factor);
        let dims = image.dims();
        let _ = read_back(image)?;
        report(
            "decode",
            &t,
            &format!(", \"image\": [{}, {}]", dims[2], dims[3]),
        );
    }
    Ok(())
}
