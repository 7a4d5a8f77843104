// SamplerWorker (pkg/worker-client.js and its worker, pkg/worker.js) in headless Chromium: the
// package's API run in a Web Worker, frames carrying ImageBitmaps. Its failure classes (a panic
// or crash in the worker, break / dispose / abort, storage and network faults) are asserted next
// to the main thread's in reliability.test.mjs. Every page fails its test on an uncaught page error.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { openSuite, closeSuite, assertNoPageErrors } from "./harness.mjs";

let page;
const suite = {};

before(async () => ({ page } = await openSuite(suite)));
after(() => closeSuite(suite));
afterEach(assertNoPageErrors);

test("the worker entry samples off the main thread", async () => {
  const r = await page.evaluate(async () => {
    const s = await wd.SamplerWorker.load("/m/cc.int8.safetensors", { backend: "cpu" });
    const frames = [];
    for await (const f of s.sample({ steps: 4, previewEvery: 2, seed: 2, classLabels: [0] })) {
      frames.push({ step: f.step, final: f.final, bitmap: f.images[0] instanceof ImageBitmap, w: f.images[0].width });
    }
    const backend = s.backend;
    s.dispose();
    return { frames, backend };
  });
  assert.equal(r.backend, "cpu");
  assert.deepEqual(r.frames.map((f) => f.step), [2, 4]);
  assert.ok(r.frames.every((f) => f.bitmap && f.w === 16));
  assert.equal(r.frames.at(-1).final, true);
});
