// Compile-time checks of pkg/index.d.ts: typical use must type-check, misuse must not.
// Checked by pkg-tests/types.test.mjs with `tsc --noEmit --strict`.
import { Sampler, SamplerWorker, seededNoise, addNoise, imageDataToSample, sampleToImageData } from "wasm-diffusion";
import type { Frame, LoadOptions, ModelConfig, PipelineConfig, SampleOptions, Tokens, WorkerFrame, Backend, ErrorName } from "wasm-diffusion";

export async function typical(ctx: CanvasRenderingContext2D, signal: AbortSignal): Promise<void> {
  const opts: LoadOptions = {
    backend: "auto",
    onProgress: ({ loaded, total }) => console.log(loaded / total),
    onWarning: (message: string) => console.log(message.length),
    signal,
    integrity: "sha256-x",
    cache: true,
    memoryBudget: 512 * 2 ** 20,
  };
  const s: Sampler = await Sampler.load(new URL("https://example.invalid/m.safetensors"), opts);
  const backend: Backend = s.backend;
  const why: string = s.backendReason;
  const heap: number = s.memoryBytes;
  console.log(why, heap);
  if (s.config.kind !== "pixel") return;
  const cfg: ModelConfig = s.config;
  const names: string[] = cfg.classNames;
  const size: [number, number] | null = cfg.sampleSize;
  const o: SampleOptions = { steps: 50, scheduler: "dpm++", seed: 1, eta: 0, batch: 2, classLabels: [1], guidanceScale: 3, previewEvery: 2, preview: "xt", signal, initNoise: new Float32Array(6144) };
  for await (const f of s.sample(o)) {
    const frame: Frame = f;
    const im: ImageData = frame.images[0];
    const fin: boolean = frame.final;
    ctx.putImageData(im, 0, 0);
    console.log(frame.step, frame.totalSteps, frame.timestep, frame.elapsedMs, fin, backend, names, size);
  }
  s.dispose();
  await Sampler.load(new Uint8Array(8));
  await Sampler.load(new ArrayBuffer(8), { backend: "cpu" });
  const w = await SamplerWorker.load("m.safetensors", { workerUrl: "w.js", onWarning: (m) => console.warn(m), memoryBudget: 1e9 });
  const wWhy: string = w.backendReason;
  console.log(wWhy);
  for await (const f of w.sample({ steps: 4 })) {
    const wf: WorkerFrame = f;
    const bm: ImageBitmap = wf.images[0];
    ctx.drawImage(bm, 0, 0);
  }
  w.dispose();
  const n: Float32Array = await seededNoise(0, 1, 3072);
  const xt: Float32Array = await addNoise(n, [1, 3, 32, 32], 500, 0);
  const back: ImageData = sampleToImageData(xt, 32, 32);
  const again: Float32Array = imageDataToSample(back);
  console.log(again);
  try {
    await Sampler.load("m");
  } catch (e) {
    const kinds: ErrorName[] = ["FormatError", "MemoryLimitError", "PanicError", "DisposedError", "WorkerError"];
    if (e instanceof Error && (kinds as string[]).includes(e.name)) console.log(e.message);
  }
}

export async function latent(ctx: CanvasRenderingContext2D, image: HTMLImageElement, mask: HTMLCanvasElement): Promise<void> {
  const s = await Sampler.load("sd-turbo.int8.safetensors");
  if (s.config.kind !== "latent") return;
  const cfg: PipelineConfig = s.config;
  const scale: number = cfg.vaeScaleFactor;
  const unetQuant: string = cfg.components.unet.quantization;
  const t: Tokens = s.tokenize("a red apple");
  if (t.truncated) console.warn(t.length, t.ids[0]);
  const o: SampleOptions = { prompt: "a red apple", negativePrompt: "blurry", guidanceScale: cfg.sampling.defaultGuidanceScale, width: 64 * scale, height: 64 * scale };
  for await (const f of s.sample(o)) ctx.putImageData(f.images[0], 0, 0);
  for await (const f of s.sample({ prompt: "a cat", initImage: image, strength: 0.6, mask })) ctx.putImageData(f.images[0], 0, 0);
  const w = await SamplerWorker.load("sd.safetensors");
  const wt: Tokens = await w.tokenize("x");
  console.log(unetQuant, wt.length);
}

export async function misuse(s: Sampler): Promise<void> {
  // @ts-expect-error unknown scheduler
  s.sample({ scheduler: "heun" });
  // @ts-expect-error prompt is a string
  s.sample({ prompt: 3 });
  // @ts-expect-error initImage is an image, not a URL
  s.sample({ initImage: "cat.png" });
  // @ts-expect-error preview is "x0" | "xt"
  s.sample({ preview: "both" });
  // @ts-expect-error backend is "auto" | "webgpu" | "cpu"
  await Sampler.load("m", { backend: "webgl" });
  // @ts-expect-error the constructor is private: use Sampler.load
  new Sampler();
  // @ts-expect-error initNoise is a Float32Array
  s.sample({ initNoise: [0, 1] });
  // @ts-expect-error backend is read-only
  s.backend = "cpu";
  // @ts-expect-error memoryBudget is a number of bytes
  await Sampler.load("m", { memoryBudget: "1GB" });
  // @ts-expect-error onWarning takes a message string
  await Sampler.load("m", { onWarning: (n: number) => n });
  // @ts-expect-error backendReason is read-only
  s.backendReason = "x";
  // @ts-expect-error not an error name of the package
  const k: ErrorName = "OopsError";
  // @ts-expect-error the test hooks are not part of the types
  await import("wasm-diffusion").then((m) => m._testPanic("sync"));
}
