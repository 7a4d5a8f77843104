#!/usr/bin/env bash
# The benchmark of issue 5 in one command (see BENCHMARKS.md):
#
#   bash bench/run.sh [--slow] [--native-only | --browser-only]
#
# Builds the benchmark models if missing (bench/make_models.py, bench/export_onnx.py, into
# ~/.cache/wasm-diffusion/bench), runs the native comparison (bench/native.py) and the browser
# comparison (bench/browser.mjs), writes bench/results.json and prints the table.
#
# Needs: `cargo build --release` (the CLI), `bash scripts/build.sh` (pkg/), Chromium, Python with
# torch + diffusers (+ onnx, installed here if missing), Node. Everything runs under `nice`.
# --slow adds the cases that take minutes each on a software GPU (lavapipe / SwiftShader).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=scripts/env.sh
. "$REPO/scripts/env.sh"

slow=()
native=1
browser=1
for a in "$@"; do
    case "$a" in
        --slow) slow=(--slow) ;;
        --native-only) browser=0 ;;
        --browser-only) native=0 ;;
        *) echo "run.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done

die() { printf 'bench/run.sh: error: %s\n' "$*" >&2; exit 1; }
CLI="$CARGO_TARGET_DIR/release/wasm-diffusion"
[ -x "$CLI" ] || die "$CLI missing: run cargo build --release"
[ -f pkg/wasm_diffusion_bg.wasm ] || die "pkg/ missing: run bash scripts/build.sh"
[ -x "$CHROMIUM" ] || die "$CHROMIUM missing: run bash scripts/setup.sh"
python3 -c "import torch, diffusers" 2>/dev/null || die "Python needs torch and diffusers (pip install -r tools/requirements.txt)"
python3 -c "import onnx" 2>/dev/null || nice python3 -m pip install -q "onnx==1.23.2"
# Chromium is driven by pkg-tests/chromium.mjs, with the root's playwright-core.
[ -d node_modules/playwright-core ] || die "node_modules/playwright-core missing: run bash scripts/setup.sh"
if [ ! -d bench/node_modules/onnxruntime-web ]; then
    (cd bench && nice npm install --no-audit --no-fund)
fi

MODELS="$WASM_DIFFUSION_CACHE/bench"
nice python3 bench/make_models.py --out "$MODELS" --cli "$CLI"
nice python3 bench/export_onnx.py --dir "$MODELS"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
if [ "$native" = 1 ]; then
    nice python3 bench/native.py --dir "$MODELS" --cli "$CLI" --out "$tmp/native.json" "${slow[@]}"
fi
if [ "$browser" = 1 ]; then
    nice node bench/browser.mjs --models "$MODELS" --out "$tmp/browser.json" "${slow[@]}"
fi
# A partial run keeps the other half from the previous results.json.
if [ -f bench/results.json ]; then
    python3 - "$tmp" <<'EOF'
import json, os, sys
old = json.load(open("bench/results.json"))
if not os.path.exists(f"{sys.argv[1]}/native.json"):
    json.dump(old.get("native", []), open(f"{sys.argv[1]}/native.json", "w"))
if not os.path.exists(f"{sys.argv[1]}/browser.json"):
    json.dump(old.get("browser", {}), open(f"{sys.argv[1]}/browser.json", "w"))
EOF
fi
echo
python3 bench/report.py "$tmp/native.json" "$tmp/browser.json" -o bench/results.json
echo
echo "wrote bench/results.json ($(( $(date +%s) - start )) s of measurement)"
