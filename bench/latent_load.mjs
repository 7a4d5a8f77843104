// Loading a big pipeline file in the browser (issue 13): peak wasm memory and load time of
// Sampler.load streaming the file onto the backend, against the raw download of the same bytes
// from the same server in the same page, then the time to the first frame. Rounds alternate
// download and load (A B A B), each load in a fresh page (a fresh wasm heap).
//
//   node bench/latent_load.mjs [--backend webgpu|cpu] [--rounds N] [--size PX] [--no-frame] [--out FILE] FILE...
//
// FILE: pipeline files (e.g. `wasm-diffusion convert` of tools/make_scale_pipelines.py's SD-Turbo
// folder, --quant int8 / int4). What is measured:
//  - download: fetch() of the file with its body read and dropped, in the page;
//  - load: Sampler.load(url) from a fresh page whose wasm instance is already up; the wasm heap
//    before and after (linear memory only grows, so "after" is the peak of the load);
//  - first frame: one 1-step sample of PX x PX right after the load (the heap after it);
//    --no-frame skips it (on SwiftShader an SD-Turbo-size step takes many minutes);
//  - with --cache: the load streams the file into the Cache API too (cache: true), then the
//    size of the cached copy and a second load from it (no network);
//  - the JS heap after the load (performance.memory, Chromium), to show no second copy there;
//  - the file's largest tensor as stored and as f32 (from its header).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { startServer } from "../pkg-tests/server.mjs";
import os from "node:os";
import { chromium } from "playwright-core";
import { CHROMIUM, BASE_ARGS, WEBGPU_ARGS, NO_GPU_ARGS } from "../pkg-tests/chromium.mjs";
import { REPO, argv, arg, median } from "./common.mjs";

const BACKEND = arg("--backend", "webgpu");
const ROUNDS = Number(arg("--rounds", "3"));
const SIZE = Number(arg("--size", "128"));
const OUT = arg("--out", null);
const FRAME = !argv.includes("--no-frame");
const CACHE = argv.includes("--cache");
const VALUED = ["--backend", "--rounds", "--size", "--out"];
const files = argv.filter((a, i) => !a.startsWith("--") && !(i > 0 && VALUED.includes(argv[i - 1])));
if (files.length === 0) throw new Error("usage: node bench/latent_load.mjs [--backend webgpu|cpu] [--rounds N] [--size PX] FILE...");
const log = (...a) => console.error(...a);
const MiB = (b) => Math.round((b / 2 ** 20) * 10) / 10;

/** The largest tensor of a safetensors file: stored bytes, and its logical size as f32. */
function largestTensor(file) {
  const fd = fs.openSync(file, "r");
  const head = Buffer.alloc(8);
  fs.readSync(fd, head, 0, 8, 0);
  const n = Number(head.readBigUInt64LE(0));
  const json = Buffer.alloc(n);
  fs.readSync(fd, json, 0, n, 8);
  fs.closeSync(fd);
  const header = JSON.parse(json.toString("utf8"));
  let stored = { bytes: 0 };
  let f32 = { bytes: 0 };
  for (const [name, e] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const bytes = e.data_offsets[1] - e.data_offsets[0];
    if (bytes > stored.bytes) stored = { name, bytes };
    // A packed int4 tensor holds two values a byte; int8 one; f16 half of f32.
    const per = { F32: 4, F16: 2, BF16: 2, I8: 1, U8: 0.5 }[e.dtype];
    const logical = (bytes / per) * 4;
    if (logical > f32.bytes) f32 = { name, bytes: logical };
  }
  return { stored, f32, quantization: header.__metadata__?.quantization };
}

/**
 * Resident memory of Chromium's GPU processes (where SwiftShader keeps WebGPU buffers), in bytes;
 * null where `ps` is missing.
 */
function gpuProcessRss() {
  try {
    return execFileSync("ps", ["-eo", "rss=,args="], { encoding: "utf8" })
      .split("\n")
      .filter((l) => l.includes("--type=gpu-process"))
      .reduce((n, l) => n + Number(l.trim().split(/\s+/)[0]) * 1024, 0);
  } catch {
    return null;
  }
}

const roots = { "/": REPO };
files.forEach((f, i) => (roots[`/f${i}/`] = path.dirname(path.resolve(f))));
const server = await startServer({ roots });
// A persistent profile (on disk): an incognito context keeps the Cache API in memory, where a
// put of a file this size fails ("Unexpected internal error").
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "wd-latent-load-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: [...BASE_ARGS, ...(BACKEND === "webgpu" ? WEBGPU_ARGS : NO_GPU_ARGS)],
});
const results = { started: new Date().toISOString(), backend: BACKEND, size: SIZE, files: [] };

async function freshPage() {
  const p = await browser.newPage();
  p.on("pageerror", (e) => log("page error:", e.message));
  p.on("console", (m) => ["warning", "error"].includes(m.type()) && log(`page ${m.type()}: ${m.text()}`));
  await p.goto(`${server.url}/pkg-tests/page.html`);
  await p.waitForFunction(() => window.ready === true);
  // The wasm instance up (compiled, instantiated) before anything is timed.
  await p.evaluate(() => wd.seededNoise(1, 1, 1));
  return p;
}

