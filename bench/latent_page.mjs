// The page side of bench/latent_browser.mjs: text-to-image with our Sampler, and the same work
// with onnxruntime-web sessions driven by a JS loop. Loaded into /pkg-tests/page.html (which
// imports our package as window.wd) with `await import("/bench/latent_page.mjs")`.
//
// The onnxruntime-web loop does what our latent run does (src/pipelines/stable_diffusion.rs,
// diffusers' StableDiffusionPipeline): encode the prompt and the negative prompt (two batch-1
// text encoder calls), then per step one batch-2 U-Net call on [x; x] with the hidden states
// [negative; prompt], guidance eps = u + g (c - u) and a DDIM step (eta 0) in JS, then one VAE
// decode of latents / scaling_factor and the conversion to RGBA (round(clamp(x / 2 + 0.5) * 255)).

const now = () => performance.now();
let sampler = null;

/** Loads our pipeline file (replacing the sampler held); the load's wall time. */
export async function oursLoad(url, backend) {
  if (sampler) sampler.dispose();
  sampler = null;
  const t0 = now();
  sampler = await wd.Sampler.load(url, { backend });
  return { loadMs: now() - t0, backend: sampler.backend, config: sampler.config };
}

/** A fresh page's time to first frame: load + the first preview of a run (previewEvery 1). */
export async function oursFirstFrame(url, backend, options) {
  const t0 = now();
  const { loadMs, backend: used } = await oursLoad(url, backend);
  let first = null;
  for await (const f of sampler.sample({ ...options, previewEvery: 1 })) {
    first = now() - t0;
    break;
  }
  return { loadMs, firstFrameMs: first, backend: used };
}

/** The prompt's and negative prompt's token ids as our tokenizer makes them. */
export function oursTokenize(prompt, negativePrompt) {
  return { pos: Array.from(sampler.tokenize(prompt).ids), neg: Array.from(sampler.tokenize(negativePrompt).ids) };
}

/**
 * One whole run: wall time from sample() to the final frame (tokenize, encode, steps, decode,
 * RGBA), and elapsedMs (from the first step on). `pixels` returns the final image's RGBA;
 * `check` also every step's timestep (previews every step then: not for timing).
 */
export async function oursRun(options, { check = false, pixels = false, initNoise = null } = {}) {
  const o = { ...options, previewEvery: check ? 1 : options.steps };
  if (initNoise) o.initNoise = Float32Array.from(initNoise);
  const timesteps = [];
  let last = null;
  const t0 = now();
  for await (const f of sampler.sample(o)) {
    timesteps.push(f.timestep);
    last = f;
  }
  const wallMs = now() - t0;
  return { wallMs, elapsedMs: last.elapsedMs, ...(check ? { timesteps } : {}), ...(check || pixels ? { pixels: Array.from(last.images[0].data) } : {}) };
}

export function oursDispose() {
  sampler?.dispose();
  sampler = null;
}

// ---------------------------------------------------------------------------------------------
// onnxruntime-web
// ---------------------------------------------------------------------------------------------

let ort = null;
let sessions = null;
let ref = null;

/** sin/cos(0.1 i) * scale, as bench/export_latent_onnx.py fills its reference inputs. */
function filled(n, fn, scale = 1) {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.fround(fn(0.1 * i) * scale);
  return x;
}
const f32 = (data, shape) => new ort.Tensor("float32", data, shape);
const i64 = (values, shape) => new ort.Tensor("int64", BigInt64Array.from(values, (v) => BigInt(v)), shape);
function maxErr(y, want) {
  let e = 0;
  for (let i = 0; i < want.length; i++) e = Math.max(e, Math.abs(y[i] - want[i]));
  return e;
}

/**
 * Creates the three sessions on `ep` ("wasm" with 1 thread, or "webgpu") and runs each once on
 * the reference inputs: session create times, those first runs' times, and the largest error
 * against PyTorch's output.
 */
export async function ortOpen({ bundle, ep, base, reference }) {
  ort = await import(bundle);
  ort.env.wasm.wasmPaths = "/ort/";
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ref = reference;
  const opts = { executionProviders: [ep], graphOptimizationLevel: "all" };
  const create = {};
  sessions = {};
  for (const part of ["text_encoder", "unet", "vae_decoder"]) {
    const t0 = now();
    sessions[part] = await ort.InferenceSession.create(`${base}.${part}.onnx`, opts);
    create[part] = now() - t0;
  }
  const [c, h, w] = ref.latent;
  const d = ref.hidden;
  const first = {};
  const err = {};
  const runOnce = async (part, feeds) => {
    const t0 = now();
    const out = await sessions[part].run(feeds);
    first[part] = now() - t0;
    err[part] = maxErr(out.out.data, ref[part].first);
  };
  await runOnce("text_encoder", { input_ids: i64(ref.inputs.input_ids, [1, 77]) });
  await runOnce("unet", {
    sample: f32(filled(2 * c * h * w, Math.sin), [2, c, h, w]),
    timestep: i64([ref.inputs.timestep], [1]),
    encoder_hidden_states: f32(filled(2 * 77 * d, Math.cos, 0.5), [2, 77, d]),
  });
  await runOnce("vae_decoder", { latents: f32(filled(c * h * w, Math.sin), [1, c, h, w]) });
  return { create, first, err, version: ort.env.versions?.web ?? null };
}

