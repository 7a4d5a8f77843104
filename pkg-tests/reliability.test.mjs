// Failure classes of the JS API, each on the main thread (Sampler) and in the worker
// (SamplerWorker), each asserting the exact message a user sees (RELIABILITY.md lists them).
// Faults are real where a test can make them (a panic in the wasm, an uncaught exception in the
// worker, a failed fetch, a gzip server) and injected by pkg-tests/hooks.mjs where only a broken
// browser could (full or disabled storage, a GPU without a device). Every page fails its test on
// an uncaught page error.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { openSuite, closeSuite, newPage, watch, assertNoPageErrors } from "./harness.mjs";

let server, browser, models, page;
const suite = {};

before(async () => ({ models, server, browser, page } = await openSuite(suite)));
after(() => closeSuite(suite));
afterEach(assertNoPageErrors);

const CC = "/m/cc.int8.safetensors";
const ccUrl = () => `${server.url}${CC}`;
const HOOKED = "/pkg-tests/hooked-worker.mjs";

/** The PanicError message for the deliberate panic of `testPanic(kind)`, in a page or a worker. */
function panicMessage(kind, where) {
  const what = kind === "sync" ? "a deliberate panic in a synchronous export" : "a deliberate panic in an async export";
  const again = where === "worker" ? "start a new worker \\(SamplerWorker\\.load does\\)" : "reload the page";
  return new RegExp(`^wasm-diffusion crashed: panicked at src/web/mod\\.rs:\\d+:\\d+:\\ntestPanic: ${what}\\nThe wasm module is dead: ${again} to load a model again\\.$`);
}

// 1. A panic in the wasm rejects what is pending, with the panic message; the sampler says it is dead.

for (const kind of ["sync", "async"]) {
  test(`a panic in ${kind === "sync" ? "a sync" : "an async"} export rejects with a PanicError and every later call says the module is dead (main thread)`, async () => {
    const p = await newPage(browser, server);
    const r = await p.evaluate(async ({ url, kind }) => {
      const s = await wd.Sampler.load(url, { backend: "cpu" });
      const panic = await settle(wd._testPanic(kind));
      return {
        panic,
        sample: await settle(s.sample({ steps: 2 }).next()),
        backend: await settle((async () => s.backend)()),
        load: await settle(wd.Sampler.load(url, { backend: "cpu" })),
        noise: await settle(wd.seededNoise(1, 1, 4)),
        stats: wd._stats(),
      };
    }, { url: CC, kind });
    assert.equal(r.panic.name, "PanicError");
    assert.match(r.panic.message, panicMessage(kind, "page"));
    for (const later of [r.sample, r.backend, r.load, r.noise]) assert.deepEqual(later, r.panic);
    assert.equal(r.stats.crashed, true);
    assert.equal(r.stats.pending, 0);
    await p.close();
  });
}

test("a panic in the worker's wasm rejects the sample in flight; SamplerWorker.load works again (worker)", async () => {
  const r = await page.evaluate(async ({ url, worker }) => {
    const s = await wd.SamplerWorker.load(url, { backend: "cpu", workerUrl: worker });
    const inFlight = await faultInFlight(s, () => askWorker(s, { type: "test-panic", kind: "sync" }));
    const later = await settle(s.sample({ steps: 2 }).next());
    const s2 = await wd.SamplerWorker.load(url, { backend: "cpu" });
    const steps = [];
    for await (const f of s2.sample({ steps: 2 })) steps.push(f.step);
    s2.dispose();
    return { inFlight, later, steps };
  }, { url: CC, worker: HOOKED });
  assert.equal(r.inFlight.name, "PanicError");
  assert.match(r.inFlight.message, panicMessage("sync", "worker"));
  assert.deepEqual(r.later, r.inFlight);
  assert.deepEqual(r.steps, [1, 2]);
});

