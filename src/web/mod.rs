//! The only wasm-bindgen face of the crate: a thin binding over the model loader and the
//! step-wise sampler. The JS API (`Sampler.load`, `sampler.sample()`, the worker) lives in
//! `src/web/js/` and drives these bindings; fetching, caching and integrity are done there.
//!
//! Everything returns `Result<_, JsValue>` carrying a JS `Error` whose message says what was
//! expected and what was found; the panic hook makes any remaining bug readable.

use std::cell::{Cell, RefCell};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::error::{Error, ErrorKind};
use crate::image::to_rgba;
use crate::memory::{fmt_bytes, MemoryBudget};
use crate::models::{load_model_within, LoadedModel};
use crate::pipelines::{default_steps, SampleOptions, SamplingRun, MAX_BATCH, MAX_GUIDANCE};
use crate::schedulers::{BetaTable, SchedulerConfig, SchedulerKind};

mod latent;
mod loader;
pub use latent::{LatentRun, PipelineEngine};
pub use loader::FileLoader;

// The constructors wasm-ld collects (the `inventory` registrations of burn's dependencies). When
// no exported function calls them, wasm-ld treats the module as a "command" and runs them again
// at the top of EVERY export: a measured ~4% of a CPU sampling step, and most of a WebGPU step
// (whose many JS callbacks are exports: 4.7 -> 0.7-1.2 s per step on SwiftShader), went to
// re-running them (see BENCHMARKS.md). Calling them once here, from the start function wasm-bindgen runs right after
// instantiation, makes the module a "reactor" and leaves the exports unwrapped.
#[cfg(target_family = "wasm")]
unsafe extern "C" {
    fn __wasm_call_ctors();
}

#[wasm_bindgen(start)]
pub fn start() {
    // SAFETY: the linker-made constructor list; its entries are idempotent registrations, and
    // this runs once per instance before any other export can be called.
    #[cfg(target_family = "wasm")]
    unsafe {
        __wasm_call_ctors();
    }
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        // Tell JS before the trap: a trap inside an async export would leave its promise
        // pending forever, so the JS layer rejects every pending call with this message.
        let message = info.to_string();
        let _ = PANIC_HANDLER.try_with(|h| {
            if let Ok(h) = h.try_borrow() {
                if let Some(f) = h.as_ref() {
                    let _ = f.call1(&JsValue::NULL, &JsValue::from_str(&message));
                }
            }
        });
    }));
}

thread_local! {
    /// JS function called with the message of a panic, before the module traps.
    static PANIC_HANDLER: RefCell<Option<js_sys::Function>> = const { RefCell::new(None) };
    /// Bytes of weights held in the wasm heap by live CPU engines of this instance.
    static RESIDENT: Cell<u64> = const { Cell::new(0) };
}

/// Registers `handler(message)`, called synchronously when Rust code panics, just before this
/// wasm instance traps. After it has been called the instance must be treated as dead.
#[wasm_bindgen(js_name = setPanicHandler)]
pub fn set_panic_handler(handler: js_sys::Function) {
    PANIC_HANDLER.with(|h| *h.borrow_mut() = Some(handler));
}

/// Panics on purpose, for the tests of the JS layer's crash handling: "sync" inside this
/// synchronous export; "async" inside a promise-returning export, after its first await.
#[wasm_bindgen(js_name = testPanic)]
pub fn test_panic(kind: String) -> Result<JsValue, JsValue> {
    match kind.as_str() {
        "sync" => panic!("testPanic: a deliberate panic in a synchronous export"),
        "async" => Ok(wasm_bindgen_futures::future_to_promise(async {
            let yielded = js_sys::Promise::resolve(&JsValue::NULL);
            let _ = wasm_bindgen_futures::JsFuture::from(yielded).await;
            panic!("testPanic: a deliberate panic in an async export")
        })
        .into()),
        other => Err(js_error_named(
            "InvalidArgumentError",
            format!("testPanic: expected \"sync\" or \"async\", found \"{other}\""),
        )),
    }
}

