#!/usr/bin/env bash
# Builds the GEMM microbenchmark for wasm32 (simd128 + relaxed-simd; the relaxed kernels are only
# called in their own rows) and runs it in Node's V8 with every function optimized up front:
#
#   bash bench/gemm_wasm/run.sh
#
# Prints, per GEMM shape of the emoji/cifar10 U-Nets (m = output channels, n = pixels,
# k = input channels x 9), the gemm crate's time and each tile's, with GFLOP/s and the ratio.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
CARGO_TARGET_DIR="${WASM_DIFFUSION_CACHE:-$HOME/.cache/wasm-diffusion}/gemm-wasm-bench" \
RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" \
    cargo build --release --target wasm32-unknown-unknown
node --no-liftoff --experimental-wasm-relaxed-simd bench.mjs \
    "${WASM_DIFFUSION_CACHE:-$HOME/.cache/wasm-diffusion}/gemm-wasm-bench/wasm32-unknown-unknown/release/gemm_wasm_bench.wasm"
