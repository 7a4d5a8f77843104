// Before/after of a speed change: several builds of pkg/ against each other and against
// onnxruntime-web's wasm provider, in ONE headless Chromium session, rounds interleaved.
//
//   node bench/compare.mjs [--model emoji|cifar10] [--backend cpu|webgpu] [--steps N] DIR...
//
// Each DIR is a copy of pkg/ from one build (e.g. `git stash; bash scripts/build.sh;
// cp -r pkg /tmp/pkg-before`). CPU: Chromium runs with --no-liftoff (steady-state code, as in
// BENCHMARKS.md); per step = (elapsed(N steps) - elapsed(2 steps)) / (N - 2), 3 per round,
// 2 rounds; ORT wasm (1 thread) is timed in each round as the common peer. WebGPU (SwiftShader):
// (elapsed(3) - elapsed(1)) / 2 after a warm-up run, 2 rounds, no peer (minutes per call).
import fs from "node:fs";
import path from "node:path";
import { startServer } from "../pkg-tests/server.mjs";
import { launch, WEBGPU_ARGS, NO_LIFTOFF_ARGS } from "../pkg-tests/chromium.mjs";
import { REPO, CACHE, ORT_DIST, argv, median } from "./common.mjs";

const opts = new Map();
const dirs = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i].startsWith("--")) opts.set(argv[i], argv[++i]);
  else dirs.push(path.resolve(argv[i]));
}
const MODEL = opts.get("--model") ?? "emoji";
const BACKEND = opts.get("--backend") ?? "cpu";
const STEPS = Number(opts.get("--steps") ?? (MODEL === "emoji" ? 22 : 6));
const MODELS = path.resolve(opts.get("--models") ?? path.join(CACHE, "bench"));
if (dirs.length === 0) throw new Error("usage: node bench/compare.mjs [--model M] [--backend cpu|webgpu] PKG_DIR...");
for (const d of dirs) if (!fs.existsSync(path.join(d, "index.js"))) throw new Error(`${d}/index.js missing: expected a copy of pkg/`);

const roots = { "/": REPO, "/m/": MODELS, "/ort/": ORT_DIST };
dirs.forEach((d, i) => (roots[`/p${i}/`] = d));
const server = await startServer({ roots });
const browser = await launch(BACKEND === "cpu" ? NO_LIFTOFF_ARGS : WEBGPU_ARGS);
const samples = new Map();
const add = (k, xs) => samples.set(k, [...(samples.get(k) ?? []), ...xs]);
try {
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < dirs.length; i++) {
      const page = await browser.newPage();
      page.on("pageerror", (e) => console.error("pageerror:", e.message));
      await page.goto(`${server.url}/pkg-tests/page.html`);
      const r = await page.evaluate(async ({ pkg, url, backend, steps }) => {
        const wd = await import(pkg);
        const s = await wd.Sampler.load(url, { backend });
        const run = async (n) => {
          let last;
          for await (const f of s.sample({ scheduler: "ddim", steps: n, seed: 1, previewEvery: n })) last = f;
          return last.elapsedMs;
        };
        const out = [];
        if (backend === "cpu") {
          await run(4);
          for (let k = 0; k < 3; k++) {
            const a = await run(2);
            out.push(((await run(steps)) - a) / (steps - 2));
          }
        } else {
          await run(1);
          const a = await run(1);
          out.push(((await run(3)) - a) / 2);
        }
        s.dispose();
        return out;
      }, { pkg: `/p${i}/index.js`, url: `/m/${MODEL}.int8.safetensors`, backend: BACKEND, steps: STEPS });
      add(dirs[i], r);
      await page.close();
    }
    if (BACKEND !== "cpu") continue;
    const page = await browser.newPage();
    await page.goto(`${server.url}/pkg-tests/page.html`);
    add("onnxruntime-web wasm", await page.evaluate(async (url) => {
      const ort = await import("/ort/ort.wasm.min.mjs");
      ort.env.wasm.wasmPaths = "/ort/";
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.proxy = false;
      const session = await ort.InferenceSession.create(url, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
      const feeds = {
        sample: new ort.Tensor("float32", new Float32Array(3 * 32 * 32).fill(0.1), [1, 3, 32, 32]),
        timestep: new ort.Tensor("int64", BigInt64Array.from([500n]), [1]),
      };
      if (session.inputNames.includes("class_labels")) feeds.class_labels = new ort.Tensor("int64", new BigInt64Array(1), [1]);
      const t = [];
      for (let i = 0; i < 12; i++) {
        const t0 = performance.now();
        await session.run(feeds);
        t.push(performance.now() - t0);
      }
      return t.slice(2);
    }, `/m/${MODEL}.b1.onnx`));
    await page.close();
  }
} finally {
  await browser.close();
  server.close?.();
}
const peer = samples.get("onnxruntime-web wasm");
console.log(`${MODEL} b1, ${BACKEND}, ms per U-Net step (median; samples in brackets)`);
for (const [k, v] of samples) {
  const ratio = peer ? `  ${(median(v) / median(peer)).toFixed(2)}x ORT` : "";
  console.log(`${median(v).toFixed(1).padStart(9)} ms${ratio}  ${k}  [${v.map((x) => x.toFixed(0)).join(" ")}]`);
}
