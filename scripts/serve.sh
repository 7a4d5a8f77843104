#!/usr/bin/env bash
# README's first command (npm start): set up, build the browser package, serve the demo.
#   PORT=8080 bash scripts/serve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh ${WASM_OPT:+--opt}
port="${PORT:-8080}"
echo "==> demo at http://127.0.0.1:$port/ (Ctrl-C to stop)"
exec node pkg-tests/server.mjs --root . --port "$port"
