#!/usr/bin/env python3
"""Generate the golden test fixtures for wasm-diffusion from Hugging Face diffusers.

What it makes (everything under tests/fixtures/, see tests/fixtures/README.md):

  unets/<name>/config.json                           UNet2DModel config (save_pretrained)
  unets/<name>/diffusion_pytorch_model.safetensors   random f32 weights (save_pretrained)
  unets/<name>/io.safetensors                        inputs, output and hooked intermediate activations
  unets/plain/scheduler_config.json                  DDPMScheduler(num_train_timesteps=1000) config
  unets/attn/ddim_pipeline.safetensors               10-step DDIMPipeline run on the `attn` model
  unets/attn/ddim_pipeline.json                      metadata for the above
  schedulers.json                                    beta tables, timestep schedules, DDPM/DDIM/DPM++ loops
  scheduler_absent_keys.json                         configs that omit keys, run with each scheduler
  schedulers_euler.json                              Euler, Euler ancestral, LCM, CM: tables and loops
  VERSIONS.json                                      torch / diffusers / safetensors / numpy versions

U-Net names: plain, attn, classcond, flip, ddpm_cifar_like_tiny.

How to run (from the repository root; needs torch, diffusers, safetensors, numpy):

    python tools/make_fixtures.py                      # everything
    python tools/make_fixtures.py --only absent-keys   # scheduler_absent_keys.json alone
    python tools/make_fixtures.py --only euler-family  # schedulers_euler.json alone

The script is deterministic (fixed torch seeds, one CPU thread) and idempotent: it deletes
tests/fixtures/unets/ and rewrites schedulers.json, scheduler_absent_keys.json and VERSIONS.json
on every full run. `--only absent-keys` rewrites scheduler_absent_keys.json and nothing else; `--only
euler-family` schedulers_euler.json.
tests/fixtures/README.md is maintained by hand and is not touched.
"""

import argparse
import inspect
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

torch.set_num_threads(1)
torch.set_grad_enabled(False)

import diffusers  # noqa: E402
import safetensors  # noqa: E402
from diffusers import (  # noqa: E402
    CMStochasticIterativeScheduler,
    DDIMPipeline,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    UNet2DModel,
)
from safetensors.torch import save_file  # noqa: E402

import diffusers.pipelines.ddim.pipeline_ddim as pipeline_ddim_mod  # noqa: E402
import diffusers.schedulers.scheduling_consistency_models as scheduling_cm_mod  # noqa: E402
import diffusers.schedulers.scheduling_ddpm as scheduling_ddpm_mod  # noqa: E402
import diffusers.schedulers.scheduling_euler_ancestral_discrete as scheduling_euler_ancestral_mod  # noqa: E402
import diffusers.schedulers.scheduling_lcm as scheduling_lcm_mod  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
UNETS = os.path.join(FIX, "unets")


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def flat(t):
    """Tensor -> flat list of python floats (NCHW order). f32 values are exact in f64 repr."""
    return [float(v) for v in t.detach().to(torch.float64).reshape(-1).tolist()]


def ints(t):
    return [int(v) for v in t.reshape(-1).tolist()]


def noise_for_step(k, shape):
    """noise[k][i] = float32(sin(1.7*i + 0.3*k)), computed in float64 and rounded to f32."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.float64)
    v = np.sin(1.7 * i + 0.3 * k).astype(np.float32)
    return torch.from_numpy(v).reshape(shape)


NOISE_FORMULA = (
    "noise[k][i] = float32(sin(1.7*i + 0.3*k)); evaluated in float64 then rounded to float32; "
    "k = 0-based step index within the loop (index into the scheduler's timesteps), "
    "i = flat index in NCHW (row-major) order over a tensor of shape x_T_shape"
)


def dummy_model(sample, t):
    """diffusers' tests dummy model: (sample * t) / (t + 1), all float32."""
    t = torch.as_tensor(t).reshape(-1, *([1] * (sample.dim() - 1))).to(sample.dtype)
    return sample * t / (t + 1)


DUMMY_MODEL_FORMULA = (
    "model_output = (sample * tf) / (tf + 1) elementwise in float32, "
    "tf = float32(t) with t the integer timestep passed to step()"
)


# ----------------------------------------------------------------------------------------------
# 1. U-Nets
# ----------------------------------------------------------------------------------------------

# Channel counts are half of those first planned (plain/flip/attn (16, 32), classcond (32, 32, 64),
# ddpm_cifar_like_tiny (16, 16, 32, 32)) to keep tests/fixtures under ~3 MB; groups and head sizes
# are chosen so that every GroupNorm has >= 2 channels per group and attention keeps several heads.
# The small two-level U-Net the other cases start from (`plain` is exactly this).
SMALL_UNET = dict(
    sample_size=8,
    in_channels=3,
    out_channels=3,
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
)

UNET_CASES = {
    "plain": dict(SMALL_UNET),
    "attn": dict(
        SMALL_UNET,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        attention_head_dim=4,
    ),
    "classcond": dict(
        SMALL_UNET,
        sample_size=16,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 16, 32),
        norm_num_groups=8,
        attention_head_dim=8,
        num_class_embeds=5,
    ),
    "flip": dict(
        SMALL_UNET,
        flip_sin_to_cos=False,
        freq_shift=1,
        center_input_sample=True,
        norm_eps=1e-6,
        downsample_padding=0,
        add_attention=False,
    ),
    "ddpm_cifar_like_tiny": dict(
        SMALL_UNET,
        sample_size=16,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 8, 16, 16),
        flip_sin_to_cos=False,
        freq_shift=1,
        downsample_padding=0,
        attention_head_dim=None,
        norm_eps=1e-6,  # as in google/ddpm-cifar10-32
        resnet_time_scale_shift="default",
    ),
    # OpenAI's consistency-model layout (diffusers' convert_consistency_to_diffusers.py):
    # resnet up/down-samplers, scale-shift time conditioning, classes, fractional timesteps.
    "consistency_tiny": dict(
        SMALL_UNET,
        down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"),
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        attn_norm_num_groups=4,
        upsample_type="resnet",
        downsample_type="resnet",
        num_class_embeds=10,
    ),
}

