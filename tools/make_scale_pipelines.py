#!/usr/bin/env python3
"""Write diffusers Stable Diffusion pipeline folders at real scale, with random weights, for the
scale benchmark (BENCHMARKS.md, "Latent diffusion at scale") and the browser benchmark against
onnxruntime-web ("Latent text-to-image in the browser vs onnxruntime-web").

Two pipelines with the configs of the real checkpoint written out below (as the Hub's config
files hold them, bookkeeping keys included, so the converter meets the real keys), and one
made-up mid size:

  sd-turbo   stabilityai/sd-turbo: the SD 2.1-base U-Net (block_out_channels 320/640/1280/1280,
             `attention_head_dim` [5, 10, 20, 20] (really heads), linear projections,
             cross_attention_dim 1024), the OpenCLIP-H text encoder as a transformers
             CLIPTextModel (23 layers, width 1024, 16 heads, gelu), the SD VAE (128/256/512/512),
             EulerDiscreteScheduler with trailing timesteps.
  sd15       runwayml/stable-diffusion-v1-5: the same U-Net layout with 8 heads, 1x1-conv
             projections and cross_attention_dim 768, CLIP ViT-L/14's text encoder (12 layers,
             width 768, quick_gelu), the same VAE, PNDMScheduler.
  mid        no real checkpoint: the SD 1.5 layout at 2/5 of its width for 256x256 images (32x32
             latents), small enough for a browser benchmark on a 2-core host: U-Net 128/256/512/512
             (8 heads, cross_attention_dim 512; 139.7M), a 6-layer CLIP text encoder of width 512
             (44.3M, 25.3M of it the token embedding of the real vocabulary), the SD VAE at
             quarter width (64/128/256/256; 20.9M), DDIMScheduler (SD 1.5's betas, leading
             spacing).

Speed and memory do not depend on the weights' values, so the weights are PyTorch's default
initialisation (seeded), stored as fp16 safetensors to halve the disk (the converter and
tools/scale_bench_torch.py both read them as f32). The tokenizer is the real CLIP vocabulary
(tests/fixtures/clip_tokenizer/, derived from OpenAI's bpe_simple_vocab_16e6.txt.gz by
tools/make_tokenizer_fixtures.py). Neither checkpoint ships a safety checker or feature
extractor here (the pipeline does not need them).

    python3 tools/make_scale_pipelines.py --out /work/scale-data [--only sd-turbo]

Disk: about 2.6 GB (sd-turbo), 2.1 GB (sd15) and 0.4 GB (mid).
"""

import argparse
import json
import os
import shutil
import time

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "clip_tokenizer")

# ---------------------------------------------------------------------------------------------
# 1. The configs, as the Hub's files hold them
# ---------------------------------------------------------------------------------------------

DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

