// Where a CPU sampling step's time goes in the browser: V8's sampling profiler (Chrome DevTools
// Protocol) over a run of our Sampler, self time summed per wasm/JS function and per group.
//
//   node bench/profile.mjs [--model emoji|cifar10 | --file MODEL_FILE] [--steps N] [--top N]
//                          [--out FILE.cpuprofile]
//
// Needs pkg/ (bash scripts/build.sh) and the benchmark models (bench/make_models.py, run by
// bench/run.sh), or --file: any model or pipeline file (a pipeline runs with a prompt, a negative
// prompt and guidance 7.5, as bench/latent_browser.mjs does; the profile then holds the text
// encoder and the VAE decode as well as the steps). Chromium runs with --no-liftoff, as in the steady-state rows of BENCHMARKS.md.
// The wasm keeps its name section, so rows are Rust function names. Sampling every 200 us adds
// some overhead; read the shares, not the absolute times.
import fs from "node:fs";
import path from "node:path";
import { startServer } from "../pkg-tests/server.mjs";
import { launch, NO_LIFTOFF_ARGS } from "../pkg-tests/chromium.mjs";
import { REPO, MODELS, arg } from "./common.mjs";

const FILE = arg("--file", null);
const MODEL = FILE ? path.basename(FILE) : arg("--model", "emoji");
const STEPS = Number(arg("--steps", MODEL === "emoji" ? 30 : 6));
const TOP = Number(arg("--top", 15));
const OUT = arg("--out", null);

const file = FILE ? path.resolve(FILE) : path.join(MODELS, `${MODEL}.int8.safetensors`);
if (!fs.existsSync(file)) throw new Error(`${file} missing: run bash bench/run.sh (or bench/make_models.py) first`);
if (!fs.existsSync(path.join(REPO, "pkg/index.js"))) throw new Error("pkg/ missing: run bash scripts/build.sh first");

// Groups, first match wins. Self time only: a function's callees count in their own rows.
const GROUPS = [
  // Our GEMM (src/backend/cpu/gemm.rs): the 4x8 simd128 tile is inlined into these drivers.
  ["our GEMM (packed / indirect, tile inlined)", /wasm_diffusion::backend::cpu::gemm::gemm_/],
  ["our GEMM: packing B", /wasm_diffusion::backend::cpu::gemm::pack/],
  ["gemm crate microkernels (matmuls, attention)", /gemm_f32::microkernel/],
  ["gemm crate packing and driver", /gemm_common|gemm_f32::gemm|gemm::gemm/],
  ["our conv2d: im2col, padding", /wasm_diffusion::backend::cpu::conv::/],
  ["our Winograd transforms (3x3 convs)", /wasm_diffusion::backend::cpu::winograd::/],
  // take_host runs the in-place GroupNorm(+SiLU) / SiLU loops and the conv's bias rows inlined.
  ["our GroupNorm(+SiLU), SiLU, bias rows", /wasm_diffusion::backend::cpu::/],
  ["flex conv (other shapes)", /burn_flex::ops::conv/],
  ["flex attention / matmul / softmax", /burn_flex::ops::(attention|matmul|activation)/],
  ["flex elementwise, copies, layout", /burn_flex|macerator|burn_std|cubecl_environment|copy_2d/],
  ["allocation", /alloc|malloc|dlmalloc|__rdl|__rust_alloc/],
  ["idle (waiting between steps)", /^\(idle\)$/],
  ["JS, GC, V8 (program)", /^\((program|garbage collector)\)$|^[^:]*$/],
];
const groupOf = (name) => (GROUPS.find(([, re]) => re.test(name)) || ["other wasm"])[0];

const server = await startServer({ roots: { "/": REPO, "/m/": path.dirname(file) } });
const browser = await launch(NO_LIFTOFF_ARGS);
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("pageerror:", e.message));
  await page.goto(`${server.url}/pkg-tests/page.html`);
  await page.waitForFunction(() => window.ready === true);
  await page.evaluate(async (url) => {
    window.s = await wd.Sampler.load(url, { backend: "cpu" });
    window.opts = s.config.kind === "latent" ? { prompt: "a red apple on a wooden table", negativePrompt: "blurry", guidanceScale: 7.5 } : {};
    for await (const _ of window.s.sample({ ...opts, scheduler: "ddim", steps: 2, seed: 1, previewEvery: 2 }));
  }, `/m/${path.basename(file)}`);
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.setSamplingInterval", { interval: 200 });
  await cdp.send("Profiler.start");
  const ms = await page.evaluate(async (steps) => {
    let last;
    for await (const f of window.s.sample({ ...opts, scheduler: "ddim", steps, seed: 1, previewEvery: steps })) last = f;
    return last.elapsedMs;
  }, STEPS);
  const { profile } = await cdp.send("Profiler.stop");
  if (OUT) fs.writeFileSync(OUT, JSON.stringify(profile));

  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] || 0;
    const name = byId.get(id).callFrame.functionName || "(anonymous)";
    self.set(name, (self.get(name) || 0) + dt);
    total += dt;
  });
  const groups = new Map();
  for (const [name, t] of self) groups.set(groupOf(name), (groups.get(groupOf(name)) || 0) + t);
  const pct = (t) => `${((100 * t) / total).toFixed(1).padStart(5)}%`;
  console.log(`${MODEL}, CPU (wasm), ${STEPS} DDIM steps in ${ms.toFixed(0)} ms = ${(ms / STEPS).toFixed(1)} ms/step (profiled, sampling every 200 us)`);
  console.log("\nby group (self time)");
  for (const [g, t] of [...groups].sort((a, b) => b[1] - a[1])) console.log(`  ${pct(t)}  ${g}`);
  console.log(`\ntop ${TOP} functions (self time)`);
  for (const [name, t] of [...self].sort((a, b) => b[1] - a[1]).slice(0, TOP)) {
    console.log(`  ${pct(t)}  ${name.replace(/::h[0-9a-f]{16}$/, "").slice(0, 110)}`);
  }
} finally {
  await browser.close();
  server.close?.();
}
