// Types of the wasm-diffusion package. Hand-checked against index.js and worker.js.

/** Where the sampler runs. */
export type Backend = "webgpu" | "cpu";

export interface LoadProgress {
  /** Bytes received so far (decoded bytes when the server compresses the download). */
  loaded: number;
  /** Total bytes from Content-Length, or 0 when unknown (no Content-Length, or a compressed download). */
  total: number;
}

/**
 * The `name` of every error the package rejects with (besides the usual TypeError for a value
 * of the wrong JS type). From Rust: FormatError (not a valid model file), UnsupportedError,
 * ConfigError, InvalidArgumentError, BackendError (no adapter, device or readback failures),
 * IoError, MemoryLimitError (over the memory budget, or a file larger than the wasm heap).
 * From JS: AbortError (a DOMException), NetworkError (fetch, HTTP status, truncated download,
 * the wasm module's download), IntegrityError, DisposedError, BusyError (a second run on one
 * sampler), PanicError (the wasm crashed: reload the page, or load a new SamplerWorker),
 * WorkerError (the worker crashed or failed to start).
 */
export type ErrorName =
  | "FormatError"
  | "UnsupportedError"
  | "ConfigError"
  | "InvalidArgumentError"
  | "BackendError"
  | "IoError"
  | "MemoryLimitError"
  | "AbortError"
  | "NetworkError"
  | "IntegrityError"
  | "DisposedError"
  | "BusyError"
  | "PanicError"
  | "WorkerError";

export interface LoadOptions {
  /** "auto" (default): WebGPU on a hardware adapter, else the CPU (a software adapter such as SwiftShader counts as unavailable). */
  backend?: "auto" | Backend;
  /** Called as the model downloads (and as a cached copy is read). */
  onProgress?: (progress: LoadProgress) => void;
  /** Aborts the download or load; the promise rejects with an AbortError. */
  signal?: AbortSignal;
  /** Subresource-integrity hash of the file, "sha256-<base64>"; a mismatch rejects. */
  integrity?: string;
  /**
   * Keep the file in the Cache API so a second load makes no network request (default false).
   * Best effort: when storage is disabled or full the load goes on without it, with a warning.
   */
  cache?: boolean;
  /** Receives warnings (e.g. the Cache API failed, "auto" fell back to the CPU); default console.warn. */
  onWarning?: (message: string) => void;
  /** Bytes a model and a run may take at their estimated peak; more rejects with a MemoryLimitError. */
  memoryBudget?: number;
  /**
   * Threads for the CPU backend (1 to 64). On a cross-origin isolated page (COOP/COEP headers)
   * the CPU backend runs the package's threaded build with one thread per core (at most 8) by
   * default; 1 keeps the single-threaded build. Ignored for WebGPU. The first load in a page or
   * worker picks the build for all of it.
   */
  threads?: number;
}

/** A scheduler of this package (the names the CLI takes too; diffusers' class names, e.g. "EulerDiscreteScheduler", are accepted as well). */
export type SchedulerName = "ddpm" | "ddim" | "dpm++" | "euler" | "euler-a" | "lcm" | "cm";

/** diffusers UNet2DModel config (field names and value names as in config.json). */
export interface UNet2DConfig {
  sample_size: number | [number, number] | null;
  in_channels: number;
  out_channels: number;
  center_input_sample: boolean;
  time_embedding_type: "positional";
  time_embedding_dim: number | null;
  freq_shift: number;
  flip_sin_to_cos: boolean;
  down_block_types: ("DownBlock2D" | "AttnDownBlock2D" | "ResnetDownsampleBlock2D")[];
  mid_block_type: "UNetMidBlock2D" | null;
  up_block_types: ("UpBlock2D" | "AttnUpBlock2D" | "ResnetUpsampleBlock2D")[];
  block_out_channels: number[];
  layers_per_block: number;
  mid_block_scale_factor: number;
  downsample_padding: number;
  downsample_type: "conv" | "resnet";
  upsample_type: "conv" | "resnet";
  dropout: number;
  act_fn: "silu";
  attention_head_dim: number | null;
  norm_num_groups: number | null;
  attn_norm_num_groups: number | null;
  norm_eps: number;
  resnet_time_scale_shift: "default" | "scale_shift";
  add_attention: boolean;
  class_embed_type: null;
  num_class_embeds: number | null;
  num_train_timesteps: number | null;
}

