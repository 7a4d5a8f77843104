// SamplerWorker: the Sampler API with the work done in a Web Worker, so the page never
// freezes. Frames carry ImageBitmaps (draw them with ctx.drawImage).
//
//   const s = await SamplerWorker.load(url, { onProgress });
//   for await (const f of s.sample({ steps: 50 })) ctx.drawImage(f.images[0], 0, 0);

let nextId = 1;

function rebuildError(msg) {
  if (msg.name === "AbortError") return new DOMException(msg.message, "AbortError");
  return new Error(msg.message);
}

export class SamplerWorker {
  /** @private */
  constructor(worker, backend, config) {
    this._worker = worker;
    this.backend = backend;
    this.config = config;
  }

  /**
   * Starts a worker and loads the model in it. `options.workerUrl` overrides the worker script.
   * @param {string | URL | ArrayBuffer | Uint8Array} source
   */
  static async load(source, options = {}) {
    const { onProgress, signal, workerUrl, ...rest } = options;
    const worker = new Worker(workerUrl || new URL("./worker.js", import.meta.url), { type: "module" });
    const source2 = source instanceof URL ? source.href : typeof source === "string" ? new URL(source, location.href).href : source;
    try {
      const loaded = await request(worker, { type: "load", source: source2, options: rest }, signal, (m) => {
        if (m.type === "progress" && onProgress) onProgress({ loaded: m.loaded, total: m.total });
      });
      return new SamplerWorker(worker, loaded.backend, loaded.config);
    } catch (e) {
      worker.terminate();
      throw e;
    }
  }

  /** Same options as Sampler.sample (but `initNoise` is copied); frames carry ImageBitmaps. */
  async *sample(options = {}) {
    if (!this._worker) throw new Error("this SamplerWorker was disposed: expected a loaded model, found none");
    const { signal, ...rest } = options;
    const id = nextId++;
    const queue = [];
    let wake = null;
    const onMessage = (ev) => {
      if (ev.data && ev.data.id === id) {
        queue.push(ev.data);
        if (wake) wake();
      }
    };
    const onAbort = () => this._worker && this._worker.postMessage({ type: "abort", target: id });
    this._worker.addEventListener("message", onMessage);
    if (signal) {
      if (signal.aborted) throw new DOMException("The operation was aborted.", "AbortError");
      signal.addEventListener("abort", onAbort, { once: true });
    }
    this._worker.postMessage({ id, type: "sample", options: rest });
    try {
      for (;;) {
        while (queue.length === 0) await new Promise((r) => (wake = r));
        const m = queue.shift();
        if (m.type === "frame") yield m.frame;
        else if (m.type === "done") return;
        else if (m.type === "error") throw rebuildError(m);
      }
    } finally {
      this._worker.removeEventListener("message", onMessage);
      if (signal) signal.removeEventListener("abort", onAbort);
    }
  }

  /** Frees the model and stops the worker. */
  dispose() {
    if (this._worker) {
      this._worker.terminate();
      this._worker = null;
    }
  }
}

function request(worker, msg, signal, onOther) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    const onAbort = () => worker.postMessage({ type: "abort", target: id });
    const onMessage = (ev) => {
      const m = ev.data;
      if (!m || m.id !== id) return;
      if (m.type === "loaded" || m.type === "done") {
        cleanup();
        resolve(m);
      } else if (m.type === "error") {
        cleanup();
        reject(rebuildError(m));
      } else if (onOther) onOther(m);
    };
    const onError = (ev) => {
      cleanup();
      reject(new Error(`worker failed to start: ${ev.message || "script error"}`));
    };
    function cleanup() {
      worker.removeEventListener("message", onMessage);
      worker.removeEventListener("error", onError);
      if (signal) signal.removeEventListener("abort", onAbort);
    }
    worker.addEventListener("message", onMessage);
    worker.addEventListener("error", onError);
    if (signal) {
      if (signal.aborted) {
        cleanup();
        reject(new DOMException("The operation was aborted.", "AbortError"));
        return;
      }
      signal.addEventListener("abort", onAbort, { once: true });
    }
    worker.postMessage({ id, ...msg });
  });
}