/// The largest heap this module can reach: wasm32's 4 GiB (65536 pages of 64 KiB).
const HEAP_LIMIT: u64 = 4 << 30;
/// Kept free for everything that is not estimated (JS glue buffers, allocator slack).
const HEAP_MARGIN: u64 = 256 << 20;

/// Size of this instance's linear memory in bytes (it only grows).
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    (core::arch::wasm32::memory_size::<0>() as u64 * 65536) as f64
}

// The threaded CPU build: `initThreadPool(n)` (wasm-bindgen-rayon) starts n Web Workers on this
// module's shared memory; the CPU kernels then split their work over them (backend::cpu::par).
#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

/// Starts the CPU backend's pool of `n` threads (Web Workers on this module's memory) and
/// resolves to `n` once they run; the kernels use them from then on. Only in the threaded build,
/// and once per instance.
#[cfg(feature = "threads")]
#[wasm_bindgen(js_name = startThreads)]
pub async fn start_threads(n: usize) -> Result<usize, JsValue> {
    if !(1..=64).contains(&n) {
        return Err(js_error(format!("threads: expected 1 to 64, found {n}")));
    }
    if crate::backend::cpu::threads() > 1 {
        return Err(js_error_named(
            "BackendError",
            "threads: expected one pool per instance, found one started already",
        ));
    }
    wasm_bindgen_futures::JsFuture::from(init_thread_pool(n)).await?;
    crate::backend::cpu::set_threads(n);
    Ok(n)
}

/// Where the threaded build's steps spent their time since the last call (`{ steps, stepMs,
/// regions, parallelMs, waitMs }`, see `backend::cpu::par::stats`), counting from now on while
/// `on`; for benchmarks (`bench/cpu.mjs --thread-stats`).
#[cfg(feature = "threads")]
#[wasm_bindgen(js_name = threadStats)]
pub fn thread_stats(on: bool) -> JsValue {
    let s = crate::backend::cpu::thread_stats(on);
    let o = js_sys::Object::new();
    for (k, v) in [
        ("steps", s.steps as f64),
        ("stepMs", s.step_ms),
        ("regions", s.regions as f64),
        ("parallelMs", s.parallel_ms),
        ("waitMs", s.wait_ms),
    ] {
        let _ = js_sys::Reflect::set(&o, &k.into(), &v.into());
    }
    o.into()
}

/// The largest model file this instance can take into its heap now (the copy alone; loading
/// then checks the f32 weights and one image's run against the budget).
#[wasm_bindgen(js_name = maxModelBytes)]
pub fn max_model_bytes() -> f64 {
    HEAP_LIMIT.saturating_sub(wasm_memory_bytes() as u64 + HEAP_MARGIN) as f64
}

fn js_error_named(name: &str, message: impl std::fmt::Display) -> JsValue {
    let e = js_sys::Error::new(&message.to_string());
    e.set_name(name);
    e.into()
}

fn js_error(message: impl std::fmt::Display) -> JsValue {
    js_error_named("InvalidArgumentError", message)
}

/// A crate error as a JS `Error` whose `name` is its kind ("FormatError", "ConfigError", ...)
/// and whose message is the crate's (the kind is not repeated in it).
fn err(e: Error) -> JsValue {
    js_error_named(e.kind.js_name(), e.message)
}

thread_local! {
    /// The WebGPU device, initialised once per page or worker (burn's runtime cannot be
    /// initialised twice for one device id).
    static WEBGPU: RefCell<Option<Device>> = const { RefCell::new(None) };
    /// WebGPU devices lost so far. A lost device's runtime cannot be revived, so the next one is
    /// initialised under a fresh device id: on the web every kind but `IntegratedGpu` asks the
    /// browser for a high-performance adapter, so `DiscreteGpu(n)` is a new runtime on the same
    /// adapter.
    static GPU_GENERATION: Cell<usize> = const { Cell::new(0) };
}

/// Forgets a WebGPU device that failed (lost, destroyed): the next `initBackend` makes a new one.
fn forget_webgpu_device() {
    let _ = WEBGPU.try_with(|w| {
        if w.borrow_mut().take().is_some() {
            let _ = GPU_GENERATION.try_with(|g| g.set(g.get() + 1));
        }
    });
}

