#!/usr/bin/env bash
# The hardware-GPU benchmark of issue 15 (BENCHMARKS.md, "Hardware GPU (pending)").
#
#   bash bench/gpu.sh --stage      here: build/collect everything the GPU machine lacks into the
#                                  ignored folder .gpu-stage/, packed into parts part1..N, one per
#                                  device call; prints the calls to make
#   bash bench/gpu.sh --dry-run    here: the whole run on software adapters (lavapipe, SwiftShader),
#                                  PyTorch on the CPU and tiny models, from the staged files
#   bash bench/gpu.sh --unpack     device calls 1..N-1 (carry .gpu-stage/partI): unpack, nothing else
#   bash bench/gpu.sh              device call N (carry .gpu-stage/partN), at once after the others:
#                                  unpack, measure (within 8 minutes), write $OUT/gpu-bench.json
#
# Why several calls: a call carries at most 64 MiB including the tree (tracked files, ~43 MiB),
# and Node alone is ~20 MiB compressed. What the earlier calls unpack lives in
# .gpu-stage/unpacked (ignored, so the device keeps it between calls), which survives only while
# the machine is warm (30 s after a call). If the last call finds no Node
# (the machine went cold), the WebGPU half is recorded as not run and the native half still runs:
# the last part holds everything the native half needs.
#
# The measurement: bench/gpu_native.py (our CLI on wgpu vs PyTorch eager CUDA f32/f16/bf16, FLOPs,
# nvidia-smi, 25-step preview run, time to first frame), then bench/gpu_web.mjs (our npm package
# under Node + Dawn vs onnxruntime-web's WebGPU provider, and headless Chromium if the machine has
# one), then bench/gpu_report.py (one JSON and the table). Every phase has a deadline; a phase
# that fails is recorded in the JSON and makes the exit status 1.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
STAGE="$REPO/.gpu-stage"
LIMIT_MIB=64
die() { printf 'bench/gpu.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '[gpu.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }

mode=run
case "${1:-}" in
    --stage) mode=stage ;;
    --dry-run) mode=dry ;;
    --unpack) mode=unpack ;;
    "" | --run) mode=run ;;
    *) die "unknown argument $1 (--stage | --dry-run | --unpack | --run)" ;;
esac

# Bytes of what every device call sends besides its carry: tracked files plus untracked files
# that git does not ignore (the device README's rule).
tree_bytes() {
    { git ls-files -z; git ls-files -z --others --exclude-standard; } | sort -zu |
        xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'
}

