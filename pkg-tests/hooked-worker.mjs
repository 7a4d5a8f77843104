// The package's worker with test hooks (see worker-hooks.mjs): SamplerWorker.load(url,
// { workerUrl: "/pkg-tests/hooked-worker.mjs?cache=put" }). Static imports run in order, so the
// hooks are in place before pkg/worker.js runs.
import "./worker-hooks.mjs";
import "/pkg/worker.js";
