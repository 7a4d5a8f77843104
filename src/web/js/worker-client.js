// @ts-check
// SamplerWorker: the Sampler API with the work done in a Web Worker, so the page never
// freezes. Frames carry ImageBitmaps (draw them with ctx.drawImage).
//
//   const s = await SamplerWorker.load(url, { onProgress });
//   for await (const f of s.sample({ steps: 50 })) ctx.drawImage(f.images[0], 0, 0);
//
// Every request in flight settles: a worker that crashes (`error`), sends what cannot be read
// (`messageerror`), panics in its wasm (a "PanicError" answer) or is disposed rejects all of
// them, terminates the worker and makes later calls reject with the same error. Each
// SamplerWorker.load starts its own worker, so loading again always works after a crash.
// The worker side of the protocol is described in worker.js.

let nextId = 1;

// Same as index.js (this file is imported by it, so it does not import from it).
function namedError(name, message) {
  const e = new Error(message);
  e.name = name;
  return e;
}

function abortError(signal) {
  const reason = signal && signal.reason;
  if (reason instanceof Error && reason.name === "AbortError") return reason;
  return new DOMException(typeof reason === "string" ? reason : "The operation was aborted.", "AbortError");
}

/** An image option as something postMessage can carry (ImageData and ImageBitmap are). */
function postable(source) {
  const canvasLike =
    (typeof HTMLCanvasElement !== "undefined" && source instanceof HTMLCanvasElement) ||
    (typeof HTMLImageElement !== "undefined" && source instanceof HTMLImageElement);
  if (!canvasLike) return source;
  const w = /** @type {any} */ (source).naturalWidth || source.width;
  const h = /** @type {any} */ (source).naturalHeight || source.height;
  if (!(w > 0 && h > 0)) return source; // the worker's Sampler names the problem
  const canvas = new OffscreenCanvas(w, h);
  const ctx = /** @type {OffscreenCanvasRenderingContext2D} */ (canvas.getContext("2d"));
  ctx.drawImage(source, 0, 0);
  return ctx.getImageData(0, 0, w, h);
}

/** An error answered by the worker, with its kind (`name`) kept. */
function rebuildError(msg) {
  if (msg.name === "AbortError") return new DOMException(msg.message, "AbortError");
  return namedError(msg.name || "Error", msg.message);
}

/** A copy of `err` (a later call rejects with the same name and message, its own stack). */
function again(err) {
  return err.name === "AbortError" ? new DOMException(err.message, "AbortError") : namedError(err.name, err.message);
}

/** One worker and the requests in flight on it, by id. */
class Connection {
  constructor(worker, scriptUrl) {
    this.worker = worker;
    this.scriptUrl = scriptUrl;
    /** True once the worker's script has run (its "ready" message arrived). */
    this.started = false;
    /** id -> { message(m), fail(err) } */
    this.handlers = new Map();
    /** The error every later call rejects with, once the worker is gone. */
    this.dead = null;
    this.onMessage = (ev) => this.dispatch(ev.data);
    this.onError = (ev) => {
      // Handled here: each caller in flight gets it as a rejection, later calls too.
      ev.preventDefault();
      const what = (ev && ev.message) || "script error";
      this.close(
        namedError(
          "WorkerError",
          this.started ? `SamplerWorker: the worker crashed (${what}); load a new SamplerWorker` : `SamplerWorker: the worker script ${scriptUrl} failed to start (${what})`,
        ),
        true,
      );
    };
    this.onMessageError = () => {
      this.close(namedError("WorkerError", "SamplerWorker: a message from the worker could not be read (messageerror); load a new SamplerWorker"), true);
    };
    worker.addEventListener("message", this.onMessage);
    worker.addEventListener("error", this.onError);
    worker.addEventListener("messageerror", this.onMessageError);
  }

  dispatch(m) {
    if (!m) return;
    if (m.type === "ready") {
      this.started = true;
      return;
    }
    const h = this.handlers.get(m.id);
    if (h) h.message(m);
    else if (m.type === "frame") for (const im of m.frame.images) im.close?.(); // a run its caller left
  }

  post(msg) {
    if (this.dead) throw again(this.dead);
    this.worker.postMessage(msg);
  }

  /** Fails every request in flight with `err`, stops the worker; later calls get `err`. */
  close(err, report = false) {
    if (this.dead) return;
    this.dead = err;
    const handlers = [...this.handlers.values()];
    this.handlers.clear();
    this.worker.removeEventListener("message", this.onMessage);
    this.worker.removeEventListener("error", this.onError);
    this.worker.removeEventListener("messageerror", this.onMessageError);
    this.worker.terminate();
    for (const h of handlers) h.fail(err);
    // Nobody was waiting: say it once, so a crash is never silent.
    if (report && handlers.length === 0) console.error(err.message);
  }
}

/**
 * One request: resolves with the answer of type `answer` ("loaded", "result"); other messages
 * go to `onOther`; an abort rejects at once.
 */
function request(conn, msg, signal, onOther, answer) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    const finish = () => {
      conn.handlers.delete(id);
      if (signal) signal.removeEventListener("abort", onAbort);
    };
    const onAbort = () => {
      finish();
      reject(abortError(signal)); // the caller terminates the worker, which frees everything in it
    };
    conn.handlers.set(id, {
      message: (m) => {
        if (m.type === answer) {
          finish();
          resolve(m);
        } else if (m.type === "error") {
          finish();
          reject(rebuildError(m));
        } else onOther(m);
      },
      fail: (err) => {
        finish();
        reject(err);
      },
    });
    if (signal) signal.addEventListener("abort", onAbort, { once: true });
    try {
      conn.post({ id, ...msg });
    } catch (e) {
      finish();
      reject(e);
    }
  });
}