test("a panic in an async export inside the worker rejects its promise instead of hanging (worker)", async () => {
  const r = await page.evaluate(async ({ url, worker }) => {
    const s = await wd.SamplerWorker.load(url, { backend: "cpu", workerUrl: worker });
    const answer = await askWorker(s, { type: "test-panic", kind: "async" });
    const later = await settle(s.sample({ steps: 2 }).next());
    s.dispose();
    return { answer: { name: answer.name, message: answer.message }, later };
  }, { url: CC, worker: HOOKED });
  assert.equal(r.answer.name, "PanicError");
  assert.match(r.answer.message, panicMessage("async", "worker"));
  // The panic killed the worker's wasm: the next sample says so (the client learns it then).
  assert.equal(r.later.name, "PanicError");
  assert.match(r.later.message, panicMessage("async", "worker"));
});

// 2. A crashed worker rejects every pending request.

test("an uncaught exception in the worker rejects the sample in flight and later calls (worker)", async () => {
  const r = await page.evaluate(async ({ url, worker }) => {
    const s = await wd.SamplerWorker.load(url, { backend: "cpu", workerUrl: worker });
    const inFlight = await faultInFlight(s, () => s._conn.worker.postMessage({ type: "test-crash" }));
    return { inFlight, later: await settle(s.sample({ steps: 2 }).next()) };
  }, { url: CC, worker: HOOKED });
  const expected = { name: "WorkerError", message: "SamplerWorker: the worker crashed (Uncaught Error: test crash); load a new SamplerWorker" };
  assert.deepEqual(r.inFlight, expected);
  assert.deepEqual(r.later, expected);
});

test("a messageerror from the worker rejects the sample in flight (worker)", async () => {
  const r = await page.evaluate(async ({ url }) => {
    const s = await wd.SamplerWorker.load(url, { backend: "cpu" });
    // What the browser fires when a message cannot be deserialised.
    return faultInFlight(s, () => s._conn.worker.dispatchEvent(new MessageEvent("messageerror")));
  }, { url: CC });
  assert.deepEqual(r, { name: "WorkerError", message: "SamplerWorker: a message from the worker could not be read (messageerror); load a new SamplerWorker" });
});

test("a worker script that fails to load rejects SamplerWorker.load (worker)", async () => {
  const r = await page.evaluate(async ({ url }) => settle(wd.SamplerWorker.load(url, { backend: "cpu", workerUrl: "/pkg-tests/missing-worker.js" })), { url: CC });
  assert.deepEqual(r, { name: "WorkerError", message: "SamplerWorker: the worker script /pkg-tests/missing-worker.js failed to start (script error)" });
});

test("a bad file in SamplerWorker.load rejects with the parser's error, name kept (main thread and worker)", async () => {
  const r = await page.evaluate(async () => ({
    main: await settle(wd.Sampler.load("/m/not-a-model.safetensors", { backend: "cpu" })),
    worker: await settle(wd.SamplerWorker.load("/m/not-a-model.safetensors", { backend: "cpu" })),
  }));
  assert.equal(r.main.name, "FormatError");
  assert.ok(r.main.message.startsWith(`${server.url}/m/not-a-model.safetensors: `), r.main.message);
  assert.deepEqual(r.worker, r.main);
});

// 3. Leaving a run: break, dispose, abort.

test("a break out of sample() frees the run at once and the next sample() starts (main thread)", async () => {
  const r = await page.evaluate(async ({ url }) => {
    const s = await wd.Sampler.load(url, { backend: "cpu" });
    const before = wd._stats();
    for await (const f of s.sample({ steps: 1000 })) break;
    const afterBreak = wd._stats();
    const steps = [];
    for await (const f of s.sample({ steps: 2 })) steps.push(f.step);
    const memory = [s.memoryBytes, (await import("/pkg/wasm_diffusion.js")).wasmMemoryBytes()];
    s.dispose();
    return { ran: afterBreak.steps - before.steps, runs: afterBreak.runs - before.runs, steps, memory };
  }, { url: CC });
  assert.deepEqual({ ...r, memory: undefined }, { ran: 1, runs: 0, steps: [1, 2], memory: undefined });
  // sampler.memoryBytes is the instance's linear memory: whole 64 KiB pages.
  assert.equal(r.memory[0], r.memory[1]);
  assert.ok(r.memory[0] > 2 ** 20 && r.memory[0] % 65536 === 0, `memoryBytes ${r.memory[0]}`);
});

