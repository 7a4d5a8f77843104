// @ts-check
// wasm-diffusion: diffusion sampling in the browser on WebGPU (or the CPU).
//
//   import { Sampler } from "wasm-diffusion";
//   const sampler = await Sampler.load("models/emoji/emoji.int8.safetensors", { onProgress });
//   for await (const frame of sampler.sample({ steps: 50, classLabels: [2] })) draw(frame.images[0]);
//
// This file is the package's entry point; it drives the wasm bindings (wasm_diffusion.js).
// Fetching, the Cache API and integrity checks happen here; parsing, validation and sampling in
// Rust. See index.d.ts for the exact types.
//
// Failure model. Every error is an `Error` whose `name` says its kind (the Rust kinds such as
// "FormatError" pass through unchanged; see RELIABILITY.md for the list). A Rust panic kills
// the wasm instance: the panic handler rejects every wasm promise in flight with a
// "PanicError", and every later call on this page (or worker) rejects with the same message.
// wasm-bindgen's `--target web` glue keeps one instance per page or worker, so the main thread
// recovers only by a reload; a SamplerWorker recovers by loading again (a new worker).

import initSingle, * as singleGlue from "./wasm_diffusion.js";
export { SamplerWorker } from "./worker-client.js";

const WASM_URL = new URL("./wasm_diffusion_bg.wasm", import.meta.url);
// The threaded CPU build (no WebGPU in it): taken on cross-origin isolated pages for the CPU
// backend, its glue imported only then.
const THREADS_WASM_URL = new URL("./wasm_diffusion_threads_bg.wasm", import.meta.url);
const THREADS_GLUE = "./wasm_diffusion_threads.js";
/** How long the threaded build's workers may take to start before the single-threaded build is used. */
const THREADS_START_MS = 30000;
/** Threads the CPU backend takes at most by default (one per core up to this). */
const MAX_DEFAULT_THREADS = 8;
/** The bindings of this page's or worker's instance: the single-threaded build's until the
 * threaded one is chosen. @type {any} */
let wasm = singleGlue;
const CACHE_NAME = "wasm-diffusion-models-v1";
const WorkerScope = /** @type {any} */ (globalThis).WorkerGlobalScope;
const IN_WORKER = typeof WorkerScope === "function" && globalThis instanceof WorkerScope;

/** The one wasm instance of this page or worker, and what is alive in it. */
const instance = {
  /** The instantiation promise; reset when it fails, so one failed fetch does not poison later loads. */
  ready: null,
  /** The panic (or trap) message once the instance has died; nothing calls into wasm after that. */
  crash: null,
  /** How many callers the crash was delivered to (pending promises rejected, sync calls thrown). */
  delivered: 0,
  /** Reject functions of the wasm promises in flight. */
  pending: new Set(),
  /** The CPU backend's threads in this instance, and why that many. */
  threads: 1,
  threadsReason: "",
  /** Whether the instance is the threaded build (the CPU backend only). */
  threaded: false,
  /** For tests and leak checks: engines alive, runs alive, steps taken. */
  engines: 0,
  runs: 0,
  steps: 0,
};

function namedError(name, message) {
  const e = new Error(message);
  e.name = name;
  return e;
}

function crashedError() {
  const again = IN_WORKER ? "start a new worker (SamplerWorker.load does)" : "reload the page";
  return namedError("PanicError", `wasm-diffusion crashed: ${instance.crash}\nThe wasm module is dead: ${again} to load a model again.`);
}

/** Marks the instance dead and rejects every wasm promise in flight. Never throws. */
function markCrashed(message) {
  if (instance.crash !== null) return;
  instance.crash = message;
  const err = crashedError();
  for (const reject of instance.pending) {
    instance.delivered++;
    reject(err);
  }
  instance.pending.clear();
}

/** Called by Rust (synchronously, inside the panicking export) before the wasm traps. */
function onPanic(message) {
  try {
    markCrashed(String(message));
  } catch {
    // A throw here would unwind through the panicking wasm frames.
  }
}

/**
 * After a panic the wasm traps: a RuntimeError thrown out of a sync export (turned into a
 * PanicError by `call`) or, inside an async export, out of wasm-bindgen's task queue where nobody
 * can catch it. That uncaught trap is swallowed when the crash already reached a caller through a
 * rejection; otherwise it is re-thrown with the panic message, so it is never silent.
 */
function onUncaught(event, error) {
  if (typeof WebAssembly === "undefined" || !(error instanceof WebAssembly.RuntimeError)) return;
  const stack = String(error.stack || "");
  const ours = instance.crash !== null || stack.includes(WASM_URL.href) || stack.includes(THREADS_WASM_URL.href);
  if (!ours) return;
  markCrashed(`WebAssembly trap: ${error.message}`);
  event.preventDefault();
  if (instance.delivered === 0) {
    instance.delivered++;
    const err = crashedError();
    setTimeout(() => {
      throw err;
    });
  }
}

/**
 * How many threads the CPU backend can have here, and why: the threaded build needs a cross-origin
 * isolated page (SharedArrayBuffer) and more than one core. `requested`: the `threads` option.
 * @param {number | undefined} requested
 */
