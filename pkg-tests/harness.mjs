// Shared set-up of the browser tests: the test models (made with the native CLI), the static
// server, headless Chromium (chromium.mjs), and pages that fail the test on an uncaught page error.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startServer } from "./server.mjs";
import { launch, WEBGPU_ARGS, NO_GPU_ARGS } from "./chromium.mjs";

export const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
export const CLI = path.join(process.env.CARGO_TARGET_DIR || path.join(os.homedir(), ".cache/wasm-diffusion/target"), "release/wasm-diffusion");

export function cli(...args) {
  const r = spawnSync(CLI, args, { encoding: "utf8" });
  assert.equal(r.status, 0, `${CLI} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** A temporary folder with the test models: cc.int8 (class-conditional), plain.f32, and bad files. */
export function makeModels() {
  assert.ok(fs.existsSync(path.join(REPO, "pkg/index.js")), "pkg/ missing: run scripts/build.sh first");
  assert.ok(fs.existsSync(CLI), `${CLI} missing: run cargo build --release first`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wd-pkg-tests-"));
  cli("convert", path.join(REPO, "tests/fixtures/unets/classcond"), "--quant", "int8", "-o", path.join(dir, "cc.int8.safetensors"), "--null-class", "4", "--class-names", "a,b,c,d,null");
  cli("convert", path.join(REPO, "tests/fixtures/unets/plain"), "--quant", "f32", "-o", path.join(dir, "plain.f32.safetensors"));
  fs.writeFileSync(path.join(dir, "not-a-model.safetensors"), "<html>hello</html>");
  const full = fs.readFileSync(path.join(dir, "cc.int8.safetensors"));
  fs.writeFileSync(path.join(dir, "truncated.safetensors"), full.subarray(0, Math.floor(full.length * 0.6)));
  return dir;
}

/**
 * Uncaught errors of every page opened through `watch`: a test that leaves one fails
 * (`assertNoPageErrors` in afterEach). Console warnings are fine.
 */
export const pageErrors = [];

export function watch(p) {
  p.on("pageerror", (e) => pageErrors.push(`${p.url()}: ${e.message}`));
  return p;
}

export function assertNoPageErrors() {
  const errors = pageErrors.splice(0);
  assert.deepEqual(errors, [], "uncaught errors in the page");
}

/**
 * The set-up most browser test files share, filled into `suite` step by step (so that closeSuite
 * undoes whatever part was done): `models` (makeModels), `server` (the repo at /, the models at
 * /m/), `browser` (Chromium, WebGPU on SwiftShader) and `page` (newPage). Returns `suite`.
 */
export async function openSuite(suite) {
  suite.models = makeModels();
  suite.server = await startServer({ roots: { "/": REPO, "/m/": suite.models } });
  suite.browser = await launch();
  suite.page = await newPage(suite.browser, suite.server);
  return suite;
}

export async function closeSuite(suite) {
  await suite.browser?.close();
  await suite.server?.close();
  if (suite.models) fs.rmSync(suite.models, { recursive: true, force: true });
}

/** A page on pkg-tests/page.html (window.wd = the package), watched for uncaught errors. */
export async function newPage(browser, server) {
  const p = watch(await browser.newPage());
  await p.goto(`${server.url}/pkg-tests/page.html`);
  await p.waitForFunction(() => window.ready === true);
  return p;
}

export { startServer, launch, WEBGPU_ARGS, NO_GPU_ARGS };
