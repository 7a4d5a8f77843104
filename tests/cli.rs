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

fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn sample_generates_from_a_pipeline_folder_and_its_file() {
    let dir = common::fixtures().join("pipelines").join("sd_tiny");
    let png = tmp("txt2img.png");
    let text = run(bin()
        .arg("sample")
        .arg(&dir)
        .args(["--prompt", "a red apple", "--steps", "3", "-o"])
        .arg(&png));
    assert!(text.contains("3 steps in"), "{text}");
    // The tiny pipeline's VAE upsamples 8x8 latents to 16x16 images.
    assert_eq!(png_size(&png), (16, 16));

    // `convert` makes one pipeline file of the folder: U-Net and text encoder int8, the VAE
    // f16 by default; `info` lists the components and the fitted linear preview.
    let file = tmp("sd_tiny.int8.safetensors");
    let text = run(bin()
        .arg("convert")
        .arg(&dir)
        .args(["--quant", "int8", "-o"])
        .arg(&file));
    assert!(text.contains("unet.") && text.contains("int8"), "{text}");
    let info = run(bin().arg("info").arg(&file));
    for want in [
        "unet ",
        "text_encoder ",
        "vae ",
        "f16",
        "int8",
        "linear latent-to-RGB map",
    ] {
        assert!(info.contains(want), "{want}: {info}");
    }

    // `tokenize` gives the same 77 ids for the folder and the file, padded.
    let ids = |p: &Path| -> Vec<u64> {
        serde_json::from_str(run(bin().arg("tokenize").arg(p).arg("a red apple!")).trim()).unwrap()
    };
    let (a, b) = (ids(&dir), ids(&file));
    assert_eq!(a, b);
    assert_eq!(a.len(), 77);
    assert!(a[20..].iter().all(|&id| id == a[76]), "padded to 77: {a:?}");

    // Two images of another size, with previews, latents and the image as .npy; the given
    // latents decide the result whatever the seed (DDIM, eta 0).
    let z0 = tmp("z0.npy");
    let latents: Vec<f32> = (0..2 * 4 * 16 * 8)
        .map(|i| ((i as f32) * 0.37).sin())
        .collect();
    write_npy(&z0, &latents, &[2, 4, 16, 8]);
    let frames = tmp("sd-frames");
    let sample = |seed: &str, out: &Path, z: &Path, npy: &Path| {
        run(bin()
            .arg("sample")
            .arg(&file)
            .args(["--prompt", "a red apple", "--negative-prompt", "blurry"])
            .args([
                "--steps", "2", "--batch", "2", "--height", "32", "--width", "16",
            ])
            .args(["--seed", seed, "--init-noise"])
            .arg(&z0)
            .arg("--frames")
            .arg(&frames)
            .arg("--out-latents")
            .arg(z)
            .arg("--out-npy")
            .arg(npy)
            .arg("-o")
            .arg(out))
    };
    let (z1, i1, z2, i2) = (tmp("z1.npy"), tmp("i1.npy"), tmp("z2.npy"), tmp("i2.npy"));
    sample("1", &tmp("two.png"), &z1, &i1);
    sample("2", &tmp("two-again.png"), &z2, &i2);
    assert_eq!(npy_f32(&z1).len(), 2 * 4 * 16 * 8);
    assert_eq!(npy_f32(&i1).len(), 2 * 3 * 32 * 16);
    assert_eq!(npy_f32(&z1), npy_f32(&z2));
    assert_eq!(npy_f32(&i1), npy_f32(&i2));
    assert!(npy_f32(&i1).iter().all(|v| (-1.0..=1.0).contains(v)));
    assert_eq!(
        png_size(&tmp("two.png")),
        (34, 32),
        "two 16x32 images, 2 pixels apart"
    );
    // The linear preview is at latent resolution: 2 images of 8x16.
    assert_eq!(png_size(&frames.join("step0002_x0.png")), (18, 16));
}

#[test]
fn latent_options_fail_with_a_message() {
    let dir = common::fixtures().join("pipelines").join("sd_tiny");
    let e = fails(
        bin()
            .arg("sample")
            .arg(&dir)
            .args(["--prompt", "x", "--height", "15", "-o"])
            .arg(tmp("x.png")),
    );
    assert!(
        e.contains("height: expected a multiple of 2") && e.contains("found 15"),
        "{e}"
    );
    let e = fails(
        bin()
            .arg("sample")
            .arg(&dir)
            .args(["--class", "1", "-o"])
            .arg(tmp("x.png")),
    );
    assert!(
        e.contains("--class: expected a class-conditional pixel model"),
        "{e}"
    );
    let z = tmp("z-wrong.npy");
    write_npy(&z, &[0.0; 10], &[10]);
    let e = fails(
        bin()
            .arg("sample")
            .arg(&dir)
            .args(["--prompt", "x", "--init-noise"])
            .arg(&z)
            .arg("-o")
            .arg(tmp("x.png")),
    );
    assert!(
        e.contains("latents: expected 256 finite values (1x4x8x8), found 10"),
        "{e}"
    );
    let model = common::unet_dir("plain");
    let e = fails(
        bin()
            .arg("convert")
            .arg(&model)
            .args(["--vae-quant", "f16", "-o"])
            .arg(tmp("x.safetensors")),
    );
    assert!(
        e.contains("expected a Stable Diffusion pipeline folder"),
        "{e}"
    );
}

