// Latent text-to-image in the browser: our Sampler against onnxruntime-web on the same pipeline
// exported to ONNX (issue 13, item 6). One headless Chromium session per backend:
//
//   cpu     Chromium without a GPU (pkg-tests/chromium.mjs NO_GPU_ARGS): our CPU backend (wasm,
//           one thread, the main thread of the page) against onnxruntime-web's wasm provider with
//           numThreads 1 (no cross-origin isolation either, so no threads are possible).
//   webgpu  WebGPU on SwiftShader (WEBGPU_ARGS): our WebGPU backend against onnxruntime-web's
//           webgpu provider.
//
//   node bench/latent_browser.mjs [--dir DIR] [--out FILE] [--backends cpu,webgpu] [--models tiny,mid]
//                                 [--plan JSON]
//
// DIR (default ~/.cache/wasm-diffusion/latent-bench) holds NAME.{f32,f16,int8,int4}.safetensors
// (wasm-diffusion convert) and NAME.{text_encoder,unet,vae_decoder}.onnx + NAME.ref.json
// (bench/export_latent_onnx.py). Results go to FILE (default bench/latent-results.json); the
// table is printed (markdown) at the end.
//
// Per backend and model, two pages side by side (ours, onnxruntime-web):
//  1. ours, fresh page: time to first frame with the int8 file (wasm instantiate + fetch + parse
//     + dequantize, then tokenize, encode, one step and its preview); then the f32 file (the
//     step is the same f32 computation whichever file is loaded; f32 so the check compares
//     like with like).
//  2. onnxruntime-web: three sessions, each run once on bench/export_latent_onnx.py's reference
//     input and checked against PyTorch.
//  3. Timesteps (plans with `timesteps`, tiny): a run with previews every step gives ours' DDIM
//     timesteps, which must equal the JS loop's.
//  4. Warm-up (V8 tiers wasm up from Liftoff to TurboFan in the background): whole runs on each
//     side until `warmMs` has passed (none when it is 0).
//  5. Rounds, ours and onnxruntime-web alternating so both see the same load from other work:
//     ours runs s1 and s2 steps (previews off: only the final image) and N steps if N is neither;
//     per step = (wall(s2) - wall(s1)) / (s2 - s1); whole image = wall(N), from sample() to the
//     final frame (tokenize + text encoder + N guided steps + VAE decode + RGBA).
//     onnxruntime-web runs N steps: per step = each loop iteration (batch-2 U-Net call with input
//     upload and output read-back, guidance, DDIM step); whole image = the whole run.
//     Every run starts from the same latents with the same prompt ids (our tokenizer's), so the
//     first round's two N-step images are the check: they must agree within 8 levels of 255.
//  A model's `timeoutS` stops it (the browser is restarted) and keeps what it measured so far.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execSync } from "node:child_process";
import { startServer } from "../pkg-tests/server.mjs";
import { launch, WEBGPU_ARGS, NO_GPU_ARGS } from "../pkg-tests/chromium.mjs";
import { REPO, CACHE, ORT_DIST, arg, median } from "./common.mjs";

const DIR = path.resolve(arg("--dir", path.join(CACHE, "latent-bench")));
const OUT = arg("--out", path.join(REPO, "bench/latent-results.json"));
const BACKENDS = arg("--backends", "cpu,webgpu").split(",");
const NAMES = arg("--models", "tiny,mid").split(",");
const QUANTS = ["f32", "f16", "int8", "int4"];
const PROMPT = "a red apple on a wooden table";
const NEGATIVE = "blurry";
const GUIDANCE = 7.5;
// N steps per whole image, s1/s2 for ours' per-step difference, rounds, warm-up. Sized from one
// measured call each on the 2-core host (BENCHMARKS.md); --plan '{"webgpu/mid": {...}}' overrides.
const PLAN = {
  "cpu/tiny": { N: 4, s1: 2, s2: 32, rounds: 20, warmMs: 4000, timesteps: true, timeoutS: 300 },
  "cpu/mid": { N: 2, s1: 1, s2: 2, rounds: 2, warmMs: 0, timeoutS: 900 },
  "webgpu/tiny": { N: 4, s1: 1, s2: 8, rounds: 3, warmMs: 0, timesteps: true, timeoutS: 600 },
  "webgpu/mid": { N: 1, s1: 1, s2: 2, rounds: 1, warmMs: 0, timeoutS: 480 },
  ...JSON.parse(arg("--plan", "{}")),
};

