//! Reading the safetensors container (<https://github.com/huggingface/safetensors>) from a
//! byte slice, with every header field checked before anything large is allocated, and every
//! error saying what was expected and what was found. Writing is [`serialize`].
//!
//! Layout: an 8-byte little-endian header length N, N bytes of JSON header
//! `{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`,
//! then the data section, which the tensors must cover exactly, without gaps or overlaps.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::config::shown;
use crate::error::{Error, Result};

/// Largest header accepted (the reference implementation uses the same bound).
pub const MAX_HEADER_BYTES: usize = 100 * 1024 * 1024;
/// Largest rank accepted for a tensor.
pub const MAX_RANK: usize = 8;

/// Element types this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    I8,
    U8,
    I64,
}

impl Dtype {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "I8" => Self::I8,
            "U8" => Self::U8,
            "I64" => Self::I64,
            _ => return None,
        })
    }
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::I8 | Self::U8 => 1,
            Self::I64 => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::I8 => "I8",
            Self::U8 => "U8",
            Self::I64 => "I64",
        }
    }
}

/// One tensor of the container: its type, shape and bytes (borrowed from the input).
#[derive(Debug, Clone)]
pub struct TensorView<'a> {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl TensorView<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32 (F32, F16 and BF16 tensors).
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        let d = self.data;
        Ok(match self.dtype {
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => d
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => d
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::format(format!(
                    "tensor `{name}`: expected a float dtype (F32, F16 or BF16), found {}",
                    other.name()
                )))
            }
        })
    }
}

/// A parsed container: metadata strings and tensor views over the original bytes.
#[derive(Debug, Clone)]
pub struct Container<'a> {
    pub metadata: BTreeMap<String, String>,
    pub tensors: BTreeMap<String, TensorView<'a>>,
}

impl<'a> Container<'a> {
    /// Parses and validates the container. Allocates only the header's own structures.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        // 1. The header length: where the header ends and the data section begins.
        let (header, data) = split_header(bytes)?;
        // 2. The header, its entries checked against the data section.
        let Header { metadata, entries } = Header::parse(header, Some(data.len()))?;
        // 3. A view over the data section for each tensor.
        let tensors = entries
            .into_iter()
            .map(|e| {
                (
                    e.name,
                    TensorView {
                        dtype: e.dtype,
                        shape: e.shape,
                        data: &data[e.begin..e.end],
                    },
                )
            })
            .collect();
        Ok(Self { metadata, tensors })
    }

    /// The container a [`Header`] describes before its data has arrived (a stream): each view
    /// has its dtype and shape but no bytes. For checks that read only those
    /// ([`check_stored`](super::quant::check_stored), [`Container::only`]).
    pub fn header_only(header: &Header) -> Container<'static> {
        Container {
            metadata: header.metadata.clone(),
            tensors: header
                .entries
                .iter()
                .map(|e| {
                    (
                        e.name.clone(),
                        TensorView {
                            dtype: e.dtype,
                            shape: e.shape.clone(),
                            data: &[],
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&TensorView<'a>> {
        self.tensors.get(name)
    }

    /// Tensor `name`, which `source` (e.g. "the model config") says has logical `shape`.
    pub fn expect(&self, name: &str, shape: &[usize], source: &str) -> Result<&TensorView<'a>> {
        self.get(name).ok_or_else(|| {
            Error::format(format!(
                "expected tensor `{name}` {shape:?} (from {source}), found missing"
            ))
        })
    }

    /// Refuses a tensor that is not in `used` (all that `source` describes).
    pub fn only(&self, used: &BTreeSet<String>, source: &str) -> Result<()> {
        match self.tensors.keys().find(|k| !used.contains(*k)) {
            Some(extra) => Err(Error::format(format!(
                "tensor `{extra}`: not part of the model {source} describes (expected {} tensors, found {})",
                used.len(),
                self.tensors.len()
            ))),
            None => Ok(()),
        }
    }
}

/// One tensor's checked header entry: its bytes are `begin..end` of the data section.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub begin: usize,
    pub end: usize,
}

impl Entry {
    /// Bytes of the tensor's data.
    pub fn byte_len(&self) -> usize {
        self.end - self.begin
    }
}

/// A checked header: the metadata, and the tensors' entries in the order of their bytes.
#[derive(Debug, Clone)]
pub struct Header {
    pub metadata: BTreeMap<String, String>,
    pub entries: Vec<Entry>,
}

impl Header {
    /// Parses the header's JSON (the bytes after the length field). The entries must tile a
    /// data section of `data_len` bytes, or, when it is not known yet (a stream), the bytes up
    /// to the end of the last tensor.
    pub fn parse(header: &[u8], data_len: Option<usize>) -> Result<Self> {
        // 1. The header: a JSON object.
        let obj = header_object(header)?;
        // 2. Its entries: `__metadata__`, and one per tensor, each checked on its own.
        let mut metadata = BTreeMap::new();
        let mut entries = Vec::with_capacity(obj.len());
        for (name, entry) in &obj {
            if name == "__metadata__" {
                metadata = parse_metadata(entry)?;
            } else {
                entries.push(parse_entry(name, entry, data_len.unwrap_or(usize::MAX))?);
            }
        }
        // 3. The tensors tile the data section exactly.
        let data_len = data_len.unwrap_or_else(|| entries.iter().map(|e| e.end).max().unwrap_or(0));
        check_tiling(&mut entries, data_len)?;
        Ok(Self { metadata, entries })
    }

    /// Bytes of the data section (the end of the last tensor).
    pub fn data_len(&self) -> usize {
        self.entries.last().map_or(0, |e| e.end)
    }
}

/// The header length field: the header's bytes and the data section after them.
fn split_header(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    if bytes.len() < 8 {
        return Err(Error::format(format!(
            "expected at least 8 bytes (the safetensors header length), found {} bytes",
            bytes.len()
        )));
    }
    let field: [u8; 8] = bytes[..8].try_into().expect("8 bytes");
    let n = u64::from_le_bytes(field);
    let available = (bytes.len() - 8) as u64;
    if n > available {
        return Err(Error::format(format!(
            "header length runs past the end of the file: expected at most {available} bytes after the length field, found {n} (file truncated or not a safetensors file)"
        )));
    }
    Ok(bytes[8..].split_at(header_len(field)?))
}

/// The header length field (the file's first 8 bytes), checked against the bounds.
pub fn header_len(field: [u8; 8]) -> Result<usize> {
    let n = u64::from_le_bytes(field);
    if n > MAX_HEADER_BYTES as u64 {
        return Err(Error::format(format!(
            "header length: expected at most {MAX_HEADER_BYTES} bytes, found {n}"
        )));
    }
    if n < 2 {
        return Err(Error::format(format!(
            "header length: expected at least 2 bytes (`{{}}`), found {n}"
        )));
    }
    Ok(n as usize)
}

/// The header's JSON object (UTF-8, starting with `{`).
fn header_object(header: &[u8]) -> Result<Map<String, Value>> {
    let text = std::str::from_utf8(header).map_err(|e| {
        Error::format(format!(
            "header: expected UTF-8 JSON, found invalid UTF-8 ({e})"
        ))
    })?;
    if !text.starts_with('{') {
        return Err(Error::format(format!(
            "header: expected a JSON object starting with `{{`, found {:?} (not a safetensors file)",
            text.chars().take(16).collect::<String>()
        )));
    }
    let value: Value = serde_json::from_str(text.trim_end()).map_err(|e| {
        Error::format(format!(
            "header: expected valid JSON, found a parse error: {e}"
        ))
    })?;
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err(Error::format(
            "header: expected a JSON object, found another JSON value",
        )),
    }
}

