#!/usr/bin/env python3
"""Train the text-to-emoji latent diffusion model (a diffusers StableDiffusionPipeline).

One command per stage; every stage reads and writes under ``--root``
(default ``~/.cache/wasm-diffusion/train-text-emoji``):

  data    ``tools/emoji_dataset.py``'s 1,636 Noto emoji at 64x64 (RGB composited on white,
          exactly as the pixel model's data) + captions from emoji.json -> ROOT/data.npz
  vae     ``AutoencoderKL`` 64x64x3 -> 16x16x4 (3 blocks, 2 downsamples), L1 + MSE + a small
          KL term; exports ROOT/vae/export/ with ``scaling_factor`` = 1 / std of the latents
  unet    ``UNet2DConditionModel`` (16x16x4) and ``CLIPTextModel`` (the real 49,408-token CLIP
          vocabulary, a small transformer) trained jointly from scratch on the frozen VAE's
          latents: epsilon prediction, scaled_linear betas (SD's), caption dropout 0.1 to the
          empty prompt for classifier-free guidance, EMA weights
  export  ROOT/export/: a StableDiffusionPipeline folder (model_index.json, unet/, vae/,
          text_encoder/, tokenizer/, scheduler/ with DDIM) built from the EMA weights, plus
          train_info.json and loss-curve PNGs; checked by loading it with
          ``StableDiffusionPipeline.from_pretrained``
  sample  a grid from the export with diffusers' pipeline (DDIM, CFG) -> ROOT/samples/

Captions (several per image): the Unicode name ("red apple"), "an emoji of red apple",
"red apple emoji", "red apple, food & drink, food fruit", each short name ("apple") and
"apple, food & drink". The phrasings in ``HELD_OUT_TEMPLATES`` ("a picture of red apple",
"red apple icon") are never trained on: they test whether the text encoder generalises.

The training stages are resumable like tools/train_emoji.py: ``ROOT/<stage>/ckpt.pt`` (models,
EMA, optimizer, step, RNG states, loss history, wall time) is written atomically every
``--save-every`` steps, at the end, after ``--max-minutes`` and on SIGTERM/SIGINT; the same
command continues from it. Progress goes to ``ROOT/<stage>/train.log``.

Examples::

    npm install --prefix tools
    python tools/train_text_emoji.py data
    # CPU, one thread, in the background (models/text-emoji/: VAE 25 min at batch 16; U-Net
    # batch 32 for 314 steps, then resumed with --batch 16, stopped with SIGTERM at 2,523 steps)
    nice -n 19 python tools/train_text_emoji.py vae --preset cpu --threads 1 --batch 16 --max-minutes 25
    nice -n 19 python tools/train_text_emoji.py unet --preset cpu --threads 1 --batch 16
    python tools/train_text_emoji.py export && python tools/train_text_emoji.py sample
    # continue (or start) on a GPU: the same commands with --preset gpu --device cuda
    python tools/train_text_emoji.py unet --preset gpu --device cuda --batch 256 --max-minutes 60

A checkpoint remembers its preset: resuming a cpu-preset checkpoint with --preset gpu keeps the
cpu architecture (and says so); use a fresh --root for the gpu architecture.
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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import emoji_dataset  # noqa: E402

CLIP_TOKENIZER = os.path.join(REPO, "tests", "fixtures", "clip_tokenizer")
MAX_LENGTH = 77
SIZE = 64

TRAIN_TEMPLATES = [
    "{name}",
    "an emoji of {name}",
    "{name} emoji",
    "{name}, {category}, {subcategory}",
]
SHORT_TEMPLATES = ["{short}", "{short}, {category}"]  # once per short name
HELD_OUT_TEMPLATES = ["a picture of {name}", "{name} icon"]

DE, UD = "DownEncoderBlock2D", "UpDecoderBlock2D"
CD, D, CU, U = "CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"

PRESETS = {
    # Sized for ~100 minutes of one CPU thread (see models/text-emoji/README.md).
    "cpu": dict(
        vae=dict(block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8),
        text=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=4),
        unet=dict(block_out_channels=(32, 64, 128), layers_per_block=1,
                  down_block_types=(CD, CD, D), up_block_types=(U, CU, CU),
                  attention_head_dim=4, norm_num_groups=16),
    ),
    # For a GPU run: wider everything, 2 ResNets per block, a 6-layer 256-wide text encoder.
    "gpu": dict(
        vae=dict(block_out_channels=(64, 128, 128), layers_per_block=2, norm_num_groups=32),
        text=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=6,
                  num_attention_heads=4),
        unet=dict(block_out_channels=(128, 256, 256), layers_per_block=2,
                  down_block_types=(CD, CD, D), up_block_types=(U, CU, CU),
                  attention_head_dim=8, norm_num_groups=32),
    ),
}

SCHEDULER_KW = dict(
    num_train_timesteps=1000,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
)

# The prompts of the periodic preview grid during `unet` (the last two rows held-out phrasings).
PREVIEW_PROMPTS = [
    "grinning face", "red apple", "cat face", "house", "soccer ball", "red heart",
    "an emoji of a dog face", "a picture of pizza",
]


# --------------------------------------------------------------------------
# models


def make_vae(preset: str):
    from diffusers import AutoencoderKL
    p = PRESETS[preset]["vae"]
    n = len(p["block_out_channels"])
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=(DE,) * n, up_block_types=(UD,) * n,
        latent_channels=4, sample_size=SIZE, act_fn="silu", scaling_factor=1.0, **p)


def make_tokenizer():
    from transformers import CLIPTokenizer
    return CLIPTokenizer(os.path.join(CLIP_TOKENIZER, "vocab.json"),
                         os.path.join(CLIP_TOKENIZER, "merges.txt"), model_max_length=MAX_LENGTH)


def make_text_encoder(preset: str, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel
    p = PRESETS[preset]["text"]
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=MAX_LENGTH, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=p["hidden_size"], **p)
    return CLIPTextModel(config)


def make_unet(preset: str):
    from diffusers import UNet2DConditionModel
    p = PRESETS[preset]
    return UNet2DConditionModel(
        sample_size=SIZE // 4, in_channels=4, out_channels=4,
        cross_attention_dim=p["text"]["hidden_size"], mid_block_type="UNetMidBlock2DCrossAttn",
        act_fn="silu", flip_sin_to_cos=True, freq_shift=0, **p["unet"])


def make_scheduler(cls=None):
    from diffusers import DDIMScheduler
    return (cls or DDIMScheduler)(**SCHEDULER_KW)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
# data


def captions_for(e: dict) -> tuple[list[str], list[str]]:
    """(training captions, held-out captions) of one emoji.json entry."""
    name = (e.get("name") or e["short_name"].replace("_", " ")).lower()
    f = dict(name=name, category=e["category"].lower(),
             subcategory=e["subcategory"].replace("-", " "))
    train = [t.format(**f) for t in TRAIN_TEMPLATES]
    for s in e["short_names"]:
        short = s.replace("_", " ")
        train += [t.format(short=short, **f) for t in SHORT_TEMPLATES]
    held = [t.format(**f) for t in HELD_OUT_TEMPLATES]
    dedup = list(dict.fromkeys(train))
    return dedup, [h for h in held if h not in dedup]


def stage_data(args):
    entries = emoji_dataset.selected_entries(args.pkg)
    images, labels, names = emoji_dataset.build(args.pkg, SIZE)
    assert [e["short_name"] for e in entries] == names.tolist()
    tok = make_tokenizer()
    caps, owner = [], []
    for i, e in enumerate(entries):
        train, _ = captions_for(e)
        caps += train
        owner += [i] * len(train)
    ids = tok(caps, padding="max_length", max_length=MAX_LENGTH, truncation=True,
              return_tensors="np")["input_ids"].astype(np.int32)
    lens = (ids != tok.pad_token_id).sum(1) + 1
    out = os.path.join(args.root, "data.npz")
    os.makedirs(args.root, exist_ok=True)
    tmp = out + ".tmp.npz"
    np.savez_compressed(tmp, images=images, labels=labels, names=names,
                        captions=np.asarray(caps), caption_image=np.asarray(owner, np.int32),
                        input_ids=ids, classes=np.asarray(emoji_dataset.CLASSES))
    os.replace(tmp, out)
    print(f"{len(images)} images {images.shape}, {len(caps)} training captions "
          f"({len(caps) / len(images):.1f} per image, longest {lens.max()} tokens) -> {out}")
    for c in caps[:8]:
        print("  ", c)


def load_data(args, device):
    d = np.load(os.path.join(args.root, "data.npz"))
    images = torch.from_numpy(d["images"]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return d, images.to(device)


# --------------------------------------------------------------------------
# checkpoint helpers (as tools/train_emoji.py)


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


def rng_state(gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(), "data": gen.get_state()}


def set_rng_state(st: dict, gen: torch.Generator):
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    gen.set_state(st["data"])


@torch.no_grad()
def ema_update(ema, model, decay: float):
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


class Log:
    def __init__(self, path: str):
        self.f = open(path, "a", buffering=1)

    def __call__(self, msg: str):
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")


class Loop:
    """The shared skeleton of the training stages: resume, signals, time limit, logging,
    atomic checkpoints. ``modules`` are saved by name; ``step_fn()`` returns the loss."""

    def __init__(self, args, stage: str):
        self.args = args
        self.dir = os.path.join(args.root, stage)
        os.makedirs(self.dir, exist_ok=True)
        self.log = Log(os.path.join(self.dir, "train.log"))
        self.ckpt_path = os.path.join(self.dir, "ckpt.pt")
        self.resume = torch.load(self.ckpt_path, map_location="cpu", weights_only=False) \
            if os.path.exists(self.ckpt_path) else None
        self.preset = self.resume["preset"] if self.resume else args.preset
        if self.resume and args.preset != self.preset:
            self.log(f"WARNING: checkpoint preset {self.preset!r} overrides --preset {args.preset!r}")
        self.state = {"step": 0, "wall_time": 0.0, "loss_history": [],
                      "recent_losses": deque(maxlen=args.ma_window), "batch": args.batch,
                      "batch_history": [(0, args.batch)]}  # (from step, batch)
        self.stop = None
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum, _frame):
        self.stop = signal.Signals(signum).name

    def restore(self, modules: dict, gen: torch.Generator, hw: str):
        self.modules = modules
        self.state["hardware"] = hw
        if not self.resume:
            return
        r = self.resume
        for k, m in modules.items():
            m.load_state_dict(r[k])
        set_rng_state(r["rng"], gen)
        for k in ("step", "wall_time", "loss_history"):
            self.state[k] = r[k]
        self.state["recent_losses"].extend(r["recent_losses"])
        if r["batch"] != self.args.batch:
            self.log(f"note: batch changed {r['batch']} -> {self.args.batch} at step {r['step']}")
        self.state["batch_history"] = r.get("batch_history", [(0, r["batch"])])
        if self.state["batch_history"][-1][1] != self.args.batch:
            self.state["batch_history"].append((r["step"], self.args.batch))
        prev = r.get("hardware", hw)
        self.state["hardware"] = hw if prev == hw or prev.endswith(f"then {hw}") else f"{prev}; then {hw}"
        self.log(f"resumed from {self.ckpt_path} at step {self.state['step']} "
                 f"(wall {self.state['wall_time'] / 60:.1f} min)")

    def save(self, gen, extra: dict | None = None):
        ckpt = {k: m.state_dict() for k, m in self.modules.items()}
        ckpt.update(step=self.state["step"], preset=self.preset, batch=self.args.batch,
                    wall_time=self.state["wall_time"], loss_history=self.state["loss_history"],
                    recent_losses=list(self.state["recent_losses"]), rng=rng_state(gen),
                    hardware=self.state["hardware"], args=vars(self.args),
                    batch_history=self.state["batch_history"], **(extra or {}))
        atomic_torch_save(ckpt, self.ckpt_path)

    def run(self, step_fn, gen, on_log=None, periodic=None):
        a, st = self.args, self.state
        t_session = t_last = t_log = time.time()
        n_log, loss_sum, reason = 0, 0.0, "steps reached"
        while st["step"] < a.steps:
            if self.stop:
                reason = f"signal {self.stop}"
                break
            if a.max_minutes and time.time() - t_session > a.max_minutes * 60:
                reason = f"--max-minutes {a.max_minutes}"
                break
            lv = step_fn(st["step"])
            st["step"] += 1
            if not math.isfinite(lv):
                self.log(f"non-finite loss at step {st['step']}; stopping without saving")
                sys.exit(2)
            loss_sum += lv
            n_log += 1
            st["recent_losses"].append(lv)
            now = time.time()
            st["wall_time"] += now - t_last
            t_last = now
            step = st["step"]
            if step % a.log_every == 0:
                dt = now - t_log
                mean = loss_sum / n_log
                st["loss_history"].append((step, mean, st["wall_time"]))
                self.log(f"step {step} loss {mean:.4f} ma{len(st['recent_losses'])} "
                         f"{np.mean(st['recent_losses']):.4f} {n_log / dt:.3f} steps/s "
                         f"{n_log * a.batch / dt:.1f} img/s wall {st['wall_time'] / 60:.1f} min"
                         + (on_log() if on_log else ""))
                t_log, n_log, loss_sum = now, 0, 0.0
            if step % a.save_every == 0:
                self.save(gen)
            if periodic:
                periodic(step)
        self.save(gen)
        self.log(f"stopped ({reason}) at step {st['step']}; checkpoint {self.ckpt_path}")
        return reason


def setup(args):
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    return device, torch.Generator(device="cpu").manual_seed(args.seed + 1)


# --------------------------------------------------------------------------
# vae


def kl_mean(dist) -> torch.Tensor:
    return 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()


def stage_vae(args):
    device, gen = setup(args)
    loop = Loop(args, "vae")
    _, images = load_data(args, device)
    vae = make_vae(loop.preset).to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr or 4e-4, weight_decay=0.0)
    loop.restore({"vae": vae, "optimizer": opt}, gen, hardware(device, args.threads))
    if not loop.resume:
        loop.log(f"fresh vae: preset={loop.preset} params={n_params(vae):,} N={len(images)} "
                 f"batch={args.batch} device={device} threads={args.threads}")
    lr = args.lr or 4e-4
    last = {}

    def step(s):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (s + 1) / args.warmup)
        idx = torch.randint(0, len(images), (args.batch,), generator=gen).to(device)
        x = images[idx]
        flip = (torch.rand(args.batch, generator=gen) < 0.5).to(device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        dist = vae.encode(x).latent_dist
        rec = vae.decode(dist.sample(generator=None)).sample
        l1, mse, kl = F.l1_loss(rec, x), F.mse_loss(rec, x), kl_mean(dist)
        loss = l1 + mse + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), args.grad_clip)
        opt.step()
        last.update(l1=float(l1), mse=float(mse), kl=float(kl))
        return float(loss)

    loop.run(step, gen, on_log=lambda: f" | l1 {last['l1']:.4f} mse {last['mse']:.5f} kl {last['kl']:.2f}")
    export_vae(vae.eval(), images, loop)


@torch.no_grad()
def export_vae(vae, images, loop):
    """ROOT/vae/export: the VAE with scaling_factor = 1 / std of the posterior samples."""
    zs, mse = [], 0.0
    g = torch.Generator(device="cpu").manual_seed(0)
    for i in range(0, len(images), 64):
        dist = vae.encode(images[i:i + 64]).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(dist.mean.device)
        zs.append(z.cpu())
        mse += F.mse_loss(vae.decode(dist.mean).sample.clamp(-1, 1), images[i:i + 64],
                          reduction="sum").item()
    z = torch.cat(zs)
    scale = float(1.0 / z.std())
    psnr = 10 * math.log10(4.0 / (mse / images.numel()))
    vae.register_to_config(scaling_factor=round(scale, 5))
    out = os.path.join(loop.dir, "export")
    shutil.rmtree(out + ".tmp", ignore_errors=True)
    vae.save_pretrained(out + ".tmp", safe_serialization=True)
    info = {"steps": loop.state["step"], "preset": loop.preset, "params": n_params(vae),
            "scaling_factor": scale, "latent_mean": float(z.mean()), "latent_std": float(z.std()),
            "recon_psnr_db": round(psnr, 2), "wall_time_s": round(loop.state["wall_time"], 1),
            "hardware": loop.state["hardware"], "loss_history": loop.state["loss_history"]}
    atomic_write_text(os.path.join(out + ".tmp", "train_info.json"), json.dumps(info, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(out + ".tmp", out)
    loop.log(f"exported vae -> {out}: scaling_factor {scale:.4f}, reconstruction PSNR {psnr:.2f} dB")


# --------------------------------------------------------------------------
# unet + text encoder


@torch.no_grad()
def encode_latents(vae, images, device):
    means, stds = [], []
    for i in range(0, len(images), 64):
        dist = vae.encode(images[i:i + 64]).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def stage_unet(args):
    from diffusers import AutoencoderKL
    device, gen = setup(args)
    loop = Loop(args, "unet")
    d, images = load_data(args, device)
    vae_dir = os.path.join(args.root, "vae", "export")
    vae = AutoencoderKL.from_pretrained(vae_dir).to(device).eval()
    scale = vae.config.scaling_factor
    z_mean, z_std = encode_latents(vae, images, device)
    del vae
    ids = torch.from_numpy(d["input_ids"].astype(np.int64)).to(device)
    owner = torch.from_numpy(d["caption_image"].astype(np.int64))
    counts = torch.bincount(owner, minlength=len(images))
    offsets = torch.cumsum(counts, 0) - counts
    tok = make_tokenizer()
    empty = torch.tensor(tok([""], padding="max_length", max_length=MAX_LENGTH)["input_ids"],
                         device=device)

    text = make_text_encoder(loop.preset, tok).to(device).train()
    unet = make_unet(loop.preset).to(device).train()
    ema_text = copy.deepcopy(text).eval().requires_grad_(False)
    ema_unet = copy.deepcopy(unet).eval().requires_grad_(False)
    lr = args.lr or 5e-4
    opt = torch.optim.AdamW([{"params": unet.parameters()}, {"params": text.parameters()}],
                            lr=lr, weight_decay=0.0)
    sched = make_scheduler()
    ac = sched.alphas_cumprod.to(device=device, dtype=torch.float32)
    sqrt_ac, sqrt_1mac = ac.sqrt(), (1.0 - ac).sqrt()
    loop.restore({"unet": unet, "text_encoder": text, "ema_unet": ema_unet,
                  "ema_text_encoder": ema_text, "optimizer": opt}, gen,
                 hardware(device, args.threads))
    if not loop.resume:
        loop.log(f"fresh unet: preset={loop.preset} unet={n_params(unet):,} "
                 f"text_encoder={n_params(text):,} N={len(images)} captions={len(owner)} "
                 f"batch={args.batch} lr={lr} device={device} threads={args.threads} "
                 f"vae scaling_factor={scale}")
    amp = device.type == "cuda" and args.amp

    def step(s):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (s + 1) / args.warmup)
        img = torch.randint(0, len(images), (args.batch,), generator=gen)
        cap = offsets[img] + (torch.rand(args.batch, generator=gen) * counts[img]).long()
        img, cap = img.to(device), cap.to(device)
        z0 = (z_mean[img] + z_std[img] * torch.randn(z_mean[img].shape, generator=gen).to(device)) * scale
        tokens = ids[cap]
        drop = (torch.rand(args.batch, generator=gen) < args.cond_drop).to(device)
        tokens = torch.where(drop[:, None], empty, tokens)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,), generator=gen).to(device)
        noise = torch.randn(z0.shape, generator=gen).to(device)
        zt = sqrt_ac[t, None, None, None] * z0 + sqrt_1mac[t, None, None, None] * noise
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            cond = text(tokens).last_hidden_state
            pred = unet(zt, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + list(text.parameters()),
                                       args.grad_clip)
        opt.step()
        decay = min(args.ema_decay, (2 + s) / (11 + s))
        ema_update(ema_unet, unet, decay)
        ema_update(ema_text, text, decay)
        return float(loss)

    def periodic(step):
        if args.preview_every and step % args.preview_every == 0:
            preview(args, loop, ema_text, ema_unet, device, step)

    loop.run(step, gen, periodic=periodic)


@torch.no_grad()
def preview(args, loop, text, unet, device, step):
    """A quick grid from the EMA weights (DDIM 20, CFG 3), decoded with the VAE export."""
    from diffusers import AutoencoderKL
    from PIL import Image
    tok = make_tokenizer()
    vae = AutoencoderKL.from_pretrained(os.path.join(args.root, "vae", "export")).to(device).eval()
    sched = make_scheduler()
    sched.set_timesteps(20)
    n = len(PREVIEW_PROMPTS)
    ids = tok(PREVIEW_PROMPTS + [""] * n, padding="max_length", max_length=MAX_LENGTH,
              return_tensors="pt")["input_ids"].to(device)
    cond = text(ids).last_hidden_state
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn((n, 4, SIZE // 4, SIZE // 4), generator=g).to(device)
    for t in sched.timesteps:
        e = unet(torch.cat([x, x]), t, encoder_hidden_states=cond).sample
        e_c, e_u = e.chunk(2)
        x = sched.step(e_u + 3.0 * (e_c - e_u), t, x).prev_sample
    img = vae.decode(x / vae.config.scaling_factor).sample.clamp(-1, 1)
    u8 = ((img + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    os.makedirs(os.path.join(loop.dir, "samples"), exist_ok=True)
    p = os.path.join(loop.dir, "samples", f"step{step:07d}.png")
    Image.fromarray(np.concatenate(list(u8), axis=1)).save(p)
    loop.log(f"preview {p}: {' | '.join(PREVIEW_PROMPTS)}")


# --------------------------------------------------------------------------
# export / sample


def plot_losses(history, path, title, log_y=True):
    """A plain line plot of (step, loss, ...) with PIL (no matplotlib here)."""
    from PIL import Image, ImageDraw
    W, H, M = 640, 320, 48
    img = Image.new("RGB", (W, H), "white")
    dr = ImageDraw.Draw(img)
    steps = np.array([h[0] for h in history], float)
    loss = np.array([h[1] for h in history], float)
    y = np.log10(loss) if log_y else loss
    lo, hi = y.min(), y.max()
    hi = hi if hi > lo else lo + 1
    px = M + (steps - steps.min()) / max(1, steps.max() - steps.min()) * (W - 2 * M)
    py = H - M - (y - lo) / (hi - lo) * (H - 2 * M)
    dr.rectangle([M, M, W - M, H - M], outline="black")
    dr.line(list(zip(px.tolist(), py.tolist())), fill=(200, 30, 30), width=2)
    dr.text((M, 10), title, fill="black")
    for v, yy in ((hi, M), (lo, H - M)):
        dr.text((4, yy - 6), f"{10 ** v if log_y else v:.3g}", fill="black")
    dr.text((M, H - M + 6), f"step {int(steps.min())}", fill="black")
    dr.text((W - M - 80, H - M + 6), f"step {int(steps.max())}", fill="black")
    img.save(path)


def stage_export(args):
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    torch.set_num_threads(args.threads)
    ck = torch.load(os.path.join(args.root, "unet", "ckpt.pt"), map_location="cpu", weights_only=False)
    tok = make_tokenizer()
    text = make_text_encoder(ck["preset"], tok)
    text.load_state_dict(ck["ema_text_encoder"])
    unet = make_unet(ck["preset"])
    unet.load_state_dict(ck["ema_unet"])
    vae_dir = os.path.join(args.root, "vae", "export")
    vae = AutoencoderKL.from_pretrained(vae_dir)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text.eval(), tokenizer=tok,
                                   unet=unet.eval(), scheduler=make_scheduler(),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    out = os.path.join(args.root, "export")
    shutil.rmtree(out + ".tmp", ignore_errors=True)
    pipe.save_pretrained(out + ".tmp", safe_serialization=True)
    vae_info = json.load(open(os.path.join(vae_dir, "train_info.json")))
    recent = ck["recent_losses"]
    info = {
        "steps": ck["step"], "preset": ck["preset"], "batch": ck["batch"],
        "batch_history": ck.get("batch_history", [(0, ck["batch"])]),
        "params": {"unet": n_params(unet), "text_encoder": n_params(text), "vae": n_params(vae)},
        "wall_time_s": {"vae": vae_info["wall_time_s"], "unet": round(ck["wall_time"], 1)},
        "hardware": {"vae": vae_info["hardware"], "unet": ck["hardware"]},
        "vae": {k: vae_info[k] for k in ("steps", "scaling_factor", "recon_psnr_db")},
        "final_loss_ma": float(np.mean(recent)) if recent else None,
        "final_loss_ma_window": len(recent),
        "train_templates": TRAIN_TEMPLATES + SHORT_TEMPLATES,
        "held_out_templates": HELD_OUT_TEMPLATES,
        "cond_drop": ck["args"]["cond_drop"], "lr": ck["args"]["lr"] or 5e-4,
        "ema_decay": ck["args"]["ema_decay"], "weights": "EMA (unet, text_encoder)",
        "torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
        "transformers": __import__("transformers").__version__,
    }
    atomic_write_text(os.path.join(out + ".tmp", "train_info.json"), json.dumps(info, indent=2) + "\n")
    plot_losses(ck["loss_history"], os.path.join(out + ".tmp", "loss_unet.png"),
                "U-Net + text encoder: epsilon MSE (mean per log interval, log scale)")
    plot_losses(vae_info["loss_history"], os.path.join(out + ".tmp", "loss_vae.png"),
                "VAE: L1 + MSE + KL (mean per log interval, log scale)")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(out + ".tmp", out)
    # the folder must load and sample as a plain diffusers pipeline
    check = StableDiffusionPipeline.from_pretrained(out)
    im = check("red apple", height=SIZE, width=SIZE, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    assert im.shape == (1, SIZE, SIZE, 3) and np.isfinite(im).all(), im.shape
    print(f"exported step {ck['step']} -> {out} (loads with StableDiffusionPipeline.from_pretrained)")


@torch.no_grad()
def stage_sample(args):
    from diffusers import StableDiffusionPipeline
    from PIL import Image
    torch.set_num_threads(args.threads)
    src = args.export or os.path.join(args.root, "export")
    pipe = StableDiffusionPipeline.from_pretrained(src)
    prompts = args.prompt or PREVIEW_PROMPTS
    ims = pipe(prompts, height=SIZE, width=SIZE, num_inference_steps=args.sample_steps,
               guidance_scale=args.guidance, generator=torch.Generator().manual_seed(args.seed),
               output_type="np").images
    u8 = (ims * 255).round().astype(np.uint8)
    out_dir = os.path.join(args.root, "samples")
    os.makedirs(out_dir, exist_ok=True)
    step = json.load(open(os.path.join(src, "train_info.json")))["steps"]
    p = os.path.join(out_dir, f"step{step:07d}_g{args.guidance}.png")
    Image.fromarray(np.concatenate(list(u8), axis=1)).save(p)
    print(f"{' | '.join(prompts)} (DDIM {args.sample_steps}, CFG {args.guidance}) -> {p}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("stage", choices=["data", "vae", "unet", "export", "sample"])
    ap.add_argument("--root", default="~/.cache/wasm-diffusion/train-text-emoji")
    ap.add_argument("--pkg", default=emoji_dataset.DEFAULT_PKG)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1_000_000, help="total steps (incl. resumed)")
    ap.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop cleanly after this many minutes in this invocation (0 = no limit)")
    ap.add_argument("--lr", type=float, default=0.0, help="0 = the stage's default (vae 4e-4, unet 5e-4)")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--kl-weight", type=float, default=1e-4, help="vae: weight of the mean KL")
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--cond-drop", type=float, default=0.1)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--preview-every", type=int, default=500, help="unet: preview grid (0 = never)")
    ap.add_argument("--ma-window", type=int, default=500)
    ap.add_argument("--export", default=None, help="sample: pipeline folder (default ROOT/export)")
    ap.add_argument("--prompt", action="append", help="sample: a prompt (repeatable)")
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.0)
    args = ap.parse_args()
    args.root = os.path.expanduser(args.root)
    {"data": stage_data, "vae": stage_vae, "unet": stage_unet, "export": stage_export,
     "sample": stage_sample}[args.stage](args)


if __name__ == "__main__":
    main()