# ------------------------------------------------------------------------------------------------
# --stage (here): everything the GPU machine lacks, one compressed archive per component, packed
# by bench/gpu_pack.py into .gpu-stage/part1..N: each part travels in one call beside the tree,
# and the last part (what the native half needs: cli, py, vulkan) in the call that runs.
# ------------------------------------------------------------------------------------------------
stage() {
    # shellcheck source=scripts/env.sh
    . "$REPO/scripts/env.sh"
    local cli="$CARGO_TARGET_DIR/release/wasm-diffusion" tmp
    [ -x "$cli" ] || die "$cli missing: run cargo build --release --bin wasm-diffusion"
    [ -f pkg/wasm_diffusion_bg.wasm ] || die "pkg/ missing: run bash scripts/build.sh (or copy a built pkg/ here)"
    [ "$(uname -m)" = x86_64 ] || die "the GPU machine is x86-64: stage on an x86-64 host"
    local newest
    newest=$(git log -1 --format=%ct -- src Cargo.toml Cargo.lock)
    [ "$(stat -c %Y "$cli")" -ge "$newest" ] || say "WARNING: $cli is older than the last commit to src/: rebuild it"
    [ "$(stat -c %Y pkg/wasm_diffusion_bg.wasm)" -ge "$newest" ] || say "WARNING: pkg/ is older than the last commit to src/: rebuild it"
    if [ ! -f bench/node_modules/webgpu/package.json ] || [ ! -f bench/node_modules/onnxruntime-web/package.json ]; then
        (cd bench && nice npm install --no-audit --no-fund)
    fi
    local node
    node="$(command -v node)" || die "node missing"
    if ldd "$node" | grep 'libnode\|libuv\|libicu' >/dev/null; then
        die "$node links libnode/libuv/libicu: stage a self-contained Node binary (the official build)"
    fi

    rm -rf "$STAGE"
    mkdir -p "$STAGE/c"
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" RETURN

    # Node and dawn.node lose their debug symbols (strip keeps the dynamic symbols N-API needs).
    say "node $("$node" --version): stripping and compressing (minutes on a busy host)"
    mkdir -p "$tmp/node/bin"
    cp "$node" "$tmp/node/bin/node"
    strip "$tmp/node/bin/node"
    tar -C "$tmp" -cf - node | nice xz --x86 --lzma2=preset=9e -T1 >"$STAGE/c/node.tar.xz"

    say "the CLI ($(mib "$(stat -c %s "$cli")") MiB): stripping and compressing"
    local cli_mtime
    cli_mtime=$(stat -c %Y "$cli")
    mkdir -p "$tmp/main/bin"
    cp "$cli" "$tmp/main/bin/wasm-diffusion"
    strip "$tmp/main/bin/wasm-diffusion"
    tar -C "$tmp/main" -cf - bin | nice xz --x86 --lzma2=preset=9e -T1 >"$STAGE/c/cli.tar.xz"

    say "pkg/, dawn.node and onnxruntime-web's WebGPU build"
    local w="$tmp/web"
    mkdir -p "$w/pkg" "$w/node_modules/webgpu/dist/linux-x64" "$w/node_modules/onnxruntime-web/dist"
    cp pkg/index.js pkg/wasm_diffusion.js pkg/worker-client.js pkg/package.json pkg/wasm_diffusion_bg.wasm "$w/pkg/"
    cp bench/node_modules/webgpu/{index.js,package.json} "$w/node_modules/webgpu/"
    cp bench/node_modules/webgpu/dist/linux-x64/dawn.node "$w/node_modules/webgpu/dist/linux-x64/"
    strip "$w/node_modules/webgpu/dist/linux-x64/dawn.node"
    cp bench/node_modules/onnxruntime-web/package.json "$w/node_modules/onnxruntime-web/"
    cp bench/node_modules/onnxruntime-web/dist/{ort.webgpu.bundle.min.mjs,ort-wasm-simd-threaded.asyncify.mjs,ort-wasm-simd-threaded.asyncify.wasm} \
        "$w/node_modules/onnxruntime-web/dist/"
    tar -C "$tmp" -cf - web | nice xz -9e -T1 >"$STAGE/c/web.tar.xz"

    say "Python: diffusers (the machine has none; its pipelines/ left out) and importlib_metadata"
    local dv mv
    dv="$(python3 -c 'import diffusers; print(diffusers.__version__)')"
    mv="$(python3 -c 'import importlib_metadata as m; print(m.version("importlib_metadata"))')"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$tmp/whl" \
        "diffusers==$dv" "importlib_metadata==$mv"
    python3 -m pip install -q --no-deps --no-compile --target "$tmp/py" "$tmp"/whl/*.whl 2>/dev/null
    find "$tmp/py/diffusers/pipelines" "$tmp/py/diffusers/modular_pipelines" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
    rm -rf "$tmp/py/bin"
    tar -C "$tmp" -cf - py | nice xz -9e -T1 >"$STAGE/c/py.tar.xz"

    say "the Vulkan loader as a .deb (unpacked there only if the machine lacks one)"
    local o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    mkdir -p /tmp/amd64/partial "$tmp/debs"
    # shellcheck disable=SC2086
    apt-get $o update >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    (cd "$tmp/debs" && apt-get $o download libvulkan1 >/dev/null 2>&1) || die "apt-get download libvulkan1 failed"
    tar -C "$tmp" -cf "$STAGE/c/vulkan.tar" debs

    python3 bench/gpu_pack.py "$STAGE" "$(tree_bytes)" "$LIMIT_MIB" "$node" "$cli" "$cli_mtime"
    check_sizes
}

# Each call sends the tree plus one part: both must fit in 64 MiB. Prints the device calls.
check_sizes() {
    local tree b ok=1 n i d calls=""
    tree=$(tree_bytes)
    n=$(find "$STAGE" -maxdepth 1 -name 'part*' -type d | wc -l)
    [ "$n" -gt 0 ] || die "no .gpu-stage/part*: run bash bench/gpu.sh --stage"
    say "the tree every call sends (tracked + untracked, not ignored): $(mib "$tree") MiB"
    for i in $(seq 1 "$n"); do
        d="$STAGE/part$i"
        b=$(du -sb "$d" | cut -f1)
        say "  call $i of $n carries .gpu-stage/part$i ($(find "$d" -type f ! -name MANIFEST.json -printf '%f ')): $(mib "$b") MiB + tree = $(mib $((b + tree))) MiB of $LIMIT_MIB MiB"
        [ $((b + tree)) -le $((LIMIT_MIB * 1048576)) ] || ok=0
        if [ "$i" -lt "$n" ]; then calls+="  $i. carry [\".gpu-stage/part$i\"], command \"bash bench/gpu.sh --unpack\", timeout_s 120"$'\n'; fi
    done
    calls+="  $n. carry [\".gpu-stage/part$n\"], command \"bash bench/gpu.sh\", timeout_s 540"
    [ "$ok" = 1 ] || die "a part does not fit in $LIMIT_MIB MiB with the tree: run --stage again (it packs for the current tree)"
    say "the device calls, each at once after the one before (the machine stays warm 30 s):"
    printf '%s\n' "$calls" >&2
}

# ------------------------------------------------------------------------------------------------
# unpacking (device, and the dry run here) into $WD: on the device .gpu-stage/unpacked, an ignored
# path that the device keeps between calls while the machine stays warm; in the dry run /tmp
# ------------------------------------------------------------------------------------------------
unpack_parts() { # every .gpu-stage/part*/ present (carried now, or left there by an earlier call)
    mkdir -p "$WD"
    local d f mark
    for d in "$STAGE"/part*/; do
        [ -d "$d" ] || continue
        for f in "$d"*.tar*; do
            [ -e "$f" ] || continue
            mark="$WD/.unpacked-$(basename "$f")-$(stat -c %s "$f")"
            [ -e "$mark" ] && continue # an earlier warm call unpacked it
            python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$f" "$WD"
            touch "$mark"
            say "unpacked $(basename "$d")/$(basename "$f")"
        done
    done
    if [ -d "$WD/debs" ] && ! ldconfig -p 2>/dev/null | grep 'libvulkan.so.1' >/dev/null; then
        say "no Vulkan loader: unpacking the carried libvulkan1 .deb into / (the device README's recipe)"
        for f in "$WD"/debs/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
}

