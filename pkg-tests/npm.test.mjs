// The npm package as a user gets it: its manifest (src/web/js/package.json, with Cargo.toml's
// version), packed by `npm pack` (what "files" ships) and installed by name into a scratch app,
// resolved through its "exports" as Node and TypeScript's bundler resolution do, and bundled by a
// Vite production build of a one-file app that samples in headless Chromium, on the page
// (Sampler) and in a worker (SamplerWorker): the .wasm and the worker script must survive bundling.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { build } from "vite";
import { REPO, makeModels, launch, NO_GPU_ARGS, startServer, watch, assertNoPageErrors } from "./harness.mjs";

const MANIFEST = JSON.parse(fs.readFileSync(path.join(REPO, "src/web/js/package.json"), "utf8"));
const NAME = MANIFEST.name;
let TMP, APP, DIST, MODELS, packed, server, browser, page;

/** Runs a command, failing the test with its output unless it exits 0; returns its stdout. */
function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8" });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} (in ${cwd}): ${r.error || ""}\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

before(async () => {
  MODELS = makeModels(); // also checks that pkg/ is built
  TMP = fs.mkdtempSync(path.join(os.tmpdir(), "wd-npm-tests-"));
  [packed] = JSON.parse(run("npm", ["pack", "--json", "--pack-destination", TMP], path.join(REPO, "pkg")));
  // The app: the package installed by name from the tarball, as from a registry.
  APP = path.join(TMP, "app");
  fs.mkdirSync(APP);
  fs.writeFileSync(path.join(APP, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  run("npm", ["install", "--offline", "--ignore-scripts", "--no-audit", "--no-fund", "--no-package-lock", path.join(TMP, packed.filename)], APP);
  fs.writeFileSync(path.join(APP, "index.html"), '<!doctype html><meta charset="utf-8"><title>app</title><script type="module" src="./main.js"></script>\n');
  fs.writeFileSync(
    path.join(APP, "main.js"),
    `import { Sampler, SamplerWorker } from "${NAME}";
// A few DDIM steps on the CPU backend, on the page (Sampler) or in a worker (SamplerWorker):
// the frames, or the error that stopped them.
window.sample = async (where, url) => {
  try {
    const s = await (where === "worker" ? SamplerWorker : Sampler).load(url, { backend: "cpu" });
    const frames = [];
    for await (const f of s.sample({ scheduler: "ddim", steps: 3, seed: 1 })) frames.push({ step: f.step, final: f.final, width: f.images[0].width });
    s.dispose();
    return { frames };
  } catch (e) {
    const m = String(e && e.message);
    return { error: { name: e && e.name, message: m.length > 300 ? m.slice(0, 300) + "..." : m } };
  }
};
window.ready = true;
`,
  );
  DIST = path.join(TMP, "dist");
  await build({ root: APP, configFile: false, envFile: false, logLevel: "warn", build: { outDir: DIST, emptyOutDir: true } });
  server = await startServer({ roots: { "/": DIST, "/m/": MODELS } });
  browser = await launch(NO_GPU_ARGS);
  page = watch(await browser.newPage());
  await page.goto(`${server.url}/index.html`);
  await page.waitForFunction(() => window.ready === true);
});

after(async () => {
  await browser?.close();
  await server?.close();
  for (const d of [TMP, MODELS]) if (d) fs.rmSync(d, { recursive: true, force: true });
});

afterEach(assertNoPageErrors);

test("the package's version is Cargo.toml's, and pkg/package.json is src/web/js/package.json", () => {
  const cargo = /^version = "([^"]+)"/m.exec(fs.readFileSync(path.join(REPO, "Cargo.toml"), "utf8"))[1];
  assert.equal(MANIFEST.version, cargo, "src/web/js/package.json: set its version to Cargo.toml's");
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(REPO, "pkg/package.json"), "utf8")), MANIFEST, "pkg/package.json is stale: run scripts/build.sh");
});