#[cfg(not(feature = "webgpu"))]
async fn webgpu_device() -> Result<Device, JsValue> {
    Err(js_error_named(
        "BackendError",
        "WebGPU: expected a build with WebGPU, found the threaded CPU build (load it with backend \"cpu\", or the default build for WebGPU)",
    ))
}

#[cfg(feature = "webgpu")]
async fn webgpu_device() -> Result<Device, JsValue> {
    if let Some(d) = WEBGPU.with(|w| w.borrow().clone()) {
        return Ok(d);
    }
    let generation = GPU_GENERATION.with(Cell::get);
    let options = if generation == 0 {
        Device::wgpu_options()
    } else {
        Device::wgpu_options().device_kind(burn::tensor::DeviceKind::DiscreteGpu(generation))
    };
    let device = options.init_async().await.map_err(|e| {
        js_error_named(
            "BackendError",
            format!("WebGPU: expected an adapter and a device, found an error ({e})"),
        )
    })?;
    WEBGPU.with(|w| *w.borrow_mut() = Some(device.clone()));
    Ok(device)
}

/// Memory limits handed over by JS at load: the WebGPU adapter's buffer limits and an optional
/// budget of the caller's.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Limits {
    max_buffer_size: Option<f64>,
    max_storage_buffer_binding_size: Option<f64>,
    memory_budget: Option<f64>,
}

fn budget_for(backend: &str, limits: &Limits) -> Result<MemoryBudget, JsValue> {
    let bytes = |name: &str, v: Option<f64>| -> Result<Option<u64>, JsValue> {
        match v {
            None => Ok(None),
            Some(x) if x.is_finite() && x >= 1.0 => Ok(Some(x as u64)),
            Some(x) => Err(js_error(format!(
                "{name}: expected a positive number of bytes, found {x}"
            ))),
        }
    };
    let user = bytes("memoryBudget", limits.memory_budget)?;
    if backend == "cpu" {
        let heap = HEAP_LIMIT - HEAP_MARGIN;
        return Ok(MemoryBudget {
            total: user.map_or(heap, |u| u.min(heap)),
            largest_buffer: u64::MAX,
            what: if user.is_some_and(|u| u < heap) {
                "the memoryBudget option"
            } else {
                "the wasm32 heap of the CPU backend"
            },
            weights_inside: true,
        });
    }
    // WebGPU's default limits when the adapter's are not given (the spec's minimums).
    let binding = bytes(
        "maxStorageBufferBindingSize",
        limits.max_storage_buffer_binding_size,
    )?
    .unwrap_or(128 << 20);
    let buffer = bytes("maxBufferSize", limits.max_buffer_size)?.unwrap_or(256 << 20);
    Ok(MemoryBudget {
        total: user.unwrap_or(HEAP_LIMIT),
        largest_buffer: binding.min(buffer),
        what: if binding <= buffer {
            "the WebGPU adapter's maxStorageBufferBindingSize"
        } else {
            "the WebGPU adapter's maxBufferSize"
        },
        weights_inside: false,
    })
}

async fn device_for(backend: &str) -> Result<Device, JsValue> {
    match backend {
        "webgpu" => webgpu_device().await,
        "cpu" => Ok(Device::flex()),
        other => Err(js_error(format!(
            "backend: expected \"webgpu\" or \"cpu\", found \"{other}\""
        ))),
    }
}

/// The load limits JS hands over (absent: the defaults).
fn parse_limits(limits: JsValue) -> Result<Limits, JsValue> {
    if limits.is_undefined() || limits.is_null() {
        return Ok(Limits::default());
    }
    serde_wasm_bindgen::from_value(limits).map_err(|e| js_error(format!("load limits: {e}")))
}

