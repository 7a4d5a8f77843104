// Browser CPU benchmark: our package (one or more builds of pkg/) against onnxruntime-web's wasm
// execution provider (1 thread), in headless Chromium, measured the same way on both sides.
//
//   node bench/cpu.mjs [--models DIR] [--cases emoji:1,emoji-gpu:1,cifar10:1] [--rounds 3]
//                      [--samples 10] [--flags default|no-liftoff] [--threads 1,2]
//                      [--out FILE.json] [PKG_DIR...]
//   node bench/cpu.mjs --time-to-speed PAGES [--ttfs-seconds 60] [--cases ...] [PKG_DIR]
//
// PKG_DIR (default pkg) is a built copy of pkg/; several are several builds compared, e.g. before
// and after a change (`cp -r pkg /tmp/pkg-before`). A case is MODEL:BATCH; MODEL names files of
// DIR (default ~/.cache/wasm-diffusion/bench): ours loads MODEL.int8.safetensors,
// onnxruntime-web MODEL.bBATCH.onnx, whose output is checked once against MODEL.bBATCH.ref.json
// (PyTorch). emoji is the 1.1M-parameter test model, emoji-gpu the shipped 6.8M model's config,
// cifar10 the 35.7M google/ddpm-cifar10-32 one.
//
// One sample = one U-Net call (DDIM, no guidance, BATCH images), timed with performance.now()
// around the call, by the same page code on both sides:
//  - ours: one step of a long run, `sampler.sample({ scheduler: "ddim", steps: <the model's
//    maxSteps, 1000>, seed: 1, batch, previewEvery: 1 })` on the "cpu" backend; one call = one
//    `iterator.next()`: the U-Net step, the x0 preview read back from wasm as RGBA and the yield
//    to the page the package makes each step. A run is ended (return()) one step before its
//    final frame and a new one started, so every call is an ordinary step.
//  - onnxruntime-web: one `session.run(feeds)` on [BATCH,3,32,32] + timestep (+ class labels),
//    numThreads 1, no proxy worker; it includes uploading the inputs and reading the output back.
// Warm-up, the same function on both sides (its source is injected into every page): calls until
// the median of the last 5 calls is within 3% of the median of the 5 before (at least 10 calls;
// at most 150 calls or 90 s, and then the page is marked "not settled"), then --samples timed
// calls. The whole warm-up trace is kept as [ms since the page's navigation start at the call's
// start, ms of the call]: it shows how long V8 takes to tier the code up to full speed.
// Rounds are interleaved: in each round, per case, every PKG_DIR and onnxruntime-web (the order
// reversed every other round), each in a
// fresh page of its own (a new browser context: nothing compiled or cached is shared). Per cell
// (case x implementation): n, median, p10, p90, min, max and the per-round medians of the pooled
// samples; ours/ORT is the ratio of the pooled medians, with the range of the per-round ratios.
// --threads LIST (default 1): every build and onnxruntime-web run once per thread count, ours
// with the load option `threads` (the package's threaded build above 1), onnxruntime-web with
// `numThreads`; with any count above 1 the pages are served cross-origin isolated (COOP/COEP),
// which wasm threads need, and ours/ORT compares the same thread count, "vs 1t" each build
// against itself on one thread. Ours then runs in a SamplerWorker at every thread count (on the
// main thread a page keeps one core for the waiting thread, see index.js); a call is the same
// step, its preview arriving as ImageBitmaps. onnxruntime-web stays on the main thread, which
// is one of its compute threads.
// --thread-stats N: after the timed samples, N more calls of ours with the threaded build's
// counters on (a performance.now() per split loop): the share of a step spent in split loops,
// the rest on one thread, and the lead's wait for the last helper (the table's last lines).
// --flags default starts Chromium with plain flags (Liftoff first, TurboFan tier-up as users
// get it); no-liftoff adds NO_LIFTOFF_ARGS (every wasm function optimized before it first runs:
// steady-state code from the first call).
//
// --time-to-speed PAGES: no warm-up rule; for ours (the first PKG_DIR) and onnxruntime-web,
// PAGES fresh pages each (alternating) per case, each making back-to-back calls from the moment
// the model is loaded for --ttfs-seconds (default 60). Per page: the first call's ms; the steady
// median (median of the last third of the calls); and the time to full speed: the start (ms since
// navigation, and since the model was loaded) of the earliest call from which on at least 90% of
// the calls are within 10% of steady, counted up to every later call (so a slow start is not
// diluted by a long fast tail).
//
// Recorded with the results (JSON and printout): the CPU model and its SIMD flags
// (/proc/cpuinfo), os.cpus().length, the load average at the start and the end, Chromium's
// version and the V8 flags, and in a page: navigator.hardwareConcurrency, crossOriginIsolated,
// and whether WebAssembly SIMD and relaxed SIMD validate (WebAssembly.validate on tiny modules
// using f32x4.add and f32x4.relaxed_madd; a broken module must fail, or the probe is void).
// The table goes to stdout, progress to stderr; --out FILE writes every raw sample and trace.
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startServer } from "../pkg-tests/server.mjs";
import { launch, NO_LIFTOFF_ARGS } from "../pkg-tests/chromium.mjs";
import { REPO, CACHE, ORT_DIST, argv, median } from "./common.mjs";

