//! The latent pipelines' wasm-bindgen face: a pipeline file (text-to-image, img2img,
//! inpainting) loaded on one backend, runs stepped by JS, frames previewed through TAESD or the
//! linear latent-to-RGB map and fully decoded at the end. A [`FileLoader`](super::loader::FileLoader)
//! makes this engine when the file's metadata names a pipeline.

use std::cell::Cell;
use std::sync::Arc;

use burn::tensor::Device;
use serde::Serialize;
use wasm_bindgen::prelude::*;

use super::{
    err, js_error, js_error_named, read_frame_promise, release, run_options, step_view,
    GPU_GENERATION, RESIDENT,
};
use crate::pipelines::img2img::ImageInput;
use crate::pipelines::pipeline_file::StreamedPipeline;
use crate::pipelines::preview::Preview;
use crate::pipelines::stable_diffusion::{StableDiffusion, TextToImage, TextToImageRun};
use crate::pipelines::{default_steps, MAX_BATCH, MAX_GUIDANCE};
use crate::schedulers::SchedulerKind;
use crate::text::MAX_LENGTH;

/// A loaded latent pipeline on one backend.
#[wasm_bindgen]
pub struct PipelineEngine {
    pipe: Option<Arc<StableDiffusion>>,
    backend: String,
    /// Bytes of weights this engine holds in the wasm heap (CPU backend).
    resident: u64,
    generation: usize,
    config: serde_json::Value,
}

impl Drop for PipelineEngine {
    fn drop(&mut self) {
        self.dispose();
    }
}

/// One component as `sampler.config.components` shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ComponentView {
    parameters: usize,
    quantization: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LatentConfigView<'a> {
    kind: &'static str,
    conditioning: &'static str,
    pipeline: &'a str,
    name: Option<&'a str>,
    /// The U-Net's storage (what `quantization` says of pixel models).
    quantization: &'static str,
    components: std::collections::BTreeMap<&'static str, ComponentView>,
    /// `[height, width]` in pixels when the U-Net names a native size.
    sample_size: Option<[usize; 2]>,
    vae_scale_factor: usize,
    latent_channels: usize,
    inpainting: bool,
    preview: Option<&'static str>,
    max_prompt_tokens: usize,
    scheduler: &'a crate::SchedulerConfig,
    sampling: SamplingView,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SamplingView {
    schedulers: &'static [&'static str],
    default_scheduler: &'static str,
    default_steps: std::collections::BTreeMap<&'static str, usize>,
    default_guidance_scale: f64,
    max_steps: usize,
    max_batch: usize,
    max_guidance_scale: f64,
}

impl PipelineEngine {
    /// The engine over a pipeline [`FileLoader`](super::loader::FileLoader) has streamed onto
    /// `backend`; `resident`: bytes of its weights in the wasm heap (the CPU backend).
    pub(super) fn from_streamed(
        streamed: StreamedPipeline,
        backend: String,
        resident: u64,
    ) -> Result<PipelineEngine, JsValue> {
        let StreamedPipeline {
            pipeline: pipe,
            configs,
            quants,
            name,
            pipeline_tag,
            parameters,
        } = streamed;
        let count = |prefix: &str| -> usize {
            parameters
                .iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .map(|(_, s)| s.iter().product::<usize>())
                .sum()
        };
        let t = configs.scheduler.num_train_timesteps;
        // (JS name, tensor prefix, storage) of each component the file has.
        let components = [
            ("unet", "unet.", quants.unet),
            ("textEncoder", "text_encoder.", quants.text_encoder),
            ("vae", "vae.", quants.vae),
            ("previewVae", "preview_vae.", quants.preview_vae),
        ]
        .into_iter()
        .filter_map(|(name, prefix, q)| {
            let parameters = count(prefix);
            (parameters > 0).then_some((
                name,
                ComponentView {
                    parameters,
                    quantization: q.name(),
                },
            ))
        })
        .collect();
        let f = pipe.vae.config.downscale_factor();
        let view = LatentConfigView {
            kind: "latent",
            conditioning: "text",
            pipeline: &pipeline_tag,
            name: name.as_deref(),
            quantization: quants.unet.name(),
            components,
            sample_size: pipe.unet.config.sample_size.map(|s| s.hw().map(|x| x * f)),
            vae_scale_factor: f,
            latent_channels: pipe.vae.config.latent_channels,
            inpainting: pipe.unet.config.in_channels == 2 * pipe.vae.config.latent_channels + 1,
            preview: match &pipe.preview {
                Some(Preview::Tiny(_)) => Some("tiny"),
                Some(Preview::Linear(_)) => Some("linear"),
                None => None,
            },
            max_prompt_tokens: MAX_LENGTH - 2,
            scheduler: &pipe.scheduler,
            sampling: SamplingView {
                schedulers: SchedulerKind::NAMES,
                default_scheduler: TextToImage::default().scheduler.name(),
                default_steps: SchedulerKind::ALL
                    .iter()
                    .map(|&k| (k.name(), default_steps(k, t)))
                    .collect(),
                default_guidance_scale: TextToImage::default().guidance_scale,
                max_steps: t,
                max_batch: MAX_BATCH,
                max_guidance_scale: MAX_GUIDANCE,
            },
        };
        let config = serde_json::to_value(&view).map_err(|e| js_error(format!("config: {e}")))?;
        RESIDENT.with(|r| r.set(r.get() + resident));
        Ok(PipelineEngine {
            pipe: Some(Arc::new(pipe)),
            backend,
            resident,
            generation: GPU_GENERATION.with(Cell::get),
            config,
        })
    }
}