/// After an engine's weights are dropped: takes its `resident` bytes off the heap's count,
/// frees the device's memory (unless the device was lost since `generation`), and the CPU
/// scratch once no engine is left.
fn release(device: &Device, backend: &str, generation: usize, resident: u64) {
    let _ = RESIDENT.try_with(|r| r.set(r.get().saturating_sub(resident)));
    let lost = backend == "webgpu" && GPU_GENERATION.try_with(Cell::get).unwrap_or(0) != generation;
    if !lost {
        device.memory_cleanup();
    }
    if RESIDENT.try_with(Cell::get).unwrap_or(0) == 0 {
        crate::backend::cpu::release_scratch();
    }
}

/// The device of `backend` once [`init_backend`] has resolved for it.
fn initialised_device(backend: &str) -> Result<Device, JsValue> {
    match backend {
        "webgpu" => WEBGPU.with(|w| w.borrow().clone()).ok_or_else(|| {
            js_error_named(
                "BackendError",
                "backend \"webgpu\": expected an initialised device (call initBackend first), found none",
            )
        }),
        "cpu" => Ok(Device::flex()),
        other => Err(js_error(format!(
            "backend: expected \"webgpu\" or \"cpu\", found \"{other}\""
        ))),
    }
}

/// Initialises `backend` ("webgpu": requests the adapter and device once per instance; "cpu":
/// nothing). The only asynchronous part of loading: [`FileLoader`] is synchronous, so a
/// trap while loading throws to its caller instead of leaving a promise pending.
#[wasm_bindgen(js_name = initBackend)]
pub async fn init_backend(backend: String) -> Result<(), JsValue> {
    device_for(&backend).await.map(|_| ())
}

/// A loaded model on one backend.
#[wasm_bindgen]
pub struct Engine {
    model: Option<LoadedModel>,
    backend: String,
    /// [`GPU_GENERATION`] when loaded: a WebGPU engine of an older generation lives on a lost
    /// device, whose memory is not touched again.
    generation: usize,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.dispose();
    }
}

/// Model and scheduler config as handed to JS (`sampler.config`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigView<'a> {
    /// "pixel" (a U-Net model file; "latent" for pipeline files).
    kind: &'static str,
    /// "classes" or "none".
    conditioning: &'static str,
    name: Option<&'a str>,
    quantization: &'a str,
    unet: &'a crate::UNet2DConfig,
    scheduler: &'a crate::SchedulerConfig,
    null_class: Option<usize>,
    class_names: &'a [String],
    sample_size: Option<[usize; 2]>,
    in_channels: usize,
    num_classes: Option<usize>,
    sampling: SamplingView,
}

/// What `sampler.sample()` accepts for this model and what it does by default (the crate's
/// [`crate::pipelines`] owns these; a page builds its controls from them).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SamplingView {
    schedulers: &'static [&'static str],
    default_scheduler: &'static str,
    /// Steps per scheduler when `steps` is not given.
    default_steps: std::collections::BTreeMap<&'static str, usize>,
    max_steps: usize,
    max_batch: usize,
    max_guidance_scale: f64,
}

impl Engine {
    /// A U-Net model file's bytes on `backend` (initialised): parses and validates the file
    /// and uploads its weights, checking them and one image's run against the memory budget.
    fn from_bytes(bytes: &[u8], backend: String, limits: &Limits) -> Result<Engine, JsValue> {
        let device = initialised_device(&backend)?;
        let mut budget = budget_for(&backend, limits)?;
        // Other CPU engines of this instance hold their weights in the same heap.
        let others = RESIDENT.with(Cell::get);
        if budget.weights_inside {
            budget.total = budget.total.saturating_sub(others);
        }
        let model = load_model_within(bytes, &device, budget).map_err(|e| {
            if e.kind == ErrorKind::MemoryLimit && others > 0 {
                err(Error::memory(format!(
                    "{} (other loaded models hold {}; dispose them first)",
                    e.message,
                    fmt_bytes(others)
                )))
            } else {
                err(e)
            }
        })?;
        RESIDENT.with(|r| r.set(r.get() + model.resident_bytes));
        Ok(Engine {
            model: Some(model),
            backend,
            generation: GPU_GENERATION.with(Cell::get),
        })
    }
}

