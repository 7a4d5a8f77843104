// The sampling options and the forward process, owned by the Rust core: JS passes the caller's
// object through (sampler.config.sampling says what it accepts and its defaults), Rust names a
// bad value in an InvalidArgumentError, and sampler.addNoise uses the model's own noise schedule
// (here a cosine schedule over 500 training steps, not the default linear one over 1000).
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { REPO, cli, launch, newPage, assertNoPageErrors, startServer, NO_GPU_ARGS } from "./harness.mjs";

let server, browser, page, dir;

before(async () => {
  // The `plain` U-Net with a scheduler config of its own.
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "wd-options-"));
  const unet = path.join(dir, "unet");
  fs.mkdirSync(unet);
  for (const f of ["config.json", "diffusion_pytorch_model.safetensors"]) {
    fs.copyFileSync(path.join(REPO, "tests/fixtures/unets/plain", f), path.join(unet, f));
  }
  fs.writeFileSync(path.join(dir, "scheduler_config.json"), JSON.stringify({
    _class_name: "DDPMScheduler", num_train_timesteps: 500, beta_schedule: "squaredcos_cap_v2",
  }));
  cli("convert", dir, "--quant", "f32", "-o", path.join(dir, "cos.safetensors"));
  server = await startServer({ roots: { "/": REPO, "/m/": dir } });
  browser = await launch(NO_GPU_ARGS);
  page = await newPage(browser, server);
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

afterEach(assertNoPageErrors);

/** alphas_cumprod[t] of the cosine schedule (Nichol & Dhariwal eq. 17, betas capped at 0.999), in f64. */
function cosineAlphaBar(t, T) {
  const f = (x) => Math.cos(((x + 0.008) / 1.008) * Math.PI / 2) ** 2;
  let acc = 1;
  for (let i = 0; i <= t; i++) acc *= 1 - Math.min(1 - f((i + 1) / T) / f(i / T), 0.999);
  return acc;
}

test("config.sampling states what sample() accepts, and its defaults apply", async () => {
  const r = await page.evaluate(async () => {
    const s = await wd.Sampler.load("/m/cos.safetensors", { backend: "cpu" });
    const totals = {};
    for (const scheduler of ["ddim", "dpm++"]) {
      for await (const f of s.sample({ scheduler, seed: 1, previewEvery: 1000 })) totals[scheduler] = f.totalSteps;
    }
    const out = { sampling: s.config.sampling, spacing: s.config.scheduler.timestep_spacing, totals };
    s.dispose();
    return out;
  });
  assert.deepEqual(r.sampling, {
    schedulers: ["ddpm", "ddim", "dpm++", "euler", "euler-a", "lcm", "cm"],
    defaultScheduler: "ddim",
    defaultSteps: { ddpm: 500, ddim: 50, "dpm++": 20, euler: 50, "euler-a": 50, lcm: 4, cm: 1 },
    maxSteps: 500,
    maxBatch: 64,
    maxGuidanceScale: 100,
  });
  // The file gives no timestep_spacing: each scheduler uses its own default.
  assert.equal(r.spacing, null);
  assert.deepEqual(r.totals, { ddim: 50, "dpm++": 20 });
});

test("bad options are refused by the core, naming the option", async () => {
  const r = await page.evaluate(async () => {
    const s = await wd.Sampler.load("/m/cos.safetensors", { backend: "cpu" });
    const settle = (p) => p.then(() => "ok", (e) => ({ name: e.name, message: e.message }));
    const out = {};
    for (const [k, o] of Object.entries({
      steps: { steps: 501 },
      nan: { guidanceScale: NaN },
      seed: { seed: 1.5 },
      scheduler: { scheduler: "heun" },
      labels: { classLabels: [1] },
      notObject: 5,
    })) out[k] = await settle(s.sample(o).next());
    // Keys the core does not read are the caller's (even functions).
    out.foreign = await settle(s.sample({ steps: 2, onSomething: () => 1 }).next());
    s.dispose();
    return out;
  });
  const invalid = (message) => ({ name: "InvalidArgumentError", message });
  assert.deepEqual(r.steps, invalid("steps: expected an integer from 1 to 500, found 501"));
  assert.deepEqual(r.nan, invalid("guidanceScale: expected a finite number, found NaN"));
  assert.deepEqual(r.seed, invalid("seed: expected an integer from 0 to 9007199254740991, found 1.5"));
  assert.deepEqual(r.scheduler, invalid("scheduler: expected `ddpm`, `ddim`, `dpm++`, `euler`, `euler-a`, `lcm` or `cm`, found `heun`"));
  assert.deepEqual(r.labels, invalid("class labels: this model is unconditional, expected none, found some"));
  assert.deepEqual(r.notObject, { name: "TypeError", message: "sample options: expected an object, found number" });
  assert.equal(r.foreign, "ok");
});

test("addNoise uses the model's noise schedule, on the page and in the worker", async () => {
  const r = await page.evaluate(async () => {
    const n = 3 * 8 * 8;
    const x0 = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.9);
    const s = await wd.Sampler.load("/m/cos.safetensors", { backend: "cpu" });
    const w = await wd.SamplerWorker.load("/m/cos.safetensors", { backend: "cpu" });
    const out = {
      x0: [...x0],
      noise: [...(await wd.seededNoise(7, 1, n))],
      page: [...s.addNoise(x0, [1, 3, 8, 8], 250, 7)],
      worker: [...(await w.addNoise(x0, [1, 3, 8, 8], 250, 7))],
      defaultSchedule: [...(await wd.addNoise(x0, [1, 3, 8, 8], 250, 7))],
      tooLate: await Promise.resolve().then(() => s.addNoise(x0, [1, 3, 8, 8], 500, 7)).then(() => "ok", (e) => ({ name: e.name, message: e.message })),
    };
    s.dispose();
    w.dispose();
    return out;
  });
  const a = cosineAlphaBar(250, 500);
  const want = r.x0.map((x, i) => Math.sqrt(a) * x + Math.sqrt(1 - a) * r.noise[i]);
  const worst = (xs) => Math.max(...xs.map((x, i) => Math.abs(x - want[i])));
  assert.ok(worst(r.page) < 1e-6, `page: max |diff| ${worst(r.page)}`);
  assert.deepEqual(r.worker, r.page);
  // The default (linear, T = 1000) schedule gives another x_t.
  assert.ok(worst(r.defaultSchedule) > 1e-2);
  assert.deepEqual(r.tooLate, { name: "InvalidArgumentError", message: "timestep: expected 0 to 499, found 500" });
});
