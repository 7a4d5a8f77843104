// The demo page: loads the shipped model, shows the denoising live, and the forward process.
// It uses the built npm package (pkg/) exactly as an app would. Sampling runs in a Web Worker
// (SamplerWorker), so the page stays responsive while a CPU step takes a second or more.
//
// Query parameters: ?backend=auto|cpu|webgpu, ?steps=N, ?guidance=G, ?scheduler=ddim|dpm++|ddpm|euler|euler-a|lcm
// preset the controls; ?model=PATH loads another model file of this site (same origin only): a
// pipeline file (text to image) shows prompt boxes and a start image instead of the class
// (?prompt=TEXT presets the prompt).

const $ = (id) => document.getElementById(id);
const state = { sampler: null, controller: null, lastImage: null, pkg: null };
const params = new URLSearchParams(location.search);

/**
 * Registers the service worker (sw.js) and imports the package. On a first visit it waits until
 * the worker controls the page, so that the page runs the package of the build the worker
 * cached (and pinned this page to), not files fetched around it; without a worker (none, or its
 * install failed) it imports from the network.
 */
async function importPackage() {
  const sw = navigator.serviceWorker;
  if (sw) {
    try {
      const registration = await sw.register("sw.js", { updateViaCache: "none" });
      $("offline-status").textContent = "works offline after this visit";
      const worker = registration.installing || registration.waiting || registration.active;
      // (An active worker that does not control the page: a hard reload; use the network.)
      if (!sw.controller && worker && worker.state !== "activated") {
        $("load-status").textContent = "Saving the demo for offline use…";
        await new Promise((resolve) => {
          sw.addEventListener("controllerchange", resolve, { once: true });
          worker.addEventListener("statechange", () => ["activated", "redundant"].includes(worker.state) && resolve());
        });
        if (!sw.controller) $("offline-status").textContent = "offline mode unavailable: the service worker did not install";
      }
      // A later build takes over the worker; this page keeps its own build until it reloads.
      const loadedUnder = sw.controller;
      sw.addEventListener("controllerchange", () => {
        if (loadedUnder && sw.controller !== loadedUnder) $("offline-status").textContent = "a new version is ready: reload the page to use it";
      });
    } catch (e) {
      $("offline-status").textContent = `offline mode unavailable: ${e.message}`;
    }
  }
  return import("../pkg/index.js");
}

/** The model to load: models/index.json's default, or ?model= (a path on this site only). */
function chooseModel(index) {
  const wanted = params.get("model");
  if (wanted === null) return { url: new URL(`models/${index.default}`, location.href), label: index.default, integrity: index.integrity?.[index.default] };
  let url;
  try {
    url = new URL(wanted, location.href);
  } catch {
    url = null;
  }
  if (!url || url.origin !== location.origin || !/^https?:$/.test(url.protocol)) {
    throw new Error(`?model=: expected a path on this site, found "${wanted}"`);
  }
  const known = Object.keys(index.integrity || {}).find((k) => new URL(`models/${k}`, location.href).href === url.href);
  return { url, label: url.pathname, integrity: known && index.integrity[known] };
}

