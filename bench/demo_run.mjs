// The demo's default run, timed as a user sees it: the shipped emoji model on the CPU, batch 4
// with classifier-free guidance (8 images per U-Net call), from the first step to the final
// frame, each run in a fresh page after one warm-up run. Several (package, scheduler, steps)
// configurations, rounds interleaved, in ONE headless Chromium session.
//
//   node bench/demo_run.mjs [--rounds 3] [--model models/emoji/emoji.int8.safetensors]
//                           PKG_DIR:SCHEDULER:STEPS[:THREADS] ...
//
// e.g. `node bench/demo_run.mjs /tmp/pkg-before:ddim:25 pkg:ddim:25 pkg:dpm++:15`. Prints the
// median and range of the whole-run seconds per configuration (guidance 1.5, class 0, seed 0,
// a preview every step as the demo shows them). With THREADS on any configuration, every one runs
// as the demo does, in a SamplerWorker on a cross-origin isolated page, with that many threads
// (default 1: the single-threaded build); without, on the page's main thread (Sampler).
import path from "node:path";
import { startServer } from "../pkg-tests/server.mjs";
import { launch } from "../pkg-tests/chromium.mjs";
import { REPO, argv, arg, median } from "./common.mjs";

const ROUNDS = Number(arg("--rounds", "3"));
const MODEL = arg("--model", "models/emoji/emoji.int8.safetensors");
const configs = argv
  .filter((a, i) => !a.startsWith("--") && !argv[i - 1]?.startsWith("--"))
  .map((c) => {
    const [dir, scheduler, steps, threads] = c.split(":");
    if (!dir || !scheduler || !(Number(steps) > 0)) throw new Error(`expected PKG_DIR:SCHEDULER:STEPS[:THREADS], found "${c}"`);
    if (threads !== undefined && !(Number.isInteger(Number(threads)) && Number(threads) >= 1)) throw new Error(`THREADS: expected a positive integer, found "${threads}" in "${c}"`);
    return { dir: path.resolve(dir), scheduler, steps: Number(steps), threads: threads === undefined ? undefined : Number(threads), name: c };
  });
const WORKER = configs.some((c) => c.threads !== undefined);
if (!configs.length) throw new Error("usage: node bench/demo_run.mjs PKG_DIR:SCHEDULER:STEPS ...");

const roots = { "/": REPO };
configs.forEach((c, i) => (roots[`/p${i}/`] = c.dir));
const server = await startServer({ roots, isolated: WORKER });
const browser = await launch([]);
const times = configs.map(() => []);
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, c] of configs.entries()) {
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(`${server.url}/pkg-tests/page.html`);
      const ms = await page.evaluate(
        async ({ pkg, url, scheduler, steps, worker, threads }) => {
          const wd = await import(pkg);
          const s = await (worker ? wd.SamplerWorker : wd.Sampler).load(url, { backend: "cpu", ...(worker ? { threads } : {}) });
          if (worker && s.threads !== threads) throw new Error(`asked for ${threads} thread(s), got ${s.threads}: ${s.threadsReason}`);
          const run = async () => {
            const t0 = performance.now();
            for await (const f of s.sample({ scheduler, steps, seed: 0, batch: 4, classLabels: [0, 0, 0, 0], guidanceScale: 1.5, previewEvery: 1 })) void f;
            return performance.now() - t0;
          };
          await run(); // warm-up: V8 tiers the hot code up, as in a demo's second click
          const t = await run();
          s.dispose();
          return t;
        },
        { pkg: `/p${i}/index.js`, url: `/${MODEL}`, scheduler: c.scheduler, steps: c.steps, worker: WORKER, threads: c.threads ?? 1 },
      );
      times[i].push(ms / 1000);
      console.error(`round ${round + 1} ${c.name}: ${(ms / 1000).toFixed(2)} s`);
      await context.close();
    }
  }
} finally {
  await browser.close();
  await server.close();
}
console.log(`demo default run (batch 4, guidance 1.5, CPU${WORKER ? ", SamplerWorker on a cross-origin isolated page" : ", main thread"}), whole run in seconds`);
for (const [i, c] of configs.entries()) {
  const t = times[i];
  console.log(`${median(t).toFixed(2).padStart(7)} s  (${Math.min(...t).toFixed(2)}-${Math.max(...t).toFixed(2)}, n ${t.length})  ${c.name}`);
}
