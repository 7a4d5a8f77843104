#!/usr/bin/env bash
# Build the browser package into pkg/ (ES module + .wasm for `--target web`).
#
#   bash scripts/build.sh [--opt[=LEVEL]] [--features LIST] [--out-dir DIR] [--manifest-path PATH]
#
#   --opt, WASM_OPT=1     also run wasm-opt (npm binaryen) on the result, LEVEL from
#                         --opt=LEVEL or WASM_OPT_LEVEL (default -Oz). Slow: minutes on a
#                         ~30 MB module, so it stays out of the default (test) path.
#   --features LIST       cargo features (default: web), built with --no-default-features
#   --out-dir DIR         wasm-bindgen output folder (default: pkg, relative to the repo root)
#   --manifest-path PATH  another crate (used to try the toolchain on a scratch crate)
#
# Needs scripts/setup.sh to have been run once. Builds in $WASM_TARGET_DIR (see scripts/env.sh).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=scripts/env.sh
. "$REPO/scripts/env.sh"

die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

opt="${WASM_OPT:-0}"
opt_level="${WASM_OPT_LEVEL:--Oz}"
features="web"
out_dir="pkg"
manifest="$REPO/Cargo.toml"
while [ $# -gt 0 ]; do
    case "$1" in
        --opt) opt=1 ;;
        --opt=*) opt=1; opt_level="${1#--opt=}" ;;
        --features) [ $# -ge 2 ] || die "--features needs a value"; features="$2"; shift ;;
        --features=*) features="${1#--features=}" ;;
        --out-dir) [ $# -ge 2 ] || die "--out-dir needs a value"; out_dir="$2"; shift ;;
        --out-dir=*) out_dir="${1#--out-dir=}" ;;
        --manifest-path) [ $# -ge 2 ] || die "--manifest-path needs a value"; manifest="$2"; shift ;;
        --manifest-path=*) manifest="${1#--manifest-path=}" ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
case "$opt" in 0|"") opt=0 ;; *) opt=1 ;; esac
manifest="$(cd "$(dirname "$manifest")" && pwd)/$(basename "$manifest")"
crate_dir="$(dirname "$manifest")"

