// The demo page: loads the shipped model, shows the denoising live, and the forward process.
// It uses the built npm package (pkg/) exactly as an app would. Sampling runs in a Web Worker
// (SamplerWorker), so the page stays responsive while a CPU step takes a second or more.
import { SamplerWorker, addNoise, imageDataToSample, sampleToImageData } from "../pkg/index.js";

const $ = (id) => document.getElementById(id);
const state = { sampler: null, controller: null, lastImage: null };

// Work offline after the first visit.
if ("serviceWorker" in navigator) {
  navigator.serviceWorker
    .register("sw.js")
    .then(() => ($("offline-status").textContent = "works offline after this visit"))
    .catch((e) => ($("offline-status").textContent = `offline mode unavailable: ${e.message}`));
}

async function main() {
  const index = await (await fetch("models/index.json")).json();
  const url = new URL(`models/${index.default}`, location.href).href;
  $("model-url").textContent = index.default;
  if (index.note) $("model-note").textContent = index.note;
  if (index.guidance !== undefined) $("guidance").value = index.guidance;
  const params = new URLSearchParams(location.search);
  if (params.get("guidance")) $("guidance").value = params.get("guidance");
  const backend = params.get("backend") || "auto";
  if (params.get("steps")) $("steps").value = params.get("steps");
  const t0 = performance.now();
  state.sampler = await SamplerWorker.load(url, {
    backend,
    integrity: index.integrity?.[index.default],
    onProgress: ({ loaded, total }) => {
      $("load-progress").value = total ? loaded / total : 0;
      $("load-status").textContent = `Downloading ${(loaded / 1e6).toFixed(2)}${total ? ` / ${(total / 1e6).toFixed(2)}` : ""} MB`;
    },
  });
  const cfg = state.sampler.config;
  $("load-progress").value = 1;
  $("load-status").textContent = `Loaded ${cfg.name || "model"} (${cfg.quantization}, ${cfg.sampleSize?.join("×")} px) in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
  $("backend").textContent = state.sampler.backend;
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
  const options = {
    scheduler: $("scheduler").value,
    steps: Number($("steps").value),
    seed: Number($("seed").value),
    batch: Number($("batch").value),
    guidanceScale: classValue === "" ? 1 : Number($("guidance").value),
    classLabels: classValue === "" ? undefined : [Number(classValue)],
    preview: $("preview").value,
    previewEvery: 1,
  };
  state.controller = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  $("sample-status").textContent = "Sampling…";
  let shown = null;
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
        state.lastImage = frame.images[0];
        $("forward-use-last").disabled = false;
        $("sample-status").textContent = `Done: ${frame.totalSteps} steps in ${(frame.elapsedMs / 1000).toFixed(1)} s`;
      }
    }
  } catch (e) {
    $("sample-status").textContent = e.name === "AbortError" ? "Stopped." : `Error: ${e.message}`;
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
    state.controller = null;
  }
}

async function showForward(image) {
  const strip = $("forward-strip");
  strip.textContent = "";
  const size = state.sampler?.config.sampleSize?.[0] || 32;
  // Resize the picked image to the model's size.
  const c = new OffscreenCanvas(size, size);
  const ctx = c.getContext("2d");
  ctx.drawImage(await createImageBitmap(image), 0, 0, size, size);
  const x0 = imageDataToSample(ctx.getImageData(0, 0, size, size));
  for (const t of [0, 200, 400, 600, 800, 999]) {
    const xt = await addNoise(x0, [1, 3, size, size], t, 0);
    const fig = document.createElement("figure");
    const cv = document.createElement("canvas");
    cv.width = size;
    cv.height = size;
    cv.getContext("2d").putImageData(sampleToImageData(xt, size, size), 0, 0);
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
  if (file) showForward(await createImageBitmap(file));
});
$("forward-use-last").addEventListener("click", () => state.lastImage && showForward(state.lastImage));

main().catch((e) => {
  $("load-status").textContent = `Could not load the model: ${e.message}`;
  console.error(e);
});
