// wasm-diffusion: diffusion sampling in the browser on WebGPU (or the CPU).
//
//   import { Sampler } from "wasm-diffusion";
//   const sampler = await Sampler.load("models/emoji/emoji.int8.safetensors", { onProgress });
//   for await (const frame of sampler.sample({ steps: 50, classLabels: [2] })) draw(frame.images[0]);
//
// This file is the package's entry point; it drives the wasm bindings (wasm_diffusion.js).
// Fetching, the Cache API and integrity checks happen here; parsing, validation and sampling in
// Rust. See index.d.ts for the exact types.

import initWasm, { Engine, noiseSample, addNoise as wasmAddNoise } from "./wasm_diffusion.js";
export { SamplerWorker } from "./worker-client.js";

let ready = null;
/** Instantiates the wasm module once (no separate init call is needed). */
function ensureWasm() {
  if (!ready) ready = initWasm({ module_or_path: new URL("./wasm_diffusion_bg.wasm", import.meta.url) });
  return ready;
}

const CACHE_NAME = "wasm-diffusion-models-v1";

function abortError(signal) {
  const reason = signal && signal.reason;
  if (reason instanceof Error && reason.name === "AbortError") return reason;
  return new DOMException(typeof reason === "string" ? reason : "The operation was aborted.", "AbortError");
}

// Lets the page run (input, rendering, an abort) between two sampling steps. Not
// setTimeout(0): browsers clamp nested timers to >= 4 ms after five levels, which a sampling loop
// reaches at once (measured: ~4 ms added to every CPU step, about 10% of an emoji step; see
// BENCHMARKS.md). scheduler.yield() where the browser has it, else a MessageChannel round trip.
let yieldChannel = null;
const yieldWaiters = [];
function nextTask() {
  if (typeof globalThis.scheduler?.yield === "function") return globalThis.scheduler.yield();
  if (typeof MessageChannel === "undefined") return new Promise((r) => setTimeout(r, 0));
  if (yieldChannel === null) {
    yieldChannel = new MessageChannel();
    yieldChannel.port1.onmessage = () => yieldWaiters.shift()?.();
    // In Node an open port would keep the process alive.
    yieldChannel.port1.unref?.();
  }
  return new Promise((r) => {
    yieldWaiters.push(r);
    yieldChannel.port2.postMessage(null);
  });
}

function throwIfAborted(signal) {
  if (signal && signal.aborted) throw abortError(signal);
}

function asError(e) {
  if (e instanceof Error) return e;
  return new Error(typeof e === "string" ? e : String(e));
}

async function sha256Base64(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  let s = "";
  for (const b of new Uint8Array(digest)) s += String.fromCharCode(b);
  return btoa(s);
}

function parseIntegrity(integrity) {
  if (integrity == null) return null;
  const m = /^sha256-([A-Za-z0-9+/]+={0,2})$/.exec(String(integrity).trim());
  if (!m) throw new Error(`integrity: expected "sha256-<base64>", found "${integrity}"`);
  return m[1];
}

async function checkIntegrity(bytes, expected, url) {
  if (!expected) return;
  const got = await sha256Base64(bytes);
  if (got !== expected) {
    throw new Error(`integrity mismatch for ${url}: expected sha256-${expected}, found sha256-${got}`);
  }
}

/** Reads a fetch Response body, reporting progress and honouring the signal. */
async function readBody(response, url, onProgress, signal) {
  const total = Number(response.headers.get("content-length")) || 0;
  if (!response.body) {
    const buf = new Uint8Array(await response.arrayBuffer());
    if (onProgress) onProgress({ loaded: buf.byteLength, total: total || buf.byteLength });
    return buf;
  }
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  const onAbort = () => reader.cancel().catch(() => {});
  if (signal) signal.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      throwIfAborted(signal);
      const { done, value } = await reader.read();
      throwIfAborted(signal);
      if (done) break;
      chunks.push(value);
      loaded += value.byteLength;
      if (onProgress) onProgress({ loaded, total });
    }
  } finally {
    if (signal) signal.removeEventListener("abort", onAbort);
  }
  if (total && loaded !== total) {
    throw new Error(`download of ${url} truncated: expected ${total} bytes, found ${loaded}`);
  }
  const out = new Uint8Array(loaded);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

async function fetchModel(url, { onProgress, signal, integrity }) {
  let response;
  try {
    response = await fetch(url, { signal, integrity: undefined });
  } catch (e) {
    if (signal && signal.aborted) throw abortError(signal);
    throw new Error(`fetching ${url} failed: ${asError(e).message}`);
  }
  if (!response.ok) {
    throw new Error(`fetching ${url} failed: HTTP ${response.status} ${response.statusText}`.trim());
  }
  const bytes = await readBody(response, url, onProgress, signal);
  await checkIntegrity(bytes, integrity, url);
  return bytes;
}

