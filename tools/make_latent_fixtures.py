#!/usr/bin/env python3
"""Golden fixtures for the latent-diffusion models, made by diffusers (random weights).

What it makes (under tests/fixtures/autoencoders/):

  kl_tiny/config.json                          AutoencoderKL config (save_pretrained)
  kl_tiny/diffusion_pytorch_model.safetensors  random f32 weights (save_pretrained)
  kl_tiny/io.safetensors                       an image `x`, the encoder's moments (`moments`,
                                               after quant_conv), the posterior's mode (`mean`),
                                               a latent `z` and its decoding `decoded`
                                               (post_quant_conv + decoder)

Run from the repository root (needs torch, diffusers, safetensors):

    python tools/make_latent_fixtures.py

Deterministic (fixed seeds, one CPU thread); it rewrites only tests/fixtures/autoencoders/.
"""

import os
import shutil

import torch

torch.set_num_threads(1)
torch.set_grad_enabled(False)

from diffusers import AutoencoderKL  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "autoencoders")


def rerandomise(model, seed):
    """Random weights of a useful scale (diffusers' init leaves some layers at zero)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if p.ndim >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))


def make_kl_tiny():
    d = os.path.join(OUT, "kl_tiny")
    shutil.rmtree(d, ignore_errors=True)
    # Two levels (one downsample), a mid block with attention, 4 latent channels: the shape of
    # SD's VAE at a size a test can afford.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ).eval()
    rerandomise(vae, 7)
    vae.save_pretrained(d, safe_serialization=True)
    g = torch.Generator().manual_seed(11)
    x = torch.rand((2, 3, 16, 16), generator=g) * 2 - 1
    h = vae.encoder(x)
    moments = vae.quant_conv(h)
    mean = vae.encode(x).latent_dist.mode()
    z = torch.randn((2, 4, 8, 8), generator=g)
    decoded = vae.decode(z).sample
    save_file(
        {k: v.contiguous() for k, v in dict(x=x, moments=moments, mean=mean, z=z, decoded=decoded).items()},
        os.path.join(d, "io.safetensors"),
    )
    print("kl_tiny:", sum(p.numel() for p in vae.parameters()), "parameters")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    make_kl_tiny()
