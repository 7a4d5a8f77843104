// Service worker of the demo: caches the page, the package (JS + wasm) and the model on the
// first visit, then serves them offline. The package (pkg/) and the models are served cache
// first from a cache named after the build (www/build-id.js, written by scripts/build.sh from a
// hash of pkg/ and the default model): a new build changes that script, the browser installs
// this worker again with a fresh cache and drops the old one, so JS and wasm always come from
// the same build. The page, its scripts and models/index.json are network first (so edits show).
try {
  importScripts("www/build-id.js");
} catch {
  // not built by scripts/build.sh: one fixed cache name
}
const CACHE = `wasm-diffusion-demo-${self.WASM_DIFFUSION_BUILD || "dev"}`;
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
      // Bypass the HTTP cache: what goes into this build's cache must be this build's files.
      const fresh = (u) => new Request(u, { cache: "reload" });
      await cache.addAll(CORE.map(fresh));
      const index = await (await fetch(fresh("models/index.json"))).json();
      await cache.add(fresh(`models/${index.default}`));
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
  const scope = new URL(self.registration.scope);
  const rel = url.pathname.slice(scope.pathname.length);
  const pinned = rel.startsWith("pkg/") || /\.safetensors$/.test(url.pathname);
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      if (pinned) {
        const hit = await cache.match(event.request, { ignoreSearch: true });
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
