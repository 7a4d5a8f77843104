//! Reading a safetensors file as its bytes arrive (a download), without ever holding the whole
//! file: the header is parsed and handed over as soon as it is complete, then each tensor as
//! soon as its last byte has arrived. At most one tensor's bytes are buffered (none when a
//! tensor lies inside one chunk). [`DeviceTensors`] is the sink that dequantizes each tensor and
//! uploads it to the device on arrival, and then serves the model's `load` as a
//! [`TensorSource`].

use std::collections::HashMap;

use burn::tensor::{Device, Tensor, TensorData};

use super::container::{header_len, Entry, Header, TensorView};
use super::quant;
use super::{Dtype, TensorSource, SCALE_SUFFIX};
use crate::error::{Error, Result};
use crate::memory::fmt_bytes;

/// What a [`StreamReader`] hands over as the file arrives.
pub trait StreamSink {
    /// The header, before any tensor.
    fn header(&mut self, header: &Header) -> Result<()>;
    /// One tensor, whole, in the order of the file's data section.
    fn tensor(&mut self, entry: &Entry, view: TensorView<'_>) -> Result<()>;
}

/// A safetensors file read chunk by chunk.
#[derive(Default)]
pub struct StreamReader {
    /// The length field and the header, until the header is complete.
    head: Vec<u8>,
    header: Option<Header>,
    /// The next tensor to complete (an index into the header's entries).
    next: usize,
    /// The bytes of that tensor received so far, when it spans chunks.
    partial: Vec<u8>,
    received: u64,
}

impl StreamReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes pushed so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The header, once its bytes have arrived.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// The file's size, once the header says it.
    pub fn expected_len(&self) -> Option<u64> {
        self.header
            .as_ref()
            .map(|h| (self.head.len() + h.data_len()) as u64)
    }

    /// Takes the next chunk of the file, handing `sink` the header and each tensor completed.
    pub fn push(&mut self, mut chunk: &[u8], sink: &mut impl StreamSink) -> Result<()> {
        self.received += chunk.len() as u64;
        if self.header.is_none() {
            chunk = self.read_header(chunk, sink)?;
            if self.header.is_none() {
                return Ok(());
            }
        }
        let header = self.header.as_ref().expect("read above");
        loop {
            let Some(entry) = header.entries.get(self.next) else {
                if chunk.is_empty() {
                    return Ok(());
                }
                return Err(Error::format(format!(
                    "expected the file to end after {} bytes (its header's last tensor), found more",
                    self.head.len() + header.data_len()
                )));
            };
            let want = entry.byte_len() - self.partial.len();
            if self.partial.is_empty() && chunk.len() >= want {
                // The whole tensor lies in this chunk: no copy.
                let (bytes, rest) = chunk.split_at(want);
                sink.tensor(entry, view(entry, bytes))?;
                chunk = rest;
            } else if chunk.len() >= want {
                let (bytes, rest) = chunk.split_at(want);
                self.partial.extend_from_slice(bytes);
                let bytes = std::mem::take(&mut self.partial);
                sink.tensor(entry, view(entry, &bytes))?;
                chunk = rest;
            } else {
                if self.partial.capacity() < entry.byte_len() {
                    // One allocation of the tensor's size, not a series of doublings.
                    self.partial
                        .reserve_exact(entry.byte_len() - self.partial.len());
                }
                self.partial.extend_from_slice(chunk);
                return Ok(());
            }
            self.next += 1;
        }
    }

    /// Checks that the whole file has arrived.
    pub fn finish(&self) -> Result<()> {
        let Some(header) = &self.header else {
            return Err(Error::format(format!(
                "expected a safetensors header, found the file ending after {} bytes (truncated or not a safetensors file)",
                self.received
            )));
        };
        let expected = (self.head.len() + header.data_len()) as u64;
        if self.next < header.entries.len() {
            return Err(Error::format(format!(
                "file truncated: expected {expected} bytes (its header's tensors), found {} (tensor `{}` incomplete)",
                self.received, header.entries[self.next].name
            )));
        }
        Ok(())
    }

