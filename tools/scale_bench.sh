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
print(f"{'file':<28} {'phase':<7} {'ours s':>9} {'torch s':>9} {'ratio':>6} | {'ours MiB':>9} {'torch MiB':>9} {'ratio':>6} | rounds (ours/torch s)")
for f in files:
    for phase in ("load", "step", "decode"):
        o = [r for r in rows if r["file"] == f and r["phase"] == phase and r["impl"] == "ours"]
        t = [r for r in rows if r["file"] == f and r["phase"] == phase and r["impl"] == "torch"]
        if not o or not t:
            continue
        os_, ts = med([r["seconds"] for r in o]), med([r["seconds"] for r in t])
        om, tm = med([r["peak_rss_mib"] for r in o]), med([r["peak_rss_mib"] for r in t])
        pairs = " ".join(f"{a['seconds']:.1f}/{b['seconds']:.1f}" for a, b in zip(o, t))
        print(f"{f:<28} {phase:<7} {os_:>9.2f} {ts:>9.2f} {os_ / ts:>5.2f}x | {om:>9.0f} {tm:>9.0f} {om / tm:>5.2f}x | {pairs}")
EOF
