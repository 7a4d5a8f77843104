// Service worker of the demo: serves the page, the package (JS glue + wasm) and the model
// offline, and makes sure a page never runs JS and wasm from two builds.
//
// - One cache per build ("wasm-diffusion-demo-<build>", the id from www/build-id.js, written by
//   scripts/build.sh with the hash of each build file). The install fetches the build files
//   past the HTTP cache and refuses them unless every hash matches: a half-done deploy or a
//   stale HTTP cache never becomes a build.
// - Every page and worker is pinned to one build: a page at its first request for pkg/index.js,
//   a worker when its page starts it. Its build files come from that build's cache only, never
//   the network, so a page that loaded the old glue gets the old wasm and worker even after a
//   new build activated. A build's cache is dropped once no live page or worker is pinned to it.
//   A page that loaded the package before this worker controlled it keeps using the network
//   (the demo waits for the worker on a first visit, so this only happens without one).
// - A cached model is checked against the `integrity` in its build's models/index.json each time
//   it is served; a bad copy is evicted and fetched again (or, offline, a clear error).
// - Every response it serves carries COOP/COEP (Cross-Origin-Opener-Policy: same-origin,
//   Cross-Origin-Embedder-Policy: require-corp), so the page is cross-origin isolated on any
//   static host and the package runs its threaded CPU build (the demo reloads once after a first
//   visit for it, www/demo.js). The threaded build's pool workers are nested workers, which this
//   worker does not control: their script is requested by (and pinned to the build of) their
//   SamplerWorker, and the glue they import comes from it as a blob (scripts/build.sh).
// - Only the known files are cached: the page files (network first, so edits show), the build
//   files and the models that models/index.json names (the default and the text-to-image one). Everything else passes through.
try {
  importScripts("www/build-id.js");
} catch {
  // not built by scripts/build.sh: one fixed cache name, no hashes to check
}
const BUILD = self.WASM_DIFFUSION_BUILD || "dev";
const FILES = self.WASM_DIFFUSION_FILES || null;
const PREFIX = "wasm-diffusion-demo-";
const PINS = "wasm-diffusion-pins"; // clientId -> build; not PREFIX, it is no build
const PAGE = ["index.html", "www/style.css", "www/demo.js"];
// The package's files: the manifest's list (scripts/demo-manifest.mjs: PKG_FILES and the
// threaded build's snippets), or the fixed ones without a manifest.
const PKG = FILES
  ? Object.keys(FILES).filter((f) => f.startsWith("pkg/"))
  : ["pkg/index.js", "pkg/worker-client.js", "pkg/worker.js", "pkg/wasm_diffusion.js", "pkg/wasm_diffusion_bg.wasm", "pkg/wasm_diffusion_threads.js", "pkg/wasm_diffusion_threads_bg.wasm"];
/** The headers that make the page cross-origin isolated (wasm threads need SharedArrayBuffer). */
const ISOLATION = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };
const ENTRY = "pkg/index.js";
const NETWORK = "network"; // the pin of a client that got its package from the network
const PIN_GRACE_MS = 10000; // a worker's pin survives pruning this long before the worker runs

const scope = () => new URL(self.registration.scope);
const key = (rel) => new URL(rel, scope()).href;
const cacheName = (build) => PREFIX + build;

async function sha256(buffer) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buffer));
  let s = "";
  for (const b of digest) s += String.fromCharCode(b);
  return `sha256-${btoa(s)}`;
}

// A response the demo shows as is: fetch() gives it to the page with this status and text.
const failure = (status, text) => new Response(text, { status, statusText: text, headers: { "content-type": "text/plain" } });

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const fresh = (rel) => fetch(new Request(key(rel), { cache: "reload" }));
      const got = new Map();
      const get = async (rel) => {
        const response = await fresh(rel);
        if (!response.ok) throw new Error(`install: ${rel}: expected HTTP 200, found ${response.status}`);
        const bytes = await response.arrayBuffer();
        const want = FILES && FILES[rel];
        if (FILES && want !== (await sha256(bytes))) {
          throw new Error(`install: ${rel} is not the file of build ${BUILD} (half-deployed or stale): not installing`);
        }
        got.set(rel, stored(bytes, response.headers));
        return bytes;
      };
      await Promise.all(PKG.map(get));
      const index = JSON.parse(new TextDecoder().decode(await get("models/index.json")));
      // The demo's models: the default and the text-to-image one (keep in step with
      // scripts/demo-manifest.mjs's demoModels).
      for (const m of [index.default, index.textToImage?.model].filter(Boolean)) await get(`models/${m}`);
      for (const rel of PAGE) {
        const response = await fresh(rel).catch(() => null);
        if (response && response.ok) got.set(rel, response);
      }
      // Only a complete, checked set becomes this build's cache.
      const cache = await caches.open(cacheName(BUILD));
      for (const [rel, response] of got) await cache.put(key(rel), response);
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      await self.clients.claim();
      await prune();
    })(),
  );
});

// ---- pins -----------------------------------------------------------------------------------
const pins = new Map(); // clientId -> { build, at }; mirrored in the PINS cache (a worker restarts)
const pinKey = (id) => key(`__pin/${id}`);

async function getPin(id) {
  if (!id) return null;
  if (pins.has(id)) return pins.get(id).build;
  const hit = await (await caches.open(PINS)).match(pinKey(id));
  if (!hit) return null;
  const pin = await hit.json();
  pins.set(id, pin);
  return pin.build;
}

