// Tests of the demo page (index.html, www/demo.js) and its service worker (sw.js) in headless
// Chromium: the page renders, offline use, builds that never mix, the model's integrity, what
// gets cached, and the errors the page shows. Each test serves the repo or its own copy of the
// site (a fresh origin, so a fresh service worker and caches) and can make a "new build" in it.
//
//   node --test --test-concurrency=1 pkg-tests/demo.test.mjs   (after scripts/build.sh)
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import vm from "node:vm";
import { REPO, CLI, cli, launch, NO_GPU_ARGS, startServer, watch, assertNoPageErrors } from "./harness.mjs";
import { writeManifest, demoModels, pkgFiles } from "../scripts/demo-manifest.mjs";

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "wd-demo-tests-"));
const MODELS = path.join(TMP, "m");
const INDEX = JSON.parse(fs.readFileSync(path.join(REPO, "models/index.json"), "utf8"));
const MODEL = `models/${INDEX.default}`;
// The demo's models: the default (class-conditional) and the text-to-image one.
const DEMO_MODELS = demoModels(INDEX).map((m) => `models/${m}`);
// The package files the demo runs (with the threaded build's snippets).
const PKG_FILES_NOW = pkgFiles(REPO);
// What sw.js may cache: the page, the package, the index and the demo's models.
const KNOWN = ["index.html", "www/style.css", "www/demo.js", ...PKG_FILES_NOW, "models/index.json", ...DEMO_MODELS];

let browser;
const sri = (bytes) => `sha256-${crypto.createHash("sha256").update(bytes).digest("base64")}`;

before(async () => {
  assert.ok(fs.existsSync(path.join(REPO, "pkg/index.js")), "pkg/ missing: run scripts/build.sh first");
  assert.ok(fs.existsSync(CLI), `${CLI} missing: run cargo build --release first`);
  fs.mkdirSync(MODELS);
  // A model whose DPM-Solver++ schedule is empty: lambda_min_clipped above every timestep's lambda.
  const fixture = path.join(TMP, "bad-schedule");
  fs.cpSync(path.join(REPO, "tests/fixtures/unets/classcond"), fixture, { recursive: true });
  fs.writeFileSync(path.join(fixture, "scheduler_config.json"), JSON.stringify({ _class_name: "DPMSolverMultistepScheduler", lambda_min_clipped: 100 }));
  cli("convert", fixture, "--quant", "int8", "-o", path.join(MODELS, "bad-schedule.safetensors"), "--null-class", "4", "--class-names", "a,b,c,d,null");
  browser = await launch(NO_GPU_ARGS);
});

after(async () => {
  await browser?.close();
  fs.rmSync(TMP, { recursive: true, force: true });
});

// Pages opened through `watch` fail their test on an uncaught page error.
afterEach(assertNoPageErrors);

/** A copy of the demo site with its own manifest (as scripts/build.sh writes it). */
function makeSite() {
  const root = fs.mkdtempSync(path.join(TMP, "site-"));
  for (const f of ["index.html", "sw.js", "www/demo.js", "www/style.css", ...PKG_FILES_NOW, "pkg/package.json", "models/index.json", ...DEMO_MODELS]) {
    fs.cpSync(path.join(REPO, f), path.join(root, f), { recursive: true });
  }
  writeManifest(root);
  fs.writeFileSync(path.join(root, "www/unknown.txt"), "not a file of the demo");
  return root;
}

/** A server for `roots` and a page in a fresh browser context (its own service worker and caches). */
async function openSite(roots) {
  const server = await startServer({ roots });
  const context = await browser.newContext();
  return { server, context, p: await context.newPage() };
}

/**
 * Makes a new build in `root` that cannot run with the old one: one import of the wasm is
 * renamed in the wasm and in its glue (old glue + new wasm, or the reverse, fail to link), and
 * the new worker.js and index.js say "build B" when they run in a worker.
 */