#[wasm_bindgen]
impl Engine {
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.backend.clone()
    }

    fn model(&self) -> Result<&LoadedModel, JsValue> {
        self.model.as_ref().ok_or_else(|| {
            js_error("this sampler was disposed: expected a loaded model, found none")
        })
    }

    /// The model and scheduler config as a plain object.
    pub fn config(&self) -> Result<JsValue, JsValue> {
        let m = self.model()?;
        let view = ConfigView {
            kind: "pixel",
            conditioning: if m.meta.unet.num_class_embeds.is_some() {
                "classes"
            } else {
                "none"
            },
            name: m.meta.name.as_deref(),
            quantization: m.meta.quant.name(),
            unet: &m.meta.unet,
            scheduler: &m.meta.scheduler,
            null_class: m.meta.null_class,
            class_names: &m.meta.class_names,
            sample_size: m.meta.unet.sample_hw(),
            in_channels: m.meta.unet.in_channels,
            num_classes: m.meta.unet.num_class_embeds,
            sampling: {
                let t = m.meta.scheduler.num_train_timesteps;
                SamplingView {
                    schedulers: SchedulerKind::NAMES,
                    default_scheduler: SampleOptions::default().scheduler.name(),
                    default_steps: SchedulerKind::ALL
                        .iter()
                        .map(|&k| (k.name(), default_steps(k, t)))
                        .collect(),
                    max_steps: t,
                    max_batch: MAX_BATCH,
                    max_guidance_scale: MAX_GUIDANCE,
                }
            },
        };
        view.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
            .map_err(|e| js_error(format!("config: {e}")))
    }

    /// Frees the weights (GPU memory included). Later calls fail with a clear error.
    pub fn dispose(&mut self) {
        if let Some(m) = self.model.take() {
            let device = m.unet.device().clone();
            let resident = m.resident_bytes;
            drop(m);
            release(&device, &self.backend, self.generation, resident);
        }
    }

    /// Starts a sampling run from the caller's options object (`scheduler`, `steps`, `seed`,
    /// `eta`, `batch`, `classLabels`, `guidanceScale`; absent ones take the crate's defaults, a
    /// random seed when none is given; other keys are ignored). `init_noise` (NCHW x_T)
    /// replaces the seed when given.
    #[wasm_bindgen(js_name = startRun)]
    pub fn start_run(
        &self,
        options: JsValue,
        init_noise: Option<Vec<f32>>,
    ) -> Result<Run, JsValue> {
        let m = self.model()?;
        let options = run_options(&options, &SampleOptions::KEYS)?;
        let random_seed = || (js_sys::Math::random() * 4_294_967_296.0) as u64;
        let mut opts =
            SampleOptions::from_json(&options, m.meta.scheduler.num_train_timesteps, random_seed)
                .map_err(err)?;
        opts.init_noise = init_noise;
        Ok(Run {
            sampler: SamplingRun::new(m, &opts).map_err(err)?,
        })
    }

    /// The forward process q(x_t | x_0) with this model's noise schedule: `x0` NCHW in
    /// [-1, 1] of `shape`, noise from `seed` (the sampler's seeded noise).
    #[wasm_bindgen(js_name = addNoise)]
    pub fn add_noise(
        &self,
        x0: Vec<f32>,
        shape: Vec<u32>,
        timestep: usize,
        seed: f64,
    ) -> Result<Vec<f32>, JsValue> {
        let table = BetaTable::new(&self.model()?.meta.scheduler).map_err(err)?;
        forward_process(&table, x0, shape, timestep, seed)
    }
}