test("a break out of sample() stops the worker's run at once and the next sample() starts (worker)", async () => {
  const r = await page.evaluate(async ({ url, worker }) => {
    const s = await wd.SamplerWorker.load(url, { backend: "cpu", workerUrl: worker });
    for await (const f of s.sample({ steps: 1000 })) break;
    const steps = [];
    for await (const f of s.sample({ steps: 2 })) steps.push(f.step);
    const stats = (await askWorker(s, { type: "test-stats" })).stats;
    s.dispose();
    return { steps, stats };
  }, { url: CC, worker: HOOKED });
  assert.deepEqual(r.steps, [1, 2]);
  assert.equal(r.stats.runs, 0);
  // The abandoned run stopped within a few steps of the break (1000 if it had run on).
  assert.ok(r.stats.steps < 50, `the abandoned run went on for ${r.stats.steps - 2} steps`);
});

/**
 * dispose() of a `wd[which]` ("Sampler" or "SamplerWorker") in the loop body of a sample, and
 * from elsewhere while its iterator waits; what each rejected with, a later sample, and the
 * page's _stats() afterwards.
 */
const disposeDuringSample = (which) =>
  page.evaluate(async ({ url, which }) => {
    const S = wd[which];
    // Disposed in the loop body, between two frames.
    const a = await S.load(url, { backend: "cpu" });
    const inBody = await settle((async () => {
      for await (const f of a.sample({ steps: 1000 })) a.dispose();
    })());
    // Disposed from elsewhere while the iterator waits for a frame that is 1000 steps away.
    const b = await S.load(url, { backend: "cpu" });
    const it = b.sample({ steps: 1000, previewEvery: 1000 });
    const waiting = settle(it.next());
    setTimeout(() => b.dispose(), 20);
    return { inBody, waiting: await waiting, later: await settle(b.sample().next()), stats: wd._stats() };
  }, { url: CC, which });

test("dispose() during a sample rejects the iterator with a DisposedError (main thread)", async () => {
  const r = await disposeDuringSample("Sampler");
  assert.deepEqual(r.inBody, { name: "DisposedError", message: "this Sampler was disposed during sampling" });
  assert.deepEqual(r.waiting, { name: "DisposedError", message: "this Sampler was disposed during sampling" });
  assert.deepEqual(r.later, { name: "DisposedError", message: "this Sampler was disposed: expected a loaded model, found none" });
  assert.equal(r.stats.engines, 0);
  assert.equal(r.stats.runs, 0);
});

test("dispose() during a sample rejects the iterator with a DisposedError (worker)", async () => {
  const r = await disposeDuringSample("SamplerWorker");
  assert.deepEqual(r.inBody, { name: "DisposedError", message: "this SamplerWorker was disposed during sampling" });
  assert.deepEqual(r.waiting, { name: "DisposedError", message: "this SamplerWorker was disposed during sampling" });
  assert.deepEqual(r.later, { name: "DisposedError", message: "this SamplerWorker was disposed: expected a loaded model, found none" });
});

test("an already-aborted signal rejects at once and leaves nothing behind (main thread)", async () => {
  const url = "/m/aborted-before-the-request.safetensors";
  const r = await page.evaluate(async ({ url }) => {
    const ac = new AbortController();
    ac.abort();
    const load = await settle(wd.Sampler.load(url, { backend: "cpu", signal: ac.signal }));
    const s = await wd.Sampler.load("/m/cc.int8.safetensors", { backend: "cpu" });
    const before = wd._stats();
    const sample = await settle(s.sample({ steps: 2, signal: ac.signal }).next());
    const afterAbort = wd._stats();
    const steps = [];
    for await (const f of s.sample({ steps: 2 })) steps.push(f.step);
    s.dispose();
    return { load, sample, before, afterAbort, steps };
  }, { url });
  const aborted = { name: "AbortError", message: "signal is aborted without reason" };
  assert.deepEqual(r.load, aborted);
  assert.deepEqual(r.sample, aborted);
  assert.ok(!server.log.includes(url), "no request made");
  assert.deepEqual(r.afterAbort, r.before, "no run, step or pending promise");
  assert.deepEqual(r.steps, [1, 2], "the sampler is not left busy");
});

