#!/usr/bin/env bash
# All the tests: installs what is missing (scripts/setup.sh), runs the lint gate (scripts/lint.sh:
# rustfmt, clippy, tsc --checkJs; clippy runs inside the release build the tests then reuse),
# then the native Rust suite (parity with diffusers, schedulers,
# model file, CLI, wgpu on lavapipe), then builds the browser package and tests it in headless
# Chromium (pkg-tests/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. scripts/env.sh
# shellcheck disable=SC1091
. scripts/clippy-env.sh
export WASM_DIFFUSION_REQUIRE_WGPU="${WASM_DIFFUSION_REQUIRE_WGPU:-1}"
echo "== lint (scripts/lint.sh)"
bash scripts/lint.sh
echo "== native tests (cargo test --release, target dir $CARGO_TARGET_DIR)"
cargo test --release --locked -- --test-threads=2
echo "== browser package (scripts/build.sh) and its tests in headless Chromium (pkg-tests/)"
cargo build --release --locked --bin wasm-diffusion
bash scripts/build.sh
node --test --test-concurrency=1 pkg-tests/
