#!/usr/bin/env python3
"""Regenerate the emoji model card (``models/emoji/README.md``) and everything it shows.

Given the diffusers export written by ``tools/train_emoji.py`` (``DIR/export``) and the
shipped model folder (``models/emoji``), this script:

1. converts the export with the ``wasm-diffusion`` CLI into an f32 reference file (in a
   temporary folder, not shipped) and the shipped ``emoji.{f16,int8,int4}.safetensors``
   (the same ``convert`` arguments as ``scripts/export-emoji.sh``), and copies
   ``train_info.json`` next to them;
2. samples ONE batch of ``--n`` images (default 64) per quantization (f32, f16, int8, int4)
   with the same seed, DDIM, classifier-free guidance ``--guidance``; image ``i`` has class
   ``i % 8`` and noise stream ``i`` of the seed, so each class gets ``n / 8`` different
   starting noises and a given grid cell uses the same noise in every quantization;
   ``samples_{f32,int8,int4}.png`` show it as 8 rows (classes) x ``n / 8`` columns,
   2x nearest-neighbour upscaled;
3. samples two classes at int8 with guidance 1, 1.5 and 3 (``guidance_{1,1.5,3}.png``, same
   seed for each scale);
4. computes the PSNR of the 8-bit images (diffusers' ``(x / 2 + 0.5).clamp(0, 1) * 255``
   rounded) of int8 / int4 against f32 and against f16;
5. finds each f32 sample's nearest training image (L2 in [0, 1] pixel space, horizontal
   flips included) and compares it with the training set's own nearest-neighbour distances
   (``nearest.png``);
6. writes ``README.md``, the model card, from all of the above plus ``config.json``,
   ``scheduler_config.json``, ``train_info.json`` and ``train.log``.

Needs Python 3.11 with numpy and pillow, and the CLI built by ``cargo build --release``
(no PyTorch).  Cost: 4 x 64 + 3 x 16 images; with guidance the CLI's CPU backend (one
thread) spends about 180 ms of CPU per image and DDIM step on the shipped 6.8M-parameter
model (50 ms on the earlier 1.1M one), so the default 25 steps are about 23 CPU-minutes
(measured 11.6 min with ``--jobs 2`` on two free cores).  Time is proportional to
``--steps`` (and ``--n``); ``--jobs 2`` runs two CLI processes at once when two cores are
free.  The card states the settings used.  Run it with low priority on a shared machine::

    nice -n 10 python tools/model_card.py ~/.cache/wasm-diffusion/train-gpu/export models/emoji
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CACHE = os.environ.get("WASM_DIFFUSION_CACHE", os.path.expanduser("~/.cache/wasm-diffusion"))
QUANTS = ("f32", "f16", "int8", "int4")
SHIPPED = ("f16", "int8", "int4")
GRID_QUANTS = ("f32", "int8", "int4")
SCALE_SUFFIX = ".scale"  # src/weights/mod.rs SCALE_SUFFIX
CELL_GAP = 2
GAP_GREY = 160
UPSCALE = 2


# --------------------------------------------------------------------------------------------
# small helpers


def log(msg: str):
    print(f"[model_card {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tilde(path: str) -> str:
    home = os.path.expanduser("~")
    path = os.path.abspath(path)
    return "~" + path[len(home):] if path == home or path.startswith(home + os.sep) else path


def rel_to_repo(path: str) -> str:
    path = os.path.abspath(path)
    return os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else tilde(path)


def run(cmd: list[str]) -> str:
    t = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        sys.exit(f"command failed ({res.returncode}): {shlex.join(cmd)}")
    log(f"{time.time() - t:6.1f}s  {shlex.join(cmd)[:160]}")
    return res.stdout


def fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def fmt_db(v: float) -> str:
    return "∞" if not np.isfinite(v) else f"{v:.2f}"


def safetensors_header(path: str) -> tuple[dict, dict]:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    meta = h.pop("__metadata__", {}) or {}
    return h, meta


def to_u8(x: np.ndarray) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC exactly as diffusers' pipelines output images."""
    x = np.clip(x.astype(np.float32) / 2 + 0.5, 0.0, 1.0)
    return np.round(x * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)


def grid_png(cells: list[list[np.ndarray]], path: str, row_gap: int = CELL_GAP) -> tuple[int, int]:
    """rows x cols of HxWx3 uint8 cells -> PNG, upscaled UPSCALE x (nearest), grey gaps."""
    rows, cols = len(cells), max(len(r) for r in cells)
    h, w = cells[0][0].shape[:2]
    s, g = UPSCALE, CELL_GAP
    out = np.full((g + rows * (h * s + row_gap) + g - row_gap, g + cols * (w * s + g), 3),
                  GAP_GREY, np.uint8)
    for r, row in enumerate(cells):
        for c, im in enumerate(row):
            big = im.repeat(s, 0).repeat(s, 1)
            y, x = g + r * (h * s + row_gap), g + c * (w * s + g)
            out[y:y + h * s, x:x + w * s] = big
    Image.fromarray(out).save(path, optimize=True)
    return out.shape[1], out.shape[0]


def mean_saturation(u8: np.ndarray) -> float:
    """Mean HSV saturation (max - min) / max over all pixels of uint8 ...HWC images."""
    f = u8.astype(np.float32) / 255.0
    mx, mn = f.max(-1), f.min(-1)
    return float(np.mean(np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-8), 0.0)))


def psnr_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    with np.errstate(divide="ignore"):
        return np.where(mse > 0, 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-300)), np.inf)