/// The keys of the caller's options object that the crate reads ([`SampleOptions::KEYS`]), as
/// JSON; the others (the JS layer's own, the caller's) are never touched. JSON has no NaN or
/// infinity, so a non-finite number is refused here rather than read as absent.
fn run_options(options: &JsValue, keys: &[&str]) -> Result<serde_json::Value, JsValue> {
    if options.is_undefined() || options.is_null() {
        return Ok(serde_json::Value::Null);
    }
    if !options.is_object() {
        return Err(js_error(format!(
            "sample options: expected an object, found {}",
            options.js_typeof().as_string().unwrap_or_default()
        )));
    }
    let mut map = serde_json::Map::new();
    for &key in keys {
        let v = js_sys::Reflect::get(options, &JsValue::from_str(key))?;
        if v.is_undefined() {
            continue;
        }
        if let Some(x) = v.as_f64().filter(|x| !x.is_finite()) {
            return Err(js_error(format!(
                "{key}: expected a finite number, found {x}"
            )));
        }
        let json = serde_wasm_bindgen::from_value(v)
            .map_err(|e| js_error(format!("{key}: expected a plain JSON value, found {e}")))?;
        map.insert(key.to_string(), json);
    }
    Ok(serde_json::Value::Object(map))
}

/// One sampling run: `step()` enqueues one U-Net call and one scheduler step (no readback);
/// `readFrame()` reads the current image back asynchronously.
#[wasm_bindgen]
pub struct Run {
    sampler: SamplingRun,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StepView {
    step: usize,
    total_steps: usize,
    /// Fractional for Euler with Karras sigmas or `linspace` spacing and consistency models.
    timestep: f64,
    last: bool,
}

/// What a run's `step()` tells JS: `{ step, totalSteps, timestep, last }`.
fn step_view(s: crate::pipelines::StepInfo) -> Result<JsValue, JsValue> {
    let view = StepView {
        step: s.step,
        total_steps: s.total_steps,
        timestep: s.timestep,
        last: s.last,
    };
    view.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| js_error(format!("step: {e}")))
}

#[wasm_bindgen]
impl Run {
    #[wasm_bindgen(getter, js_name = totalSteps)]
    pub fn total_steps(&self) -> usize {
        self.sampler.total_steps()
    }

    #[wasm_bindgen(getter)]
    pub fn done(&self) -> bool {
        self.sampler.is_done()
    }

    /// `[batch, channels, height, width]`
    #[wasm_bindgen(getter)]
    pub fn shape(&self) -> Vec<u32> {
        self.sampler.shape().iter().map(|&d| d as u32).collect()
    }

    pub fn step(&mut self) -> Result<JsValue, JsValue> {
        let sampler = &mut self.sampler;
        step_view(crate::backend::cpu::on_pool(|| sampler.step()).map_err(err)?)
    }

    /// Reads `which` ("xt": the current sample; "x0": the predicted clean image, falling back
    /// to x_t before the first step) and resolves to `{ rgba: Uint8ClampedArray[], values:
    /// Float32Array }` (one RGBA buffer per image; the raw NCHW values).
    #[wasm_bindgen(js_name = readFrame)]
    pub fn read_frame(&self, which: String) -> Result<js_sys::Promise, JsValue> {
        let tensor = match which.as_str() {
            "xt" => self.sampler.current(),
            "x0" => self
                .sampler
                .predicted_x0()
                .unwrap_or_else(|| self.sampler.current()),
            other => {
                return Err(js_error(format!(
                    "preview: expected \"x0\" or \"xt\", found \"{other}\""
                )))
            }
        };
        let on_gpu = *self.sampler.device() != Device::flex();
        Ok(read_frame_promise(tensor, on_gpu))
    }
}

/// Reads `tensor` (`[B, C, H, W]` images in [-1, 1]) back and resolves to `{ rgba:
/// Uint8ClampedArray[], values: Float32Array, width, height }`.
fn read_frame_promise(tensor: burn::tensor::Tensor<4>, on_gpu: bool) -> js_sys::Promise {
    let shape = tensor.dims();
    wasm_bindgen_futures::future_to_promise(async move {
        let data = tensor.into_data_async().await.map_err(|e| {
            if on_gpu {
                forget_webgpu_device();
            }
            js_error_named(
                "BackendError",
                format!("reading the frame from the device failed (device lost?): {e:?}"),
            )
        })?;
        let values = data.try_into_vec::<f32>().map_err(|e| {
            js_error_named(
                "BackendError",
                format!("frame: expected f32 values, found {e:?}"),
            )
        })?;
        let images = js_sys::Array::new();
        for i in 0..shape[0] {
            let rgba = to_rgba(&values, shape, i).map_err(err)?;
            images.push(&js_sys::Uint8ClampedArray::from(&rgba[..]));
        }
        let out = js_sys::Object::new();
        js_sys::Reflect::set(&out, &"rgba".into(), &images)?;
        js_sys::Reflect::set(
            &out,
            &"values".into(),
            &js_sys::Float32Array::from(&values[..]),
        )?;
        js_sys::Reflect::set(&out, &"width".into(), &(shape[3] as u32).into())?;
        js_sys::Reflect::set(&out, &"height".into(), &(shape[2] as u32).into())?;
        Ok(out.into())
    })
}

