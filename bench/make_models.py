#!/usr/bin/env python3
"""Build the benchmark models (issue 5) as diffusers folders, then convert them with our CLI.

    python bench/make_models.py [--out DIR] [--cli PATH] [--force]

Models (random weights, seeded: speed does not depend on the values):

  emoji    the first shipped emoji model's UNet2DModel config (train_emoji.py's `cpu`
           preset), 1.1M parameters, 9 classes (null class 8)
  emoji-gpu  the shipped emoji model's config (train_emoji.py's `gpu` preset), 6.8M parameters
  cifar10  the google/ddpm-cifar10-32 UNet2DModel configuration, 35.7M parameters

Writes, under DIR (default ~/.cache/wasm-diffusion/bench, outside the repository):

  <name>/config.json, scheduler_config.json, diffusion_pytorch_model.safetensors   (diffusers)
  <name>.{f32,f16,int8,int4}.safetensors                                          (our format)

Idempotent: a model whose files all exist is left alone unless --force is given.
The ONNX files come from bench/export_onnx.py.
"""

import argparse
import json
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("WASM_DIFFUSION_CACHE", os.path.expanduser("~/.cache/wasm-diffusion"))
QUANTS = ("f32", "f16", "int8", "int4")

CIFAR10 = {
    "_class_name": "UNet2DModel",
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "freq_shift": 1,
    "flip_sin_to_cos": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [128, 256, 256, 256],
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 0,
    "act_fn": "silu",
    "attention_head_dim": None,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
}
# google/ddpm-cifar10-32's scheduler: DDPM, linear betas 1e-4 .. 0.02 over 1000 steps.
CIFAR10_SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "variance_type": "fixed_small",
    "clip_sample": True,
    "prediction_type": "epsilon",
}


def emoji_spec(preset="cpu"):
    """An emoji config from train_emoji.py: `cpu` (1.1M, the first shipped model) or `gpu`
    (6.8M, the model shipped now).

    Pinned rather than read from models/emoji: BENCHMARKS.md's "emoji" rows were measured with
    the `cpu` config, and a newly shipped model would silently change them."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import train_emoji

    unet = dict(train_emoji.make_unet(preset).config)
    sched = dict(train_emoji.SCHEDULER_KW)
    extra = ["--null-class", str(train_emoji.NULL_CLASS),
             "--class-names", ",".join(train_emoji.CLASSES + ["null"])]
    return unet, sched, extra


def build(name, unet_cfg, sched_cfg, convert_extra, out, cli, force, expect_params=None):
    folder = os.path.join(out, name)
    files = [os.path.join(out, f"{name}.{q}.safetensors") for q in QUANTS]
    done = os.path.exists(os.path.join(folder, "diffusion_pytorch_model.safetensors")) and all(map(os.path.exists, files))
    if done and not force:
        print(f"{name}: up to date in {out}")
        return
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    cfg = {k: v for k, v in unet_cfg.items() if not k.startswith("_")}
    model = UNet2DModel(**cfg)
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n / 1e6:.2f}M parameters")
    if expect_params is not None and abs(n / 1e6 - expect_params) > 0.05:
        sys.exit(f"{name}: expected {expect_params}M parameters, found {n / 1e6:.2f}M")
    model.save_pretrained(folder, safe_serialization=True)
    with open(os.path.join(folder, "scheduler_config.json"), "w") as f:
        json.dump(sched_cfg, f, indent=2)
    for q, path in zip(QUANTS, files):
        subprocess.run([cli, "convert", folder, "--quant", q, "-o", path, "--name", f"bench-{name}", *convert_extra],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"  {os.path.basename(path)}: {os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(CACHE, "bench"))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target"))
    ap.add_argument("--cli", default=os.path.join(target, "release", "wasm-diffusion"))
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(a.cli):
        sys.exit(f"{a.cli} missing: run `cargo build --release` first")
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    unet, sched, extra = emoji_spec()
    build("emoji", unet, sched, extra, a.out, a.cli, a.force, expect_params=1.12)
    unet, sched, extra = emoji_spec("gpu")
    build("emoji-gpu", unet, sched, extra, a.out, a.cli, a.force, expect_params=6.81)
    build("cifar10", CIFAR10, CIFAR10_SCHEDULER, [], a.out, a.cli, a.force, expect_params=35.75)


if __name__ == "__main__":
    main()