#[wasm_bindgen]
impl PipelineEngine {
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.backend.clone()
    }

    fn pipe(&self) -> Result<&Arc<StableDiffusion>, JsValue> {
        self.pipe.as_ref().ok_or_else(|| {
            js_error("this sampler was disposed: expected a loaded pipeline, found none")
        })
    }

    /// What the pipeline is (`kind: "latent"`, `conditioning: "text"`), its components and
    /// their storage, its native size and sampling defaults, as a plain object.
    pub fn config(&self) -> Result<JsValue, JsValue> {
        self.pipe()?;
        self.config
            .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
            .map_err(|e| js_error(format!("config: {e}")))
    }

    /// `{ ids, truncated, length }`: the 77 ids the text encoder reads for `text`, whether text
    /// was cut off to fit, and how many ids precede the padding.
    pub fn tokenize(&self, text: String) -> Result<JsValue, JsValue> {
        let e = self
            .pipe()?
            .tokenizer
            .encode_padded(&text, MAX_LENGTH)
            .map_err(err)?;
        let out = js_sys::Object::new();
        js_sys::Reflect::set(&out, &"ids".into(), &js_sys::Uint32Array::from(&e.ids[..]))?;
        js_sys::Reflect::set(&out, &"truncated".into(), &e.truncated.into())?;
        js_sys::Reflect::set(&out, &"length".into(), &(e.length as u32).into())?;
        Ok(out.into())
    }

    /// Frees the weights. Later calls fail with a clear error.
    pub fn dispose(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            let device = pipe.unet.device().clone();
            drop(pipe);
            release(&device, &self.backend, self.generation, self.resident);
        }
    }

    /// Starts a run from the caller's options object ([`TextToImage::KEYS`]: `prompt`,
    /// `negativePrompt`, `guidanceScale`, `steps`, `scheduler`, `seed`, `eta`, `batch`,
    /// `width`, `height`, `strength`). `init_noise`: the initial latents (NCHW) instead of the
    /// seed's; `init_image`: RGB planes in [-1, 1] of `image_width` x `image_height`; `mask`:
    /// one plane in [0, 1] of the same size (1 = repaint).
    #[wasm_bindgen(js_name = startRun)]
    pub fn start_run(
        &self,
        options: JsValue,
        init_noise: Option<Vec<f32>>,
        init_image: Option<Vec<f32>>,
        image_width: u32,
        image_height: u32,
        mask: Option<Vec<f32>>,
    ) -> Result<LatentRun, JsValue> {
        let pipe = self.pipe()?;
        let options = run_options(&options, &TextToImage::KEYS)?;
        let image = match (init_image, mask) {
            (Some(image), mask) => Some(ImageInput {
                image,
                shape: [3, image_height as usize, image_width as usize],
                strength: 1.0,
                mask,
            }),
            (None, Some(_)) => {
                return Err(js_error(
                    "mask: expected an initImage to go with it, found none",
                ))
            }
            (None, None) => None,
        };
        let random_seed = || (js_sys::Math::random() * 4_294_967_296.0) as u64;
        let mut opts = TextToImage::from_json(
            &options,
            pipe.scheduler.num_train_timesteps,
            random_seed,
            image,
        )
        .map_err(err)?;
        opts.latents = init_noise;
        // The text encoder (and img2img's VAE encode): on the pool in the threaded build.
        let run = crate::backend::cpu::on_pool(|| pipe.start_shared(&opts)).map_err(err)?;
        Ok(LatentRun {
            run,
            on_gpu: *pipe.unet.device() != Device::flex(),
        })
    }
}

/// One latent run: `step()` enqueues one guided U-Net call and one scheduler step;
/// `readFrame()` reads a preview or the decoded image back asynchronously.
#[wasm_bindgen]
pub struct LatentRun {
    run: TextToImageRun<Arc<StableDiffusion>>,
    on_gpu: bool,
}

#[wasm_bindgen]
impl LatentRun {
    #[wasm_bindgen(getter, js_name = totalSteps)]
    pub fn total_steps(&self) -> usize {
        self.run.total_steps()
    }

    #[wasm_bindgen(getter)]
    pub fn done(&self) -> bool {
        self.run.is_done()
    }

    pub fn step(&mut self) -> Result<JsValue, JsValue> {
        let run = &mut self.run;
        step_view(crate::backend::cpu::on_pool(|| run.step()).map_err(err)?)
    }

    /// Reads `which`: "x0" the preview of the predicted image (TAESD or the linear map; the
    /// full decode when the file has neither), "image" the current latents fully decoded (the
    /// final frame; inpainting keeps the init image's unmasked pixels), "xt" the latents decoded. Resolves to `{ rgba, values, width, height }`.
    #[wasm_bindgen(js_name = readFrame)]
    pub fn read_frame(&mut self, which: String) -> Result<js_sys::Promise, JsValue> {
        if !["image", "xt", "x0"].contains(&which.as_str()) {
            return Err(js_error_named(
                "InvalidArgumentError",
                format!("preview: expected \"x0\" or \"image\", found \"{which}\""),
            ));
        }
        // The decode is a U-Net-sized piece of work (the full VAE for "image"): on the pool in
        // the threaded build, as the steps are.
        let run = &mut self.run;
        let tensor = crate::backend::cpu::on_pool(move || {
            Ok::<_, crate::error::Error>(match which.as_str() {
                "image" => run.image(),
                "xt" => run.decode().clamp(-1.0, 1.0),
                _ => match run.preview()? {
                    Some(p) => p,
                    None => match run.predicted_x0() {
                        Some(x0) => run.pipe().decode_latents(x0).clamp(-1.0, 1.0),
                        None => run.decode().clamp(-1.0, 1.0),
                    },
                },
            })
        })
        .map_err(err)?;
        Ok(read_frame_promise(tensor, self.on_gpu))
    }
}
