// Types of the wasm-diffusion package. Hand-checked against index.js and worker.js.

/** Where the sampler runs. */
export type Backend = "webgpu" | "cpu";

export interface LoadProgress {
  /** Bytes received so far. */
  loaded: number;
  /** Total bytes from Content-Length, or 0 when the server did not say. */
  total: number;
}

export interface LoadOptions {
  /** "auto" (default): WebGPU on a hardware adapter, else the CPU (a software adapter such as SwiftShader counts as unavailable). */
  backend?: "auto" | Backend;
  /** Called as the model downloads (and as a cached copy is read). */
  onProgress?: (progress: LoadProgress) => void;
  /** Aborts the download or load; the promise rejects with an AbortError. */
  signal?: AbortSignal;
  /** Subresource-integrity hash of the file, "sha256-<base64>"; a mismatch rejects. */
  integrity?: string;
  /** Keep the file in the Cache API so a second load makes no network request (default false). */
  cache?: boolean;
}

/** diffusers UNet2DModel config (field names as in config.json). */
export interface UNet2DConfig {
  sample_size: number | [number, number] | null;
  in_channels: number;
  out_channels: number;
  center_input_sample: boolean;
  time_embedding_type: string;
  time_embedding_dim: number | null;
  freq_shift: number;
  flip_sin_to_cos: boolean;
  down_block_types: string[];
  mid_block_type: string | null;
  up_block_types: string[];
  block_out_channels: number[];
  layers_per_block: number;
  mid_block_scale_factor: number;
  downsample_padding: number;
  downsample_type: string;
  upsample_type: string;
  dropout: number;
  act_fn: string;
  attention_head_dim: number | null;
  norm_num_groups: number | null;
  attn_norm_num_groups: number | null;
  norm_eps: number;
  resnet_time_scale_shift: string;
  add_attention: boolean;
  class_embed_type: string | null;
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
  variance_type: string;
  clip_sample: boolean;
  clip_sample_range: number;
  prediction_type: "epsilon" | "sample" | "v_prediction";
  thresholding: boolean;
  timestep_spacing: "leading" | "trailing" | "linspace";
  steps_offset: number;
  rescale_betas_zero_snr: boolean;
  set_alpha_to_one: boolean;
  solver_order: number;
  algorithm_type: string;
  solver_type: string;
  lower_order_final: boolean;
  euler_at_final: boolean;
  use_karras_sigmas: boolean;
  use_exponential_sigmas: boolean;
  use_beta_sigmas: boolean;
  use_lu_lambdas: boolean;
  use_flow_sigmas: boolean;
  final_sigmas_type: string;
  lambda_min_clipped: number | null;
  variance_type_dpm: string | null;
}

export interface ModelConfig {
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
}

export interface SampleOptions {
  /** Number of denoising steps (default: ddpm 1000, ddim 50, dpm++ 20). */
  steps?: number;
  /** Default "ddim". */
  scheduler?: "ddpm" | "ddim" | "dpm++";
  /** Integer seed, 0 to 2^53 - 1 (default: random). The same seed gives the same pixels as the CLI. */
  seed?: number;
  /** DDIM eta (default 0, deterministic). */
  eta?: number;
  /** Images per run, 1 to 64 (default 1). */
  batch?: number;
  /** Class index per image, or one for all. Omitted: the null class (unconditional). */
  classLabels?: number[];
  /** Classifier-free guidance scale (default 1 = no guidance). */
  guidanceScale?: number;
  /** Yield a frame every k steps (default 1); the final frame always comes. */
  previewEvery?: number;
  /** What previews show: the predicted clean image "x0" (default) or the noisy sample "xt". */
  preview?: "x0" | "xt";
  /** Stops the run within one step; the iterator rejects with an AbortError. */
  signal?: AbortSignal;
  /** x_T as NCHW float32 (batch * channels * height * width values) instead of the seed. */
  initNoise?: Float32Array;
}

export interface Frame {
  /** 1-based step just taken. */
  step: number;
  totalSteps: number;
  /** Diffusion timestep of that step (999 ... 0). */
  timestep: number;
  /** True for the last frame, which shows the finished images. */
  final: boolean;
  /** Milliseconds since the run started. */
  elapsedMs: number;
  /** One image per batch item. */
  images: ImageData[];
}

export declare class Sampler {
  private constructor();
  static load(source: string | URL | ArrayBuffer | Uint8Array, options?: LoadOptions): Promise<Sampler>;
  readonly backend: Backend;
  readonly config: ModelConfig;
  sample(options?: SampleOptions): AsyncGenerator<Frame, void, undefined>;
  dispose(): void;
}

/** The seeded noise the sampler uses: `batch * perItem` standard-normal values. */
export declare function seededNoise(seed: number, batch: number, perItem: number): Promise<Float32Array>;
/** The forward process x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise (linear betas, T = 1000). */
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

/** The Sampler API, run in a Web Worker so the page never freezes. */
export declare class SamplerWorker {
  private constructor();
  static load(source: string | URL | ArrayBuffer | Uint8Array, options?: WorkerLoadOptions): Promise<SamplerWorker>;
  readonly backend: Backend;
  readonly config: ModelConfig;
  sample(options?: SampleOptions): AsyncGenerator<WorkerFrame, void, undefined>;
  dispose(): void;
}