/** diffusers scheduler config (field names as in scheduler_config.json). */
export interface SchedulerConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: "linear" | "scaled_linear" | "squaredcos_cap_v2";
  trained_betas: null;
  variance_type: "fixed_small" | "fixed_small_log" | "fixed_large" | "fixed_large_log";
  clip_sample: boolean;
  clip_sample_range: number;
  prediction_type: "epsilon" | "sample" | "v_prediction";
  thresholding: boolean;
  /** null: not in the model's file; each scheduler then uses its own default (ddpm, ddim, lcm: "leading"; dpm++, euler, euler-a: "linspace"). */
  timestep_spacing: "leading" | "trailing" | "linspace" | null;
  steps_offset: number;
  rescale_betas_zero_snr: boolean;
  set_alpha_to_one: boolean;
  solver_order: number;
  algorithm_type: "dpmsolver++";
  solver_type: "midpoint" | "heun";
  lower_order_final: boolean;
  euler_at_final: boolean;
  use_karras_sigmas: boolean;
  use_exponential_sigmas: boolean;
  use_beta_sigmas: boolean;
  use_lu_lambdas: boolean;
  use_flow_sigmas: boolean;
  final_sigmas_type: "zero" | "sigma_min";
  lambda_min_clipped: number | null;
  variance_type_dpm: null;
  interpolation_type: "linear" | "log_linear";
  timestep_type: "discrete" | "continuous";
  /** null: not in the model's file; euler then takes it from the beta table, cm uses 0.002. */
  sigma_min: number | null;
  /** null: not in the model's file; euler then takes it from the beta table, cm uses 80. */
  sigma_max: number | null;
  sigma_data: number;
  rho: number;
  s_noise: number;
  clip_denoised: boolean;
  original_inference_steps: number;
  timestep_scaling: number;
}

export interface ModelConfig {
  /** A U-Net model file (pixel space). */
  kind: "pixel";
  /** "classes": class labels (and guidance with a null class); "none": unconditional. */
  conditioning: "classes" | "none";
  name: string | null;
  quantization: "f32" | "f16" | "int8" | "int4";
  unet: UNet2DConfig;
  scheduler: SchedulerConfig;
  /** Class used for the unconditional branch of classifier-free guidance. */
  nullClass: number | null;
  /** Class names in label order (may be empty). */
  classNames: string[];
  /** [height, width] of the samples. */
  sampleSize: [number, number] | null;
  inChannels: number;
  /** Number of class embeddings (null class included), or null for unconditional models. */
  numClasses: number | null;
  /** What sample() accepts for this model and its defaults (owned by the Rust core). */
  sampling: SamplingInfo;
}

/** One component of a pipeline file. */
export interface PipelineComponent {
  parameters: number;
  quantization: "f32" | "f16" | "int8" | "int4";
}

/** A latent-diffusion pipeline file (text-to-image, img2img, inpainting). */
export interface PipelineConfig {
  kind: "latent";
  conditioning: "text";
  /** The diffusers pipeline it mirrors, e.g. "StableDiffusionPipeline". */
  pipeline: string;
  name: string | null;
  /** The U-Net's storage. */
  quantization: "f32" | "f16" | "int8" | "int4";
  components: {
    unet: PipelineComponent;
    textEncoder: PipelineComponent;
    vae: PipelineComponent;
    previewVae?: PipelineComponent;
  };
  /** [height, width] in pixels of the U-Net's native size. */
  sampleSize: [number, number] | null;
  /** Pixels per latent pixel: width and height must be multiples of it. */
  vaeScaleFactor: number;
  latentChannels: number;
  /** A 9-channel inpainting U-Net: sample() needs initImage and mask. */
  inpainting: boolean;
  /** How previews are made: "tiny" (TAESD, full size), "linear" (latent resolution), or null (full VAE decode). */
  preview: "tiny" | "linear" | null;
  /** Text tokens that fit the prompt (75): the rest is cut off (see tokenize()). */
  maxPromptTokens: number;
  scheduler: SchedulerConfig;
  sampling: SamplingInfo & { defaultGuidanceScale: number };
}