# ------------------------------------------------------------------------------------------------
# the run (device; with DRY=1 the dry run here)
# ------------------------------------------------------------------------------------------------
run() {
    local start rc=0 out work smi="" chromium="" node="" vk=()
    start=$(date +%s)
    out="${OUT:-$STAGE/out}"
    mkdir -p "$out"
    work="$WD/work"
    mkdir -p "$work"
    # Everything the run prints also goes to $out/gpu-bench.log.
    exec > >(tee "$out/gpu-bench.log") 2>&1
    say "mode $([ "$DRY" = 1 ] && echo dry-run || echo device), work $work, out $out"
    unpack_parts
    export PYTHONPATH="$WD/py${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
    local cli="$WD/bin/wasm-diffusion"
    [ -x "$cli" ] || die "$cli missing: this call must carry the last part (cli.tar.xz)"
    "$cli" --version >/dev/null || die "the unpacked CLI does not run"

    if [ "$DRY" = 1 ]; then
        # nvidia-smi's CSV from a stub, so the sampling and its summary run too (marked "stub").
        smi="$WD/nvidia-smi-stub"
        printf '#!/bin/sh\nwhile :; do echo "0, 0, 100, 1000, 50.0"; sleep 0.1; done\n' >"$smi"
        chmod +x "$smi"
        # dawn.node rejects lavapipe; Chromium's SwiftShader ICD works for it.
        vk=(VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json)
        chromium=/usr/bin/chromium
    else
        smi="$(command -v nvidia-smi || true)"
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | sed 's/^/  /' || true
        local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
        if [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd" VK_ICD_FILENAMES="$icd"; fi
        chromium="$(command -v chromium chromium-browser google-chrome headless_shell 2>/dev/null | head -1 || true)"
    fi
    if [ -x "$WD/node/bin/node" ]; then node="$WD/node/bin/node"; elif command -v node >/dev/null; then node="$(command -v node)"; fi

    # Deadlines (Unix seconds): native half, WebGPU half; the report takes seconds.
    local budget=${GPU_BENCH_SECONDS:-470}
    local native_end=$((start + budget * 65 / 100)) web_end=$((start + budget * 96 / 100))
    if [ "$DRY" = 1 ]; then native_end=$((start + 1500)); web_end=$((start + 2400)); fi
    local dry=()
    [ "$DRY" = 1 ] && dry=(--dry-run)

    say "native half (deadline in $((native_end - $(date +%s))) s)"
    nice -n "$NICE" python3 bench/gpu_native.py --work "$work" --cli "$cli" --out "$out/native.json" \
        --deadline "$native_end" --smi "$smi" "${dry[@]}" || rc=1
    [ -f "$out/native.json" ] || die "the native half wrote no JSON"

    if [ -n "$node" ] && [ -d "$WD/web" ]; then
        say "WebGPU half with Node $("$node" --version) (deadline in $((web_end - $(date +%s))) s)"
        env "${vk[@]}" nice -n "$NICE" "$node" bench/gpu_web.mjs --native "$out/native.json" --node-modules "$WD/web/node_modules" \
            --pkg "$WD/web/pkg" --out "$out/web.json" --deadline "$web_end" --chromium "$chromium" "${dry[@]}" || rc=1
    else
        say "WebGPU half NOT RUN: node ${node:-missing}, $WD/web $([ -d "$WD/web" ] || echo missing): an earlier call's part was not unpacked on this machine (cold between the calls?)"
        printf '{"errors": [{"case": "setup", "error": "WebGPU half not run: Node or the web files missing (an earlier --unpack call did not run on this machine: cold between the calls?)"}]}\n' >"$out/web.json"
        rc=1
    fi
    python3 bench/gpu_report.py --native "$out/native.json" --web "$out/web.json" --manifest "$(find "$STAGE" -name MANIFEST.json | head -1)" \
        --seconds $(($(date +%s) - start)) -o "$out/gpu-bench.json" | tee "$out/gpu-bench.txt" || rc=1
    say "done in $(($(date +%s) - start)) s, exit status $rc; files in $out"
    return "$rc"
}

main() {
    case "$mode" in
        stage) stage ;;
        unpack)
            WD="$STAGE/unpacked"
            unpack_parts
            ;;
        run)
            WD="$STAGE/unpacked" DRY=0 NICE=0
            run
            ;;
        dry)
            check_sizes
            WD=/tmp/wd-gpu-dry DRY=1 NICE=10
            rm -rf "$WD"
            run
            ;;
    esac
}

# One line, read whole before it runs: editing this file during a run cannot derail it.
main; exit $?
