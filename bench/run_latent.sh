#!/usr/bin/env bash
# The latent text-to-image browser benchmark against onnxruntime-web in one command (BENCHMARKS.md,
# "Latent text-to-image in the browser vs onnxruntime-web"):
#
#   bash bench/run_latent.sh [latent_browser.mjs options, e.g. --backends cpu --models tiny]
#
# Makes what is missing under $WASM_DIFFUSION_CACHE/latent-bench (default
# ~/.cache/wasm-diffusion/latent-bench): the pipeline folders (tiny = tests/fixtures/pipelines/
# sd_tiny; mid = tools/make_scale_pipelines.py --only mid), our files at f32/f16/int8/int4
# (wasm-diffusion convert) and the ONNX files with their PyTorch references
# (bench/export_latent_onnx.py); then runs bench/latent_browser.mjs, which writes
# bench/latent-results.json and prints the table. Everything runs under `nice`.
#
# Needs: the CLI (cargo build --release), pkg/ (bash scripts/build.sh), Chromium, Python with
# torch + diffusers + transformers (+ onnx, installed here if missing), bench/node_modules.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=scripts/env.sh
. "$REPO/scripts/env.sh"

die() { printf 'bench/run_latent.sh: error: %s\n' "$*" >&2; exit 1; }
CLI="$CARGO_TARGET_DIR/release/wasm-diffusion"
[ -x "$CLI" ] || die "$CLI missing: run cargo build --release"
[ -f pkg/wasm_diffusion_bg.wasm ] || die "pkg/ missing: run bash scripts/build.sh"
[ -x "$CHROMIUM" ] || die "$CHROMIUM missing: run bash scripts/setup.sh"
python3 -c "import torch, diffusers, transformers" 2>/dev/null || die "Python needs torch, diffusers and transformers (pip install -r tools/requirements.txt)"
python3 -c "import onnx" 2>/dev/null || nice python3 -m pip install -q "onnx==1.23.2"
[ -d node_modules/playwright-core ] || die "node_modules/playwright-core missing: run bash scripts/setup.sh"
if [ ! -d bench/node_modules/onnxruntime-web ]; then
    (cd bench && nice npm install --no-audit --no-fund)
fi

D="$WASM_DIFFUSION_CACHE/latent-bench"
mkdir -p "$D"
[ -d "$D/tiny" ] || cp -r tests/fixtures/pipelines/sd_tiny "$D/tiny"
[ -d "$D/mid" ] || nice python3 tools/make_scale_pipelines.py --out "$D" --only mid
for m in tiny mid; do
    for q in f32 f16 int8 int4; do
        [ -f "$D/$m.$q.safetensors" ] || nice "$CLI" convert "$D/$m" --quant "$q" -o "$D/$m.$q.safetensors" | tail -1
    done
done
nice python3 bench/export_latent_onnx.py --dir "$D" tiny mid
nice node bench/latent_browser.mjs --dir "$D" "$@"
