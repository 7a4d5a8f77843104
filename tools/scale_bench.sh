#!/usr/bin/env bash
# The scale benchmark (BENCHMARKS.md, "Latent diffusion at scale"): ours
# (examples/latent_scale.rs on a pipeline file) and PyTorch eager (tools/scale_bench_torch.py on
# the diffusers folder it was converted from) in turn, A B A B, N rounds, then a table of medians
# and ratios from this one session.
#
#     bash tools/scale_bench.sh [-n ROUNDS] [--batch B] [--no-decode] [--threads T] \
#         PIPELINE_DIR FILE [FILE...]
#
#   PIPELINE_DIR   a diffusers folder (tools/make_scale_pipelines.py), read by PyTorch
#   FILE           pipeline files converted from it (`wasm-diffusion convert DIR --quant int8`)
#
# Each file gets its own rounds; PyTorch runs once per round per file, next to it. Raw JSON
# lines go to $LOG (default /work/scale-data/bench-<time>.jsonl), the table to stdout.
# TORCH_PYTHONPATH is put on PYTHONPATH for the PyTorch side (e.g. a folder with accelerate).
# LATENT_SCALE names the example binary (default: the release build under CARGO_TARGET_DIR;
# build it with `cargo build --release --example latent_scale --features scale-bench`).
set -euo pipefail

rounds=3
extra=()
threads=2
while [ $# -gt 0 ]; do
    case "$1" in
        -n) rounds="$2"; shift 2 ;;
        --batch) extra+=(--batch "$2"); shift 2 ;;
        --no-decode) extra+=(--no-decode); shift ;;
        --threads) threads="$2"; shift 2 ;;
        *) break ;;
    esac
done
dir="$1"; shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${LATENT_SCALE:-${CARGO_TARGET_DIR:-$HOME/.cache/wasm-diffusion/target}/release/examples/latent_scale}"
log="${LOG:-/work/scale-data/bench-$(date -u +%Y%m%dT%H%M%S).jsonl}"
echo "host: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; log: $log" >&2

for r in $(seq 1 "$rounds"); do
    for f in "$@"; do
        tag="$(basename "$f")"
        echo "round $r: ours $tag" >&2
        "$bin" "$f" "${extra[@]}" 2>>"$log.err" | sed "s/^{/{\"round\": $r, \"file\": \"$tag\", /" >>"$log"
        echo "round $r: torch $(basename "$dir") ($threads threads)" >&2
        PYTHONPATH="${TORCH_PYTHONPATH:-}" python3 "$here/tools/scale_bench_torch.py" "$dir" --threads "$threads" "${extra[@]}" 2>>"$log.err" \
            | sed "s/^{/{\"round\": $r, \"file\": \"$tag\", /" >>"$log"
    done
done

python3 - "$log" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
files = sorted({r["file"] for r in rows})
med = lambda xs: statistics.median(xs) if xs else float("nan")
print("medians over rounds; ratio = ours / torch; wall s [CPU s]")
print(f"{'file':<28} {'phase':<7} {'ours s':>15} {'torch s':>15} {'wall':>6} {'CPU':>6} | {'ours MiB':>9} {'torch MiB':>9} {'ratio':>6} | rounds, wall s ours/torch")
for f in files:
    for phase in ("load", "step", "decode"):
        o = [r for r in rows if r["file"] == f and r["phase"] == phase and r["impl"] == "ours"]
        t = [r for r in rows if r["file"] == f and r["phase"] == phase and r["impl"] == "torch"]
        if not o or not t:
            continue
        ow, tw = med([r["seconds"] for r in o]), med([r["seconds"] for r in t])
        oc = med([r["cpu_seconds"] for r in o if "cpu_seconds" in r])
        tc = med([r["cpu_seconds"] for r in t if "cpu_seconds" in r])
        om, tm = med([r["peak_rss_mib"] for r in o]), med([r["peak_rss_mib"] for r in t])
        pairs = " ".join(f"{a['seconds']:.1f}/{b['seconds']:.1f}" for a, b in zip(o, t))
        print(f"{f:<28} {phase:<7} {ow:>7.1f} [{oc:>5.1f}] {tw:>7.1f} [{tc:>5.1f}] {ow / tw:>5.2f}x {oc / tc:>5.2f}x"
              f" | {om:>9.0f} {tm:>9.0f} {om / tm:>5.2f}x | {pairs}")
EOF

# Bytes per component of each file (the safetensors header is the rest).
python3 - "$@" <<'EOF2'
import json, os, struct, sys
for p in sys.argv[1:]:
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    comp = {}
    for k, v in h.items():
        if k != "__metadata__":
            comp[k.split(".")[0]] = comp.get(k.split(".")[0], 0) + v["data_offsets"][1] - v["data_offsets"][0]
    parts = ", ".join(f"{c} {b / 1e6:.1f}" for c, b in sorted(comp.items()))
    print(f"{os.path.basename(p)}: {os.path.getsize(p) / 1e6:.1f} MB ({parts}, header {(n + 8) / 1e6:.2f})")
EOF2