test("an already-aborted signal rejects at once and leaves nothing behind (worker)", async () => {
  const r = await page.evaluate(async ({ url }) => {
    let workers = 0;
    const Original = window.Worker;
    window.Worker = class extends Original {
      constructor(...args) {
        super(...args);
        workers++;
      }
    };
    try {
      const ac = new AbortController();
      ac.abort();
      const load = await settle(wd.SamplerWorker.load(url, { backend: "cpu", signal: ac.signal }));
      const startedByAbortedLoad = workers;
      const s = await wd.SamplerWorker.load(url, { backend: "cpu" });
      const sample = await settle(s.sample({ steps: 2, signal: ac.signal }).next());
      const handlers = s._conn.handlers.size;
      const steps = [];
      for await (const f of s.sample({ steps: 2 })) steps.push(f.step);
      s.dispose();
      return { load, startedByAbortedLoad, sample, handlers, steps };
    } finally {
      window.Worker = Original;
    }
  }, { url: CC });
  const aborted = { name: "AbortError", message: "signal is aborted without reason" };
  assert.deepEqual(r.load, aborted);
  assert.equal(r.startedByAbortedLoad, 0, "no worker started");
  assert.deepEqual(r.sample, aborted);
  assert.equal(r.handlers, 0, "no listener left registered");
  assert.deepEqual(r.steps, [1, 2]);
});

test("an abort during the backend set-up is honoured before anything is downloaded or loaded (main thread)", async () => {
  // The abort comes from the WebGPU adapter request: call 1 is the backend choice, call 2 the
  // device set-up inside the wasm. Both come before the download: the file streams into the
  // backend it is loaded on.
  for (const call of [1, 2]) {
    const p = await newPage(browser, server);
    const r = await p.evaluate(async ({ url, call }) => {
      (await import("/pkg-tests/hooks.mjs")).install(`abort-on-adapter=${call}`);
      globalThis.__abort = new AbortController();
      let downloaded = 0;
      const load = await settle(wd.Sampler.load(url, { backend: "webgpu", signal: __abort.signal, onProgress: (e) => (downloaded = e.loaded) }));
      // Whatever the wasm was doing when the abort came has finished by now.
      for (let i = 0; i < 200 && wd._stats().pending > 0; i++) await new Promise((r) => setTimeout(r, 25));
      return { load, downloaded, stats: wd._stats() };
    }, { url: CC, call });
    assert.deepEqual(r.load, { name: "AbortError", message: "signal is aborted without reason" }, `abort at adapter request ${call}`);
    assert.equal(r.downloaded, 0, "nothing downloaded");
    assert.equal(r.stats.engines, 0, "no engine left alive");
    assert.equal(r.stats.pending, 0);
    await p.close();
  }
});

test("an abort during load after the download is honoured and stops the worker (worker)", async () => {
  const r = await page.evaluate(async ({ url }) => {
    let terminated = 0;
    const terminate = Worker.prototype.terminate;
    Worker.prototype.terminate = function () {
      terminated++;
      return terminate.call(this);
    };
    try {
      const ac = new AbortController();
      const load = await settle(
        wd.SamplerWorker.load(url, {
          backend: "cpu",
          signal: ac.signal,
          onProgress: (e) => {
            if (e.loaded === e.total) ac.abort();
          },
        }),
      );
      return { load, terminated };
    } finally {
      Worker.prototype.terminate = terminate;
    }
  }, { url: CC });
  assert.deepEqual(r.load, { name: "AbortError", message: "signal is aborted without reason" });
  assert.equal(r.terminated, 1, "the worker, with everything it loaded, is gone");
});

// 4. The network and storage.

