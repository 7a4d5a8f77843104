#!/usr/bin/env python3
"""Native benchmark: our CLI (`sample --backend cpu|wgpu`) against PyTorch eager on the CPU.

    python bench/native.py [--dir DIR] [--cli PATH] [--out FILE] [--slow]

One "step" is one U-Net call: DDIM, no guidance, so each sampling step calls the U-Net once.

Our CLI prints "N steps in S s" for a whole run (first step included, one read-back at the end,
load excluded). To take out the first step's warm-up and the final read-back, each case runs the
CLI with a short and a long step count and reports (S_long - S_short) / (long - short): the
steady per-step time. Repeats give several such differences; the median is reported.
PyTorch: `UNet2DModel(...)(sample, t)` under torch.no_grad, torch.set_num_threads(1) and (2),
one warm-up call, then the median of the timed calls.

--slow adds the cases that take minutes on lavapipe (emoji batch 8 and cifar10 batch 1 on wgpu).
Writes a JSON list of rows to FILE (default: stdout).
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CACHE = os.environ.get("WASM_DIFFUSION_CACHE", os.path.expanduser("~/.cache/wasm-diffusion"))
TMP = tempfile.mkdtemp(prefix="wd-bench-")
RUN = re.compile(r"(\d+) steps in ([0-9.]+)s")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cli_run(cli, model, backend, batch, steps, env):
    """Seconds for `steps` steps as the CLI reports them, and the CPU seconds the process used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([cli, "sample", model, "--scheduler", "ddim", "--steps", str(steps), "--batch", str(batch),
                        "--seed", "0", "-o", os.path.join(TMP, "out.png"), "--backend", backend],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{cli} sample {model} --backend {backend}: {r.stderr.strip()[-400:]}")
    m = RUN.search(r.stdout)
    if not m:
        raise RuntimeError(f"no 'N steps in S s' in: {r.stdout!r}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(m.group(2)), cpu, wall


def ours(cli, model, name, backend, batch, short, long, repeats, threads=None):
    env = dict(os.environ)
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)
    diffs, util, cpu = [], [], []
    for _ in range(repeats):
        s_short, c_short, w_short = cli_run(cli, model, backend, batch, short, env)
        s_long, c_long, w_long = cli_run(cli, model, backend, batch, long, env)
        diffs.append((s_long - s_short) / (long - short) * 1000)
        # CPU seconds per wall second over the extra steps (process-wide; load excluded by the difference)
        util.append((c_long - c_short) / max(w_long - w_short, 1e-9))
        cpu.append((c_long - c_short) / (long - short) * 1000)
    row = {
        "impl": f"ours-{backend}" + ("-lavapipe" if backend == "wgpu" else ""),
        "model": name, "batch": batch, "ms_per_step": statistics.median(diffs),
        "samples_ms": diffs, "cpu_ms_per_step": statistics.median(cpu), "cores_busy": statistics.median(util),
        "method": f"(t({long} steps) - t({short} steps)) / {long - short}, median of {repeats}",
    }
    if threads:
        row["env"] = f"RAYON_NUM_THREADS={threads}"
    log(f"  {row['impl']:20s} {name:8s} b{batch}: {row['ms_per_step']:9.1f} ms/step, CPU {row['cpu_ms_per_step']:9.1f} ms/step")
    return row


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

    def row(self, name, batch, threads, timed):
        torch, unet = self.torch, self.unet
        torch.set_num_threads(threads)
        s = unet.config.sample_size
        s = (s, s) if isinstance(s, int) else tuple(s)
        x = torch.randn(batch, unet.config.in_channels, *s)
        t = torch.tensor([500])
        y = torch.zeros(batch, dtype=torch.long) if unet.config.num_class_embeds is not None else None
        unet(x, t, class_labels=y)  # warm-up
        times, cpu = [], []
        for _ in range(timed):
            t0, c0 = time.perf_counter(), time.process_time()
            unet(x, t, class_labels=y)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        row = {"impl": f"torch-{threads}t", "model": name, "batch": batch, "ms_per_step": statistics.median(times),
               "samples_ms": times, "cpu_ms_per_step": statistics.median(cpu),
               "method": f"eager forward, torch.set_num_threads({threads}), 1 warm-up, median of {timed}",
               "version": torch.__version__}
        log(f"  {row['impl']:20s} {name:8s} b{batch}: {row['ms_per_step']:9.1f} ms/step, CPU {row['cpu_ms_per_step']:9.1f} ms/step")
        return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.path.join(CACHE, "bench"))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target"))
    ap.add_argument("--cli", default=os.path.join(target, "release", "wasm-diffusion"))
    ap.add_argument("--out")
    ap.add_argument("--slow", action="store_true")
    a = ap.parse_args()
    m = lambda name: os.path.join(a.dir, f"{name}.f32.safetensors")  # noqa: E731
    rows = []
    # Each case runs ours and PyTorch back to back, so they see the same load from other work.
    cases = [  # model, batch, (short, long, repeats) for our CLI, timed PyTorch calls for 1 / 2 threads
        ("emoji", 1, (2, 10, 3), (10, 5)),
        ("emoji", 8, (2, 6, 2), (5, 3)),
        ("cifar10", 1, (2, 6, 2), (5, 3)),
        ("cifar10", 8, (1, 3, 1), (3, 2)),
    ]
    models = {}
    for name, batch, (short, long, reps), (t1, t2) in cases:
        log(f"native: {name} batch {batch}")
        if name not in models:
            models[name] = Torch(os.path.join(a.dir, name))
        rows.append(ours(a.cli, m(name), name, "cpu", batch, short, long, reps))
        rows.append(models[name].row(name, batch, 1, t1))
        rows.append(models[name].row(name, batch, 2, t2))
    log("native: our CLI on wgpu (lavapipe)")
    rows.append(ours(a.cli, m("emoji"), "emoji", "wgpu", 1, 1, 3, 1))
    if a.slow:
        rows.append(ours(a.cli, m("emoji"), "emoji", "wgpu", 8, 1, 2, 1))
        rows.append(ours(a.cli, m("cifar10"), "cifar10", "wgpu", 1, 1, 2, 1))
    text = json.dumps(rows, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
