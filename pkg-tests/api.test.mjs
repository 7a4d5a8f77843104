// The package's main-thread API (Sampler, pkg/) in headless Chromium with real WebGPU on
// SwiftShader: loading, frames, seeds, the CLI's pixels, backends, abort, bad sources and the
// Cache API. Run by scripts/test.sh after scripts/build.sh: `node --test pkg-tests/`. SamplerWorker
// is in worker.test.mjs, the failure classes on both sides (panics, crashed workers, break /
// dispose / abort, storage and network faults) in reliability.test.mjs, the demo in
// demo.test.mjs. Every page fails its test on an uncaught page error.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { cli, openSuite, closeSuite, launch, watch, assertNoPageErrors, startServer, REPO, NO_GPU_ARGS, newPage as openPage } from "./harness.mjs";

let server, browser, page, MODELS;
const suite = {};

const newPage = (b = browser) => openPage(b, server);

before(async () => ({ models: MODELS, server, browser, page } = await openSuite(suite)));
after(() => closeSuite(suite));
afterEach(assertNoPageErrors);

test("load reports progress and exposes config and backend", async () => {
  const r = await page.evaluate(async () => {
    const events = [];
    const s = await wd.Sampler.load("/m/cc.int8.safetensors", { backend: "cpu", onProgress: (p) => events.push(p) });
    const out = { backend: s.backend, config: s.config, events };
    s.dispose();
    return out;
  });
  assert.equal(r.backend, "cpu");
  assert.ok(r.events.length >= 1);
  const last = r.events.at(-1);
  assert.equal(last.loaded, last.total);
  assert.ok(last.total > 10000);
  assert.equal(r.config.quantization, "int8");
  assert.equal(r.config.nullClass, 4);
  assert.deepEqual(r.config.classNames, ["a", "b", "c", "d", "null"]);
  assert.deepEqual(r.config.sampleSize, [16, 16]);
});

test("each scheduler yields frames in order with the final one last", async () => {
  const r = await page.evaluate(async () => {
    const s = await wd.Sampler.load("/m/cc.int8.safetensors", { backend: "cpu" });
    const out = {};
    for (const scheduler of ["ddpm", "ddim", "dpm++"]) {
      const frames = [];
      for await (const f of s.sample({ scheduler, steps: 7, previewEvery: 3, seed: 1, batch: 2, classLabels: [1, 2], guidanceScale: 2 })) {
        frames.push({ step: f.step, total: f.totalSteps, final: f.final, n: f.images.length, w: f.images[0].width, t: f.timestep });
      }
      out[scheduler] = frames;
    }
    s.dispose();
    return out;
  });
  for (const [scheduler, frames] of Object.entries(r)) {
    assert.deepEqual(frames.map((f) => f.step), [3, 6, 7], scheduler);
    assert.deepEqual(frames.map((f) => f.final), [false, false, true], scheduler);
    assert.ok(frames.every((f) => f.total === 7 && f.n === 2 && f.w === 16), scheduler);
    assert.ok(frames[0].t > frames[2].t, `${scheduler}: timesteps descend`);
  }
});

async function finalPixels(p, opts) {
  return p.evaluate(async (opts) => {
    const s = await wd.Sampler.load(opts.url, { backend: opts.backend });
    let last;
    for await (const f of s.sample(opts.sample)) last = f;
    s.dispose();
    return Array.from(last.images[0].data);
  }, opts);
}

test("same seed gives the same pixels, another seed other pixels", async () => {
  const o = { url: "/m/cc.int8.safetensors", backend: "cpu", sample: { steps: 5, seed: 11, classLabels: [2] } };
  const a = await finalPixels(page, o);
  const b = await finalPixels(page, o);
  const c = await finalPixels(page, { ...o, sample: { ...o.sample, seed: 12 } });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test("the browser gives the native CLI's pixels for the same seed", async () => {
  const png = path.join(MODELS, "cli.npy");
  cli("sample", path.join(MODELS, "plain.f32.safetensors"), "--scheduler", "ddim", "--steps", "6", "--seed", "21", "-o", path.join(MODELS, "cli.png"), "--out-npy", png);
  const buf = fs.readFileSync(png);
  const hl = buf.readUInt16LE(8);
  const values = new Float32Array(buf.buffer.slice(buf.byteOffset + 10 + hl, buf.byteOffset + buf.length));
  const px = await finalPixels(page, { url: "/m/plain.f32.safetensors", backend: "cpu", sample: { scheduler: "ddim", steps: 6, seed: 21 } });
  const plane = 64;
  let worst = 0;
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const want = Math.round(Math.min(1, Math.max(0, values[c * plane + i] / 2 + 0.5)) * 255);
      worst = Math.max(worst, Math.abs(px[i * 4 + c] - want));
    }
  }
  assert.ok(worst <= 1, `max pixel difference ${worst}`);
});

