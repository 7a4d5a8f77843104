// The demo's build manifest, written by scripts/build.sh after pkg/ is built:
//  - models/index.json gets `integrity`: { "<model path>": "sha256-<base64>" } for the default
//    model and the text-to-image model (`textToImage.model`) (SRI style; the demo passes it to
//    SamplerWorker.load and sw.js checks the cached copy with it). The other keys keep their
//    order and formatting.
//  - www/build-id.js: the build id and the hash of every file the service worker pins to it
//    (the package, models/index.json, the demo's models). sw.js imports it: a new build changes
//    it, so the browser installs the worker again, and the install refuses a set of files that
//    does not match these hashes (a half-done deploy, a stale HTTP cache).
//
//   node scripts/demo-manifest.mjs [--root DIR]    (DIR: the site's root, default the repo)
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

// The package files the demo runs; sw.js caches exactly these (its list comes from build-id.js).
export const PKG_FILES = [
  "pkg/index.js",
  "pkg/worker-client.js",
  "pkg/worker.js",
  "pkg/wasm_diffusion.js",
  "pkg/wasm_diffusion_bg.wasm",
  "pkg/wasm_diffusion_threads.js",
  "pkg/wasm_diffusion_threads_bg.wasm",
];

/** The package files under `root` the demo runs: PKG_FILES and the threaded build's JS snippets
 * (pkg/snippets/, whose folder names wasm-bindgen derives from a hash). */
export function pkgFiles(root) {
  const snippets = [];
  const walk = (rel) => {
    const abs = path.join(root, rel);
    if (!fs.existsSync(abs)) return;
    for (const e of fs.readdirSync(abs, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      if (e.isDirectory()) walk(`${rel}/${e.name}`);
      else if (e.name.endsWith(".js")) snippets.push(`${rel}/${e.name}`);
    }
  };
  walk("pkg/snippets");
  return [...PKG_FILES, ...snippets];
}

const sri = (bytes) => `sha256-${crypto.createHash("sha256").update(bytes).digest("base64")}`;

/** The model files the demo loads (paths under models/): the default, then the text-to-image one. */
export function demoModels(index) {
  const text = index.textToImage?.model;
  if (text !== undefined && (typeof text !== "string" || !text)) {
    throw new Error(`models/index.json: expected "textToImage.model" naming a model file, found ${JSON.stringify(text)}`);
  }
  return text ? [index.default, text] : [index.default];
}

/** Writes the integrity into models/index.json and www/build-id.js under `root`; returns the build id. */
export function writeManifest(root) {
  const indexPath = path.join(root, "models/index.json");
  const index = JSON.parse(fs.readFileSync(indexPath, "utf8"));
  if (typeof index.default !== "string" || !index.default) {
    throw new Error(`${indexPath}: expected "default" naming a model file, found ${JSON.stringify(index.default)}`);
  }
  const names = demoModels(index);
  index.integrity = Object.fromEntries(names.map((m) => [m, sri(fs.readFileSync(path.join(root, "models", m)))]));
  fs.writeFileSync(indexPath, `${JSON.stringify(index, null, 2)}\n`);

  const files = {};
  for (const f of [...pkgFiles(root), "models/index.json", ...names.map((m) => `models/${m}`)]) files[f] = sri(fs.readFileSync(path.join(root, f)));
  const build = crypto.createHash("sha256").update(JSON.stringify(files)).digest("hex").slice(0, 16);
  fs.mkdirSync(path.join(root, "www"), { recursive: true });
  fs.writeFileSync(
    path.join(root, "www/build-id.js"),
    "// Written by scripts/build.sh (scripts/demo-manifest.mjs); sw.js imports it: the build id and\n" +
      "// the hash of each file the service worker caches for this build.\n" +
      `self.WASM_DIFFUSION_BUILD = ${JSON.stringify(build)};\n` +
      `self.WASM_DIFFUSION_FILES = ${JSON.stringify(files, null, 2)};\n`,
  );
  return build;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const root = path.resolve(args.includes("--root") ? args[args.indexOf("--root") + 1] : path.join(path.dirname(new URL(import.meta.url).pathname), ".."));
  console.log(writeManifest(root));
}
