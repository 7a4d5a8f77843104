// The package's JS (pkg/index.js, worker-client.js, worker.js; `// @ts-check`) type-checks
// against its own index.d.ts and the wasm-bindgen declarations (tsc --checkJs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");

test("the package's JS type-checks (tsc --checkJs)", () => {
  const tsc = path.join(REPO, "node_modules/.bin/tsc");
  const r = spawnSync(tsc, ["-p", path.join(REPO, "pkg-tests/types/tsconfig.checkjs.json")], { encoding: "utf8" });
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}`);
});
