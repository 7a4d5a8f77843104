# shellcheck shell=bash
# Environment for wasm-diffusion builds and tests. Source it (do not execute it):
#
#     . scripts/env.sh
#
# Safe to source more than once. Everything it points at lives outside the clone,
# under $WASM_DIFFUSION_CACHE (default ~/.cache/wasm-diffusion), so CI runs stay warm.
#
#   CARGO_TARGET_DIR   native builds/tests            (default $WASM_DIFFUSION_CACHE/target)
#   WASM_TARGET_DIR    the wasm32 build (scripts/build.sh; default $WASM_DIFFUSION_CACHE/target-wasm).
#                      Kept apart from CARGO_TARGET_DIR on purpose: cargo holds a lock on
#                      <target>/release for the whole of a `--release --target wasm32-...` build
#                      (the host build scripts and proc-macros live there), so with one shared
#                      directory a ~30 min cold wasm build blocks every native `--release`
#                      build/test, and the other way round. Set WASM_TARGET_DIR=$CARGO_TARGET_DIR
#                      to share one directory anyway.
#   WASM_THREADS_TARGET_DIR  the threaded CPU build (default $WASM_DIFFUSION_CACHE/target-wasm-threads):
#                      other RUSTFLAGS and a rebuilt std, so it shares nothing with WASM_TARGET_DIR
#   WASM_THREADS_TOOLCHAIN  the pinned nightly Rust it is built with (-Z build-std; setup.sh
#                      installs it with rust-src)
#   PATH               + $WASM_DIFFUSION_CACHE/tools/bin (wasm-bindgen) and <repo>/node_modules/.bin
#                      (wasm-opt from the npm package binaryen)
#   XDG_RUNTIME_DIR    a private writable folder when unset (silences a wgpu/Vulkan warning)
#   CHROMIUM           the browser that playwright-core drives (default /usr/bin/chromium)

_wd_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

export WASM_DIFFUSION_CACHE="${WASM_DIFFUSION_CACHE:-$HOME/.cache/wasm-diffusion}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WASM_DIFFUSION_CACHE/target}"
export WASM_TARGET_DIR="${WASM_TARGET_DIR:-$WASM_DIFFUSION_CACHE/target-wasm}"
export WASM_THREADS_TARGET_DIR="${WASM_THREADS_TARGET_DIR:-$WASM_DIFFUSION_CACHE/target-wasm-threads}"
export WASM_THREADS_TOOLCHAIN="${WASM_THREADS_TOOLCHAIN:-nightly-2026-05-19}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
# playwright-core must never fetch browsers; we always pass executablePath=$CHROMIUM.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

# rustup's default install puts cargo here; CI shells do not always source it.
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

_wd_path_prepend() {
    case ":$PATH:" in
        *":$1:"*) ;;
        *) PATH="$1:$PATH" ;;
    esac
}
_wd_path_prepend "$_wd_repo/node_modules/.bin"
_wd_path_prepend "$WASM_DIFFUSION_CACHE/tools/bin"
export PATH

if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -w "${XDG_RUNTIME_DIR}" ]; then
    XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/wasm-diffusion-xdg-$(id -u)"
    mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
    export XDG_RUNTIME_DIR
fi

unset -f _wd_path_prepend
unset _wd_repo
