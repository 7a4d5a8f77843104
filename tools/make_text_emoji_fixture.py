#!/usr/bin/env python3
"""Reference run of the shipped text-to-emoji pipeline, for tests/text_emoji_model.rs.

    python tools/make_text_emoji_fixture.py [EXPORT_DIR]
        (default ~/.cache/wasm-diffusion/train-text-emoji/export)

EXPORT_DIR is the diffusers StableDiffusionPipeline folder that models/text-emoji/ was converted
from (tools/train_text_emoji.py export writes it; models/text-emoji/train_info.json records its
step count, and this script refuses an export at another step).

diffusers' StableDiffusionPipeline runs one prompt (DDIM, 4 steps, guidance 3, 64x64) from
fixed initial latents twice:

  * on the weights of models/text-emoji/text-emoji.int8.safetensors, dequantized here exactly
    as the Rust loader does (int8: q * scale per output row; f16 -> f32), so the Rust run of
    the shipped file must match it up to float rounding: this is the golden test;
  * on the f32 training export, which shows what the int8 file costs (a looser bound).

Writes tests/fixtures/shipped/text_emoji_io.safetensors (f32 tensors):

  latents                 [1, 4, 16, 16]  torch.randn(generator=manual_seed(0))
  prompt_embeds           [1, 77, H]      dequantized weights
  negative_prompt_embeds  [1, 77, H]      dequantized weights (the empty prompt)
  image                   [1, 64, 64, 3]  dequantized weights, in [0, 1]
  prompt_embeds_f32       [1, 77, H]      the f32 export
  image_f32               [1, 64, 64, 3]  the f32 export

and tests/fixtures/shipped/text_emoji_io.json (prompt, steps, guidance, model step, versions).
Regenerate both whenever the shipped model changes.
"""
import copy
import json
import os
import sys

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from safetensors import safe_open
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "models", "text-emoji", "text-emoji.int8.safetensors")
OUT = os.path.join(REPO, "tests", "fixtures", "shipped")
PROMPT = "red apple"
STEPS = 4
GUIDANCE = 3.0
SCALE = ".scale"  # src/weights/mod.rs SCALE_SUFFIX


def dequantized(path: str) -> dict[str, dict[str, torch.Tensor]]:
    """{component: diffusers state dict} of a pipeline file, weights as the Rust loader sees them."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(path, "np") as f:
        names = set(f.keys())
        for name in sorted(names):
            if name.endswith(SCALE):
                continue
            v = f.get_tensor(name)
            if v.dtype == np.int8:
                s = f.get_tensor(name + SCALE).astype(np.float32)
                v = v.astype(np.float32) * s.reshape((-1,) + (1,) * (v.ndim - 1))
            elif v.dtype == np.uint8:
                sys.exit(f"{name}: int4 is not handled here (the shipped file is int8)")
            component, key = name.split(".", 1)
            out.setdefault(component, {})[key] = torch.from_numpy(v.astype(np.float32))
    return out


def run(pipe, latents):
    embeds, negative = pipe.encode_prompt(PROMPT, "cpu", 1, True, "")
    image = pipe(PROMPT, negative_prompt="", height=64, width=64, num_inference_steps=STEPS,
                 guidance_scale=GUIDANCE, latents=latents.clone(), output_type="np").images
    return embeds, negative, torch.from_numpy(image)


def main():
    src = os.path.expanduser(sys.argv[1] if len(sys.argv) > 1
                             else "~/.cache/wasm-diffusion/train-text-emoji/export")
    shipped = json.load(open(os.path.join(REPO, "models", "text-emoji", "train_info.json")))
    trained = json.load(open(os.path.join(src, "train_info.json")))
    if shipped["steps"] != trained["steps"]:
        sys.exit(f"{src} is the export at step {trained['steps']}, models/text-emoji holds step {shipped['steps']}")
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)

    pipe = StableDiffusionPipeline.from_pretrained(src)
    pipe.set_progress_bar_config(disable=True)
    quant = copy.deepcopy(pipe)
    weights = dequantized(SHIPPED)
    for component in ("unet", "vae", "text_encoder"):
        model = getattr(quant, component)
        expected = set(model.state_dict())
        # CLIPTextModel's names carry `text_model.` or not depending on the transformers version
        sd = {k.removeprefix("text_model."): v for k, v in weights[component].items()}
        if any(k.startswith("text_model.") for k in expected):
            sd = {"text_model." + k: v for k, v in sd.items()}
        missing = expected - set(sd)
        # transformers keeps position_ids as a buffer that is not a weight
        missing = {k for k in missing if not k.endswith("position_ids")}
        if missing or set(sd) - expected:
            sys.exit(f"{component}: missing {sorted(missing)[:5]}, unexpected {sorted(set(sd) - expected)[:5]}")
        model.load_state_dict(sd, strict=False)

    latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    embeds, negative, image = run(quant, latents)
    embeds_f32, _, image_f32 = run(pipe, latents)
    os.makedirs(OUT, exist_ok=True)
    tensors = {"latents": latents, "prompt_embeds": embeds, "negative_prompt_embeds": negative,
               "image": image, "prompt_embeds_f32": embeds_f32, "image_f32": image_f32}
    save_file({k: v.float().contiguous() for k, v in tensors.items()},
              os.path.join(OUT, "text_emoji_io.safetensors"))
    meta = {
        "model": "models/text-emoji/text-emoji.int8.safetensors",
        "model_steps": trained["steps"], "prompt": PROMPT, "negative_prompt": "",
        "num_inference_steps": STEPS, "guidance_scale": GUIDANCE, "scheduler": "DDIMScheduler",
        "height": 64, "width": 64,
        "int8_vs_f32_image_max_abs": float((image - image_f32).abs().max()),
        "int8_vs_f32_image_mean_abs": float((image - image_f32).abs().mean()),
        "torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
        "transformers": __import__("transformers").__version__,
    }
    with open(os.path.join(OUT, "text_emoji_io.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
