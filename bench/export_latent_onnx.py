#!/usr/bin/env python3
"""Export Stable Diffusion pipeline folders to ONNX for the latent browser benchmark
(bench/latent_browser.mjs; BENCHMARKS.md, "Latent text-to-image in the browser vs onnxruntime-web").

    python bench/export_latent_onnx.py [--dir DIR] [--force] [NAME ...]

For each pipeline folder DIR/NAME (default DIR ~/.cache/wasm-diffusion/latent-bench, NAME tiny and
mid) it writes three ONNX files with fixed shapes (torch.onnx.export, TorchScript exporter, opset
17, f32, weights inside), the three parts of diffusers' StableDiffusionPipeline that hold weights:

  NAME.text_encoder.onnx   input_ids int64 [1, 77]                    -> hidden f32 [1, 77, D]
                           (CLIPTextModel's last_hidden_state, as encode_prompt uses it)
  NAME.unet.onnx           sample f32 [2, 4, h, w], timestep int64 [1],
                           encoder_hidden_states f32 [2, 77, D]       -> out f32 [2, 4, h, w]
                           (batch 2: the unconditional and the conditional half of guidance)
  NAME.vae_decoder.onnx    latents f32 [1, 4, h, w]                   -> image f32 [1, 3, 8h, 8w]
                           (AutoencoderKL.decode: post_quant_conv + decoder; the pipeline's
                           division by scaling_factor stays outside, in JS, as in diffusers)

and NAME.ref.json: the shapes, the scheduler's and the VAE's numbers the JS loop needs, and
PyTorch's output of each part for inputs the browser can rebuild (ids listed in the file; sample,
hidden states and latents filled with sin/cos of the element index), so the harness checks that
onnxruntime-web computes what PyTorch does before it times anything. That the whole ONNX loop
computes what our Sampler does is checked in the browser: same latents, same prompt ids, same
DDIM steps, final images compared.
"""

import argparse
import json
import math
import os
import warnings

import torch

CACHE = os.environ.get("WASM_DIFFUSION_CACHE", os.path.expanduser("~/.cache/wasm-diffusion"))


def filled(shape, fn, scale=1.0):
    """`fn(0.1 * i) * scale` for element i, in float64 then rounded to f32 (the JS side does the same)."""
    n = torch.Size(shape).numel()
    return (fn(0.1 * torch.arange(n, dtype=torch.float64)) * scale).float().reshape(shape)


class TextEncoder(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids):
        return self.m(input_ids).last_hidden_state


class UNet(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.m(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


class VaeDecoder(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, latents):
        return self.m.decode(latents).sample


def export_one(module, args, names, path, force):
    if os.path.exists(path) and not force:
        print(f"{os.path.basename(path)}: exists")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, path, dynamo=False, opset_version=17,
                          input_names=names, output_names=["out"], do_constant_folding=True)
    print(f"{os.path.basename(path)}: {os.path.getsize(path)} bytes")


def summary(y):
    y = y.flatten()
    return {"shape": None, "first": y[:64].tolist(), "abs_mean": y.abs().mean().item()}


def export(folder, name, out, force):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging as dlog
    from transformers import CLIPTextModel

    dlog.set_verbosity_error()
    # 1. The three parts, f32 (the folders may store fp16), eager attention in the text encoder
    #    (plain MatMul/Softmax in the graph, as the U-Net's attention exports).
    te = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), torch_dtype=torch.float32,
                                       attn_implementation="eager").eval()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet"), torch_dtype=torch.float32).eval()
    vae = AutoencoderKL.from_pretrained(os.path.join(folder, "vae"), torch_dtype=torch.float32).eval()
    with open(os.path.join(folder, "scheduler", "scheduler_config.json")) as f:
        sched = json.load(f)

    # 2. Shapes: the U-Net's native latent size.
    s = unet.config.sample_size
    h, w = (s, s) if isinstance(s, int) else tuple(s)
    c = unet.config.in_channels
    d = te.config.hidden_size
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    vocab = te.config.vocab_size
    # Reference ids: start, 20 tokens spread over the vocabulary, end, end-padding.
    bos, eos = te.config.bos_token_id, te.config.eos_token_id
    ids = [bos] + [(7 + 37 * i) % (vocab - 2) for i in range(20)] + [eos] * 56
    ids_t = torch.tensor([ids], dtype=torch.int64)
    sample = filled((2, c, h, w), torch.sin)
    hidden = filled((2, 77, d), torch.cos, 0.5)
    latents = filled((1, vae.config.latent_channels, h, w), torch.sin)
    t = torch.tensor([500], dtype=torch.int64)

    # 3. Export, and PyTorch's outputs for the reference inputs.
    export_one(TextEncoder(te), (ids_t,), ["input_ids"], os.path.join(out, f"{name}.text_encoder.onnx"), force)
    export_one(UNet(unet), (sample, t, hidden), ["sample", "timestep", "encoder_hidden_states"],
               os.path.join(out, f"{name}.unet.onnx"), force)
    export_one(VaeDecoder(vae), (latents,), ["latents"], os.path.join(out, f"{name}.vae_decoder.onnx"), force)
    ref = {
        "name": name,
        "latent": [c, h, w],
        "hidden": d,
        "vae_scale_factor": f,
        "scaling_factor": vae.config.scaling_factor,
        "scheduler": {k: sched.get(k) for k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps",
                                                 "set_alpha_to_one", "steps_offset", "timestep_spacing",
                                                 "prediction_type")},
        "parameters": {"text_encoder": sum(p.numel() for p in te.parameters()),
                       "unet": sum(p.numel() for p in unet.parameters()),
                       "vae_decoder": sum(p.numel() for p in vae.post_quant_conv.parameters())
                       + sum(p.numel() for p in vae.decoder.parameters())},
        "inputs": {"input_ids": ids, "timestep": 500,
                   "sample": "sin(0.1 i), [2, c, h, w]", "encoder_hidden_states": "0.5 cos(0.1 i), [2, 77, D]",
                   "latents": "sin(0.1 i), [1, c, h, w]"},
        "text_encoder": summary(TextEncoder(te)(ids_t)),
        "unet": summary(UNet(unet)(sample, t, hidden)),
        "vae_decoder": summary(VaeDecoder(vae)(latents)),
    }
    for k, shape in (("text_encoder", [1, 77, d]), ("unet", [2, c, h, w]), ("vae_decoder", [1, 3, f * h, f * w])):
        ref[k]["shape"] = shape
    with open(os.path.join(out, f"{name}.ref.json"), "w") as fh:
        json.dump(ref, fh)
    assert all(math.isfinite(ref[k]["abs_mean"]) for k in ("text_encoder", "unet", "vae_decoder"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.path.join(CACHE, "latent-bench"))
    ap.add_argument("--force", action="store_true")
    ap.add_argument("names", nargs="*", default=["tiny", "mid"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    for name in a.names:
        export(os.path.join(a.dir, name), name, a.dir, a.force)


if __name__ == "__main__":
    main()