/** diffusers' DDIMScheduler tables: alphas_cumprod (f32, as torch computes them) and the timesteps. */
function ddim(s, steps) {
  const T = s.num_train_timesteps;
  if (s.beta_schedule !== "scaled_linear" || s.timestep_spacing !== "leading" || s.prediction_type !== "epsilon") {
    throw new Error(`this loop does scaled_linear betas, leading spacing and epsilon only, found ${JSON.stringify(s)}`);
  }
  const acp = new Float64Array(T);
  const a = Math.sqrt(s.beta_start);
  const b = Math.sqrt(s.beta_end);
  let prod = 1;
  for (let i = 0; i < T; i++) {
    const beta = Math.fround(Math.fround(a + ((b - a) * i) / (T - 1)) ** 2);
    prod = Math.fround(prod * Math.fround(1 - beta));
    acp[i] = prod;
  }
  const ratio = Math.floor(T / steps);
  const timesteps = [];
  for (let i = steps - 1; i >= 0; i--) timesteps.push(i * ratio + s.steps_offset);
  return { acp, ratio, timesteps, final: s.set_alpha_to_one ? 1 : acp[0] };
}

/** The timesteps of the JS loop's DDIM. */
export function ddimTimesteps(scheduler, steps) {
  return ddim(scheduler, steps).timesteps;
}

/**
 * One whole text-to-image run with the sessions: per-part times, every step's time (U-Net call
 * with upload and read-back, guidance and the DDIM step), the total and (with `check`) the
 * final RGBA and the timesteps.
 */
export async function ortRun({ pos, neg, noise, steps, guidanceScale, check = false }) {
  const [c, h, w] = ref.latent;
  const d = ref.hidden;
  const n = c * h * w;
  const t0 = now();
  // 1. Text: [negative; prompt], as diffusers concatenates them.
  const hidden = new Float32Array(2 * 77 * d);
  let t = now();
  hidden.set((await sessions.text_encoder.run({ input_ids: i64(neg, [1, 77]) })).out.data, 0);
  hidden.set((await sessions.text_encoder.run({ input_ids: i64(pos, [1, 77]) })).out.data, 77 * d);
  const textMs = now() - t;
  const context = f32(hidden, [2, 77, d]);
  // 2. The guided DDIM loop (init_noise_sigma is 1 for DDIM).
  const { acp, ratio, timesteps, final } = ddim(ref.scheduler, steps);
  const x = Float32Array.from(noise);
  const pair = new Float32Array(2 * n);
  const stepMs = [];
  const unetMs = [];
  for (const ts of timesteps) {
    const s0 = now();
    pair.set(x, 0);
    pair.set(x, n);
    const u0 = now();
    const out = (await sessions.unet.run({ sample: f32(pair, [2, c, h, w]), timestep: i64([ts], [1]), encoder_hidden_states: context })).out.data;
    unetMs.push(now() - u0);
    const at = acp[ts];
    const prev = ts - ratio;
    const ap = prev >= 0 ? acp[prev] : final;
    const sa = Math.sqrt(at);
    const sb = Math.sqrt(1 - at);
    const spa = Math.sqrt(ap);
    const spb = Math.sqrt(1 - ap);
    for (let i = 0; i < n; i++) {
      const eps = out[i] + guidanceScale * (out[n + i] - out[i]);
      const x0 = (x[i] - sb * eps) / sa;
      x[i] = spa * x0 + spb * eps;
    }
    stepMs.push(now() - s0);
  }
  // 3. Decode and RGBA.
  t = now();
  const z = new Float32Array(n);
  for (let i = 0; i < n; i++) z[i] = x[i] / ref.scaling_factor;
  const img = (await sessions.vae_decoder.run({ latents: f32(z, [1, c, h, w]) })).out.data;
  const decodeMs = now() - t;
  const hw = img.length / 3;
  const rgba = new Uint8ClampedArray(hw * 4);
  for (let p = 0; p < hw; p++) {
    for (let k = 0; k < 3; k++) rgba[p * 4 + k] = Math.round(Math.min(Math.max(img[k * hw + p] / 2 + 0.5, 0), 1) * 255);
    rgba[p * 4 + 3] = 255;
  }
  const image = new ImageData(rgba, ref.vae_scale_factor * w, ref.vae_scale_factor * h);
  const totalMs = now() - t0;
  return { totalMs, textMs, stepMs, unetMs, decodeMs, ...(check ? { timesteps, pixels: Array.from(image.data) } : {}) };
}

export async function ortClose() {
  for (const s of Object.values(sessions ?? {})) await s.release();
  sessions = null;
}
