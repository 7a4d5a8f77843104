// The Web Worker entry: runs a Sampler off the main thread. Driven by SamplerWorker
// (worker-client.js); frames travel back as transferable ImageBitmaps.
import { Sampler } from "./index.js";

let sampler = null;
const controllers = new Map();

function post(msg, transfer) {
  self.postMessage(msg, transfer || []);
}

self.onmessage = async (event) => {
  const msg = event.data || {};
  const { id, type } = msg;
  if (type === "abort") {
    const c = controllers.get(msg.target);
    if (c) c.abort();
    return;
  }
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
      });
      post({ id, type: "loaded", backend: sampler.backend, config: sampler.config });
    } else if (type === "sample") {
      if (!sampler) throw new Error("no model loaded in the worker: expected load() first, found none");
      for await (const frame of sampler.sample({ ...msg.options, signal: controller.signal })) {
        const bitmaps = await Promise.all(frame.images.map((im) => createImageBitmap(im)));
        const { images, ...rest } = frame;
        post({ id, type: "frame", frame: { ...rest, images: bitmaps } }, bitmaps);
      }
      post({ id, type: "done" });
    } else if (type === "dispose") {
      if (sampler) sampler.dispose();
      sampler = null;
      post({ id, type: "done" });
    } else {
      throw new Error(`worker message: expected load, sample, abort or dispose, found ${type}`);
    }
  } catch (e) {
    post({ id, type: "error", name: e && e.name, message: e && e.message ? e.message : String(e) });
  } finally {
    controllers.delete(id);
  }
};
