#!/usr/bin/env python3
"""Hardware-GPU benchmark, native half (issue 15; run by bench/gpu.sh, see BENCHMARKS.md).

    python3 bench/gpu_native.py --work DIR --cli PATH --out FILE --deadline EPOCH [--dry-run]

Makes the models (random, seeded weights; speed does not depend on the values) and compares, per
model and batch, one U-Net forward of

  ours   the CLI, `sample --backend wgpu --scheduler ddim` (Vulkan on the NVIDIA driver; lavapipe
         in a dry run). Per step = (t(long run) - t(short run)) / (extra steps), both as the CLI
         reports them, so load, the first step's shader compilation and the final read-back
         cancel out (bench/native.py does the same).
  torch  PyTorch eager on CUDA (the CPU in a dry run) in float32, float16 and bfloat16: warm-up
         calls, then the median of timed calls, each closed by torch.cuda.synchronize().

and, for ours, a 25-step DDIM run with a preview written every step (`--frames`) against none,
and the time to first frame (a whole 1-step process: start, adapter, load, one step, PNG).
FLOPs per forward come from torch.utils.flop_counter.FlopCounterMode (convolutions, matmuls,
attention); achieved FLOP/s is FLOPs / time per step. While each case runs, nvidia-smi samples the
GPU's utilisation (a stub in a dry run, so the parsing is exercised).

Models: `emoji` (ours: the shipped models/emoji file; torch and ONNX: its config, train_emoji.py's
`gpu` preset, random weights), `cifar10` (google/ddpm-cifar10-32's config), `sd-turbo` (the
SD-Turbo U-Net, made here from tools/make_scale_pipelines.py's configs; ours runs the whole
pipeline folder with guidance 0, so one step is one U-Net call, and the difference takes out the
text encoder and the VAE). A dry run uses tiny versions of the same three configs.

Also writes the ONNX files for bench/gpu_web.mjs (bench/export_onnx.py's export()) and our model
files (bench/make_models.py's build()) into DIR. Every case is skipped, and says so, once the
deadline is near; any other failure is recorded in the JSON with its message, and the exit
status is 1 if any case failed.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
RUN = re.compile(r"(\d+) steps in ([0-9.]+)s")

# H200 SXM peaks (vendor datasheet, dense): FP32 on the CUDA cores, TF32 / BF16 / FP16 on the
# tensor cores. KINDS.md measured 769-798 TFLOP/s for a bf16 8192^3 matmul here.
H200_PEAK = {"float32": 67e12, "tf32": 495e12, "bfloat16": 989e12, "float16": 989e12}

# Tiny stand-ins for the dry run: the same block types as the real configs, a fraction of the width.
TINY = {
    "emoji": {"block_out_channels": [16, 32], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
              "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1, "norm_num_groups": 8,
              "sample_size": 16, "attention_head_dim": 8},
    "cifar10": {"block_out_channels": [16, 32, 32, 32], "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 16},
}


def log(msg):
    print(f"[gpu_native {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Deadline(Exception):
    pass


def sd_spec(dry):
    """SD-Turbo's pipeline configs from tools/make_scale_pipelines.py (its U-Net checked against
    tests/fixtures/configs/sd-turbo-unet.json); a dry run shrinks every width. (name, spec)"""
    import make_scale_pipelines as msp

    spec = msp.PIPELINES["sd-turbo"]
    with open(os.path.join(ROOT, "tests", "fixtures", "configs", "sd-turbo-unet.json")) as f:
        fixture = json.load(f)
    if {k: v for k, v in fixture.items() if not k.startswith("_")} != {k: v for k, v in spec["unet"].items() if not k.startswith("_")}:
        raise RuntimeError("tools/make_scale_pipelines.py's SD-Turbo U-Net differs from tests/fixtures/configs/sd-turbo-unet.json")
    if not dry:
        return "sd-turbo", spec
    spec = json.loads(json.dumps(spec))
    spec["unet"].update(block_out_channels=[32, 32, 64, 64], attention_head_dim=[2, 2, 4, 4], layers_per_block=1,
                        sample_size=8, cross_attention_dim=32)
    spec["vae"].update(block_out_channels=[8, 8, 16, 16], layers_per_block=1, norm_num_groups=4, sample_size=64)
    spec["text_encoder"].update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                projection_dim=32)
    msp.PIPELINES["sd-turbo-tiny"] = spec
    return "sd-turbo-tiny", spec


def make_sd_folder(work, dry):
    """Writes the SD-Turbo pipeline folder (random fp16 weights, 2.6 GB): `--make-sd`, run as a
    child process by Bench.start_sd_turbo."""
    import make_scale_pipelines as msp
    import torch

    torch.set_num_threads(4)
    name, _ = sd_spec(dry)
    msp.make(name, work, 0)


class Bench:
    def __init__(self, a):
        self.a = a
        self.dry = a.dry_run
        self.results = {"dry_run": self.dry, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "cases": [], "errors": [], "skipped": [], "models": {}}
        import torch

        self.torch = torch
        torch.set_grad_enabled(False)
        self.dev = "cuda" if torch.cuda.is_available() else "cpu"
        if self.dev == "cpu" and not self.dry:
            raise SystemExit("gpu_native: torch sees no CUDA device (use --dry-run off the GPU machine)")
        env = self.results["env"] = {
            "torch": torch.__version__, "device": self.dev,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        }
        if self.dev == "cuda":
            p = torch.cuda.get_device_properties(0)
            env.update(gpu=p.name, sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1),
                       cuda=torch.version.cuda)
            self.results["peak_flops"] = H200_PEAK if "H200" in p.name else None
        else:
            env["threads"] = torch.get_num_threads()
            self.results["peak_flops"] = None
        try:
            import diffusers

            env["diffusers"] = diffusers.__version__
        except ImportError:
            pass

    def left(self):
        return self.a.deadline - time.time()

    def need(self, seconds, what):
        if self.left() < seconds:
            raise Deadline(f"{what}: {self.left():.0f} s left before the deadline, needs ~{seconds} s")

    def guard(self, what, f, *args):
        """Runs one case; a deadline skip or an error is recorded and the run goes on."""
        try:
            return f(*args)
        except Deadline as e:
            log(f"SKIP {e}")
            self.results["skipped"].append(str(e))
        except Exception as e:  # recorded, and the exit status says so
            log(f"ERROR {what}: {e}")
            traceback.print_exc()
            self.results["errors"].append({"case": what, "error": f"{type(e).__name__}: {e}"[-2000:]})
        return None

    # -- nvidia-smi sampling -------------------------------------------------------------------
    def smi(self):
        return Smi(self.a.smi)

    # -- models --------------------------------------------------------------------------------
    def make_pixel_models(self):
        """emoji (config only; ours uses the shipped file) and cifar10, + ONNX for the web half."""
        import make_models
        import export_onnx

        self.need(30, "making the pixel models")
        work = self.a.work
        unet, sched, extra = make_models.emoji_spec("gpu")
        cifar = dict(make_models.CIFAR10)
        specs = {"emoji": (unet, sched, extra), "cifar10": (cifar, make_models.CIFAR10_SCHEDULER, [])}
        for name, (cfg, sch, ex) in specs.items():
            if self.dry:
                cfg = {**cfg, **TINY[name]}
            t = time.time()
            # build() writes the diffusers folder and our f32/f16/int8/int4 files.
            make_models.build(name, cfg, sch, ex, work, self.a.cli, force=False)
            folder = os.path.join(work, name)
            batches = self.batches(name)
            for b in batches:
                export_onnx.export(folder, name, b, work, force=False)
            ours = os.path.join(work, f"{name}.f32.safetensors")
            if name == "emoji" and not self.dry:
                ours = os.path.join(ROOT, "models", "emoji", "emoji.f16.safetensors")
            self.results["models"][name] = {"diffusers_folder": folder, "ours_file": ours, "batches": batches,
                                            "onnx": [f"{name}.b{b}.onnx" for b in batches],
                                            "seconds_to_make": round(time.time() - t, 1)}
            log(f"model {name}: ready in {time.time() - t:.1f} s (ours: {ours})")

    def batches(self, name):
        if self.dry:
            return [1, 2]
        return {"emoji": [1, 64], "cifar10": [1, 16], "sd-turbo": [1]}[name]

    def start_sd_turbo(self):
        """Starts making the SD-Turbo folder in a child process (4 threads) while the pixel models
        are made, so that it is ready, and quiet, before the timed cases."""
        cmd = [sys.executable, os.path.abspath(__file__), "--make-sd", "--work", self.a.work, "--cli", self.a.cli,
               "--out", os.devnull, "--deadline", str(self.a.deadline)] + (["--dry-run"] if self.dry else [])
        self.sd_started = time.time()
        self.sd_proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "4"})

    def make_sd_turbo(self):
        name, spec = sd_spec(self.dry)
        folder = os.path.join(self.a.work, name)
        try:
            rc = self.sd_proc.wait(timeout=max(1, self.left() - 30))
        except subprocess.TimeoutExpired:
            self.sd_proc.kill()
            raise Deadline("making the SD-Turbo pipeline folder: not done 30 s before the deadline")
        if rc != 0 or not os.path.exists(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors")):
            raise RuntimeError(f"making the SD-Turbo pipeline folder failed (exit status {rc}; its output is in the log)")
        self.results["models"]["sd-turbo"] = {"diffusers_folder": folder, "ours_file": folder, "batches": [1],
                                              "unet_config": spec["unet"],
                                              "seconds_to_make": round(time.time() - self.sd_started, 1)}
        log(f"model sd-turbo: ready, {time.time() - self.sd_started:.1f} s after its start")

    # -- PyTorch ---------------------------------------------------------------------------------
    def torch_inputs(self, name, unet, batch, dtype):
        torch = self.torch
        c = unet.config
        s = c.sample_size
        s = (s, s) if isinstance(s, int) else tuple(s)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, c.in_channels, *s, generator=g).to(self.dev, dtype)
        kw = {}
        if name == "sd-turbo":
            kw["encoder_hidden_states"] = torch.randn(batch, 77, c.cross_attention_dim, generator=g).to(self.dev, dtype)
            t = torch.tensor([999], device=self.dev)
        else:
            t = torch.tensor([500], device=self.dev)
            if c.num_class_embeds is not None:
                kw["class_labels"] = torch.zeros(batch, dtype=torch.long, device=self.dev)
        return x, t, kw

    def load_torch(self, name):
        from diffusers import UNet2DConditionModel, UNet2DModel
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
        folder = self.results["models"][name]["diffusers_folder"]
        if name == "sd-turbo":
            return UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet")).eval()
        return UNet2DModel.from_pretrained(folder).eval()

    def flops(self, name, unet, batch):
        from torch.utils.flop_counter import FlopCounterMode

        x, t, kw = self.torch_inputs(name, unet, batch, self.torch.float32)
        with FlopCounterMode(display=False) as fc:
            unet(x, t, **kw)
        return int(fc.get_total_flops())

    def torch_case(self, name, unet, batch, dtype_name, reps):
        torch = self.torch
        dtype = getattr(torch, dtype_name)
        m = unet.to(self.dev, dtype)
        x, t, kw = self.torch_inputs(name, m, batch, dtype)
        sync = torch.cuda.synchronize if self.dev == "cuda" else (lambda: None)
        for _ in range(2 if self.dry else 3):
            m(x, t, **kw)
        sync()
        times = []
        with self.smi() as smi:
            for _ in range(reps):
                t0 = time.perf_counter()
                m(x, t, **kw)
                sync()
                times.append((time.perf_counter() - t0) * 1000)
        row = {"ms_per_step": statistics.median(times), "samples_ms": [round(v, 3) for v in times], "smi": smi.summary(),
               "method": f"eager forward, {2 if self.dry else 3} warm-up calls, median of {reps}, synchronized"}
        if self.dev == "cuda":
            row["max_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return row

    # -- ours --------------------------------------------------------------------------------------
    def cli(self, model, name, batch, steps, frames=None, first=False):
        out = os.path.join(self.a.work, "out")
        os.makedirs(out, exist_ok=True)
        cmd = [self.a.cli, "sample", model, "--scheduler", "ddim", "--steps", str(steps), "--batch", str(batch),
               "--seed", "0", "-o", os.path.join(out, "x.png"), "--backend", "wgpu"]
        if name == "sd-turbo":
            cmd += ["--prompt", "a photo of a cat", "--guidance", "0"]
        if frames:
            shutil.rmtree(frames, ignore_errors=True)
            cmd += ["--frames", frames]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10, self.left()))
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-1500:]}")
        m = RUN.search(r.stdout)
        if not m:
            raise RuntimeError(f"no 'N steps in S s' in the CLI's output: {r.stdout[-500:]!r}")
        return float(m.group(2)), wall, r.stderr

    def ours_case(self, name, batch, short, long, reps):
        model = self.results["models"][name]["ours_file"]
        # A first process, not timed: it pays any one-off cost (the driver's shader cache,
        # cubecl's autotune) that would otherwise land on the first short run only.
        _, first_wall, _ = self.cli(model, name, batch, 1)
        diffs, means = [], []
        with self.smi() as smi:
            for _ in range(reps):
                s_short, _, _ = self.cli(model, name, batch, short)
                s_long, _, _ = self.cli(model, name, batch, long)
                diffs.append((s_long - s_short) / (long - short) * 1000)
                means.append(s_long / long * 1000)
        row = {"ms_per_step": statistics.median(diffs), "samples_ms": [round(v, 3) for v in diffs],
               "mean_ms_of_long_run": round(statistics.median(means), 3), "first_process_wall_s": round(first_wall, 3),
               "smi": smi.summary(),
               "method": f"CLI --backend wgpu: (t({long} steps) - t({short} steps)) / {long - short}, median of {reps}, "
                         "after one untimed 1-step process; t = the CLI's 'N steps in S s'"}
        if row["ms_per_step"] <= 0:
            row["warning"] = "the difference is not positive: run-to-run noise exceeds the extra steps' time"
        return row

    def preview_case(self, name, steps, pairs):
        self.need(20, f"{name} preview")
        return self._preview_case(name, steps, pairs)

    def _preview_case(self, name, steps, pairs):
        """Whole runs of `steps` DDIM steps, batch 1: previews written every step vs none
        (alternating pairs), and the time to first frame."""
        model = self.results["models"][name]["ours_file"]
        frames = os.path.join(self.a.work, "frames")
        none, every, none_wall, every_wall = [], [], [], []
        for _ in range(pairs):
            s, w, _ = self.cli(model, name, 1, steps)
            none.append(s)
            none_wall.append(w)
            s, w, _ = self.cli(model, name, 1, steps, frames=frames)
            every.append(s)
            every_wall.append(w)
        written = len(os.listdir(frames))
        _, first, _ = self.cli(model, name, 1, 1, frames=frames)
        med = statistics.median
        return {"impl": "ours-wgpu", "model": name, "batch": 1, "steps": steps, "frames_written": written,
                "none_s": med(none), "every_s": med(every), "overhead": round(med(every) / med(none) - 1, 4),
                "none_wall_s": med(none_wall), "every_wall_s": med(every_wall),
                "samples": {"none_s": none, "every_s": every}, "first_frame_s": round(first, 3),
                "method": f"CLI's 'N steps in S s' for {steps} steps, --frames DIR (x_t and x0 PNGs each step) vs none, "
                          f"{pairs} alternating pairs; first frame = wall time of a whole --steps 1 --frames process"}

    # -- one model ---------------------------------------------------------------------------------
    def model_cases(self, name, plan):
        torch = self.torch
        unet = self.load_torch(name)
        nparams = sum(p.numel() for p in unet.parameters())
        self.results["models"][name]["torch_params"] = nparams
        for batch, (short, long, reps), treps in plan:
            case = {"model": name, "batch": batch, "params": nparams}
            self.results["cases"].append(case)
            log(f"case {name} b{batch}")
            self.need(15 if self.dry else 20, f"{name} b{batch}")
            case["flops_per_step"] = self.guard(f"{name} b{batch} flops", self.flops, name, unet.float().to(self.dev), batch)
            case["ours_wgpu"] = self.guard(f"{name} b{batch} ours", self.ours_case, name, batch, short, long, reps)
            for dt in ("float32", "float16", "bfloat16"):
                case[f"torch_{dt}"] = self.guard(f"{name} b{batch} torch {dt}", self.torch_case, name, unet, batch, dt, treps)
            self.finish_case(case)
            log(f"  {json.dumps({k: (v['ms_per_step'] if isinstance(v, dict) and 'ms_per_step' in v else v) for k, v in case.items()})}")
        del unet
        if self.dev == "cuda":
            torch.cuda.empty_cache()

    def finish_case(self, case):
        """Ratios (ours / peer) and achieved FLOP/s against the peak for each impl."""
        ours = (case.get("ours_wgpu") or {}).get("ms_per_step")
        peak = self.results["peak_flops"]
        fl = case.get("flops_per_step")
        for key in ("ours_wgpu", "torch_float32", "torch_float16", "torch_bfloat16"):
            row = case.get(key)
            if not row:
                continue
            if fl:
                row["tflops"] = float(f"{fl / (row['ms_per_step'] / 1000) / 1e12:.4g}")
                if peak:
                    p = peak["float32"] if key in ("ours_wgpu", "torch_float32") else peak[key.split("_")[1]]
                    row["fraction_of_peak"] = round(fl / (row["ms_per_step"] / 1000) / p, 5)
                    row["peak_used"] = p
            if ours and key != "ours_wgpu":
                case[f"ratio_ours_vs_{key}"] = round(ours / row["ms_per_step"], 4)

    def run(self):
        """SD-Turbo's folder is made in a child process while the pixel models are made; both are
        ready before the first timed case. Then the pixel cases, the previews, and SD-Turbo's case."""
        t0 = time.time()
        if self.dry:  # (batch, (short, long, repeats) for ours, timed torch calls)
            plans = {"emoji": [(1, (1, 4, 1), 3), (2, (1, 3, 1), 2)], "cifar10": [(1, (1, 3, 1), 2), (2, (1, 3, 1), 2)],
                     "sd-turbo": [(1, (1, 3, 1), 2)]}
        else:
            plans = {"emoji": [(1, (2, 22, 2), 20), (64, (2, 12, 2), 10)], "cifar10": [(1, (2, 22, 2), 20), (16, (2, 12, 2), 10)],
                     "sd-turbo": [(1, (1, 6, 1), 10)]}
        if not self.a.no_sd:
            self.guard("start making sd-turbo", self.start_sd_turbo)
        self.guard("make pixel models", self.make_pixel_models)
        if not self.a.no_sd and getattr(self, "sd_proc", None):
            self.guard("make sd-turbo", self.make_sd_turbo)  # waits: the timed cases run on a quiet machine
        for name in ("emoji", "cifar10"):
            if name in self.results["models"]:
                self.guard(f"{name} cases", self.model_cases, name, plans[name])
        self.results["preview"] = []
        for name in ("emoji", "cifar10"):
            if name in self.results["models"]:
                row = self.guard(f"{name} preview", self.preview_case, name, 25 if not self.dry else 4, 2 if not self.dry else 1)
                if row:
                    self.results["preview"].append(row)
                    log(f"  preview {name}: none {row['none_s']:.3f} s, every {row['every_s']:.3f} s, first frame {row['first_frame_s']} s")
        if "sd-turbo" in self.results["models"]:
            self.guard("sd-turbo cases", self.model_cases, "sd-turbo", plans["sd-turbo"])
        self.results["seconds"] = round(time.time() - t0, 1)
        self.results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Smi:
    """Samples `CMD` (nvidia-smi --query-gpu ... -lms 100, or the dry run's stub) while a case
    runs; summary() gives the mean and max GPU and memory utilisation and the max SM clock."""

    FIELDS = ["utilization.gpu", "utilization.memory", "memory.used", "clocks.sm", "power.draw"]

    def __init__(self, cmd):
        self.cmd = cmd
        self.lines = []
        self.error = None
        self.p = None

    def __enter__(self):
        if not self.cmd:
            self.error = "nvidia-smi not found"
            return self
        try:
            self.p = subprocess.Popen(self.cmd.split() + ["--query-gpu=" + ",".join(self.FIELDS), "--format=csv,noheader,nounits",
                                                          "-lms", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.t = threading.Thread(target=lambda: self.lines.extend(self.p.stdout), daemon=True)
            self.t.start()
        except OSError as e:
            self.error = str(e)
        return self

    def __exit__(self, *exc):
        if self.p:
            self.p.terminate()
            self.p.wait()
            self.t.join(2)
        return False

    def summary(self):
        if self.error:
            return {"error": self.error}
        def num(v):
            try:
                return float(v)
            except ValueError:  # "[N/A]", "[Not Supported]"
                return None

        rows = [[num(v) for v in line.strip().split(",")] for line in self.lines if line.count(",") >= len(self.FIELDS) - 1]
        if not rows:
            return {"samples": 0}
        col = lambda i: [r[i] for r in rows if len(r) > i and r[i] is not None]  # noqa: E731
        stat = lambda i, f: (round(f(col(i)), 1) if col(i) else None)  # noqa: E731
        return {"samples": len(rows), "gpu_util_mean": stat(0, statistics.mean), "gpu_util_max": stat(0, max),
                "mem_util_mean": stat(1, statistics.mean), "memory_used_mib_max": stat(2, max),
                "sm_clock_mhz_max": stat(3, max), "power_w_max": stat(4, max),
                "stub": self.cmd.endswith("stub") or "stub" in self.cmd}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline", type=float, required=True, help="Unix time by which the cases must be done")
    ap.add_argument("--smi", default="", help="the nvidia-smi command ('' = none)")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--no-sd", action="store_true", help="skip the SD-Turbo model")
    ap.add_argument("--make-sd", action="store_true", help="only write the SD-Turbo pipeline folder into --work (the child process)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    if a.make_sd:
        make_sd_folder(a.work, a.dry_run)
        return
    b = Bench(a)
    if not b.dry:
        b.torch.set_num_threads(8)
    else:
        b.torch.set_num_threads(1)
    try:
        b.run()
    finally:
        with open(a.out, "w") as f:
            json.dump(b.results, f, indent=1)
        log(f"wrote {a.out}: {len(b.results['cases'])} cases, {len(b.results['errors'])} errors, {len(b.results['skipped'])} skipped")
    sys.exit(1 if b.results["errors"] else 0)


if __name__ == "__main__":
    main()
