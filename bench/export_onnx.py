#!/usr/bin/env python3
"""Export the benchmark models (bench/make_models.py) to ONNX for onnxruntime-web.

    python bench/export_onnx.py [--dir DIR] [--force]

For each model in DIR (default ~/.cache/wasm-diffusion/bench) and batch 1 and 8 it writes
<name>.b<batch>.onnx: torch.onnx.export (TorchScript exporter, opset 17), fixed shapes, inputs

  sample        float32 [B, 3, 32, 32]
  timestep      int64   [1]
  class_labels  int64   [B]     (class-conditional models only)

and one output `out` (the U-Net's prediction, [B, 3, 32, 32]). One file per batch size, weights
inside (no external data). Beside each it writes <name>.b<batch>.ref.json: the PyTorch output for
the input the browser benchmark feeds (sample = sin(0.1 * i) for element i, timestep 500, class
labels 0), so bench/browser.mjs can check that onnxruntime-web computes the same thing.
"""

import argparse
import json
import os
import warnings

import torch

CACHE = os.environ.get("WASM_DIFFUSION_CACHE", os.path.expanduser("~/.cache/wasm-diffusion"))


class Wrap(torch.nn.Module):
    def __init__(self, unet, classes):
        super().__init__()
        self.unet = unet
        self.classes = classes

    def forward(self, sample, timestep, class_labels=None):
        return self.unet(sample, timestep, class_labels=class_labels if self.classes else None).sample


def export(folder, name, batch, out, force):
    path = os.path.join(out, f"{name}.b{batch}.onnx")
    if os.path.exists(path) and not force:
        print(f"{os.path.basename(path)}: exists")
        return
    from diffusers import UNet2DModel
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()

    unet = UNet2DModel.from_pretrained(folder).eval()
    classes = unet.config.num_class_embeds is not None
    s = unet.config.sample_size
    s = (s, s) if isinstance(s, int) else tuple(s)
    shape = (batch, unet.config.in_channels, *s)
    sample = torch.sin(0.1 * torch.arange(torch.Size(shape).numel(), dtype=torch.float64)).float().reshape(shape)
    args = (sample, torch.tensor([500], dtype=torch.int64))
    names = ["sample", "timestep"]
    if classes:
        args = args + (torch.zeros(batch, dtype=torch.int64),)
        names.append("class_labels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrap(unet, classes), args, path, dynamo=False, opset_version=17,
                          input_names=names, output_names=["out"], do_constant_folding=True)
    ref = Wrap(unet, classes)(*args).flatten()
    with open(path[: -len(".onnx")] + ".ref.json", "w") as f:
        json.dump({"timestep": 500, "class_label": 0 if classes else None, "shape": list(shape),
                   "out_first": ref[:64].tolist(), "out_abs_mean": ref.abs().mean().item()}, f)
    print(f"{os.path.basename(path)}: {os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.path.join(CACHE, "bench"))
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    for name in ("emoji", "emoji-gpu", "cifar10"):
        for batch in (1, 8):
            export(os.path.join(a.dir, name), name, batch, a.dir, a.force)


if __name__ == "__main__":
    main()
