// Hardware-GPU benchmark, WebGPU half (issue 15; run by bench/gpu.sh, see BENCHMARKS.md).
//
//   node bench/gpu_web.mjs --native FILE --node-modules DIR --pkg DIR --out FILE --deadline EPOCH_S
//                          [--chromium PATH] [--dry-run]
//
// Under Node with the npm package `webgpu` (Dawn's dawn.node, which gives Node a navigator.gpu),
// on the same models bench/gpu_native.py made (FILE is its JSON: the files and batch sizes):
//  - ours: our npm package (pkg/), Sampler.load(bytes, { backend: "webgpu" }). One step = one
//    U-Net call (DDIM, no guidance); per step = (elapsedMs(S2 steps) - elapsedMs(S1 steps)) /
//    (S2 - S1) with previewEvery = steps (only the final frame is read back): the same method as
//    bench/browser.mjs. Also a 25-step run with a preview every step against none (alternating
//    pairs) and the time to first frame (Sampler.load from bytes to the first frame yielded).
//  - onnxruntime-web's WebGPU provider on bench/export_onnx.py's export: session.run on fixed
//    inputs, one warm-up, the median of the timed runs (each with the upload and read-back), and
//    its output checked against PyTorch's (the .ref.json beside the ONNX file).
//  - headless Chromium, if there is one: its WebGPU adapter and our step on it (emoji, batch 1).
// Node needs three stand-ins that a browser has: navigator.gpu (dawn.node), a global `Window`
// (wgpu's web backend looks for it to find navigator) and ImageData (our frames). dawn.node
// also refuses a writeBuffer source view on a SharedArrayBuffer (onnxruntime-web's threaded wasm
// memory): such views are copied first.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const argv = process.argv.slice(2);
const arg = (flag, fallback) => (argv.includes(flag) ? argv[argv.indexOf(flag) + 1] : fallback);
const DRY = argv.includes("--dry-run");
const NATIVE = JSON.parse(fs.readFileSync(arg("--native"), "utf8"));
const NM = path.resolve(arg("--node-modules"));
const PKG = path.resolve(arg("--pkg"));
const OUT = arg("--out");
const DEADLINE = Number(arg("--deadline")) * 1000;
const CHROMIUM = arg("--chromium", "");
const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

const t0 = Date.now();
const log = (...a) => console.error(`[gpu_web ${new Date().toISOString().slice(11, 19)}]`, ...a);
const r3 = (x) => Math.round(x * 1000) / 1000;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const results = { dry_run: DRY, started: new Date().toISOString(), node: process.version, cases: [], preview: [], errors: [], skipped: [] };
class Deadline extends Error {}
function need(seconds, what) {
  const left = (DEADLINE - Date.now()) / 1000;
  if (left < seconds) throw new Deadline(`${what}: ${left.toFixed(0)} s left before the deadline, needs ~${seconds} s`);
}
/** Runs one case; a deadline skip or an error is recorded (errors make the exit status 1). */
async function guard(what, f) {
  try {
    return await f();
  } catch (e) {
    if (e instanceof Deadline) {
      log("SKIP", e.message);
      results.skipped.push(e.message);
    } else {
      log(`ERROR ${what}:`, e && e.stack ? e.stack : e);
      results.errors.push({ case: what, error: `${e && e.name}: ${e && e.message}`.slice(-2000) });
    }
    return null;
  }
}
function write() {
  results.finished = new Date().toISOString();
  results.seconds = r3((Date.now() - t0) / 1000);
  fs.writeFileSync(OUT, JSON.stringify(results, null, 1));
  log(`wrote ${OUT}: ${results.cases.length} cases, ${results.errors.length} errors, ${results.skipped.length} skipped`);
}