const WARMUP = { minCalls: 10, maxCalls: 150, maxMs: 90_000, window: 5, tolerance: 0.03 };
const SPEED = { within: 0.1, fraction: 0.9 };
const ORT = "onnxruntime-web";

const log = (...a) => console.error(...a);
if (argv.includes("-h") || argv.includes("--help")) {
  console.log(fs.readFileSync(new URL(import.meta.url), "utf8").split("\n").filter((l) => l.startsWith("//")).map((l) => l.slice(3)).join("\n"));
  process.exit(0);
}

// --- command line ---------------------------------------------------------------------------
const OPTIONS = ["--models", "--cases", "--rounds", "--samples", "--flags", "--out", "--time-to-speed", "--ttfs-seconds", "--threads", "--thread-stats"];
const opts = new Map();
const dirArgs = [];
for (let i = 0; i < argv.length; i++) {
  if (!argv[i].startsWith("--")) dirArgs.push(argv[i]);
  else if (!OPTIONS.includes(argv[i])) throw new Error(`unknown option ${argv[i]} (expected one of ${OPTIONS.join(" ")})`);
  else if (i + 1 >= argv.length) throw new Error(`${argv[i]}: expected a value`);
  else opts.set(argv[i], argv[++i]);
}
const posInt = (flag, fallback) => {
  const v = Number(opts.get(flag) ?? fallback);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${flag}: expected a positive integer, found ${opts.get(flag)}`);
  return v;
};
const MODELS = path.resolve(opts.get("--models") ?? path.join(CACHE, "bench"));
const ROUNDS = posInt("--rounds", 3);
const SAMPLES = posInt("--samples", 10);
const FLAGS = opts.get("--flags") ?? "default";
if (!["default", "no-liftoff"].includes(FLAGS)) throw new Error(`--flags: expected default or no-liftoff, found ${FLAGS}`);
const OUT = opts.has("--out") ? path.resolve(opts.get("--out")) : null;
const TTFS_PAGES = opts.has("--time-to-speed") ? posInt("--time-to-speed") : 0;
const TTFS_SECONDS = posInt("--ttfs-seconds", 60);
const CASES = (opts.get("--cases") ?? "emoji:1,emoji-gpu:1,cifar10:1").split(",").map((c) => {
  const m = /^([\w.-]+):(\d+)$/.exec(c.trim());
  if (!m || Number(m[2]) < 1) throw new Error(`--cases: expected MODEL:BATCH, found "${c}"`);
  return { name: `${m[1]}:${m[2]}`, model: m[1], batch: Number(m[2]) };
});
for (const c of CASES) {
  for (const f of [`${c.model}.int8.safetensors`, `${c.model}.b${c.batch}.onnx`, `${c.model}.b${c.batch}.ref.json`]) {
    if (!fs.existsSync(path.join(MODELS, f))) throw new Error(`${MODELS}/${f} missing (case ${c.name}): see bench/make_models.py and bench/export_onnx.py`);
  }
}
if (!fs.existsSync(path.join(ORT_DIST, "ort.wasm.min.mjs"))) throw new Error(`${ORT_DIST} missing: run npm install in bench/`);
const dirs = (dirArgs.length ? dirArgs : ["pkg"]).map((d, i, all) => {
  const abs = path.resolve(d);
  for (const f of ["index.js", "wasm_diffusion_bg.wasm"]) if (!fs.existsSync(path.join(abs, f))) throw new Error(`${abs}/${f} missing: expected a built copy of pkg/`);
  const label = all.indexOf(d) === i ? d : `${d}#${i + 1}`;
  return { label, abs, route: `/p${i}/` };
});
const THREADS = (opts.get("--threads") ?? "1").split(",").map((t) => {
  const n = Number(t);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new Error(`--threads: expected thread counts from 1 to 64, found "${t}"`);
  return n;
});
const ISOLATED = THREADS.some((t) => t > 1);
const STATS_CALLS = opts.has("--thread-stats") ? posInt("--thread-stats") : 0;
const tName = (name, t) => (THREADS.length === 1 && t === 1 ? name : `${name} ${t}t`);
// Every implementation measured: each build and onnxruntime-web, at each thread count.
const impls = THREADS.flatMap((t) => [
  ...dirs.map((d) => ({ ...d, ours: true, threads: t, label: tName(d.label, t), base: d.label })),
  { ours: false, threads: t, label: tName(ORT, t), base: ORT },
]);
const ortOf = (impl) => impls.find((i) => !i.ours && i.threads === impl.threads);
const BROWSER_ARGS = FLAGS === "no-liftoff" ? NO_LIFTOFF_ARGS : [];