export class SamplerWorker {
  /** @private */
  constructor(conn, loaded) {
    this._conn = conn;
    this._active = null;
    this._disposed = false;
    this.backend = loaded.backend;
    this.backendReason = loaded.backendReason;
    this.threads = loaded.threads;
    this.threadsReason = loaded.threadsReason;
    this.config = loaded.config;
  }

  /**
   * Starts a worker and loads the model in it. `options.workerUrl` overrides the worker script.
   * @param {string | URL | ArrayBuffer | Uint8Array} source
   */
  static async load(source, options = {}) {
    const { onProgress, onWarning, signal, workerUrl, ...rest } = options;
    if (signal && signal.aborted) throw abortError(signal);
    const src = source instanceof URL ? source.href : typeof source === "string" ? new URL(source, location.href).href : source;
    // The default worker is started with the literal `new Worker(new URL("./worker.js",
    // import.meta.url), ...)`: the one form bundlers (Vite, webpack) recognise, bundle and
    // rewrite. A second `new URL(...)` just for the message would make them emit the raw file too.
    const worker = workerUrl
      ? new Worker(String(workerUrl), { type: "module" })
      : new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    const scriptUrl = workerUrl ? String(workerUrl) : "worker.js (the package's)";
    const conn = new Connection(worker, scriptUrl);
    try {
      const loaded = await request(conn, { type: "load", source: src, options: rest }, signal, (m) => {
        if (m.type === "progress") {
          if (onProgress) onProgress({ loaded: m.loaded, total: m.total });
        } else if (m.type === "warning") {
          if (typeof onWarning === "function") onWarning(m.message);
          else console.warn(`wasm-diffusion: ${m.message}`);
        }
      }, "loaded");
      return new SamplerWorker(conn, loaded);
    } catch (e) {
      conn.close(e);
      throw e;
    }
  }

  /** @private */
  _check() {
    if (this._disposed) throw namedError("DisposedError", "this SamplerWorker was disposed: expected a loaded model, found none");
    if (this._conn.dead) throw again(this._conn.dead);
  }

  /**
   * Same options as Sampler.sample (but `initNoise` is copied); frames carry ImageBitmaps. A
   * `break` out of the loop stops the worker's run at once.
   */
  async *sample(options = {}) {
    this._check();
    const { signal, ...rest } = options;
    // Canvases and <img> elements cannot be posted: their pixels go as ImageData.
    for (const key of ["initImage", "mask"]) rest[key] = postable(rest[key]);
    if (signal && signal.aborted) throw abortError(signal);
    if (this._active !== null) throw namedError("BusyError", "this SamplerWorker is already sampling: expected one run at a time, found two");
    const conn = this._conn;
    const id = nextId++;
    const queue = [];
    let wake = null;
    const push = (m) => {
      queue.push(m);
      if (wake) wake();
      wake = null;
    };
    conn.handlers.set(id, { message: push, fail: (error) => push({ type: "fail", error }) });
    this._active = id;
    const onAbort = () => {
      if (!conn.dead) conn.worker.postMessage({ type: "abort", target: id });
    };
    if (signal) signal.addEventListener("abort", onAbort, { once: true });
    let settled = false;
    try {
      conn.post({ id, type: "sample", options: rest });
      for (;;) {
        while (queue.length === 0) await new Promise((r) => (wake = r));
        const m = queue.shift();
        if (m.type === "frame") {
          yield m.frame;
        } else if (m.type === "done") {
          settled = true;
          return;
        } else if (m.type === "error") {
          settled = true;
          const err = rebuildError(m);
          // A panic killed the worker's wasm: nothing more can run in it.
          if (err.name === "PanicError") conn.close(err);
          throw err;
        } else if (m.type === "fail") {
          settled = true;
          throw m.error;
        }
      }
    } finally {
      conn.handlers.delete(id);
      if (this._active === id) this._active = null;
      if (signal) signal.removeEventListener("abort", onAbort);
      // The caller left the loop (break, return, a throw in its body): stop the run now, so the
      // next sample() starts at once. Frames still on their way are dropped (their bitmaps closed).
      if (!settled && !conn.dead) conn.worker.postMessage({ type: "abort", target: id });
      for (const m of queue) if (m.type === "frame") for (const im of m.frame.images) im.close?.();
    }
  }

  /**
   * Same as Sampler.addNoise, computed in the worker (`x0` is copied).
   * @param {Float32Array} x0
   * @param {number[]} shape
   * @param {number} timestep
   * @param {number} [seed]
   * @returns {Promise<Float32Array>}
   */
  async addNoise(x0, shape, timestep, seed = 0) {
    this._check();
    const m = await request(this._conn, { type: "addNoise", x0, shape: [...shape], timestep, seed }, undefined, () => {}, "result");
    return m.values;
  }

  /**
   * Same as Sampler.tokenize, computed in the worker.
   * @param {string} text
   * @returns {Promise<{ ids: Uint32Array, truncated: boolean, length: number }>}
   */
  async tokenize(text) {
    this._check();
    const m = await request(this._conn, { type: "tokenize", text }, undefined, () => {}, "result");
    return m.tokens;
  }

  /** Frees the model and stops the worker; a sample() in progress rejects with a DisposedError. */
  dispose() {
    if (this._disposed) return;
    this._disposed = true;
    this._conn.close(namedError("DisposedError", "this SamplerWorker was disposed during sampling"));
  }
}