/// The seeded noise the sampler uses, for tests that compare the wasm build with native.
#[wasm_bindgen(js_name = noiseSample)]
pub fn noise_sample(seed: f64, batch: usize, per_item: usize) -> Result<Vec<f32>, JsValue> {
    check_seed(seed)?;
    check_noise_size(batch, per_item)?;
    Ok(crate::noise::BatchNoise::new(seed as u64, batch).sample(per_item))
}

/// Largest noise / image buffer the helpers below make: 64 Mi values (256 MiB).
const MAX_VALUES: usize = 1 << 26;

fn check_noise_size(batch: usize, per_item: usize) -> Result<(), JsValue> {
    if batch == 0 || per_item == 0 {
        return Err(js_error(format!(
            "noise size: expected a batch and a per-item count of at least 1, found {batch} x {per_item}"
        )));
    }
    match batch.checked_mul(per_item) {
        Some(n) if n <= MAX_VALUES => Ok(()),
        _ => Err(js_error_named(
            "MemoryLimitError",
            format!("noise size: expected at most {MAX_VALUES} values, found {batch} x {per_item}"),
        )),
    }
}

fn check_seed(seed: f64) -> Result<(), JsValue> {
    if seed.is_finite() && (0.0..=9_007_199_254_740_991.0).contains(&seed) && seed.fract() == 0.0 {
        Ok(())
    } else {
        Err(js_error(format!(
            "seed: expected an integer from 0 to 2^53 - 1, found {seed}"
        )))
    }
}

/// The forward process q(x_t | x_0) with the default schedule (linear betas 1e-4..0.02 over
/// 1000 steps), for pages without a model; `sampler.addNoise` uses the model's own.
#[wasm_bindgen(js_name = addNoise)]
pub fn add_noise(
    x0: Vec<f32>,
    shape: Vec<u32>,
    timestep: usize,
    seed: f64,
) -> Result<Vec<f32>, JsValue> {
    let table = BetaTable::new(&SchedulerConfig::default()).map_err(err)?;
    forward_process(&table, x0, shape, timestep, seed)
}

/// `x0` (NCHW, `shape`) noised to `timestep` of `table` with the seeded noise of `seed`.
fn forward_process(
    table: &BetaTable,
    x0: Vec<f32>,
    shape: Vec<u32>,
    timestep: usize,
    seed: f64,
) -> Result<Vec<f32>, JsValue> {
    let s: [usize; 4] = shape
        .iter()
        .map(|&d| d as usize)
        .collect::<Vec<_>>()
        .try_into()
        .map_err(|_| {
            js_error(format!(
                "shape: expected 4 dimensions, found {}",
                shape.len()
            ))
        })?;
    if s.contains(&0) {
        return Err(js_error(format!(
            "shape: expected 4 dimensions of at least 1, found {s:?}"
        )));
    }
    check_seed(seed)?;
    check_noise_size(
        s[0],
        s[1..]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(usize::MAX),
    )?;
    let n: usize = s.iter().product();
    if x0.len() != n {
        return Err(js_error(format!(
            "image: expected {n} values for shape {s:?}, found {}",
            x0.len()
        )));
    }
    let noise = crate::noise::BatchNoise::new(seed as u64, s[0]).sample(n / s[0]);
    table.add_noise_host(&x0, &noise, timestep).map_err(err)
}