// --- page side ------------------------------------------------------------------------------
// These two functions run in the pages; their source is injected into every page, so ours and
// onnxruntime-web are warmed up and timed by the very same code. `call` makes one U-Net call and
// resolves once its output has been read back.

/** Warm-up until settled (see the header), then `samples` timed calls. */
async function warmThenTime(call, { samples, minCalls, maxCalls, maxMs, window, tolerance }) {
  const med = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  };
  const trace = [];
  const start = performance.now();
  let settled = false;
  for (;;) {
    const t0 = performance.now();
    await call();
    const t1 = performance.now();
    trace.push([t0, t1 - t0]);
    const n = trace.length;
    if (n >= Math.max(minCalls, 2 * window)) {
      const last = med(trace.slice(n - window).map((p) => p[1]));
      const before = med(trace.slice(n - 2 * window, n - window).map((p) => p[1]));
      settled = Math.abs(last - before) <= tolerance * before;
    }
    if (settled || n >= maxCalls || t1 - start >= maxMs) break;
  }
  const settledAt = performance.now();
  const timed = [];
  for (let i = 0; i < samples; i++) {
    const t0 = performance.now();
    await call();
    timed.push(performance.now() - t0);
  }
  return { trace, settled, warmupCalls: trace.length, warmupMs: settledAt - start, settledAt, samples: timed };
}

/** Back-to-back calls for `ms` milliseconds: the trace of [start since navigation, ms]. */
async function backToBack(call, { ms }) {
  const trace = [];
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const t0 = performance.now();
    await call();
    trace.push([t0, performance.now() - t0]);
  }
  return { trace };
}

const HARNESS = `window.cpuBench = { warmThenTime: (${warmThenTime}), backToBack: (${backToBack}) };`;

/** Ours, in a page with the harness: load the model, then `mode` ("warmThenTime" or "backToBack"). */
async function oursInPage({ pkg, url, batch, mode, cfg, threads, worker, statsCalls }) {
  const loadStartAt = performance.now();
  const wd = await import(pkg);
  const sampler = await (worker ? wd.SamplerWorker : wd.Sampler).load(url, { backend: "cpu", threads });
  if (sampler.threads !== threads) throw new Error(`asked for ${threads} thread(s), got ${sampler.threads}: ${sampler.threadsReason}`);
  const loadedAt = performance.now();
  const steps = sampler.config.sampling.maxSteps;
  let it = null;
  let left = 0;
  const call = async () => {
    if (left === 0) {
      // End the run one step before its final frame (which reads back x_t, not a preview).
      if (it) await it.return();
      it = sampler.sample({ scheduler: "ddim", steps, seed: 1, batch, previewEvery: 1 });
      left = steps - 1;
    }
    const r = await it.next();
    left--;
    if (r.done || r.value.images.length !== batch) throw new Error(`expected a preview of ${batch} images, found ${r.done ? "the end of the run" : r.value.images.length}`);
  };
  const out = await window.cpuBench[mode](call, cfg);
  if (statsCalls && worker && threads > 1) {
    // The threaded build's counters over `statsCalls` more calls (in the sampler's worker).
    const ask = (on) =>
      new Promise((resolve) => {
        const w = sampler._conn.worker;
        const onMessage = (e) => {
          if (e.data && e.data.type === "threadStats") {
            w.removeEventListener("message", onMessage);
            resolve(e.data.stats);
          }
        };
        w.addEventListener("message", onMessage);
        w.postMessage({ type: "threadStats", on });
      });
    await ask(true);
    for (let i = 0; i < statsCalls; i++) await call();
    out.threadStats = await ask(false);
  }
  if (it) await it.return();
  const backend = sampler.backend;
  const threadsReason = sampler.threadsReason;
  sampler.dispose();
  if (backend !== "cpu") throw new Error(`asked for the cpu backend, got ${backend}`);
  return { ...out, loadStartAt, loadedAt, steps, threadsReason };
}

