// Latent diffusion in the browser: a tiny random-weight Stable Diffusion pipeline file (converted
// by the CLI from tests/fixtures/pipelines/sd_tiny) through the same Sampler API: config,
// tokenize, prompt to frames, the native CLI's pixels for the same seed, img2img and inpainting,
// bad inputs, and the WebGPU (SwiftShader) and CPU backends agreeing.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { cli, openSuite, closeSuite, assertNoPageErrors, REPO } from "./harness.mjs";

let page, MODELS;
const suite = {};

before(async () => {
  ({ models: MODELS, page } = await openSuite(suite));
  cli("convert", path.join(REPO, "tests/fixtures/pipelines/sd_tiny"), "--quant", "int8", "-o", path.join(MODELS, "sd.int8.safetensors"));
  cli("convert", path.join(REPO, "tests/fixtures/pipelines/sd_tiny"), "--quant", "f32", "-o", path.join(MODELS, "sd.f32.safetensors"));
});
after(() => closeSuite(suite));
afterEach(assertNoPageErrors);

/** float32 values of a .npy the CLI wrote. */
function npy(file) {
  const buf = fs.readFileSync(file);
  const hl = buf.readUInt16LE(8);
  return new Float32Array(buf.buffer.slice(buf.byteOffset + 10 + hl, buf.byteOffset + buf.length));
}

/** The final frame's RGBA of a run, and every frame's size. */
async function run(options, { url = "/m/sd.f32.safetensors", backend = "cpu", image = null } = {}) {
  return page.evaluate(
    async ({ url, backend, options, image }) => {
      const s = await wd.Sampler.load(url, { backend });
      const make = (spec) => {
        if (!spec) return undefined;
        const d = new ImageData(spec.w, spec.h);
        for (let i = 0; i < spec.w * spec.h; i++) {
          const v = spec.fill(i % spec.w, Math.floor(i / spec.w));
          d.data.set([v[0], v[1], v[2], 255], i * 4);
        }
        return d;
      };
      const fills = {
        gradient: (x, y) => [x * 16, y * 16, 128],
        zeros: () => [0, 0, 0],
        ones: () => [255, 255, 255],
        left: (x) => (x < 8 ? [255, 255, 255] : [0, 0, 0]),
      };
      const o = { ...options };
      if (image) {
        o.initImage = make({ w: 16, h: 16, fill: fills[image.image] });
        if (image.mask) o.mask = make({ w: image.maskW ?? 16, h: 16, fill: fills[image.mask] });
      }
      const frames = [];
      let last;
      try {
        for await (const f of s.sample(o)) {
          frames.push({ step: f.step, total: f.totalSteps, final: f.final, w: f.images[0].width, h: f.images[0].height, n: f.images.length });
          last = f;
        }
      } catch (e) {
        s.dispose();
        return { error: `${e.name}: ${e.message}` };
      }
      const init = o.initImage ? Array.from(o.initImage.data) : null;
      s.dispose();
      return { frames, pixels: Array.from(last.images[0].data), init };
    },
    { url, backend, options, image },
  );
}

test("a pipeline file loads with its components, preview and sampling defaults", async () => {
  const c = await page.evaluate(async () => {
    const s = await wd.Sampler.load("/m/sd.int8.safetensors", { backend: "cpu" });
    const out = s.config;
    s.dispose();
    return out;
  });
  assert.equal(c.kind, "latent");
  assert.equal(c.conditioning, "text");
  assert.equal(c.pipeline, "StableDiffusionPipeline");
  assert.equal(c.components.unet.quantization, "int8");
  assert.equal(c.components.textEncoder.quantization, "int8");
  assert.equal(c.components.vae.quantization, "f16");
  assert.ok(c.components.unet.parameters > 1000);
  assert.deepEqual(c.sampleSize, [16, 16]);
  assert.equal(c.vaeScaleFactor, 2);
  assert.equal(c.preview, "linear");
  assert.equal(c.inpainting, false);
  assert.equal(c.maxPromptTokens, 75);
  assert.equal(c.sampling.defaultGuidanceScale, 7.5);
});

test("tokenize gives the native CLI's ids and says when a prompt is cut off", async () => {
  const text = "a red apple, on a table!";
  const native = JSON.parse(cli("tokenize", path.join(MODELS, "sd.int8.safetensors"), text));
  const r = await page.evaluate(async (text) => {
    const s = await wd.Sampler.load("/m/sd.int8.safetensors", { backend: "cpu" });
    const a = s.tokenize(text);
    const long = s.tokenize("word ".repeat(100));
    const bad = (() => {
      try {
        s.tokenize(42);
      } catch (e) {
        return `${e.name}: ${e.message}`;
      }
    })();
    s.dispose();
    return { ids: Array.from(a.ids), truncated: a.truncated, long: long.truncated, longLength: long.length, bad };
  }, text);
  assert.deepEqual(r.ids, native);
  assert.equal(r.truncated, false);
  assert.equal(r.long, true);
  assert.equal(r.longLength, 77);
  assert.equal(r.bad, "InvalidArgumentError: tokenize: expected a string, found number");
});

