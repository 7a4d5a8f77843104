// @ts-check
// The Web Worker entry: runs a Sampler off the main thread. Driven by SamplerWorker
// (worker-client.js); frames travel back as transferable ImageBitmaps.
//
// Protocol: the client posts { id, type: "load" | "sample" | "addNoise" | "tokenize" | "dispose", ... } and
// { type: "abort", target: id }; the worker answers with messages carrying the same id:
// "progress", "warning", "loaded", "frame", "result" (addNoise's values, tokenize's tokens), "done" or "error"
// ({ name, message }). "ready" (no
// id) says the script started. Runs are serialised: a sample waits for the previous run to
// finish, which the client aborts when its caller leaves the loop, so the next sample() starts
// within one step instead of failing with "already sampling".
import { Sampler } from "./index.js";
import * as internals from "./index.js";

let sampler = null;
const controllers = new Map();
/** The run in progress (a promise that settles when it has stopped), or null. */
let running = null;

function post(msg, transfer) {
  self.postMessage(msg, transfer || []);
}

function postError(id, e) {
  post({ id, type: "error", name: (e && e.name) || "Error", message: e && e.message ? e.message : String(e) });
}

async function sample(id, options, signal) {
  const previous = running;
  /** @type {() => void} */
  let release = () => {};
  const mine = new Promise((r) => (release = () => r(undefined)));
  running = mine;
  try {
    if (previous) await previous;
    if (!sampler) throw new Error("no model loaded in the worker: expected load() first, found none");
    for await (const frame of sampler.sample({ ...options, signal })) {
      const bitmaps = await Promise.all(frame.images.map((im) => createImageBitmap(im)));
      const { images, ...rest } = frame;
      post({ id, type: "frame", frame: { ...rest, images: bitmaps } }, bitmaps);
    }
    post({ id, type: "done" });
  } finally {
    release();
    if (running === mine) running = null;
  }
}

self.onmessage = async (event) => {
  const msg = event.data || {};
  const { id, type } = msg;
  if (type === "abort") {
    const c = controllers.get(msg.target);
    if (c) c.abort();
    return;
  }
  if (type === "threadStats") {
    // A bench hook (bench/cpu.mjs --thread-stats), outside the protocol.
    post({ type: "threadStats", stats: /** @type {any} */ (internals)._threadStats(Boolean(msg.on)) });
    return;
  }
  if (id === undefined) return; // not addressed to the protocol (e.g. a test hook's message)
  const controller = new AbortController();
  controllers.set(id, controller);
  try {
    if (type === "load") {
      if (sampler) sampler.dispose();
      sampler = null;
      sampler = await Sampler.load(msg.source, {
        ...msg.options,
        signal: controller.signal,
        onProgress: (p) => post({ id, type: "progress", loaded: p.loaded, total: p.total }),
        onWarning: (message) => post({ id, type: "warning", message }),
      });
      post({ id, type: "loaded", backend: sampler.backend, backendReason: sampler.backendReason, threads: sampler.threads, threadsReason: sampler.threadsReason, config: sampler.config });
    } else if (type === "sample") {
      await sample(id, msg.options, controller.signal);
    } else if (type === "addNoise") {
      if (!sampler) throw new Error("addNoise: expected a loaded model, found none");
      const values = sampler.addNoise(msg.x0, msg.shape, msg.timestep, msg.seed);
      post({ id, type: "result", values }, [values.buffer]);
    } else if (type === "tokenize") {
      if (!sampler) throw new Error("tokenize: expected a loaded model, found none");
      post({ id, type: "result", tokens: sampler.tokenize(msg.text) });
    } else if (type === "dispose") {
      if (sampler) sampler.dispose();
      sampler = null;
      post({ id, type: "done" });
    } else {
      throw new Error(`worker message: expected load, sample, addNoise, tokenize, abort or dispose, found ${type}`);
    }
  } catch (e) {
    postError(id, e);
  } finally {
    controllers.delete(id);
  }
};

post({ type: "ready" });