function threadPlan(requested) {
  if (requested === 1) return { n: 1, reason: "the threads option is 1" };
  if (/** @type {any} */ (globalThis).crossOriginIsolated !== true || typeof SharedArrayBuffer !== "function") {
    return {
      n: 1,
      reason:
        "the page is not cross-origin isolated, so it has no SharedArrayBuffer for wasm threads (serve it with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp)",
    };
  }
  const cores = (typeof navigator !== "undefined" && navigator.hardwareConcurrency) || 1;
  if (requested !== undefined) return { n: requested, reason: `the threads option is ${requested} (the page is cross-origin isolated)` };
  // A step runs on the pool while the calling thread waits: a worker sleeps then, but the page's
  // main thread cannot (Atomics.wait is not allowed there) and spins, taking a core.
  const free = IN_WORKER ? cores : cores - 1;
  if (free <= 1) {
    return {
      n: 1,
      reason: IN_WORKER
        ? `navigator.hardwareConcurrency is ${cores}`
        : `on the page's main thread, which spins on a core while the threads work (it cannot sleep there), navigator.hardwareConcurrency ${cores} leaves ${free} core for them; SamplerWorker (a worker) gets threads`,
    };
  }
  const n = Math.min(free, MAX_DEFAULT_THREADS);
  const where = IN_WORKER ? "" : ", less one core for the main thread, which spins while it waits";
  return { n, reason: `the page is cross-origin isolated and navigator.hardwareConcurrency is ${cores}${where}${n < free ? ` (at most ${MAX_DEFAULT_THREADS} by default)` : ""}` };
}

/**
 * Instantiates this page's (or worker's) wasm once: the threaded build when `plan` asks for more
 * than one thread (its pool started before anything runs), else, or when that fails, the
 * single-threaded one. Later calls get the same instance whatever they ask.
 * @param {{ n: number, reason: string }} [plan]
 */
function ensureWasm(plan = { n: 1, reason: "no model load chose threads for this instance" }) {
  if (instance.crash !== null) return Promise.reject(crashedError());
  if (!instance.ready) {
    instance.ready = (async () => {
      let why = plan.reason;
      if (plan.n > 1) {
        try {
          const glue = await import(THREADS_GLUE);
          await glue.default({ module_or_path: THREADS_WASM_URL });
          // Workers that cannot start (blocked, or their script unreachable) never answer:
          // after a while the single-threaded build takes over.
          let timer;
          const late = new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`its ${plan.n} workers did not start within ${THREADS_START_MS / 1000} s`)), THREADS_START_MS);
          });
          try {
            await Promise.race([glue.startThreads(plan.n), late]);
          } finally {
            clearTimeout(timer);
          }
          wasm = glue;
          instance.threaded = true;
        } catch (e) {
          const err = asError(e);
          why = `starting the threaded build failed (${err.name}: ${err.message})`;
        }
      }
      if (!instance.threaded) {
        try {
          await initSingle({ module_or_path: WASM_URL });
        } catch (e) {
          const err = asError(e);
          throw namedError("NetworkError", `loading the wasm module ${WASM_URL.href} failed: ${err.name}: ${err.message}`);
        }
      }
      instance.threads = instance.threaded ? plan.n : 1;
      instance.threadsReason = why;
      if (typeof wasm.setPanicHandler === "function") wasm.setPanicHandler(onPanic);
      if (typeof globalThis.addEventListener === "function") {
        globalThis.addEventListener("error", (ev) => onUncaught(ev, ev.error));
        globalThis.addEventListener("unhandledrejection", (ev) => onUncaught(ev, ev.reason));
      }
    })();
    instance.ready.catch(() => {
      instance.ready = null;
    });
  }
  return instance.ready;
}

/** Runs a synchronous wasm call; a trap (after a panic) becomes the instance's PanicError. */
function call(f) {
  if (instance.crash !== null) throw crashedError();
  try {
    return f();
  } catch (e) {
    if (instance.crash !== null || (typeof WebAssembly !== "undefined" && e instanceof WebAssembly.RuntimeError)) {
      markCrashed(`WebAssembly trap: ${e && e.message}`);
      instance.delivered++;
      throw crashedError();
    }
    throw asError(e);
  }
}

/** Follows a wasm promise, so that a panic while it is pending rejects it instead of leaving it pending. */
function track(promise) {
  if (instance.crash !== null) return Promise.reject(crashedError());
  return new Promise((resolve, reject) => {
    instance.pending.add(reject);
    promise.then(
      (v) => {
        instance.pending.delete(reject);
        resolve(v);
      },
      (e) => {
        instance.pending.delete(reject);
        reject(instance.crash !== null ? crashedError() : asError(e));
      },
    );
  });
}

/** Frees a wasm object unless the instance is dead (calling into it then could trap again). */
function free(obj) {
  if (instance.crash !== null) return;
  try {
    obj.free();
  } catch (e) {
    if (typeof WebAssembly !== "undefined" && e instanceof WebAssembly.RuntimeError) markCrashed(`WebAssembly trap: ${e.message}`);
  }
}

function freeEngine(engine) {
  instance.engines--;
  if (instance.crash !== null) return;
  try {
    engine.dispose();
  } catch (e) {
    if (typeof WebAssembly !== "undefined" && e instanceof WebAssembly.RuntimeError) markCrashed(`WebAssembly trap: ${e.message}`);
  }
  free(engine);
}

function abortError(signal) {
  const reason = signal && signal.reason;
  if (reason instanceof Error && reason.name === "AbortError") return reason;
  return new DOMException(typeof reason === "string" ? reason : "The operation was aborted.", "AbortError");
}