/**
 * Picks the backend. "auto" takes WebGPU only on a hardware adapter: a software adapter such as
 * SwiftShader is 10-100x slower than the CPU path.
 */
async function chooseBackend(requested) {
  if (requested === "cpu") return "cpu";
  const gpu = typeof navigator !== "undefined" ? navigator.gpu : undefined;
  let adapter = null;
  if (gpu) {
    try {
      adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    } catch {
      adapter = null;
    }
  }
  if (requested === "webgpu") {
    if (!adapter) throw new Error("backend \"webgpu\": expected a WebGPU adapter, found none (navigator.gpu missing or no adapter)");
    return "webgpu";
  }
  if (!adapter) return "cpu";
  const info = adapter.info || {};
  const software =
    adapter.isFallbackAdapter ||
    info.isFallbackAdapter ||
    /swiftshader|llvmpipe|lavapipe|software/i.test(`${info.architecture || ""} ${info.description || ""} ${info.device || ""}`);
  return software ? "cpu" : "webgpu";
}

const SCHEDULERS = ["ddpm", "ddim", "dpm++"];
const DEFAULT_STEPS = { ddpm: 1000, ddim: 50, "dpm++": 20 };

function checkInt(name, v, min, max) {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new Error(`${name}: expected an integer from ${min} to ${max}, found ${v}`);
  }
}

/** A model loaded on one backend, ready to sample. */
export class Sampler {
  /** @private */
  constructor(engine, config) {
    this._engine = engine;
    this._config = config;
    this._busy = false;
  }

  /**
   * Loads a model file from a URL, an ArrayBuffer or a Uint8Array.
   * @param {string | URL | ArrayBuffer | Uint8Array} source
   * @param {import("./index").LoadOptions} [options]
   */
  static async load(source, options = {}) {
    const { backend = "auto", onProgress, signal, integrity, cache = false } = options;
    if (!["auto", "webgpu", "cpu"].includes(backend)) {
      throw new Error(`backend: expected "auto", "webgpu" or "cpu", found "${backend}"`);
    }
    throwIfAborted(signal);
    const expected = parseIntegrity(integrity);
    const wasmReady = ensureWasm();
    let bytes;
    let cacheEntry = null;
    if (typeof source === "string" || source instanceof URL) {
      const url = new URL(String(source), typeof location !== "undefined" ? location.href : undefined).href;
      if (cache && typeof caches !== "undefined") {
        const store = await caches.open(CACHE_NAME);
        const hit = await store.match(url);
        if (hit) {
          const cached = await readBody(hit, url, onProgress, signal);
          try {
            await checkIntegrity(cached, expected, url);
            bytes = cached;
          } catch {
            await store.delete(url); // corrupt or stale copy: fetch again
          }
        }
        cacheEntry = { store, url };
      }
      if (!bytes) bytes = await fetchModel(url, { onProgress, signal, integrity: expected });
      source = url;
    } else if (source instanceof Uint8Array) {
      bytes = source;
      await checkIntegrity(bytes, expected, "the given bytes");
    } else if (source instanceof ArrayBuffer) {
      bytes = new Uint8Array(source);
      await checkIntegrity(bytes, expected, "the given bytes");
    } else {
      throw new Error(`source: expected a URL string, URL, ArrayBuffer or Uint8Array, found ${Object.prototype.toString.call(source)}`);
    }
    throwIfAborted(signal);
    await wasmReady;
    const chosen = await chooseBackend(backend);
    throwIfAborted(signal);
    let engine;
    try {
      engine = await Engine.load(bytes, chosen);
    } catch (e) {
      const err = asError(e);
      if (cacheEntry) {
        // A cached copy that does not parse is evicted; the caller's retry fetches it afresh.
        await cacheEntry.store.delete(cacheEntry.url);
      }
      throw new Error(typeof source === "string" ? `${source}: ${err.message}` : err.message);
    }
    if (cacheEntry) {
      const already = await cacheEntry.store.match(cacheEntry.url);
      if (!already) {
        await cacheEntry.store.put(
          cacheEntry.url,
          new Response(bytes, { headers: { "content-type": "application/octet-stream", "content-length": String(bytes.byteLength) } }),
        );
      }
    }
    return new Sampler(engine, engine.config());
  }

  /** "webgpu" or "cpu". */
  get backend() {
    this._check();
    return this._engine.backend;
  }

  /** Model and scheduler config, quantization, class names. */
  get config() {
    this._check();
    return this._config;
  }

