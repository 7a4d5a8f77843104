// Soak (issue 7): many runs in ONE headless Chromium page, and the memory they leave behind.
//
//   node bench/soak.mjs [--cpu 200] [--gpu 20] [--cycles 100] [--warmup 10] [--steps 10]
//                       [--cpu-model FILE] [--out FILE]
//
// Phases, one page: N samples on the CPU backend, M on WebGPU (SwiftShader), then K load/dispose
// cycles (CPU). Each sample previews every step (as the demo does). The model is the class-
// conditional test U-Net (tests/fixtures/unets/classcond, int8, 16x16), converted with the
// native CLI; --cpu-model FILE samples another model in the CPU phase (e.g. the shipped
// models/emoji/emoji.int8.safetensors). Memory = JS heap (performance.memory.usedJSHeapSize
// after gc(), Chromium with --expose-gc and --enable-precise-memory-info) + the wasm linear
// memory of the package's instance (the glue's wasmMemoryBytes(), or its memory export).
// Each phase is measured after its first `--warmup` runs and at its end; growth is
// (end - warm) / warm. Prints a table, writes JSON (--out, default bench/soak.json) and exits 1
// if any phase grew by 5 % or more, or left an engine or run alive after dispose (the package's
// _stats() counters).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { startServer } from "../pkg-tests/server.mjs";
import { launch, WEBGPU_ARGS } from "../pkg-tests/chromium.mjs";
import { REPO, argv, arg } from "./common.mjs";

const CPU_RUNS = Number(arg("--cpu", 200));
const GPU_RUNS = Number(arg("--gpu", 20));
const CYCLES = Number(arg("--cycles", 100));
const WARMUP = Number(arg("--warmup", 10));
const STEPS = Number(arg("--steps", 10));
const CPU_MODEL = arg("--cpu-model", null);
const OUT = path.resolve(arg("--out", path.join(REPO, "bench/soak.json")));
const LIMIT = 5; // % growth that fails
// gc() and exact performance.memory figures in the page.
const MEMORY_ARGS = ["--js-flags=--expose-gc", "--enable-precise-memory-info"];
const log = (...a) => console.error(...a);
if (argv.includes("-h") || argv.includes("--help")) {
  console.log(fs.readFileSync(new URL(import.meta.url), "utf8").split("\n").filter((l) => l.startsWith("//")).map((l) => l.slice(3)).join("\n"));
  process.exit(0);
}

for (const f of ["pkg/index.js", "pkg/wasm_diffusion_bg.wasm"]) {
  if (!fs.existsSync(path.join(REPO, f))) throw new Error(`${f} missing: run bash scripts/build.sh first`);
}
const CLI = path.join(process.env.CARGO_TARGET_DIR || path.join(os.homedir(), ".cache/wasm-diffusion/target"), "release/wasm-diffusion");
const MODELS = fs.mkdtempSync(path.join(os.tmpdir(), "wd-soak-"));
const cc = path.join(MODELS, "cc.int8.safetensors");
const r = spawnSync(CLI, ["convert", path.join(REPO, "tests/fixtures/unets/classcond"), "--quant", "int8", "-o", cc, "--null-class", "4", "--class-names", "a,b,c,d,null"], { encoding: "utf8" });
if (r.status !== 0) throw new Error(`${CLI} convert failed (build it: cargo build --release): ${r.stderr || r.error}`);
if (CPU_MODEL) fs.copyFileSync(path.resolve(CPU_MODEL), path.join(MODELS, "cpu-model.safetensors"));