// Lets the page run (input, rendering, timers, an abort message) between two sampling steps,
// whether or not a frame was due: a frame read back from the CPU backend resolves in microtasks,
// so without this a run with previewEvery 1 never let a worker see its abort message. Not
// setTimeout(0): browsers clamp nested timers to >= 4 ms after five levels, which a sampling loop
// reaches at once (measured: ~4 ms added to every CPU step, about 10% of an emoji step; see
// BENCHMARKS.md). Not scheduler.yield(): Chromium runs its continuations ahead of other tasks, so
// a loop of them starved timers (a dispose() from a setTimeout waited for the whole run). A
// MessageChannel round trip is an ordinary task, tens of microseconds.
let yieldChannel = null;
const yieldWaiters = [];
function nextTask() {
  if (typeof MessageChannel === "undefined") return new Promise((r) => setTimeout(r, 0));
  if (yieldChannel === null) {
    yieldChannel = new MessageChannel();
    yieldChannel.port1.onmessage = () => yieldWaiters.shift()?.();
    // In Node an open port would keep the process alive.
    /** @type {any} */ (yieldChannel.port1).unref?.();
  }
  return new Promise((r) => {
    yieldWaiters.push(r);
    yieldChannel.port2.postMessage(null);
  });
}

function throwIfAborted(signal) {
  if (signal && signal.aborted) throw abortError(signal);
}

/**
 * Settles with `promise`, or rejects with an AbortError as soon as `signal` aborts; a value that
 * arrives after the abort is handed to `discard` (so nothing loaded leaks).
 */
function raceAbort(promise, signal, discard) {
  if (!signal) return promise;
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        if (signal.aborted) {
          if (discard) discard(v);
        } else resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

function asError(e) {
  if (e instanceof Error) return e;
  if (e && typeof e === "object" && typeof e.message === "string") return namedError(String(e.name || "Error"), e.message);
  return new Error(typeof e === "string" ? e : String(e));
}

/** `prefix: message`, keeping the error's name (FormatError etc.). */
function withPrefix(prefix, e) {
  const err = asError(e);
  if (err.name === "AbortError" || err.name === "PanicError") return err;
  return namedError(err.name, `${prefix}: ${err.message}`);
}

/** Base64 of the bytes a hex string spells (the loader's SHA-256, as SRI writes it). */
function hexToBase64(hex) {
  let s = "";
  for (let i = 0; i < hex.length; i += 2) s += String.fromCharCode(parseInt(hex.slice(i, i + 2), 16));
  return btoa(s);
}

function parseIntegrity(integrity) {
  if (integrity == null) return null;
  const m = /^sha256-([A-Za-z0-9+/]+={0,2})$/.exec(String(integrity).trim());
  if (!m) throw namedError("InvalidArgumentError", `integrity: expected "sha256-<base64>", found "${integrity}"`);
  return m[1];
}

/** The largest model file the wasm heap can take, or null while the module is not loaded yet. */
function heapLimit() {
  if (instance.crash !== null || typeof wasm.maxModelBytes !== "function") return null;
  try {
    return wasm.maxModelBytes();
  } catch {
    return null; // not instantiated yet
  }
}

function tooLarge(size, max, how) {
  return namedError("MemoryLimitError", `the model file is ${size} bytes${how}, more than the ${max} bytes the wasm heap can take`);
}

/**
 * A fetch Response body as its chunks arrive, reporting progress (after each chunk has been
 * taken) and honouring the signal. With a Content-Encoding (gzip, br) the Content-Length counts
 * compressed bytes: `total` is then 0 (unknown) and the length is not checked (a cut-off
 * compressed stream fails to decode instead). `maxBytes`: a limit on a declared length.
 */
async function* bodyChunks(response, url, onProgress, signal, maxBytes) {
  const encoding = (response.headers.get("content-encoding") || "identity").trim().toLowerCase();
  const declared = Number(response.headers.get("content-length")) || 0;
  const total = encoding === "identity" ? declared : 0;
  if (maxBytes !== null && total > maxBytes) {
    response.body?.cancel().catch(() => {});
    throw tooLarge(total, maxBytes, " (Content-Length)");
  }
  if (!response.body) {
    const buf = new Uint8Array(await response.arrayBuffer());
    yield buf;
    if (onProgress) onProgress({ loaded: buf.byteLength, total: total || buf.byteLength });
    return;
  }
  const reader = response.body.getReader();
  let loaded = 0;
  let finished = false;
  const onAbort = () => reader.cancel().catch(() => {});
  if (signal) signal.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      throwIfAborted(signal);
      let chunk;
      try {
        chunk = await reader.read();
      } catch (e) {
        throwIfAborted(signal);
        const err = asError(e);
        throw ownError(namedError("NetworkError", `download of ${url} failed after ${loaded} bytes: ${err.name}: ${err.message}`));
      }
      throwIfAborted(signal);
      if (chunk.done) break;
      loaded += chunk.value.byteLength;
      yield chunk.value;
      // A server that names no encoding but sends more than it declared (a proxy that decoded
      // the body) is not a truncation: from then on the total is unknown.
      if (onProgress) onProgress({ loaded, total: loaded <= total ? total : 0 });
    }
    finished = true;
  } finally {
    if (!finished) reader.cancel().catch(() => {});
    if (signal) signal.removeEventListener("abort", onAbort);
  }
  if (total && loaded < total) {
    throw ownError(namedError("NetworkError", `download of ${url} truncated: expected ${total} bytes, found ${loaded}`));
  }
}