for (const [hook, warning] of [
  ["cache=put", (url) => `cache: storing ${url} in the Cache API failed (QuotaExceededError: test: the quota is exceeded); the next load downloads it again`],
  ["cache=open", () => "cache: the Cache API is unavailable (SecurityError: test: storage is disabled); loading without it"],
]) {
  test(`a Cache API that fails (${hook}) only warns: the load works (main thread)`, async () => {
    const p = await newPage(browser, server);
    const consoleWarnings = [];
    p.on("console", (m) => m.type() === "warning" && consoleWarnings.push(m.text()));
    const r = await p.evaluate(async ({ url, hook }) => {
      (await import("/pkg-tests/hooks.mjs")).install(hook);
      const warnings = [];
      const s = await wd.Sampler.load(url, { backend: "cpu", cache: true, onWarning: (m) => warnings.push(m) });
      let frames = 0;
      for await (const f of s.sample({ steps: 2 })) frames++;
      s.dispose();
      // Without onWarning the warning goes to the console.
      (await wd.Sampler.load(url, { backend: "cpu", cache: true })).dispose();
      return { warnings, frames, stats: wd._stats() };
    }, { url: CC, hook });
    assert.deepEqual(r.warnings, [warning(ccUrl())]);
    assert.equal(r.frames, 2);
    assert.equal(r.stats.engines, 0);
    assert.deepEqual(consoleWarnings, [`wasm-diffusion: ${warning(ccUrl())}`]);
    await p.close();
  });

  test(`a Cache API that fails (${hook}) only warns: the load works (worker)`, async () => {
    const r = await page.evaluate(async ({ url, worker }) => {
      const warnings = [];
      const s = await wd.SamplerWorker.load(url, { backend: "cpu", cache: true, onWarning: (m) => warnings.push(m), workerUrl: worker });
      let frames = 0;
      for await (const f of s.sample({ steps: 2 })) frames++;
      s.dispose();
      return { warnings, frames };
    }, { url: CC, worker: `${HOOKED}?${hook}` });
    assert.deepEqual(r.warnings, [warning(ccUrl())]);
    assert.equal(r.frames, 2);
  });
}

test("a gzip download (Content-Encoding, compressed Content-Length) loads (main thread and worker)", async () => {
  const size = fs.statSync(path.join(models, "cc.int8.safetensors")).size;
  const r = await page.evaluate(async () => {
    const out = {};
    for (const [name, S] of [["main", wd.Sampler], ["worker", wd.SamplerWorker]]) {
      const events = [];
      const s = await S.load("/gzip/m/cc.int8.safetensors", { backend: "cpu", onProgress: (e) => events.push(e) });
      let frames = 0;
      for await (const f of s.sample({ steps: 2 })) frames++;
      s.dispose();
      out[name] = { last: events.at(-1), frames };
    }
    return out;
  });
  for (const where of ["main", "worker"]) {
    assert.deepEqual(r[where], { last: { loaded: size, total: 0 }, frames: 2 }, where);
  }
});

/**
 * In a fresh page, the first fetch of pkg/wasm_diffusion_bg.wasm fails: `wd[which].load`
 * ("Sampler" or "SamplerWorker") then runs twice, the second load having to work; returns what
 * the first rejected with.
 */
async function wasmFetchFailsOnce(which) {
  const p = watch(await browser.newPage());
  const failOnce = () => p.route("**/pkg/wasm_diffusion_bg.wasm", (route) => route.abort(), { times: 1 });
  if (which === "Sampler") await failOnce();
  await p.goto(`${server.url}/pkg-tests/page.html`);
  await p.waitForFunction(() => window.ready === true);
  if (which === "SamplerWorker") {
    // The page's own module is loaded first, so the one failed fetch is the worker's.
    await p.evaluate(() => wd.seededNoise(1, 1, 1));
    await failOnce();
  }
  const r = await p.evaluate(async ({ url, which }) => {
    const first = await settle(wd[which].load(url, { backend: "cpu" }));
    const s = await wd[which].load(url, { backend: "cpu" });
    s.dispose();
    return { first };
  }, { url: CC, which });
  await p.close();
  return r;
}

