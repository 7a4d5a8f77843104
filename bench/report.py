#!/usr/bin/env python3
"""Merge bench/native.py's and bench/browser.mjs's output into results.json and print the table.

    python bench/report.py NATIVE.json BROWSER.json -o bench/results.json

Every ratio is ours / peer, from figures taken in the same run (< 1 means we are faster).
"""

import argparse
import json
import os
import platform
import subprocess

TARGETS = {
    "webgpu_step_vs_ort_webgpu": 0.7,   # our WebGPU step <= 0.7x onnxruntime-web WebGPU
    "cpu_step_vs_ort_wasm": 1.0,        # our CPU (wasm) step <= 1.0x onnxruntime-web wasm
    "preview_every_step_overhead": 0.10,  # a preview every step costs <= 10 %
}


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.1f} GiB"
    except (OSError, ValueError):
        pass
    load = os.getloadavg()
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
            "loadavg_at_report": [round(x, 2) for x in load], "git_head": git}


def find(rows, impl, model, batch, js_flags=None):
    for r in rows:
        if r["impl"] == impl and r["model"] == model and r["batch"] == batch and r.get("js_flags") == js_flags:
            return r
    return None


def fmt_ms(x):
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def ratio(a, b):
    if a is None or b is None:
        return None
    return round(a["ms_per_step"] / b["ms_per_step"], 3)