/** The caller's bytes in parts (each is copied into the wasm heap on its own). */
function* byteChunks(bytes) {
  for (let off = 0; off < bytes.byteLength; off += PUSH_BYTES) yield bytes.subarray(off, off + PUSH_BYTES);
}

/** Largest part of the caller's bytes pushed into the loader at once. */
const PUSH_BYTES = 16 << 20;

async function fetchResponse(url, signal) {
  let response;
  try {
    response = await fetch(url, { signal });
  } catch (e) {
    if (signal && signal.aborted) throw abortError(signal);
    throw ownError(namedError("NetworkError", `fetching ${url} failed: ${asError(e).message}`));
  }
  if (!response.ok) {
    response.body?.cancel().catch(() => {});
    throw ownError(namedError("NetworkError", `fetching ${url} failed: HTTP ${response.status} ${response.statusText}`.trim()));
  }
  return response;
}

/** Errors that already say which file they are about (not prefixed with its URL again). */
const ownErrors = new WeakSet();
function ownError(err) {
  ownErrors.add(err);
  return err;
}

/**
 * The Cache API, best effort: storage can be disabled (some private modes, opaque origins) or
 * full. Every failure becomes a warning and the load goes on without the cache.
 */
class ModelCache {
  constructor(url, warn) {
    this.url = url;
    this.warn = warn;
    this.store = null;
  }

  async open() {
    if (typeof caches === "undefined") {
      this.warn("cache: the Cache API is not available here (not a secure context?); loading without it");
      return false;
    }
    try {
      this.store = await caches.open(CACHE_NAME);
      return true;
    } catch (e) {
      const err = asError(e);
      this.warn(`cache: the Cache API is unavailable (${err.name}: ${err.message}); loading without it`);
      return false;
    }
  }

  async match() {
    try {
      return (await this.store.match(this.url)) || null;
    } catch (e) {
      const err = asError(e);
      this.warn(`cache: reading ${this.url} from the Cache API failed (${err.name}: ${err.message}); downloading it`);
      return null;
    }
  }

  async delete() {
    try {
      await this.store.delete(this.url);
    } catch (e) {
      const err = asError(e);
      this.warn(`cache: evicting ${this.url} from the Cache API failed (${err.name}: ${err.message})`);
    }
  }

  /**
   * A stream into the cache, filled chunk by chunk as the file loads (never a second copy of
   * the file in memory: the cache reads what is written, with backpressure). Nothing is stored
   * unless `close()` is called; `abort()` drops the entry. A failing store (a full quota) warns
   * once and the load goes on.
   * @param {number} length the file's length when known (0: unknown)
   */
  writer(length) {
    let controller;
    let failed = false;
    let aborted = false;
    let wake = null;
    const drained = () => {
      if (wake) wake();
      wake = null;
    };
    const stream = new ReadableStream(
      {
        start(c) {
          controller = c;
        },
        pull: drained,
      },
      new ByteLengthQueuingStrategy({ highWaterMark: 32 << 20 }),
    );
    const headers = { "content-type": "application/octet-stream" };
    if (length) headers["content-length"] = String(length);
    let put;
    try {
      put = this.store.put(this.url, new Response(stream, { headers }));
    } catch (e) {
      put = Promise.reject(e);
    }
    const done = put.then(
      () => true,
      (e) => {
        failed = true;
        drained();
        if (!aborted) {
          const err = asError(e);
          this.warn(`cache: storing ${this.url} in the Cache API failed (${err.name}: ${err.message}); the next load downloads it again`);
        }
        return false;
      },
    );
    return {
      async write(chunk) {
        if (failed) return;
        controller.enqueue(chunk);
        if (controller.desiredSize !== null && controller.desiredSize < 0) await new Promise((r) => (wake = r));
      },
      close() {
        if (!failed) controller.close();
        return done;
      },
      abort() {
        aborted = true;
        if (!failed) controller.error(new DOMException("the load failed", "AbortError"));
        return done;
      },
    };
  }
}

/**
 * Picks the backend and says why. "auto" takes WebGPU only on a hardware adapter: a software
 * adapter such as SwiftShader is 10-100x slower than the CPU path.
 */
async function chooseBackend(requested) {
  if (requested === "cpu") return { backend: "cpu", reason: 'backend "cpu" was requested', adapter: null };
  const gpu = typeof navigator !== "undefined" ? /** @type {any} */ (navigator).gpu : undefined;
  let adapter = null;
  let failure = gpu ? "no WebGPU adapter" : "this browser has no WebGPU (navigator.gpu is missing)";
  if (gpu) {
    try {
      adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    } catch (e) {
      adapter = null;
      failure = `requesting a WebGPU adapter failed (${asError(e).message})`;
    }
  }
  if (requested === "webgpu") {
    if (!adapter) throw namedError("BackendError", `backend "webgpu": expected a WebGPU adapter, found none (${failure})`);
    return { backend: "webgpu", reason: 'backend "webgpu" was requested', adapter };
  }
  if (!adapter) return { backend: "cpu", reason: `auto: ${failure}; using the CPU`, adapter: null };
  const info = adapter.info || {};
  const name = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ") || "unnamed";
  const software =
    adapter.isFallbackAdapter ||
    info.isFallbackAdapter ||
    /swiftshader|llvmpipe|lavapipe|software/i.test(`${info.architecture || ""} ${info.description || ""} ${info.device || ""}`);
  if (software) return { backend: "cpu", reason: `auto: the WebGPU adapter (${name}) is a software one, slower than the CPU path; using the CPU`, adapter: null };
  return { backend: "webgpu", reason: `auto: hardware WebGPU adapter (${name})`, adapter };
}