/// The `__metadata__` entry: an object of strings.
fn parse_metadata(entry: &Value) -> Result<BTreeMap<String, String>> {
    let m = entry.as_object().ok_or_else(|| {
        Error::format(
            "header `__metadata__`: expected an object of strings, found another JSON value",
        )
    })?;
    let mut metadata = BTreeMap::new();
    for (k, v) in m {
        let s = v.as_str().ok_or_else(|| {
            Error::format(format!(
                "header `__metadata__.{}`: expected a string, found {}",
                shown(k),
                shown(&v.to_string())
            ))
        })?;
        metadata.insert(k.clone(), s.to_string());
    }
    Ok(metadata)
}

/// Tensor `name`'s entry: its dtype, shape and data_offsets, checked against each other and
/// against the data section (`data_len` bytes).
fn parse_entry(name: &str, entry: &Value, data_len: usize) -> Result<Entry> {
    // 1. An object with a dtype this crate reads.
    let e = entry.as_object().ok_or_else(|| {
        Error::format(format!(
            "tensor `{name}`: expected an object with dtype, shape and data_offsets"
        ))
    })?;
    let dtype_s = e.get("dtype").and_then(Value::as_str).ok_or_else(|| {
        Error::format(format!(
            "tensor `{name}`: expected a string `dtype`, found none"
        ))
    })?;
    let dtype = Dtype::parse(dtype_s).ok_or_else(|| {
        Error::format(format!(
            "tensor `{name}`: expected dtype F32, F16, BF16, I8, U8 or I64, found `{dtype_s}`"
        ))
    })?;
    // 2. The shape.
    let shape = parse_shape(name, e)?;
    // 3. The data_offsets, inside the data section.
    let (begin, end) = parse_offsets(name, e, data_len)?;
    // 4. The offsets span exactly the bytes the dtype and shape need.
    let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let nbytes = numel
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| {
            Error::format(format!(
                "tensor `{name}`: shape {shape:?} overflows the address space"
            ))
        })?;
    if nbytes as u64 != end - begin {
        return Err(Error::format(format!(
            "tensor `{name}`: shape {shape:?} of {} needs {nbytes} bytes, found data_offsets spanning {}",
            dtype.name(),
            end - begin
        )));
    }
    Ok(Entry {
        name: name.to_string(),
        dtype,
        shape,
        begin: begin as usize,
        end: end as usize,
    })
}