/** onnxruntime-web's wasm EP (`threads` threads), in a page with the harness; the output checked once. */
async function ortInPage({ bundle, url, ref, mode, cfg, threads }) {
  const loadStartAt = performance.now();
  const ort = await import(bundle);
  ort.env.wasm.wasmPaths = "/ort/";
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = false;
  const session = await ort.InferenceSession.create(url, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  const loadedAt = performance.now();
  const shape = ref.shape;
  const n = shape.reduce((a, b) => a * b, 1);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.fround(Math.sin(0.1 * i));
  const feeds = { sample: new ort.Tensor("float32", x, shape), timestep: new ort.Tensor("int64", BigInt64Array.from([BigInt(ref.timestep)]), [1]) };
  if (session.inputNames.includes("class_labels")) feeds.class_labels = new ort.Tensor("int64", new BigInt64Array(shape[0]).fill(BigInt(ref.class_label ?? 0)), [shape[0]]);
  let last = null;
  const call = async () => {
    last = await session.run(feeds);
  };
  const out = await window.cpuBench[mode](call, cfg);
  // The check, after the timing: the last call's output against PyTorch's.
  const y = last[session.outputNames[0]].data;
  let err = 0;
  for (let i = 0; i < ref.out_first.length; i++) err = Math.max(err, Math.abs(y[i] - ref.out_first[i]));
  await session.release();
  return { ...out, loadStartAt, loadedAt, maxAbsErrVsTorch: err, version: ort.env.versions?.web ?? null };
}

/** What the page reports about itself, and the WebAssembly SIMD probes. */
function pageFacts() {
  // A module with one function () -> () whose body is `body` (no locals).
  const mod = (body) => {
    const fn = [0x00, ...body, 0x0b];
    const code = [0x01, fn.length, ...fn];
    return new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x0a, code.length, ...code]);
  };
  const v128s = (n) => Array.from({ length: n }, () => [0xfd, 0x0c, ...new Array(16).fill(0)]).flat(); // n x v128.const 0
  const F32X4_ADD = [0xfd, 0xe4, 0x01]; // 0xfd 228
  const F32X4_RELAXED_MADD = [0xfd, 0x85, 0x02]; // 0xfd 0x105
  const DROP = 0x1a;
  return {
    userAgent: navigator.userAgent,
    hardwareConcurrency: navigator.hardwareConcurrency,
    crossOriginIsolated: globalThis.crossOriginIsolated,
    wasm: {
      plain: WebAssembly.validate(mod([])),
      simd: WebAssembly.validate(mod([...v128s(2), ...F32X4_ADD, DROP])),
      relaxedSimd: WebAssembly.validate(mod([...v128s(3), ...F32X4_RELAXED_MADD, DROP])),
      // f32x4.add with one operand: must not validate, or validate() checks nothing.
      brokenSimd: WebAssembly.validate(mod([...v128s(1), ...F32X4_ADD, DROP])),
    },
  };
}

// --- statistics -----------------------------------------------------------------------------
/** Quantile q of xs, linear between order statistics. */
function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  return s[lo] + (s[Math.ceil(pos)] - s[lo]) * (pos - lo);
}
const r2 = (x) => (x == null ? x : Math.round(x * 100) / 100);
function stats(xs) {
  return { n: xs.length, median: r2(median(xs)), p10: r2(quantile(xs, 0.1)), p90: r2(quantile(xs, 0.9)), min: r2(Math.min(...xs)), max: r2(Math.max(...xs)) };
}