const server = await startServer({ roots: { "/": REPO, "/m/": MODELS } });
const browser = await launch([...WEBGPU_ARGS, ...MEMORY_ARGS]);
const results = {
  started: new Date().toISOString(),
  command: `node bench/soak.mjs ${argv.join(" ")}`.trim(),
  cpu: fs.readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1],
  cores: os.cpus().length,
  chromium: browser.version(),
  steps: STEPS,
  warmup: WARMUP,
  limit_percent: LIMIT,
  phases: [],
};
let failed = false;
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => log("pageerror:", e.message));
  page.on("console", (m) => m.type() === "error" && log("console:", m.text()));
  await page.goto(`${server.url}/pkg-tests/page.html`);
  await page.waitForFunction(() => window.ready === true);
  await page.evaluate(async () => {
    const glue = await import("/pkg/wasm_diffusion.js");
    await wd.seededNoise(0, 1, 1); // instantiates the package's wasm (shared with the glue)
    const memory = (await glue.default()).memory; // init again returns the same instance's exports
    window.soak = {
      models: {},
      async bytes(url) {
        return (this.models[url] ||= new Uint8Array(await (await fetch(url)).arrayBuffer()));
      },
      wasmBytes: () => (typeof glue.wasmMemoryBytes === "function" ? Number(glue.wasmMemoryBytes()) : memory.buffer.byteLength),
      async measure() {
        for (let i = 0; i < 3; i++) {
          gc();
          await new Promise((r) => setTimeout(r, 50));
        }
        return { heap: performance.memory.usedJSHeapSize, wasm: this.wasmBytes() };
      },
      // One sample, every step previewed; returns the final frame's mean pixel (it must vary by seed).
      async run(sampler, seed, steps) {
        let last = null;
        for await (const f of sampler.sample({ scheduler: "ddim", steps, seed, batch: 1, classLabels: [seed % 4], guidanceScale: 1.5, previewEvery: 1 })) last = f;
        if (!last || !last.final) throw new Error(`run ${seed}: no final frame`);
        const d = last.images[0].data;
        let s = 0;
        for (let i = 0; i < d.length; i += 4) s += d[i];
        return s / (d.length / 4);
      },
    };
  });

  // The next run after which memory is measured: the end of the warm-up, every 10th, the last.
  const nextMark = (i, n) => {
    const w = Math.min(WARMUP, n);
    if (i <= w) return w;
    return Math.min(n, Math.ceil(i / 10) * 10);
  };

  /**
   * Runs 1..runs, `batch(from, to)` running a stretch of them in the page, and measures memory at
   * each point of nextMark. One evaluate per stretch: playwright's own bookkeeping grows the heap
   * by ~170 bytes per evaluate call, which is not the package's. `perRun` adds ms/run to the log.
   */
  const measured = async (runs, batch, perRun) => {
    const series = [];
    const t0 = Date.now();
    let warm = null;
    for (let i = 1; i <= runs; ) {
      const to = nextMark(i, runs);
      await batch(i, to);
      i = to;
      if (i === Math.min(WARMUP, runs) || i % 10 === 0 || i === runs) {
        const m = await page.evaluate(() => window.soak.measure());
        if (i === Math.min(WARMUP, runs)) warm = m;
        series.push({ run: i, ...m });
        const rate = perRun ? `  ${((Date.now() - t0) / i).toFixed(0)} ms/run` : "";
        log(`  ${i}/${runs}  heap ${(m.heap / 1e6).toFixed(2)} MB  wasm ${(m.wasm / 1e6).toFixed(2)} MB${rate}`);
      }
      i++;
    }
    return { warm, series, t0 };
  };

  const sampling = async (name, backend, model, runs) => {
    log(`${name}: ${runs} samples of ${STEPS} steps`);
    await page.evaluate(async ({ backend, model }) => {
      window.soak.sampler = await wd.Sampler.load(await window.soak.bytes(model), { backend });
    }, { backend, model });
    const backendUsed = await page.evaluate(() => window.soak.sampler.backend);
    if (backendUsed !== backend) throw new Error(`${name}: expected backend ${backend}, found ${backendUsed}`);
    const { warm, series, t0 } = await measured(runs, (from, to) =>
      page.evaluate(async ({ from, to, steps }) => {
        for (let seed = from; seed <= to; seed++) await window.soak.run(window.soak.sampler, seed, steps);
      }, { from, to, steps: STEPS }), true);
    await page.evaluate(() => {
      window.soak.sampler.dispose();
      window.soak.sampler = null;
    });
    const alive = await page.evaluate(() => wd._stats?.() ?? null);
    return { name, backend, runs, warm, end: series.at(-1), ms_per_run: (Date.now() - t0) / runs, alive_after_dispose: alive, series };
  };

  const cycling = async (name, backend, model, cycles) => {
    log(`${name}: ${cycles} load/dispose cycles`);
    const { warm, series, t0 } = await measured(cycles, (from, to) =>
      page.evaluate(async ({ backend, model, n }) => {
        for (let k = 0; k < n; k++) {
          const s = await wd.Sampler.load(await window.soak.bytes(model), { backend });
          s.dispose();
        }
      }, { backend, model, n: to - from + 1 }), false);
    const alive = await page.evaluate(() => wd._stats?.() ?? null);
    return { name, backend, runs: cycles, warm, end: series.at(-1), ms_per_run: (Date.now() - t0) / cycles, alive_after_dispose: alive, series };
  };

  if (CPU_RUNS > 0) results.phases.push(await sampling("cpu samples", "cpu", CPU_MODEL ? "/m/cpu-model.safetensors" : "/m/cc.int8.safetensors", CPU_RUNS));
  if (GPU_RUNS > 0) results.phases.push(await sampling("webgpu samples", "webgpu", "/m/cc.int8.safetensors", GPU_RUNS));
  if (CYCLES > 0) results.phases.push(await cycling("load/dispose cycles", "cpu", "/m/cc.int8.safetensors", CYCLES));
} finally {
  await browser.close();
  await server.close();
  fs.rmSync(MODELS, { recursive: true, force: true });
}

