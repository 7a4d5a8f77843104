#!/usr/bin/env python3
"""Reference outputs of the shipped emoji model, for tests/shipped_model.rs.

    python tools/make_shipped_fixture.py [EXPORT_DIR]   (default ~/.cache/wasm-diffusion/train-gpu/export)

EXPORT_DIR is the diffusers folder that models/emoji/ was converted from (tools/train_emoji.py
writes it; the model card records its step count). Runs diffusers' UNet2DModel in f32 on a
fixed input and writes tests/fixtures/shipped/emoji_io.safetensors:

  sample        [2, 3, 32, 32]  torch.randn(generator=manual_seed(0))
  timesteps     [2]             500, 50   (int64)
  class_labels  [2]             2 (Animals & Nature), 8 (the null class)   (int64)
  out           [2, 3, 32, 32]  the predicted noise

The test loads models/emoji/emoji.{f16,int8,int4}.safetensors and compares its own forward
with `out`, so a shipped file that is not the trained network (or a conversion that went
wrong) fails. Regenerate this fixture whenever the shipped model changes.
"""
import json
import os
import sys

import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    src = os.path.expanduser(sys.argv[1] if len(sys.argv) > 1 else "~/.cache/wasm-diffusion/train-gpu/export")
    shipped = json.load(open(os.path.join(REPO, "models", "emoji", "train_info.json")))
    trained = json.load(open(os.path.join(src, "train_info.json")))
    if shipped["steps"] != trained["steps"]:
        sys.exit(f"{src} is the export at step {trained['steps']}, models/emoji holds step {shipped['steps']}")
    torch.set_grad_enabled(False)
    unet = UNet2DModel.from_pretrained(src).eval().float()
    sample = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    timesteps = torch.tensor([500, 50], dtype=torch.int64)
    class_labels = torch.tensor([2, 8], dtype=torch.int64)
    out = unet(sample, timesteps, class_labels=class_labels).sample
    d = os.path.join(REPO, "tests", "fixtures", "shipped")
    os.makedirs(d, exist_ok=True)
    save_file({"sample": sample.contiguous(), "timesteps": timesteps, "class_labels": class_labels,
               "out": out.contiguous()}, os.path.join(d, "emoji_io.safetensors"),
              metadata={"model_steps": str(trained["steps"]), "torch": torch.__version__,
                        "diffusers": __import__("diffusers").__version__})
    print(f"wrote {d}/emoji_io.safetensors (model at step {trained['steps']}, |out| mean {out.abs().mean():.4f})")


if __name__ == "__main__":
    main()