/** Time-to-speed of one back-to-back trace (see the header). */
function timeToSpeed(trace, loadedAt) {
  const ms = trace.map((p) => p[1]);
  const steady = median(ms.slice(Math.floor((2 * ms.length) / 3)));
  const ok = ms.map((x) => Math.abs(x - steady) <= SPEED.within * steady);
  // Calls i..k have >= 90% ok iff Q[k+1] >= Q[i], Q[m] = (ok among the first m) - 0.9 m; the
  // earliest i for which that holds for every k >= i, via the suffix minimum of Q.
  const Q = [0];
  ok.forEach((o, m) => Q.push(Q[m] + (o ? 1 : 0) - SPEED.fraction));
  let at = null;
  let suffixMin = Infinity;
  for (let i = ms.length - 1; i >= 0; i--) {
    suffixMin = Math.min(suffixMin, Q[i + 1]);
    if (suffixMin >= Q[i] - 1e-9) at = i;
  }
  const atSpeed = at === null ? null : ok.slice(at).filter(Boolean).length / (ms.length - at);
  return {
    calls: ms.length,
    firstCallMs: r2(ms[0]),
    firstCallAt: r2(trace[0][0]),
    steadyMs: r2(steady),
    steadyFractionWithin: r2(ok.slice(Math.floor((2 * ms.length) / 3)).filter(Boolean).length / (ms.length - Math.floor((2 * ms.length) / 3))),
    atSpeedCall: at,
    atSpeedSinceNavigationMs: at === null ? null : r2(trace[at][0]),
    atSpeedSinceLoadMs: at === null ? null : r2(trace[at][0] - loadedAt),
    fractionWithin: at === null ? null : r2(atSpeed),
  };
}

// --- host -----------------------------------------------------------------------------------
const SIMD_FLAGS = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni"];
function hostFacts() {
  let cpuinfo = "";
  try {
    cpuinfo = fs.readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    // Not Linux: the model from os.cpus(), flags unknown.
  }
  const flags = new Set((/^flags\s*:(.*)$/m.exec(cpuinfo)?.[1] ?? "").trim().split(/\s+/));
  return {
    cpuModel: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? null,
    simdFlags: cpuinfo ? Object.fromEntries(SIMD_FLAGS.map((f) => [f, flags.has(f)])) : null,
    cpus: os.cpus().length,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    loadavgStart: os.loadavg().map(r2),
  };
}
function buildFacts(d) {
  const wasm = fs.readFileSync(path.join(d.abs, "wasm_diffusion_bg.wasm"));
  return { label: d.label, dir: d.abs, wasmBytes: wasm.length, wasmSha256: crypto.createHash("sha256").update(wasm).digest("hex").slice(0, 16), wasmMtime: fs.statSync(path.join(d.abs, "wasm_diffusion_bg.wasm")).mtime.toISOString() };
}

// --- run ------------------------------------------------------------------------------------
const results = {
  script: "bench/cpu.mjs",
  argv,
  started: new Date().toISOString(),
  mode: TTFS_PAGES ? "time-to-speed" : "bench",
  config: TTFS_PAGES
    ? { cases: CASES.map((c) => c.name), pages: TTFS_PAGES, seconds: TTFS_SECONDS, flags: FLAGS, speed: SPEED, models: MODELS }
    : { cases: CASES.map((c) => c.name), rounds: ROUNDS, samples: SAMPLES, flags: FLAGS, warmup: WARMUP, models: MODELS },
  host: hostFacts(),
  builds: (TTFS_PAGES ? dirs.slice(0, 1) : dirs).map(buildFacts),
  pages: [],
};

const roots = { "/": REPO, "/m/": MODELS, "/ort/": ORT_DIST };
dirs.forEach((d) => (roots[d.route] = d.abs));
const server = await startServer({ roots, isolated: ISOLATED });
const BLANK = `${server.url}/__cpu-bench.html`;
const browser = await launch(BROWSER_ARGS);
results.browser = {
  version: browser.version(),
  args: BROWSER_ARGS,
  jsFlags: BROWSER_ARGS.filter((a) => a.startsWith("--js-flags=")).map((a) => a.slice("--js-flags=".length)).join(" ") || "(none)",
};

