// The threaded CPU build (pkg/wasm_diffusion_threads_bg.wasm) in headless Chromium: which pages
// get it (cross-origin isolated ones, in a worker or with cores to spare), `threads` and
// `threadsReason` on Sampler and SamplerWorker, and its images bit-identical to the
// single-threaded build's for the shipped emoji model (large enough for the kernels to split
// their work) and the latent pipeline. The kernels' splits are unit-tested natively
// (`threads_give_the_same_bits` in src/backend/cpu/).
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { cli, makeModels, startServer, launch, watch, assertNoPageErrors, REPO } from "./harness.mjs";

let browser, isolated, plain, models, page;

before(async () => {
  models = makeModels();
  cli("convert", path.join(REPO, "tests/fixtures/pipelines/sd_tiny"), "--quant", "f32", "-o", path.join(models, "sd.f32.safetensors"));
  const roots = { "/": REPO, "/m/": models };
  isolated = await startServer({ roots, isolated: true });
  plain = await startServer({ roots });
  browser = await launch();
  page = await open(isolated);
});
after(async () => {
  await browser?.close();
  await isolated?.close();
  await plain?.close();
});
afterEach(assertNoPageErrors);

async function open(server) {
  const p = watch(await browser.newPage());
  await p.goto(`${server.url}/pkg-tests/page.html`);
  await p.waitForFunction(() => window.ready === true);
  return p;
}

/** Loads `url` with `options` (on the CPU) in a SamplerWorker or on the page, samples, and
 * returns threads, reason and the final frame's pixels of every image. */
function sampleIn(p, { url, worker, options = {}, sample }) {
  return p.evaluate(
    async ({ url, worker, options, sample }) => {
      const s = await (worker ? wd.SamplerWorker : wd.Sampler).load(url, { backend: "cpu", ...options });
      let last;
      for await (const f of s.sample(sample)) last = f;
      const pixels = last.images.map((im) => {
        if (im instanceof ImageData) return Array.from(im.data);
        const c = new OffscreenCanvas(im.width, im.height);
        const ctx = c.getContext("2d");
        ctx.drawImage(im, 0, 0);
        return Array.from(ctx.getImageData(0, 0, im.width, im.height).data);
      });
      const r = { threads: s.threads, reason: s.threadsReason, backend: s.backend, pixels, cores: navigator.hardwareConcurrency, coi: crossOriginIsolated };
      s.dispose();
      return r;
    },
    { url, worker, options, sample },
  );
}

const EMOJI = { url: "/models/emoji/emoji.int8.safetensors", sample: { steps: 3, seed: 7, batch: 2, classLabels: [3, 7], guidanceScale: 1.5, scheduler: "dpm++" } };

test("a worker on a cross-origin isolated page runs one thread per core, with the same pixels as one thread", async () => {
  const threaded = await sampleIn(page, { ...EMOJI, worker: true });
  const single = await sampleIn(page, { ...EMOJI, worker: true, options: { threads: 1 } });
  assert.equal(threaded.coi, true);
  assert.equal(threaded.backend, "cpu");
  const want = Math.min(threaded.cores, 8);
  assert.equal(threaded.threads, want, threaded.reason);
  assert.match(threaded.reason, want > 1 ? /cross-origin isolated and navigator\.hardwareConcurrency is \d+/ : /hardwareConcurrency is 1/);
  assert.equal(single.threads, 1);
  assert.equal(single.reason, "the threads option is 1");
  assert.equal(threaded.pixels.length, 2);
  assert.ok(threaded.pixels[0].length === 32 * 32 * 4);
  // Bit-identical: the parts of a split compute exactly what one thread does.
  assert.deepEqual(threaded.pixels, single.pixels);
});

test("the latent pipeline gives the same pixels on threads", async () => {
  const run = { url: "/m/sd.f32.safetensors", sample: { prompt: "a red apple", steps: 3, seed: 5, guidanceScale: 3, scheduler: "ddim" } };
  const threaded = await sampleIn(page, { ...run, worker: true, options: { threads: 2 } });
  const single = await sampleIn(page, { ...run, worker: true, options: { threads: 1 } });
  assert.equal(threaded.threads, 2, threaded.reason);
  assert.deepEqual(threaded.pixels, single.pixels);
});

test("the page's main thread keeps a core for itself; the threads option overrides", async () => {
  const p = await open(isolated);
  try {
    const auto = await sampleIn(p, { ...EMOJI, worker: false });
    const free = auto.cores - 1;
    if (free <= 1) {
      assert.equal(auto.threads, 1);
      assert.match(auto.reason, /main thread.*SamplerWorker \(a worker\) gets threads/);
    } else {
      assert.equal(auto.threads, Math.min(free, 8), auto.reason);
      assert.match(auto.reason, /less one core for the main thread/);
    }
  } finally {
    await p.close();
  }
  const p2 = await open(isolated);
  try {
    const forced = await sampleIn(p2, { ...EMOJI, worker: false, options: { threads: 2 } });
    assert.equal(forced.threads, 2);
    assert.equal(forced.reason, "the threads option is 2 (the page is cross-origin isolated)");
    // The instance is the threaded CPU build now: WebGPU is refused with a reason, "auto" takes the CPU.
    const r = await p2.evaluate(async () => {
      const webgpu = await settle(wd.Sampler.load("/m/cc.int8.safetensors", { backend: "webgpu" }));
      const s = await wd.Sampler.load("/m/cc.int8.safetensors");
      const auto = { backend: s.backend, reason: s.backendReason, threads: s.threads };
      s.dispose();
      return { webgpu, auto };
    });
    assert.equal(r.webgpu.name, "BackendError");
    assert.match(r.webgpu.message, /expected an instance with WebGPU, found the threaded CPU build/);
    assert.equal(r.auto.backend, "cpu");
    assert.equal(r.auto.threads, 2);
    // (SwiftShader is a software adapter, which "auto" passes over anyway.)
    assert.match(r.auto.reason, /threaded CPU build|software one/);
    assert.deepEqual(forced.pixels, (await sampleIn(page, { ...EMOJI, worker: true, options: { threads: 1 } })).pixels);
  } finally {
    await p2.close();
  }
});

test("a page that is not cross-origin isolated runs one thread and says why", async () => {
  const p = await open(plain);
  try {
    const r = await sampleIn(p, { url: "/m/cc.int8.safetensors", worker: true, sample: { steps: 2, seed: 1, classLabels: [0] } });
    assert.equal(r.coi, false);
    assert.equal(r.threads, 1);
    assert.match(r.reason, /not cross-origin isolated.*Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp/);
  } finally {
    await p.close();
  }
});

test("a bad threads option is refused with what was expected", async () => {
  const r = await page.evaluate(async () => Promise.all([0, 1.5, 65, "2"].map((threads) => settle(wd.Sampler.load("/m/cc.int8.safetensors", { backend: "cpu", threads })))));
  for (const [i, v] of [0, 1.5, 65, '"2"'].entries()) {
    assert.equal(r[i].name, "InvalidArgumentError");
    assert.match(r[i].message, /threads: expected an integer from 1 to 64, found/, String(v));
  }
});
