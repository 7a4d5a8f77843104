// The package's TypeScript types (pkg/index.d.ts) accept typical use and reject misuse.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

test("index.d.ts type-checks the documented usage under --strict", () => {
  const tsc = path.join(REPO, "node_modules/.bin/tsc");
  const r = spawnSync(tsc, ["-p", path.join(REPO, "pkg-tests/types/tsconfig.json")], { encoding: "utf8" });
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}`);
});