# Timesteps given to each U-Net case: integers, but the consistency models' c_noise values
# (250 ln(sigma): sigma 80 and 0.5).
UNET_CASE_TIMESTEPS = {"consistency_tiny": [1095.5, -173.287]}

UNET_TIMESTEPS = [10, 999]
CLASS_LABELS = [1, 4]


def rerandomise(model):
    """Overwrite every parameter so that all weights matter (diffusers zero-inits some)."""
    norm_types = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, norm_types) and pname == "weight":
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * 0.2)


def build_unet(name, seed):
    torch.manual_seed(seed)
    model = UNet2DModel(**UNET_CASES[name])
    rerandomise(model)
    model.eval()
    return model


def run_unet_with_hooks(model, sample, timesteps_long, class_labels):
    acts = {}
    handles = []

    def hook(key):
        def fn(_mod, _inp, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            acts[key] = out.detach().clone().contiguous()

        return fn

    handles.append(model.time_proj.register_forward_hook(hook("time_proj")))
    handles.append(model.time_embedding.register_forward_hook(hook("time_embedding")))
    if model.class_embedding is not None:
        handles.append(model.class_embedding.register_forward_hook(hook("class_embedding")))
    handles.append(model.conv_in.register_forward_hook(hook("conv_in")))
    for i, b in enumerate(model.down_blocks):
        handles.append(b.register_forward_hook(hook(f"down_blocks.{i}")))
    if model.mid_block is not None:
        handles.append(model.mid_block.register_forward_hook(hook("mid_block")))
    for i, b in enumerate(model.up_blocks):
        handles.append(b.register_forward_hook(hook(f"up_blocks.{i}")))
    try:
        out = model(sample, timesteps_long, class_labels=class_labels).sample
    finally:
        for h in handles:
            h.remove()
    return out, acts


def make_unets(only=None):
    summary = {}
    for idx, name in enumerate(UNET_CASES):
        if only is not None and name not in only:
            continue
        d = os.path.join(UNETS, name)
        os.makedirs(d, exist_ok=True)
        model = build_unet(name, seed=100 + idx)
        model.save_pretrained(d, safe_serialization=True)

        cfg = model.config
        size = cfg.sample_size
        gen = torch.Generator().manual_seed(200 + idx)
        sample = torch.randn((2, cfg.in_channels, size, size), generator=gen, dtype=torch.float32)
        timesteps = (
            torch.tensor(UNET_CASE_TIMESTEPS[name], dtype=torch.float32)
            if name in UNET_CASE_TIMESTEPS
            else torch.tensor(UNET_TIMESTEPS, dtype=torch.long)
        )
        class_labels = (
            torch.tensor(CLASS_LABELS, dtype=torch.long) if cfg.num_class_embeds is not None else None
        )
        out, acts = run_unet_with_hooks(model, sample, timesteps, class_labels)

        std = float(out.std())
        assert 0.1 < std < 10.0, f"{name}: output std {std} out of range"
        for k, v in acts.items():
            assert torch.isfinite(v).all(), f"{name}: {k} not finite"

        tensors = {
            "sample": sample.contiguous(),
            "timesteps": timesteps.to(torch.float32),
            "output": out.contiguous(),
        }
        if class_labels is not None:
            tensors["class_labels"] = class_labels.to(torch.int64)
        tensors.update(acts)
        save_file(tensors, os.path.join(d, "io.safetensors"))

        if name == "plain":
            DDPMScheduler(num_train_timesteps=1000).save_pretrained(d)

        summary[name] = {
            k: {"shape": list(v.shape), "std": float(v.float().std()), "absmax": float(v.float().abs().max())}
            for k, v in tensors.items()
        }
        print(f"[unet] {name}: output std {std:.4f}; params {sum(p.numel() for p in model.parameters())}")
        if name == "attn":
            make_ddim_pipeline(model, d)
    return summary


# ----------------------------------------------------------------------------------------------
# 2. DDIM pipeline on the `attn` model
# ----------------------------------------------------------------------------------------------


def make_ddim_pipeline(unet, d):
    num_steps, eta = 10, 0.0
    x_T = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.float32)

    scheduler = DDIMScheduler(num_train_timesteps=1000)
    pipe = DDIMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)

    orig = pipeline_ddim_mod.randn_tensor

    def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
        assert tuple(shape) == tuple(x_T.shape), shape
        return x_T.clone()

    pipeline_ddim_mod.randn_tensor = fake_randn
    try:
        image = pipe(batch_size=2, num_inference_steps=num_steps, eta=eta, output_type="np").images
    finally:
        pipeline_ddim_mod.randn_tensor = orig
    image = torch.from_numpy(np.ascontiguousarray(image)).to(torch.float32)

    # by hand
    sched = DDIMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(num_steps)
    x = x_T.clone()
    outs, prevs, x0s = [], [], []
    for t in sched.timesteps:
        eps = unet(x, t).sample
        res = sched.step(eps, t, x, eta=eta)
        x = res.prev_sample
        outs.append(eps)
        prevs.append(x)
        x0s.append(res.pred_original_sample)
    final = x
    by_hand_image = (final / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    diff = float((by_hand_image - image).abs().max())
    assert diff <= 1e-6, f"DDIM by-hand loop differs from pipeline: {diff}"

    save_file(
        {
            "x_T": x_T.contiguous(),
            "image": image.contiguous(),
            "final_sample": final.contiguous(),
            "timesteps": sched.timesteps.to(torch.float32).contiguous(),
            "model_outputs": torch.stack(outs).contiguous(),
            "prev_samples": torch.stack(prevs).contiguous(),
            "pred_original_samples": torch.stack(x0s).contiguous(),
        },
        os.path.join(d, "ddim_pipeline.safetensors"),
    )
    meta = {
        "model": "unets/attn",
        "scheduler": "DDIMScheduler",
        "scheduler_kwargs": {"num_train_timesteps": 1000},
        "scheduler_config": config_dict(sched.config),
        "num_inference_steps": num_steps,
        "eta": eta,
        "batch_size": 2,
        "output_type": "np",
        "timesteps": ints(sched.timesteps),
        "x_T": "torch.randn((2,3,8,8), generator=torch.Generator().manual_seed(0)) (stored in safetensors)",
        "image": "pipeline output, NHWC, (final_sample / 2 + 0.5).clamp(0, 1)",
        "max_abs_diff_by_hand_vs_pipeline": diff,
    }
    with open(os.path.join(d, "ddim_pipeline.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"[ddim pipeline] timesteps {ints(sched.timesteps)}; by-hand vs pipeline max diff {diff}")


# ----------------------------------------------------------------------------------------------
# 3. Schedulers
# ----------------------------------------------------------------------------------------------

TABLE_INDICES = [0, 1, 2, 10, 100, 487, 500, 999]
VARIANCE_T = [0, 1, 10, 487, 999]
BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"]


def config_dict(cfg):
    """Resolved scheduler config without diffusers' private keys (their order is not deterministic)."""
    return to_jsonable({k: v for k, v in dict(cfg).items() if not str(k).startswith("_")})


def to_jsonable(x):
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and math.isinf(x):
        return "-inf" if x < 0 else "inf"
    return x


def betas_f64(schedule, n=1000, beta_start=1e-4, beta_end=0.02):
    if schedule == "linear":
        return np.linspace(beta_start, beta_end, n, dtype=np.float64)
    if schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, n, dtype=np.float64) ** 2
    if schedule == "squaredcos_cap_v2":

        def abar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array(
            [min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=np.float64
        )
    raise ValueError(schedule)


def make_tables():
    out = {}
    for sch in BETA_SCHEDULES:
        s = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule=sch)
        b64 = betas_f64(sch)
        ac64 = np.cumprod(1.0 - b64)
        var = {"t": VARIANCE_T}
        for vt in ["fixed_small", "fixed_large", "fixed_small_log", "fixed_large_log"]:
            var[vt] = [float(s._get_variance(t, variance_type=vt)) for t in VARIANCE_T]
        out[sch] = {
            "config": {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": sch},
            "indices": TABLE_INDICES,
            "betas_f32": [float(s.betas[i]) for i in TABLE_INDICES],
            "betas_f64": [float(b64[i]) for i in TABLE_INDICES],
            "alphas_cumprod_f32": [float(s.alphas_cumprod[i]) for i in TABLE_INDICES],
            "alphas_cumprod_f64": [float(ac64[i]) for i in TABLE_INDICES],
            "betas_f32_all": flat(s.betas),
            "alphas_cumprod_f32_all": flat(s.alphas_cumprod),
            "ddpm_variance": var,
        }
    return out


def make_timesteps():
    rows = []
    for cls in [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler]:
        for spacing in ["leading", "trailing", "linspace"]:
            for offset in [0, 1]:
                steps_list = [10, 20, 50] + ([1000] if cls is not DPMSolverMultistepScheduler else [])
                for n in steps_list:
                    cfg = {"num_train_timesteps": 1000, "timestep_spacing": spacing, "steps_offset": offset}
                    s = cls(**cfg)
                    s.set_timesteps(n)
                    row = {
                        "scheduler": cls.__name__,
                        "config": cfg,
                        "num_inference_steps": n,
                        "timesteps": ints(s.timesteps),
                    }
                    rows.append(row)
    return rows


def make_x_T():
    return torch.randn((1, 3, 4, 4), generator=torch.Generator().manual_seed(42), dtype=torch.float32)


def loop_record(name, s, cfg, n, x_T, x_T_scale, steps, x, uses_noise, recorded=None, after_n=(), after_ts=()):
    """The fixture entry of a whole loop of scheduler `s` (same keys and order for the three
    schedulers; `after_n` / `after_ts` are the scheduler's own keys, placed after
    num_inference_steps / timesteps)."""
    return {
        "name": name,
        "scheduler": type(s).__name__,
        "config": cfg,
        "full_config": config_dict(s.config),
        "num_inference_steps": n,
        **dict(after_n),
        "timesteps": ints(s.timesteps),
        **dict(after_ts),
        "uses_noise": uses_noise,
        "x_T_shape": list(x_T.shape),
        "x_T_scale": x_T_scale,
        "x_T": flat(x_T),
        "all_steps_recorded": recorded is None,
        "recorded_steps": list(range(len(steps))) if recorded is None else recorded,
        "steps": steps,
        "final_sample": flat(x),
    }


def loop_ddpm(name, cfg, n, x_T, record_every=None, x_T_scale=1.0, scheduler=None):
    """DDPM loop on `DDPMScheduler(**cfg)`, or on `scheduler` (a fresh one) when given."""
    s = DDPMScheduler(**cfg) if scheduler is None else scheduler
    s.set_timesteps(n)
    state = {"k": None, "calls": 0}
    orig = scheduling_ddpm_mod.randn_tensor

    def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
        state["calls"] += 1
        return noise_for_step(state["k"], tuple(shape)).to(dtype or torch.float32)

    scheduling_ddpm_mod.randn_tensor = fake_randn
    steps, recorded = [], []
    x = x_T.clone()
    try:
        T = len(s.timesteps)
        for k, t in enumerate(s.timesteps):
            state["k"] = k
            eps = dummy_model(x, t)
            res = s.step(eps, t, x)
            x = res.prev_sample
            if record_every is None or k % record_every == 0 or k == T - 1:
                recorded.append(k)
                steps.append(
                    {
                        "k": k,
                        "t": int(t),
                        "prev_sample": flat(x),
                        "pred_original_sample": flat(res.pred_original_sample),
                    }
                )
    finally:
        scheduling_ddpm_mod.randn_tensor = orig
    assert state["calls"] == len(s.timesteps) - int((s.timesteps == 0).sum()), state
    return loop_record(name, s, cfg, n, x_T, x_T_scale, steps, x, True, None if record_every is None else recorded)


def loop_ddim(name, cfg, n, x_T, eta, x_T_scale=1.0, scheduler=None):
    """DDIM loop on `DDIMScheduler(**cfg)`, or on `scheduler` (a fresh one) when given."""
    s = DDIMScheduler(**cfg) if scheduler is None else scheduler
    s.set_timesteps(n)
    steps = []
    x = x_T.clone()
    for k, t in enumerate(s.timesteps):
        eps = dummy_model(x, t)
        if eta > 0:
            res = s.step(eps, t, x, eta=eta, variance_noise=noise_for_step(k, tuple(x.shape)))
        else:
            res = s.step(eps, t, x, eta=eta)
        x = res.prev_sample
        steps.append(
            {"k": k, "t": int(t), "prev_sample": flat(x), "pred_original_sample": flat(res.pred_original_sample)}
        )
    return loop_record(name, s, cfg, n, x_T, x_T_scale, steps, x, eta > 0, after_n=[("eta", eta)])


def loop_dpm(name, cfg, n, x_T, x_T_scale=1.0, scheduler=None):
    """DPM-Solver++ loop on `DPMSolverMultistepScheduler(**cfg)`, or on `scheduler` (a fresh one)."""
    s = DPMSolverMultistepScheduler(**cfg) if scheduler is None else scheduler
    s.set_timesteps(n)
    sigmas = flat(s.sigmas)
    steps = []
    x = x_T.clone()
    for k, t in enumerate(s.timesteps):
        eps = dummy_model(x, t)
        res = s.step(eps, t, x)
        x = res.prev_sample
        steps.append(
            {
                "k": k,
                "t": int(t),
                "prev_sample": flat(x),
                # x0 prediction produced by convert_model_output (dpmsolver++), not returned by step()
                "converted_model_output": flat(s.model_outputs[-1]),
            }
        )
    return loop_record(name, s, cfg, n, x_T, x_T_scale, steps, x, False, after_ts=[("sigmas", sigmas)])


def make_loops():
    x_T = make_x_T()
    base = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}
    loops = []

    # DDPM
    ddpm_eps = dict(base, prediction_type="epsilon", variance_type="fixed_small", clip_sample=True)
    loops.append(loop_ddpm("ddpm_eps_10", ddpm_eps, 10, x_T))
    loops.append(loop_ddpm("ddpm_eps_1000", ddpm_eps, 1000, x_T, record_every=50))
    loops.append(loop_ddpm("ddpm_v_10", dict(ddpm_eps, prediction_type="v_prediction"), 10, x_T))
    loops.append(loop_ddpm("ddpm_sample_10", dict(ddpm_eps, prediction_type="sample"), 10, x_T))
    loops.append(loop_ddpm("ddpm_fixed_large_10", dict(ddpm_eps, variance_type="fixed_large"), 10, x_T))
    # With the dummy model and x_T ~ N(0,1), pred_original_sample never leaves [-1, 1] for epsilon
    # prediction, so clip_sample would be untested; the clip/no-clip pairs use a scaled x_T.
    x_T20 = x_T * 20.0
    loops.append(loop_ddpm("ddpm_clip_x20_10", ddpm_eps, 10, x_T20, x_T_scale=20.0))
    loops.append(loop_ddpm("ddpm_noclip_x20_10", dict(ddpm_eps, clip_sample=False), 10, x_T20, x_T_scale=20.0))
    loops.append(loop_ddpm("ddpm_cos_10", dict(ddpm_eps, beta_schedule="squaredcos_cap_v2"), 10, x_T))
    loops.append(loop_ddpm("ddpm_trailing_10", dict(ddpm_eps, timestep_spacing="trailing"), 10, x_T))

    # DDIM
    ddim = dict(base, clip_sample=True, set_alpha_to_one=True, steps_offset=0, prediction_type="epsilon")
    loops.append(loop_ddim("ddim_eta0_10", ddim, 10, x_T, 0.0))
    loops.append(loop_ddim("ddim_eta0_50", ddim, 50, x_T, 0.0))
    loops.append(loop_ddim("ddim_eta0.5_10", ddim, 10, x_T, 0.5))
    loops.append(loop_ddim("ddim_eta1_10", ddim, 10, x_T, 1.0))
    loops.append(
        loop_ddim("ddim_noalphaone_offset1_10", dict(ddim, set_alpha_to_one=False, steps_offset=1), 10, x_T, 0.0)
    )
    loops.append(loop_ddim("ddim_v_10", dict(ddim, prediction_type="v_prediction"), 10, x_T, 0.0))
    x_T4 = x_T * 4.0
    loops.append(loop_ddim("ddim_clip_x4_10", ddim, 10, x_T4, 0.0, x_T_scale=4.0))
    loops.append(loop_ddim("ddim_noclip_x4_10", dict(ddim, clip_sample=False), 10, x_T4, 0.0, x_T_scale=4.0))
    loops.append(loop_ddim("ddim_trailing_10", dict(ddim, timestep_spacing="trailing"), 10, x_T, 0.0))

    # DPM-Solver++ (final_sigmas_type / timestep_spacing left at diffusers' defaults; see full_config)
    dpm = dict(
        base,
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        use_karras_sigmas=False,
        thresholding=False,
        prediction_type="epsilon",
    )
    for pred in ["epsilon", "v_prediction"]:
        for n in [10, 15, 20]:
            tag = "eps" if pred == "epsilon" else "v"
            loops.append(loop_dpm(f"dpmpp2m_{tag}_{n}", dict(dpm, prediction_type=pred), n, x_T))
    loops.append(loop_dpm("dpmpp1_eps_10", dict(dpm, solver_order=1), 10, x_T))
    return x_T, loops


def make_schedulers_json():
    x_T, loops = make_loops()
    doc = {
        "description": "Golden numbers from diffusers schedulers; see tests/fixtures/README.md",
        "dummy_model": DUMMY_MODEL_FORMULA,
        "noise_formula": NOISE_FORMULA,
        "x_T_shape": list(x_T.shape),
        "x_T": flat(x_T),
        "x_T_origin": "torch.randn((1,3,4,4), generator=torch.Generator().manual_seed(42)), float32",
        "dpm_default_final_sigmas_type": DPMSolverMultistepScheduler().config.final_sigmas_type,
        "dpm_default_timestep_spacing": DPMSolverMultistepScheduler().config.timestep_spacing,
        "tables": make_tables(),
        "timesteps": make_timesteps(),
        "loops": loops,
    }
    path = os.path.join(FIX, "schedulers.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"[schedulers] {len(loops)} loops, {len(doc['timesteps'])} timestep rows, {os.path.getsize(path)} bytes")


# ----------------------------------------------------------------------------------------------
# 4. Absent keys: a scheduler_config.json run with another scheduler than the one it names
# ----------------------------------------------------------------------------------------------

# Keys a scheduler_config.json omits take the defaults of the scheduler that is RUN. A pipeline
# swaps schedulers with `Target.from_config(source.config)`, which drops the keys diffusers
# recorded in `_use_default_values` (the ones the file did not have), so the target's own
# __init__ defaults apply; `Target.from_config(raw json)` and `Target.from_pretrained(folder)`
# give the same. E.g. a DDPM config without `timestep_spacing` run with DPM-Solver++ gets
# DPM-Solver++'s `linspace`, not DDPM's `leading`.

# (a) google/ddpm-cifar10-32's scheduler_config.json (older than most keys).
ABSENT_DDPM_MINIMAL = {
    "_class_name": "DDPMScheduler",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "trained_betas": None,
    "variance_type": "fixed_small",
}
# (b) a latent-diffusion / Stable Diffusion style DDIM config.
ABSENT_DDIM_MINIMAL = {
    "_class_name": "DDIMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
# (c) a DPM-Solver++ config with the schedule and prediction type only.
ABSENT_DPM_MINIMAL = {
    "_class_name": "DPMSolverMultistepScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "v_prediction",
}
# (d) every key present: DDIMScheduler(...).save_config with timestep_spacing "leading".
ABSENT_DDIM_FULL_KWARGS = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
)

# (target class, num_inference_steps, eta); eta is read by DDIM only.
ABSENT_TARGETS = [
    (DDPMScheduler, 10, 0.0),
    (DDIMScheduler, 10, 0.0),
    (DDIMScheduler, 25, 0.0),
    (DDIMScheduler, 10, 1.0),
    (DPMSolverMultistepScheduler, 10, 0.0),
    (DPMSolverMultistepScheduler, 25, 0.0),
]
SHORT_NAMES = {
    "DDPMScheduler": "ddpm",
    "DDIMScheduler": "ddim",
    "DPMSolverMultistepScheduler": "dpm++",
}
SCHEDULER_CLASSES = {c.__name__: c for c in [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler]}


def init_defaults(cls):
    """The defaults of `cls.__init__`, as JSON (-inf as "-inf")."""
    params = inspect.signature(cls.__init__).parameters
    return to_jsonable({k: p.default for k, p in params.items() if k != "self"})


def absent_sources(tmp):
    """(name, raw scheduler_config.json text) for the four source configs."""
    out = []
    for name, cfg in [
        ("ddpm_minimal", ABSENT_DDPM_MINIMAL),
        ("ddim_minimal", ABSENT_DDIM_MINIMAL),
        ("dpm_minimal", ABSENT_DPM_MINIMAL),
    ]:
        # Laid out as diffusers writes it (to_json_string: indent 2, sorted keys).
        out.append((name, json.dumps(cfg, indent=2, sort_keys=True) + "\n"))
    d = os.path.join(tmp, "ddim_full_leading")
    DDIMScheduler(**ABSENT_DDIM_FULL_KWARGS).save_config(d)
    with open(os.path.join(d, "scheduler_config.json")) as f:
        out.append(("ddim_full_leading", f.read()))
    return out


def absent_case(source, raw, src, folder, target_cls, n, eta, x_T):
    swapped = target_cls.from_config(src.config)
    want = config_dict(swapped.config)
    for how, other in [
        ("from_config(raw json)", target_cls.from_config(json.loads(raw))),
        ("from_pretrained(folder)", target_cls.from_pretrained(folder)),
    ]:
        got = config_dict(other.config)
        assert got == want, f"{source} -> {target_cls.__name__}: {how} differs from from_config(source.config)"
    target = target_cls.__name__
    name = f"{source}->{SHORT_NAMES[target]}_{n}" + (f"_eta{eta:g}" if eta > 0 else "")
    raw_keys = set(json.loads(raw))
    if target_cls is DDPMScheduler:
        entry = loop_ddpm(name, None, n, x_T, scheduler=swapped)
    elif target_cls is DDIMScheduler:
        entry = loop_ddim(name, None, n, x_T, eta, scheduler=swapped)
    else:
        entry = loop_dpm(name, None, n, x_T, scheduler=swapped)
    assert entry["scheduler"] == target
    final = np.array(entry["final_sample"], dtype=np.float64)
    return {
        "name": name,
        "source": source,
        "source_class": type(src).__name__,
        "target": target,
        "num_inference_steps": n,
        "eta": eta,
        "absent_keys": sorted(k for k in init_defaults(target_cls) if k not in raw_keys),
        "target_config": want,
        "timesteps": entry["timesteps"],
        "uses_noise": entry["uses_noise"],
        "final_sample": entry["final_sample"],
        "final_sum": float(final.sum()),
        "final_mean": float(final.mean()),
    }


def make_absent_keys_json():
    x_T = make_x_T()
    verbosity = diffusers.utils.logging.get_verbosity()
    # from_config warns about every key the target does not take (clip_sample for DPM-Solver++, ...).
    diffusers.utils.logging.set_verbosity_error()
    sources, cases = {}, []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for source, raw in absent_sources(tmp):
                folder = os.path.join(tmp, source)
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, "scheduler_config.json"), "w") as f:
                    f.write(raw)
                src_cls = SCHEDULER_CLASSES[json.loads(raw)["_class_name"]]
                src = src_cls.from_pretrained(folder)
                sources[source] = {"class": src_cls.__name__, "raw_config": raw}
                for target_cls, n, eta in ABSENT_TARGETS:
                    cases.append(absent_case(source, raw, src, folder, target_cls, n, eta, x_T))
    finally:
        diffusers.utils.logging.set_verbosity(verbosity)
    doc = {
        "description": "Scheduler configs that omit keys, run with each scheduler; see tests/fixtures/README.md",
        "diffusers_version": diffusers.__version__,
        "dummy_model": DUMMY_MODEL_FORMULA,
        "noise_formula": NOISE_FORMULA,
        "x_T_shape": list(x_T.shape),
        "x_T": flat(x_T),
        "x_T_origin": "torch.randn((1,3,4,4), generator=torch.Generator().manual_seed(42)), float32",
        "defaults": {name: init_defaults(cls) for name, cls in SCHEDULER_CLASSES.items()},
        "sources": sources,
        "cases": cases,
    }
    path = os.path.join(FIX, "scheduler_absent_keys.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"[absent keys] {len(sources)} sources, {len(cases)} cases, {os.path.getsize(path)} bytes")


# ----------------------------------------------------------------------------------------------
# 5. The Euler family: Euler, Euler ancestral, LCM, consistency models (schedulers_euler.json)
# ----------------------------------------------------------------------------------------------

# Sigma-space schedulers: the loop runs as diffusers' pipelines do: x = x_T * init_noise_sigma,
# then per step model_input = scale_model_input(x, t), model_output = dummy_model(model_input, t),
# x = step(model_output, t, x). Fractional timesteps (Karras sigmas, CM) enter the dummy model as
# float32(t). Noise that step() draws is replaced by noise_for_step(k) (k = step index).
EULER_X_T_SHAPE = (1, 3, 2, 2)
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
# stabilityai/sd-turbo's scheduler_config.json as published (also tests/fixtures/configs/sd-turbo-scheduler.json).
SD_TURBO_CONFIG = {
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
}


def euler_family_noise(module):
    """Context: `module.randn_tensor` returns noise_for_step(state['k']); yields the state."""

    class Patch:
        def __enter__(self):
            self.state = {"k": None, "calls": 0}
            self.orig = module.randn_tensor

            def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
                self.state["calls"] += 1
                return noise_for_step(self.state["k"], tuple(shape)).to(dtype or torch.float32)

            module.randn_tensor = fake_randn
            return self.state

        def __exit__(self, *exc):
            module.randn_tensor = self.orig

    return Patch()


def f64_reference(cls, cfg, n):
    """timesteps, sigmas and init_noise_sigma of `cls(**cfg)` computed from float64 alphas_cumprod
    (diffusers' own code, with its f32 table swapped for numpy's f64 one): the same formulas as
    diffusers, without its float32 cumulative product, so a port in f64 agrees to rounding."""
    s = cls.from_config(cfg)
    c = s.config
    b = betas_f64(c.beta_schedule, c.num_train_timesteps, c.beta_start, c.beta_end)
    s.alphas_cumprod = torch.from_numpy(np.cumprod(1.0 - b))
    s.set_timesteps(n)
    sig = s.sigmas.to(torch.float64).numpy()
    m = float(sig.max())
    init = m if c.timestep_spacing in ("linspace", "trailing") else math.sqrt(m * m + 1.0)
    return {"timesteps": flat(s.timesteps), "sigmas": [float(v) for v in sig], "init_noise_sigma": init}


def euler_family_loop(name, cls, cfg, n, x_T, module=None):
    """A whole loop of `cls.from_config(cfg)` (keys of other schedulers ignored, as a pipeline's
    config is read) with `n` steps, recorded at every step."""
    s = cls.from_config(cfg)
    s.set_timesteps(n)
    init = float(s.init_noise_sigma)
    x = x_T * s.init_noise_sigma
    steps = []
    patch = euler_family_noise(module) if module is not None else None
    state = patch.__enter__() if patch is not None else {"k": None}
    try:
        for k, t in enumerate(s.timesteps):
            state["k"] = k
            model_input = s.scale_model_input(x, t)
            tf = torch.tensor(float(t), dtype=torch.float32)
            eps = model_input * tf / (tf + 1)
            res = s.step(eps, t, x)
            x = res.prev_sample
            x0 = getattr(res, "pred_original_sample", None)
            if x0 is None:
                x0 = getattr(res, "denoised", None)
            steps.append(
                {
                    "k": k,
                    "t": float(t),
                    "scaled_model_input": flat(model_input),
                    "prev_sample": flat(x),
                    "pred_original_sample": None if x0 is None else flat(x0),
                }
            )
    finally:
        if patch is not None:
            calls = state["calls"]
            patch.__exit__(None, None, None)
    rec = {
        "name": name,
        "scheduler": cls.__name__,
        "config": to_jsonable(cfg),
        "full_config": config_dict(s.config),
        "num_inference_steps": n,
        "timesteps": flat(s.timesteps),
        "sigmas": flat(s.sigmas) if hasattr(s, "sigmas") else None,
        "init_noise_sigma": init,
        "noise_calls": calls if patch is not None else 0,
        "x_T": flat(x_T),
        "steps": steps,
        "final_sample": flat(x),
    }
    if cls in (EulerDiscreteScheduler, EulerAncestralDiscreteScheduler):
        rec["f64"] = f64_reference(cls, cfg, n)
    return rec


def img2img_loop(name, cls, cfg, n, t_start, x0, module=None):
    """diffusers' img2img start on `cls.from_config(cfg)` with `n` steps: the run denoises
    timesteps[t_start:] after set_begin_index(t_start) (where the scheduler has it), from
    add_noise(x0, noise_for_step(99), timesteps[t_start]); step k's noise is noise_for_step(k),
    k the index into the full schedule."""
    s = cls.from_config(cfg)
    s.set_timesteps(n)
    ts = s.timesteps[t_start:]
    if hasattr(s, "set_begin_index"):
        s.set_begin_index(t_start)
    x = s.add_noise(x0, noise_for_step(99, tuple(x0.shape)), ts[:1])
    x_start = flat(x)
    steps = []
    patch = euler_family_noise(module) if module is not None else None
    state = patch.__enter__() if patch is not None else {"k": None}
    try:
        for j, t in enumerate(ts):
            k = t_start + j
            state["k"] = k
            model_input = s.scale_model_input(x, t)
            tf = torch.tensor(float(t), dtype=torch.float32)
            eps = model_input * tf / (tf + 1)
            if cls is DDIMScheduler:
                res = s.step(eps, t, x, eta=0.0)
            else:
                res = s.step(eps, t, x)
            x = res.prev_sample
            steps.append({"k": k, "t": float(t), "prev_sample": flat(x)})
    finally:
        if patch is not None:
            patch.__exit__(None, None, None)
    return {
        "name": name,
        "scheduler": cls.__name__,
        "full_config": config_dict(s.config),
        "num_inference_steps": n,
        "begin_index": t_start,
        "timesteps": flat(torch.as_tensor(s.timesteps, dtype=torch.float64)),
        "x0": flat(x0),
        "x_start": x_start,
        "steps": steps,
        "final_sample": flat(x),
    }


def make_euler_json():
    x_T = torch.randn(EULER_X_T_SHAPE, generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    E, EA = EulerDiscreteScheduler, EulerAncestralDiscreteScheduler
    ea_mod = scheduling_euler_ancestral_mod
    runs = []
    sd = dict(SD_BETAS, prediction_type="epsilon")
    for spacing, off in [("linspace", 0), ("leading", 1), ("trailing", 1)]:
        runs.append(euler_family_loop(f"euler_{spacing}_10", E, dict(sd, timestep_spacing=spacing, steps_offset=off), 10, x_T))
    runs.append(euler_family_loop("euler_trailing_v_4", E, dict(sd, timestep_spacing="trailing", prediction_type="v_prediction"), 4, x_T))
    runs.append(euler_family_loop("euler_leading_sample_10", E, dict(sd, timestep_spacing="leading", prediction_type="sample"), 10, x_T))
    runs.append(euler_family_loop("euler_linear_betas_7", E, {"num_train_timesteps": 1000}, 7, x_T))
    turbo = dict(SD_TURBO_CONFIG)
    for n in [1, 4]:
        runs.append(euler_family_loop(f"sd_turbo_{n}", E, turbo, n, x_T))
    runs.append(euler_family_loop("euler_karras_10", E, dict(sd, use_karras_sigmas=True), 10, x_T))
    runs.append(euler_family_loop("euler_karras_leading_25", E, dict(sd, use_karras_sigmas=True, timestep_spacing="leading", steps_offset=1), 25, x_T))
    runs.append(euler_family_loop("euler_karras_minmax_8", E, dict(sd, use_karras_sigmas=True, sigma_min=0.1, sigma_max=10.0), 8, x_T))
    runs.append(euler_family_loop("euler_final_sigma_min_10", E, dict(sd, final_sigmas_type="sigma_min"), 10, x_T))
    runs.append(euler_family_loop("euler_a_linspace_10", EA, dict(sd, timestep_spacing="linspace"), 10, x_T, ea_mod))
    runs.append(euler_family_loop("euler_a_trailing_4", EA, dict(sd, timestep_spacing="trailing"), 4, x_T, ea_mod))
    runs.append(euler_family_loop("euler_a_leading_v_10", EA, dict(sd, timestep_spacing="leading", steps_offset=1, prediction_type="v_prediction"), 10, x_T, ea_mod))
    lcm = {}
    for n in [1, 4, 8]:
        runs.append(euler_family_loop(f"lcm_{n}", LCMScheduler, lcm, n, x_T, scheduling_lcm_mod))
    runs.append(euler_family_loop("lcm_v_orig20_4", LCMScheduler, {"prediction_type": "v_prediction", "original_inference_steps": 20, "timestep_scaling": 5.0}, 4, x_T, scheduling_lcm_mod))
    cm_mod = scheduling_cm_mod
    for n in [1, 2, 3]:
        runs.append(euler_family_loop(f"cm_{n}", CMStochasticIterativeScheduler, {}, n, x_T, cm_mod))
    runs.append(euler_family_loop("cm_noclip_2", CMStochasticIterativeScheduler, {"clip_denoised": False, "sigma_data": 0.7, "rho": 5.0, "s_noise": 0.9}, 2, x_T, cm_mod))
    runs.append(euler_family_loop("cm_t1000_4", CMStochasticIterativeScheduler, {"num_train_timesteps": 1000, "sigma_min": 0.01, "sigma_max": 40.0}, 4, x_T, cm_mod))
    x0 = x_T * 0.5
    sd_ddim = dict(SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    img2img = [
        img2img_loop("img2img_euler_10_from_4", E, sd, 10, 4, x0),
        img2img_loop("img2img_euler_karras_10_from_3", E, dict(sd, use_karras_sigmas=True), 10, 3, x0),
        img2img_loop("img2img_euler_a_10_from_5", EA, sd, 10, 5, x0, ea_mod),
        img2img_loop("img2img_lcm_4_from_1", LCMScheduler, {}, 4, 1, x0, scheduling_lcm_mod),
        img2img_loop("img2img_cm_3_from_1", CMStochasticIterativeScheduler, {}, 3, 1, x0, cm_mod),
        img2img_loop("img2img_dpm_10_from_3", DPMSolverMultistepScheduler, sd, 10, 3, x0),
        img2img_loop("img2img_ddim_10_from_3", DDIMScheduler, sd_ddim, 10, 3, x0),
        img2img_loop("img2img_ddpm_10_from_6", DDPMScheduler, dict(SD_BETAS, clip_sample=False), 10, 6, x0, scheduling_ddpm_mod),
    ]
    doc = {
        "description": "Golden numbers from diffusers' Euler-family schedulers; see tests/fixtures/README.md",
        "dummy_model": "model_output = (model_input * tf) / (tf + 1) elementwise in float32, tf = float32(t), "
        "model_input = scale_model_input(x, t); x starts at x_T * init_noise_sigma",
        "noise_formula": NOISE_FORMULA,
        "x_T_shape": list(EULER_X_T_SHAPE),
        "x_T_origin": "torch.randn((1,3,2,2), generator=torch.Generator().manual_seed(7)), float32",
        "runs": runs,
        "img2img": img2img,
    }
    path = os.path.join(FIX, "schedulers_euler.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"[euler family] {len(runs)} runs, {os.path.getsize(path)} bytes")


# ----------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description="Generate the golden test fixtures from diffusers.")
    parser.add_argument(
        "--only",
        choices=["absent-keys", "euler-family", "consistency-unet"],
        help="write only this part (absent-keys: scheduler_absent_keys.json; euler-family: "
        "schedulers_euler.json; consistency-unet: tests/fixtures/unets/consistency_tiny); "
        "default: everything",
    )
    args = parser.parse_args()
    os.makedirs(FIX, exist_ok=True)
    if args.only == "absent-keys":
        make_absent_keys_json()
        return
    if args.only == "euler-family":
        make_euler_json()
        return
    if args.only == "consistency-unet":
        make_unets(only=["consistency_tiny"])
        return

    if os.path.isdir(UNETS):
        shutil.rmtree(UNETS)
    os.makedirs(UNETS)

    versions = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }
    with open(os.path.join(FIX, "VERSIONS.json"), "w") as f:
        json.dump(versions, f, indent=1)
        f.write("\n")

    make_unets()
    make_schedulers_json()
    make_absent_keys_json()
    make_euler_json()
    print("done:", versions)


if __name__ == "__main__":
    main()
