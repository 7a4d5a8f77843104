// A short soak (the full one is bench/soak.mjs, figures in RELIABILITY.md): 30 CPU samples and
// 20 load/dispose cycles in one page leave the JS heap plus the wasm memory within 5 % of what
// they were after the warm-up, and no engine or run alive after dispose.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

test("30 samples and 20 load/dispose cycles in one page do not grow memory", () => {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "wd-soak-test-")), "soak.json");
  const r = spawnSync(process.execPath, [path.join(REPO, "bench/soak.mjs"), "--cpu", "30", "--gpu", "0", "--cycles", "20", "--warmup", "5", "--steps", "5", "--out", out], { encoding: "utf8", timeout: 120000 });
  assert.ok(fs.existsSync(out), `bench/soak.mjs wrote no result (exit ${r.status}):\n${r.stderr}`);
  const result = JSON.parse(fs.readFileSync(out, "utf8"));
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
  assert.deepEqual(result.phases.map((p) => [p.name, p.runs]), [["cpu samples", 30], ["load/dispose cycles", 20]]);
  for (const p of result.phases) {
    assert.ok(p.growth_percent < 5, `${p.name}: JS heap + wasm memory grew by ${p.growth_percent.toFixed(2)} % (${JSON.stringify({ warm: p.warm, end: p.end })})`);
    if (p.alive_after_dispose) assert.deepEqual([p.alive_after_dispose.engines, p.alive_after_dispose.runs], [0, 0], `${p.name}: engines/runs alive after dispose`);
  }
  assert.equal(r.status, 0, r.stdout + r.stderr);
});
