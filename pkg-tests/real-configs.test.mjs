// Real model configurations in the browser's CPU path, with random weights (no checkpoint can
// be downloaded here): google/ddpm-cifar10-32's U-Net at batch 8 and google/ddpm-ema-celebahq-256's
// at batch 1 sample; a batch that would not fit the wasm heap (MemoryLimitError) and a ~200 KB
// file whose full-resolution attention asks for terabytes or hours per step (UnsupportedError) are
// refused up front instead of trapping or hanging.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { REPO, cli, launch, NO_GPU_ARGS, startServer } from "./harness.mjs";

const MODELS = fs.mkdtempSync(path.join(os.tmpdir(), "wd-real-configs-"));

let server, browser, page;
const errors = [];

function random(config, out) {
  cli("random", path.join(REPO, "tests/fixtures/configs", config), "--quant", "int8", "-o", path.join(MODELS, out));
}

before(async () => {
  assert.ok(fs.existsSync(path.join(REPO, "pkg/index.js")), "pkg/ missing: run scripts/build.sh first");
  random("ddpm-cifar10-32.json", "cifar10.int8.safetensors");
  random("ddpm-celebahq-256.json", "celebahq.int8.safetensors");
  fs.writeFileSync(
    path.join(MODELS, "huge-attention.json"),
    JSON.stringify({ sample_size: 1024, block_out_channels: [32], layers_per_block: 1, down_block_types: ["AttnDownBlock2D"], up_block_types: ["AttnUpBlock2D"], attention_head_dim: 8, norm_num_groups: 8 }),
  );
  cli("random", path.join(MODELS, "huge-attention.json"), "--quant", "int8", "-o", path.join(MODELS, "huge-attention.safetensors"));
  server = await startServer({ roots: { "/": REPO, "/m/": MODELS } });
  browser = await launch(NO_GPU_ARGS);
  page = await browser.newPage();
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${server.url}/pkg-tests/page.html`);
  await page.waitForFunction(() => window.ready === true);
});

after(async () => {
  await browser?.close();
  await server?.close();
  fs.rmSync(MODELS, { recursive: true, force: true });
  assert.deepEqual(errors, [], "uncaught page errors");
});

async function sampleOnce(url, options) {
  return page.evaluate(
    async ({ url, options }) => {
      const s = await wd.Sampler.load(url, { backend: "cpu" });
      const t0 = performance.now();
      let last;
      for await (const f of s.sample(options)) last = f;
      const ms = performance.now() - t0;
      const im = last.images;
      // Spread of the first image's pixels: random weights still give a non-constant image.
      const d = im[0].data;
      let lo = 255, hi = 0;
      for (let i = 0; i < d.length; i += 4) {
        lo = Math.min(lo, d[i]);
        hi = Math.max(hi, d[i]);
      }
      s.dispose();
      return { n: im.length, w: im[0].width, h: im[0].height, spread: hi - lo, ms };
    },
    { url, options },
  );
}

test("ddpm-cifar10-32's configuration samples at batch 8 on the CPU", { timeout: 300000 }, async () => {
  const r = await sampleOnce("/m/cifar10.int8.safetensors", { scheduler: "ddim", steps: 1, batch: 8, seed: 1 });
  console.log(`cifar10 b8, one step: ${r.ms.toFixed(0)} ms`);
  assert.equal(r.n, 8);
  assert.equal(r.w, 32);
  assert.ok(r.spread > 0, "a constant image");
});

test("ddpm-celebahq-256's configuration samples at batch 1 on the CPU; batch 16 is refused", { timeout: 600000 }, async () => {
  const r = await sampleOnce("/m/celebahq.int8.safetensors", { scheduler: "ddim", steps: 1, batch: 1, seed: 1 });
  console.log(`celebahq-256 b1, one step: ${r.ms.toFixed(0)} ms`);
  assert.equal(r.n, 1);
  assert.equal(r.w, 256);
  assert.equal(r.h, 256);
  assert.ok(r.spread > 0, "a constant image");
  const e = await page.evaluate(async () => {
    const s = await wd.Sampler.load("/m/celebahq.int8.safetensors", { backend: "cpu" });
    try {
      await s.sample({ steps: 1, batch: 16 }).next();
      return null;
    } catch (e) {
      return { name: e.name, message: e.message };
    } finally {
      s.dispose();
    }
  });
  assert.equal(e?.name, "MemoryLimitError");
  assert.match(e.message, /^sampling 16 image\(s\) of 256x256: it needs an estimated \d+\.\d GiB \(activations .*\), above 3\.8 GiB \(the wasm32 heap of the CPU backend\); use a batch of at most \d+$/);
});

test("a 200 KB file that asks for terabytes is refused at load", async () => {
  const e = await page.evaluate(async () => {
    try {
      (await wd.Sampler.load("/m/huge-attention.safetensors", { backend: "cpu" })).dispose();
      return null;
    } catch (e) {
      return { name: e.name, message: e.message };
    }
  });
  assert.equal(e?.name, "UnsupportedError");
  assert.match(e.message, /sampling 1024x1024 images: attention over 1048576 tokens, expected at most 16384 \(a 128x128 feature map\): one step would take hours$/);
});