/** Errors that say the file or the request is bad: trying another backend would not help. */
const NOT_A_BACKEND_PROBLEM = new Set(["FormatError", "UnsupportedError", "ConfigError", "InvalidArgumentError", "AbortError", "PanicError"]);
/** Load failures that say nothing against a cached copy of the file. */
const KEEP_CACHED_COPY = new Set(["AbortError", "PanicError", "BackendError", "MemoryLimitError"]);

/** Errors of the backend's set-up (before the file is touched): "auto" falls back on any of them. */
const setupErrors = new WeakSet();

/**
 * Whether `bytes` is a pipeline file (latent diffusion: its safetensors metadata names a
 * `pipeline`) rather than a U-Net model file. A header that cannot be read is left to the
 * engine, which says what it expected.
 * @param {Uint8Array} bytes
 */
export function isPipelineFile(bytes) {
  if (bytes.byteLength < 8) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = Number(view.getBigUint64(0, true));
  if (len > 100_000_000 || 8 + len > bytes.byteLength) return false;
  try {
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + len)));
    return typeof header?.__metadata__?.pipeline === "string";
  } catch {
    return false;
  }
}

/**
 * Loads an engine on `backend` from `chunks` (an iterable of Uint8Array, sync or async): the
 * backend's asynchronous set-up, then each chunk pushed into a wasm FileLoader as it arrives
 * (a pipeline file's tensors go to the device as soon as their bytes are in; the file is never
 * held whole), then the engine. `cacheWriter` gets each chunk too; it is closed only once the
 * engine exists. `expected`: the file's SHA-256 (base64) or null; `what` names the source in
 * messages; `fail` prefixes the loader's errors. The push and finish calls are synchronous, so
 * a trap while loading throws here instead of leaving a promise pending.
 */
async function streamEngine(chunks, backend, limits, { signal, expected, what, fail, cacheWriter }) {
  try {
    await raceAbort(track(call(() => wasm.initBackend(backend))), signal);
  } catch (e) {
    const err = asError(e);
    setupErrors.add(err);
    throw err;
  }
  throwIfAborted(signal);
  const loader = call(() => new wasm.FileLoader(backend, limits, expected !== null));
  let consumed = false;
  try {
    for await (const chunk of chunks) {
      try {
        call(() => loader.push(chunk));
      } catch (e) {
        throw fail(e);
      }
      if (cacheWriter) await cacheWriter.write(chunk);
    }
    throwIfAborted(signal);
    if (expected !== null) {
      const got = hexToBase64(call(() => loader.sha256()));
      if (got !== expected) {
        throw ownError(namedError("IntegrityError", `integrity mismatch for ${what}: expected sha256-${expected}, found sha256-${got}`));
      }
    }
    const pipeline = loader.kind === "pipeline";
    consumed = true; // finishing takes the loader, whatever it returns
    let engine;
    try {
      engine = call(() => (pipeline ? loader.finishPipeline() : loader.finishModel()));
    } catch (e) {
      throw fail(e);
    }
    instance.engines++;
    if (cacheWriter) await cacheWriter.close();
    return engine;
  } catch (e) {
    if (cacheWriter) await cacheWriter.abort();
    throw e;
  } finally {
    if (!consumed) free(loader);
  }
}

function checkInt(name, v, min, max) {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw namedError("InvalidArgumentError", `${name}: expected an integer from ${min} to ${max}, found ${v}`);
  }
}

/** A model loaded on one backend, ready to sample. */
export class Sampler {
  /** @private */
  constructor(engine, config, backend, backendReason, threadInfo) {
    this._engine = engine;
    this._threads = threadInfo.n;
    this._threadsReason = threadInfo.reason;
    this._config = config;
    this._backend = backend;
    this._backendReason = backendReason;
    this._busy = false;
    this._run = null;
    this._disposed = false;
  }

