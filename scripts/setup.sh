#!/usr/bin/env bash
# Install the toolchain for the browser build and the wgpu tests. Idempotent and
# non-interactive; meant for Debian 12 as root (CI runs it from a clean clone).
# Tools persist outside the clone under $WASM_DIFFUSION_CACHE (~/.cache/wasm-diffusion),
# so a repeat run only checks and takes seconds.
#
#   bash scripts/setup.sh
#
# What it does (each step only when needed):
#   1. rustup target add wasm32-unknown-unknown; the pinned nightly (with rust-src) of the
#      threaded build
#   2. apt: chromium (ships SwiftShader for headless WebGPU) and mesa-vulkan-drivers
#      (lavapipe, a Vulkan adapter on the CPU for native wgpu tests); nodejs/npm, python3,
#      gcc only if those commands are missing
#   3. cargo install wasm-bindgen-cli, the exact version of wasm-bindgen in Cargo.lock,
#      into $WASM_DIFFUSION_CACHE/tools
#   4. npm ci at the repo root (binaryen for wasm-opt, playwright-core, typescript, vite)
# Requires rustup (Debian's rustc is too old for burn 0.22).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=scripts/env.sh
. "$REPO/scripts/env.sh"

# Used when Cargo.lock has no wasm-bindgen package (it normally has one: wgpu pulls it in).
WASM_BINDGEN_FALLBACK_VERSION="0.2.130"
TOOLS="$WASM_DIFFUSION_CACHE/tools"
mkdir -p "$TOOLS"

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- 1. Rust
command -v rustup >/dev/null 2>&1 || die "rustup not found (install Rust with rustup first; Debian's rustc is too old)"
command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH"
# (grep without -q: with pipefail, an early exit of grep -q could SIGPIPE the writer)
if rustup target list --installed | grep -x 'wasm32-unknown-unknown' >/dev/null; then
    echo "wasm32-unknown-unknown target: present"
else
    log "rustup target add wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
fi
# The lint gate (scripts/lint.sh) needs rustfmt and clippy; rustup's minimal profile lacks them.
for component in rustfmt clippy; do
    if rustup component list --installed | grep "^${component}" >/dev/null; then
        echo "${component}: present"
    else
        log "rustup component add ${component}"
        rustup component add "${component}"
    fi
done

# The threaded CPU build (scripts/build.sh) rebuilds std with wasm atomics: a pinned nightly
# with the standard library's sources.
if rustup toolchain list | grep "^${WASM_THREADS_TOOLCHAIN}" >/dev/null \
    && rustup +"$WASM_THREADS_TOOLCHAIN" component list --installed | grep "^rust-src" >/dev/null; then
    echo "${WASM_THREADS_TOOLCHAIN} with rust-src: present"
else
    log "rustup toolchain install ${WASM_THREADS_TOOLCHAIN} (rust-src, for the threaded wasm build)"
    rustup toolchain install "$WASM_THREADS_TOOLCHAIN" --profile minimal --component rust-src
fi

# ---------------------------------------------------------------- 2. apt
dpkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]; }
need=()
for pkg in chromium mesa-vulkan-drivers; do
    dpkg_installed "$pkg" || need+=("$pkg")
done
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v python3 >/dev/null 2>&1 || need+=(python3)      # python3 -m http.server for the test pages
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)     # linker for cargo install
if [ "${#need[@]}" -gt 0 ]; then
    log "apt-get install ${need[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${need[*]}"
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
else
    echo "apt packages: present (chromium, mesa-vulkan-drivers)"
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "setup.sh: warning: node $(node --version) is older than 20, which playwright-core wants" >&2
fi

# ---------------------------------------------------------------- 3. wasm-bindgen-cli
# The CLI must be the same version as the wasm-bindgen crate the wasm was built with.
wb_version=""
if [ -f Cargo.lock ]; then
    wb_version="$(awk '
        /^\[\[package\]\]/ { name = "" }
        /^name = / { gsub(/"/, "", $3); name = $3 }
        /^version = / && name == "wasm-bindgen" { gsub(/"/, "", $3); print $3; exit }
    ' Cargo.lock)"
fi
if [ -z "$wb_version" ]; then
    wb_version="$WASM_BINDGEN_FALLBACK_VERSION"
    echo "setup.sh: Cargo.lock has no wasm-bindgen package; using the pinned fallback $wb_version" >&2
fi
have_wb="$("$TOOLS/bin/wasm-bindgen" --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have_wb" = "$wb_version" ]; then
    echo "wasm-bindgen-cli $wb_version: present"
else
    log "cargo install wasm-bindgen-cli --version =$wb_version (was: ${have_wb:-none}; takes ~7 min cold)"
    # No --locked: its lock file pins versions that cannot all be resolved here.
    # CARGO_TARGET_DIR is dropped so the install builds in its own temporary folder
    # instead of locking (and bloating) the shared native target dir.
    env -u CARGO_TARGET_DIR nice -n 10 \
        cargo install wasm-bindgen-cli --version "=$wb_version" --root "$TOOLS" --force
fi

# ---------------------------------------------------------------- 4. npm
# Skip when node_modules already matches the lock file (npm writes its own copy of the
# lock into node_modules/.package-lock.json at install time).
if [ -f package-lock.json ]; then
    if [ -f node_modules/.package-lock.json ] \
        && [ node_modules/.package-lock.json -nt package-lock.json ] \
        && [ node_modules/.package-lock.json -nt package.json ] \
        && npm ls --depth=0 >/dev/null 2>&1; then
        echo "node_modules: up to date"
    else
        log "npm ci"
        npm ci --no-audit --no-fund
    fi
else
    log "npm install (no package-lock.json yet; it will be written; commit it)"
    npm install --no-audit --no-fund
fi

# ---------------------------------------------------------------- summary
ver() { "$@" 2>/dev/null | head -n1 || echo "MISSING"; }
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "MISSING"; }
lavapipe="missing"
ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 && lavapipe="yes"
swiftshader="missing"
[ -f /usr/lib/chromium/libvk_swiftshader.so ] && swiftshader="yes"
cat <<EOF

==> wasm-diffusion toolchain
  rustc                $(ver rustc --version)
  cargo                $(ver cargo --version)
  wasm32 target        $(rustup target list --installed | grep -x wasm32-unknown-unknown >/dev/null && echo yes || echo MISSING)
  wasm-bindgen         $(ver wasm-bindgen --version)  ($(command -v wasm-bindgen || echo 'not on PATH'))
  wasm-opt             $(ver wasm-opt --version)
  node / npm           $(ver node --version) / $(ver npm --version)
  playwright-core      $(node -p 'require("playwright-core/package.json").version' 2>/dev/null || echo MISSING)
  chromium             $(pkgver chromium) (SwiftShader: $swiftshader)
  mesa-vulkan-drivers  $(pkgver mesa-vulkan-drivers) (lavapipe ICD: $lavapipe)
  CARGO_TARGET_DIR     $CARGO_TARGET_DIR
  WASM_TARGET_DIR      $WASM_TARGET_DIR
Use:  . scripts/env.sh   (PATH, target dirs, XDG_RUNTIME_DIR)
EOF