test("WebGPU (SwiftShader) and CPU backends agree", async () => {
  const o = { url: "/m/plain.f32.safetensors", sample: { scheduler: "dpm++", steps: 3, seed: 5 } };
  const cpu = await finalPixels(page, { ...o, backend: "cpu" });
  const gpu = await finalPixels(page, { ...o, backend: "webgpu" });
  const worst = cpu.reduce((m, v, i) => Math.max(m, Math.abs(v - gpu[i])), 0);
  assert.ok(worst <= 2, `max pixel difference ${worst}`);
  const backend = await page.evaluate(async () => {
    const s = await wd.Sampler.load("/m/plain.f32.safetensors", { backend: "auto" });
    const b = s.backend;
    s.dispose();
    return b;
  });
  assert.equal(backend, "cpu", "auto must treat SwiftShader as a software adapter");
});

test("falls back to the CPU when WebGPU is unavailable", async () => {
  const b = await launch(NO_GPU_ARGS);
  try {
    const p = await newPage(b);
    const r = await p.evaluate(async () => {
      const s = await wd.Sampler.load("/m/plain.f32.safetensors");
      let frames = 0;
      for await (const f of s.sample({ steps: 2, seed: 1 })) frames++;
      const err = await wd.Sampler.load("/m/plain.f32.safetensors", { backend: "webgpu" }).then(() => null, (e) => e.message);
      return { backend: s.backend, reason: s.backendReason, frames, err };
    });
    assert.equal(r.backend, "cpu");
    assert.equal(r.reason, "auto: no WebGPU adapter; using the CPU");
    assert.equal(r.frames, 2);
    assert.deepEqual(r.err, 'backend "webgpu": expected a WebGPU adapter, found none (no WebGPU adapter)');
  } finally {
    await b.close();
  }
});

test("abort stops a download and a sampling loop, and the sampler stays usable", async () => {
  const r = await page.evaluate(async () => {
    const ac = new AbortController();
    let progressed = 0;
    const dl = wd.Sampler.load("/slow/m/cc.int8.safetensors", {
      signal: ac.signal,
      onProgress: () => {
        if (++progressed === 2) ac.abort();
      },
    }).then(() => "loaded", (e) => e.name);
    const downloadResult = await dl;
    const s = await wd.Sampler.load("/m/cc.int8.safetensors", { backend: "cpu" });
    const ac2 = new AbortController();
    const steps = [];
    let sampleResult = "finished";
    try {
      for await (const f of s.sample({ steps: 50, seed: 1, signal: ac2.signal })) {
        steps.push(f.step);
        if (f.step === 3) ac2.abort();
      }
    } catch (e) {
      sampleResult = e.name;
    }
    let again = 0;
    for await (const f of s.sample({ steps: 2, seed: 1 })) again = f.step;
    s.dispose();
    return { downloadResult, progressed, sampleResult, steps, again };
  });
  assert.equal(r.downloadResult, "AbortError");
  assert.equal(r.sampleResult, "AbortError");
  assert.deepEqual(r.steps, [1, 2, 3], "no frame after the abort");
  assert.equal(r.again, 2, "the sampler works after an abort");
});