// --- Node's stand-ins for the browser's WebGPU globals --------------------------------------------
async function setupNodeWebGPU() {
  const { create, globals } = await import(pathToFileURL(path.join(NM, "webgpu/index.js")).href);
  Object.assign(globalThis, globals);
  const writeBuffer = globalThis.GPUQueue.prototype.writeBuffer;
  globalThis.GPUQueue.prototype.writeBuffer = function (buffer, offset, data, dataOffset, size) {
    if (data && data.buffer instanceof SharedArrayBuffer) data = data.slice();
    return writeBuffer.call(this, buffer, offset, data, dataOffset, size);
  };
  const gpu = create([]);
  Object.defineProperty(globalThis, "navigator", { value: { gpu }, configurable: true, writable: true });
  globalThis.Window ??= class Window {};
  globalThis.ImageData ??= class ImageData {
    constructor(data, width, height) {
      Object.assign(this, { data, width, height });
    }
  };
  const a = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!a) throw new Error("dawn.node: no WebGPU adapter (see the Vulkan messages above)");
  results.adapter = { vendor: a.info.vendor, architecture: a.info.architecture, device: a.info.device, description: a.info.description, features: [...a.features].sort() };
  log("Dawn adapter:", JSON.stringify({ ...results.adapter, features: results.adapter.features.length }));
}

// --- ours -------------------------------------------------------------------------------------------
let Sampler;
async function loadOurs() {
  const init = (await import(pathToFileURL(path.join(PKG, "wasm_diffusion.js")).href)).default;
  await init({ module_or_path: fs.readFileSync(path.join(PKG, "wasm_diffusion_bg.wasm")) });
  ({ Sampler } = await import(pathToFileURL(path.join(PKG, "index.js")).href));
}

async function run(s, steps, previewEvery, batch = 1) {
  let last;
  let frames = 0;
  for await (const f of s.sample({ scheduler: "ddim", steps, seed: 1, batch, previewEvery })) {
    last = f;
    frames++;
  }
  return { ms: last.elapsedMs, frames };
}

const samplers = {};
async function sampler(model) {
  if (samplers[model]) return samplers[model];
  const file = NATIVE.models[model].ours_file;
  const t = performance.now();
  const s = await Sampler.load(fs.readFileSync(file), { backend: "webgpu" });
  if (s.backend !== "webgpu") throw new Error(`asked for webgpu, got ${s.backend}`);
  const load = performance.now() - t;
  let first = null;
  for await (const f of s.sample({ scheduler: "ddim", steps: 25, seed: 1, previewEvery: 1 })) {
    first = performance.now() - t;
    break;
  }
  samplers[model] = { s, file, load_ms: r3(load), first_frame_ms: r3(first) };
  log(`ours ${model}: load ${load.toFixed(0)} ms, first frame ${first.toFixed(0)} ms`);
  return samplers[model];
}

async function oursStep(model, batch, s1, s2, reps) {
  const { s } = await sampler(model);
  if (batch !== 1) await run(s, 1, 1, batch); // warm-up at this batch size (shaders for its shapes)
  const diffs = [];
  for (let i = 0; i < reps; i++) {
    const a = (await run(s, s1, s1, batch)).ms;
    const b = (await run(s, s2, s2, batch)).ms;
    diffs.push((b - a) / (s2 - s1));
  }
  return { ms_per_step: median(diffs), samples_ms: diffs.map(r3), method: `(elapsed(${s2} steps) - elapsed(${s1} steps)) / ${s2 - s1}, median of ${reps}, warm sampler` };
}

async function oursPreview(model, steps, pairs) {
  const { s, load_ms, first_frame_ms, file } = await sampler(model);
  const none = [];
  const every = [];
  let frames = 0;
  for (let i = 0; i < pairs; i++) {
    none.push((await run(s, steps, steps)).ms);
    const e = await run(s, steps, 1);
    every.push(e.ms);
    frames = e.frames;
  }
  return {
    impl: "ours-webgpu-node", model, batch: 1, steps, frames_every_step: frames, none_ms: r3(median(none)), every_ms: r3(median(every)),
    overhead: r3(median(every) / median(none) - 1), samples: { none_ms: none.map(r3), every_ms: every.map(r3) },
    file: path.basename(file), load_ms, first_frame_ms,
    method: `whole ${steps}-step run, previewEvery ${steps} vs 1 (read-back + x0 preview + ImageData every step), ${pairs} alternating pairs; first frame = Sampler.load(bytes) to the first frame of a fresh sampler`,
  };
}