    /// Collects the length field and header from the front of `chunk`; returns the rest.
    fn read_header<'c>(&mut self, chunk: &'c [u8], sink: &mut impl StreamSink) -> Result<&'c [u8]> {
        let need = |head: &[u8]| -> Result<usize> {
            Ok(if head.len() < 8 {
                8
            } else {
                8 + header_len(head[..8].try_into().expect("8 bytes"))?
            })
        };
        let mut chunk = chunk;
        while self.head.len() < need(&self.head)? {
            if chunk.is_empty() {
                return Ok(chunk);
            }
            let take = (need(&self.head)? - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
        }
        let header = Header::parse(&self.head[8..], None)?;
        sink.header(&header)?;
        self.header = Some(header);
        Ok(chunk)
    }
}

fn view<'b>(entry: &Entry, bytes: &'b [u8]) -> TensorView<'b> {
    TensorView {
        dtype: entry.dtype,
        shape: entry.shape.clone(),
        data: bytes,
    }
}

/// Most values dequantized into the heap at once before going to the device: 4 Mi values
/// (16 MiB of f32). A larger tensor goes up in parts joined on the device.
pub const UPLOAD_CHUNK_VALUES: usize = 1 << 22;

/// The sink of a streamed model's tensors: puts each one on `device` as f32 as soon as it (and its scales,
/// when quantized) has arrived, then serves a model's `load` ([`TensorSource`]). The heap holds
/// at most one stored tensor and [`UPLOAD_CHUNK_VALUES`] dequantized values at a time (beside a
/// quantized tensor whose scales come later in the file, which the project's files never do).
pub struct DeviceTensors {
    device: Device,
    /// Logical shape of every tensor the model asks for.
    expected: HashMap<String, Vec<usize>>,
    /// Scales that arrived before their tensor.
    scales: HashMap<String, Vec<f32>>,
    /// Quantized tensors whose scales have not arrived yet: (dtype, stored shape, bytes).
    waiting: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    ready: HashMap<String, Tensor<1>>,
    chunk_values: usize,
}

impl DeviceTensors {
    /// For a model whose tensors are `expected` (name, logical shape), on `device`, refusing any
    /// tensor over `largest_buffer` bytes as f32 (`what` names that limit).
    pub fn new(
        expected: &[(String, Vec<usize>)],
        device: &Device,
        largest_buffer: u64,
        what: &'static str,
    ) -> Result<Self> {
        // Checked before a byte of data arrives: a refusal costs no download.
        if let Some((name, shape)) = expected
            .iter()
            .find(|(_, s)| 4 * s.iter().product::<usize>() as u64 > largest_buffer)
        {
            return Err(Error::memory(format!(
                "tensor `{name}` {shape:?}: expected at most {} per buffer ({what}), found {} as f32",
                fmt_bytes(largest_buffer),
                fmt_bytes(4 * shape.iter().product::<usize>() as u64)
            )));
        }
        Ok(Self {
            device: device.clone(),
            expected: expected.iter().cloned().collect(),
            scales: HashMap::new(),
            waiting: HashMap::new(),
            ready: HashMap::new(),
            chunk_values: UPLOAD_CHUNK_VALUES,
        })
    }

    /// Uploads in parts of at most `values` (tests use small parts to exercise the joining).
    pub fn with_chunk_values(mut self, values: usize) -> Self {
        self.chunk_values = values.max(1);
        self
    }

    /// Tensors on the device not yet taken by the model.
    pub fn pending(&self) -> usize {
        self.ready.len()
    }

