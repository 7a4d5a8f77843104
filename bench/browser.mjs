// Browser benchmark (issue 5): our package (pkg/) against onnxruntime-web, in ONE headless
// Chromium session with WebGPU on SwiftShader (flags: pkg-tests/chromium.mjs).
//
//   node bench/browser.mjs [--models DIR] [--out FILE] [--slow]
//
// DIR (default ~/.cache/wasm-diffusion/bench) holds the files of bench/make_models.py and
// bench/export_onnx.py. --slow adds the 35.7M-parameter model on WebGPU (minutes per U-Net call on
// SwiftShader) for both us and onnxruntime-web.
//
// What "one step" means here: one U-Net call (DDIM, no guidance, batch 1 unless said).
//  - ours: Sampler.sample with previewEvery = steps (only the final frame is read back). A warm-up
//    run first (WebGPU: shader compilation), then runs of S1 and S2 steps; per step =
//    (elapsedMs(S2) - elapsedMs(S1)) / (S2 - S1), which takes out the run's fixed costs (start,
//    final read-back, ImageData) the same way the native driver does.
//  - onnxruntime-web: session.run() on [B,3,32,32] + timestep (+ class labels), one warm-up call,
//    median of the timed calls; each call includes uploading the inputs and reading the output
//    back (3x32x32 floats per image).
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { startServer } from "../pkg-tests/server.mjs";
import { launch, WEBGPU_ARGS, NO_LIFTOFF_ARGS } from "../pkg-tests/chromium.mjs";
import { REPO, ORT_DIST, MODELS, argv, arg, median } from "./common.mjs";

const OUT = arg("--out", null);
const SLOW = argv.includes("--slow");
const QUANTS = ["f32", "f16", "int8", "int4"];

const log = (...a) => console.error(...a);
const r1 = (x) => Math.round(x * 10) / 10;

for (const f of ["pkg/index.js", "pkg/wasm_diffusion_bg.wasm"]) {
  if (!fs.existsSync(path.join(REPO, f))) throw new Error(`${f} missing: run bash scripts/build.sh first`);
}
if (!fs.existsSync(ORT_DIST)) throw new Error(`${ORT_DIST} missing: run npm install in bench/`);
for (const f of ["emoji.f32.safetensors", "cifar10.f32.safetensors", "emoji.b1.onnx"]) {
  if (!fs.existsSync(path.join(MODELS, f))) throw new Error(`${MODELS}/${f} missing: run bench/make_models.py and bench/export_onnx.py`);
}

const results = { started: new Date().toISOString(), slow: SLOW };

// --- sizes (no browser needed) ---------------------------------------------------------------
{
  const wasm = fs.readFileSync(path.join(REPO, "pkg/wasm_diffusion_bg.wasm"));
  const js = ["index.js", "wasm_diffusion.js", "worker.js", "worker-client.js"].reduce((n, f) => n + fs.statSync(path.join(REPO, "pkg", f)).size, 0);
  results.wasm = { raw_bytes: wasm.length, gzip9_bytes: zlib.gzipSync(wasm, { level: 9 }).length, js_bytes: js };
  const ortWasm = fs.readFileSync(path.join(ORT_DIST, "ort-wasm-simd-threaded.wasm"));
  const ortJsep = fs.readFileSync(path.join(ORT_DIST, "ort-wasm-simd-threaded.jsep.wasm"));
  results.ort_wasm = {
    "ort-wasm-simd-threaded.wasm": { raw_bytes: ortWasm.length, gzip9_bytes: zlib.gzipSync(ortWasm, { level: 9 }).length },
    "ort-wasm-simd-threaded.jsep.wasm": { raw_bytes: ortJsep.length, gzip9_bytes: zlib.gzipSync(ortJsep, { level: 9 }).length },
  };
  results.model_bytes = {};
  for (const m of ["emoji", "cifar10"]) {
    results.model_bytes[m] = {};
    for (const q of QUANTS) results.model_bytes[m][q] = fs.statSync(path.join(MODELS, `${m}.${q}.safetensors`)).size;
    results.model_bytes[m].onnx_f32 = fs.statSync(path.join(MODELS, `${m}.b1.onnx`)).size;
  }
  log("sizes:", JSON.stringify(results.wasm));
}