test("a prompt gives previews, then the decoded image: the native CLI's pixels for the same seed", async () => {
  const out = path.join(MODELS, "sd-cli.npy");
  cli("sample", path.join(MODELS, "sd.f32.safetensors"), "--prompt", "a red apple", "--negative-prompt", "blurry", "--steps", "3", "--seed", "11", "-o", path.join(MODELS, "sd-cli.png"), "--out-npy", out);
  const values = npy(out);
  const r = await run({ prompt: "a red apple", negativePrompt: "blurry", steps: 3, seed: 11 });
  assert.deepEqual(r.frames.map((f) => [f.step, f.final]), [[1, false], [2, false], [3, true]]);
  // Linear previews are at latent resolution (8x8), the final frame is decoded (16x16).
  assert.deepEqual(r.frames.map((f) => f.w), [8, 8, 16]);
  const plane = 256;
  let worst = 0;
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const want = Math.round(Math.min(1, Math.max(0, values[c * plane + i] / 2 + 0.5)) * 255);
      worst = Math.max(worst, Math.abs(r.pixels[i * 4 + c] - want));
    }
  }
  assert.ok(worst <= 1, `max pixel difference ${worst}`);
});

test("img2img runs the last `strength` of the schedule; a mask of ones repaints everything", async () => {
  const a = await run({ prompt: "x", steps: 4, seed: 3, strength: 0.5 }, { image: { image: "gradient" } });
  assert.deepEqual(a.frames.map((f) => f.step), [1, 2]);
  assert.equal(a.frames.at(-1).total, 2);
  // Inpainting with an ordinary U-Net: a mask of ones leaves nothing to keep, so the run is the
  // plain text-to-image run of the same seed.
  const plain = await run({ prompt: "x", steps: 3, seed: 4 });
  const ones = await run({ prompt: "x", steps: 3, seed: 4 }, { image: { image: "gradient", mask: "ones" } });
  assert.deepEqual(ones.pixels, plain.pixels);
  const half = await run({ prompt: "x", steps: 3, seed: 4 }, { image: { image: "gradient", mask: "left" } });
  assert.notDeepEqual(half.pixels, plain.pixels);
  // What is not masked is the init image after the final decode (within rounding); the masked
  // left half is repainted.
  const zeros = await run({ prompt: "x", steps: 3, seed: 4 }, { image: { image: "gradient", mask: "zeros" } });
  const worst = (r, keep) => r.pixels.reduce((m, v, i) => (keep((i >> 2) % 16) && i % 4 !== 3 ? Math.max(m, Math.abs(v - r.init[i])) : m), 0);
  assert.ok(worst(zeros, () => true) <= 1, `a mask of zeros changed a pixel by ${worst(zeros, () => true)}`);
  assert.ok(worst(half, (x) => x >= 8) <= 1, `the kept half changed by ${worst(half, (x) => x >= 8)}`);
  assert.ok(worst(half, (x) => x < 8) > 10, "the masked half was not repainted");
});

test("an abort stops a latent run within one step, and the sampler stays usable", async () => {
  const r = await page.evaluate(async () => {
    const s = await wd.Sampler.load("/m/sd.int8.safetensors", { backend: "cpu" });
    const ac = new AbortController();
    const steps = [];
    let error = null;
    try {
      for await (const f of s.sample({ prompt: "a red apple", steps: 40, signal: ac.signal })) {
        steps.push(f.step);
        if (f.step === 2) ac.abort();
      }
    } catch (e) {
      error = `${e.name}`;
    }
    let after = 0;
    for await (const f of s.sample({ prompt: "a red apple", steps: 2 })) after = f.step;
    s.dispose();
    return { steps, error, after };
  });
  assert.equal(r.error, "AbortError");
  assert.deepEqual(r.steps, [1, 2]);
  assert.equal(r.after, 2);
});

