#!/usr/bin/env python3
"""Merges the two halves of bench/gpu.sh's run into one JSON file and prints the table.

    python3 bench/gpu_report.py --native FILE --web FILE [--manifest FILE] [--seconds N] -o OUT.json

Ratios are ours / peer, from the same run: below 1 means we are faster. Exit status 1 if either
half recorded an error (the table is printed anyway).
"""

import argparse
import json
import os
import sys


def load(path):
    if not path or not os.path.exists(path):
        return {"errors": [{"case": "report", "error": f"{path} missing"}]}
    with open(path) as f:
        return json.load(f)


def ms(row):
    if not row:
        return "-"
    v = row["ms_per_step"]
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3f}"


def ratio(v):
    return "-" if v is None else "n/a" if v <= 0 else f"{v:.2f}x"


def tflops(row, peak):
    if not row or "tflops" not in row:
        return "-"
    if row["ms_per_step"] <= 0:
        return "n/a"
    s = f"{row['tflops']:.3g}"
    if peak and "fraction_of_peak" in row:
        s += f" ({row['fraction_of_peak'] * 100:.1f}%)"
    return s


def util(row):
    smi = (row or {}).get("smi") or {}
    if smi.get("gpu_util_mean") is None:
        return "-"
    return f"{smi['gpu_util_mean']:.0f}%" + ("*" if smi.get("stub") else "")