test("a failed fetch of the wasm module rejects, and the next load fetches it again (main thread)", async () => {
  const r = await wasmFetchFailsOnce("Sampler");
  assert.deepEqual(r.first, { name: "NetworkError", message: `loading the wasm module ${server.url}/pkg/wasm_diffusion_bg.wasm failed: TypeError: Failed to fetch` });
});

test("a failed fetch of the wasm module in a worker rejects SamplerWorker.load, and the next load works (worker)", async () => {
  const r = await wasmFetchFailsOnce("SamplerWorker");
  assert.deepEqual(r.first, { name: "NetworkError", message: `loading the wasm module ${server.url}/pkg/wasm_diffusion_bg.wasm failed: TypeError: Failed to fetch` });
});

test("a file larger than the wasm heap is refused before it is downloaded (main thread and worker)", async () => {
  const huge = 5_000_000_000;
  const r = await page.evaluate(async ({ huge }) => {
    const max = (await import("/pkg/wasm_diffusion.js")).maxModelBytes();
    return {
      max,
      main: await settle(wd.Sampler.load(`/huge/${huge}`, { backend: "cpu" })),
      worker: await settle(wd.SamplerWorker.load(`/huge/${huge}`, { backend: "cpu" })),
    };
  }, { huge });
  assert.ok(r.max > 1e9 && r.max < huge, `maxModelBytes ${r.max}`);
  assert.deepEqual(r.main, {
    name: "MemoryLimitError",
    message: `${server.url}/huge/${huge}: the model file is ${huge} bytes (Content-Length), more than the ${r.max} bytes the wasm heap can take`,
  });
  // The worker's heap is its own (fresh, so it may take a little more).
  assert.equal(r.worker.name, "MemoryLimitError");
  assert.match(r.worker.message, new RegExp(`^${server.url}/huge/${huge}: the model file is ${huge} bytes \\(Content-Length\\), more than the \\d+ bytes the wasm heap can take$`));
});

// 5. Backends.

test('"auto" falls back to the CPU when WebGPU set-up fails, and says why (main thread and worker)', async () => {
  const p = await newPage(browser, server);
  const r = await p.evaluate(async ({ url, worker }) => {
    (await import("/pkg-tests/hooks.mjs")).install("gpu=no-device");
    const out = {};
    for (const [name, S, extra] of [["main", wd.Sampler, {}], ["worker", wd.SamplerWorker, { workerUrl: worker }]]) {
      const warnings = [];
      const s = await S.load(url, { onWarning: (m) => warnings.push(m), ...extra });
      let frames = 0;
      for await (const f of s.sample({ steps: 2 })) frames++;
      out[name] = { backend: s.backend, reason: s.backendReason, warnings, frames };
      s.dispose();
    }
    return out;
  }, { url: CC, worker: `${HOOKED}?gpu=no-device` });
  for (const where of ["main", "worker"]) {
    const o = r[where];
    assert.equal(o.backend, "cpu", where);
    assert.equal(o.frames, 2, where);
    assert.match(o.reason, /^auto: WebGPU failed \([A-Za-z]+Error: WebGPU: expected an adapter and a device, found an error \(Unable to request a wgpu device: .*test: no device for you[^]*\); fell back to the CPU$/, where);
    assert.deepEqual(o.warnings, [o.reason.replace(/^auto: /, "").replace(/; fell back to the CPU$/, "; using the CPU")], where);
  }
  await p.close();
});

test('"auto" says which backend it chose and why (main thread and worker)', async () => {
  const r = await page.evaluate(async ({ url }) => {
    const out = {};
    for (const [name, S] of [["main", wd.Sampler], ["worker", wd.SamplerWorker]]) {
      const auto = await S.load(url);
      const cpu = await S.load(url, { backend: "cpu" });
      out[name] = { auto: [auto.backend, auto.backendReason], cpu: [cpu.backend, cpu.backendReason] };
      auto.dispose();
      cpu.dispose();
    }
    return out;
  }, { url: CC });
  for (const where of ["main", "worker"]) {
    assert.deepEqual(r[where].cpu, ["cpu", 'backend "cpu" was requested'], where);
    assert.equal(r[where].auto[0], "cpu", where);
    assert.match(r[where].auto[1], /^auto: the WebGPU adapter \(google swiftshader[^)]*\) is a software one, slower than the CPU path; using the CPU$/, where);
  }
});