function newBuild(root) {
  const gluePath = path.join(root, "pkg/wasm_diffusion.js");
  const wasmPath = path.join(root, "pkg/wasm_diffusion_bg.wasm");
  let glue = fs.readFileSync(gluePath, "latin1");
  let wasm = fs.readFileSync(wasmPath).toString("latin1");
  const name = [...new Set(glue.match(/__wbg_[A-Za-z0-9_]+_[0-9a-f]{8,}/g))].find((n) => wasm.includes(n));
  assert.ok(name, "no wasm-bindgen import name found in both the glue and the wasm");
  const renamed = name.slice(0, -1) + (name.endsWith("0") ? "1" : "0");
  glue = glue.split(name).join(renamed) + "\n// build B\n";
  wasm = wasm.split(name).join(renamed);
  fs.writeFileSync(gluePath, glue, "latin1");
  fs.writeFileSync(wasmPath, Buffer.from(wasm, "latin1"));
  fs.appendFileSync(path.join(root, "pkg/worker.js"), '\nself.postMessage({ mark: "worker.js B" });\n');
  fs.appendFileSync(path.join(root, "pkg/index.js"), '\nif (typeof WorkerGlobalScope !== "undefined") self.postMessage({ mark: "index.js B" });\n');
  fs.appendFileSync(path.join(root, "pkg/worker-client.js"), "\n// build B\n");
  return writeManifest(root);
}

const statusText = (p) => p.evaluate(() => ({ load: document.getElementById("load-status").textContent, sample: document.getElementById("sample-status").textContent }));
/** Waits until the demo is done sampling or shows an error; returns both status lines. */
async function settled(p, timeout = 180000) {
  await p.waitForFunction(
    () => /Done|Error|Stopped/.test(document.getElementById("sample-status").textContent) || /Could not/.test(document.getElementById("load-status").textContent),
    null,
    { timeout },
  );
  return statusText(p);
}
const buttons = (p) => p.evaluate(() => ({ generate: document.getElementById("generate").disabled, stop: document.getElementById("stop").disabled }));
/** The caches of the page's origin: name -> the paths in it (relative to the site). */
const cachesOf = (p) =>
  p.evaluate(async () => {
    const out = {};
    for (const k of await caches.keys()) out[k] = (await (await caches.open(k)).keys()).map((r) => new URL(r.url).pathname.slice(1)).sort();
    return out;
  });
const demoCaches = async (p) => Object.fromEntries(Object.entries(await cachesOf(p)).filter(([k]) => k.startsWith("wasm-diffusion-demo-")));
/**
 * The SRI hash of what the page gets for `url`: from fetch(), or with `cache` from that Cache API
 * cache (null when it holds no copy).
 */
const pageSri = (p, url, cache = null) =>
  p.evaluate(
    async ({ url, cache }) => {
      const res = cache ? await (await caches.open(cache)).match(url) : await fetch(url);
      if (!res) return null;
      const d = new Uint8Array(await crypto.subtle.digest("SHA-256", await res.arrayBuffer()));
      return `sha256-${btoa(String.fromCharCode(...d))}`;
    },
    { url, cache },
  );
const buildOf = (root) => vm.runInNewContext(fs.readFileSync(path.join(root, "www/build-id.js"), "utf8") + ";self", { self: {} });

/**
 * In the page: starts the package's worker entry (pkg/worker.js) as the demo's SamplerWorker
 * does, loads the model in it and reports what ran: "loaded" or the error, and the marks of
 * build B's files. A worker that mixed builds fails to link its wasm or shows a mark.
 */
const workerRun = (p, model) =>
  p.evaluate(async (model) => {
    const w = new Worker(new URL("pkg/worker.js", location.href), { type: "module" });
    const marks = [];
    try {
      const result = await new Promise((resolve) => {
        w.onmessage = (e) => {
          if (e.data.mark) marks.push(e.data.mark);
          else if (e.data.id === 1 && e.data.type === "loaded") resolve("loaded");
          else if (e.data.id === 1 && e.data.type === "error") resolve(`${e.data.name}: ${e.data.message}`);
        };
        w.onerror = (e) => resolve(`worker error: ${e.message}`);
        w.postMessage({ id: 1, type: "load", source: new URL(model, location.href).href, options: { backend: "cpu" } });
      });
      return { result, marks };
    } finally {
      w.terminate();
    }
  }, model);

test("models/index.json and www/build-id.js carry the hashes of this build's files", () => {
  const want = Object.fromEntries(demoModels(INDEX).map((m) => [m, sri(fs.readFileSync(path.join(REPO, "models", m)))]));
  assert.deepEqual(INDEX.integrity, want, "models/index.json: run scripts/build.sh and commit models/index.json");
  const { WASM_DIFFUSION_BUILD: build, WASM_DIFFUSION_FILES: files } = buildOf(REPO);
  assert.match(build, /^[0-9a-f]{16}$/);
  for (const f of [...PKG_FILES_NOW, "models/index.json", ...DEMO_MODELS]) assert.equal(files[f], sri(fs.readFileSync(path.join(REPO, f))), `www/build-id.js: ${f} (stale: run scripts/build.sh)`);
});