const mb = (b) => (b / 1e6).toFixed(2);
const pct = (a, b) => ((b - a) / a) * 100;
console.log(`\nsoak: ${results.cpu} (${results.cores} cores), ${results.chromium}, ${STEPS} steps per sample, warm-up ${WARMUP} runs`);
console.log("| phase | runs | ms/run | JS heap warm -> end (MB) | wasm memory warm -> end (MB) | total growth | engines/runs alive after dispose |");
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const p of results.phases) {
  p.growth_percent = pct(p.warm.heap + p.warm.wasm, p.end.heap + p.end.wasm);
  p.heap_growth_percent = pct(p.warm.heap, p.end.heap);
  p.wasm_growth_percent = pct(p.warm.wasm, p.end.wasm);
  const alive = p.alive_after_dispose ? `${p.alive_after_dispose.engines}/${p.alive_after_dispose.runs}` : "n/a";
  if (p.growth_percent >= LIMIT || (p.alive_after_dispose && (p.alive_after_dispose.engines || p.alive_after_dispose.runs))) failed = true;
  console.log(
    `| ${p.name} (${p.backend}) | ${p.runs} | ${p.ms_per_run.toFixed(0)} | ${mb(p.warm.heap)} -> ${mb(p.end.heap)} (${p.heap_growth_percent.toFixed(1)} %) | ` +
      `${mb(p.warm.wasm)} -> ${mb(p.end.wasm)} (${p.wasm_growth_percent.toFixed(1)} %) | ${p.growth_percent.toFixed(2)} %${p.growth_percent >= LIMIT ? " FAIL" : ""} | ${alive} |`,
  );
}
results.finished = new Date().toISOString();
results.pass = !failed;
fs.writeFileSync(OUT, `${JSON.stringify(results, null, 2)}\n`);
console.log(`\nwrote ${path.relative(process.cwd(), OUT)}; ${failed ? `FAIL: a phase grew by ${LIMIT} % or more, or left objects alive` : `pass: every phase grew by less than ${LIMIT} %`}`);
process.exit(failed ? 1 : 0);