async function setPin(id, build, worker = false) {
  const pin = { build, at: Date.now(), worker };
  pins.set(id, pin);
  await (await caches.open(PINS)).put(pinKey(id), new Response(JSON.stringify(pin)));
}

/**
 * Drops the pins of clients that are gone and the caches of builds nobody is pinned to. A
 * worker is pinned when its page requests its script, a moment before it is a client: such a
 * pin is kept for PIN_GRACE_MS, and the pruning looks again after that.
 */
async function prune(again = true) {
  const live = new Set((await self.clients.matchAll({ type: "all", includeUncontrolled: true })).map((c) => c.id));
  const store = await caches.open(PINS);
  const keep = new Set([cacheName(BUILD)]);
  let waiting = false;
  for (const request of await store.keys()) {
    const id = request.url.slice(request.url.lastIndexOf("/") + 1);
    const pin = await (await store.match(request)).json();
    const young = pin.worker && Date.now() - pin.at < PIN_GRACE_MS;
    if (live.has(id) || young) {
      keep.add(cacheName(pin.build));
      waiting ||= !live.has(id);
    } else {
      pins.delete(id);
      await store.delete(request);
    }
  }
  for (const name of await caches.keys()) if (name.startsWith(PREFIX) && !keep.has(name)) await caches.delete(name);
  if (waiting && again) {
    await new Promise((r) => setTimeout(r, PIN_GRACE_MS));
    await prune(false);
  }
}

/** `response` with the isolation headers added (an opaque or error response as it is). */
function isolated(response) {
  if (!response || response.type === "opaque" || response.status === 0) return response;
  const headers = new Headers(response.headers);
  for (const [k, v] of Object.entries(ISOLATION)) headers.set(k, v);
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

/** The build whose files `event`'s client runs, pinning it on its first package request. */
async function buildOf(event, rel) {
  let build = await getPin(event.clientId);
  if (!build) {
    // A client's first build file must be the package's entry; anything else means it loaded
    // the package before this worker controlled it, from the network: it stays on the network.
    build = rel === ENTRY ? BUILD : NETWORK;
    if (event.clientId) {
      await setPin(event.clientId, build);
      if (build !== NETWORK) event.waitUntil(prune());
    }
  }
  // A worker's script: the worker runs the build of the page that starts it.
  if (event.resultingClientId) await setPin(event.resultingClientId, build, true);
  return build;
}

// ---- fetch ----------------------------------------------------------------------------------
self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== location.origin) return;
  const path = url.pathname.slice(scope().pathname.length);
  const rel = path === "" ? "index.html" : path;
  if (request.mode === "navigate") {
    if (rel === "index.html") event.respondWith(pageFile(request, rel).then(isolated));
    return;
  }
  if (PKG.includes(rel) || rel === "models/index.json" || (rel.startsWith("models/") && rel.endsWith(".safetensors"))) {
    event.respondWith(buildFile(event, rel).then(isolated));
  } else if (PAGE.includes(rel)) {
    event.respondWith(pageFile(request, rel).then(isolated));
  }
  // anything else: not ours, not cached
});

/** Page files: network first (edits show), the current build's copy offline. */
async function pageFile(request, rel) {
  const cache = await caches.open(cacheName(BUILD));
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(key(rel), response.clone());
    return response;
  } catch (e) {
    const hit = (await cache.match(key(rel))) || (await caches.match(key(rel)));
    if (hit) return hit;
    throw e;
  }
}

async function buildFile(event, rel) {
  const build = await buildOf(event, rel);
  if (build === NETWORK) return fetch(event.request);
  if (!(await caches.has(cacheName(build)))) {
    return failure(503, `The files of build ${build} are gone from this browser's cache: reload the page`);
  }
  const cache = await caches.open(cacheName(build));
  if (rel.endsWith(".safetensors")) return model(event.request, rel, cache);
  const hit = await cache.match(key(rel));
  return hit || failure(503, `${rel} is missing from the offline copy of build ${build}: reload the page`);
}

/** Bytes to store or serve, with their own length (the body is no longer encoded). */
function stored(bytes, headers) {
  return new Response(bytes, {
    headers: { "content-type": headers.get("content-type") || "application/octet-stream", "content-length": String(bytes.byteLength) },
  });
}

/**
 * A model that its build's models/index.json names, checked against that integrity each time it
 * is served (a few tens of ms for a 7 MB model, once per load).
 */
async function model(request, rel, cache) {
  const index = await (await cache.match(key("models/index.json")))?.json().catch(() => null);
  const name = rel.slice("models/".length);
  // A build without integrity (not from scripts/build.sh) still caches its default model.
  const integrity = index && (index.integrity?.[name] || ([index.default, index.textToImage?.model].includes(name) ? "unchecked" : null));
  if (!integrity) return fetch(request); // a model the build does not name: not cached
  const check = async (bytes) => integrity === "unchecked" || (await sha256(bytes)) === integrity;
  const hit = await cache.match(key(rel));
  if (hit) {
    const bytes = await hit.arrayBuffer();
    if (await check(bytes)) return stored(bytes, hit.headers);
    await cache.delete(key(rel)); // a bad copy: evict it, fetch it again
  }
  let response;
  try {
    response = await fetch(request, { cache: "reload" });
  } catch {
    return failure(504, `Offline, and the cached ${name} is missing or failed its integrity check`);
  }
  if (!response.ok) return response;
  const bytes = await response.arrayBuffer();
  if (!(await check(bytes))) return failure(502, `${name} from the server does not match the integrity in models/index.json`);
  const copy = stored(bytes, response.headers);
  await cache.put(key(rel), copy.clone());
  return copy;
}
