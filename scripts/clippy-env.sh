# shellcheck shell=bash
# Source it: cargo then compiles this crate's own targets (not its dependencies) through
# clippy-driver with every warning denied. The artifacts are the ordinary release build's, so the
# lint gate (scripts/lint.sh) and the tests (scripts/test.sh) share one build: `cargo clippy`
# would check-build every dependency a second time. Builds without these variables recompile
# the crate itself (not its dependencies) once.
export RUSTC_WORKSPACE_WRAPPER="${RUSTC_WORKSPACE_WRAPPER:-clippy-driver}"
# clippy-driver's argument list, as `cargo clippy -- -D warnings` passes it.
export CLIPPY_ARGS="${CLIPPY_ARGS:--D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__}"
