#!/usr/bin/env bash
# Build the browser package into pkg/: the wasm (wasm32, release, features `web` and `webgpu`)
# and the threaded CPU build (feature `threads`, nightly Rust) bound by wasm-bindgen for
# `--target web`, the JS API of src/web/js and its npm manifest
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

echo "==> cargo build (wasm32, release, features: web, webgpu) in $WASM_TARGET_DIR"
t0=$SECONDS
CARGO_TARGET_DIR="$WASM_TARGET_DIR" cargo build --lib --release \
    --target wasm32-unknown-unknown --no-default-features --features web,webgpu
echo "    cargo: $((SECONDS - t0)) s"
[ -f "$wasm" ] || die "cargo did not produce $wasm"

echo "==> wasm-bindgen $cli_wb --target web -> $out_dir/"
mkdir -p "$out_dir"
wasm-bindgen --target web --out-dir "$out_dir" --out-name wasm_diffusion "$wasm"
bg="$out_dir/wasm_diffusion_bg.wasm"
[ -f "$bg" ] || die "wasm-bindgen did not produce $bg"
size_bindgen=$(stat -c %s "$bg")

# The threaded CPU build (feature `threads`, no WebGPU): wasm atomics and a shared memory need
# std rebuilt with them, hence the pinned nightly and -Z build-std. The index.js of the package
# takes it on cross-origin isolated pages for the CPU backend. The link arguments are what
# wasm-bindgen's thread support expects (shared, imported memory; TLS exports); 4 GiB is
# wasm32's whole address space, as in the single-threaded build.
threads_wasm="$WASM_THREADS_TARGET_DIR/wasm32-unknown-unknown/release/wasm_diffusion.wasm"
rustup +"$WASM_THREADS_TOOLCHAIN" component list --installed 2>/dev/null | grep "^rust-src" >/dev/null \
    || die "Rust $WASM_THREADS_TOOLCHAIN with rust-src not found; run: bash scripts/setup.sh"
echo "==> cargo +$WASM_THREADS_TOOLCHAIN build (wasm32 atomics, -Z build-std, features: threads) in $WASM_THREADS_TARGET_DIR"
t0=$SECONDS
threads_flags="-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128"
for arg in --shared-memory --import-memory --max-memory=4294967296 \
    --export=__wasm_init_tls --export=__tls_size --export=__tls_align --export=__tls_base; do
    threads_flags="$threads_flags -C link-arg=$arg"
done
# (Without the lint wrapper scripts/clippy-env.sh may have set: the pinned nightly has no
# clippy, and the stable build above already linted the same code.)
env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS \
    CARGO_TARGET_DIR="$WASM_THREADS_TARGET_DIR" RUSTFLAGS="$threads_flags" \
    cargo +"$WASM_THREADS_TOOLCHAIN" build --lib --release -Z build-std=panic_abort,std \
    --target wasm32-unknown-unknown --no-default-features --features threads
echo "    cargo: $((SECONDS - t0)) s"
[ -f "$threads_wasm" ] || die "cargo did not produce $threads_wasm"
rm -rf "$out_dir/snippets"
wasm-bindgen --target web --out-dir "$out_dir" --out-name wasm_diffusion_threads "$threads_wasm"
threads_bg="$out_dir/wasm_diffusion_threads_bg.wasm"
[ -f "$threads_bg" ] || die "wasm-bindgen did not produce $threads_bg"
# wasm-bindgen-rayon's worker script (a JS snippet) starts each pool worker from a blob: URL of
# its own source, lets it import the glue by URL, and initialises with wasm-bindgen's deprecated
# positional arguments. Pool workers are nested workers, which a service worker does not control,
# so for the demo offline: each starts from the script's own URL (requested by its SamplerWorker,
# which the service worker serves from the pinned build), and imports the glue as a blob that
# SamplerWorker fetched. The patch must apply exactly, or the build stops.
node -e '
    const fs = require("fs");
    const dir = process.argv[1] + "/snippets";
    const files = fs.readdirSync(dir, { recursive: true }).filter((f) => f.endsWith("workerHelpers.no-bundler.js"));
    if (files.length !== 1) throw new Error(`expected one wasm-bindgen-rayon worker script in ${dir}, found ${files.length}`);
    const file = `${dir}/${files[0]}`;
    let js = fs.readFileSync(file, "utf8");
    const swaps = [
      ["let scriptBlob = await fetch(import.meta.url).then(r => r.blob());", ""],
      ["let url = URL.createObjectURL(scriptBlob);", "let url = import.meta.url;"],
      ["URL.revokeObjectURL(url);", ""],
      ["await pkg.default(data.module, data.memory);", "await pkg.default({ module_or_path: data.module, memory: data.memory });"],
      ["mainJS: builder.mainJS()", "mainJS: await glueForPool(builder.mainJS())"],
    ];
    // The pool workers are nested workers, which a service worker does not control: the glue
    // they import comes from this (controlled) worker instead, as a blob whose relative imports
    // point at the package (the snippet it imports is the pool worker itself, already loaded).
    js += [
      "",
      "// Added by wasm-diffusion (scripts/build.sh): the glue for the pool workers, fetched here.",
      "async function glueForPool(url) {",
      "  const response = await fetch(url);",
      "  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);",
      "  const base = new URL(\".\", url).href;",
      "  const text = (await response.text()).replace(/(from\\s*|import\\s*\\(\\s*)([\x27\"])\\.\\//g, (_, a, q) => a + q + base);",
      "  return URL.createObjectURL(new Blob([text], { type: \"text/javascript\" }));",
      "}",
      "",
    ].join("\n");
    for (const [from, to] of swaps) {
      if (js.split(from).length !== 2) throw new Error(`${file}: expected ${JSON.stringify(from)} once (a new wasm-bindgen-rayon? check the patch in scripts/build.sh)`);
      js = js.replace(from, to);
    }
    fs.writeFileSync(file, js);
' "$out_dir"
# Its types are the single-threaded build's (index.js is the package's API either way).
rm -f "$out_dir/wasm_diffusion_threads.d.ts" "$out_dir/wasm_diffusion_threads_bg.wasm.d.ts"

if [ "$opt" = 1 ]; then
    wasm_opt="$REPO/node_modules/.bin/wasm-opt"
    # Not Debian's wasm-opt (binaryen 108): it writes a broken module without any error.
    [ -x "$wasm_opt" ] || die "$wasm_opt not found; run: bash scripts/setup.sh"
    echo "==> $("$wasm_opt" --version) $opt_level (slow)"
    t0=$SECONDS
    # --enable-* match what rustc (1.82+) emits for wasm32-unknown-unknown by default.
    for module in "$bg" "$threads_bg"; do
        "$wasm_opt" "$opt_level" \
            --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
            --enable-mutable-globals --enable-reference-types --enable-multivalue \
            --enable-simd --enable-threads \
            "$module" -o "$module.opt"
        mv "$module.opt" "$module"
    done
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
size_threads=$(stat -c %s "$threads_bg")
echo "    threaded     $(mb "$size_threads")  $threads_bg  (gzip -9: $(mb "$(gzip -9 -c "$threads_bg" | wc -c)"))"

# The demo's manifest: the default model's `integrity` in models/index.json (commit it when it
# changes) and www/build-id.js, the build id and the hash of each file sw.js pins to it (the
# package, models/index.json, the model). A page runs the package of one build only (sw.js).
build_id="$(node scripts/demo-manifest.mjs)"
echo "    build id     $build_id  (www/build-id.js, integrity in models/index.json)"