export interface SamplingInfo {
  schedulers: SchedulerName[];
  defaultScheduler: SchedulerName;
  /** Steps per scheduler when `steps` is not given (ddpm: every training timestep). */
  defaultSteps: Record<SchedulerName, number>;
  /** The model's num_train_timesteps. */
  maxSteps: number;
  maxBatch: number;
  /** Largest |guidanceScale|. */
  maxGuidanceScale: number;
}

export interface SampleOptions {
  /** Number of denoising steps, 1 to the model's num_train_timesteps (default: `config.sampling.defaultSteps`: ddpm every training timestep, ddim, euler, euler-a 50, dpm++ 20, lcm 4, cm 1). */
  steps?: number;
  /** Default "ddim". */
  scheduler?: SchedulerName;
  /** Integer seed, 0 to 2^53 - 1 (default: random). The same seed gives the same pixels as the CLI. */
  seed?: number;
  /** DDIM eta (default 0, deterministic). */
  eta?: number;
  /** Images per run, 1 to 64 (default 1). */
  batch?: number;
  /** Class index per image, or one for all. Omitted: the null class (unconditional). */
  classLabels?: number[];
  /** Classifier-free guidance scale, -100 to 100 (default 1 = no guidance). */
  guidanceScale?: number;
  /** Yield a frame every k steps (default 1); the final frame always comes. */
  previewEvery?: number;
  /** What previews show: the predicted clean image "x0" (default) or the noisy sample "xt". */
  preview?: "x0" | "xt";
  /** Stops the run within one step; the iterator rejects with an AbortError. (A `break` out of the loop stops it too.) */
  signal?: AbortSignal;
  /** x_T as NCHW float32 (batch * channels * height * width values) instead of the seed (pipelines: the initial latents, as diffusers' `latents=`). */
  initNoise?: Float32Array;
  /** Pipelines: what to generate (default ""); an array gives one prompt per image (and sets `batch` when that is not given). */
  prompt?: string | string[];
  /** Pipelines: what to steer away from, the unconditional branch of guidance (default ""); one for all images, or one each. */
  negativePrompt?: string | string[];
  /** Pipelines: image size in pixels, multiples of `config.vaeScaleFactor` (default: the native size, or the initImage's). */
  width?: number;
  height?: number;
  /** Pipelines: start from this image (img2img; with `mask`, inpainting). It sets the size. */
  initImage?: ImageData | ImageBitmap | HTMLCanvasElement | OffscreenCanvas | HTMLImageElement;
  /** Pipelines: how much of the schedule runs from initImage, in (0, 1] (default 0.8; 1 with a mask). */
  strength?: number;
  /** Pipelines: where to repaint (luminance >= 0.5), the initImage's size. */
  mask?: ImageData | ImageBitmap | HTMLCanvasElement | OffscreenCanvas | HTMLImageElement;
}

/** What tokenize() returns. */
export interface Tokens {
  /** Always 77 ids: start, the text's tokens, end, padding. */
  ids: Uint32Array;
  /** Whether text tokens were cut off to fit. */
  truncated: boolean;
  /** Ids before the padding. */
  length: number;
}

export interface Frame {
  /** 1-based step just taken. */
  step: number;
  totalSteps: number;
  /** Model timestep of that step (999 ... 0); fractional for euler with Karras sigmas or linspace spacing, and for cm (whose timesteps are 250 ln(sigma), e.g. 1095.5). */
  timestep: number;
  /** True for the last frame, which shows the finished images. */
  final: boolean;
  /** Milliseconds since the run started. */
  elapsedMs: number;
  /** One image per batch item. */
  images: ImageData[];
}