test("a memoryBudget below what the model needs rejects with a MemoryLimitError (main thread and worker)", async () => {
  const r = await page.evaluate(async ({ url }) => ({
    main: await settle(wd.Sampler.load(url, { backend: "cpu", memoryBudget: 1000 })),
    worker: await settle(wd.SamplerWorker.load(url, { backend: "cpu", memoryBudget: 1000 })),
    bad: await settle(wd.Sampler.load(url, { backend: "cpu", memoryBudget: -1 })),
  }), { url: CC });
  assert.equal(r.main.name, "MemoryLimitError");
  assert.ok(r.main.message.startsWith(`${ccUrl()}: `) && r.main.message.includes("the memoryBudget option"), r.main.message);
  assert.deepEqual(r.worker, r.main);
  assert.deepEqual(r.bad, { name: "InvalidArgumentError", message: "memoryBudget: expected a number of bytes > 0, found -1" });
});

// A lost device fails the readback with a BackendError; Rust forgets the device, and the next load
// initialises a new one under a fresh runtime id (src/web/mod.rs, GPU_GENERATION).
test("a lost GPU device rejects the run with a BackendError and the next load gets a new device (main thread and worker)", async () => {
  const p = await newPage(browser, server);
  const r = await p.evaluate(async ({ url, worker }) => {
    (await import("/pkg-tests/hooks.mjs")).install("gpu=record");
    const lose = {
      main: async () => globalThis.__devices.forEach((d) => d.destroy()),
      worker: async (s) => s._conn.worker.postMessage({ type: "test-lose-device" }),
    };
    const out = {};
    for (const [name, S, extra] of [["main", wd.Sampler, {}], ["worker", wd.SamplerWorker, { workerUrl: worker }]]) {
      const s = await S.load(url, { backend: "webgpu", ...extra });
      const it = s.sample({ steps: 50 });
      await it.next();
      await lose[name](s);
      const lost = await settle((async () => {
        for (;;) if ((await it.next()).done) return;
      })());
      s.dispose();
      const again = await S.load(url, { backend: "webgpu", ...extra });
      const steps = [];
      for await (const f of again.sample({ steps: 2 })) steps.push(f.step);
      again.dispose();
      out[name] = { lost, steps };
    }
    return out;
  }, { url: CC, worker: `${HOOKED}?gpu=record` });
  for (const where of ["main", "worker"]) {
    assert.equal(r[where].lost.name, "BackendError", `${where}: ${JSON.stringify(r[where].lost)}`);
    assert.deepEqual(r[where].steps, [1, 2], where);
  }
  await p.close();
});

test("seededNoise and addNoise refuse zero and huge sizes instead of panicking (main thread)", async () => {
  const r = await page.evaluate(async () => ({
    zero: await settle(wd.seededNoise(1, 0, 5)),
    huge: await settle(wd.seededNoise(1, 65536, 65536)),
    shape: await settle(wd.addNoise(new Float32Array(0), [0, 3, 4, 4], 10, 1)),
    stats: wd._stats(),
  }));
  assert.deepEqual(r.zero, { name: "InvalidArgumentError", message: "noise size: expected a batch and a per-item count of at least 1, found 0 x 5" });
  assert.deepEqual(r.huge, { name: "MemoryLimitError", message: "noise size: expected at most 67108864 values, found 65536 x 65536" });
  assert.deepEqual(r.shape, { name: "InvalidArgumentError", message: "shape: expected 4 dimensions of at least 1, found [0, 3, 4, 4]" });
  assert.equal(r.stats.crashed, false);
});
