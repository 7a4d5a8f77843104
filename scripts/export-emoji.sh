#!/usr/bin/env bash
# Converts the emoji model's diffusers export (tools/train_emoji.py writes DIR/export) into the
# shipped files models/emoji/emoji.{f16,int8,int4}.safetensors (models/index.json is edited by hand).
#   bash scripts/export-emoji.sh [EXPORT_DIR]   (default ~/.cache/wasm-diffusion/train-gpu/export)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
export_dir="${1:-$HOME/.cache/wasm-diffusion/train-gpu/export}"
names="Smileys & Emotion,People & Body,Animals & Nature,Food & Drink,Travel & Places,Activities,Objects,Symbols"
mkdir -p models/emoji
cargo build --release --bin wasm-diffusion
for q in f16 int8 int4; do
    "$CARGO_TARGET_DIR/release/wasm-diffusion" convert "$export_dir" --quant "$q" \
        -o "models/emoji/emoji.$q.safetensors" --name "emoji-ddpm-32" --null-class 8 --class-names "$names"
done
cp "$export_dir/train_info.json" models/emoji/train_info.json