SD_TURBO = {
    "model_index": {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.24.0.dev0",
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
    "unet": {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.24.0.dev0",
        "act_fn": "silu",
        "addition_embed_type": None,
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": None,
        "attention_head_dim": [5, 10, 20, 20],
        "attention_type": "default",
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "class_embed_type": None,
        "class_embeddings_concat": False,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "cross_attention_dim": 1024,
        "cross_attention_norm": None,
        "down_block_types": DOWN,
        "downsample_padding": 1,
        "dual_cross_attention": False,
        "encoder_hid_dim": None,
        "encoder_hid_dim_type": None,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_only_cross_attention": None,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "num_attention_heads": None,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "out_channels": 4,
        "projection_class_embeddings_input_dim": None,
        "resnet_out_scale_factor": 1.0,
        "resnet_skip_time_act": False,
        "resnet_time_scale_shift": "default",
        "sample_size": 64,
        "time_cond_proj_dim": None,
        "time_embedding_act_fn": None,
        "time_embedding_dim": None,
        "time_embedding_type": "positional",
        "timestep_post_act": None,
        "transformer_layers_per_block": 1,
        "up_block_types": UP,
        "upcast_attention": False,
        "use_linear_projection": True,
    },
    "text_encoder": {
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_size": 1024,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 4096,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 23,
        "pad_token_id": 1,
        "projection_dim": 512,
        "torch_dtype": "float16",
        "transformers_version": "4.35.0.dev0",
        "vocab_size": 49408,
    },
    "vae": {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.24.0.dev0",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "force_upcast": True,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 768,
        "scaling_factor": 0.18215,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    },
    "scheduler": {
        "_class_name": "EulerDiscreteScheduler",
        "_diffusers_version": "0.24.0.dev0",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "interpolation_type": "linear",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "set_alpha_to_one": False,
        "sigma_max": None,
        "sigma_min": None,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "timestep_spacing": "trailing",
        "timestep_type": "discrete",
        "trained_betas": None,
        "use_karras_sigmas": False,
    },
}

SD15 = {
    "model_index": {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.6.0",
        "feature_extractor": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
    "unet": {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.6.0",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": DOWN,
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": UP,
    },
    "text_encoder": {
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": 768,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "pad_token_id": 1,
        "projection_dim": 768,
        "torch_dtype": "float32",
        "transformers_version": "4.22.0.dev0",
        "vocab_size": 49408,
    },
    "vae": {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.6.0",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 512,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    },
    "scheduler": {
        "_class_name": "PNDMScheduler",
        "_diffusers_version": "0.6.0",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
        "clip_sample": False,
    },
}

MID = {
    "model_index": {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
    "unet": {
        **SD15["unet"],
        "_diffusers_version": "0.42.1",
        "block_out_channels": [128, 256, 512, 512],
        "cross_attention_dim": 512,
        "sample_size": 32,
    },
    "text_encoder": {
        **SD15["text_encoder"],
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_attention_heads": 8,
        "num_hidden_layers": 6,
        "projection_dim": 512,
    },
    "vae": {**SD15["vae"], "_diffusers_version": "0.42.1", "block_out_channels": [64, 128, 256, 256], "sample_size": 256},
    "scheduler": {
        "_class_name": "DDIMScheduler",
        "_diffusers_version": "0.42.1",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "trained_betas": None,
    },
}

PIPELINES = {"sd-turbo": SD_TURBO, "sd15": SD15, "mid": MID}

# ---------------------------------------------------------------------------------------------
# 2. Random weights, written as the Hub's folders are laid out
# ---------------------------------------------------------------------------------------------


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)


def save_fp16(model, path):
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, path)
    return sum(v.numel() for v in state.values())


def make(name, out, seed):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    spec = PIPELINES[name]
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    write_json(os.path.join(d, "model_index.json"), spec["model_index"])
    write_json(os.path.join(d, "scheduler", "scheduler_config.json"), spec["scheduler"])

    t = time.time()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(spec["unet"])
    write_json(os.path.join(d, "unet", "config.json"), spec["unet"])
    n_unet = save_fp16(unet, os.path.join(d, "unet", "diffusion_pytorch_model.safetensors"))
    del unet

    torch.manual_seed(seed + 1)
    vae = AutoencoderKL.from_config(spec["vae"])
    write_json(os.path.join(d, "vae", "config.json"), spec["vae"])
    n_vae = save_fp16(vae, os.path.join(d, "vae", "diffusion_pytorch_model.safetensors"))
    del vae

    torch.manual_seed(seed + 2)
    te_cfg = {k: v for k, v in spec["text_encoder"].items() if k not in ("architectures", "torch_dtype", "transformers_version", "model_type")}
    text_encoder = CLIPTextModel(CLIPTextConfig(**te_cfg))
    write_json(os.path.join(d, "text_encoder", "config.json"), spec["text_encoder"])
    n_te = save_fp16(text_encoder, os.path.join(d, "text_encoder", "model.safetensors"))
    del text_encoder

    tok = os.path.join(d, "tokenizer")
    os.makedirs(tok)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(TOKENIZER, f), tok)
    write_json(os.path.join(tok, "tokenizer_config.json"), {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "!" if name == "sd-turbo" else "<|endoftext|>",
    })
    print(f"{name}: {d}: unet {n_unet / 1e6:.1f}M, vae {n_vae / 1e6:.1f}M, text_encoder {n_te / 1e6:.1f}M "
          f"parameters; {time.time() - t:.0f}s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/work/scale-data")
    ap.add_argument("--only", choices=sorted(PIPELINES), action="append")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for name in a.only or sorted(PIPELINES):
        make(name, a.out, a.seed)