const log = (...a) => console.error(new Date().toISOString().slice(11, 19), ...a);
const r1 = (x) => Math.round(x * 10) / 10;

for (const n of NAMES) {
  for (const f of [...QUANTS.map((q) => `${n}.${q}.safetensors`), `${n}.unet.onnx`, `${n}.ref.json`]) {
    if (!fs.existsSync(path.join(DIR, f))) throw new Error(`${DIR}/${f} missing: see BENCHMARKS.md (make_scale_pipelines.py, wasm-diffusion convert, bench/export_latent_onnx.py)`);
  }
}
if (!fs.existsSync(path.join(REPO, "pkg/index.js"))) throw new Error("pkg/ missing: run bash scripts/build.sh");
if (!fs.existsSync(ORT_DIST)) throw new Error(`${ORT_DIST} missing: run npm install in bench/`);

/** Standard-normal values from a seeded xorshift + Box-Muller (the same initial latents for both). */
function gaussian(seed, n) {
  let s = seed >>> 0 || 1;
  const u = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) + 0.5) / 4294967296;
  };
  const out = new Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u()));
    const a = 2 * Math.PI * u();
    out[i] = Math.fround(r * Math.cos(a));
    if (i + 1 < n) out[i + 1] = Math.fround(r * Math.sin(a));
  }
  return out;
}

const results = {
  started: new Date().toISOString(),
  host: {
    cpu: execSync("lscpu | sed -n 's/^Model name: *//p'").toString().trim(),
    cpus: os.cpus().length,
    memory_gib: r1(os.totalmem() / 2 ** 30),
    loadavg_at_start: os.loadavg().map(r1),
  },
  prompt: PROMPT,
  negative_prompt: NEGATIVE,
  guidance_scale: GUIDANCE,
  plan: PLAN,
  models: {},
  bytes: {},
  runs: [],
};

// --- bytes (no browser needed): what each option makes a page fetch ---------------------------
for (const n of NAMES) {
  const ref = JSON.parse(fs.readFileSync(path.join(DIR, `${n}.ref.json`), "utf8"));
  results.models[n] = { latent: ref.latent, image: [ref.latent[1] * ref.vae_scale_factor, ref.latent[2] * ref.vae_scale_factor], parameters: ref.parameters };
  const b = {};
  for (const q of QUANTS) b[`ours_${q}`] = fs.statSync(path.join(DIR, `${n}.${q}.safetensors`)).size;
  for (const p of ["text_encoder", "unet", "vae_decoder"]) b[`onnx_${p}`] = fs.statSync(path.join(DIR, `${n}.${p}.onnx`)).size;
  b.onnx_f32 = b.onnx_text_encoder + b.onnx_unet + b.onnx_vae_decoder;
  results.bytes[n] = b;
}
log("bytes:", JSON.stringify(results.bytes));

const server = await startServer({ roots: { "/": REPO, "/m/": DIR, "/ort/": ORT_DIST } });
let browser = null;
async function newPage() {
  const p = await browser.newPage();
  p.on("pageerror", (e) => log("pageerror:", e.message));
  p.on("console", (m) => {
    if (m.type() === "error" && !/favicon|status of 404|VerifyEachNodeIsAssignedToAnEp/.test(m.text())) log("console:", m.text());
  });
  await p.goto(`${server.url}/pkg-tests/page.html`);
  await p.waitForFunction(() => window.ready === true);
  await p.evaluate(async () => {
    window.lb = await import("/bench/latent_page.mjs");
  });
  return p;
}

