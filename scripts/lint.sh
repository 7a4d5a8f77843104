#!/usr/bin/env bash
# The lint gate, run by scripts/test.sh first (after set-up); every check runs, then it fails if
# any did:
#
#   cargo fmt --check
#   clippy with warnings denied, on every target (lib, bin, tests): as the release build the
#   tests use (scripts/clippy-env.sh), so the dependencies are built once for both, not again in
#   check mode (a cold `cargo clippy` cost ~9.5 min more on 2 cores)
#   with WASM_DIFFUSION_LINT_WASM=1, `cargo clippy` on the browser bindings (src/web/, compiled
#   only for wasm32; scripts/build.sh lints them anyway when run under scripts/clippy-env.sh)
#   tsc --checkJs over the package's JS in src/web/js (pkg-tests/types/tsconfig.src.json)
#
# The JS is checked before the build, so the wasm-bindgen glue is typed `any` there
# (pkg-tests/types/glue-untyped.d.ts); pkg-tests/types.test.mjs checks the built pkg/ against
# the real glue declarations.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. scripts/env.sh

failed=()
check() {
    local name="$1"
    shift
    echo "== lint: $name"
    local t0=$SECONDS
    if "$@"; then
        echo "   ok ($((SECONDS - t0)) s)"
    else
        echo "   FAILED ($((SECONDS - t0)) s)"
        failed+=("$name")
    fi
}
check "cargo fmt" cargo fmt --check
# shellcheck disable=SC1091
. scripts/clippy-env.sh
check "clippy (release build of all targets)" cargo build --release --locked --all-targets
if [ "${WASM_DIFFUSION_LINT_WASM:-0}" = 1 ]; then
    check "cargo clippy (wasm32, web)" cargo clippy --release --locked --lib --target wasm32-unknown-unknown \
        --no-default-features --features web,webgpu --target-dir "$WASM_TARGET_DIR" -- -D warnings
fi
check "tsc --checkJs src/web/js" node_modules/.bin/tsc -p pkg-tests/types/tsconfig.src.json
if [ "${#failed[@]}" -gt 0 ]; then
    echo "lint.sh: failed: ${failed[*]}" >&2
    exit 1
fi