test("bad prompts, images, masks and strengths are refused with what was expected", async () => {
  const cases = [
    [{ prompt: 42 }, null, "InvalidArgumentError: prompt: expected a string or an array of strings (one per image), found a number"],
    [{ prompt: "x", strength: 0.5 }, null, "InvalidArgumentError: strength: expected an initImage to go with it, found none"],
    [{ prompt: "x", strength: 1.5 }, { image: "gradient" }, "InvalidArgumentError: strength: expected a number in (0, 1], found 1.5"],
    [{ prompt: "x", width: 15 }, null, "InvalidArgumentError: width: expected a multiple of 2 (the VAE's downscale factor) from 2 to 256, found 15"],
    [{ prompt: "x" }, { image: "gradient", mask: "ones", maskW: 8 }, "InvalidArgumentError: mask: expected the initImage's size 16x16, found 8x16"],
  ];
  for (const [options, image, want] of cases) {
    const r = await run(options, { image });
    assert.equal(r.error, want);
  }
  const wrongType = await page.evaluate(async () => {
    const s = await wd.Sampler.load("/m/sd.int8.safetensors", { backend: "cpu" });
    try {
      for await (const f of s.sample({ prompt: "x", initImage: "not an image" })) void f;
    } catch (e) {
      return `${e.name}: ${e.message}`;
    } finally {
      s.dispose();
    }
  });
  assert.equal(wrongType, "InvalidArgumentError: initImage: expected ImageData, ImageBitmap, a canvas or an HTMLImageElement, found string");
  // A pixel model refuses text options.
  const pixel = await page.evaluate(async () => {
    const s = await wd.Sampler.load("/m/plain.f32.safetensors", { backend: "cpu" });
    try {
      for await (const f of s.sample({ prompt: "x" })) void f;
    } catch (e) {
      return `${e.name}: ${e.message}`;
    } finally {
      s.dispose();
    }
  });
  assert.match(pixel, /^InvalidArgumentError: prompt: expected a text-to-image pipeline, found a pixel model/);
});

test("WebGPU (SwiftShader) and CPU agree on a latent run; SamplerWorker runs it too", async () => {
  const o = { prompt: "a red apple", steps: 2, seed: 9 };
  const cpu = await run(o);
  const gpu = await run(o, { backend: "webgpu" });
  const worst = cpu.pixels.reduce((m, v, i) => Math.max(m, Math.abs(v - gpu.pixels[i])), 0);
  assert.ok(worst <= 2, `max pixel difference ${worst}`);
  const viaWorker = await page.evaluate(async (o) => {
    const s = await wd.SamplerWorker.load("/m/sd.f32.safetensors", { backend: "cpu" });
    const tokens = await s.tokenize("a red apple");
    let last;
    for await (const f of s.sample(o)) last = f;
    const c = new OffscreenCanvas(16, 16).getContext("2d");
    c.drawImage(last.images[0], 0, 0);
    const px = Array.from(c.getImageData(0, 0, 16, 16).data);
    s.dispose();
    return { px, ids: Array.from(tokens.ids).slice(0, 3) };
  }, o);
  assert.deepEqual(viaWorker.px, cpu.pixels);
  assert.equal(viaWorker.ids.length, 3);
});

test("a latent run over the memoryBudget is refused up front with the batch that fits", async () => {
  const r = await page.evaluate(async () => {
    const s = await wd.Sampler.load("/m/sd.f32.safetensors", { backend: "cpu", memoryBudget: 4 << 20 });
    try {
      for await (const f of s.sample({ prompt: "x", steps: 1, batch: 64 })) void f;
      return "ran";
    } catch (e) {
      return `${e.name}: ${e.message}`;
    } finally {
      s.dispose();
    }
  });
  assert.match(r, /^MemoryLimitError: a 16x16 run of 64 image\(s\): expected at most .* \(the memoryBudget option\).*use a batch of at most \d+$/);
});

test("a pipeline file that carries TAESD previews through it at full size", async () => {
  const file = path.join(MODELS, "sd-taesd.int8.safetensors");
  cli("convert", path.join(REPO, "tests/fixtures/pipelines/sd_tiny"), "--quant", "int8", "--preview-vae", path.join(REPO, "tests/fixtures/autoencoders/taesd_tiny"), "-o", file);
  const r = await page.evaluate(async () => {
    const s = await wd.Sampler.load("/m/sd-taesd.int8.safetensors", { backend: "cpu" });
    const sizes = [];
    for await (const f of s.sample({ prompt: "a red apple", steps: 2, seed: 1 })) sizes.push([f.images[0].width, f.final]);
    const c = s.config;
    s.dispose();
    return { sizes, preview: c.preview, tiny: c.components.previewVae };
  });
  assert.equal(r.preview, "tiny");
  assert.equal(r.tiny.quantization, "f16");
  // TAESD decodes the 8x8 latents to 16x16, the size of the final decode.
  assert.deepEqual(r.sizes, [[16, false], [16, true]]);
});