def psnr_stats(a: np.ndarray, b: np.ndarray) -> dict:
    p = psnr_per_image(a, b)
    finite = p[np.isfinite(p)]
    mse_all = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return {
        "mean": float(finite.mean()) if len(finite) else float("inf"),
        "min": float(p.min()),
        "pooled": float(10 * np.log10(255.0 ** 2 / mse_all)) if mse_all > 0 else float("inf"),
        "identical": int((~np.isfinite(p)).sum()),
        "max_abs": int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()),
        "n": len(p),
    }


# --------------------------------------------------------------------------------------------
# CLI wrappers


def convert(cli: str, export: str, quant: str, out: str, name: str, null_class: int,
            classes: list[str]) -> dict:
    stdout = run([cli, "convert", export, "--quant", quant, "-o", out, "--name", name,
                  "--null-class", str(null_class), "--class-names", ",".join(classes),
                  "--verbose"])
    rows = []
    for line in stdout.splitlines():
        m = re.match(r"^(\S+)\s+(\[[^\]]*\])\s+(\S+)\s+(\S+)\s+(\S+)\s*$", line)
        if m and m.group(1) != "tensor":
            shape = json.loads(m.group(2))
            rows.append(dict(name=m.group(1), numel=int(np.prod(shape)), shape=shape,
                             stored_as=m.group(3), max_abs=float(m.group(4)),
                             rel_rms=float(m.group(5))))
    q = [r for r in rows if r["stored_as"] != "f32" or quant == "f32"]
    w = np.array([r["numel"] for r in q], float)
    rel = np.array([r["rel_rms"] for r in q], float)
    return {
        "tensors": rows,
        "quantized_tensors": len(q) if quant != "f32" else 0,
        "rel_rms_mean": float(rel.mean()) if len(q) else 0.0,
        "rel_rms_weighted": float((rel * w).sum() / w.sum()) if len(q) else 0.0,
        "rel_rms_max": float(rel.max()) if len(q) else 0.0,
        "worst": max(q, key=lambda r: r["rel_rms"])["name"] if len(q) else None,
    }


def sample(cli: str, model: str, out_npy: str, out_png: str, *, steps: int, seed: int,
           batch: int, classes: list[int], guidance: float) -> tuple[np.ndarray, float]:
    stdout = run([cli, "sample", model, "--scheduler", "ddim", "--steps", str(steps),
                  "--seed", str(seed), "--batch", str(batch),
                  "--class", ",".join(map(str, classes)), "--guidance", f"{guidance:g}",
                  "-o", out_png, "--out-npy", out_npy])
    m = re.search(r"\(([\d.]+) ms/step\)", stdout)
    x = np.load(out_npy)
    assert x.shape == (batch, 3, 32, 32) or x.shape[0] == batch, x.shape
    return x, (float(m.group(1)) if m else float("nan"))


# --------------------------------------------------------------------------------------------
# nearest neighbours


def pairwise_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


class TrainSet:
    def __init__(self, path: str):
        d = np.load(path)
        self.images = d["images"]  # uint8 N,32,32,3
        self.labels = d["labels"].astype(int)
        self.names = d["names"] if "names" in d.files else np.array([""] * len(self.labels))
        n = len(self.labels)
        flat = self.images.reshape(n, -1).astype(np.float32) / 255.0
        flip = self.images[:, :, ::-1].reshape(n, -1).astype(np.float32) / 255.0
        self.bank = np.concatenate([flat, flip])  # [2N, D]; row j >= N is image j - N flipped
        self.n = n
        seen = {}
        for im in self.images:
            seen[im.tobytes()] = seen.get(im.tobytes(), 0) + 1
        # images with an identical twin (same pixels, or the mirror image of another one)
        self.duplicates = [
            str(self.names[i]) for i, im in enumerate(self.images)
            if seen[im.tobytes()] > 1
            or (im[:, ::-1].tobytes() != im.tobytes() and im[:, ::-1].tobytes() in seen)]

    def nearest(self, u8: np.ndarray):
        """uint8 NHWC -> (distance, train index, flipped?) for each image."""
        q = u8.reshape(len(u8), -1).astype(np.float32) / 255.0
        d = pairwise_l2(q, self.bank)
        j = d.argmin(1)
        return d[np.arange(len(q)), j], j % self.n, j >= self.n

    def self_nearest(self) -> np.ndarray:
        """Distance from each training image to its nearest OTHER training image (flips of
        the others included; the image itself and its own flip excluded)."""
        q = self.bank[:self.n]
        out = np.empty(self.n)
        for s in range(0, self.n, 512):
            d = pairwise_l2(q[s:s + 512], self.bank)
            idx = np.arange(s, min(s + 512, self.n))
            d[idx - s, idx] = np.inf
            d[idx - s, idx + self.n] = np.inf
            out[s:s + 512] = d.min(1)
        return out

    def image(self, idx: int, flipped: bool) -> np.ndarray:
        im = self.images[idx]
        return im[:, ::-1] if flipped else im


# --------------------------------------------------------------------------------------------
# training log


LOG_STEP = re.compile(
    r"^(\S+ \S+) step (\d+) loss ([\d.]+) ma(\d+) ([\d.]+) lr (\S+) ([\d.]+) steps/s "
    r"([\d.]+) img/s wall ([\d.]+) min")


