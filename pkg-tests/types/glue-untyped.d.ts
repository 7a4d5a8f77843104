// For scripts/lint.sh, which type-checks src/web/js before anything is built: the wasm-bindgen
// glue (pkg/wasm_diffusion.js and its .d.ts) does not exist yet, so its import is typed `any`.
// pkg-tests/types.test.mjs checks the built pkg/ against the real glue declarations.
declare module "*/wasm_diffusion.js";