  /**
   * Loads a model file from a URL, an ArrayBuffer or a Uint8Array.
   * @param {string | URL | ArrayBuffer | Uint8Array} source
   * @param {import("./index").LoadOptions} [options]
   */
  static async load(source, options = {}) {
    const { backend = "auto", onProgress, onWarning, signal, integrity, cache = false, memoryBudget, threads } = options;
    if (!["auto", "webgpu", "cpu"].includes(backend)) {
      throw namedError("InvalidArgumentError", `backend: expected "auto", "webgpu" or "cpu", found "${backend}"`);
    }
    if (memoryBudget !== undefined && !(typeof memoryBudget === "number" && memoryBudget > 0 && Number.isFinite(memoryBudget))) {
      throw namedError("InvalidArgumentError", `memoryBudget: expected a number of bytes > 0, found ${memoryBudget}`);
    }
    if (threads !== undefined) checkInt("threads", threads, 1, 64);
    throwIfAborted(signal);
    if (instance.crash !== null) throw crashedError();
    const warn = (message) => {
      if (typeof onWarning === "function") onWarning(message);
      else console.warn(`wasm-diffusion: ${message}`);
    };
    const expected = parseIntegrity(integrity);
    // Which build: the threaded one for the CPU backend where the page allows threads ("auto"
    // asks for a WebGPU adapter first, as the threaded build has no WebGPU). The module
    // downloads and compiles while the model downloads.
    let choice = null;
    let plan = { n: 1, reason: 'backend "webgpu" (threads serve the CPU backend)' };
    if (backend !== "webgpu" && !instance.ready) {
      plan = threadPlan(threads);
      if (plan.n > 1 && backend === "auto") {
        choice = await raceAbort(chooseBackend(backend), signal);
        if (choice.backend !== "cpu") plan = { n: 1, reason: "the WebGPU backend (threads serve the CPU backend)" };
      }
    }
    const wasmReady = ensureWasm(plan);
    wasmReady.catch(() => {});

    // 1. Where the bytes come from: the caller, or a URL (through the Cache API when asked).
    let url = null;
    let given = null;
    let store = null; // the ModelCache, when cache is on and the Cache API works
    if (typeof source === "string" || source instanceof URL) {
      url = new URL(String(source), typeof location !== "undefined" ? location.href : undefined).href;
      if (cache) {
        const c = new ModelCache(url, warn);
        if (await c.open()) store = c;
      }
    } else if (source instanceof Uint8Array) {
      given = source;
    } else if (source instanceof ArrayBuffer) {
      given = new Uint8Array(source);
    } else {
      throw new TypeError(`source: expected a URL string, URL, ArrayBuffer or Uint8Array, found ${Object.prototype.toString.call(source)}`);
    }
    const what = url === null ? "the given bytes" : url;
    const fail = (e) => {
      const err = asError(e);
      return url === null || ownErrors.has(err) ? err : withPrefix(url, err);
    };
    throwIfAborted(signal);
    await raceAbort(wasmReady, signal);

    // 2. The backend, then the engine, streamed in as the file arrives ("auto" falls back to
    // the CPU when WebGPU fails, reading the file again: from the cache when it got there).
    if (choice === null) choice = await raceAbort(chooseBackend(backend), signal);
    if (instance.threaded && choice.backend === "webgpu") {
      // This instance is the threaded build (an earlier load chose it): the CPU only.
      if (backend === "webgpu") {
        throw namedError("BackendError", 'backend "webgpu": expected an instance with WebGPU, found the threaded CPU build an earlier load started here (load WebGPU models in a new worker)');
      }
      choice = { backend: "cpu", reason: "auto: this instance is the threaded CPU build an earlier load started; using the CPU", adapter: null };
    }
    const limits = (adapter) => {
      const l = {};
      if (memoryBudget !== undefined) l.memoryBudget = memoryBudget;
      if (adapter && adapter.limits) {
        l.maxBufferSize = adapter.limits.maxBufferSize;
        l.maxStorageBufferBindingSize = adapter.limits.maxStorageBufferBindingSize;
      }
      return l;
    };
    const load = async (choice) => {
      const opts = { signal, expected, what, fail, cacheWriter: null };
      // On the CPU the weights are dequantized into the heap: a file larger than the heap can
      // take cannot fit (on WebGPU a pipeline file only passes through, a tensor at a time).
      const maxBytes = choice.backend === "cpu" ? heapLimit() : null;
      if (given !== null) {
        if (maxBytes !== null && given.byteLength > maxBytes) throw tooLarge(given.byteLength, maxBytes, "");
        return streamEngine(byteChunks(given), choice.backend, limits(choice.adapter), opts);
      }
      if (store) {
        const hit = await store.match();
        if (hit) {
          try {
            return await streamEngine(bodyChunks(hit, url, onProgress, signal, maxBytes), choice.backend, limits(choice.adapter), opts);
          } catch (e) {
            const err = asError(e);
            if (KEEP_CACHED_COPY.has(err.name) || setupErrors.has(err)) throw err;
            await store.delete(); // corrupt or stale copy: fetch again
          }
        }
      }
      const response = await fetchResponse(url, signal);
      const identity = (response.headers.get("content-encoding") || "identity").trim().toLowerCase() === "identity";
      const length = identity ? Number(response.headers.get("content-length")) || 0 : 0;
      if (store) opts.cacheWriter = store.writer(length);
      return streamEngine(bodyChunks(response, url, onProgress, signal, maxBytes), choice.backend, limits(choice.adapter), opts);
    };
    let engine;
    try {
      engine = await load(choice);
    } catch (e) {
      const err = asError(e);
      const backendFailed = err.name !== "AbortError" && err.name !== "PanicError" && (setupErrors.has(err) || !NOT_A_BACKEND_PROBLEM.has(err.name));
      if (!(backend === "auto" && choice.backend === "webgpu" && backendFailed)) throw fail(err);
      warn(`WebGPU failed (${err.name}: ${err.message}); using the CPU`);
      choice = { backend: "cpu", reason: `auto: WebGPU failed (${err.name}: ${err.message}); fell back to the CPU`, adapter: null };
      try {
        engine = await load(choice);
      } catch (e2) {
        throw fail(e2);
      }
    }

    // 3. Everything after the engine exists frees it when it fails.
    try {
      const config = call(() => engine.config());
      throwIfAborted(signal);
      const threadInfo =
        choice.backend === "cpu"
          ? { n: instance.threads, reason: instance.threadsReason }
          : { n: 1, reason: "the WebGPU backend (threads serve the CPU backend)" };
      return new Sampler(engine, config, choice.backend, choice.reason, threadInfo);
    } catch (e) {
      freeEngine(engine);
      throw fail(e);
    }
  }