/** A fresh page in a new browser context, on an empty same-origin document, with the harness. */
async function freshPage() {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => log("pageerror:", e.message));
  page.on("console", (m) => {
    if (m.type() === "error" && !/favicon|status of 404|VerifyEachNodeIsAssignedToAnEp/.test(m.text())) log("console:", m.text());
  });
  const coi = ISOLATED ? { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" } : {};
  await context.route(BLANK, (r) => r.fulfill({ contentType: "text/html; charset=utf-8", headers: coi, body: "<!doctype html><meta charset=utf-8><title>bench/cpu.mjs</title>" }));
  await page.goto(BLANK);
  await context.unrouteAll();
  await page.evaluate(HARNESS);
  return { page, close: () => context.close() };
}

/** One page: `impl` (one of `impls`) on case `c` in `mode`. */
async function runPage(impl, c, mode, cfg) {
  const { page, close } = await freshPage();
  try {
    if (!impl.ours) {
      const ref = JSON.parse(fs.readFileSync(path.join(MODELS, `${c.model}.b${c.batch}.ref.json`), "utf8"));
      const r = await page.evaluate(ortInPage, { bundle: "/ort/ort.wasm.min.mjs", url: `/m/${c.model}.b${c.batch}.onnx`, ref, mode, cfg, threads: impl.threads });
      if (!(r.maxAbsErrVsTorch < 1e-3)) throw new Error(`${impl.label} ${c.name}: output differs from PyTorch's by ${r.maxAbsErrVsTorch}`);
      results.ortVersion = r.version;
      return r;
    }
    return await page.evaluate(oursInPage, { pkg: `${impl.route}index.js`, url: `/m/${c.model}.int8.safetensors`, batch: c.batch, mode, cfg, threads: impl.threads, worker: ISOLATED, statsCalls: STATS_CALLS });
  } finally {
    await close();
  }
}

const implName = (impl) => impl.label;
const f1 = (x) => (x == null ? "-" : x.toFixed(1));
try {
  {
    const { page, close } = await freshPage();
    results.page = await page.evaluate(pageFacts);
    await close();
    const w = results.page.wasm;
    if (!w.plain || w.brokenSimd) throw new Error(`WebAssembly.validate probes are void: empty module ${w.plain}, broken SIMD module ${w.brokenSimd}`);
    if (!w.simd) log("warning: WebAssembly SIMD does not validate in this browser");
  }

  if (!TTFS_PAGES) {
    const cfg = { samples: SAMPLES, ...WARMUP };
    for (let round = 0; round < ROUNDS; round++) {
      for (const c of CASES) {
        // The order alternates between rounds, so a drift of the host's load within a round
        // does not always favour the same side.
        const order = round % 2 === 0 ? impls : [...impls].reverse();
        for (const impl of order) {
          const r = await runPage(impl, c, "warmThenTime", cfg);
          results.pages.push({ round, case: c.name, impl: implName(impl), ...r });
          log(`round ${round + 1}/${ROUNDS} ${c.name} ${implName(impl)}: median ${f1(median(r.samples))} ms [${r.samples.map((x) => x.toFixed(1)).join(" ")}]; warm-up ${r.warmupCalls} calls, ${Math.round(r.warmupMs)} ms${r.settled ? "" : " (did not settle)"}`);
        }
      }
    }
  } else {
    for (const c of CASES) {
      for (let k = 0; k < TTFS_PAGES; k++) {
        for (const impl of impls.filter((i) => i.base === dirs[0].label || !i.ours)) {
          const r = await runPage(impl, c, "backToBack", { ms: TTFS_SECONDS * 1000 });
          const speed = timeToSpeed(r.trace, r.loadedAt);
          results.pages.push({ page: k, case: c.name, impl: implName(impl), ...r, timeToSpeed: speed });
          log(`page ${k + 1}/${TTFS_PAGES} ${c.name} ${implName(impl)}: ${speed.calls} calls, first ${f1(speed.firstCallMs)} ms, steady ${f1(speed.steadyMs)} ms, at speed ${f1(speed.atSpeedSinceLoadMs)} ms after load`);
        }
      }
    }
  }
} finally {
  await browser.close();
  await server.close();
}
results.host.loadavgEnd = os.loadavg().map(r2);
results.finished = new Date().toISOString();

