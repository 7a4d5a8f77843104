//! The command line end to end: convert a diffusers folder, inspect it, sample PNG grids with
//! every scheduler, round-trip x_T and the final sample through .npy, and fail cleanly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasm-diffusion"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wasm-diffusion-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "command failed: {text}");
    text
}

fn png_size(p: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    (info.width, info.height)
}

fn npy_f32(p: &Path) -> Vec<f32> {
    // float32 .npy: header length at bytes 8..10, data after the header.
    let b = std::fs::read(p).unwrap();
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    b[10 + hl..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn convert_info_sample_with_every_scheduler() {
    let model = tmp("cc.int8.safetensors");
    let out = run(bin()
        .args([
            "convert",
            common::unet_dir("classcond").to_str().unwrap(),
            "--quant",
            "int8",
            "-o",
        ])
        .arg(&model)
        .args(["--null-class", "4", "--class-names", "a,b,c,d,null"]));
    assert!(out.contains("int8") && out.contains("rel rms"), "{out}");
    let info = run(bin().arg("info").arg(&model));
    assert!(
        info.contains("quantization:   int8") && info.contains("null class Some(4)"),
        "{info}"
    );
    for (sched, steps) in [
        ("ddpm", "6"),
        ("ddim", "5"),
        ("dpm++", "5"),
        ("euler", "3"),
        ("euler-a", "3"),
        ("lcm", "2"),
        ("cm", "2"),
    ] {
        let png = tmp(&format!("grid-{sched}.png"));
        let frames = tmp(&format!("frames-{sched}"));
        let text = run(bin()
            .arg("sample")
            .arg(&model)
            .args([
                "--scheduler",
                sched,
                "--steps",
                steps,
                "--batch",
                "4",
                "--class",
                "b,c,1,d",
                "--guidance",
                "2",
            ])
            .arg("-o")
            .arg(&png)
            .arg("--frames")
            .arg(&frames));
        assert!(text.contains("ms/step"), "{text}");
        // 4 images of 16x16 in a 2x2 grid with a 2-pixel gap.
        assert_eq!(png_size(&png), (34, 34));
        let n = std::fs::read_dir(&frames).unwrap().count();
        assert_eq!(
            n,
            2 * steps.parse::<usize>().unwrap(),
            "{sched}: x_t and x_0 previews per step"
        );
    }
}

#[test]
fn init_noise_and_out_npy_round_trip() {
    let model = tmp("plain.f32.safetensors");
    run(bin()
        .args([
            "convert",
            common::unet_dir("plain").to_str().unwrap(),
            "--quant",
            "f32",
            "-o",
        ])
        .arg(&model));
    let a = tmp("a.npy");
    let b = tmp("b.npy");
    let c = tmp("c.npy");
    run(bin()
        .arg("sample")
        .arg(&model)
        .args(["--steps", "3", "--seed", "5", "-o"])
        .arg(tmp("a.png"))
        .arg("--out-npy")
        .arg(&a));
    run(bin()
        .arg("sample")
        .arg(&model)
        .args(["--steps", "3", "--seed", "5", "-o"])
        .arg(tmp("b.png"))
        .arg("--out-npy")
        .arg(&b));
    assert_eq!(npy_f32(&a), npy_f32(&b), "same seed, same numbers");
    // Without --steps the run takes the crate's default for the scheduler (DPM-Solver++: 20).
    let text = run(bin()
        .arg("sample")
        .arg(&model)
        .args(["--scheduler", "dpm++", "-o"])
        .arg(tmp("d.png")));
    assert!(text.contains(" 20 steps in "), "{text}");
    assert_eq!(npy_f32(&a).len(), 3 * 8 * 8);
    // Feeding a sample back as x_T is accepted and changes the result.
    run(bin()
        .arg("sample")
        .arg(&model)
        .args(["--steps", "3", "-o"])
        .arg(tmp("c.png"))
        .arg("--init-noise")
        .arg(&a)
        .arg("--out-npy")
        .arg(&c));
    assert_ne!(npy_f32(&a), npy_f32(&c));
}

#[test]
fn bad_inputs_fail_with_a_message() {
    let junk = tmp("junk.bin");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    let out = bin().arg("info").arg(&junk).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error:") && err.contains("expected"), "{err}");
    let out = bin()
        .args(["convert", "/nonexistent/dir", "-o"])
        .arg(tmp("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.json"));
}

#[test]
fn random_writes_a_loadable_model_of_a_real_configuration() {
    let model = tmp("cifar10.random.int8.safetensors");
    let config = common::fixtures().join("configs/ddpm-cifar10-32.json");
    let out = run(bin()
        .arg("random")
        .arg(&config)
        .args(["--quant", "int8", "-o"])
        .arg(&model));
    assert!(
        out.contains("35746307 parameters of random weights"),
        "{out}"
    );
    let info = run(bin().arg("info").arg(&model));
    assert!(info.contains("int8"), "{info}");
    // The weights are deterministic in the seed (the data section; the header's metadata order
    // is not: safetensors writes it from a hash map).
    let again = tmp("cifar10.random.again.safetensors");
    run(bin()
        .arg("random")
        .arg(&config)
        .args(["--quant", "int8", "-o"])
        .arg(&again));
    let data = |p: &Path| {
        let b = std::fs::read(p).unwrap();
        let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        b[8 + n..].to_vec()
    };
    assert!(data(&model) == data(&again), "same seed, other weights");
    let other = tmp("cifar10.random.seed2.safetensors");
    run(bin()
        .arg("random")
        .arg(&config)
        .args(["--seed", "2", "--quant", "int8", "-o"])
        .arg(&other));
    assert!(
        data(&model) != data(&other),
        "another seed, the same weights"
    );
}

#[test]
fn txt2img_generates_from_a_pipeline_folder() {
    let dir = common::fixtures().join("pipelines").join("sd_tiny");
    let png = tmp("txt2img.png");
    let text = run(bin()
        .arg("txt2img")
        .arg(&dir)
        .args(["--prompt", "a red apple", "--steps", "3", "-o"])
        .arg(&png));
    assert!(text.contains("3 steps + decode"), "{text}");
    // The tiny pipeline's VAE upsamples 8x8 latents to 16x16 images.
    assert_eq!(png_size(&png), (16, 16));
    // `convert` makes one int8 pipeline file of the folder; txt2img samples it.
    let file = tmp("sd_tiny.int8.safetensors");
    let text = run(bin()
        .arg("convert")
        .arg(&dir)
        .args(["--quant", "int8", "-o"])
        .arg(&file));
    assert!(text.contains("unet.") && text.contains("int8"), "{text}");
    let png = tmp("txt2img-file.png");
    run(bin()
        .arg("txt2img")
        .arg(&file)
        .args(["--prompt", "a red apple", "--steps", "2", "-o"])
        .arg(&png));
    assert_eq!(png_size(&png), (16, 16));
}