  /** "webgpu" or "cpu". */
  get backend() {
    this._check();
    return this._backend;
  }

  /** Why this backend: what was requested, or what "auto" found. */
  get backendReason() {
    this._check();
    return this._backendReason;
  }

  /** Threads the CPU backend runs on (1 on WebGPU and wherever the page has no wasm threads). */
  get threads() {
    this._check();
    return this._threads;
  }

  /** Why that many threads: what the page allows, the `threads` option, or what failed. */
  get threadsReason() {
    this._check();
    return this._threadsReason;
  }

  /** Model and scheduler config, quantization, class names. */
  get config() {
    this._check();
    return this._config;
  }

  /** Bytes of wasm linear memory of this page or worker (shared by all its samplers; it never shrinks). */
  get memoryBytes() {
    this._check();
    return typeof wasm.wasmMemoryBytes === "function" ? call(() => wasm.wasmMemoryBytes()) : 0;
  }

  /**
   * The forward process q(x_t | x_0) with this model's noise schedule: `x0` NCHW values in
   * [-1, 1] of `shape`, noised to `timestep` with the seeded noise of `seed`.
   * @param {Float32Array} x0
   * @param {number[]} shape
   * @param {number} timestep
   * @param {number} [seed]
   * @returns {Float32Array}
   */
  addNoise(x0, shape, timestep, seed = 0) {
    this._check();
    const engine = this._engine;
    return call(() => engine.addNoise(x0, Uint32Array.from(shape), timestep, seed));
  }

  /**
   * The ids a text-to-image pipeline feeds its text encoder for `text` (always 77), whether
   * the text was cut off to fit, and how many ids precede the padding.
   * @param {string} text
   * @returns {{ ids: Uint32Array, truncated: boolean, length: number }}
   */
  tokenize(text) {
    this._check();
    if (typeof text !== "string") throw namedError("InvalidArgumentError", `tokenize: expected a string, found ${typeOf(text)}`);
    if (this._config.kind !== "latent") {
      throw namedError("InvalidArgumentError", "tokenize: expected a text-to-image pipeline, found a model without text conditioning");
    }
    const engine = this._engine;
    return call(() => engine.tokenize(text));
  }

  /** Frees the weights (and GPU memory). Later calls fail with a clear error; a run in progress rejects. */
  dispose() {
    if (this._disposed) return;
    this._disposed = true;
    if (this._run) {
      const run = this._run;
      this._run = null;
      instance.runs--;
      free(run);
    }
    freeEngine(this._engine);
    this._engine = null;
  }

  /** @private */
  _check() {
    if (instance.crash !== null) throw crashedError();
    if (this._disposed) throw namedError("DisposedError", "this Sampler was disposed: expected a loaded model, found none");
  }

  /** @private After every await of a run: the sampler may have died, been disposed or aborted meanwhile. */
  _resume(signal) {
    if (instance.crash !== null) throw crashedError();
    if (this._disposed) throw namedError("DisposedError", "this Sampler was disposed during sampling");
    throwIfAborted(signal);
  }

  /**
   * Samples images; yields a frame every `previewEvery` steps and always the final one. A
   * `break` out of the loop frees the run at once.
   * @param {import("./index").SampleOptions} [options]
   * @returns {AsyncGenerator<import("./index").Frame>}
   */
  async *sample(options = {}) {
    this._check();
    if (options === null || typeof options !== "object") {
      throw new TypeError(`sample options: expected an object, found ${options === null ? "null" : typeof options}`);
    }
    // This layer's own options; the rest (scheduler, steps, seed, eta, batch, classLabels,
    // guidanceScale) goes to Rust as it is, which owns their defaults and limits
    // (`sampler.config.sampling`) and names a bad value in an InvalidArgumentError.
    const { previewEvery = 1, preview = "x0", signal, initNoise = null, initImage = null, mask = null } = options;
    checkInt("previewEvery", previewEvery, 1, 1e9);
    if (preview !== "x0" && preview !== "xt") throw namedError("InvalidArgumentError", `preview: expected "x0" or "xt", found "${preview}"`);
    if (initNoise != null && !(initNoise instanceof Float32Array)) {
      throw new TypeError("initNoise: expected a Float32Array (NCHW), found another type");
    }
    const latent = this._config.kind === "latent";
    if (!latent) {
      for (const key of ["prompt", "negativePrompt", "initImage", "mask", "strength", "width", "height"]) {
        if (options[key] != null) {
          throw namedError("InvalidArgumentError", `${key}: expected a text-to-image pipeline, found a pixel model (no text or image conditioning in the browser yet)`);
        }
      }
    }
    const image = initImage == null ? null : imageDataOf("initImage", initImage);
    const maskData = mask == null ? null : imageDataOf("mask", mask);
    if (maskData && !image) throw namedError("InvalidArgumentError", "mask: expected an initImage to go with it, found none");
    if (maskData && (maskData.width !== image.width || maskData.height !== image.height)) {
      throw namedError("InvalidArgumentError", `mask: expected the initImage's size ${image.width}x${image.height}, found ${maskData.width}x${maskData.height}`);
    }
    if (this._busy) throw namedError("BusyError", "this Sampler is already sampling: expected one run at a time, found two");
    throwIfAborted(signal);
    this._busy = true;
    let run = null;
    try {
      const engine = this._engine;
      run = latent
        ? call(() =>
            engine.startRun(
              options,
              initNoise ?? undefined,
              image ? imageDataToSample(image) : undefined,
              image ? image.width : 0,
              image ? image.height : 0,
              maskData ? maskPlane(maskData) : undefined,
            ),
          )
        : call(() => engine.startRun(options, initNoise ?? undefined));
      this._run = run;
      instance.runs++;
      const total = call(() => run.totalSteps);
      const t0 = performance.now();
      while (!call(() => run.done)) {
        throwIfAborted(signal);
        const info = call(() => run.step());
        instance.steps++;
        // Give the page (and an abort, a dispose) a chance after every step.
        await nextTask();
        this._resume(signal);
        if (info.last || info.step % previewEvery === 0) {
          const which = info.last ? (latent ? "image" : "xt") : preview;
          const frame = await track(call(() => run.readFrame(which)));
          this._resume(signal);
          yield {
            step: info.step,
            totalSteps: total,
            timestep: info.timestep,
            final: info.last,
            elapsedMs: performance.now() - t0,
            images: frame.rgba.map((px) => new ImageData(px, frame.width, frame.height)),
          };
          this._resume(signal);
        }
      }
    } finally {
      // dispose() frees a run in progress itself; otherwise (done, break, error) free it here.
      if (run !== null && this._run === run) {
        this._run = null;
        instance.runs--;
        free(run);
      }
      this._busy = false;
    }
  }
}