const server = await startServer({ roots: { "/": REPO, "/m/": MODELS, "/ort/": ORT_DIST } });
let browser = await launch(WEBGPU_ARGS);
// Set for the second pass (see the end): V8 flags of the browser in use, recorded on each row.
let jsFlags = null;
async function newPage() {
  const p = await browser.newPage();
  p.on("pageerror", (e) => log("pageerror:", e.message));
  p.on("console", (m) => {
    if (m.type() === "error" && !/favicon|status of 404/.test(m.text()) && !/VerifyEachNodeIsAssignedToAnEp/.test(m.text())) log("console:", m.text());
  });
  await p.goto(`${server.url}/pkg-tests/page.html`);
  await p.waitForFunction(() => window.ready === true);
  return p;
}

try {
  {
    const p = await newPage();
    results.adapter = await p.evaluate(async () => {
      const a = await navigator.gpu?.requestAdapter();
      return a ? { vendor: a.info.vendor, architecture: a.info.architecture, description: a.info.description } : null;
    });
    await p.close();
  }
  results.user_agent = await browser.version();
  log("adapter:", JSON.stringify(results.adapter), "chromium", results.user_agent);

  // --- bytes fetched per quantization level (what Sampler.load reports and the server sent) --------
  {
    const p = await newPage();
    results.fetched_bytes = {};
    for (const q of QUANTS) {
      const before = server.log.length;
      results.fetched_bytes[`emoji.${q}`] = await p.evaluate(async (url) => {
        let last = null;
        const s = await wd.Sampler.load(url, { backend: "cpu", onProgress: (e) => (last = e) });
        s.dispose();
        return last.loaded;
      }, `/m/emoji.${q}.safetensors`);
      const requests = server.log.slice(before).filter((u) => u.startsWith("/m/"));
      if (requests.length !== 1) throw new Error(`expected one model request, found ${requests.join(", ")}`);
    }
    await p.close();
    log("fetched:", JSON.stringify(results.fetched_bytes));
  }

  // --- ours: time to first frame, U-Net step, preview overhead ----------------------------------
  // One fresh page per model and backend, so the first frame includes compiling and instantiating
  // the wasm module (and, on WebGPU, compiling the shaders). The int8 file is loaded (the weights
  // are dequantized to f32 tensors at load, so the step itself is the f32 computation ONNX does).
  // The same sampler, warm after its first frame, then runs the step and preview measurements.
  // The wasm module alone: fetch + compile + instantiate in a fresh page (seededNoise is the
  // cheapest call that needs it).
  {
    const p = await newPage();
    results.wasm.instantiate_ms = r1(await p.evaluate(async () => {
      const t0 = performance.now();
      await wd.seededNoise(1, 1, 1);
      return performance.now() - t0;
    }));
    await p.close();
    log("wasm instantiate:", results.wasm.instantiate_ms, "ms");
  }
  results.first_frame = [];
  results.steps = [];
  results.preview = [];
  async function ours({ model, backend, steps = [], preview = null, gpuPlan = null }) {
    const p = await newPage();
    const r = await p.evaluate(async ({ url, backend, steps, preview, gpuPlan }) => {
      const t0 = performance.now();
      const s = await wd.Sampler.load(url, { backend });
      const load = performance.now() - t0;
      let first = null;
      for await (const f of s.sample({ scheduler: "ddim", steps: 50, seed: 1, previewEvery: 1 })) {
        first = performance.now() - t0;
        break;
      }
      const run = async (n, previewEvery, batch = 1) => {
        let last;
        let frames = 0;
        for await (const f of s.sample({ scheduler: "ddim", steps: n, seed: 1, batch, previewEvery })) {
          last = f;
          frames++;
        }
        return { ms: last.elapsedMs, frames };
      };
      const out = { load, first, backendUsed: s.backend, steps: [], preview: null, gpu: null };
      for (const { batch, s1, s2, reps } of steps) {
        if (batch !== 1) await run(1, 1, batch); // warm-up at this batch size
        const diffs = [];
        for (let i = 0; i < reps; i++) {
          const a = (await run(s1, s1, batch)).ms;
          const b = (await run(s2, s2, batch)).ms;
          diffs.push((b - a) / (s2 - s1));
        }
        out.steps.push({ batch, s1, s2, reps, diffs });
      }
      if (preview) {
        // previewEvery = steps (final frame only) against 1 (a read-back, x0 preview and ImageData
        // every step), alternating so both see the same load from other work.
        const none = [];
        const every = [];
        let frames = 0;
        for (let i = 0; i < preview.reps; i++) {
          none.push((await run(preview.steps, preview.steps)).ms);
          const e = await run(preview.steps, 1);
          every.push(e.ms);
          frames = e.frames;
        }
        out.preview = { none, every, frames };
      }
      if (gpuPlan) {
        // Few steps on SwiftShader: A = 1 step, B = 3 steps (final frame only), C = 3 steps with a
        // frame every step. Step = (B - A) / 2; preview overhead = C / B - 1.
        const A = (await run(1, 1)).ms;
        const B = (await run(3, 3)).ms;
        const C = await run(3, 1);
        out.gpu = { A, B, C: C.ms, frames: C.frames };
      }
      s.dispose();
      return out;
    }, { url: `/m/${model}.int8.safetensors`, backend, steps, preview, gpuPlan });
    await p.close();
    if (r.backendUsed !== backend) throw new Error(`asked for ${backend}, got ${r.backendUsed}`);
    const ff = { model, backend, file: `${model}.int8.safetensors`, load_ms: r1(r.load), first_frame_ms: r1(r.first), first_step_ms: r1(r.first - r.load) };
    if (!jsFlags) results.first_frame.push(ff);
    log("first frame:", JSON.stringify(ff));
    for (const st of r.steps) {
      const row = {
        impl: `ours-${backend}`, model, batch: st.batch, js_flags: jsFlags, ms_per_step: r1(median(st.diffs)), samples_ms: st.diffs.map(r1),
        method: `(elapsed(${st.s2} steps) - elapsed(${st.s1} steps)) / ${st.s2 - st.s1}, median of ${st.reps}, warm sampler`,
      };
      results.steps.push(row);
      log("step:", JSON.stringify(row));
    }
    const previewRow = (none, every, frames, steps, method) => {
      const row = {
        backend, model, batch: 1, steps, frames_every_step: frames, none_ms: r1(median(none)), every_ms: r1(median(every)),
        overhead: Math.round((median(every) / median(none) - 1) * 1000) / 1000,
        overhead_of_fastest: Math.round((Math.min(...every) / Math.min(...none) - 1) * 1000) / 1000,
        samples: { none: none.map(r1), every: every.map(r1) }, method,
      };
      results.preview.push(row);
      log("preview:", JSON.stringify(row));
    };
    if (r.preview) {
      previewRow(r.preview.none, r.preview.every, r.preview.frames, preview.steps,
        `whole ${preview.steps}-step run, previewEvery ${preview.steps} vs 1, ${preview.reps} alternating pairs; overhead = median(every) / median(none) - 1`);
    }
    if (r.gpu) {
      const { A, B, C, frames } = r.gpu;
      const row = { impl: `ours-${backend}`, model, batch: 1, js_flags: jsFlags, ms_per_step: r1((B - A) / 2), samples_ms: [r1((B - A) / 2)], method: "(elapsed(3 steps) - elapsed(1 step)) / 2, one run each, warm sampler" };
      results.steps.push(row);
      log("step:", JSON.stringify(row));
      previewRow([B], [C], frames, 3, "whole 3-step run, previewEvery 3 vs 1, one run each");
    }
  }
  await ours({ model: "emoji", backend: "cpu", steps: [{ batch: 1, s1: 2, s2: 10, reps: 3 }, { batch: 8, s1: 1, s2: 3, reps: 1 }], preview: { steps: 10, reps: 5 } });
  await ours({ model: "cifar10", backend: "cpu", steps: [{ batch: 1, s1: 1, s2: 3, reps: 1 }] });

  // --- onnxruntime-web (the wasm EP right after our CPU runs, so both see similar load) -----------
  async function ort(bundle, ep, cases) {
    const p = await newPage();
    const rows = [];
    for (const c of cases) {
      const ref = JSON.parse(fs.readFileSync(path.join(MODELS, `${c.model}.b${c.batch}.ref.json`), "utf8"));
      const r = await p.evaluate(async ({ bundle, ep, url, ref, timed }) => {
        const ort = await import(bundle);
        ort.env.wasm.wasmPaths = "/ort/";
        ort.env.wasm.numThreads = 1;
        ort.env.wasm.proxy = false;
        const t0 = performance.now();
        const session = await ort.InferenceSession.create(url, { executionProviders: [ep], graphOptimizationLevel: "all" });
        const create = performance.now() - t0;
        const shape = ref.shape;
        const n = shape.reduce((a, b) => a * b, 1);
        const x = new Float32Array(n);
        for (let i = 0; i < n; i++) x[i] = Math.fround(Math.sin(0.1 * i));
        const feeds = { sample: new ort.Tensor("float32", x, shape), timestep: new ort.Tensor("int64", BigInt64Array.from([BigInt(ref.timestep)]), [1]) };
        if (session.inputNames.includes("class_labels")) feeds.class_labels = new ort.Tensor("int64", new BigInt64Array(shape[0]), [shape[0]]);
        const w0 = performance.now();
        const out = await session.run(feeds);
        const warm = performance.now() - w0;
        const y = out.out.data;
        let err = 0;
        for (let i = 0; i < ref.out_first.length; i++) err = Math.max(err, Math.abs(y[i] - ref.out_first[i]));
        const times = [];
        for (let i = 0; i < timed; i++) {
          const a = performance.now();
          await session.run(feeds);
          times.push(performance.now() - a);
        }
        await session.release();
        return { create, warm, times, err, version: ort.env.versions?.web ?? null };
      }, { bundle: `/ort/${bundle}`, ep, url: `/m/${c.model}.b${c.batch}.onnx`, ref, timed: c.timed });
      if (!(r.err < 1e-3)) throw new Error(`onnxruntime-web ${ep} ${c.model}: output differs from PyTorch by ${r.err}`);
      const row = {
        impl: `ort-${ep}`, model: c.model, batch: c.batch, js_flags: jsFlags, ms_per_step: r1(median(r.times)), samples_ms: r.times.map(r1),
        session_create_ms: r1(r.create), warmup_run_ms: r1(r.warm), max_abs_err_vs_torch: r.err, version: r.version,
        method: `session.run incl. input upload and output read-back, 1 warm-up, median of ${c.timed}` + (ep === "wasm" ? ", numThreads 1" : ""),
      };
      log("ort:", JSON.stringify(row));
      rows.push(row);
    }
    await p.close();
    return rows;
  }
  results.steps.push(...(await ort("ort.wasm.min.mjs", "wasm", [
    { model: "emoji", batch: 1, timed: 8 },
    { model: "emoji", batch: 8, timed: 2 },
    { model: "cifar10", batch: 1, timed: 2 },
  ])));

  // WebGPU last: our run, then onnxruntime-web's, back to back.
  await ours({ model: "emoji", backend: "webgpu", gpuPlan: true });
  if (SLOW) await ours({ model: "cifar10", backend: "webgpu", steps: [{ batch: 1, s1: 1, s2: 2, reps: 1 }] });
  results.steps.push(...(await ort("ort.webgpu.min.mjs", "webgpu", [
    { model: "emoji", batch: 1, timed: 2 },
    ...(SLOW ? [{ model: "cifar10", batch: 1, timed: 1 }] : []),
  ])));

  // Second pass, CPU only: V8 first runs wasm on its baseline compiler (Liftoff) and tiers hot
  // functions up to TurboFan in the background, which on this loaded 2-core machine can take many
  // calls (onnxruntime-web was seen still speeding up after 12). With --no-liftoff every function
  // is optimized before it first runs, so this pass measures steady-state code for both.
  await browser.close();
  jsFlags = "--no-liftoff";
  browser = await launch([...WEBGPU_ARGS, ...NO_LIFTOFF_ARGS]);
  await ours({ model: "emoji", backend: "cpu", steps: [{ batch: 1, s1: 2, s2: 10, reps: 3 }] });
  await ours({ model: "cifar10", backend: "cpu", steps: [{ batch: 1, s1: 1, s2: 3, reps: 1 }] });
  results.steps.push(...(await ort("ort.wasm.min.mjs", "wasm", [
    { model: "emoji", batch: 1, timed: 8 },
    { model: "cifar10", batch: 1, timed: 2 },
  ])));
} finally {
  await browser.close();
  await server.close();
}

results.finished = new Date().toISOString();
const text = JSON.stringify(results, null, 1);
if (OUT) fs.writeFileSync(OUT, text);
else console.log(text);