def fr(x):
    return "-" if x is None else f"{x:.2f}x"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("native")
    ap.add_argument("browser")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    native = json.load(open(a.native)) if os.path.exists(a.native) else []
    browser = json.load(open(a.browser)) if os.path.exists(a.browser) else {}
    bsteps = browser.get("steps", [])
    lines = []
    p = lines.append

    # --- native ---
    native_cmp = []
    p("Native (ms per U-Net step, wall clock; CPU ms in brackets)")
    p(f"{'model':8s} {'b':>2s} | {'ours cpu':>15s} | {'torch 1 thread':>15s} | {'torch 2 threads':>15s} | {'ours/t1':>7s} {'ours/t2':>7s} | {'ours wgpu (lavapipe)':>20s}")
    for model in ("emoji", "cifar10"):
        for batch in (1, 8):
            o = find(native, "ours-cpu", model, batch)
            t1 = find(native, "torch-1t", model, batch)
            t2 = find(native, "torch-2t", model, batch)
            g = find(native, "ours-wgpu-lavapipe", model, batch)
            if not (o or t1 or t2 or g):
                continue
            cell = lambda r: "-" if r is None else f"{fmt_ms(r['ms_per_step'])} [{fmt_ms(r.get('cpu_ms_per_step'))}]"  # noqa: E731
            row = {"model": model, "batch": batch, "ours_vs_torch_1t": ratio(o, t1), "ours_vs_torch_2t": ratio(o, t2)}
            native_cmp.append(row)
            p(f"{model:8s} {batch:>2d} | {cell(o):>15s} | {cell(t1):>15s} | {cell(t2):>15s} | {fr(row['ours_vs_torch_1t']):>7s} {fr(row['ours_vs_torch_2t']):>7s} | {cell(g):>20s}")

    # --- browser ---
    browser_cmp = []
    p("")
    p("Browser, Chromium + SwiftShader (ms per U-Net step)")
    p(f"{'model':8s} {'b':>2s} | {'ours cpu (wasm)':>15s} | {'ORT wasm 1t':>11s} | {'ratio':>6s} | {'ours webgpu':>11s} | {'ORT webgpu':>10s} | {'ratio':>6s}")
    for model in ("emoji", "cifar10"):
        for batch in (1, 8):
            oc, ow = find(bsteps, "ours-cpu", model, batch), find(bsteps, "ort-wasm", model, batch)
            og, ogg = find(bsteps, "ours-webgpu", model, batch), find(bsteps, "ort-webgpu", model, batch)
            if not (oc or ow or og or ogg):
                continue
            row = {"model": model, "batch": batch, "cpu_vs_ort_wasm": ratio(oc, ow), "webgpu_vs_ort_webgpu": ratio(og, ogg)}
            browser_cmp.append(row)
            ms = lambda r: fmt_ms(r["ms_per_step"]) if r else "-"  # noqa: E731
            p(f"{model:8s} {batch:>2d} | {ms(oc):>15s} | {ms(ow):>11s} | {fr(row['cpu_vs_ort_wasm']):>6s} | {ms(og):>11s} | {ms(ogg):>10s} | {fr(row['webgpu_vs_ort_webgpu']):>6s}")

    steady_cmp = []
    if any(r.get("js_flags") for r in bsteps):
        p("")
        p("Browser CPU, steady-state code (Chromium --js-flags=--no-liftoff: wasm fully optimized before it runs)")
        p(f"{'model':8s} {'b':>2s} | {'ours cpu (wasm)':>15s} | {'ORT wasm 1t':>11s} | {'ratio':>6s}")
        for model in ("emoji", "cifar10"):
            for batch in (1, 8):
                oc = find(bsteps, "ours-cpu", model, batch, "--no-liftoff")
                ow = find(bsteps, "ort-wasm", model, batch, "--no-liftoff")
                if not (oc or ow):
                    continue
                row = {"model": model, "batch": batch, "js_flags": "--no-liftoff", "cpu_vs_ort_wasm": ratio(oc, ow)}
                steady_cmp.append(row)
                ms = lambda r: fmt_ms(r["ms_per_step"]) if r else "-"  # noqa: E731
                p(f"{model:8s} {batch:>2d} | {ms(oc):>15s} | {ms(ow):>11s} | {fr(row['cpu_vs_ort_wasm']):>6s}")

    if browser.get("first_frame"):
        p("")
        p("Time to first frame (fresh page: wasm instantiation + fetch + parse + upload, then 1 step + preview)")
        for r in browser["first_frame"]:
            p(f"  {r['model']:8s} {r['backend']:7s} {r['file']:26s} load {fmt_ms(r['load_ms']):>7s} ms, first frame {fmt_ms(r['first_frame_ms']):>7s} ms (first step {fmt_ms(r['first_step_ms'])} ms)")
    ort_first = [r for r in bsteps if r["impl"].startswith("ort-") and not r.get("js_flags")]
    if ort_first:
        p("onnxruntime-web, for comparison: session create + first (warm-up) run")
        for r in ort_first:
            p(f"  {r['model']:8s} {r['impl'][4:]:7s} b{r['batch']}  create {fmt_ms(r['session_create_ms']):>7s} ms, first run {fmt_ms(r['warmup_run_ms']):>7s} ms")
    if browser.get("preview"):
        p("")
        p("Preview every step vs none (whole run)")
        for r in browser["preview"]:
            p(f"  {r['model']} {r['backend']:7s} {r['steps']:>2d} steps: none {fmt_ms(r['none_ms'])} ms, every step {fmt_ms(r['every_ms'])} ms"
              f" -> overhead {r['overhead'] * 100:+.1f}% (fastest runs: {r['overhead_of_fastest'] * 100:+.1f}%)")
    if browser.get("wasm"):
        w = browser["wasm"]
        p("")
        p(f"Download: wasm_diffusion_bg.wasm {w['raw_bytes'] / 1e6:.2f} MB raw, {w['gzip9_bytes'] / 1e6:.2f} MB gzip -9; JS {w['js_bytes'] / 1e3:.0f} kB")
        if "instantiate_ms" in w:
            p(f"          fetch + compile + instantiate it in a fresh page: {fmt_ms(w['instantiate_ms'])} ms")
        for name, v in browser.get("ort_wasm", {}).items():
            p(f"          onnxruntime-web {name} {v['raw_bytes'] / 1e6:.2f} MB raw, {v['gzip9_bytes'] / 1e6:.2f} MB gzip -9")
        for model, q in browser.get("model_bytes", {}).items():
            p(f"  {model:8s} " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in q.items()))

    # --- targets ---
    def worst(key, rows):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return max(vals) if vals else None

    prev = [r["overhead"] for r in browser.get("preview", [])]
    targets = {}
    cpu_default = worst("cpu_vs_ort_wasm", browser_cmp)
    cpu_steady = worst("cpu_vs_ort_wasm", steady_cmp)
    for key, measured in (("webgpu_step_vs_ort_webgpu", worst("webgpu_vs_ort_webgpu", browser_cmp)),
                          ("cpu_step_vs_ort_wasm", cpu_steady if cpu_steady is not None else cpu_default),
                          ("preview_every_step_overhead", max(prev) if prev else None)):
        targets[key] = {"limit": TARGETS[key], "measured_worst": measured,
                        "met": None if measured is None else measured <= TARGETS[key]}
    targets["cpu_step_vs_ort_wasm"]["basis"] = "steady-state (--no-liftoff)" if cpu_steady is not None else "default flags"
    targets["cpu_step_vs_ort_wasm"]["measured_worst_default_flags"] = cpu_default
    p("")
    p("Issue 5 targets (worst case over the models measured)")
    for key, t in targets.items():
        state = "not measured" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        m = "-" if t["measured_worst"] is None else f"{t['measured_worst']:.3f}"
        p(f"  {key:30s} <= {t['limit']:<5} measured {m:>7s}  {state}" + (f"  ({t['basis']}; default flags {fr(t['measured_worst_default_flags'])})" if "basis" in t else ""))

    out = {"machine": machine(), "native": native, "browser": browser,
           "comparisons": {"native": native_cmp, "browser": browser_cmp, "browser_steady_state": steady_cmp}, "targets": targets, "table": lines}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