test("the demo page renders an image", async () => {
  const server = await startServer({ roots: { "/": REPO } });
  const p = watch(await browser.newPage());
  try {
    await p.goto(`${server.url}/index.html?backend=cpu&steps=12`);
    await p.waitForFunction(() => /Done|Error|Could not/.test(document.body.innerText), null, { timeout: 240000 });
    const status = await p.evaluate(() => document.getElementById("sample-status").textContent);
    assert.match(status, /Done/);
    // The guidance control starts at the value models/index.json gives for the shipped model.
    const index = JSON.parse(fs.readFileSync(path.join(REPO, "models/index.json"), "utf8"));
    assert.equal(Number(await p.evaluate(() => document.getElementById("guidance").value)), index.guidance);
    const shot = path.join(process.env.SCREENSHOT_DIR || TMP, "demo.png");
    await p.screenshot({ path: shot, fullPage: true });
    const stats = await p.evaluate(() => {
      const c = document.getElementById("canvas");
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let sum = 0, sq = 0, n = 0;
      for (let i = 0; i < d.length; i += 4) {
        const v = (d[i] + d[i + 1] + d[i + 2]) / 3;
        sum += v;
        sq += v * v;
        n++;
      }
      const mean = sum / n;
      return { w: c.width, std: Math.sqrt(sq / n - mean * mean) };
    });
    assert.ok(stats.w > 32 && stats.std > 5, `canvas looks blank: ${JSON.stringify(stats)}`);
    // The forward-process panel noises the last image at six timesteps.
    await p.click("#forward-use-last");
    await p.waitForFunction(() => document.querySelectorAll("#forward-strip canvas").length === 6, null, { timeout: 60000 });
  } finally {
    await p.close();
    await server.close();
  }
});

test("a pipeline file in the demo: prompt boxes, previews, the decoded image, img2img from an uploaded picture", async () => {
  cli("convert", path.join(REPO, "tests/fixtures/pipelines/sd_tiny"), "--quant", "int8", "-o", path.join(MODELS, "sd.int8.safetensors"));
  const server = await startServer({ roots: { "/": REPO, "/m/": MODELS } });
  const p = watch(await browser.newPage());
  try {
    await p.goto(`${server.url}/index.html?backend=cpu&steps=3&model=/m/sd.int8.safetensors&prompt=a%20green%20pear`);
    await p.waitForFunction(() => /Done|Error|Could not/.test(document.body.innerText), null, { timeout: 120000 });
    const r = await p.evaluate(() => ({
      status: document.getElementById("sample-status").textContent,
      prompt: document.getElementById("prompt").value,
      promptShown: !document.getElementById("prompt-row").hidden,
      classShown: !document.getElementById("class-row").hidden,
      forwardShown: !document.getElementById("forward-panel").hidden,
      guidance: Number(document.getElementById("guidance").value),
      note: document.getElementById("model-note").textContent,
    }));
    assert.match(r.status, /^Done: 3 steps/);
    assert.deepEqual([r.prompt, r.promptShown, r.classShown, r.forwardShown, r.guidance], ["a green pear", true, false, false, 7.5]);
    assert.match(r.note, /Text to image with StableDiffusionPipeline/);
    await p.screenshot({ path: path.join(process.env.SCREENSHOT_DIR || TMP, "demo-text-to-image.png"), fullPage: true });
    // img2img: an uploaded picture and strength 0.8 run the last 2 of 3 steps.
    const png = path.join(TMP, "start.png");
    fs.copyFileSync(path.join(REPO, "models/emoji/samples_int8.png"), png);
    await p.setInputFiles("#init-image", png);
    await p.click("#generate");
    await p.waitForFunction(() => /Done: 2 steps|Error/.test(document.getElementById("sample-status").textContent), null, { timeout: 120000 });
    assert.match(await p.evaluate(() => document.getElementById("sample-status").textContent), /^Done: 2 steps/);
  } finally {
    await p.close();
    await server.close();
  }
});

