#!/usr/bin/env python3
"""Golden fixtures for the latent-diffusion models, made by diffusers (random weights).

What it makes (under tests/fixtures/autoencoders/ and tests/fixtures/unets_cond/):

  kl_tiny/config.json                          AutoencoderKL config (save_pretrained)
  kl_tiny/diffusion_pytorch_model.safetensors  random f32 weights (save_pretrained)
  kl_tiny/io.safetensors                       an image `x`, the encoder's moments (`moments`,
                                               after quant_conv), the posterior's mode (`mean`),
                                               a latent `z` and its decoding `decoded`
                                               (post_quant_conv + decoder)
  ../text_encoders/clip_{quick_gelu,gelu}/     transformers CLIPTextModel configs and weights;
                                               io.safetensors: input_ids, last_hidden_state,
                                               pooler_output, penultimate_hidden_state
  ../unets_cond/{sd1_tiny,sd2_tiny}/           UNet2DConditionModel configs and weights in SD 1.x
                                               and SD 2.x shapes; io.safetensors: sample,
                                               timesteps, encoder_hidden_states, the output and
                                               block activations (`act.*`)

Run from the repository root (needs torch, diffusers, transformers, safetensors):

    python tools/make_latent_fixtures.py

Deterministic (fixed seeds, one CPU thread); it rewrites only the folders above.
"""

import os
import shutil

import torch

torch.set_num_threads(1)
torch.set_grad_enabled(False)

from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402
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


def make_unet_cond(name, **kw):
    """A random-weight UNet2DConditionModel with the block kinds of SD: cross-attention down,
    mid and up blocks (Transformer2DModel, BasicTransformerBlock, GEGLU) beside plain ones."""
    d = os.path.join(UNETS, name)
    shutil.rmtree(d, ignore_errors=True)
    unet = UNet2DConditionModel(**kw).eval()
    rerandomise(unet, 3)
    unet.save_pretrained(d, safe_serialization=True)
    g = torch.Generator().manual_seed(5)
    cfg = unet.config
    sample = torch.randn((2, cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=g)
    context = torch.randn((2, 7, cfg.cross_attention_dim), generator=g)
    timesteps = torch.tensor([10, 500])
    acts = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, k=k: acts.__setitem__(k, out[0] if isinstance(out, tuple) else out))
        for k, m in [("time_embedding", unet.time_embedding), ("conv_in", unet.conv_in), ("mid_block", unet.mid_block)]
        + [(f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)]
        + [(f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
    ]
    out = unet(sample, timesteps, encoder_hidden_states=context).sample
    for h in hooks:
        h.remove()
    tensors = dict(sample=sample, timesteps=timesteps.float(), encoder_hidden_states=context, out=out)
    tensors.update({f"act.{k}": v for k, v in acts.items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "io.safetensors"))
    print(f"{name}:", sum(p.numel() for p in unet.parameters()), "parameters")


UNETS = os.path.join(OUT, "..", "unets_cond")
TEXT = os.path.join(OUT, "..", "text_encoders")


def make_clip_text(name, hidden_act):
    """A random-weight transformers CLIPTextModel (a small vocabulary keeps the file small; SD
    1.x's encoder uses quick_gelu, SD 2.x's gelu): the last hidden state, the pooled output and
    the penultimate layer's states (what `clip_skip=1` reads) for token ids below the vocab."""
    d = os.path.join(TEXT, name)
    shutil.rmtree(d, ignore_errors=True)
    config = CLIPTextConfig(
        vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, hidden_act=hidden_act,
        bos_token_id=998, eos_token_id=999, pad_token_id=999,
    )
    model = CLIPTextModel(config).eval()
    rerandomise(model, 9)
    model.save_pretrained(d, safe_serialization=True)
    g = torch.Generator().manual_seed(13)
    ids = torch.randint(0, 998, (2, 77), generator=g)
    ids[:, 0] = 998
    ids[0, 9:] = 999  # a short prompt, padded with the end token
    ids[1, 40:] = 999
    out = model(ids, output_hidden_states=True)
    save_file(
        {
            "input_ids": ids.float().contiguous(),
            "last_hidden_state": out.last_hidden_state.contiguous(),
            "pooler_output": out.pooler_output.contiguous(),
            "penultimate_hidden_state": out.hidden_states[-2].contiguous(),
        },
        os.path.join(d, "io.safetensors"),
    )
    print(f"{name}:", sum(p.numel() for p in model.parameters()), "parameters")

SD1_LIKE = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(16, 32),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=8,
    attention_head_dim=2,
)

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(UNETS, exist_ok=True)
    os.makedirs(TEXT, exist_ok=True)
    make_clip_text("clip_quick_gelu", "quick_gelu")
    make_clip_text("clip_gelu", "gelu")
    make_kl_tiny()
    # SD 1.x's shape: `attention_head_dim` (really the number of heads), 1x1-conv projections.
    make_unet_cond("sd1_tiny", **SD1_LIKE)
    # SD 2.x's: linear projections, heads per level, upcast attention.
    make_unet_cond(
        "sd2_tiny",
        **{**SD1_LIKE, "attention_head_dim": (2, 4), "use_linear_projection": True, "upcast_attention": True},
    )