// --- report ---------------------------------------------------------------------------------
const h = results.host;
const simd = h.simdFlags ? SIMD_FLAGS.filter((f) => h.simdFlags[f]).join(" ") || "none of " + SIMD_FLAGS.join(" ") : "unknown";
const p = results.page;
const lines = [
  `host: ${h.cpuModel}, ${h.cpus} CPUs, SIMD: ${simd}; load average ${h.loadavgStart.join(" ")} at start, ${h.loadavgEnd.join(" ")} at end`,
  `chromium ${results.browser.version}, V8 flags ${results.browser.jsFlags} (--flags ${FLAGS}); ${ORT} ${results.ortVersion ?? "?"} wasm EP; threads ${THREADS.join(", ")}${ISOLATED ? " (pages cross-origin isolated)" : ""}`,
  `page: hardwareConcurrency ${p.hardwareConcurrency}, crossOriginIsolated ${p.crossOriginIsolated}, wasm SIMD ${p.wasm.simd}, relaxed SIMD ${p.wasm.relaxedSimd} (broken module rejected: ${!p.wasm.brokenSimd})`,
  ...results.builds.map((b) => `build ${b.label}: wasm ${(b.wasmBytes / 1e6).toFixed(1)} MB, sha256 ${b.wasmSha256}, built ${b.wasmMtime}`),
  "",
];
const pad = (s, n) => String(s).padEnd(n);
const lpad = (s, n) => String(s).padStart(n);
const implW = Math.max(...impls.map((i) => i.label.length)) + 2;
const caseW = Math.max(6, ...CASES.map((c) => c.name.length)) + 2;