/**
 * A model loaded on one backend. After a wasm panic (PanicError) every Sampler of the page is
 * dead and every call rejects with that PanicError: reload the page (SamplerWorker recovers by
 * loading again).
 */
export declare class Sampler {
  private constructor();
  static load(source: string | URL | ArrayBuffer | Uint8Array, options?: LoadOptions): Promise<Sampler>;
  readonly backend: Backend;
  /** Why this backend: what was requested, or what "auto" found (e.g. a software adapter, or WebGPU failing). */
  readonly backendReason: string;
  /** Threads the CPU backend runs on (1 on WebGPU, and wherever the page has no wasm threads). */
  readonly threads: number;
  /** Why that many threads: what the page allows (cross-origin isolation, cores), the `threads` option, or what failed. */
  readonly threadsReason: string;
  readonly config: ModelConfig | PipelineConfig;
  /** Bytes of wasm linear memory of this page (shared by all its samplers; it never shrinks). */
  readonly memoryBytes: number;
  /** Frames of one run; a second run while one is in progress rejects with a BusyError. */
  sample(options?: SampleOptions): AsyncGenerator<Frame, void, undefined>;
  /** The forward process q(x_t | x_0) with this model's noise schedule: x0 NCHW in [-1, 1], noised to `timestep` with the seeded noise of `seed` (default 0). */
  addNoise(x0: Float32Array, shape: [number, number, number, number], timestep: number, seed?: number): Float32Array;
  /** Pipelines: the ids the text encoder reads for `text`, and whether it was cut off. */
  tokenize(text: string): Tokens;
  /** Frees the model (GPU memory included); a run in progress rejects with a DisposedError. */
  dispose(): void;
}

/** Whether the bytes are a pipeline file (latent diffusion) rather than a U-Net model file. */
export declare function isPipelineFile(bytes: Uint8Array): boolean;

/** The seeded noise the sampler uses: `batch * perItem` standard-normal values. */
export declare function seededNoise(seed: number, batch: number, perItem: number): Promise<Float32Array>;
/** The forward process x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise with the default schedule (linear betas, T = 1000); `sampler.addNoise` uses the model's own. */
export declare function addNoise(x0: Float32Array, shape: [number, number, number, number], timestep: number, seed: number): Promise<Float32Array>;
export declare function imageDataToSample(imageData: ImageData): Float32Array;
export declare function sampleToImageData(values: Float32Array, width: number, height: number): ImageData;

/** A frame from SamplerWorker: the images are ImageBitmaps transferred from the worker. */
export interface WorkerFrame extends Omit<Frame, "images"> {
  images: ImageBitmap[];
}

export interface WorkerLoadOptions extends LoadOptions {
  /** URL of worker.js (default: next to worker-client.js). */
  workerUrl?: string | URL;
}

/**
 * The Sampler API, run in a Web Worker so the page never freezes. If the worker crashes (a
 * WorkerError, or a PanicError from its wasm) every call in flight rejects and so does every
 * later one; SamplerWorker.load starts a new worker and works again.
 */
export declare class SamplerWorker {
  private constructor();
  static load(source: string | URL | ArrayBuffer | Uint8Array, options?: WorkerLoadOptions): Promise<SamplerWorker>;
  readonly backend: Backend;
  readonly backendReason: string;
  readonly threads: number;
  readonly threadsReason: string;
  readonly config: ModelConfig | PipelineConfig;
  sample(options?: SampleOptions): AsyncGenerator<WorkerFrame, void, undefined>;
  /** Same as Sampler.tokenize, computed in the worker. */
  tokenize(text: string): Promise<Tokens>;
  /** Same as Sampler.addNoise, computed in the worker. */
  addNoise(x0: Float32Array, shape: [number, number, number, number], timestep: number, seed?: number): Promise<Float32Array>;
  /** Stops the worker; a sample() in progress rejects with a DisposedError. */
  dispose(): void;
}