/** The seeded noise the sampler uses (`batch * perItem` values), e.g. to compare with the CLI. */
export async function seededNoise(seed, batch, perItem) {
  await ensureWasm();
  return call(() => wasm.noiseSample(seed, batch, perItem));
}

/**
 * The forward process x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise with the default schedule
 * (linear betas, T = 1000), for pages without a model; `sampler.addNoise` uses the model's own.
 */
export async function addNoise(x0, shape, timestep, seed) {
  await ensureWasm();
  return call(() => wasm.addNoise(x0, Uint32Array.from(shape), timestep, seed));
}

/** A readable name of a value's type, for messages. */
function typeOf(v) {
  if (v === null) return "null";
  if (typeof v !== "object") return typeof v;
  return v.constructor?.name ?? "object";
}

/**
 * `source` (ImageData, ImageBitmap, HTMLCanvasElement, OffscreenCanvas or HTMLImageElement) as
 * ImageData of its own size.
 */
function imageDataOf(name, source) {
  if (typeof ImageData !== "undefined" && source instanceof ImageData) return source;
  const drawable =
    (typeof ImageBitmap !== "undefined" && source instanceof ImageBitmap) ||
    (typeof OffscreenCanvas !== "undefined" && source instanceof OffscreenCanvas) ||
    (typeof HTMLCanvasElement !== "undefined" && source instanceof HTMLCanvasElement) ||
    (typeof HTMLImageElement !== "undefined" && source instanceof HTMLImageElement);
  if (!drawable) {
    throw namedError("InvalidArgumentError", `${name}: expected ImageData, ImageBitmap, a canvas or an HTMLImageElement, found ${typeOf(source)}`);
  }
  const any = /** @type {any} */ (source);
  const w = any.naturalWidth || any.width;
  const h = any.naturalHeight || any.height;
  if (!(w > 0 && h > 0)) throw namedError("InvalidArgumentError", `${name}: expected an image with pixels, found ${w}x${h} (not loaded yet?)`);
  const canvas = new OffscreenCanvas(w, h);
  const ctx = /** @type {OffscreenCanvasRenderingContext2D} */ (canvas.getContext("2d"));
  ctx.drawImage(source, 0, 0);
  return ctx.getImageData(0, 0, w, h);
}

/** One plane in [0, 1] of a mask: its luminance, as PIL's convert("L") (and the CLI) read it. */
function maskPlane(imageData) {
  const { width: w, height: h, data } = imageData;
  const out = new Float32Array(w * h);
  for (let i = 0; i < w * h; i++) {
    out[i] = Math.fround(Math.floor((data[i * 4] * 299 + data[i * 4 + 1] * 587 + data[i * 4 + 2] * 114) / 1000) / 255);
  }
  return out;
}

/** Converts ImageData in [0, 255] to NCHW floats in [-1, 1]. */
export function imageDataToSample(imageData) {
  const { width: w, height: h, data } = imageData;
  const out = new Float32Array(3 * w * h);
  for (let i = 0; i < w * h; i++) {
    // In f32 steps, as the Rust side (the CLI's PNG reader) computes it.
    for (let c = 0; c < 3; c++) out[c * w * h + i] = Math.fround(Math.fround(data[i * 4 + c] / 127.5) - 1);
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

/**
 * Test hooks (not part of the API; not in index.d.ts): panic inside the wasm ("sync": in a
 * synchronous export; "async": inside an async export's promise), and counts of what is alive.
 * @private
 */
export async function _testPanic(kind) {
  await ensureWasm();
  if (kind === "async") return track(call(() => wasm.testPanic("async")));
  return call(() => wasm.testPanic("sync"));
}

/**
 * Bench hook (not part of the API): where the threaded build's steps spent their time since the
 * last call, counting from now on while `on` (null in the single-threaded build).
 * @private
 */
export function _threadStats(on) {
  if (instance.crash !== null || typeof wasm.threadStats !== "function") return null;
  return call(() => wasm.threadStats(on));
}

/** @private */
export function _stats() {
  return { engines: instance.engines, runs: instance.runs, steps: instance.steps, pending: instance.pending.size, crashed: instance.crash !== null };
}