def parse_log(path: str, up_to_step: int) -> dict:
    if not os.path.exists(path):
        return {}
    lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    start = max((i for i, l in enumerate(lines) if " fresh start: " in l), default=0)
    lines = lines[start:]
    steps, sessions, stops = [], 0, []
    first_ts = lines[0][:19] if lines else None
    for l in lines:
        m = LOG_STEP.match(l)
        if steps and steps[-1]["step"] >= up_to_step:
            break
        if " fresh start: " in l or " resumed from " in l:
            sessions += 1
        if " stopped (" in l:
            stops.append(l[20:])
        if m and int(m.group(2)) <= up_to_step:
            steps.append(dict(ts=m.group(1), step=int(m.group(2)), loss=float(m.group(3)),
                              ma_n=int(m.group(4)), ma=float(m.group(5)),
                              steps_s=float(m.group(7)), img_s=float(m.group(8)),
                              wall_min=float(m.group(9))))
    last = max((int(m.group(2)) for l in lines if (m := LOG_STEP.match(l))), default=0)
    return {"steps": steps, "sessions": sessions, "stops": stops, "first_ts": first_ts,
            "log_last_step": last}


# --------------------------------------------------------------------------------------------
# main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("export", nargs="?", default=os.path.join(CACHE, "train-gpu", "export"),
                    help="diffusers export folder written by tools/train_emoji.py")
    ap.add_argument("model_dir", nargs="?", default=os.path.join(REPO, "models", "emoji"),
                    help="shipped model folder; files and README.md are written here")
    ap.add_argument("--cli", default=None,
                    help="wasm-diffusion binary (default $CARGO_TARGET_DIR/release/...)")
    ap.add_argument("--data", default=os.path.join(CACHE, "emoji32.npz"))
    ap.add_argument("--train-log", default=None, help="default EXPORT/../train.log")
    ap.add_argument("--name", default="emoji-ddpm-32", help="model name stored in the files")
    ap.add_argument("--steps", type=int, default=25,
                    help="DDIM steps for every sample (run time is proportional)")
    ap.add_argument("--n", type=int, default=64,
                    help="images per quantization (a multiple of the number of classes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=1.5, help="guidance for the grids")
    ap.add_argument("--guidance-scales", default="1,1.5,3")
    ap.add_argument("--guidance-classes", default="0,2")
    ap.add_argument("--jobs", type=int, default=1,
                    help="CLI sampling runs in parallel (each uses about one core)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    t0 = time.time()

    export = os.path.abspath(os.path.expanduser(args.export))
    out = os.path.abspath(os.path.expanduser(args.model_dir))
    os.makedirs(out, exist_ok=True)
    cli = args.cli or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target")),
                                   "release", "wasm-diffusion")
    if not os.path.exists(cli):
        sys.exit(f"missing CLI {cli}; build it with `cargo build --release` (. scripts/env.sh)")
    train_log = args.train_log or os.path.join(os.path.dirname(export), "train.log")

    # The trainer replaces the export every 1000 steps: work on a private copy so that all
    # files and numbers come from the same weights.
    tmp = tempfile.mkdtemp(prefix="model_card.")
    snap = os.path.join(tmp, "export")
    shutil.copytree(export, snap)
    # Everything for MODEL_DIR is written to a staging folder first and moved there at the
    # end, so a failed run leaves the old files and card together.
    stage = os.path.join(tmp, "out")
    os.makedirs(stage)
    config = json.load(open(os.path.join(snap, "config.json")))
    sched_cfg = json.load(open(os.path.join(snap, "scheduler_config.json")))
    info = json.load(open(os.path.join(snap, "train_info.json")))
    classes = list(info["classes"])
    ncls = len(classes)
    null_class = int(info["null_class"])
    if args.n % ncls:
        sys.exit(f"--n must be a multiple of {ncls}")
    cols = args.n // ncls
    gscales = [float(g) for g in args.guidance_scales.split(",")]
    gclasses = [int(c) for c in args.guidance_classes.split(",")]

    try:
        # ---- 1. convert
        models, conv = {}, {}
        for q in QUANTS:
            path = os.path.join(tmp if q == "f32" else stage, f"emoji.{q}.safetensors")
            conv[q] = convert(cli, snap, q, path, args.name, null_class, classes)
            models[q] = path
        shutil.copyfile(os.path.join(snap, "train_info.json"), os.path.join(stage, "train_info.json"))

        # ---- 2./3. sampling jobs: one batch per quantization (class i % ncls, noise stream i)
        # and the int8 guidance sweep (same seed for every scale)
        labels = [i % ncls for i in range(args.n)]
        glabels = [c for c in gclasses for _ in range(cols)]
        jobs = [(q, models[q], labels, args.guidance) for q in QUANTS]
        jobs += [(f"g{g:g}", models["int8"], glabels, g) for g in gscales]

        def do(job):
            key, model, lab, g = job
            return key, sample(cli, model, os.path.join(tmp, f"{key}.npy"),
                               os.path.join(tmp, f"{key}.png"), steps=args.steps,
                               seed=args.seed, batch=len(lab), classes=lab, guidance=g)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = dict(pool.map(do, jobs))
        imgs = {q: to_u8(results[q][0]) for q in QUANTS}
        gimgs = {g: to_u8(results[f"g{g:g}"][0]) for g in gscales}
        ms_step = {key: r[1] for key, r in results.items()}
        for q in GRID_QUANTS:
            cells = [[imgs[q][c + ncls * j] for j in range(cols)] for c in range(ncls)]
            grid_png(cells, os.path.join(stage, f"samples_{q}.png"))
        for g in gscales:
            cells = [list(gimgs[g][r * cols:(r + 1) * cols]) for r in range(len(gclasses))]
            grid_png(cells, os.path.join(stage, f"guidance_{g:g}.png"))

        # ---- 4. PSNR
        pairs = [("int8", "f32"), ("int4", "f32"), ("f16", "f32"), ("int8", "f16"),
                 ("int4", "f16")]
        psnr = {p: psnr_stats(imgs[p[0]], imgs[p[1]]) for p in pairs}

        # ---- 5. nearest neighbours
        train = TrainSet(os.path.expanduser(args.data))
        self_nn = train.self_nearest()
        thresh = float(np.percentile(self_nn, 5))
        nn_d, nn_i, nn_f = train.nearest(imgs["f32"])
        order = np.argsort(nn_d)
        show = order[:8]
        cells = [[imgs["f32"][i] for i in show],
                 [train.image(nn_i[i], nn_f[i]) for i in show]]
        grid_png(cells, os.path.join(stage, "nearest.png"), row_gap=4 * CELL_GAP)
        nn_class_ok = float(np.mean(train.labels[nn_i] == np.array(labels)))
        gmetrics = {}
        for g in gscales:
            d, i, _ = train.nearest(gimgs[g])
            gmetrics[g] = dict(nn_mean=float(d.mean()),
                               class_ok=float(np.mean(train.labels[i] == np.array(glabels))),
                               saturation=mean_saturation(gimgs[g]))
        train_sat = mean_saturation(train.images)
        f32_sat = mean_saturation(imgs["f32"])

        # ---- 6. the card
        tlog = parse_log(train_log, int(info["steps"]))
        files = OrderedDict()
        for q in SHIPPED:
            files[q] = os.path.getsize(models[q])
        f32_size = os.path.getsize(models["f32"])
        headers = {q: safetensors_header(models[q]) for q in QUANTS}
        runtime = time.time() - t0
        card = render(args=args, export=export, out=out, stage=stage, cli=cli, train_log=train_log,
                      config=config, sched_cfg=sched_cfg, info=info, classes=classes,
                      null_class=null_class, cols=cols, conv=conv, headers=headers,
                      files=files, f32_size=f32_size, psnr=psnr, train=train,
                      self_nn=self_nn, thresh=thresh, nn_d=nn_d, nn_i=nn_i, nn_f=nn_f,
                      show=show, labels=labels, nn_class_ok=nn_class_ok, gscales=gscales,
                      gclasses=gclasses, gmetrics=gmetrics, train_sat=train_sat, f32_sat=f32_sat, tlog=tlog,
                      ms_step=ms_step, runtime=runtime)
        with open(os.path.join(stage, "README.md"), "w") as f:
            f.write(card)
        written = sorted(os.listdir(stage))
        for name in written:
            shutil.move(os.path.join(stage, name), os.path.join(out, name))
    finally:
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    log(f"done in {time.time() - t0:.0f}s")
    for q, p in psnr.items():
        log(f"PSNR {q[0]} vs {q[1]}: mean {fmt_db(p['mean'])} dB, min {fmt_db(p['min'])} dB, "
            f"identical {p['identical']}/{p['n']}")
    log(f"nearest neighbour: median {np.median(nn_d):.3f}, min {nn_d.min():.3f}, threshold "
        f"{thresh:.3f}, near-copies {(nn_d < thresh).sum()}/{len(nn_d)}")
    for name in written:
        log(f"  {os.path.join(rel_to_repo(out), name):40s} "
            f"{fmt_bytes(os.path.getsize(os.path.join(out, name)))}")


# --------------------------------------------------------------------------------------------
# card text


def demo_default(out: str) -> str | None:
    """The file of MODEL_DIR that models/index.json names as the demo's default, if any."""
    index = os.path.join(os.path.dirname(out), "index.json")
    try:
        default = json.load(open(index)).get("default")
    except (OSError, ValueError):
        return None
    if default and os.path.dirname(os.path.normpath(default)) == os.path.basename(out):
        return os.path.basename(default)
    return None


def demo_guidance() -> str | None:
    """The guidance input's default value in the browser demo (index.html), if found."""
    try:
        html = open(os.path.join(REPO, "index.html"), encoding="utf-8").read()
    except OSError:
        return None
    m = re.search(r'<input[^>]*id="guidance"[^>]*value="([\d.]+)"', html)
    return m.group(1) if m else None


def render(**k) -> str:
    a = k["args"]
    cfg, info, sc = k["config"], k["info"], k["sched_cfg"]
    classes, ncls, cols = k["classes"], len(k["classes"]), k["cols"]
    train = k["train"]
    counts = np.bincount(train.labels, minlength=ncls)
    steps, n = a.steps, a.n
    L = []
    w = L.append

    # ---- header
    w(f"# {a.name}: class-conditional emoji DDPM ({cfg['sample_size']}x{cfg['sample_size']})\n")
    demo_file = demo_default(k["out"])
    demo = f" The browser demo loads `{demo_file}` by default." if demo_file else ""
    w(f"A small diffusers `UNet2DModel` ({info['params']:,} parameters) that draws "
      f"{cfg['sample_size']}x{cfg['sample_size']} RGB emoji in one of {ncls} categories, "
      f"trained from scratch with epsilon-prediction DDPM and classifier-free guidance "
      f"(class {k['null_class']} is the null / unconditional class). The files here are the "
      f"EMA weights after **{info['steps']:,} training steps**, converted to the "
      f"`wasm-diffusion` single-file format in three quantizations, for the CLI and the "
      f"browser (WebGPU) sampler.{demo}\n")
    w(f"Everything below (numbers and pictures) was generated by `tools/model_card.py` from "
      f"the export and the training log; see [Reproduce](#reproduce).\n")

    # ---- data
    w("## Data\n")
    pkg = os.path.join(REPO, "tools", "node_modules", "emoji-datasource-google", "package.json")
    ver = None
    if os.path.exists(pkg):
        ver = json.load(open(pkg)).get("version")
    else:
        try:
            ver = json.load(open(os.path.join(REPO, "tools", "package.json")))["dependencies"][
                "emoji-datasource-google"]
        except (OSError, KeyError):
            pass
    w(f"- **Source**: the npm package `emoji-datasource-google`{f' {ver}' if ver else ''} "
      f"(pinned in `tools/package.json`), its \"clean\" {cfg['sample_size']} px sprite sheet "
      f"(`img/google/sheets-clean/`), which holds only Google's **Noto Color Emoji** artwork, "
      f"no fallback images from other vendors. Categories and names come from its "
      f"`emoji.json`.")
    w("- **Licences and attribution**: emoji artwork: Noto Emoji by Google, licensed under "
      "the [Apache License 2.0](https://github.com/googlefonts/noto-emoji/blob/main/LICENSE) "
      "(source: https://github.com/googlefonts/noto-emoji). Emoji metadata: "
      "[emoji-data](https://github.com/iamcal/emoji-data), Copyright (c) 2013 Cal Henderson, "
      "MIT licence. The model weights are derived from the Apache-2.0 artwork; keep this "
      "attribution when redistributing the weights or their samples.")
    w(f"- **Selection**: base emoji only (no skin-tone variants) with Google artwork; the "
      f"categories *Flags* and *Component* are dropped; the remaining {ncls} Unicode "
      f"categories are the classes. **N = {len(train.labels):,}** images"
      + (f" (train_info.json says {info['dataset_n']:,})"
         if info.get("dataset_n") not in (None, len(train.labels)) else "") + ":\n")
    w("| class | name | images |\n|---:|---|---:|")
    for c, name in enumerate(classes):
        w(f"| {c} | {name} | {counts[c]} |")
    w(f"| {k['null_class']} | *(null class, never in the data; used for the unconditional "
      f"branch)* | - |\n")
    dups = len(train.duplicates)
    dup_eg = ", ".join(f"`{nm}`" for nm in train.duplicates[:4])
    w(f"- **Preprocessing** (`tools/emoji_dataset.py`): each {cfg['sample_size']} px sprite is "
      f"alpha-composited onto a white background and stored as RGB uint8; training scales it "
      f"to [-1, 1] (`x / 127.5 - 1`) and flips it horizontally with probability 0.5"
      + ("" if info.get("hflip", True) else " (**disabled** in this run)")
      + f". {dups} training images have an exact twin in the set (identical pixels, or "
      f"the mirror image of another emoji)" + (f", e.g. {dup_eg}" if dups else "") + ".\n")

    # ---- architecture
    w("## Architecture\n")
    res = cfg["sample_size"]
    downs = []
    for i, (bt, ch) in enumerate(zip(cfg["down_block_types"], cfg["block_out_channels"])):
        downs.append(f"{bt}({ch}) @ {res // 2 ** i}x{res // 2 ** i}")
    ups = []
    nlev = len(cfg["block_out_channels"])
    for i, (bt, ch) in enumerate(zip(cfg["up_block_types"], reversed(cfg["block_out_channels"]))):
        r = res // 2 ** (nlev - 1 - i)
        ups.append(f"{bt}({ch}) @ {r}x{r}")
    mid_r = res // 2 ** (nlev - 1)
    attn = sorted({int(s.split("@ ")[1].split("x")[0]) for s in downs + ups if "Attn" in s}
                  | ({mid_r} if cfg.get("add_attention", True) else set()), reverse=True)
    w(f"diffusers `{cfg['_class_name']}` (config written by diffusers "
      f"{cfg.get('_diffusers_version', '?')}), {cfg['in_channels']} -> {cfg['out_channels']} "
      f"channels, **{info['params']:,} parameters**.\n")
    w(f"- channels `{cfg['block_out_channels']}`, {cfg['layers_per_block']} ResNet layer(s) "
      f"per block, GroupNorm with {cfg['norm_num_groups']} groups, `{cfg['act_fn']}`")
    w(f"- down: {', '.join(downs)}")
    w(f"- mid: UNetMidBlock2D (ResNet, self-attention, ResNet) @ {mid_r}x{mid_r}")
    w(f"- up: {', '.join(ups)}")
    w(f"- self-attention (head dim {cfg['attention_head_dim']}) at "
      f"{', '.join(f'{r}x{r}' for r in attn)} only")
    w(f"- timestep: {cfg['time_embedding_type']} (sinusoidal) embedding, "
      f"flip_sin_to_cos={cfg['flip_sin_to_cos']}, freq_shift={cfg['freq_shift']}; class: "
      f"learned embedding table with {cfg['num_class_embeds']} rows added to the time "
      f"embedding")
    w(f"- noise schedule (`scheduler_config.json`): {sc.get('beta_schedule')} betas "
      f"{sc.get('beta_start')}..{sc.get('beta_end')} over {sc.get('num_train_timesteps')} "
      f"steps, predicts `{sc.get('prediction_type')}`, clip_sample={sc.get('clip_sample')}\n")
    # parameters per module, from the f32 file
    h32 = k["headers"]["f32"][0]
    groups = OrderedDict()
    for name, t in sorted(h32.items()):
        p = name.split(".")
        key = ".".join(p[:2]) if p[0] in ("down_blocks", "up_blocks") else p[0]
        groups[key] = groups.get(key, 0) + int(np.prod(t["shape"]))
    order = sorted(groups, key=lambda g: (
        ["conv_in", "time_embedding", "class_embedding", "down_blocks", "mid_block",
         "up_blocks", "conv_norm_out", "conv_out"].index(g.split(".")[0])
        if g.split(".")[0] in ("conv_in", "time_embedding", "class_embedding", "down_blocks",
                               "mid_block", "up_blocks", "conv_norm_out", "conv_out") else 99,
        g))
    w("| module | parameters |\n|---|---:|")
    for g in order:
        w(f"| `{g}` | {groups[g]:,} |")
    w(f"| **total** | **{sum(groups.values()):,}** |\n")

    # ---- training
    w("## Training\n")
    tl = k["tlog"]
    w(f"`tools/train_emoji.py` (PyTorch {info.get('torch', '?')}, diffusers "
      f"{info.get('diffusers', '?')}), preset `{info['preset']}`:\n")
    w(f"- **{info['steps']:,} steps** at batch {info['batch']} "
      f"(= {info['steps'] * info['batch'] / len(train.labels):.0f} epochs of "
      f"{len(train.labels):,} images), MSE on epsilon, uniform timesteps")
    w(f"- AdamW, lr {info['lr']:g} with {info['warmup']} warm-up steps then constant, gradient "
      f"clipping 1.0, class dropped to the null class with p = {info['cond_drop']}")
    w(f"- **EMA** of the weights, decay min({info['ema_decay']}, (1 + step) / (10 + step)); the "
      f"shipped files are the {info.get('weights', 'EMA')} weights")
    w(f"- **hardware**: {info['hardware']}")
    wall = info["wall_time_s"]
    line = f"- **wall time**: {wall / 3600:.2f} h ({wall / 60:.0f} min) of training steps"
    if tl.get("steps"):
        last = tl["steps"][-1]
        try:
            t_a = dt.datetime.strptime(tl["first_ts"], "%Y-%m-%d %H:%M:%S")
            t_b = dt.datetime.strptime(last["ts"], "%Y-%m-%d %H:%M:%S")
            line += (f"; {(t_b - t_a).total_seconds() / 3600:.2f} h on the clock from "
                     f"{tl['first_ts'][:16]} to {last['ts'][:16]} in {tl['sessions']} "
                     + ("sessions (stopped and resumed from checkpoints)"
                        if tl["sessions"] > 1 else "session"))
        except (TypeError, ValueError):
            pass
        img_s = np.median([s["img_s"] for s in tl["steps"]])
        line += f"; median throughput {img_s:.1f} images/s"
    shared = "cuda" not in info.get("hardware", "")
    w(line + (" (the machine was shared with other work, so times are upper bounds)"
              if shared else ""))
    if info.get("final_loss_ma") is not None:
        w(f"- **final loss**: {info['final_loss_ma']:.4f} (mean epsilon-MSE over the last "
          f"{info['final_loss_ma_window']} steps)\n")
    if tl.get("steps"):
        marks = [s for s in tl["steps"] if s["step"] % 1000 == 0]
        if tl["steps"][-1] not in marks:
            marks.append(tl["steps"][-1])
        if len(marks) > 12:  # keep the table short
            idx = np.unique(np.linspace(0, len(marks) - 1, 12).round().astype(int))
            marks = [marks[i] for i in idx]
        w("Loss from `train.log` (mean over the last 50 steps, and the moving average the "
          "trainer logs):\n")
        w("| step | loss (50 steps) | moving average (window) |\n|---:|---:|---:|")
        for s in marks:
            w(f"| {s['step']:,} | {s['loss']:.4f} | {s['ma']:.4f} ({s['ma_n']}) |")
        w("")
        if tl.get("log_last_step", 0) > info["steps"]:
            w(f"(The log goes on to step {tl['log_last_step']:,}; this card describes the "
              f"export at step {info['steps']:,}.)\n")

    # ---- files
    w("## Files\n")
    w("| file | size | stored quantized | kept in f32 | weight error (rel. RMS, mean / max "
      "over quantized tensors) |\n|---|---:|---|---|---|")
    h32 = k["headers"]["f32"][0]
    numel = {nm: int(np.prod(t["shape"])) for nm, t in h32.items()}
    total = sum(numel.values())
    keep_desc = {}
    for q in SHIPPED:
        h, meta = k["headers"][q]
        params = [nm for nm in h if not nm.endswith(SCALE_SUFFIX)]
        kept = [nm for nm in params if h[nm]["dtype"] == "F32"]
        quantd = [nm for nm in params if h[nm]["dtype"] != "F32"]
        kept_p = sum(numel[nm] for nm in kept)
        kind = {"f16": "f16", "int8": "int8, one f32 scale per output channel",
                "int4": f"int4, one f32 scale per output channel and group of "
                        f"{meta.get('int4_group_size', '?')} inputs"}[q]
        multi = sorted(nm for nm in kept if len(h32[nm]["shape"]) >= 2)
        keep_desc[q] = multi
        c = k["conv"][q]
        w(f"| `emoji.{q}.safetensors` | {fmt_bytes(k['files'][q])} | {len(quantd)} weight "
          f"tensors, {total - kept_p:,} params ({kind}) | {len(kept)} tensors, {kept_p:,} "
          f"params | {c['rel_rms_mean']:.2e} / {c['rel_rms_max']:.2e} |")
    w(f"| `train_info.json` | {fmt_bytes(os.path.getsize(os.path.join(k['stage'], 'train_info.json')))} "
      f"| training metadata written by the trainer | | |\n")
    multi = keep_desc[SHIPPED[-1]]
    w(f"Every quantization keeps all 1-D tensors (biases, GroupNorm scales) and "
      f"{', '.join(f'`{m}`' for m in multi)} in f32 (see `keeps_f32` in "
      f"`src/weights/mod.rs`); the f32 reference converted for this card is "
      f"{fmt_bytes(k['f32_size'])} and is not shipped. Weights are dequantized to f32 when "
      f"loaded, so all three files run at the same speed.\n")

    # ---- samples
    w("## Samples\n")
    gl = ", ".join(f"{c} {classes[c]}" for c in range(ncls))
    fewer = (" (fewer than the CLI's default of 50, to keep this script's run time down)"
             if steps < 50 else "")
    w(f"DDIM, **{steps} steps**{fewer}, eta 0, guidance **{a.guidance:g}**, seed {a.seed}: one batch "
      f"of {n} images in which image *i* has class *i* mod {ncls} and the seed's noise stream "
      f"*i*. Rows are the classes top to bottom ({gl}); column *j* of row *c* is image "
      f"*c* + {ncls}*j*, so every cell starts from the same noise in all three grids and "
      f"differences between the grids are due to quantization alone. Shown 2x "
      f"(nearest neighbour).\n")
    for q in GRID_QUANTS:
        w(f"**{q}**" + (" (reference, not shipped)" if q == "f32" else "") + "\n")
        w(f"![{q} samples, rows = classes 0..{ncls - 1}](samples_{q}.png)\n")
    w("Reproduce a grid's images with the CLI:\n")
    w("```sh\n" + f"cargo run --release -- sample {rel_to_repo(k['out'])}/emoji.int8.safetensors --scheduler ddim "
      f"--steps {steps} --seed {a.seed} --batch {n} \\\n    --class "
      f"{','.join(map(str, k['labels']))} \\\n    --guidance {a.guidance:g} -o grid.png "
      f"--out-npy x.npy\n```\n")

    # ---- PSNR
    w("## Quantization: PSNR against f32 and f16\n")
    w(f"The {n} images above (all {ncls} classes, {cols} seeds each), converted to 8-bit "
      f"as a diffusers pipeline outputs them (`round(clamp(x / 2 + 0.5, 0, 1) * 255)`); "
      f"PSNR per image with peak 255, then the mean and the minimum over the {n} images. "
      f"\"pooled\" is the PSNR of the mean squared error over all images. Sampling feeds "
      f"each step's output into the next, so small weight errors can grow over {steps} "
      f"steps; the minimum shows the worst image.\n")
    w("| model | vs | mean PSNR (dB) | min PSNR (dB) | pooled PSNR (dB) | identical images | "
      "max abs. pixel difference |\n|---|---|---:|---:|---:|---:|---:|")
    for (x, y), p in k["psnr"].items():
        w(f"| {x} | {y} | {fmt_db(p['mean'])} | {fmt_db(p['min'])} | {fmt_db(p['pooled'])} | "
          f"{p['identical']}/{p['n']} | {p['max_abs']} |")
    w("\n(Mean over the images that differ; identical images have infinite PSNR.)\n")

    # ---- guidance
    w("## Guidance scale\n")
    g_names = " and ".join(f"{c} ({classes[c]})" for c in k["gclasses"])
    w(f"int8, classes {g_names} (one row each, {cols} seeds, the same seeds for every "
      f"scale), DDIM {steps} steps. Guidance 1 is plain conditional sampling (one UNet "
      f"evaluation per step); larger scales push away from the unconditional prediction "
      f"(two evaluations per step).\n")
    w("| guidance | samples | mean distance to the nearest training image | nearest training "
      "image in the requested class | mean colour saturation |\n|---:|---|---:|---:|---:|")
    for g in k["gscales"]:
        m = k["gmetrics"][g]
        w(f"| {g:g} | ![guidance {g:g}](guidance_{g:g}.png) | {m['nn_mean']:.2f} | "
          f"{m['class_ok'] * 100:.0f}% | {m['saturation']:.3f} |")
    w("")
    def best(key, sign):
        v = {g: sign * round(k["gmetrics"][g][key], 4) for g in k["gscales"]}
        top = min(v.values())
        return " and ".join(f"{g:g}" for g in k["gscales"] if v[g] == top)

    best_nn, best_cls = best("nn_mean", 1), best("class_ok", -1)
    w(f"Proxies, measured on only {len(k['gclasses']) * cols} images per scale: distance "
      f"to the nearest training image (lower = closer to real emoji artwork) is lowest at "
      f"guidance **{best_nn}**; the share of samples whose nearest training image has the "
      f"requested class (a rough class-adherence measure; the categories overlap visually) "
      f"is highest at guidance **{best_cls}**. Mean colour saturation (HSV, (max - min) / max "
      f"per pixel) is {k['train_sat']:.3f} in the training images; well above that means "
      f"over-saturated colours from too strong guidance." + (f" The browser demo's default guidance is {demo_guidance()}; judge by "
                      f"the pictures.\n" if demo_guidance() else " Judge by the pictures.\n"))

    # ---- nearest neighbours
    w("## Memorization check: nearest training images\n")
    nn_d, self_nn, thr = k["nn_d"], k["self_nn"], k["thresh"]
    D = 3 * cfg["sample_size"] ** 2
    pct = lambda v, q: float(np.percentile(v, q))  # noqa: E731
    near = int((nn_d < thr).sum())
    w(f"For each of the {n} f32 samples above, the L2 distance in [0, 1] pixel space "
      f"({D} values; an RMS difference per value of d / {np.sqrt(D):.1f}) to the nearest of "
      f"the {len(train.labels):,} training images and their horizontal mirror images. As a "
      f"yardstick, the same distance from each training image to its nearest *other* "
      f"training image (mirror images included, itself and its own mirror excluded):\n")
    w("| distances | min | 5th pct | median | 95th pct | max |\n|---|---:|---:|---:|---:|---:|")
    for label, v in (("sample -> nearest training image", nn_d),
                     ("training image -> nearest other training image", self_nn)):
        w(f"| {label} | {v.min():.2f} | {pct(v, 5):.2f} | {pct(v, 50):.2f} | {pct(v, 95):.2f} "
          f"| {v.max():.2f} |")
    w("")
    w(f"**Near-copy threshold**: a sample counts as a near-copy when its distance is below "
      f"the 5th percentile of the training set's own nearest-neighbour distances, "
      f"**{thr:.2f}** (RMS {thr / np.sqrt(D) * 255:.1f} / 255 per value): 5% of the "
      f"training emoji have another emoji (or its mirror image) at least that close. **{near} of {n}** "
      f"samples are near-copies.\n")
    w(f"{k['nn_class_ok'] * 100:.0f}% of the samples' nearest training images belong to the "
      f"class that was asked for (mean colour saturation of the samples {k['f32_sat']:.3f}, "
      f"training images {k['train_sat']:.3f}).\n")
    w(f"The 8 samples closest to a training image (top row, f32) and those training images "
      f"(bottom row, mirrored where the mirror image was closer):\n")
    w("![8 samples and their nearest training images](nearest.png)\n")
    w("| sample | class | distance | nearest training image | its class | mirrored |\n"
      "|---:|---|---:|---|---|---|")
    for i in k["show"]:
        j = int(k["nn_i"][i])
        w(f"| {i} | {k['labels'][i]} {classes[k['labels'][i]]} | {nn_d[i]:.2f} | "
          f"`{train.names[j]}` | {train.labels[j]} {classes[train.labels[j]]} | "
          f"{'yes' if k['nn_f'][i] else 'no'} |")
    w("")

    # ---- limitations
    w("## Limitations\n")
    w(f"- {cfg['sample_size']}x{cfg['sample_size']} pixels, {info['params']:,} parameters, "
      f"{info['steps']:,} training steps on {len(train.labels):,} images: expect rough, "
      f"low-detail emoji-like pictures, not clean artwork (see the grids).")
    w("- Classes are the Unicode categories, which are broad and overlap visually (faces "
      "appear in *Smileys & Emotion* and *People & Body*; many *Symbols* and *Objects* are "
      "simple shapes). There is no text conditioning and no control below the category "
      "level.")
    w("- Horizontal-flip augmentation: samples may be mirrored (text, arrows, direction "
      "matters for some emoji). White background only, no transparency.")
    w(f"- Small data set ({len(train.labels):,} images, {dups} exact duplicates): a model "
      f"trained longer can reproduce training artwork; see the memorization check above, "
      f"which uses {n} samples only.")
    p8, p4 = k["psnr"][("int8", "f32")], k["psnr"][("int4", "f32")]
    demo_file = demo_default(k["out"])
    w(f"- Quantization changes the samples: mean PSNR against f32 is {fmt_db(p8['mean'])} dB "
      f"for int8 and {fmt_db(p4['mean'])} dB for int4 (worst image {fmt_db(p8['min'])} / "
      f"{fmt_db(p4['min'])} dB)" + (f"; the demo uses `{demo_file}`." if demo_file else "."))
    w("- Samples are derived from Noto Emoji artwork (Apache-2.0) and inherit its "
      "attribution requirement. Emoji are widely recognised symbols; do not present samples "
      "as official emoji.\n")

    # ---- reproduce
    w("## Reproduce\n")
    ckpt = tilde(os.path.dirname(k["export"]))
    threads = re.search(r"(\d+) thread", info.get("hardware", ""))
    tflags = [f"--preset {info['preset']}"]
    if "cuda" in info.get("hardware", ""):
        tflags.append("--device cuda")
        if info.get("amp"):
            tflags.append("--amp")
    elif threads:
        tflags.append(f"--threads {threads.group(1)}")
    tflags.append(f"--batch {info['batch']}")
    defaults = dict(lr=2e-4, warmup=500, ema_decay=0.999, cond_drop=0.1)
    for key, dv in defaults.items():
        if key in info and abs(float(info[key]) - dv) > 1e-12:
            tflags.append(f"--{key.replace('_', '-')} {info[key]:g}")
    if not info.get("hflip", True):
        tflags.append("--no-flip")
    tflags.append(f"--steps {info['steps']}")
    tflags.append(f"--ckpt-dir {ckpt}")
    opts = []
    if steps != 50:
        opts.append(f"--steps {steps}")
    if n != 64:
        opts.append(f"--n {n}")
    if a.seed != 0:
        opts.append(f"--seed {a.seed}")
    w("```sh\n"
      "# data (Noto Emoji sprite sheets + emoji-data metadata, pinned in tools/package.json)\n"
      "npm install --prefix tools\n"
      "python tools/emoji_dataset.py --out ~/.cache/wasm-diffusion/emoji32.npz --size 32\n"
      "# train (resumable: re-run the same command to continue; EMA export every 1000 steps "
      f"to {ckpt}/export)\n"
      f"{'nice -n 19 ' if shared else ''}python tools/train_emoji.py {' '.join(tflags)}\n"
      "# shipped files (f16 / int8 / int4) from the export (model_card.py below redoes this)\n"
      f"bash scripts/export-emoji.sh {ckpt}/export\n"
      "# this card: re-converts the export, samples, measures, writes models/emoji/\n"
      f"nice -n 10 python tools/model_card.py {ckpt}/export {rel_to_repo(k['out'])}"
      f"{' ' + ' '.join(opts) if opts else ''}\n```\n")
    cpu = platform.processor() or platform.machine()
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                cpu = l.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n_img = len(QUANTS) * n + len(k["gscales"]) * len(k["gclasses"]) * cols
    w(f"This card took {k['runtime'] / 60:.1f} min to generate: {n_img} images with the "
      f"CLI's CPU backend on a shared machine ({os.cpu_count()} cores, {cpu}), "
      f"{k['ms_step']['int8'] / 1000:.2f} s per DDIM step for the batch of {n} int8 images "
      f"with guidance.")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