/** Bytes our loader reports having fetched (onProgress), one request per file: the tiny files. */
async function fetchedBytes(page, name) {
  const out = {};
  for (const q of QUANTS) {
    const before = server.log.length;
    out[q] = await page.evaluate(async (url) => {
      let last = null;
      const s = await wd.Sampler.load(url, { backend: "cpu", onProgress: (e) => (last = e) });
      s.dispose();
      return last.loaded;
    }, `/m/${name}.${q}.safetensors`);
    const requests = server.log.slice(before).filter((u) => u.startsWith("/m/"));
    if (requests.length !== 1) throw new Error(`expected one request for ${name}.${q}, found ${requests.join(", ")}`);
  }
  return out;
}

/** Fills `row` (already in the results, so a run cut short by its time limit keeps what it got). */
async function bench(backend, name, row) {
  const { plan } = row;
  const ref = JSON.parse(fs.readFileSync(path.join(DIR, `${name}.ref.json`), "utf8"));
  const [c, h, w] = ref.latent;
  const options = { prompt: PROMPT, negativePrompt: NEGATIVE, guidanceScale: GUIDANCE, scheduler: "ddim", seed: 1 };
  const ep = backend === "cpu" ? "wasm" : "webgpu";
  const bundle = backend === "cpu" ? "/ort/ort.wasm.min.mjs" : "/ort/ort.webgpu.min.mjs";

  // 1. Ours: time to first frame (int8, fresh page), then the f32 file.
  const po = await newPage();
  const ff = await po.evaluate(({ url, backend, options }) => lb.oursFirstFrame(url, backend, options), {
    url: `/m/${name}.int8.safetensors`, backend, options: { ...options, steps: plan.N },
  });
  if (ff.backend !== backend) throw new Error(`asked for ${backend}, got ${ff.backend}`);
  row.first_frame = { file: `${name}.int8.safetensors`, load_ms: r1(ff.loadMs), first_frame_ms: r1(ff.firstFrameMs), steps: plan.N };
  log(backend, name, "first frame:", JSON.stringify(row.first_frame));
  const lf = await po.evaluate(({ url, backend }) => lb.oursLoad(url, backend), { url: `/m/${name}.f32.safetensors`, backend });
  row.ours_load_f32_ms = r1(lf.loadMs);
  const ids = await po.evaluate(({ p, n }) => lb.oursTokenize(p, n), { p: PROMPT, n: NEGATIVE });

  // 2. onnxruntime-web: sessions and the check against PyTorch.
  const pr = await newPage();
  const open = await pr.evaluate((a) => lb.ortOpen(a), { bundle, ep, base: `/m/${name}`, reference: ref });
  row.ort = { version: open.version, ep, session_create_ms: Object.fromEntries(Object.entries(open.create).map(([k, v]) => [k, r1(v)])),
    first_run_ms: Object.fromEntries(Object.entries(open.first).map(([k, v]) => [k, r1(v)])), max_abs_err_vs_torch: open.err };
  log(backend, name, "ort:", JSON.stringify(row.ort));
  const tol = ep === "wasm" ? 1e-3 : 5e-3;
  for (const [k, e] of Object.entries(open.err)) {
    if (!(e <= tol * Math.max(1, ref[k].abs_mean))) throw new Error(`onnxruntime-web ${ep} ${name} ${k}: differs from PyTorch by ${e}`);
  }

  // 3. Timesteps (tiny only: previews every step): ours must run the DDIM steps the JS loop runs.
  const noise = gaussian(12345, c * h * w);
  if (plan.timesteps) {
    const oc = await po.evaluate(({ options, noise }) => lb.oursRun(options, { check: true, initNoise: noise }), { options: { ...options, steps: plan.N }, noise });
    const want = await pr.evaluate(({ s, n }) => lb.ddimTimesteps(s, n), { s: ref.scheduler, n: plan.N });
    if (JSON.stringify(oc.timesteps) !== JSON.stringify(want)) throw new Error(`timesteps differ: ours ${oc.timesteps}, onnx loop ${want}`);
    row.timesteps = want;
  }

  // 4. Warm-up.
  const oursRun = (steps, check = false) => po.evaluate(({ options, noise, check }) => lb.oursRun(options, { initNoise: noise, pixels: check }), { options: { ...options, steps }, noise, check });
  const ortRun = (check = false) => pr.evaluate((a) => lb.ortRun(a), { pos: ids.pos, neg: ids.neg, noise, steps: plan.N, guidanceScale: GUIDANCE, check });
  for (const f of [() => oursRun(plan.N), () => ortRun()]) {
    const t0 = Date.now();
    while (Date.now() - t0 < plan.warmMs) await f();
  }

  // 5. Rounds; round 1's whole runs are also the check (same latents, prompt ids and steps on
  //    both sides: the final images must agree).
  const ours = { step: [], whole: [], elapsed_whole: [] };
  const ort = { step: [], unet: [], whole: [], text: [], decode: [] };
  row.ours = ours;
  row.ort.rounds = ort;
  for (let r = 0; r < plan.rounds; r++) {
    const first = r === 0;
    const a = await oursRun(plan.s1, first && plan.N === plan.s1);
    const b = await oursRun(plan.s2, first && plan.N === plan.s2);
    ours.step.push((b.wallMs - a.wallMs) / (plan.s2 - plan.s1));
    const wh = plan.N === plan.s2 ? b : plan.N === plan.s1 ? a : await oursRun(plan.N, first);
    ours.whole.push(wh.wallMs);
    ours.elapsed_whole.push(wh.elapsedMs);
    const o = await ortRun(first);
    ort.step.push(...o.stepMs);
    ort.unet.push(...o.unetMs);
    ort.whole.push(o.totalMs);
    ort.text.push(o.textMs);
    ort.decode.push(o.decodeMs);
    log(backend, name, `round ${r + 1}/${plan.rounds}: ours step ${r1(ours.step.at(-1))} whole ${r1(wh.wallMs)}; ort step ${r1(median(o.stepMs))} whole ${r1(o.totalMs)}`);
    if (first) {
      let maxd = 0;
      let sum = 0;
      for (let i = 0; i < wh.pixels.length; i++) {
        const dd = Math.abs(wh.pixels[i] - o.pixels[i]);
        maxd = Math.max(maxd, dd);
        sum += dd;
      }
      row.check = { max_abs_pixel_diff: maxd, mean_abs_pixel_diff: sum / wh.pixels.length, pixels: wh.pixels.length };
      log(backend, name, "check:", JSON.stringify(row.check));
      if (maxd > 8) throw new Error(`final images differ by up to ${maxd} levels`);
    }
  }
  await po.evaluate(() => lb.oursDispose());
  await pr.evaluate(() => lb.ortClose());
  await po.close();
  await pr.close();
  const m = (xs) => r1(median(xs));
  delete row.ort.rounds;
  row.ours = { ms_per_step: m(ours.step), whole_ms: m(ours.whole), samples: { step: ours.step.map(r1), whole: ours.whole.map(r1) } };
  row.ort.ms_per_step = m(ort.step);
  row.ort.unet_call_ms = m(ort.unet);
  row.ort.whole_ms = m(ort.whole);
  row.ort.text_ms = m(ort.text);
  row.ort.decode_ms = m(ort.decode);
  row.ort.samples = { step: ort.step.map(r1), whole: ort.whole.map(r1) };
  const r3 = (x) => Math.round(x * 1000) / 1000;
  // Also the median of each round's own whole-image ratio: the host's load moves between rounds
  // more than within one, so this one is steadier on a busy host.
  row.ratio = {
    step: r3(median(ours.step) / median(ort.step)),
    whole: r3(median(ours.whole) / median(ort.whole)),
    whole_per_round: ours.whole.map((x, i) => r3(x / ort.whole[i])),
  };
  log(backend, name, "result:", JSON.stringify({ ours: row.ours.ms_per_step, ort: row.ort.ms_per_step, ratio: row.ratio }));
}

