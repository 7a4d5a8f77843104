//! Loading a model file as it downloads. `index.js` pushes each chunk of the response body (or
//! of the caller's bytes) into a [`FileLoader`] as it arrives:
//!
//! - a pipeline file (latent diffusion) is read by a [`PipelineStream`]: its header is checked
//!   as soon as it is complete (a bad file, a tensor over the adapter's buffer limit or weights
//!   over the CPU heap are refused before the data is fetched), and each tensor is dequantized
//!   and uploaded as soon as its bytes are in, so the heap never holds the file: at most one
//!   stored tensor plus one upload part;
//! - a U-Net model file (pixel diffusion, a few MB) is kept whole and loaded at the end.
//!
//! The loader also hashes what it was given (SHA-256) when asked, so the integrity of a file
//! that is never held whole can still be checked before the engine is handed out.

use std::cell::Cell;

use sha2::{Digest, Sha256};
use wasm_bindgen::prelude::*;

use super::latent::PipelineEngine;
use super::{
    budget_for, err, initialised_device, js_error_named, max_model_bytes, parse_limits, Engine,
    Limits, RESIDENT,
};
use crate::error::{Error, Result};
use crate::memory::{fmt_bytes, MemoryBudget};
use crate::pipelines::pipeline_file::PipelineStream;
use crate::weights::stream::{StreamReader, StreamSink};
use crate::weights::{Entry, Header, TensorView};

/// What the header said the file is.
enum Kind {
    /// The header has not arrived yet.
    Unknown,
    Pipeline(Box<PipelineStream>),
    /// A U-Net model file: kept whole.
    Model,
}

/// The stream's sink: decides on the header what the file is.
struct Sink {
    kind: Kind,
    device: burn::tensor::Device,
    budget: MemoryBudget,
    /// Bytes of weights other CPU engines of this instance hold in the heap.
    others: u64,
    /// Bytes of this pipeline's weights in the heap (the CPU backend).
    resident: u64,
}

impl StreamSink for Sink {
    fn header(&mut self, header: &Header) -> Result<()> {
        if !header.metadata.contains_key("pipeline") {
            self.kind = Kind::Model;
            return Ok(());
        }
        let mut stream =
            PipelineStream::new(&self.device, self.budget.largest_buffer, self.budget.what);
        stream.header(header)?;
        let shapes = stream.parameters().unwrap_or_default();
        let params: u64 = shapes
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum();
        // On the CPU the weights live in this heap beside other engines' weights.
        if self.budget.weights_inside {
            self.resident = crate::memory::cpu_weight_bytes(shapes.iter().map(|(_, s)| &s[..]));
            let held = self.resident + self.others;
            if held > self.budget.total {
                return Err(Error::memory(format!(
                    "loading this pipeline: expected at most {} ({}), found {} (its {params} parameters on the CPU{})",
                    fmt_bytes(self.budget.total),
                    self.budget.what,
                    fmt_bytes(held),
                    if self.others > 0 {
                        format!(", other loaded models {}; dispose them first", fmt_bytes(self.others))
                    } else {
                        String::new()
                    }
                )));
            }
        }
        self.kind = Kind::Pipeline(Box::new(stream));
        Ok(())
    }

    fn tensor(&mut self, entry: &Entry, view: TensorView<'_>) -> Result<()> {
        match &mut self.kind {
            Kind::Pipeline(p) => p.tensor(entry, view),
            _ => Ok(()),
        }
    }
}

/// A model file loaded chunk by chunk onto one backend (initialised first by `initBackend`).
#[wasm_bindgen]
pub struct FileLoader {
    backend: String,
    limits: Limits,
    reader: StreamReader,
    sink: Sink,
    /// The bytes pushed until the header said what the file is; then, for a U-Net model file,
    /// the whole file.
    kept: Vec<u8>,
    hasher: Option<Sha256>,
    /// The error that stopped the load: every later call repeats it.
    failed: Option<(String, String)>,
}

#[wasm_bindgen]
impl FileLoader {
    /// A loader onto `backend` ("webgpu" or "cpu", initialised), within `limits`
    /// (`{ maxBufferSize?, maxStorageBufferBindingSize?, memoryBudget? }` in bytes); `hash`:
    /// whether to compute the SHA-256 of the bytes pushed ([`sha256`](Self::sha256)).
    #[wasm_bindgen(constructor)]
    pub fn new(
        backend: String,
        limits: JsValue,
        hash: bool,
    ) -> std::result::Result<FileLoader, JsValue> {
        let limits = parse_limits(limits)?;
        let device = initialised_device(&backend)?;
        let budget = budget_for(&backend, &limits)?;
        Ok(FileLoader {
            backend,
            limits,
            reader: StreamReader::new(),
            sink: Sink {
                kind: Kind::Unknown,
                device,
                budget,
                others: RESIDENT.with(Cell::get),
                resident: 0,
            },
            kept: Vec::new(),
            hasher: hash.then(Sha256::new),
            failed: None,
        })
    }