/// A float32 C-order .npy of `values` with `shape`.
fn write_npy(path: &Path, values: &[f32], shape: &[usize]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((header.len() as u16).to_le_bytes());
    b.extend(header.as_bytes());
    for v in values {
        b.extend(v.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn sample_starts_from_an_image_with_or_without_a_mask() {
    use wasm_diffusion::image::encode_png;
    let dir = common::fixtures().join("pipelines").join("sd_tiny");
    let png = |name: &str, w: usize, h: usize, f: &dyn Fn(usize, usize) -> [u8; 4]| {
        let mut rgba = Vec::new();
        for y in 0..h {
            for x in 0..w {
                rgba.extend(f(x, y));
            }
        }
        let p = tmp(name);
        std::fs::write(&p, encode_png(&rgba, w, h).unwrap()).unwrap();
        p
    };
    let image = png("init.png", 16, 16, &|x, y| {
        [(x * 16) as u8, (y * 16) as u8, 128, 255]
    });
    let mask = png("mask.png", 16, 16, &|x, _| {
        let v = if x < 8 { 255 } else { 0 };
        [v, v, v, 255]
    });
    let small_mask = png("mask-small.png", 8, 16, &|_, _| [255, 255, 255, 255]);
    let out = tmp("img2img.png");
    let text = run(bin()
        .arg("sample")
        .arg(&dir)
        .args([
            "--prompt",
            "a red apple",
            "--steps",
            "4",
            "--strength",
            "0.5",
        ])
        .arg("--init-image")
        .arg(&image)
        .arg("-o")
        .arg(&out));
    assert!(text.contains("2 steps in"), "{text}");
    assert_eq!(png_size(&out), (16, 16));
    let npy = tmp("inpaint.npy");
    run(bin()
        .arg("sample")
        .arg(&dir)
        .args(["--prompt", "a red apple", "--steps", "3"])
        .arg("--init-image")
        .arg(&image)
        .arg("--mask")
        .arg(&mask)
        .arg("--out-npy")
        .arg(&npy)
        .arg("-o")
        .arg(tmp("inpaint.png")));
    assert_eq!(npy_f32(&npy).len(), 3 * 16 * 16);
    // A pixel model takes the same flags (SDEdit).
    let model = tmp("attn-for-img2img.safetensors");
    run(bin()
        .arg("convert")
        .arg(common::unet_dir("attn"))
        .args(["--quant", "f32", "-o"])
        .arg(&model));
    let small = png("init-8.png", 8, 8, &|x, y| {
        [(x * 30) as u8, (y * 30) as u8, 0, 255]
    });
    let text = run(bin()
        .arg("sample")
        .arg(&model)
        .args(["--steps", "10", "--strength", "0.3", "--init-image"])
        .arg(&small)
        .arg("-o")
        .arg(tmp("pixel-img2img.png")));
    assert!(text.contains("3 steps in"), "{text}");
    // Bad inputs.
    let e = fails(
        bin()
            .arg("sample")
            .arg(&dir)
            .args(["--prompt", "x", "--init-image"])
            .arg(&image)
            .arg("--mask")
            .arg(&small_mask)
            .arg("-o")
            .arg(tmp("x.png")),
    );
    assert!(
        e.contains("expected the init image's size 16x16, found 8x16"),
        "{e}"
    );
    let e = fails(
        bin()
            .arg("sample")
            .arg(&dir)
            .args(["--prompt", "x", "--strength", "0.5", "-o"])
            .arg(tmp("x.png")),
    );
    assert!(e.contains("expected an --init-image"), "{e}");
    let e = fails(
        bin()
            .arg("sample")
            .arg(&dir)
            .args(["--prompt", "x", "--strength", "1.5", "--init-image"])
            .arg(&image)
            .arg("-o")
            .arg(tmp("x.png")),
    );
    assert!(
        e.contains("strength: expected a number in (0, 1], found 1.5"),
        "{e}"
    );
    let e = fails(
        bin()
            .arg("sample")
            .arg(&model)
            .arg("--init-image")
            .arg(&image)
            .arg("-o")
            .arg(tmp("x.png")),
    );
    assert!(e.contains("init image: expected 3 channels of 8x8"), "{e}");
}

/// Every scheduler samples a PNG from a Stable Diffusion pipeline file (with guidance, as the
/// pipeline defaults) and from an LDM pipeline file.
#[test]
fn latent_pipelines_sample_with_every_scheduler() {
    let fixtures = common::fixtures().join("pipelines");
    for (name, folder, extra) in [
        ("sd", "sd_tiny", &["--prompt", "a red apple"][..]),
        ("ldm", "ldm_tiny", &[][..]),
    ] {
        let file = tmp(&format!("{name}-every.int8.safetensors"));
        run(bin()
            .arg("convert")
            .arg(fixtures.join(folder))
            .args(["--quant", "int8", "-o"])
            .arg(&file));
        for sched in ["ddpm", "ddim", "dpm++", "euler", "euler-a", "lcm", "cm"] {
            let png = tmp(&format!("{name}-{sched}.png"));
            let text = run(bin()
                .arg("sample")
                .arg(&file)
                .args(extra)
                .args(["--scheduler", sched, "--steps", "2", "--seed", "1", "-o"])
                .arg(&png));
            assert!(text.contains("2 steps"), "{name} {sched}: {text}");
            assert!(png_size(&png).0 >= 16, "{name} {sched}");
        }
    }
}