// --- onnxruntime-web ---------------------------------------------------------------------------------
let ort;
async function loadOrt() {
  ort = await import(pathToFileURL(path.join(NM, "onnxruntime-web/dist/ort.webgpu.bundle.min.mjs")).href);
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  results.ort_version = ort.env.versions?.web ?? null;
}

async function ortStep(model, batch, timed) {
  const dir = NATIVE.models[model].diffusers_folder.replace(/\/[^/]+$/, "");
  const ref = JSON.parse(fs.readFileSync(path.join(dir, `${model}.b${batch}.ref.json`), "utf8"));
  const t = performance.now();
  const session = await ort.InferenceSession.create(fs.readFileSync(path.join(dir, `${model}.b${batch}.onnx`)), { executionProviders: ["webgpu"], graphOptimizationLevel: "all" });
  const create = performance.now() - t;
  try {
    const shape = ref.shape;
    const n = shape.reduce((a, b) => a * b, 1);
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = Math.fround(Math.sin(0.1 * i));
    const feeds = { sample: new ort.Tensor("float32", x, shape), timestep: new ort.Tensor("int64", BigInt64Array.from([BigInt(ref.timestep)]), [1]) };
    if (session.inputNames.includes("class_labels")) feeds.class_labels = new ort.Tensor("int64", new BigInt64Array(shape[0]), [shape[0]]);
    const w = performance.now();
    const y = (await session.run(feeds)).out.data;
    const warm = performance.now() - w;
    let err = 0;
    for (let i = 0; i < ref.out_first.length; i++) err = Math.max(err, Math.abs(y[i] - ref.out_first[i]));
    // Loud: a peer that computes something else is no peer. The bound allows TF32-like rounding.
    if (!(err < 2e-2)) throw new Error(`onnxruntime-web webgpu ${model} b${batch}: output differs from PyTorch by ${err}`);
    const times = [];
    for (let i = 0; i < timed; i++) {
      const a = performance.now();
      await session.run(feeds);
      times.push(performance.now() - a);
    }
    return { ms_per_step: median(times), samples_ms: times.map(r3), session_create_ms: r3(create), warmup_run_ms: r3(warm), max_abs_err_vs_torch: err, method: `session.run incl. input upload and output read-back, 1 warm-up, median of ${timed}` };
  } finally {
    await session.release();
  }
}

// --- headless Chromium (only if the machine has one: it is too large to carry) ------------------------
async function chromium() {
  const row = { chromium: CHROMIUM || null };
  if (!CHROMIUM) return { ...row, status: "not run", reason: "no Chromium on this machine (none is carried: a Chromium build is far over the 64 MiB a call carries)" };
  let pw;
  try {
    pw = await import(pathToFileURL(path.join(REPO, "node_modules/playwright-core/index.mjs")).href);
  } catch (e) {
    return { ...row, status: "not run", reason: `playwright-core missing: ${e.message}` };
  }
  need(60, "chromium");
  const { startServer } = await import("../pkg-tests/server.mjs");
  const base = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", "--disable-gpu-sandbox", "--enable-unsafe-webgpu"];
  // Dry run: SwiftShader (pkg-tests/chromium.mjs's flags). GPU machine: Vulkan on the hardware adapter.
  const flags = DRY
    ? ["--enable-features=Vulkan", "--use-vulkan=swiftshader", "--use-webgpu-adapter=swiftshader", "--use-angle=swiftshader"]
    : ["--enable-features=Vulkan,VulkanFromANGLE", "--use-angle=vulkan", "--ignore-gpu-blocklist", "--enable-gpu"];
  row.flags = [...base, ...flags];
  const work = path.dirname(NATIVE.models.emoji.ours_file);
  const server = await startServer({ roots: { "/": path.dirname(PKG), "/pkg-tests/": path.join(REPO, "pkg-tests"), "/m/": work } });
  const browser = await pw.chromium.launch({ executablePath: CHROMIUM, headless: true, args: row.flags });
  try {
    row.version = browser.version();
    const p = await browser.newPage();
    p.on("pageerror", (e) => log("chromium pageerror:", e.message));
    await p.goto(`${server.url}/pkg-tests/page.html`);
    await p.waitForFunction(() => window.ready === true, null, { timeout: 60000 });
    row.adapter = await p.evaluate(async () => {
      const a = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
      return a ? { vendor: a.info.vendor, architecture: a.info.architecture, description: a.info.description } : null;
    });
    if (!row.adapter) return { ...row, status: "no adapter" };
    const r = await p.evaluate(async (url) => {
      const s = await wd.Sampler.load(url, { backend: "webgpu" });
      const run = async (n) => {
        let last;
        for await (const f of s.sample({ scheduler: "ddim", steps: n, seed: 1, previewEvery: n })) last = f;
        return last.elapsedMs;
      };
      await run(1);
      const a = await run(1);
      const b = await run(3);
      s.dispose();
      return { a, b };
    }, `/m/${path.basename(NATIVE.models.emoji.ours_file)}`);
    return { ...row, status: "ran", model: "emoji", batch: 1, ms_per_step: r3((r.b - r.a) / 2), method: "(elapsed(3 steps) - elapsed(1 step)) / 2, warm sampler" };
  } finally {
    await browser.close();
    await server.close();
  }
}