    /// Dequantizes `view` (tensor `name`, logical `shape`) part by part onto the device.
    fn upload(&mut self, name: &str, view: &TensorView<'_>, scales: Option<&[f32]>) -> Result<()> {
        let shape = &self.expected[name];
        let numel: usize = shape.iter().product();
        let rows = shape.first().copied().unwrap_or(1).max(1);
        let k = numel / rows;
        let per = (self.chunk_values / k.max(1)).max(1);
        // Bytes of one stored row, and scales per row.
        let (row_bytes, row_scales) = match (view.dtype, scales) {
            (Dtype::I8, Some(_)) => (k, 1),
            (Dtype::U8, Some(s)) => (view.data.len() / rows, s.len() / rows),
            _ => (k * view.dtype.size(), 0),
        };
        let mut parts = Vec::with_capacity(rows.div_ceil(per));
        for r0 in (0..rows).step_by(per) {
            let r1 = (r0 + per).min(rows);
            let mut part_shape = shape.clone();
            if part_shape.is_empty() {
                part_shape.push(1);
            }
            part_shape[0] = r1 - r0;
            let stored_shape = match view.dtype {
                Dtype::U8 => vec![r1 - r0, row_bytes],
                _ => part_shape.clone(),
            };
            let part = TensorView {
                dtype: view.dtype,
                shape: stored_shape,
                data: &view.data[r0 * row_bytes..r1 * row_bytes],
            };
            let part_scales = scales.map(|s| &s[r0 * row_scales..r1 * row_scales]);
            let values = quant::unpack(name, &part, part_scales, &part_shape)?;
            let n = values.len();
            parts.push(Tensor::<1>::from_data(
                TensorData::new(values, [n]),
                &self.device,
            ));
            // Hand the upload to the device now: a backend that queues operations (burn's
            // fusion on wgpu) would otherwise keep every part's host copy until the queue
            // runs, i.e. much of a file in the heap (measured in Chromium: +212 MiB for one
            // 202 MiB tensor, +130 MiB over the VAE's f16 tensors).
            self.device.flush().map_err(|e| {
                Error::backend(format!(
                    "uploading tensor `{name}`: expected the device to take it, found {e:?}"
                ))
            })?;
        }
        let tensor = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(parts, 0)
        };
        self.ready.insert(name.to_string(), tensor);
        Ok(())
    }
}

impl DeviceTensors {
    /// Takes tensor `entry` of the file whose header the caller has checked
    /// (`quant::check_stored` over `Container::header_only`): uploads it, or keeps it (or its
    /// scales) until its other half arrives.
    pub fn tensor(&mut self, entry: &Entry, view: TensorView<'_>) -> Result<()> {
        let name = entry.name.as_str();
        if self.expected.contains_key(name) {
            return match view.dtype {
                Dtype::I8 | Dtype::U8 => match self.scales.remove(name) {
                    Some(s) => self.upload(name, &view, Some(&s)),
                    None => {
                        self.waiting.insert(
                            name.to_string(),
                            (view.dtype, view.shape.clone(), view.data.to_vec()),
                        );
                        Ok(())
                    }
                },
                _ => self.upload(name, &view, None),
            };
        }
        let Some(base) = name.strip_suffix(SCALE_SUFFIX) else {
            return Err(Error::format(format!(
                "tensor `{name}`: not part of the model its configs describe"
            )));
        };
        let scales = view.to_f32(name)?;
        match self.waiting.remove(base) {
            Some((dtype, shape, data)) => {
                let waited = TensorView {
                    dtype,
                    shape,
                    data: &data,
                };
                self.upload(base, &waited, Some(&scales))
            }
            None => {
                self.scales.insert(base.to_string(), scales);
                Ok(())
            }
        }
    }
}

impl TensorSource for DeviceTensors {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let tensor = self.ready.remove(name).ok_or_else(|| {
            Error::format(format!(
                "tensor `{name}` {shape:?}: expected it uploaded from the file, found none"
            ))
        })?;
        let numel: usize = shape.iter().product();
        if tensor.dims()[0] != numel {
            return Err(Error::format(format!(
                "tensor `{name}`: expected {numel} values for shape {shape:?}, found {}",
                tensor.dims()[0]
            )));
        }
        Ok(tensor.reshape(shape))
    }
}
