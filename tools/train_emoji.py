#!/usr/bin/env python3
"""Train the class-conditional emoji DDPM shipped in ``models/`` (PyTorch + diffusers).

Data: ``tools/emoji_dataset.py`` (Noto Color Emoji artwork, Apache-2.0) ->
``~/.cache/wasm-diffusion/emoji32.npz`` (uint8 [N,32,32,3], labels 0..7).

Model: ``diffusers.UNet2DModel`` (32x32 RGB, ``num_class_embeds=9``; class 8 is
the null class for classifier-free guidance), epsilon prediction, linear beta
DDPM schedule with 1000 steps.  Only DownBlock2D / AttnDownBlock2D /
UpBlock2D / AttnUpBlock2D, the default UNetMidBlock2D, positional time
embedding and resnet_time_scale_shift="default" are used, so the Rust/Wasm
sampler only needs to implement those.

Training: MSE on epsilon, AdamW (lr 2e-4, linear warmup, then constant),
gradient clipping 1.0, EMA of weights (decay min(ema_decay, (1+s)/(10+s))),
class dropout to the null class with p=0.1, random horizontal flip, data in
[-1, 1].

Resumable: ``--ckpt-dir DIR`` holds ``DIR/ckpt.pt`` (model, EMA, optimizer,
step, RNG states, loss history, accumulated wall time), written atomically
every ``--save-every`` steps, at the end and on SIGTERM/SIGINT.  Starting with
the same command resumes from it.  The EMA weights are exported every
``--export-every`` steps and on exit to ``DIR/export/`` (diffusers folder:
config.json + diffusion_pytorch_model.safetensors + scheduler_config.json +
train_info.json).  Progress is logged to ``DIR/train.log``.

Examples::

    # CPU run (background, one thread)
    nice -n 19 python tools/train_emoji.py --preset cpu --threads 1 \
        --ckpt-dir ~/.cache/wasm-diffusion/train-cpu --batch 32
    # GPU run in 10-minute chunks (re-run the same command to continue)
    python tools/train_emoji.py --preset gpu --device cuda --batch 256 --amp \
        --ckpt-dir ckpt-gpu --max-minutes 9
    # The shipped model: one H100, one background process for 25 min (16,170 steps,
    # ~11 steps/s: at this size the loop is bound by kernel launches, not FLOPs)
    python tools/train_emoji.py --preset gpu --device cuda --batch 256 --amp \
        --ckpt-dir ckpt-gpu --max-minutes 25 --save-every 2000 --export-every 2000
    # look at samples from the current export (DDIM 50 steps, CFG 3.0)
    python tools/train_emoji.py --sample --ckpt-dir ~/.cache/wasm-diffusion/train-cpu
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import shutil
import signal
import sys
import time
from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

CLASSES = [
    "Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink",
    "Travel & Places", "Activities", "Objects", "Symbols",
]
NUM_CLASSES = len(CLASSES)
NULL_CLASS = NUM_CLASSES  # 8
NUM_CLASS_EMBEDS = NUM_CLASSES + 1  # 9

D, AD, U, AU = "DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D"

# UNet2DModel kwargs per preset.  Resolutions for a 32x32 input: block i of a
# 3-level net runs at 32 / 16 / 8 px.  Attention in AttnDownBlock2D happens at
# the block's (pre-downsample) resolution; the mid block (8x8 or 4x4) always
# has one attention layer.
PRESETS = {
    # ~1.12M params; attention only at 8x8 (last down block, first up block,
    # mid block).  ~0.75 s/step at batch 32 on one (shared) CPU thread.
    "cpu": dict(
        block_out_channels=(32, 64, 64),
        down_block_types=(D, D, AD),
        up_block_types=(AU, U, U),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=32,
    ),
    # ~6.8M params (3.2 GFLOP per image); attention at 16x16 and 8x8; for a
    # GPU run.  Sized so that f16 + int8 + int4 files stay well under 40 MB.
    "gpu": dict(
        block_out_channels=(64, 128, 128),
        down_block_types=(D, AD, AD),
        up_block_types=(AU, AU, U),
        layers_per_block=2,
        norm_num_groups=32,
        attention_head_dim=32,
    ),
}

SCHEDULER_KW = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=1e-4,
    beta_end=0.02,
    prediction_type="epsilon",
    clip_sample=True,
    clip_sample_range=1.0,
    variance_type="fixed_small",
)


def make_unet(preset: str):
    from diffusers import UNet2DModel
    return UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        num_class_embeds=NUM_CLASS_EMBEDS,
        time_embedding_type="positional",
        flip_sin_to_cos=True,
        freq_shift=0,
        mid_block_type="UNetMidBlock2D",
        resnet_time_scale_shift="default",
        act_fn="silu",
        dropout=0.0,
        **PRESETS[preset],
    )


def make_scheduler():
    from diffusers import DDPMScheduler
    return DDPMScheduler(**SCHEDULER_KW)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def hardware(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {name}, {threads} thread(s)"


# --------------------------------------------------------------------------
# checkpoint helpers


def atomic_torch_save(obj, path: str):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str, text: str):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def rng_state(data_gen: torch.Generator, noise_gen: torch.Generator) -> dict:
    st = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "data": data_gen.get_state(),
    }
    if noise_gen is not data_gen:
        st["noise"] = noise_gen.get_state()
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict, data_gen: torch.Generator, noise_gen: torch.Generator):
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    data_gen.set_state(st["data"])
    if noise_gen is not data_gen and "noise" in st:
        noise_gen.set_state(st["noise"])
    if "cuda" in st and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(st["cuda"])
        except Exception:  # different GPU count; not important
            pass


@torch.no_grad()
def ema_update(ema, model, decay: float):
    ep = list(ema.parameters())
    mp = list(model.parameters())
    torch._foreach_lerp_(ep, mp, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


def export(ema, args, state: dict, device: torch.device, data_n: int):
    """Write DIR/export atomically-ish (build DIR/export.tmp, then swap)."""
    out = os.path.join(args.ckpt_dir, "export")
    tmp = out + ".tmp"
    old = out + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    ema.save_pretrained(tmp, safe_serialization=True)
    make_scheduler().save_pretrained(tmp)
    recent = state["recent_losses"]
    info = {
        "steps": state["step"],
        "preset": state["preset"],
        "params": n_params(ema),
        "dataset_n": data_n,
        "classes": CLASSES,
        "null_class": NULL_CLASS,
        "batch": state["batch"],
        "lr": args.lr,
        "warmup": args.warmup,
        "ema_decay": args.ema_decay,
        "cond_drop": args.cond_drop,
        "hflip": not args.no_flip,
        "amp": bool(args.amp and device.type == "cuda"),
        "hardware": state["hardware"],
        "wall_time_s": round(state["wall_time"], 1),
        "final_loss_ma": (float(np.mean(recent)) if len(recent) else None),
        "final_loss_ma_window": len(recent),
        "weights": "EMA",
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
    }
    atomic_write_text(os.path.join(tmp, "train_info.json"), json.dumps(info, indent=2) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(out):
        os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


# --------------------------------------------------------------------------
# training


class Log:
    def __init__(self, path: str):
        self.f = open(path, "a", buffering=1)

    def __call__(self, msg: str):
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")


def train(args):
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    os.makedirs(args.ckpt_dir, exist_ok=True)
    log = Log(os.path.join(args.ckpt_dir, "train.log"))
    ckpt_path = os.path.join(args.ckpt_dir, "ckpt.pt")

    # ---- data
    data = np.load(os.path.expanduser(args.data))
    images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    labels = torch.from_numpy(data["labels"]).long()
    assert images.shape[1:] == (3, 32, 32), images.shape
    assert int(labels.max()) < NUM_CLASSES
    images, labels = images.to(device), labels.to(device)
    data_n = len(labels)

    # ---- model / optimiser
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    data_gen = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    # Gaussian noise is drawn where the model runs: on a GPU, making a
    # [batch, 3, 32, 32] array on the CPU each step would be the bottleneck.
    noise_gen = data_gen if device.type == "cpu" else \
        torch.Generator(device=device).manual_seed(args.seed + 2)

    resume = torch.load(ckpt_path, map_location="cpu", weights_only=False) \
        if os.path.exists(ckpt_path) else None
    preset = resume["preset"] if resume else args.preset
    if resume and args.preset != preset:
        log(f"WARNING: checkpoint preset {preset!r} overrides --preset {args.preset!r}")

    model = make_unet(preset).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999),
                            weight_decay=args.weight_decay, eps=1e-8)
    sched = make_scheduler()
    alphas_cumprod = sched.alphas_cumprod.to(device=device, dtype=torch.float32)
    sqrt_ac = alphas_cumprod.sqrt()
    sqrt_1mac = (1.0 - alphas_cumprod).sqrt()

    hw = hardware(device, args.threads)
    state = {
        "step": 0, "preset": preset, "batch": args.batch, "wall_time": 0.0,
        "loss_history": [],  # (step, mean loss over the log interval, wall_time)
        "recent_losses": deque(maxlen=args.ma_window), "hardware": hw,
    }
    if resume:
        model.load_state_dict(resume["model"])
        ema.load_state_dict(resume["ema"])
        opt.load_state_dict(resume["optimizer"])
        set_rng_state(resume["rng"], data_gen, noise_gen)
        state["step"] = resume["step"]
        state["wall_time"] = resume["wall_time"]
        state["loss_history"] = resume["loss_history"]
        state["recent_losses"] = deque(resume["recent_losses"], maxlen=args.ma_window)
        prev_hw = resume.get("hardware", hw)
        state["hardware"] = hw if prev_hw == hw else f"{prev_hw}; then {hw}"
        if resume["batch"] != args.batch:
            log(f"note: batch changed {resume['batch']} -> {args.batch}")
        log(f"resumed from {ckpt_path} at step {state['step']} "
            f"(wall {state['wall_time']/60:.1f} min)")
    else:
        log(f"fresh start: preset={preset} params={n_params(model):,} N={data_n} "
            f"batch={args.batch} lr={args.lr} device={device} threads={args.threads}")
    log(f"config: {json.dumps(PRESETS[preset])}")

    # ---- signals: finish the current step, then save and exit
    stop = {"flag": None}

    def on_signal(signum, _frame):
        stop["flag"] = signal.Signals(signum).name

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def save():
        ckpt = {
            "model": model.state_dict(), "ema": ema.state_dict(),
            "optimizer": opt.state_dict(), "step": state["step"],
            "preset": preset, "batch": args.batch,
            "wall_time": state["wall_time"], "loss_history": state["loss_history"],
            "recent_losses": list(state["recent_losses"]),
            "rng": rng_state(data_gen, noise_gen), "hardware": state["hardware"],
            "model_config": dict(model.config), "args": vars(args),
        }
        atomic_torch_save(ckpt, ckpt_path)

    t_session = time.time()
    t_last = time.time()
    t_log = time.time()
    steps_since_log, loss_sum = 0, 0.0
    reason = "steps reached"
    model.train()
    amp = (device.type == "cuda" and args.amp)

    while state["step"] < args.steps:
        if stop["flag"]:
            reason = f"signal {stop['flag']}"
            break
        if args.max_minutes and (time.time() - t_session) > args.max_minutes * 60:
            reason = f"--max-minutes {args.max_minutes}"
            break

        step = state["step"]
        lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
        for g in opt.param_groups:
            g["lr"] = lr

        idx = torch.randint(0, data_n, (args.batch,), generator=data_gen).to(device)
        x0 = images[idx]
        y = labels[idx]
        if not args.no_flip:
            flip = (torch.rand(args.batch, generator=data_gen) < 0.5).to(device)
            x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        drop = (torch.rand(args.batch, generator=data_gen) < args.cond_drop).to(device)
        y = torch.where(drop, torch.full_like(y, NULL_CLASS), y)
        t = torch.randint(0, SCHEDULER_KW["num_train_timesteps"], (args.batch,),
                          generator=data_gen).to(device)
        noise = torch.randn(x0.shape, generator=noise_gen, device=device)
        xt = sqrt_ac[t, None, None, None] * x0 + sqrt_1mac[t, None, None, None] * noise

        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            pred = model(xt, t, class_labels=y).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        state["step"] = step = step + 1
        ema_update(ema, model, min(args.ema_decay, (1 + step) / (10 + step)))

        lv = float(loss.detach())
        if not math.isfinite(lv):
            log(f"non-finite loss at step {step}; stopping without saving")
            sys.exit(2)
        loss_sum += lv
        steps_since_log += 1
        state["recent_losses"].append(lv)
        now = time.time()
        state["wall_time"] += now - t_last
        t_last = now

        if step % args.log_every == 0:
            dt = now - t_log
            mean = loss_sum / steps_since_log
            state["loss_history"].append((step, mean, state["wall_time"]))
            log(f"step {step} loss {mean:.4f} ma{len(state['recent_losses'])} "
                f"{np.mean(state['recent_losses']):.4f} lr {lr:.2e} "
                f"{steps_since_log/dt:.3f} steps/s {steps_since_log*args.batch/dt:.1f} img/s "
                f"wall {state['wall_time']/60:.1f} min")
            t_log, steps_since_log, loss_sum = now, 0, 0.0
        if step % args.save_every == 0:
            save()
        if step % args.export_every == 0:
            export(ema, args, state, device, data_n)
            log(f"exported EMA weights at step {step}")

    save()
    out = export(ema, args, state, device, data_n)
    log(f"stopped ({reason}) at step {state['step']}; checkpoint {ckpt_path}; export {out}")


# --------------------------------------------------------------------------
# sampling


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def sample(args):
    from diffusers import DDIMScheduler, UNet2DModel
    from PIL import Image

    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    src = args.export or os.path.join(args.ckpt_dir, "export")
    unet = UNet2DModel.from_pretrained(src).to(device).eval()
    sched = DDIMScheduler.from_pretrained(src)
    sched.set_timesteps(args.sample_steps)
    info_path = os.path.join(src, "train_info.json")
    step = json.load(open(info_path))["steps"] if os.path.exists(info_path) else 0
    out_dir = args.sample_out or os.path.join(args.ckpt_dir, "samples")
    os.makedirs(out_dir, exist_ok=True)

    n = args.n_per_class
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    rows = []
    for c in range(NUM_CLASSES):
        x = torch.randn((n, 3, 32, 32), generator=g).to(device)
        y = torch.full((n,), c, device=device, dtype=torch.long)
        y_null = torch.full((n,), NULL_CLASS, device=device, dtype=torch.long)
        for t in sched.timesteps:
            tt = torch.full((n,), int(t), device=device, dtype=torch.long)
            if args.guidance == 1.0:
                eps = unet(x, tt, class_labels=y).sample
            else:
                e = unet(torch.cat([x, x]), torch.cat([tt, tt]),
                         class_labels=torch.cat([y, y_null])).sample
                e_c, e_u = e.chunk(2)
                eps = e_u + args.guidance * (e_c - e_u)
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        img = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        row = np.concatenate(list(img), axis=1)  # [32, n*32, 3]
        rows.append(row)
        p = os.path.join(out_dir, f"step{step:07d}_class{c}.png")
        Image.fromarray(row).resize((row.shape[1] * 2, 64), Image.NEAREST).save(p)
        print(f"class {c} {CLASSES[c]} -> {p}", flush=True)
    grid = np.concatenate(rows, axis=0)
    p = os.path.join(out_dir, f"step{step:07d}_grid.png")
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(p)
    print(f"grid (rows = classes 0..7, guidance {args.guidance}, DDIM {args.sample_steps}) -> {p}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default="~/.cache/wasm-diffusion/emoji32.npz")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--ckpt-dir", required=True)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1_000_000, help="total steps (incl. resumed)")
    ap.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop cleanly after this many minutes in this invocation (0 = no limit)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--cond-drop", type=float, default=0.1)
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--export-every", type=int, default=1000)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--ma-window", type=int, default=1000,
                    help="window of the moving-average loss in train_info.json")
    # sampling
    ap.add_argument("--sample", action="store_true", help="sample from the export and exit")
    ap.add_argument("--export", default=None, help="diffusers folder (default CKPT_DIR/export)")
    ap.add_argument("--sample-out", default=None, help="default CKPT_DIR/samples")
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--n-per-class", type=int, default=8)
    args = ap.parse_args()
    args.ckpt_dir = os.path.expanduser(args.ckpt_dir)
    if args.sample:
        sample(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
