// What the browser benchmark scripts share: paths, the --flag VALUE argument reader and the
// median. Chromium is started by pkg-tests/chromium.mjs, as in the browser tests.
import os from "node:os";
import path from "node:path";

export const HERE = path.dirname(new URL(import.meta.url).pathname);
export const REPO = path.resolve(HERE, "..");
export const CACHE = process.env.WASM_DIFFUSION_CACHE || path.join(os.homedir(), ".cache/wasm-diffusion");
export const ORT_DIST = path.join(HERE, "node_modules/onnxruntime-web/dist");
export const argv = process.argv.slice(2);
/** The value after `--flag` on the command line, or `fallback`. */
export const arg = (flag, fallback) => (argv.includes(flag) ? argv[argv.indexOf(flag) + 1] : fallback);
/** The benchmark models' folder (bench/make_models.py output), `--models DIR` overriding it. */
export const MODELS = path.resolve(arg("--models", path.join(CACHE, "bench")));
/** The median of `xs` (the mean of the two middle values when their number is even). */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}
