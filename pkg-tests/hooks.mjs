// Fault injection for pkg-tests/reliability.test.mjs, in a page (`install(...)` from
// page.evaluate) or in a worker (hooked-worker.mjs installs it from its query string). Each hook
// replaces one browser API with a failing one, the way a real browser fails:
//
//   cache=open      caches.open rejects (storage disabled: a SecurityError)
//   cache=put       Cache.prototype.put rejects (storage full: a QuotaExceededError)
//   gpu=hardware    the WebGPU adapter reports a hardware GPU (so "auto" picks WebGPU)
//   gpu=no-device   ... and requestDevice rejects (WebGPU setup fails after the adapter)
//   gpu=record      devices are kept in globalThis.__devices (to destroy one: a lost device)
//   abort-on-adapter=N   requestAdapter call N aborts globalThis.__abort (an AbortController)

export function install(spec) {
  const params = new URLSearchParams(spec);
  const cache = params.get("cache");
  if (cache === "open") {
    caches.open = () => Promise.reject(new DOMException("test: storage is disabled", "SecurityError"));
  } else if (cache === "put") {
    Cache.prototype.put = () => Promise.reject(new DOMException("test: the quota is exceeded", "QuotaExceededError"));
  }
  const gpu = params.get("gpu");
  if (gpu === "hardware" || gpu === "no-device") {
    Object.defineProperty(GPUAdapter.prototype, "info", {
      get: () => ({ vendor: "testvendor", architecture: "testarch", device: "", description: "", isFallbackAdapter: false }),
    });
    Object.defineProperty(GPUAdapter.prototype, "isFallbackAdapter", { get: () => false });
  }
  if (gpu === "no-device") {
    GPUAdapter.prototype.requestDevice = () => Promise.reject(new DOMException("test: no device for you", "OperationError"));
  }
  if (gpu === "record") {
    globalThis.__devices = [];
    const requestDevice = GPUAdapter.prototype.requestDevice;
    GPUAdapter.prototype.requestDevice = async function (...args) {
      const device = await requestDevice.apply(this, args);
      globalThis.__devices.push(device);
      return device;
    };
  }
  const abortOn = Number(params.get("abort-on-adapter") || 0);
  if (abortOn) {
    let calls = 0;
    const requestAdapter = GPU.prototype.requestAdapter;
    GPU.prototype.requestAdapter = function (...args) {
      if (++calls === abortOn) globalThis.__abort?.abort();
      return requestAdapter.apply(this, args);
    };
  }
}
