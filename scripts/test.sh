#!/usr/bin/env bash
# All the tests: installs what is missing (scripts/setup.sh), then the native Rust suite
# (parity with diffusers, schedulers, model file, CLI, wgpu on lavapipe).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. scripts/env.sh
export WASM_DIFFUSION_REQUIRE_WGPU="${WASM_DIFFUSION_REQUIRE_WGPU:-1}"
echo "== native tests (cargo test --release, target dir $CARGO_TARGET_DIR)"
cargo test --release --locked -- --test-threads=2
