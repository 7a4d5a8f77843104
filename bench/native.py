#!/usr/bin/env python3
"""Native benchmark: our CLI (`sample --backend cpu|wgpu`) against PyTorch eager on the CPU.

    python bench/native.py [--dir DIR] [--cli PATH [--cli PATH2 ...]] [--rounds 3] [--samples 10]
                           [--cases emoji:1,emoji:8,cifar10:1,cifar10:8] [--out FILE] [--wgpu] [--slow]

One "step" is one U-Net call: DDIM, no guidance, so each sampling step calls the U-Net once.

The same rule for both sides (the fair harness of issue 16):
- Ours: one CLI run per round with `--step-times`, which records the wall time of every step
  with microsecond resolution (on the CPU backend a step's work is done when it returns).
  PyTorch: `UNet2DModel(...)(sample, t)` under torch.no_grad, torch.set_num_threads(1) and (2),
  timed with time.perf_counter per call.
- Warm-up (`settle`, the same function for both): calls until the median of the last 5 is within
  3% of the median of the 5 before (at least 10 calls, at most 20: native code has no JIT to wait for, only caches); then `--samples` timed calls.
- Rounds (default 3) interleave ours, PyTorch 1 thread and 2 threads, so each sees the same load;
  per cell the median of all samples (default 30), with p10/p90/min/max and per-round medians.
- Several `--cli` (builds before and after a change) are timed in the same rounds.

The host's CPU model and SIMD flags, PyTorch's CPU capability and the load average go into the
output. --wgpu adds our CLI on wgpu (lavapipe; seconds per step, few samples), --slow its
larger cases. Writes a JSON list of rows to FILE (default: stdout) and prints a table to stderr.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CACHE = os.environ.get("WASM_DIFFUSION_CACHE", os.path.expanduser("~/.cache/wasm-diffusion"))
TMP = tempfile.mkdtemp(prefix="wd-bench-")
SETTLE_WINDOW, SETTLE_TOLERANCE, SETTLE_MIN, SETTLE_MAX = 5, 0.03, 10, 20


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def settled_at(times):
    """Index of the first call after warm-up in `times`, or None if it did not settle.

    The same rule as bench/cpu.mjs: the median of the last SETTLE_WINDOW calls is within
    SETTLE_TOLERANCE of the median of the SETTLE_WINDOW before, after at least SETTLE_MIN calls.
    """
    w = SETTLE_WINDOW
    for n in range(max(SETTLE_MIN, 2 * w), min(len(times), SETTLE_MAX) + 1):
        last, before = statistics.median(times[n - w:n]), statistics.median(times[n - 2 * w:n - w])
        if abs(last - before) <= SETTLE_TOLERANCE * before:
            return n
    return None


def spread(xs):
    s = sorted(xs)
    q = lambda f: s[min(len(s) - 1, int(round(f * (len(s) - 1))))]  # noqa: E731
    return {"n": len(s), "median": statistics.median(s), "p10": q(0.1), "p90": q(0.9), "min": s[0], "max": s[-1]}


def host():
    """The CPU model and its SIMD flags, cores and load: where a figure came from."""
    model, flags = "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512vnni", "amx_tile") if f in flags]
    return {"cpu": model, "simd": simd, "cores": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def cli_steps(cli, model, backend, batch, steps):
    """Per-step wall ms of one `sample` run (its --step-times file), and its CPU seconds."""
    times_file = os.path.join(TMP, "steps.txt")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([cli, "sample", model, "--scheduler", "ddim", "--steps", str(steps), "--batch", str(batch),
                        "--seed", "0", "-o", os.path.join(TMP, "out.png"), "--backend", backend,
                        "--step-times", times_file], capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{cli} sample {model} --backend {backend}: {r.stderr.strip()[-400:]}")
    with open(times_file) as f:
        times = [float(x) for x in f.read().split()]
    if len(times) != steps:
        raise RuntimeError(f"{cli}: expected {steps} step times, found {len(times)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return times, cpu


class Cell:
    """The samples of one (implementation, model, batch) over all rounds."""

    def __init__(self, impl, model, batch, method, **extra):
        self.impl, self.model, self.batch, self.method, self.extra = impl, model, batch, method, extra
        self.rounds, self.warmup = [], []

    def add(self, times, settle, cpu_ms=None):
        self.rounds.append({"samples_ms": times, "cpu_ms_per_step": cpu_ms})
        self.warmup.append(settle)

    def row(self):
        samples = [x for r in self.rounds for x in r["samples_ms"]]
        cpus = [r["cpu_ms_per_step"] for r in self.rounds if r["cpu_ms_per_step"] is not None]
        st = spread(samples)
        return {"impl": self.impl, "model": self.model, "batch": self.batch, "ms_per_step": st["median"],
                "spread_ms": st, "samples_ms": samples,
                "round_medians_ms": [statistics.median(r["samples_ms"]) for r in self.rounds],
                "cpu_ms_per_step": statistics.median(cpus) if cpus else None,
                "warmup_calls": self.warmup, "method": self.method, **self.extra}


def ours(cell, cli, model, backend, batch, samples):
    """One round of our CLI: a run of SETTLE_MAX + samples steps, timed per step."""
    steps = SETTLE_MAX + samples
    times, cpu = cli_steps(cli, model, backend, batch, steps)
    at = settled_at(times)
    start = at if at is not None else SETTLE_MAX
    timed = times[start:start + samples]
    # Process CPU time per step, over the whole run (load included: an upper bound).
    cell.add(timed, at, cpu * 1000 / steps)


class Torch:
    """PyTorch eager U-Net forward on the CPU."""

    def __init__(self, folder):
        import torch
        from diffusers import UNet2DModel
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
        torch.set_grad_enabled(False)
        self.torch = torch
        self.unet = UNet2DModel.from_pretrained(folder).eval()

    def round(self, cell, batch, threads, samples):
        """One round: warm-up calls until settled (the rule of `settled_at`), then `samples` calls."""
        torch, unet = self.torch, self.unet
        torch.set_num_threads(threads)
        s = unet.config.sample_size
        s = (s, s) if isinstance(s, int) else tuple(s)
        x = torch.randn(batch, unet.config.in_channels, *s)
        t = torch.tensor([500])
        y = torch.zeros(batch, dtype=torch.long) if unet.config.num_class_embeds is not None else None

        def call():
            t0 = time.perf_counter()
            unet(x, t, class_labels=y)
            return (time.perf_counter() - t0) * 1000

        warm = []
        while settled_at(warm) is None and len(warm) < SETTLE_MAX:
            warm.append(call())
        c0 = time.process_time()
        timed = [call() for _ in range(samples)]
        cell.add(timed, settled_at(warm), (time.process_time() - c0) * 1000 / samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.path.join(CACHE, "bench"))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target"))
    ap.add_argument("--cli", action="append", help="our CLI; give it twice (before, after) to compare builds")
    ap.add_argument("--cases", default="emoji:1,emoji:8,cifar10:1,cifar10:8", help="model:batch,...")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--wgpu", action="store_true")
    ap.add_argument("--slow", action="store_true")
    a = ap.parse_args()
    clis = a.cli or [os.path.join(target, "release", "wasm-diffusion")]
    m = lambda name: os.path.join(a.dir, f"{name}.f32.safetensors")  # noqa: E731
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in a.cases.split(",")]
    info = host()
    log(f"host: {info['cpu']}, {info['cores']} cores, SIMD {' '.join(info['simd'])}, load {info['loadavg']}")
    rows, models = [], {}
    for name, batch in cases:
        log(f"native: {name} batch {batch}")
        if name not in models and not a.no_torch:
            models[name] = Torch(os.path.join(a.dir, name))
        method = f"per-step wall time (--step-times), warm-up until settled, {a.samples} per round, {a.rounds} rounds"
        cells = [Cell("ours-cpu" if i == 0 else f"ours-cpu#{i + 1}", name, batch, method, cli=cli) for i, cli in enumerate(clis)]
        torch_cells = [] if a.no_torch else [
            Cell(f"torch-{n}t", name, batch, f"eager forward, torch.set_num_threads({n}), warm-up until settled, "
                 f"{a.samples} per round, {a.rounds} rounds", version=models[name].torch.__version__,
                 cpu_capability=models[name].torch.backends.cpu.get_cpu_capability())
            for n in (1, 2)]
        for _ in range(a.rounds):
            for cell, cli in zip(cells, clis):
                ours(cell, cli, m(name), "cpu", batch, a.samples)
            for cell, n in zip(torch_cells, (1, 2)):
                models[name].round(cell, batch, n, a.samples)
        for cell in cells + torch_cells:
            row = cell.row()
            row["host"] = info
            rows.append(row)
            sp = row["spread_ms"]
            log(f"  {row['impl']:12s} {name:8s} b{batch}: {sp['median']:9.2f} ms/step (p10-p90 {sp['p10']:.2f}-{sp['p90']:.2f}, "
                f"n {sp['n']}), rounds {' '.join(f'{x:.2f}' for x in row['round_medians_ms'])}")
        if torch_cells:
            t1 = rows[-2]["ms_per_step"]
            for cell in cells:
                r = next(r for r in rows if r["impl"] == cell.impl and r["model"] == name and r["batch"] == batch)
                per_round = [o / t for o, t in zip(r["round_medians_ms"], rows[-2]["round_medians_ms"])]
                log(f"  {cell.impl} / torch 1 thread: {r['ms_per_step'] / t1:.3f}x (rounds {min(per_round):.3f}-{max(per_round):.3f})")
    if a.wgpu:
        log("native: our CLI on wgpu (lavapipe)")
        plan = [("emoji", 1)] + ([("emoji", 8), ("cifar10", 1)] if a.slow else [])
        for name, batch in plan:
            times, _ = cli_steps(clis[-1], m(name), "wgpu", batch, 4)
            # The first step compiles the shaders; the rest, each read back to time it.
            rows.append({"impl": "ours-wgpu-lavapipe", "model": name, "batch": batch, "ms_per_step": statistics.median(times[1:]),
                         "samples_ms": times[1:], "method": "per-step wall time incl. a read-back, first step dropped", "host": info})
    info_end = host()
    for r in rows:
        r["loadavg_end"] = info_end["loadavg"]
    text = json.dumps(rows, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