for (const [i, file] of files.entries()) {
  const url = `/f${i}/${path.basename(file)}`;
  const bytes = fs.statSync(file).size;
  const largest = largestTensor(file);
  const rounds = [];
  log(`${file}: ${MiB(bytes)} MiB, largest tensor ${largest.stored.name} ${MiB(largest.stored.bytes)} MiB stored, ${largest.f32.name} ${MiB(largest.f32.bytes)} MiB as f32`);
  for (let r = 0; r < ROUNDS; r++) {
    const p = await freshPage();
    const download = await p.evaluate(async (url) => {
      const t0 = performance.now();
      const reader = (await fetch(url, { cache: "no-store" })).body.getReader();
      let n = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        n += value.byteLength;
      }
      return { ms: performance.now() - t0, bytes: n };
    }, url);
    await p.close();
    const q = await freshPage();
    const load = await q.evaluate(
      async ({ url, backend, cache }) => {
        const w = await import("/pkg/wasm_diffusion.js");
        const before = w.wasmMemoryBytes();
        const t0 = performance.now();
        let lastProgress = null;
        if (cache) await (await caches.open("wasm-diffusion-models-v1")).delete(new URL(url, location.href).href);
        window.__sampler = await wd.Sampler.load(url, { backend, cache, onProgress: (e) => (lastProgress = e) });
        const loadMs = performance.now() - t0;
        const out = { loadMs, before, afterLoad: w.wasmMemoryBytes(), jsHeap: performance.memory?.usedJSHeapSize ?? null, lastProgress, components: window.__sampler.config.components };
        if (cache) {
          const hit = await (await caches.open("wasm-diffusion-models-v1")).match(new URL(url, location.href).href);
          if (!hit) throw new Error("the file is not in the Cache API after the load (see the warnings above)");
          let n = 0;
          const reader = hit.body.getReader();
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            n += value.byteLength;
          }
          out.cachedBytes = n;
          window.__sampler.dispose();
          const t1 = performance.now();
          window.__sampler = await wd.Sampler.load(url, { backend, cache });
          out.fromCacheMs = performance.now() - t1;
          out.afterCacheLoad = w.wasmMemoryBytes();
        }
        return out;
      },
      { url, backend: BACKEND, cache: CACHE },
    );
    load.gpuRss = gpuProcessRss();
    log(`  round ${r + 1}: download ${Math.round(download.ms)} ms; load ${Math.round(load.loadMs)} ms, heap ${MiB(load.before)} -> ${MiB(load.afterLoad)} MiB; GPU process RSS ${load.gpuRss === null ? "?" : MiB(load.gpuRss)} MiB; JS heap ${load.jsHeap === null ? "?" : MiB(load.jsHeap)} MiB${CACHE ? `; cached ${MiB(load.cachedBytes)} MiB, load from the cache ${Math.round(load.fromCacheMs)} ms, heap after ${MiB(load.afterCacheLoad)} MiB` : ""}`);
    Object.assign(
      load,
      await q.evaluate(
        async ({ size, frame }) => {
          const w = await import("/pkg/wasm_diffusion.js");
          const s = window.__sampler;
          if (!frame) {
            s.dispose();
            return { frameMs: null, runMs: null, afterStep: w.wasmMemoryBytes(), error: null };
          }
          const t1 = performance.now();
          let frameMs = null;
          let error = null;
          try {
            for await (const f of s.sample({ prompt: "a red apple", steps: 1, guidanceScale: 0, width: size, height: size, seed: 1 })) {
              if (frameMs === null) frameMs = performance.now() - t1;
            }
          } catch (e) {
            error = `${e.name}: ${e.message}`;
          }
          const runMs = performance.now() - t1;
          s.dispose();
          return { frameMs, runMs, afterStep: w.wasmMemoryBytes(), error };
        },
        { size: SIZE, frame: FRAME },
      ),
    );
    await q.close();
    log(`  round ${r + 1}: after 1 step heap ${MiB(load.afterStep)} MiB; first frame ${load.frameMs === null ? "not run" : `${Math.round(load.frameMs)} ms`}${load.error ? ` (${load.error})` : ""}`);
    rounds.push({ download, load });
  }
  const med = (f) => median(rounds.map(f));
  const summary = {
    file: path.basename(file),
    bytes,
    largest,
    download_ms: med((r) => r.download.ms),
    load_ms: med((r) => r.load.loadMs),
    load_over_download: med((r) => r.load.loadMs / r.download.ms),
    heap_before: med((r) => r.load.before),
    heap_after_load: Math.max(...rounds.map((r) => r.load.afterLoad)),
    heap_after_step: Math.max(...rounds.map((r) => r.load.afterStep)),
    first_frame_ms: FRAME ? med((r) => r.load.frameMs) : null,
    gpu_process_rss_after_load: Math.max(...rounds.map((r) => r.load.gpuRss ?? 0)),
    rounds,
  };
  summary.load_growth = summary.heap_after_load - summary.heap_before;
  summary.growth_over_largest_stored = summary.load_growth / largest.stored.bytes;
  results.files.push(summary);
}
await browser.close();
await server.close();
fs.rmSync(profile, { recursive: true, force: true });

console.log(`| file | size | largest tensor (stored / f32) | heap before -> after load -> after 1 step | load / raw download | time to first frame (${SIZE}px, 1 step) |`);
console.log("|---|---|---|---|---|---|");
for (const s of results.files) {
  console.log(
    `| ${s.file} | ${MiB(s.bytes)} MiB | ${MiB(s.largest.stored.bytes)} / ${MiB(s.largest.f32.bytes)} MiB | ${MiB(s.heap_before)} -> ${MiB(s.heap_after_load)} -> ${MiB(s.heap_after_step)} MiB | ${Math.round(s.load_ms)} / ${Math.round(s.download_ms)} ms = ${s.load_over_download.toFixed(2)}x | ${s.first_frame_ms === null ? "not run" : `${Math.round(s.load_ms + s.first_frame_ms)} ms`} |`,
  );
}
if (OUT) fs.writeFileSync(OUT, JSON.stringify(results, null, 1));
