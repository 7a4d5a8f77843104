// The one way the browser tests (pkg-tests/) and the benchmarks (bench/) start Chromium: the
// system's (CHROMIUM, default /usr/bin/chromium; playwright-core never downloads browsers),
// headless, with BASE_ARGS and one or more of the flag sets below.
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** Always: no sandbox (CI runs as root) and no background traffic, updates or first-run UI. */
export const BASE_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"];
/** WebGPU on SwiftShader (a software Vulkan adapter), the only WebGPU a machine without a GPU has. */
export const WEBGPU_ARGS = ["--disable-gpu-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader", "--use-webgpu-adapter=swiftshader", "--use-angle=swiftshader"];
/** No WebGPU and no GPU at all: the CPU path only. */
export const NO_GPU_ARGS = ["--disable-features=WebGPU,Vulkan", "--disable-gpu"];
/** Steady-state wasm timings: V8 optimises each function before its first run (no Liftoff tier). */
export const NO_LIFTOFF_ARGS = ["--js-flags=--no-liftoff"];

/** Headless Chromium with BASE_ARGS and `args` (default: WebGPU on SwiftShader). */
export function launch(args = WEBGPU_ARGS) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...BASE_ARGS, ...args] });
}