// --- the run -----------------------------------------------------------------------------------------
// dawn.node's pending map/work-done promises do not keep Node's event loop alive: without this
// timer Node can decide that nothing is left to do and exit (status 13) in the middle of a run.
const keepAlive = setInterval(() => {}, 1000);
try {
  await setupNodeWebGPU();
  await loadOurs();
  await loadOrt();
  const plan = DRY
    ? { steps: [1, 2, 1], ortTimed: 2, preview: { steps: 3, pairs: 1 } }
    : { steps: [2, 12, 2], ortTimed: 10, preview: { steps: 25, pairs: 2 } };
  for (const model of ["emoji", "cifar10"]) {
    if (!NATIVE.models[model]) {
      results.errors.push({ case: model, error: "not in the native half's models (it failed or was skipped there)" });
      continue;
    }
    // Dry run: cifar10 at batch 1 only (onnxruntime-web's session alone takes minutes on SwiftShader).
    for (const batch of DRY && model === "cifar10" ? [1] : NATIVE.models[model].batches) {
      const c = { model, batch, file: path.basename(NATIVE.models[model].ours_file) };
      results.cases.push(c);
      log(`case ${model} b${batch}`);
      const big = batch > 8 ? 2 : 1;
      const [s1, s2, reps] = batch > 8 && !DRY ? [1, 5, 1] : plan.steps;
      c.ours_webgpu_node = await guard(`${model} b${batch} ours`, () => (need(15 * big, `${model} b${batch} ours`), oursStep(model, batch, s1, s2, reps)));
      c.ort_webgpu_node = await guard(`${model} b${batch} ort`, () => (need(15 * big, `${model} b${batch} ort`), ortStep(model, batch, plan.ortTimed)));
      if (c.ours_webgpu_node && c.ort_webgpu_node) c.ratio_ours_vs_ort = r3(c.ours_webgpu_node.ms_per_step / c.ort_webgpu_node.ms_per_step);
      log("  ", JSON.stringify({ ours: c.ours_webgpu_node?.ms_per_step, ort: c.ort_webgpu_node?.ms_per_step, ratio: c.ratio_ours_vs_ort }));
    }
    const pv = await guard(`${model} preview`, () => (need(20, `${model} preview`), oursPreview(model, plan.preview.steps, plan.preview.pairs)));
    if (pv) results.preview.push(pv);
    samplers[model]?.s.dispose();
  }
  results.sd_turbo = {
    status: "not run",
    reason: "our package dequantizes a pipeline's weights to f32 at load (4.8 GiB for SD-Turbo, BENCHMARKS.md's scale section), and onnxruntime-web would hold the 3.5 GB f32 ONNX: both beyond a wasm32 heap (4 GiB)",
  };
  results.chromium = await guard("chromium", chromium);
} catch (e) {
  log("ERROR setup:", e && e.stack ? e.stack : e);
  results.errors.push({ case: "setup", error: `${e && e.name}: ${e && e.message}` });
} finally {
  clearInterval(keepAlive);
  write();
}
process.exit(results.errors.length ? 1 : 0);