/// Tensor `name`'s `shape`: at most [`MAX_RANK`] dimensions, each a `usize`.
fn parse_shape(name: &str, e: &Map<String, Value>) -> Result<Vec<usize>> {
    let shape_v = e.get("shape").and_then(Value::as_array).ok_or_else(|| {
        Error::format(format!(
            "tensor `{name}`: expected a `shape` array, found none"
        ))
    })?;
    if shape_v.len() > MAX_RANK {
        return Err(Error::format(format!(
            "tensor `{name}`: expected rank at most {MAX_RANK}, found {}",
            shape_v.len()
        )));
    }
    let mut shape = Vec::with_capacity(shape_v.len());
    for d in shape_v {
        let d = d.as_u64().ok_or_else(|| {
            Error::format(format!(
                "tensor `{name}`: expected non-negative integer dimensions, found {d}"
            ))
        })?;
        shape.push(usize::try_from(d).map_err(|_| {
            Error::format(format!(
                "tensor `{name}`: dimension {d} does not fit this machine"
            ))
        })?);
    }
    Ok(shape)
}

/// Tensor `name`'s `data_offsets` [begin, end], with begin <= end <= `data_len`.
fn parse_offsets(name: &str, e: &Map<String, Value>, data_len: usize) -> Result<(u64, u64)> {
    let offs = e
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2);
    let offs = offs.ok_or_else(|| {
        Error::format(format!(
            "tensor `{name}`: expected `data_offsets` [begin, end], found none"
        ))
    })?;
    let (Some(begin), Some(end)) = (offs[0].as_u64(), offs[1].as_u64()) else {
        return Err(Error::format(format!(
            "tensor `{name}`: expected integer data_offsets, found {:?}",
            offs
        )));
    };
    if begin > end || end > data_len as u64 {
        return Err(Error::format(format!(
            "tensor `{name}`: data_offsets out of range: expected begin <= end <= {} (the data section), found [{begin}, {end}] (file truncated?)",
            data_len
        )));
    }
    Ok((begin, end))
}

/// The tensors must tile the data section (`data_len` bytes) exactly: no overlap, no gap,
/// nothing left over. Sorts `entries` by their offsets.
fn check_tiling(entries: &mut [Entry], data_len: usize) -> Result<()> {
    entries.sort_by_key(|e| (e.begin, e.end));
    let mut cursor = 0usize;
    for e in entries.iter() {
        let Entry {
            name, begin, end, ..
        } = e;
        if *begin != cursor {
            let what = if *begin < cursor {
                "overlaps the previous tensor"
            } else {
                "leaves a gap"
            };
            return Err(Error::format(format!(
                "tensor `{name}`: data_offsets {what}: expected it to begin at byte {cursor}, found {begin}"
            )));
        }
        cursor = *end;
    }
    if cursor != data_len {
        return Err(Error::format(format!(
            "data section: expected {cursor} bytes (the end of the last tensor), found {} (file truncated or padded)",
            data_len
        )));
    }
    Ok(())
}

/// A tensor to write: dtype, shape and little-endian bytes.
#[derive(Debug, Clone)]
pub struct OwnedTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl OwnedTensor {
    pub fn f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self {
            dtype: Dtype::F32,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// Serializes tensors and metadata into safetensors bytes (readable by Python's `safetensors`).
/// The data section holds the tensors in name order, so a quantized weight's scales
/// (`name.scale`) follow it directly: a reader streaming the file ([`super::stream`]) needs to
/// hold only one weight's bytes until its scales arrive. (The `safetensors` crate orders by dtype,
/// which puts every F32 scale before every weight.) The header is padded with spaces to a
/// multiple of 8 bytes, as that crate does, so the data section stays aligned.
pub fn serialize(
    tensors: &BTreeMap<String, OwnedTensor>,
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            Value::Object(
                metadata
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ),
        );
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        let expected = t.shape.iter().product::<usize>() * t.dtype.size();
        if t.data.len() != expected {
            return Err(Error::format(format!(
                "could not serialize tensor `{name}`: expected {expected} bytes for {} {:?}, found {}",
                t.dtype.name(),
                t.shape,
                t.data.len()
            )));
        }
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "data_offsets": [offset, offset + t.data.len()],
            }),
        );
        offset += t.data.len();
    }
    let mut json = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| Error::format(format!("could not serialize the model file's header: {e}")))?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for t in tensors.values() {
        out.extend_from_slice(&t.data);
    }
    Ok(out)
}
