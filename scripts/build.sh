#!/usr/bin/env bash
# Build the browser package into pkg/: the wasm (wasm32, release, feature `web`) bound by
# wasm-bindgen for `--target web`, the JS API of src/web/js and its npm manifest
# src/web/js/package.json (whose version must be Cargo.toml's; the build stops if not).
#
#   bash scripts/build.sh [--opt[=LEVEL]]
#
#   --opt, WASM_OPT=1     also run wasm-opt (npm binaryen) on the result, LEVEL from
#                         --opt=LEVEL or WASM_OPT_LEVEL (default -Oz). Slow: minutes on a
#                         ~30 MB module, so it stays out of the default (test) path.
#
# Then writes the demo's manifest (www/build-id.js, the default model's integrity in
# models/index.json). Needs scripts/setup.sh to have been run once. Builds in $WASM_TARGET_DIR
# (see scripts/env.sh).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=scripts/env.sh
. "$REPO/scripts/env.sh"

die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

opt="${WASM_OPT:-0}"
opt_level="${WASM_OPT_LEVEL:--Oz}"
while [ $# -gt 0 ]; do
    case "$1" in
        --opt) opt=1 ;;
        --opt=*) opt=1; opt_level="${1#--opt=}" ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
case "$opt" in 0|"") opt=0 ;; *) opt=1 ;; esac
out_dir="pkg"

# The npm package's version is the crate's: say so before a long cargo build.
version="$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)"
pkg_version="$(node -p 'require("./src/web/js/package.json").version')"
[ "$pkg_version" = "$version" ] \
    || die "src/web/js/package.json has version $pkg_version but Cargo.toml has $version; make them the same"

command -v wasm-bindgen >/dev/null 2>&1 || die "wasm-bindgen not found; run: bash scripts/setup.sh"
# The CLI and the wasm-bindgen crate in Cargo.lock must be the same version, or wasm-bindgen
# fails with a schema mismatch; say so up front, before a long cargo build.
lock_wb="$(awk '
    /^\[\[package\]\]/ { name = "" }
    /^name = / { gsub(/"/, "", $3); name = $3 }
    /^version = / && name == "wasm-bindgen" { gsub(/"/, "", $3); print $3; exit }
' Cargo.lock 2>/dev/null || true)"
cli_wb="$(wasm-bindgen --version | awk '{print $2}')"
if [ -n "$lock_wb" ] && [ "$lock_wb" != "$cli_wb" ]; then
    die "wasm-bindgen CLI is $cli_wb but Cargo.lock has wasm-bindgen $lock_wb; run: bash scripts/setup.sh"
fi

# The lib target is the package's name with "_" (Cargo.toml has no [lib] name).
wasm="$WASM_TARGET_DIR/wasm32-unknown-unknown/release/wasm_diffusion.wasm"

echo "==> cargo build (wasm32, release, features: web) in $WASM_TARGET_DIR"
t0=$SECONDS
CARGO_TARGET_DIR="$WASM_TARGET_DIR" cargo build --lib --release \
    --target wasm32-unknown-unknown --no-default-features --features web
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

echo "==> npm package in $out_dir/ (JS API and package.json from src/web/js)"
cp src/web/js/index.js src/web/js/index.d.ts src/web/js/worker.js src/web/js/worker-client.js \
    src/web/js/package.json "$out_dir/"
missing="$(node -e '
    const fs = require("fs");
    const dir = process.argv[1];
    const m = JSON.parse(fs.readFileSync(dir + "/package.json", "utf8"));
    console.log(m.files.filter((f) => !fs.existsSync(dir + "/" + f)).join(" "));' "$out_dir")"
[ -z "$missing" ] || die "$out_dir/ lacks files its package.json lists: $missing"
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
build_id="$(node scripts/demo-manifest.mjs)"
echo "    build id     $build_id  (www/build-id.js, integrity in models/index.json)"
