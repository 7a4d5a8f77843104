#!/usr/bin/env python3
"""The scale benchmark's PyTorch side (BENCHMARKS.md, "Latent diffusion at scale"): what
examples/latent_scale.rs does, in PyTorch eager fp32 on the CPU, from the diffusers folder the
pipeline file was converted from (tools/make_scale_pipelines.py).

Phases, one JSON line each: `load` (U-Net, VAE and text encoder from the folder's fp16
safetensors, as f32), `step` (one U-Net call on a [B, 4, 64, 64] latent with [B, 77, width]
text states, timestep 999), `decode` (the VAE decode of one 64x64 latent: a 512x512 image).
Peak RSS per phase is VmHWM of /proc/self/status, reset before each phase through
/proc/self/clear_refs, as the Rust side does; CPU seconds are the process's (all threads). With `accelerate` importable, diffusers loads
with low_cpu_mem_usage (no random initialisation first, less memory); without it, it warns and
initialises every weight before loading (the load phase then takes longer and peaks higher). diffusers' default attention processor
(scaled_dot_product_attention) runs, under torch.no_grad().

    python3 tools/scale_bench_torch.py /work/scale-data/sd-turbo [--threads 2] [--batch 1]
        [--steps 1] [--no-decode]
"""

import argparse
import importlib.util
import json
import time


def rss_mib():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out["VmHWM"], out["VmRSS"]


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def start():
    reset_peak()
    return time.perf_counter(), time.process_time()


def report(phase, t, **extra):
    seconds, cpu = time.perf_counter() - t[0], time.process_time() - t[1]
    hwm, rss = rss_mib()
    print(json.dumps({"impl": "torch", "phase": phase, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 2),
                      "peak_rss_mib": round(hwm, 1), "rss_mib": round(rss, 1), **extra}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--no-decode", action="store_true")
    a = ap.parse_args()

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.set_num_threads(a.threads)
    # The load phase starts after the imports (~300 MiB of libraries, a few seconds).
    t = start()
    unet = UNet2DConditionModel.from_pretrained(a.dir, subfolder="unet", torch_dtype=torch.float32).eval()
    vae = AutoencoderKL.from_pretrained(a.dir, subfolder="vae", torch_dtype=torch.float32).eval()
    text_encoder = CLIPTextModel.from_pretrained(a.dir, subfolder="text_encoder", torch_dtype=torch.float32).eval()
    report("load", t, threads=a.threads, torch=torch.__version__,
           low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None)

    g = torch.Generator().manual_seed(1)
    b, width = a.batch, unet.config.cross_attention_dim
    latents = torch.randn((b, 4, 64, 64), generator=g)
    context = torch.randn((b, 77, width), generator=g)
    with torch.no_grad():
        for i in range(a.steps):
            t = start()
            out = unet(latents, 999, encoder_hidden_states=context).sample
            report("step", t, batch=b, index=i, latent=[64, 64],
                   finite=bool(torch.isfinite(out).all()), threads=a.threads)
        if not a.no_decode:
            z = torch.randn((1, 4, 64, 64), generator=g)
            t = start()
            image = vae.decode(z / vae.config.scaling_factor).sample
            report("decode", t, image=list(image.shape[2:]), threads=a.threads)
    del text_encoder


if __name__ == "__main__":
    main()
