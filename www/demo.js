// The demo page: loads the shipped model, shows the denoising live, and the forward process.
// It uses the built npm package (pkg/) exactly as an app would. Sampling runs in a Web Worker
// (SamplerWorker), so the page stays responsive while a CPU step takes a second or more.
//
// Two modes: "Emoji by category" (the shipped class-conditional pixel model, models/index.json's
// `default`) and "Text to image" (?mode=text: the shipped latent pipeline, `textToImage.model`),
// with prompt boxes, live previews, and a start image to draw on, upload or take from the last
// result, with a brush mask for inpainting.
//
// Query parameters: ?backend=auto|cpu|webgpu, ?steps=N, ?guidance=G, ?scheduler=ddim|dpm++|ddpm|euler|euler-a|lcm
// preset the controls; ?model=PATH loads another model file of this site (same origin only): a
// pipeline file (text to image) gets the text-to-image controls (?prompt=TEXT presets the prompt).

const $ = (id) => document.getElementById(id);
const state = { sampler: null, controller: null, lastImage: null, pkg: null };
const params = new URLSearchParams(location.search);
const TEXT_MODE = params.get("mode") === "text";

/**
 * Registers the service worker (sw.js) and imports the package. On a first visit it waits until
 * the worker controls the page, so that the page runs the package of the build the worker
 * cached (and pinned this page to), not files fetched around it; without a worker (none, or its
 * install failed) it imports from the network.
 */
const RELOADED_FOR_ISOLATION = "wasm-diffusion-reloaded-for-isolation";

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
      // The worker serves the demo cross-origin isolated (COOP/COEP), which the CPU backend's
      // threads need; a page is isolated or not from its first response, so a first visit,
      // loaded before the worker controlled it, reloads once to get threads.
      if (sw.controller && !globalThis.crossOriginIsolated && !sessionStorage.getItem(RELOADED_FOR_ISOLATION)) {
        sessionStorage.setItem(RELOADED_FOR_ISOLATION, "1");
        location.reload();
        return new Promise(() => {});
      }
      // A later build takes over the worker; this page keeps its own build until it reloads.
      // The page runs under its controller, or under `worker` when that one activated just now
      // and its claim of this page has not reached it yet: that claim is no new version.
      const loadedUnder = sw.controller || worker;
      sw.addEventListener("controllerchange", () => {
        if (loadedUnder && sw.controller !== loadedUnder) $("offline-status").textContent = "a new version is ready: reload the page to use it";
      });
    } catch (e) {
      $("offline-status").textContent = `offline mode unavailable: ${e.message}`;
    }
  }
  return import("../pkg/index.js");
}

/**
 * The model to load: models/index.json's `default` (or in text mode its `textToImage.model`),
 * or ?model= (a path on this site only).
 */