command -v wasm-bindgen >/dev/null 2>&1 || die "wasm-bindgen not found; run: bash scripts/setup.sh"
# The CLI and the wasm-bindgen crate in Cargo.lock must be the same version, or wasm-bindgen
# fails with a schema mismatch; say so up front, before a long cargo build.
lock_wb="$(awk '
    /^\[\[package\]\]/ { name = "" }
    /^name = / { gsub(/"/, "", $3); name = $3 }
    /^version = / && name == "wasm-bindgen" { gsub(/"/, "", $3); print $3; exit }
' "$crate_dir/Cargo.lock" 2>/dev/null || true)"
cli_wb="$(wasm-bindgen --version | awk '{print $2}')"
if [ -n "$lock_wb" ] && [ "$lock_wb" != "$cli_wb" ]; then
    die "wasm-bindgen CLI is $cli_wb but Cargo.lock has wasm-bindgen $lock_wb; run: bash scripts/setup.sh"
fi

# The lib target's name (e.g. wasm_diffusion) names the .wasm cargo writes.
lib_name="$(cargo metadata --manifest-path "$manifest" --no-deps --format-version 1 \
    | node -e '
        let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
            const m = JSON.parse(s);
            const root = m.packages.find(p => p.manifest_path === process.argv[1]) || m.packages[0];
            const lib = root.targets.find(t => t.kind.includes("cdylib"));
            if (!lib) { console.error("no cdylib target in " + root.name); process.exit(1); }
            console.log(lib.name.replace(/-/g, "_"));
        });' "$manifest")"

target_dir="$WASM_TARGET_DIR"
wasm="$target_dir/wasm32-unknown-unknown/release/$lib_name.wasm"

echo "==> cargo build (wasm32, release, features: ${features:-<none>}) in $target_dir"
t0=$SECONDS
CARGO_TARGET_DIR="$target_dir" cargo build --manifest-path "$manifest" --lib --release \
    --target wasm32-unknown-unknown --no-default-features ${features:+--features "$features"}
echo "    cargo: $((SECONDS - t0)) s"
[ -f "$wasm" ] || die "cargo did not produce $wasm"

echo "==> wasm-bindgen $cli_wb --target web -> $out_dir/"
mkdir -p "$out_dir"
wasm-bindgen --target web --out-dir "$out_dir" --out-name wasm_diffusion "$wasm"
bg="$out_dir/wasm_diffusion_bg.wasm"
[ -f "$bg" ] || die "wasm-bindgen did not produce $bg"
size_bindgen=$(stat -c %s "$bg")

if [ "$opt" = 1 ]; then
    wasm_opt="$REPO/node_modules/.bin/wasm-opt"
    # Not Debian's wasm-opt (binaryen 108): it writes a broken module without any error.
    [ -x "$wasm_opt" ] || die "$wasm_opt not found; run: bash scripts/setup.sh"
    echo "==> $("$wasm_opt" --version) $opt_level (slow)"
    t0=$SECONDS
    # --enable-* match what rustc (1.82+) emits for wasm32-unknown-unknown by default.
    "$wasm_opt" "$opt_level" \
        --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
        --enable-mutable-globals --enable-reference-types --enable-multivalue \
        "$bg" -o "$bg.opt"
    mv "$bg.opt" "$bg"
    echo "    wasm-opt: $((SECONDS - t0)) s"
fi

echo "==> npm package in $out_dir/ (JS API from src/web/js)"
cp src/web/js/index.js src/web/js/index.d.ts src/web/js/worker.js src/web/js/worker-client.js "$out_dir/"
version="$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)"
cat > "$out_dir/package.json" <<JSON
{
  "name": "wasm-diffusion",
  "version": "$version",
  "description": "Diffusion sampling (diffusers UNet2DModel, DDPM/DDIM/DPM-Solver++) in the browser on WebGPU, from Rust/WebAssembly",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "./index.js",
  "module": "./index.js",
  "types": "./index.d.ts",
  "exports": {
    ".": { "types": "./index.d.ts", "default": "./index.js" },
    "./worker": "./worker.js",
    "./wasm_diffusion_bg.wasm": "./wasm_diffusion_bg.wasm",
    "./package.json": "./package.json"
  },
  "files": [
    "index.js",
    "index.d.ts",
    "worker.js",
    "worker-client.js",
    "wasm_diffusion.js",
    "wasm_diffusion.d.ts",
    "wasm_diffusion_bg.wasm",
    "wasm_diffusion_bg.wasm.d.ts"
  ],
  "sideEffects": false,
  "keywords": ["diffusion", "webgpu", "wasm", "diffusers", "ddpm", "ddim"]
}
JSON
rm -f "$out_dir/.gitignore"

mb() { awk -v b="$1" 'BEGIN { printf "%.2f MB", b / 1e6 }'; }
size_cargo=$(stat -c %s "$wasm")
size_final=$(stat -c %s "$bg")
size_gz=$(gzip -9 -c "$bg" | wc -c)
echo "==> sizes"
echo "    cargo        $(mb "$size_cargo")  $wasm"
echo "    wasm-bindgen $(mb "$size_bindgen")"
[ "$opt" = 1 ] && echo "    wasm-opt     $(mb "$size_final")"
echo "    final        $(mb "$size_final")  $bg  (gzip -9: $(mb "$size_gz"))"

# The demo's manifest: the default model's `integrity` in models/index.json (commit it when it
# changes) and www/build-id.js, the build id and the hash of each file sw.js pins to it (the
# package, models/index.json, the model). A page runs the package of one build only (sw.js).
if [ "$out_dir" = pkg ]; then
  build_id="$(node scripts/demo-manifest.mjs)"
  echo "    build id     $build_id  (www/build-id.js, integrity in models/index.json)"
fi
