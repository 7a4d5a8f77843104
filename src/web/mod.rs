//! The only wasm-bindgen face of the crate: a thin binding over the model loader and the
//! step-wise sampler. The JS API (`Sampler.load`, `sampler.sample()`, the worker) lives in
//! `src/web/js/` and drives these bindings; fetching, caching and integrity are done there.
//!
//! Everything returns `Result<_, JsValue>` carrying a JS `Error` whose message says what was
//! expected and what was found; the panic hook makes any remaining bug readable.

use std::cell::RefCell;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::error::Error;
use crate::image::to_rgba;
use crate::model::{load_model, LoadedModel};
use crate::pipeline::{SampleOptions, Sampler};
use crate::SchedulerKind;

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
    console_error_panic_hook::set_once();
}

fn js_error(message: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&message.to_string()).into()
}

fn err(e: Error) -> JsValue {
    js_error(e)
}

thread_local! {
    /// The WebGPU device, initialised once per page or worker (burn's runtime cannot be
    /// initialised twice).
    static WEBGPU: RefCell<Option<Device>> = const { RefCell::new(None) };
}

async fn webgpu_device() -> Result<Device, JsValue> {
    if let Some(d) = WEBGPU.with(|w| w.borrow().clone()) {
        return Ok(d);
    }
    let device = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| js_error(format!("WebGPU: expected an adapter, found none ({e})")))?;
    WEBGPU.with(|w| *w.borrow_mut() = Some(device.clone()));
    Ok(device)
}

/// A loaded model on one backend.
#[wasm_bindgen]
pub struct Engine {
    model: Option<LoadedModel>,
    backend: String,
}

/// Model and scheduler config as handed to JS (`sampler.config`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigView<'a> {
    name: Option<&'a str>,
    quantization: &'a str,
    unet: &'a crate::UNet2DConfig,
    scheduler: &'a crate::SchedulerConfig,
    null_class: Option<usize>,
    class_names: &'a [String],
    sample_size: Option<[usize; 2]>,
    in_channels: usize,
    num_classes: Option<usize>,
}

/// `sampler.sample()` options as the JS layer passes them (already defaulted and checked).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunOptions {
    scheduler: String,
    steps: usize,
    seed: f64,
    eta: f64,
    batch: usize,
    class_labels: Option<Vec<usize>>,
    guidance_scale: f64,
}

#[wasm_bindgen]
impl Engine {
    /// Parses and validates the model file and uploads its weights to `backend`
    /// ("webgpu" or "cpu").
    pub async fn load(bytes: Vec<u8>, backend: String) -> Result<Engine, JsValue> {
        let device = match backend.as_str() {
            "webgpu" => webgpu_device().await?,
            "cpu" => Device::flex(),
            other => {
                return Err(js_error(format!(
                    "backend: expected \"webgpu\" or \"cpu\", found \"{other}\""
                )))
            }
        };
        let model = load_model(&bytes, &device).map_err(err)?;
        Ok(Engine {
            model: Some(model),
            backend,
        })
    }

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
            name: m.meta.name.as_deref(),
            quantization: m.meta.quant.name(),
            unet: &m.meta.unet,
            scheduler: &m.meta.scheduler,
            null_class: m.meta.null_class,
            class_names: &m.meta.class_names,
            sample_size: m.meta.unet.sample_hw(),
            in_channels: m.meta.unet.in_channels,
            num_classes: m.meta.unet.num_class_embeds,
        };
        view.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
            .map_err(|e| js_error(format!("config: {e}")))
    }

    /// Frees the weights (GPU memory included). Later calls fail with a clear error.
    pub fn dispose(&mut self) {
        if let Some(m) = self.model.take() {
            let device = m.unet.device().clone();
            drop(m);
            device.memory_cleanup();
        }
    }

    /// Starts a sampling run. `init_noise` (NCHW x_T) replaces the seed when given.
    #[wasm_bindgen(js_name = startRun)]
    pub fn start_run(
        &self,
        options: JsValue,
        init_noise: Option<Vec<f32>>,
    ) -> Result<Run, JsValue> {
        let m = self.model()?;
        let o: RunOptions = serde_wasm_bindgen::from_value(options)
            .map_err(|e| js_error(format!("sample options: {e}")))?;
        if !(o.seed.is_finite()
            && o.seed >= 0.0
            && o.seed <= 9_007_199_254_740_991.0
            && o.seed.fract() == 0.0)
        {
            return Err(js_error(format!(
                "seed: expected an integer from 0 to 2^53 - 1, found {}",
                o.seed
            )));
        }
        let opts = SampleOptions {
            scheduler: SchedulerKind::parse(&o.scheduler).map_err(err)?,
            steps: o.steps,
            seed: o.seed as u64,
            eta: o.eta,
            batch: o.batch,
            class_labels: o.class_labels,
            guidance_scale: o.guidance_scale,
            init_noise,
        };
        Ok(Run {
            sampler: Sampler::new(m, &opts).map_err(err)?,
        })
    }
}

/// One sampling run: `step()` enqueues one U-Net call and one scheduler step (no readback);
/// `readFrame()` reads the current image back asynchronously.
#[wasm_bindgen]
pub struct Run {
    sampler: Sampler,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StepView {
    step: usize,
    total_steps: usize,
    timestep: usize,
    last: bool,
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
        let s = self.sampler.step().map_err(err)?;
        let view = StepView {
            step: s.step,
            total_steps: s.total_steps,
            timestep: s.timestep,
            last: s.last,
        };
        view.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
            .map_err(|e| js_error(format!("step: {e}")))
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
        let shape = self.sampler.shape();
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let data = tensor.into_data_async().await.map_err(|e| {
                js_error(format!(
                    "reading the frame from the device failed (device lost?): {e:?}"
                ))
            })?;
            let values = data
                .try_into_vec::<f32>()
                .map_err(|e| js_error(format!("frame: expected f32 values, found {e:?}")))?;
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
            Ok(out.into())
        }))
    }
}

/// The seeded noise the sampler uses, for tests that compare the wasm build with native.
#[wasm_bindgen(js_name = noiseSample)]
pub fn noise_sample(seed: f64, batch: usize, per_item: usize) -> Vec<f32> {
    crate::noise::BatchNoise::new(seed as u64, batch).sample(per_item)
}

/// The forward process q(x_t | x_0) for the demo's panel: `x0` NCHW in [-1, 1], noise from `seed`.
#[wasm_bindgen(js_name = addNoise)]
pub fn add_noise(
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
    let n: usize = s.iter().product();
    if x0.len() != n {
        return Err(js_error(format!(
            "image: expected {n} values for shape {s:?}, found {}",
            x0.len()
        )));
    }
    let table =
        crate::schedulers::BetaTable::new(&crate::SchedulerConfig::default()).map_err(err)?;
    let a = *table.alphas_cumprod.get(timestep).ok_or_else(|| {
        js_error(format!(
            "timestep: expected 0 to {}, found {timestep}",
            table.alphas_cumprod.len() - 1
        ))
    })?;
    let noise = crate::noise::BatchNoise::new(seed as u64, s[0]).sample(n / s[0]);
    Ok(x0
        .iter()
        .zip(noise)
        .map(|(x, e)| (a.sqrt() * *x as f64 + (1.0 - a).sqrt() * e as f64) as f32)
        .collect())
}