const t0 = Date.now();
try {
  for (const backend of BACKENDS) {
    browser = await launch(backend === "cpu" ? NO_GPU_ARGS : WEBGPU_ARGS);
    const info = { backend, chromium: browser.version() };
    const p = await newPage();
    info.adapter = await p.evaluate(async () => {
      const a = await navigator.gpu?.requestAdapter();
      return a ? { vendor: a.info.vendor, architecture: a.info.architecture } : null;
    });
    if (backend === "cpu" && NAMES.includes("tiny")) results.fetched_bytes = { tiny: await fetchedBytes(p, "tiny") };
    await p.close();
    log("browser:", JSON.stringify(info));
    (results.browsers ??= []).push(info);
    for (const name of NAMES) {
      const plan = PLAN[`${backend}/${name}`];
      const row = { backend, model: name, plan };
      results.runs.push(row);
      let timer;
      const limit = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not finished within its limit of ${plan.timeoutS} s`)), (plan.timeoutS ?? 3600) * 1000);
      });
      try {
        await Promise.race([bench(backend, name, row), limit]);
      } catch (e) {
        log(backend, name, "FAILED:", e.message);
        row.error = e.message;
        // Whatever is still running in the pages stops with the browser.
        await browser.close();
        browser = await launch(backend === "cpu" ? NO_GPU_ARGS : WEBGPU_ARGS);
      } finally {
        clearTimeout(timer);
      }
      fs.writeFileSync(OUT, JSON.stringify(results, null, 1));
    }
    await browser.close();
    browser = null;
  }
} finally {
  await browser?.close();
  await server.close();
}
results.finished = new Date().toISOString();
results.wall_s = Math.round((Date.now() - t0) / 1000);
results.host.loadavg_at_end = os.loadavg().map(r1);
fs.writeFileSync(OUT, JSON.stringify(results, null, 1));

// --- the table ---------------------------------------------------------------------------------
const fmt = (x) => (x == null ? "-" : x >= 100 ? Math.round(x).toLocaleString("en-US") : String(r1(x)));
const lines = [
  "| backend | model | ours ms/step | ORT ms/step | ratio | ours whole image (ms) | ORT whole image (ms) | ratio | ours first frame (load) | samples (ours/ORT steps) | check: max pixel diff |",
  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
];
for (const r of results.runs) {
  if (r.error) {
    const ff = r.first_frame ? `${fmt(r.first_frame.first_frame_ms)} (${fmt(r.first_frame.load_ms)})` : "-";
    lines.push(`| ${r.backend} | ${r.model} | not measured: ${r.error} | | | | | | ${ff} | | |`);
    continue;
  }
  lines.push(`| ${r.backend} | ${r.model} | ${fmt(r.ours.ms_per_step)} | ${fmt(r.ort.ms_per_step)} | ${r.ratio.step.toFixed(2)}x | ${fmt(r.ours.whole_ms)} (N=${r.plan.N}) | ${fmt(r.ort.whole_ms)} | ${r.ratio.whole.toFixed(2)}x | ${fmt(r.first_frame.first_frame_ms)} (${fmt(r.first_frame.load_ms)}) | ${r.ours.samples.step.length}/${r.ort.samples.step.length} | ${r.check.max_abs_pixel_diff} |`);
}
lines.push("", "| model | ours f32 | f16 | int8 | int4 | ONNX f32 (text encoder + U-Net + VAE decoder) |", "| --- | ---: | ---: | ---: | ---: | ---: |");
const mb = (x) => (x / 1e6).toFixed(x < 1e7 ? 2 : 1);
for (const [n, b] of Object.entries(results.bytes)) {
  lines.push(`| ${n} | ${mb(b.ours_f32)} MB | ${mb(b.ours_f16)} MB | ${mb(b.ours_int8)} MB | ${mb(b.ours_int4)} MB | ${mb(b.onnx_f32)} MB (${mb(b.onnx_text_encoder)} + ${mb(b.onnx_unet)} + ${mb(b.onnx_vae_decoder)}) |`);
}
console.log(lines.join("\n"));
log(`wrote ${OUT} (${results.wall_s} s)`);