    /// Takes the next bytes of the file: parses the header once complete, uploads each tensor
    /// of a pipeline file whose bytes are all in.
    pub fn push(&mut self, chunk: &[u8]) -> std::result::Result<(), JsValue> {
        if let Some((name, message)) = &self.failed {
            return Err(js_error_named(name, message));
        }
        let result = self.take(chunk);
        if let Err(e) = &result {
            let e: &js_sys::Error = e.unchecked_ref();
            self.failed = Some((String::from(e.name()), String::from(e.message())));
            // What was uploaded so far is freed now, not when JS drops the loader.
            self.sink.kind = Kind::Model;
            self.kept = Vec::new();
        }
        result
    }

    fn take(&mut self, chunk: &[u8]) -> std::result::Result<(), JsValue> {
        if let Some(h) = &mut self.hasher {
            h.update(chunk);
        }
        if matches!(self.sink.kind, Kind::Model) {
            let max = max_model_bytes() as u64;
            if chunk.len() as u64 > max {
                return Err(err(Error::memory(format!(
                    "the model file: expected at most {} more bytes (what the wasm heap can take), found {} more ({} received so far)",
                    max,
                    chunk.len(),
                    self.kept.len()
                ))));
            }
            self.kept.extend_from_slice(chunk);
            return Ok(());
        }
        if matches!(self.sink.kind, Kind::Unknown) {
            // Until the header is in (at most 100 MB); dropped once it says "pipeline".
            self.kept.extend_from_slice(chunk);
        }
        self.reader.push(chunk, &mut self.sink).map_err(err)?;
        if matches!(self.sink.kind, Kind::Pipeline(_)) {
            self.kept = Vec::new();
        }
        Ok(())
    }

    /// "pipeline" or "model" once the header has been read; undefined before.
    #[wasm_bindgen(getter)]
    pub fn kind(&self) -> Option<String> {
        match self.sink.kind {
            Kind::Unknown => None,
            Kind::Pipeline(_) => Some("pipeline".into()),
            Kind::Model => Some("model".into()),
        }
    }

    /// Bytes pushed so far.
    #[wasm_bindgen(getter)]
    pub fn received(&self) -> f64 {
        match self.sink.kind {
            Kind::Model => self.kept.len() as f64,
            _ => self.reader.received() as f64,
        }
    }

    /// The file's size as its header says, once read (a pipeline file).
    #[wasm_bindgen(getter, js_name = expectedBytes)]
    pub fn expected_bytes(&self) -> Option<f64> {
        match self.sink.kind {
            Kind::Pipeline(_) => self.reader.expected_len().map(|n| n as f64),
            _ => None,
        }
    }

    /// The SHA-256 of the bytes pushed so far, as hex (when made with `hash`).
    pub fn sha256(&self) -> Option<String> {
        self.hasher.clone().map(|h| {
            h.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        })
    }

    /// The pipeline engine, once the whole pipeline file has been pushed.
    #[wasm_bindgen(js_name = finishPipeline)]
    pub fn finish_pipeline(self) -> std::result::Result<PipelineEngine, JsValue> {
        if let Some((name, message)) = &self.failed {
            return Err(js_error_named(name, message));
        }
        self.reader.finish().map_err(err)?;
        let Sink {
            kind,
            budget,
            others,
            resident,
            ..
        } = self.sink;
        let Kind::Pipeline(stream) = kind else {
            return Err(err(Error::invalid(
                "finishPipeline: expected a pipeline file, found a U-Net model file (use finishModel)",
            )));
        };
        let mut streamed = stream.finish().map_err(err)?;
        // Runs are checked against what is left of the budget beside other engines' weights.
        let mut run_budget = budget;
        if run_budget.weights_inside {
            run_budget.total = run_budget.total.saturating_sub(others);
        }
        streamed.pipeline = streamed.pipeline.with_budget(run_budget).map_err(err)?;
        PipelineEngine::from_streamed(streamed, self.backend, resident)
    }

    /// The engine of a U-Net model file, once all of it has been pushed.
    #[wasm_bindgen(js_name = finishModel)]
    pub fn finish_model(self) -> std::result::Result<Engine, JsValue> {
        if let Some((name, message)) = &self.failed {
            return Err(js_error_named(name, message));
        }
        match self.sink.kind {
            Kind::Model => Engine::from_bytes(&self.kept, self.backend, &self.limits),
            Kind::Unknown => Err(err(self
                .reader
                .finish()
                .err()
                .unwrap_or_else(|| Error::format("expected a header, found none")))),
            Kind::Pipeline(_) => Err(err(Error::invalid(
                "finishModel: expected a U-Net model file, found a pipeline file (use finishPipeline)",
            ))),
        }
    }
}