function chooseModel(index) {
  const wanted = params.get("model");
  if (wanted === null) {
    const file = TEXT_MODE ? index.textToImage?.model : index.default;
    if (!file) throw new Error("models/index.json: expected a text-to-image model (textToImage.model), found none");
    return { url: new URL(`models/${file}`, location.href), label: file, integrity: index.integrity?.[file] };
  }
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

/** The mode links keep the other parameters (backend, steps...) but not the model or prompt. */
function setUpModeLinks() {
  for (const [id, text] of [["mode-classes", false], ["mode-text", true]]) {
    const q = new URLSearchParams(params);
    for (const k of ["mode", "model", "prompt"]) q.delete(k);
    if (text) q.set("mode", "text");
    const a = $(id);
    a.href = `?${q}`;
    if (text === TEXT_MODE && params.get("model") === null) a.setAttribute("aria-current", "page");
  }
}

async function main() {
  setUpModeLinks();
  state.pkg = await importPackage();
  $("load-status").textContent = "Loading…";
  const response = await fetch("models/index.json");
  if (!response.ok) throw new Error(`models/index.json: HTTP ${response.status} ${response.statusText}`.trim());
  const index = await response.json();
  const model = chooseModel(index);
  $("model-url").textContent = model.label;
  const entry = TEXT_MODE ? index.textToImage || {} : index;
  if (entry.note && params.get("model") === null) $("model-note").textContent = entry.note;
  if (entry.guidance !== undefined) $("guidance").value = entry.guidance;
  if (params.get("guidance")) $("guidance").value = params.get("guidance");
  const backend = params.get("backend") || "auto";
  // The suggested scheduler and steps of models/index.json (text mode: in setUpTextToImage).
  if (!TEXT_MODE && params.get("model") === null) {
    if (entry.scheduler) $("scheduler").value = entry.scheduler;
    if (entry.steps) $("steps").value = entry.steps;
  }
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
  $("backend").title = state.sampler.backendReason;
  $("threads").textContent = String(state.sampler.threads);
  $("threads").title = state.sampler.threadsReason;
  $("train-steps").textContent = String(cfg.scheduler.num_train_timesteps);
  if (cfg.kind === "latent") {
    setUpTextToImage(cfg, params.get("model") === null ? entry : {});
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
 * A text-to-image pipeline (the shipped one in text mode, or `?model=` a file made by
 * `wasm-diffusion convert` from a diffusers Stable Diffusion folder): prompt boxes, example
 * prompts, the start-image editor; the class row and the forward-process panel (pixel models
 * only) are hidden. `entry`: models/index.json's `textToImage` (suggested settings), or {}.
 */
function setUpTextToImage(cfg, entry) {
  for (const id of ["prompt-row", "negative-row", "image-panel"]) $(id).hidden = false;
  $("class-row").hidden = true;
  $("forward-panel").hidden = true;
  $("preview").value = "x0";
  $("preview").disabled = true;
  if (params.get("guidance") === null) $("guidance").value = entry.guidance ?? cfg.sampling.defaultGuidanceScale;
  if (params.get("scheduler") === null && entry.scheduler) $("scheduler").value = entry.scheduler;
  if (params.get("steps") === null && entry.steps) $("steps").value = entry.steps;
  $("batch").value = params.get("batch") || entry.batch || "1";
  const examples = entry.examples || [];
  for (const e of examples) $("prompt-examples").append(new Option(e));
  if (params.get("prompt") !== null) $("prompt").value = params.get("prompt");
  else if (examples.length) $("prompt").value = examples[0];
  const parts = `${cfg.components.unet.parameters.toLocaleString()} U-Net parameters, previews: ${cfg.preview ?? "full decode"}`;
  const note = $("model-note").textContent;
  $("model-note").textContent = note ? `${note} (${parts}.)` : `Text to image with ${cfg.pipeline} (${parts}).`;
  const [h, w] = cfg.sampleSize ?? [512, 512];
  editor.setSize(w, h);
  $("prompt").addEventListener("input", countTokens);
  countTokens();
}

/** Shows how many of the text encoder's tokens the prompt takes, and warns when it is cut off. */
let tokenCount = 0;
async function countTokens() {
  const mine = ++tokenCount;
  try {
    const t = await state.sampler.tokenize($("prompt").value);
    if (mine !== tokenCount) return;
    const max = state.sampler.config.maxPromptTokens;
    $("prompt-tokens").textContent = t.truncated ? `cut off at ${max} tokens: the end is ignored` : `${t.length - 2} / ${max} tokens`;
    $("prompt-tokens").classList.toggle("error", t.truncated);
  } catch {
    $("prompt-tokens").textContent = "";
  }
}

/**
 * The start image and the inpainting mask, at the model's native size: `image` (null: start
 * from noise) and `mask` (alpha > 0 where to repaint), shown together on #editor (the mask as
 * a red veil). Pointer strokes paint the mask, unmask, or draw on the image.
 */
const editor = {
  w: 64,
  h: 64,
  image: null,
  mask: null,
  masked: false,
  painting: false,
  /** The previous point of the stroke being painted. */
  last: null,
  setSize(w, h) {
    this.w = w;
    this.h = h;
    this.mask = new OffscreenCanvas(w, h);
    const c = $("editor");
    c.width = w;
    c.height = h;
    this.redraw();
  },
  setImage(source) {
    this.image = new OffscreenCanvas(this.w, this.h);
    const ctx = this.image.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, this.w, this.h);
    if (source) ctx.drawImage(source, 0, 0, this.w, this.h);
    this.redraw();
  },
  clearImage() {
    this.image = null;
    this.clearMask();
  },
  clearMask() {
    this.mask.getContext("2d").clearRect(0, 0, this.w, this.h);
    this.masked = false;
    this.redraw();
  },
  redraw() {
    const ctx = $("editor").getContext("2d");
    ctx.clearRect(0, 0, this.w, this.h);
    if (this.image) ctx.drawImage(this.image, 0, 0);
    ctx.save();
    ctx.globalAlpha = 0.55;
    ctx.drawImage(this.tinted(), 0, 0);
    ctx.restore();
    $("image-status").textContent = !this.image
      ? "No start image: sampling starts from noise."
      : this.masked
        ? "Inpainting: the red area is repainted, the rest kept."
        : `img2img at strength ${Number($("strength").value).toFixed(2)}: paint a mask to repaint only part of it.`;
  },
  /** The mask in red, for display. */
  tinted() {
    const t = new OffscreenCanvas(this.w, this.h);
    const ctx = t.getContext("2d");
    ctx.drawImage(this.mask, 0, 0);
    ctx.globalCompositeOperation = "source-in";
    ctx.fillStyle = "#f00";
    ctx.fillRect(0, 0, this.w, this.h);
    return t;
  },
  stroke(event) {
    const c = $("editor");
    const r = c.getBoundingClientRect();
    const x = ((event.clientX - r.left) / r.width) * this.w;
    const y = ((event.clientY - r.top) / r.height) * this.h;
    const tool = document.querySelector('input[name="tool"]:checked').value;
    const radius = (Number($("brush-size").value) * Math.max(this.w, this.h)) / 256;
    if (!this.image) {
      if (tool !== "draw" && state.lastImage) this.setImage(state.lastImage);
      else this.setImage(null);
    }
    const target = tool === "draw" ? this.image : this.mask;
    const ctx = target.getContext("2d");
    ctx.globalCompositeOperation = tool === "unmask" ? "destination-out" : "source-over";
    ctx.fillStyle = ctx.strokeStyle = tool === "draw" ? $("draw-color").value : "#fff";
    ctx.lineWidth = 2 * radius;
    ctx.lineCap = "round";
    ctx.beginPath();
    // A line from the stroke's previous point, so a fast stroke leaves no gaps.
    const [x0, y0] = this.last ?? [x, y];
    ctx.moveTo(x0, y0);
    ctx.lineTo(x, y);
    ctx.stroke();
    this.last = [x, y];
    if (tool !== "draw") this.masked = this.maskPainted();
    this.redraw();
  },
  maskPainted() {
    const d = this.mask.getContext("2d").getImageData(0, 0, this.w, this.h).data;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) return true;
    return false;
  },
  /** What sample() takes: initImage (ImageData), mask (white = repaint) when painted. */
  inputs() {
    if (!this.image) return {};
    const out = { initImage: this.image.getContext("2d").getImageData(0, 0, this.w, this.h) };
    if (this.masked) {
      const m = this.mask.getContext("2d").getImageData(0, 0, this.w, this.h);
      for (let i = 0; i < m.data.length; i += 4) {
        const v = m.data[i + 3] > 0 ? 255 : 0;
        m.data.set([v, v, v, 255], i);
      }
      out.mask = m;
    }
    return out;
  },
};

$("editor").addEventListener("pointerdown", (e) => {
  editor.painting = true;
  editor.last = null;
  $("editor").setPointerCapture(e.pointerId);
  editor.stroke(e);
});
$("editor").addEventListener("pointermove", (e) => editor.painting && editor.stroke(e));
for (const ev of ["pointerup", "pointercancel"]) $("editor").addEventListener(ev, () => (editor.painting = false));
$("clear-mask").addEventListener("click", () => editor.clearMask());
$("clear-image").addEventListener("click", () => editor.clearImage());
$("use-result").addEventListener("click", () => state.lastImage && editor.setImage(state.lastImage));
$("strength").addEventListener("input", () => {
  $("strength-value").value = Number($("strength").value).toFixed(2);
  editor.redraw();
});
$("init-image").addEventListener("change", async (e) => {
  const file = e.target.files?.[0];
  if (!file) return;
  try {
    editor.setImage(await createImageBitmap(file));
  } catch (err) {
    $("image-status").textContent = `Error: the start image could not be read (${err.message || err})`;
  }
});

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
    Object.assign(options, editor.inputs());
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
        // A copy: the frame's bitmaps are closed when the next run draws its first frame.
        const im = frame.images[0];
        state.lastImage = new OffscreenCanvas(im.width, im.height);
        state.lastImage.getContext("2d").drawImage(im, 0, 0);
        $("forward-use-last").disabled = false;
        $("use-result").disabled = false;
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