async function main() {
  state.pkg = await importPackage();
  $("load-status").textContent = "Loading…";
  const response = await fetch("models/index.json");
  if (!response.ok) throw new Error(`models/index.json: HTTP ${response.status} ${response.statusText}`.trim());
  const index = await response.json();
  const model = chooseModel(index);
  $("model-url").textContent = model.label;
  if (index.note && params.get("model") === null) $("model-note").textContent = index.note;
  if (index.guidance !== undefined) $("guidance").value = index.guidance;
  if (params.get("guidance")) $("guidance").value = params.get("guidance");
  const backend = params.get("backend") || "auto";
  if (params.get("steps")) $("steps").value = params.get("steps");
  if (params.get("scheduler")) $("scheduler").value = params.get("scheduler");
  const t0 = performance.now();
  state.sampler = await state.pkg.SamplerWorker.load(model.url.href, {
    backend,
    integrity: model.integrity,
    onProgress: ({ loaded, total }) => {
      $("load-progress").value = total ? loaded / total : 0;
      $("load-status").textContent = `Downloading ${(loaded / 1e6).toFixed(2)}${total ? ` / ${(total / 1e6).toFixed(2)}` : ""} MB`;
    },
  });
  const cfg = state.sampler.config;
  $("load-progress").value = 1;
  $("load-status").textContent = `Loaded ${cfg.name || "model"} (${cfg.quantization}, ${cfg.sampleSize?.join("×")} px) in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
  $("backend").textContent = state.sampler.backend;
  $("train-steps").textContent = String(cfg.scheduler.num_train_timesteps);
  if (cfg.kind === "latent") {
    setUpTextToImage(cfg);
    $("generate").disabled = false;
    await generate();
    return;
  }
  const select = $("class");
  const names = cfg.classNames.length ? cfg.classNames : Array.from({ length: cfg.numClasses || 0 }, (_, i) => `class ${i}`);
  if (cfg.numClasses) {
    names.forEach((n, i) => {
      if (i !== cfg.nullClass) select.add(new Option(n, String(i)));
    });
    if (cfg.nullClass != null) select.add(new Option("any (unconditional)", ""));
  } else {
    select.add(new Option("— (unconditional model)", ""));
    select.disabled = true;
    $("guidance").disabled = true;
  }
  $("generate").disabled = false;
  await generate();
}

/**
 * A text-to-image pipeline file (`?model=` a file made by `wasm-diffusion convert` from a
 * diffusers Stable Diffusion folder): prompt boxes and an optional start image instead of the
 * class; the forward-process panel (pixel models only) is hidden.
 */
function setUpTextToImage(cfg) {
  for (const id of ["prompt-row", "negative-row", "init-row", "strength-row"]) $(id).hidden = false;
  $("class-row").hidden = true;
  $("forward-panel").hidden = true;
  $("preview").value = "x0";
  $("preview").disabled = true;
  if (params.get("guidance") === null) $("guidance").value = cfg.sampling.defaultGuidanceScale;
  if (params.get("prompt") !== null) $("prompt").value = params.get("prompt");
  $("batch").value = params.get("batch") || "1";
  $("model-note").textContent = `Text to image with ${cfg.pipeline} (${cfg.components.unet.parameters.toLocaleString()} U-Net parameters, previews: ${cfg.preview ?? "full decode"}).`;
}

/** The chosen start image, resized to the model's native size, or undefined. */
async function initImage() {
  const file = $("init-image").files?.[0];
  if (!file) return undefined;
  const [h, w] = state.sampler.config.sampleSize ?? [512, 512];
  const c = new OffscreenCanvas(w, h);
  c.getContext("2d").drawImage(await createImageBitmap(file), 0, 0, w, h);
  return c.getContext("2d").getImageData(0, 0, w, h);
}

function drawGrid(images) {
  const canvas = $("canvas");
  const n = images.length;
  const cols = Math.ceil(Math.sqrt(n));
  const rows = Math.ceil(n / cols);
  const { width: w, height: h } = images[0];
  const gap = 1;
  canvas.width = cols * w + (cols - 1) * gap;
  canvas.height = rows * h + (rows - 1) * gap;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  // Frames from the worker carry ImageBitmaps.
  images.forEach((im, i) => ctx.drawImage(im, (i % cols) * (w + gap), Math.floor(i / cols) * (h + gap)));
}

async function generate() {
  if (!state.sampler) return;
  const classValue = $("class").value;
  const latent = state.sampler.config.kind === "latent";
  const options = {
    scheduler: $("scheduler").value,
    steps: Number($("steps").value),
    seed: Number($("seed").value),
    batch: Number($("batch").value),
    guidanceScale: latent || classValue !== "" ? Number($("guidance").value) : 1,
    classLabels: latent || classValue === "" ? undefined : [Number(classValue)],
    preview: $("preview").value,
    previewEvery: 1,
  };
  if (latent) {
    options.prompt = $("prompt").value;
    options.negativePrompt = $("negative-prompt").value;
    try {
      options.initImage = await initImage();
    } catch (e) {
      $("sample-status").textContent = `Error: the start image could not be read (${e.message || e})`;
      $("sample-status").classList.add("error");
      return;
    }
    if (options.initImage) options.strength = Number($("strength").value);
  }
  state.controller = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  $("sample-status").textContent = "Sampling…";
  $("sample-status").classList.remove("error");
  let shown = null;
  let finished = false;
  try {
    for await (const frame of state.sampler.sample({ ...options, signal: state.controller.signal })) {
      drawGrid(frame.images);
      shown?.forEach((b) => b.close()); // free the previous frame's bitmaps
      shown = frame.images;
      $("step").textContent = frame.step;
      $("total").textContent = frame.totalSteps;
      $("timestep").textContent = frame.timestep;
      $("ms-per-step").textContent = (frame.elapsedMs / frame.step).toFixed(0);
      if (frame.final) {
        finished = true;
        state.lastImage = frame.images[0];
        $("forward-use-last").disabled = false;
        $("sample-status").textContent = `Done: ${frame.totalSteps} steps in ${(frame.elapsedMs / 1000).toFixed(1)} s`;
      }
    }
    if (!finished) throw new Error("the sampler stopped without a final image");
  } catch (e) {
    $("sample-status").textContent = e.name === "AbortError" ? "Stopped." : `Error: ${e.message || e}`;
    $("sample-status").classList.toggle("error", e.name !== "AbortError");
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
    state.controller = null;
  }
}

async function showForward(image) {
  const strip = $("forward-strip");
  strip.textContent = "";
  if (!state.sampler) throw new Error("the model is still loading: the forward process uses its noise schedule");
  const size = state.sampler?.config.sampleSize?.[0] || 32;
  // Resize the picked image to the model's size.
  const c = new OffscreenCanvas(size, size);
  const ctx = c.getContext("2d");
  ctx.drawImage(await createImageBitmap(image), 0, 0, size, size);
  const x0 = state.pkg.imageDataToSample(ctx.getImageData(0, 0, size, size));
  // The model's own noise schedule, computed in the sampler's worker (no second wasm instance
  // on the page): six timesteps from 0 to the last training one.
  const last = (state.sampler?.config.scheduler.num_train_timesteps ?? 1000) - 1;
  for (const t of [0, 0.2, 0.4, 0.6, 0.8, 1].map((f) => Math.min(Math.round(f * (last + 1)), last))) {
    const xt = await state.sampler.addNoise(x0, [1, 3, size, size], t, 0);
    const fig = document.createElement("figure");
    const cv = document.createElement("canvas");
    cv.width = size;
    cv.height = size;
    cv.getContext("2d").putImageData(state.pkg.sampleToImageData(xt, size, size), 0, 0);
    fig.append(cv, Object.assign(document.createElement("figcaption"), { textContent: `t = ${t}` }));
    strip.append(fig);
  }
}

$("controls").addEventListener("submit", (e) => {
  e.preventDefault();
  generate();
});
$("stop").addEventListener("click", () => state.controller?.abort());
$("forward-file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (file) showForward(await createImageBitmap(file)).catch(forwardFailed);
});
$("forward-use-last").addEventListener("click", () => state.lastImage && showForward(state.lastImage).catch(forwardFailed));

function forwardFailed(e) {
  $("forward-strip").textContent = `Error: ${e.message || e}`;
}

main().catch((e) => {
  // Whatever failed (the package, models/index.json, the download, the model), say so and
  // leave nothing that looks busy.
  $("load-status").textContent = `Could not load the model: ${e.message || e}`;
  $("load-status").classList.add("error");
  $("load-progress").value = 0;
  $("generate").disabled = true;
  $("stop").disabled = true;
  console.error(e);
});
