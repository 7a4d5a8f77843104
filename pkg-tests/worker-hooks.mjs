// Test hooks for the package's worker, installed by hooked-worker.mjs before pkg/worker.js runs:
// the fault injection of hooks.mjs, chosen by the worker script's query string, and test
// messages (no id, so worker.js ignores them):
//   { type: "test-panic", kind }   panics in the worker's wasm ("sync" or "async")
//   { type: "test-crash" }         an uncaught exception in the worker
//   { type: "test-stats" }         answers { type: "test-stats", stats } (what is alive)
//   { type: "test-lose-device" }   destroys the recorded WebGPU devices (needs ?gpu=record)
import { install } from "./hooks.mjs";
import * as wd from "/pkg/index.js";

install(self.location.search);

self.addEventListener("message", (event) => {
  const m = event.data || {};
  if (m.type === "test-panic") {
    wd._testPanic(m.kind).catch((e) => self.postMessage({ type: "test-panic", name: e.name, message: e.message }));
  } else if (m.type === "test-crash") {
    setTimeout(() => {
      throw new Error("test crash");
    });
  } else if (m.type === "test-stats") {
    self.postMessage({ type: "test-stats", stats: wd._stats() });
  } else if (m.type === "test-lose-device") {
    for (const d of globalThis.__devices || []) d.destroy();
  }
});
