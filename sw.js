// Service worker of the demo: caches the page, the package (JS + wasm) and the model on the
// first visit, then serves them offline. Network first for the page and scripts (so updates
// show), cache first for the large files (wasm and models).
// Large files are served cache first under their URL, so bump this name whenever a shipped file
// changes under the same name (the emoji model did in v2); activation drops the older caches.
const CACHE = "wasm-diffusion-demo-v2";
const CORE = [
  "./",
  "index.html",
  "www/style.css",
  "www/demo.js",
  "pkg/index.js",
  "pkg/worker-client.js",
  "pkg/worker.js",
  "pkg/wasm_diffusion.js",
  "pkg/wasm_diffusion_bg.wasm",
  "models/index.json",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await cache.addAll(CORE);
      const index = await (await fetch("models/index.json")).json();
      await cache.add(`models/${index.default}`);
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) if (key !== CACHE && key.startsWith("wasm-diffusion-demo")) await caches.delete(key);
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin) return;
  const large = /\.(wasm|safetensors)$/.test(url.pathname);
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      if (large) {
        const hit = await cache.match(event.request);
        if (hit) return hit;
      }
      try {
        const response = await fetch(event.request);
        if (response.ok) cache.put(event.request, response.clone());
        return response;
      } catch (e) {
        const hit = await cache.match(event.request, { ignoreSearch: true });
        if (hit) return hit;
        throw e;
      }
    })(),
  );
});