test("npm pack ships exactly the files package.json lists", () => {
  assert.equal(packed.name, NAME);
  assert.equal(packed.version, MANIFEST.version);
  // A folder entry ("snippets/": the threaded build's JS snippets) ships every file under it.
  const files = MANIFEST.files.flatMap((f) =>
    f.endsWith("/")
      ? fs.readdirSync(path.join(REPO, "pkg", f), { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.relative(path.join(REPO, "pkg"), path.join(e.parentPath ?? e.path, e.name)))
      : [f],
  );
  assert.ok(files.some((f) => f.startsWith("snippets/")), "the threaded build's snippets are in pkg/");
  assert.deepEqual(packed.files.map((f) => f.path).sort(), [...files, "package.json"].sort());
});

test("the installed package resolves by name through its exports (Node)", () => {
  const probe = path.join(APP, "probe.mjs");
  fs.writeFileSync(
    probe,
    `const out = {};
for (const s of ${JSON.stringify([NAME, `${NAME}/worker`, `${NAME}/wasm_diffusion_bg.wasm`, `${NAME}/package.json`, `${NAME}/worker-client.js`])}) {
  try {
    out[s] = new URL(import.meta.resolve(s)).pathname;
  } catch (e) {
    out[s] = e.code;
  }
}
console.log(JSON.stringify(out));
`,
  );
  const out = JSON.parse(run(process.execPath, [probe], APP));
  const dir = fs.realpathSync(path.join(APP, "node_modules", NAME));
  assert.deepEqual(out, {
    [NAME]: path.join(dir, "index.js"),
    [`${NAME}/worker`]: path.join(dir, "worker.js"),
    [`${NAME}/wasm_diffusion_bg.wasm`]: path.join(dir, "wasm_diffusion_bg.wasm"),
    [`${NAME}/package.json`]: path.join(dir, "package.json"),
    // Not exported: an implementation file.
    [`${NAME}/worker-client.js`]: "ERR_PACKAGE_PATH_NOT_EXPORTED",
  });
  assert.equal(JSON.parse(fs.readFileSync(out[`${NAME}/package.json`], "utf8")).version, MANIFEST.version);
});

test("the installed package's types resolve by name (TypeScript, moduleResolution bundler)", () => {
  const file = path.join(APP, "usage.ts");
  fs.writeFileSync(
    file,
    `import { Sampler, SamplerWorker, type Frame } from "${NAME}";
export async function first(url: string): Promise<Frame | undefined> {
  const s: Sampler = await Sampler.load(url, { backend: "cpu" });
  for await (const f of s.sample({ steps: 2 })) return f;
}
export const w: Promise<SamplerWorker> = SamplerWorker.load("m.safetensors");
// @ts-expect-error: real declarations, not \`any\`, reject a number as the model source
Sampler.load(42);
`,
  );
  const tsc = path.join(REPO, "node_modules/.bin/tsc");
  run(tsc, ["--strict", "--noEmit", "--target", "ES2022", "--module", "ESNext", "--moduleResolution", "bundler", "--lib", "ES2022,DOM,DOM.Iterable,DOM.AsyncIterable", file], APP);
});

test("a Vite build of an app that imports the package samples on the page (Sampler)", async () => {
  const assets = fs.readdirSync(path.join(DIST, "assets"));
  assert.ok(assets.some((f) => /^wasm_diffusion_bg-.*\.wasm$/.test(f)), `no .wasm among the bundle's assets: ${assets.join(" ")}`);
  const r = await page.evaluate(() => window.sample("page", "/m/cc.int8.safetensors"));
  assert.deepEqual(r, { frames: [1, 2, 3].map((step) => ({ step, final: step === 3, width: 16 })) });
  assert.ok(server.log.some((u) => /^\/assets\/wasm_diffusion_bg-.*\.wasm$/.test(u)), `the page did not fetch the bundled .wasm: ${server.log.join(" ")}`);
});

// worker-client.js starts the worker with `new Worker(scriptUrl, ...)`, scriptUrl a variable holding
// String(workerUrl || new URL("./worker.js", import.meta.url)). Bundlers only bundle a worker
// written as one expression, new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
// Vite copies worker.js instead as a plain asset (inlined as a data: URL), unbundled, and its
// `import "./index.js"` cannot load there, so the worker fails to start.
test("a Vite build of an app that imports the package samples in a worker (SamplerWorker)", async () => {
  const r = await page.evaluate(() => window.sample("worker", "/m/cc.int8.safetensors"));
  assert.deepEqual(r, { frames: [1, 2, 3].map((step) => ({ step, final: step === 3, width: 16 })) });
});