if (!TTFS_PAGES) {
  results.cells = [];
  lines.push(`ms per U-Net call (one sample = one call incl. read-back), ${ROUNDS} round(s) x ${SAMPLES} samples per cell`);
  lines.push(pad("case", caseW) + pad("impl", implW) + ["n", "median", "p10", "p90", "min", "max"].map((s) => lpad(s, 8)).join("") + "  per-round medians   ours/ORT (rounds)" + (ISOLATED ? "   vs 1t" : ""));
  for (const c of CASES) {
    const of = (name) => results.pages.filter((q) => q.case === c.name && q.impl === name);
    const roundMedians = (name) => Array.from({ length: ROUNDS }, (_, r) => median(of(name).filter((q) => q.round === r).flatMap((q) => q.samples)));
    for (const impl of impls) {
      const name = impl.label;
      const all = of(name).flatMap((q) => q.samples);
      const rounds = roundMedians(name);
      const s = stats(all);
      const cell = { case: c.name, impl: name, threads: impl.threads, ...s, roundMedians: rounds.map(r2) };
      let ratio = "";
      if (impl.ours) {
        const ort = ortOf(impl).label;
        const ortAll = of(ort).flatMap((q) => q.samples);
        const perRound = rounds.map((m, r) => m / roundMedians(ort)[r]);
        cell.ratioVsOrt = r2(median(all) / median(ortAll));
        cell.ratioVsOrtRounds = [r2(Math.min(...perRound)), r2(Math.max(...perRound))];
        ratio = `${cell.ratioVsOrt.toFixed(2)}x (${cell.ratioVsOrtRounds[0].toFixed(2)}-${cell.ratioVsOrtRounds[1].toFixed(2)})`;
      } else {
        ratio = " ".repeat(16);
      }
      const one = impls.find((i) => i.base === impl.base && i.threads === 1);
      if (ISOLATED && one && impl.threads > 1) {
        const oneAll = of(one.label).flatMap((q) => q.samples);
        const perRound = rounds.map((m, r) => m / roundMedians(one.label)[r]);
        cell.ratioVsOneThread = r2(median(all) / median(oneAll));
        cell.ratioVsOneThreadRounds = [r2(Math.min(...perRound)), r2(Math.max(...perRound))];
        ratio += `   ${cell.ratioVsOneThread.toFixed(2)}x (${cell.ratioVsOneThreadRounds[0].toFixed(2)}-${cell.ratioVsOneThreadRounds[1].toFixed(2)})`;
      }
      cell.warmup = of(name).map((q) => ({ round: q.round, calls: q.warmupCalls, ms: Math.round(q.warmupMs), settledAt: Math.round(q.settledAt), settled: q.settled, loadMs: Math.round(q.loadedAt - q.loadStartAt) }));
      results.cells.push(cell);
      lines.push(pad(c.name, caseW) + pad(name, implW) + [s.n, f1(s.median), f1(s.p10), f1(s.p90), f1(s.min), f1(s.max)].map((v) => lpad(v, 8)).join("") + "  " + pad(rounds.map(f1).join(" "), 18) + "  " + ratio);
    }
  }
  const withStats = results.pages.filter((q) => q.threadStats);
  if (withStats.length) {
    lines.push("", `threaded steps (--thread-stats ${STATS_CALLS} calls per page, all rounds): split loops, the rest on one thread, the lead's wait for helpers`);
    for (const c of CASES) {
      for (const impl of impls.filter((i) => i.ours && i.threads > 1)) {
        const qs = withStats.filter((q) => q.case === c.name && q.impl === impl.label);
        if (!qs.length) continue;
        const sum = (k) => qs.reduce((a, q) => a + q.threadStats[k], 0);
        const [steps, stepMs, par, wait, regions] = ["steps", "stepMs", "parallelMs", "waitMs", "regions"].map(sum);
        const cell = results.cells.find((x) => x.case === c.name && x.impl === impl.label);
        cell.threadStats = { steps, msPerStep: r2(stepMs / steps), splitShare: r2(par / stepMs), serialShare: r2(1 - par / stepMs), waitShare: r2(wait / stepMs), loopsPerStep: r2(regions / steps) };
        lines.push(pad(c.name, caseW) + pad(impl.label, implW) + `${f1(stepMs / steps)} ms/step in the step itself; split loops ${Math.round((100 * par) / stepMs)}% (${Math.round(regions / steps)} per step), of which waiting for helpers ${Math.round((100 * wait) / stepMs)}%; one thread ${Math.round(100 - (100 * par) / stepMs)}%`);
      }
    }
  }
  lines.push("", `warm-up per page (calls / ms until settled, from the first call; * = not settled within ${WARMUP.maxCalls} calls or ${WARMUP.maxMs / 1000} s):`);
  for (const cell of results.cells) {
    lines.push(pad(cell.case, caseW) + pad(cell.impl, implW) + cell.warmup.map((w) => `r${w.round + 1} ${w.calls}/${w.ms}${w.settled ? "" : "*"}`).join("  ") + `   (load ${cell.warmup.map((w) => w.loadMs).join(" ")} ms)`);
  }
} else {
  lines.push(`time to full speed: ${TTFS_PAGES} fresh page(s) each, ${TTFS_SECONDS} s of back-to-back calls from load, --flags ${FLAGS}`);
  lines.push(`(at speed: start of the earliest call from which on >= ${SPEED.fraction * 100}% of calls are within ${SPEED.within * 100}% of steady = median of the last third)`);
  lines.push(pad("case", caseW) + pad("impl", implW) + lpad("page", 5) + ["load ms", "1st call", "steady", "calls", "at speed", "(nav)", "in 10%", "steady in"].map((s) => lpad(s, 10)).join(""));
  for (const q of results.pages) {
    const s = q.timeToSpeed;
    lines.push(pad(q.case, caseW) + pad(q.impl, implW) + lpad(q.page + 1, 5) + [Math.round(q.loadedAt - q.loadStartAt), f1(s.firstCallMs), f1(s.steadyMs), s.calls, s.atSpeedSinceLoadMs == null ? "never" : Math.round(s.atSpeedSinceLoadMs), s.atSpeedSinceNavigationMs == null ? "-" : Math.round(s.atSpeedSinceNavigationMs), s.fractionWithin == null ? "-" : `${Math.round(s.fractionWithin * 100)}%`, `${Math.round(s.steadyFractionWithin * 100)}%`].map((v) => lpad(v, 10)).join(""));
  }
  lines.push("(load ms: import + model load/session create; at speed: ms after load, (nav): ms since navigation; in 10%: calls within 10% of steady from then on; steady in: the same over the last third)");
}
console.log(lines.join("\n"));
if (OUT) {
  fs.writeFileSync(OUT, JSON.stringify(results, null, 1));
  log(`wrote ${OUT}`);
}
