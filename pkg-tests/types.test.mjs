// The package's types: its TypeScript declarations (pkg/index.d.ts) accept typical use and
// reject misuse, and its JS (pkg/index.js, worker-client.js, worker.js; `// @ts-check`)
// type-checks against them and the wasm-bindgen declarations of the build (tsc --checkJs). The
// lint gate (scripts/lint.sh) checks the same JS in src/web/js before there is a build.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const tsc = (config) => spawnSync(path.join(REPO, "node_modules/.bin/tsc"), ["-p", path.join(REPO, "pkg-tests/types", config)], { encoding: "utf8" });

test("index.d.ts type-checks the documented usage under --strict", () => {
  const r = tsc("tsconfig.json");
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}`);
});

test("the package's JS type-checks (tsc --checkJs)", () => {
  const r = tsc("tsconfig.checkjs.json");
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}`);
});