test("a pipeline file streams in: its header is checked before its data, a tensor over the adapter's buffer limit is refused, a cut-off file says so", async () => {
  const r = await page.evaluate(async () => {
    await wd.seededNoise(1, 1, 1); // the package's wasm instance is up
    const w = await import("/pkg/wasm_diffusion.js");
    const bytes = new Uint8Array(await (await fetch("/m/sd.int8.safetensors")).arrayBuffer());
    const headerEnd = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const attempt = (f) => {
      try {
        return { ok: f() };
      } catch (e) {
        return { name: e.name, message: e.message };
      }
    };
    await w.initBackend("webgpu");
    // 1. The header alone is enough to refuse a tensor over the binding limit; the loader then
    // repeats its error.
    const small = new w.FileLoader("webgpu", { maxStorageBufferBindingSize: 4096 }, false);
    const overLimit = attempt(() => small.push(bytes.subarray(0, headerEnd)));
    const again = attempt(() => small.push(bytes.subarray(headerEnd, headerEnd + 10)));
    small.free();
    // 2. A file cut short.
    const cut = new w.FileLoader("cpu", {}, false);
    cut.push(bytes.subarray(0, bytes.length - 100));
    const kind = cut.kind;
    const truncated = attempt(() => cut.finishPipeline().free());
    // 3. Chunks of 1000 bytes, hashed on the way: the same engine, the same SHA-256 as WebCrypto's.
    const whole = new w.FileLoader("webgpu", {}, true);
    for (let off = 0; off < bytes.length; off += 1000) whole.push(bytes.subarray(off, off + 1000));
    const sha = whole.sha256();
    const received = whole.received;
    const expectedBytes = whole.expectedBytes;
    const engine = whole.finishPipeline();
    const loadedKind = JSON.parse(JSON.stringify(engine.config())).kind;
    engine.free();
    const digest = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
    return { overLimit, again, kind, truncated, sha, digest, received, expectedBytes, size: bytes.length, loadedKind };
  });
  assert.equal(r.overLimit.name, "MemoryLimitError");
  assert.match(r.overLimit.message, /^tensor `[a-z_.0-9]+` \[[0-9, ]+\]: expected at most 4 KiB per buffer \(the WebGPU adapter's maxStorageBufferBindingSize\), found [0-9.]+ (KiB|MiB) as f32$/);
  assert.deepEqual(r.again, r.overLimit);
  assert.equal(r.kind, "pipeline");
  assert.equal(r.truncated.name, "FormatError");
  assert.match(r.truncated.message, new RegExp(`^file truncated: expected ${r.size} bytes \\(its header's tensors\\), found ${r.size - 100} \\(tensor \`.+\` incomplete\\)$`));
  assert.equal(r.sha, r.digest);
  assert.equal(r.received, r.size);
  assert.equal(r.expectedBytes, r.size);
  assert.equal(r.loadedKind, "latent");
});

test("a pipeline file streams into the Cache API and loads from it; a wrong integrity caches nothing", async () => {
  const r = await page.evaluate(async () => {
    const url = new URL("/m/sd.int8.safetensors", location.href).href;
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    const sri = `sha256-${btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))))}`;
    const store = await caches.open("wasm-diffusion-models-v1");
    await store.delete(url);
    let fetches = 0;
    const realFetch = window.fetch;
    window.fetch = (...a) => {
      if (String(a[0]) === url) fetches++;
      return realFetch(...a);
    };
    const pixels = async (options) => {
      const s = await wd.Sampler.load(url, { backend: "cpu", ...options });
      let last;
      for await (const f of s.sample({ prompt: "a red apple", steps: 2, seed: 4 })) last = f;
      s.dispose();
      return Array.from(last.images[0].data);
    };
    try {
      const wrong = await wd.Sampler.load(url, { backend: "cpu", cache: true, integrity: "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }).then(
        () => "loaded",
        (e) => `${e.name}: ${e.message}`,
      );
      const afterWrong = !!(await store.match(url));
      const first = await pixels({ cache: true, integrity: sri });
      const cached = await store.match(url);
      const cachedBytes = cached ? new Uint8Array(await cached.arrayBuffer()) : null;
      const same = cachedBytes !== null && cachedBytes.length === bytes.length && cachedBytes.every((b, i) => b === bytes[i]);
      const fetchesBefore = fetches;
      const second = await pixels({ cache: true, integrity: sri });
      const fromCache = fetches === fetchesBefore;
      const plain = await pixels({});
      return { wrong, afterWrong, same, fromCache, firstEqualsCached: JSON.stringify(first) === JSON.stringify(second), plainEquals: JSON.stringify(first) === JSON.stringify(plain) };
    } finally {
      window.fetch = realFetch;
      await store.delete(url);
    }
  });
  assert.match(r.wrong, /^IntegrityError: integrity mismatch for http:.*\/m\/sd\.int8\.safetensors: expected sha256-A+=, found sha256-[A-Za-z0-9+/]{43}=$/);
  assert.equal(r.afterWrong, false, "a file that failed its integrity check is not cached");
  assert.ok(r.same, "the cache holds the file's bytes");
  assert.ok(r.fromCache, "the second load read the cache, not the network");
  assert.ok(r.firstEqualsCached && r.plainEquals, "the same pixels from the network, the cache and without it");
});