test("bad sources reject with clear messages", async () => {
  const r = await page.evaluate(async () => {
    const bytes = new Uint8Array(await (await fetch("/m/cc.int8.safetensors")).arrayBuffer());
    const loaded = async (f) => {
      const s = await wd.Sampler.load(bytes, { backend: "cpu" });
      try {
        return await f(s);
      } finally {
        s.dispose();
      }
    };
    return {
      notFound: await settle(wd.Sampler.load("/m/missing.safetensors", { backend: "cpu" })),
      integrity: await settle(wd.Sampler.load("/m/cc.int8.safetensors", { backend: "cpu", integrity: "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" })),
      badIntegrity: await settle(wd.Sampler.load(bytes, { integrity: "md5-xyz" })),
      truncated: await settle(wd.Sampler.load("/m/truncated.safetensors", { backend: "cpu" })),
      notModel: await settle(wd.Sampler.load("/m/not-a-model.safetensors", { backend: "cpu" })),
      badBackend: await settle(wd.Sampler.load(bytes, { backend: "webgl" })),
      badOption: await loaded((s) => settle(s.sample({ scheduler: "heun" }).next())),
      disposed: await settle(wd.Sampler.load(bytes, { backend: "cpu" }).then((s) => { s.dispose(); return s.sample({}).next(); })),
      badClass: await loaded((s) => settle(s.sample({ classLabels: [9] }).next())),
      busy: await loaded(async (s) => {
        const first = s.sample({ steps: 3 });
        await first.next();
        const second = await settle(s.sample({ steps: 3 }).next());
        await first.return();
        return second;
      }),
    };
  });
  const u = (p) => `${server.url}${p}`;
  assert.deepEqual(r.notFound, { name: "NetworkError", message: `fetching ${u("/m/missing.safetensors")} failed: HTTP 404 Not Found` });
  assert.equal(r.integrity.name, "IntegrityError");
  assert.match(r.integrity.message, new RegExp(`^integrity mismatch for ${u("/m/cc.int8.safetensors")}: expected sha256-A+=, found sha256-[A-Za-z0-9+/]{43}=$`));
  assert.deepEqual(r.badIntegrity, { name: "InvalidArgumentError", message: 'integrity: expected "sha256-<base64>", found "md5-xyz"' });
  assert.equal(r.truncated.name, "FormatError");
  assert.ok(r.truncated.message.startsWith(`${u("/m/truncated.safetensors")}: `), r.truncated.message);
  assert.match(r.truncated.message, /expected .*found/);
  assert.equal(r.notModel.name, "FormatError");
  assert.ok(r.notModel.message.startsWith(`${u("/m/not-a-model.safetensors")}: `), r.notModel.message);
  assert.deepEqual(r.badBackend, { name: "InvalidArgumentError", message: 'backend: expected "auto", "webgpu" or "cpu", found "webgl"' });
  assert.deepEqual(r.badOption, { name: "InvalidArgumentError", message: 'scheduler: expected `ddpm`, `ddim`, `dpm++`, `euler`, `euler-a`, `lcm` or `cm`, found `heun`' });
  assert.deepEqual(r.disposed, { name: "DisposedError", message: "this Sampler was disposed: expected a loaded model, found none" });
  assert.equal(r.badClass.name, "InvalidArgumentError");
  assert.match(r.badClass.message, /class label: expected 0 to 4, found 9/);
  assert.deepEqual(r.busy, { name: "BusyError", message: "this Sampler is already sampling: expected one run at a time, found two" });
});

test("a cached model loads with the server stopped", async () => {
  const own = await startServer({ roots: { "/": REPO, "/m/": MODELS } });
  const p = watch(await browser.newPage());
  await p.goto(`${own.url}/pkg-tests/page.html`);
  await p.waitForFunction(() => window.ready === true);
  await p.evaluate(async () => {
    // Import the wasm module now, so that nothing but the model would need the network later.
    const s = await wd.Sampler.load("/m/cc.int8.safetensors", { backend: "cpu", cache: true });
    s.dispose();
  });
  await own.close();
  const r = await p.evaluate(async () => {
    const s = await wd.Sampler.load("/m/cc.int8.safetensors", { backend: "cpu", cache: true });
    let frames = 0;
    for await (const f of s.sample({ steps: 2, seed: 3 })) frames++;
    s.dispose();
    // A corrupt cached copy is detected, evicted and (here, with no server) the load fails cleanly.
    const cache = await caches.open("wasm-diffusion-models-v1");
    const key = new URL("/m/cc.int8.safetensors", location.href).href;
    await cache.put(key, new Response(new Uint8Array([1, 2, 3])));
    const err = await wd.Sampler.load("/m/cc.int8.safetensors", { backend: "cpu", cache: true }).then(() => "loaded", (e) => e.message);
    const evicted = !(await cache.match(key));
    return { frames, err, evicted };
  });
  await p.close();
  assert.equal(r.frames, 2);
  assert.match(r.err, /expected|fetching/);
  assert.ok(r.evicted, "the corrupt copy must be evicted");
});