test("the text-to-image mode: examples, token count, live previews, img2img from the last result, a painted mask repaints only what it covers, offline", async () => {
  const t2i = INDEX.textToImage;
  assert.ok(t2i && t2i.model, "models/index.json: expected textToImage.model");
  const shots = process.env.SCREENSHOT_DIR || TMP;
  const own = await startServer({ roots: { "/": REPO } });
  const context = await browser.newContext();
  const p = watch(await context.newPage());
  /** The pixels the demo's canvas shows (one image: batch 1). */
  const shown = () => p.evaluate(() => {
    const c = document.getElementById("canvas");
    return { w: c.width, h: c.height, px: Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data) };
  });
  try {
    await p.goto(`${own.url}/index.html?mode=text&backend=cpu&steps=4&batch=1`);
    // Mid-run: a preview is on the canvas before the final frame.
    await p.waitForFunction(() => Number(document.getElementById("step").textContent) >= 1, null, { timeout: 180000 });
    await p.screenshot({ path: path.join(shots, "demo-text-mid.png"), fullPage: true });
    const status = await settled(p);
    assert.match(status.sample, /^Done: 4 steps/, JSON.stringify(status));
    await p.screenshot({ path: path.join(shots, "demo-text-end.png"), fullPage: true });
    const r = await p.evaluate(() => ({
      prompt: document.getElementById("prompt").value,
      examples: Array.from(document.querySelectorAll("#prompt-examples option"), (o) => o.value),
      tokens: document.getElementById("prompt-tokens").textContent,
      current: document.getElementById("mode-text").getAttribute("aria-current"),
      classShown: !document.getElementById("class-row").hidden,
      editorShown: !document.getElementById("image-panel").hidden,
      guidance: Number(document.getElementById("guidance").value),
      note: document.getElementById("model-note").textContent,
    }));
    assert.deepEqual(r.examples, t2i.examples);
    assert.equal(r.prompt, t2i.examples[0]);
    assert.match(r.tokens, /^\d+ \/ 75 tokens$/);
    assert.deepEqual([r.current, r.classShown, r.editorShown, r.guidance], ["page", false, true, t2i.guidance]);
    assert.ok(r.note.startsWith(t2i.note), r.note);
    const first = await shown();
    // img2img from the last result, then a mask painted over the left half of the editor.
    await p.click("#use-result");
    const box = await p.locator("#editor").boundingBox();
    await p.check('input[name="tool"][value="mask"]');
    await p.fill("#brush-size", "32");
    await p.mouse.move(box.x + 2, box.y + 2);
    await p.mouse.down();
    for (let y = 2; y < box.height; y += 6) await p.mouse.move(box.x + box.width * 0.3, box.y + y);
    await p.mouse.up();
    assert.match(await p.evaluate(() => document.getElementById("image-status").textContent), /^Inpainting/);
    await p.screenshot({ path: path.join(shots, "demo-text-mask.png"), fullPage: true });
    await p.fill("#seed", "7");
    await p.click("#generate");
    await p.waitForFunction(() => /Done|Error/.test(document.getElementById("sample-status").textContent) && !document.getElementById("generate").disabled, null, { timeout: 180000 });
    assert.match(await p.evaluate(() => document.getElementById("sample-status").textContent), /^Done/);
    await p.screenshot({ path: path.join(shots, "demo-text-inpainted.png"), fullPage: true });
    const second = await shown();
    assert.equal(second.w, first.w);
    // The right quarter, far from the brush, is the last result within rounding; the left edge
    // (under the brush) changed.
    let kept = 0;
    let changed = 0;
    for (let y = 0; y < first.h; y++) {
      for (let x = 0; x < first.w; x++) {
        const i = (y * first.w + x) * 4;
        const d = Math.max(...[0, 1, 2].map((c) => Math.abs(first.px[i + c] - second.px[i + c])));
        if (x >= first.w * 0.75) kept = Math.max(kept, d);
        if (x < first.w * 0.1 && d > 10) changed++;
      }
    }
    assert.ok(kept <= 1, `the unmasked pixels changed by up to ${kept}`);
    assert.ok(changed > 0, "nothing under the mask was repainted");
    // Offline: the worker cached the text-to-image model too.
    await p.evaluate(async (model) => {
      for (let i = 0; i < 200; i++) {
        for (const k of await caches.keys()) {
          if (k.startsWith("wasm-diffusion-demo") && (await (await caches.open(k)).keys()).some((q) => q.url.endsWith(model))) return;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error("the service worker did not cache the text-to-image model");
    }, t2i.model);
    await own.close();
    await p.reload();
    assert.match((await settled(p)).sample, /^Done: 4 steps/);
  } finally {
    await context.close();
    await own.close().catch(() => {});
  }
});

test("the demo keeps working offline after the first visit", async () => {
  const own = await startServer({ roots: { "/": REPO } });
  const context = await browser.newContext();
  const p = watch(await context.newPage());
  try {
    await p.goto(`${own.url}/index.html?backend=cpu&steps=3`);
    await p.waitForFunction(() => /Done|Error|Could not/.test(document.body.innerText), null, { timeout: 120000 });
    // Wait until the service worker has cached the page, the package and the model.
    await p.evaluate(async () => {
      await navigator.serviceWorker.ready;
      for (let i = 0; i < 200; i++) {
        const keys = await caches.keys();
        const demo = keys.find((k) => k.startsWith("wasm-diffusion-demo"));
        if (demo) {
          const c = await caches.open(demo);
          if ((await c.keys()).some((r) => r.url.endsWith(".safetensors"))) return;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error("the service worker did not cache the model");
    });
    await own.close();
    await p.reload();
    await p.waitForFunction(() => /Done|Error|Could not/.test(document.body.innerText), null, { timeout: 120000 });
    const status = await p.evaluate(() => document.getElementById("sample-status").textContent + " | " + document.getElementById("load-status").textContent);
    assert.match(status, /Done/, status);
  } finally {
    await context.close();
    await own.close().catch(() => {});
  }
});

test("a first visit runs the package from the service worker's checked copy, and only known files are cached", async () => {
  const root = makeSite();
  const { server, context, p } = await openSite({ "/": root });
  const errors = [];
  p.on("pageerror", (e) => errors.push(e.message));
  try {
    await p.goto(`${server.url}/index.html?backend=cpu&steps=2`);
    const status = await settled(p);
    assert.match(status.sample, /^Done: 2 steps/, JSON.stringify(status));
    assert.ok(await p.evaluate(() => navigator.serviceWorker.controller !== null), "the page is not controlled by sw.js");
    // The page waited for the worker, so the page and its SamplerWorker got every package file
    // and the model from the worker's cache: each crossed the network once (the install).
    for (const f of [...PKG_FILES_NOW, ...DEMO_MODELS]) assert.equal(server.log.filter((u) => u === `/${f}`).length, 1, `${f} requested ${server.log.filter((u) => u === `/${f}`).length} times: ${server.log.join(" ")}`);
    // Files the page fetches that the demo does not know pass through, uncached.
    assert.equal(await p.evaluate(async () => (await fetch("www/unknown.txt")).text()), "not a file of the demo");
    assert.equal(await p.evaluate(async () => (await fetch("pkg/package.json")).status), 200);
    await p.evaluate(async () => fetch("models/emoji/README.md"));
    const build = buildOf(root).WASM_DIFFUSION_BUILD;
    const all = await cachesOf(p);
    assert.deepEqual(Object.keys(all).sort(), ["wasm-diffusion-demo-" + build, "wasm-diffusion-pins"]);
    assert.deepEqual(all["wasm-diffusion-demo-" + build], [...KNOWN].sort());
    assert.ok(all["wasm-diffusion-pins"].every((u) => u.startsWith("__pin/")), all["wasm-diffusion-pins"].join(" "));
    // Offline, the next visit works from that copy.
    await server.close();
    await p.reload();
    assert.match((await settled(p)).sample, /^Done: 2 steps/);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    await server.close();
  }
});

test("a page keeps the glue and wasm of its build while a new build takes over; a half-done deploy never installs", async () => {
  const root = makeSite();
  const buildA = buildOf(root).WASM_DIFFUSION_BUILD;
  const { server, context, p } = await openSite({ "/": root });
  const update = () => p.evaluate(async () => (await navigator.serviceWorker.getRegistration()).update().then(() => "updated", (e) => e.message));
  try {
    await p.goto(`${server.url}/index.html?backend=cpu&steps=1`);
    assert.match((await settled(p)).sample, /^Done/);
    const glueA = fs.readFileSync(path.join(root, "pkg/wasm_diffusion.js"));
    const wasmA = fs.readFileSync(path.join(root, "pkg/wasm_diffusion_bg.wasm"));

    // 1. A half-done deploy: build B's manifest, but one file still build A's (or an HTTP
    // cache's stale copy). The new worker's install refuses it; the page stays on build A.
    const buildB = newBuild(root);
    const glueB = fs.readFileSync(path.join(root, "pkg/wasm_diffusion.js"));
    fs.writeFileSync(path.join(root, "pkg/wasm_diffusion.js"), glueA);
    await update();
    await p.waitForFunction(async () => {
      const r = await navigator.serviceWorker.getRegistration();
      return !r.installing && !r.waiting;
    });
    assert.deepEqual(Object.keys(await demoCaches(p)), [`wasm-diffusion-demo-${buildA}`], "a half-done deploy was installed");

    // 2. The deploy completes: build B installs and takes over the worker, and the page says so.
    fs.writeFileSync(path.join(root, "pkg/wasm_diffusion.js"), glueB);
    // (A browser checks for updates on its own too: if this check found nothing to install, as
    // may happen right after a refused install, check again as a later navigation would.)
    let updated = await update();
    const ready = () => p.evaluate(() => /new version is ready/.test(document.getElementById("offline-status").textContent));
    for (let i = 0; i < 2 && !(await p.waitForFunction(() => /new version is ready/.test(document.getElementById("offline-status").textContent), null, { timeout: 30000 }).then(() => true, () => false)); i++) {
      if (!(await ready())) updated += `, then ${await update()}`;
    }
    await p.waitForFunction(() => /new version is ready/.test(document.getElementById("offline-status").textContent), null, { timeout: 60000 }).catch(async (e) => {
      // Say where it stands: the update's answer, the registration's workers, the page's line.
      const where = await p.evaluate(async () => {
        const r = await navigator.serviceWorker.getRegistration();
        const state = (w) => w && w.state;
        return { installing: state(r.installing), waiting: state(r.waiting), active: state(r.active), controlled: !!navigator.serviceWorker.controller, line: document.getElementById("offline-status").textContent, caches: await caches.keys() };
      });
      assert.fail(`build B did not take over within 120 s: update() gave ${updated}; ${JSON.stringify(where)} (${e.message})`);
    });
    assert.deepEqual(Object.keys(await demoCaches(p)).sort(), [`wasm-diffusion-demo-${buildA}`, `wasm-diffusion-demo-${buildB}`].sort());

    // 3. The page loaded build A's glue before B existed; what it fetches now is still build A:
    // the wasm for the forward panel (the page's first wasm), the files, a new worker.
    const fetched = {};
    for (const f of ["pkg/wasm_diffusion.js", "pkg/wasm_diffusion_bg.wasm"]) fetched[f] = await pageSri(p, f);
    assert.deepEqual(fetched, { "pkg/wasm_diffusion.js": sri(glueA), "pkg/wasm_diffusion_bg.wasm": sri(wasmA) });
    assert.notEqual(sri(wasmA), sri(fs.readFileSync(path.join(root, "pkg/wasm_diffusion_bg.wasm"))));
    await p.click("#forward-use-last");
    await p.waitForFunction(() => document.querySelectorAll("#forward-strip canvas").length === 6 || /Error/.test(document.getElementById("forward-strip").textContent), null, { timeout: 60000 });
    assert.equal(await p.evaluate(() => document.querySelectorAll("#forward-strip canvas").length), 6, await p.evaluate(() => document.getElementById("forward-strip").textContent));
    assert.deepEqual(await workerRun(p, MODEL), { result: "loaded", marks: [] });
    await p.evaluate(() => (document.getElementById("sample-status").textContent = ""));
    await p.click("#generate");
    assert.match((await settled(p)).sample, /^Done/);

    // 4. A reload runs build B as a whole, and build A's cache goes once no page uses it.
    await p.reload();
    assert.match((await settled(p)).sample, /^Done/);
    assert.deepEqual(await workerRun(p, MODEL), { result: "loaded", marks: ["index.js B", "worker.js B"] });
    await p.waitForFunction(
      async (want) => JSON.stringify((await caches.keys()).filter((k) => k.startsWith("wasm-diffusion-demo-"))) === JSON.stringify([want]),
      `wasm-diffusion-demo-${buildB}`,
      { timeout: 60000, polling: 500 },
    );
  } finally {
    await context.close();
    await server.close();
  }
});

test("a corrupt cached model is evicted: online it is fetched again, offline the demo says why", async () => {
  const root = makeSite();
  const build = buildOf(root).WASM_DIFFUSION_BUILD;
  let { server, context, p } = await openSite({ "/": root });
  const url = `${server.url}/index.html?backend=cpu&steps=1`;
  const corrupt = () =>
    p.evaluate(
      async ({ name, model }) => {
        const c = await caches.open(name);
        const good = new Uint8Array(await (await c.match(model)).arrayBuffer());
        good[good.length >> 1] ^= 0xff; // one flipped byte in the weights
        await c.put(model, new Response(good, { headers: { "content-length": String(good.length) } }));
      },
      { name: `wasm-diffusion-demo-${build}`, model: MODEL },
    );
  const cachedHash = () => pageSri(p, MODEL, `wasm-diffusion-demo-${build}`);
  const integrity = sri(fs.readFileSync(path.join(root, MODEL)));
  try {
    await p.goto(url);
    assert.match((await settled(p)).sample, /^Done/);
    assert.equal(await cachedHash(), integrity);

    await corrupt();
    assert.notEqual(await cachedHash(), integrity);
    const before = server.log.filter((u) => u === `/${MODEL}`).length;
    await p.reload();
    assert.match((await settled(p)).sample, /^Done/);
    assert.equal(server.log.filter((u) => u === `/${MODEL}`).length, before + 1, "the model was not fetched again");
    assert.equal(await cachedHash(), integrity, "the cache does not hold the good model again");

    await corrupt();
    await server.close();
    await p.reload();
    const status = await settled(p);
    assert.match(status.load, /^Could not load the model: .*HTTP 504.*failed its integrity check/, JSON.stringify(status));
    assert.equal(status.sample, "");
    assert.deepEqual(await buttons(p), { generate: true, stop: true });
    assert.equal(await cachedHash(), null, "the corrupt copy is still cached");

    // Back online, the next visit heals.
    server = await startServer({ roots: { "/": root }, port: Number(new URL(url).port) });
    await p.reload();
    assert.match((await settled(p)).sample, /^Done/);
    assert.equal(await cachedHash(), integrity);
  } finally {
    await context.close();
    await server.close();
  }
});

test("the demo shows load and sample errors in its status lines and resets its buttons", async () => {
  const root = makeSite();
  const { server, context, p } = await openSite({ "/": root, "/m/": MODELS });
  const requests = [];
  p.on("request", (r) => requests.push(r.url()));
  const visit = async (query) => {
    await p.goto(`${server.url}/index.html?backend=cpu&steps=3&${query}`);
    return { ...(await settled(p, 120000)), buttons: await buttons(p) };
  };
  try {
    // Unreachable model: HTTP 404, said with its URL; nothing to generate with.
    let r = await visit("model=/m/missing.safetensors");
    assert.match(r.load, /^Could not load the model: fetching http:\/\/127\.0\.0\.1:\d+\/m\/missing\.safetensors failed: HTTP 404/);
    assert.deepEqual(r.buttons, { generate: true, stop: true });
    assert.equal(r.sample, "");
    // Not a model file.
    r = await visit("model=/index.html");
    assert.match(r.load, /^Could not load the model: .*index\.html/);
    assert.doesNotMatch(r.load, /Loading|Downloading/);
    // Another origin is refused before anything is fetched.
    for (const bad of ["https://example.com/x.safetensors", "//example.com/x.safetensors", "javascript:alert(1)", "data:,x"]) {
      r = await visit(`model=${encodeURIComponent(bad)}`);
      assert.equal(r.load, `Could not load the model: ?model=: expected a path on this site, found "${bad}"`);
      assert.deepEqual(r.buttons, { generate: true, stop: true });
    }
    // (Same-origin blob: URLs are the threaded build's pool glue, see scripts/build.sh.)
    assert.deepEqual(requests.filter((u) => !u.startsWith(server.url) && !u.startsWith(`blob:${server.url}`)), []);
    // A model whose DPM-Solver++ schedule is empty: the sample rejects; the page says why and
    // can generate again (DDIM works with the same model).
    r = await visit("model=/m/bad-schedule.safetensors&scheduler=dpm%2B%2B");
    assert.match(r.load, /^Loaded /);
    assert.match(r.sample, /^Error: .*expected at least one timestep, found none/);
    assert.deepEqual(r.buttons, { generate: false, stop: true });
    await p.selectOption("#scheduler", "ddim");
    await p.click("#generate");
    await p.waitForFunction(() => /Done|Error/.test(document.getElementById("sample-status").textContent) && !document.getElementById("generate").disabled);
    assert.match((await statusText(p)).sample, /^Done: 3 steps/);
  } finally {
    await context.close();
    await server.close();
  }
});