def table(r):
    nat, web = r["native"], r["web"]
    out = []
    p = out.append
    env = nat.get("env", {})
    if r["dry_run"]:
        p("DRY RUN on software adapters (lavapipe, SwiftShader), PyTorch on the CPU, tiny models: NOT GPU figures")
    p(f"machine: {env.get('gpu', env.get('device', '?'))}; torch {env.get('torch', '?')} ({env.get('device', '?')}), "
      f"diffusers {env.get('diffusers', '?')}; Node {web.get('node', '-')}, onnxruntime-web {web.get('ort_version', '-')}; "
      f"Dawn adapter: {(web.get('adapter') or {}).get('vendor', '-')} / {(web.get('adapter') or {}).get('architecture', '-')} "
      f"{(web.get('adapter') or {}).get('description', '')}")
    p(f"git {r.get('manifest', {}).get('git', '?')[:10]}, run {r.get('seconds', '?')} s")
    p("")
    peak = nat.get("peak_flops")
    p("Native, ms per U-Net forward (ours: CLI --backend wgpu, Vulkan; torch: eager, " + env.get("device", "?") + ")")
    p(f"{'model':9s} {'b':>3s} | {'GFLOP':>8s} | {'ours wgpu':>9s} | {'t f32':>8s} {'t f16':>8s} {'t bf16':>8s} | "
      f"{'/f32':>6s} {'/f16':>6s} {'/bf16':>6s} | {'ours TFLOP/s (peak)':>19s} | {'t bf16 TFLOP/s':>15s} | util ours/t32")
    for c in nat.get("cases", []):
        fl = c.get("flops_per_step")
        p(f"{c['model']:9s} {c['batch']:>3d} | {fl / 1e9 if fl else float('nan'):8.2f} | {ms(c.get('ours_wgpu')):>9s} | "
          f"{ms(c.get('torch_float32')):>8s} {ms(c.get('torch_float16')):>8s} {ms(c.get('torch_bfloat16')):>8s} | "
          f"{ratio(c.get('ratio_ours_vs_torch_float32')):>6s} {ratio(c.get('ratio_ours_vs_torch_float16')):>6s} "
          f"{ratio(c.get('ratio_ours_vs_torch_bfloat16')):>6s} | {tflops(c.get('ours_wgpu'), peak):>19s} | "
          f"{tflops(c.get('torch_bfloat16'), peak):>15s} | {util(c.get('ours_wgpu'))}/{util(c.get('torch_float32'))}")
    if peak:
        p(f"  peak used: f32 {peak['float32'] / 1e12:.0f} TFLOP/s for ours and torch f32, {peak['bfloat16'] / 1e12:.0f} for f16/bf16 (H200 datasheet, dense)")
    else:
        p("  no peak: not an H200 (percent of peak left out)")
    if any((c.get("ours_wgpu") or {}).get("ms_per_step", 1) <= 0 for c in nat.get("cases", [])):
        p("  a negative step time: the difference of two runs was lost in run-to-run noise (the JSON has a warning); n/a = no ratio")
    if any("*" in util(c.get("ours_wgpu")) for c in nat.get("cases", [])):
        p("  * utilisation from the dry run's nvidia-smi stub (zeros): the sampling path ran, the figure means nothing")
    p("")
    p("WebGPU under Node + Dawn (npm `webgpu`), ms per U-Net forward")
    p(f"{'model':9s} {'b':>3s} | {'ours (pkg)':>10s} | {'ORT webgpu':>10s} | {'ratio':>6s} | {'ORT create':>10s} | ORT vs torch max err")
    for c in web.get("cases", []):
        o = c.get("ort_webgpu_node") or {}
        err = f"{o['max_abs_err_vs_torch']:.1e}" if o else "-"
        p(f"{c['model']:9s} {c['batch']:>3d} | {ms(c.get('ours_webgpu_node')):>10s} | {ms(c.get('ort_webgpu_node')):>10s} | "
          f"{ratio(c.get('ratio_ours_vs_ort')):>6s} | {o.get('session_create_ms', float('nan')):10,.0f} | {err}")
    p("")
    p("Whole run with a preview every step vs none, batch 1, and time to first frame")
    for v in nat.get("preview", []):
        p(f"  CLI  {v['model']:8s} {v['steps']} steps: none {v['none_s'] * 1000:,.0f} ms, every step {v['every_s'] * 1000:,.0f} ms "
          f"-> {v['overhead'] * 100:+.1f}%; first frame (whole 1-step process) {v['first_frame_s'] * 1000:,.0f} ms")
    for v in web.get("preview", []):
        p(f"  Node {v['model']:8s} {v['steps']} steps: none {v['none_ms']:,.0f} ms, every step {v['every_ms']:,.0f} ms "
          f"-> {v['overhead'] * 100:+.1f}%; load {v['load_ms']:,.0f} ms, first frame {v['first_frame_ms']:,.0f} ms")
    p("")
    ch = web.get("chromium") or {}
    line = f"Headless Chromium: {ch.get('status', 'not recorded')}"
    if ch.get("adapter"):
        line += f", adapter {ch['adapter'].get('vendor')} / {ch['adapter'].get('architecture')}"
    if "ms_per_step" in ch:
        line += f", ours emoji b1 {ch['ms_per_step']:,.1f} ms/step"
    if ch.get("reason"):
        line += f" ({ch['reason']})"
    p(line)
    sd = web.get("sd_turbo") or {}
    if sd:
        p(f"SD-Turbo on WebGPU: {sd.get('status')} ({sd.get('reason')})")
    for half in ("native", "web"):
        for s in r[half].get("skipped", []):
            p(f"SKIPPED ({half}): {s}")
        for e in r[half].get("errors", []):
            p(f"ERROR ({half}) {e['case']}: {e['error'][:300]}")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--native", required=True)
    ap.add_argument("--web", required=True)
    ap.add_argument("--manifest")
    ap.add_argument("--seconds", type=float)
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    nat, web = load(a.native), load(a.web)
    r = {"issue": 15, "dry_run": bool(nat.get("dry_run")), "seconds": a.seconds, "manifest": load(a.manifest) if a.manifest else {},
         "native": nat, "web": web}
    r["table"] = table(r)
    with open(a.out, "w") as f:
        json.dump(r, f, indent=1)
    print(r["table"])
    print(f"\nwrote {a.out}")
    sys.exit(1 if nat.get("errors") or web.get("errors") else 0)


if __name__ == "__main__":
    main()