  /** Frees the weights (and GPU memory). Later calls fail with a clear error. */
  dispose() {
    if (this._engine) {
      this._engine.dispose();
      this._engine.free();
      this._engine = null;
    }
  }

  /** @private */
  _check() {
    if (!this._engine) throw new Error("this Sampler was disposed: expected a loaded model, found none");
  }

  /**
   * Samples images; yields a frame every `previewEvery` steps and always the final one.
   * @param {import("./index").SampleOptions} [options]
   * @returns {AsyncGenerator<import("./index").Frame>}
   */
  async *sample(options = {}) {
    this._check();
    const {
      scheduler = "ddim",
      eta = 0,
      batch = 1,
      classLabels = null,
      guidanceScale = 1,
      previewEvery = 1,
      preview = "x0",
      signal,
      initNoise = null,
    } = options;
    const steps = options.steps ?? DEFAULT_STEPS[scheduler];
    const seed = options.seed ?? Math.floor(Math.random() * 2 ** 32);
    if (!SCHEDULERS.includes(scheduler)) throw new Error(`scheduler: expected "ddpm", "ddim" or "dpm++", found "${scheduler}"`);
    checkInt("steps", steps, 1, 100000);
    checkInt("batch", batch, 1, 64);
    checkInt("previewEvery", previewEvery, 1, 1e9);
    checkInt("seed", seed, 0, Number.MAX_SAFE_INTEGER);
    if (preview !== "x0" && preview !== "xt") throw new Error(`preview: expected "x0" or "xt", found "${preview}"`);
    if (typeof eta !== "number" || !(eta >= 0)) throw new Error(`eta: expected a number >= 0, found ${eta}`);
    if (typeof guidanceScale !== "number" || !Number.isFinite(guidanceScale)) {
      throw new Error(`guidanceScale: expected a finite number, found ${guidanceScale}`);
    }
    if (classLabels != null && !Array.isArray(classLabels)) {
      throw new Error(`classLabels: expected an array of class indices, found ${typeof classLabels}`);
    }
    if (initNoise != null && !(initNoise instanceof Float32Array)) {
      throw new Error("initNoise: expected a Float32Array (NCHW), found another type");
    }
    if (this._busy) throw new Error("this Sampler is already sampling: expected one run at a time, found two");
    throwIfAborted(signal);
    this._busy = true;
    try {
      const run = this._engine.startRun(
        { scheduler, steps, seed, eta, batch, classLabels: classLabels ?? undefined, guidanceScale },
        initNoise ?? undefined,
      );
      const [, , h, w] = run.shape;
      const total = run.totalSteps;
      const t0 = performance.now();
      try {
        while (!run.done) {
          throwIfAborted(signal);
          const info = run.step();
          const due = info.last || info.step % previewEvery === 0;
          if (due) {
            const frame = await run.readFrame(info.last ? "xt" : preview);
            throwIfAborted(signal);
            yield {
              step: info.step,
              totalSteps: total,
              timestep: info.timestep,
              final: info.last,
              elapsedMs: performance.now() - t0,
              images: frame.rgba.map((px) => new ImageData(px, w, h)),
            };
          } else {
            // Give the page (and an abort) a chance between steps without reading back.
            await nextTask();
          }
        }
      } finally {
        run.free();
      }
    } finally {
      this._busy = false;
    }
  }
}

/** The seeded noise the sampler uses (`batch * perItem` values), e.g. to compare with the CLI. */
export async function seededNoise(seed, batch, perItem) {
  await ensureWasm();
  return noiseSample(seed, batch, perItem);
}

/** The forward process: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise (linear betas, T = 1000). */
export async function addNoise(x0, shape, timestep, seed) {
  await ensureWasm();
  return wasmAddNoise(x0, Uint32Array.from(shape), timestep, seed);
}

/** Converts ImageData in [0, 255] to NCHW floats in [-1, 1]. */
export function imageDataToSample(imageData) {
  const { width: w, height: h, data } = imageData;
  const out = new Float32Array(3 * w * h);
  for (let i = 0; i < w * h; i++) {
    for (let c = 0; c < 3; c++) out[c * w * h + i] = (data[i * 4 + c] / 255) * 2 - 1;
  }
  return out;
}

/** Converts NCHW floats of one 3-channel image in [-1, 1] to ImageData. */
export function sampleToImageData(values, width, height) {
  const px = new Uint8ClampedArray(width * height * 4);
  const plane = width * height;
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) px[i * 4 + c] = Math.round(Math.min(1, Math.max(0, values[c * plane + i] / 2 + 0.5)) * 255);
    px[i * 4 + 3] = 255;
  }
  return new ImageData(px, width, height);
}
