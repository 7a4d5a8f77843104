//! Weight quantization: f16, int8 (symmetric, per output channel) and int4 (symmetric,
//! group-wise along each output channel's inputs, two values per byte).
//!
//! A weight `[out, ...]` is viewed as `out` rows of `k = numel / out` values.
//! - int8: `q = round(w / s)`, `s = max|row| / 127`, q in [-127, 127]; scale tensor `[out]`.
//! - int4: rows are cut into groups of [`INT4_GROUP`] values (the last group zero-padded),
//!   `s = max|group| / 7`, q in [-7, 7], stored as `q + 8` in a nibble, the even element in
//!   the low nibble; packed tensor `[out, groups * INT4_GROUP / 2]` (U8), scales `[out, groups]`.
//!
//! Dequantization is `w = q * s` in f32.

use half::f16;

use std::collections::BTreeSet;

use super::container::{Container, Dtype, OwnedTensor, TensorView};
use super::SCALE_SUFFIX;
use crate::error::{Error, Result};

/// Values per int4 group.
pub const INT4_GROUP: usize = 32;

/// How a model file stores its large weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    F32,
    F16,
    Int8,
    Int4,
}

impl Quant {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "f32" => Self::F32,
            "f16" => Self::F16,
            "int8" => Self::Int8,
            "int4" => Self::Int4,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Int8 => "int8",
            Self::Int4 => "int4",
        }
    }
}

pub(crate) fn to_f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

/// int8 per-row quantization of `rows x k` values: `(q, scales)`.
pub fn quantize_int8(values: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    if rows == 0 || values.len() < rows {
        return (Vec::new(), Vec::new()); // no values to quantize (a dimension of size 0)
    }
    let k = values.len() / rows;
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(rows);
    for row in values.chunks_exact(k) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if max > 0.0 { max / 127.0 } else { 1.0 };
        scales.push(s);
        q.extend(
            row.iter()
                .map(|v| (v / s).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

pub fn dequantize_int8(q: &[i8], scales: &[f32]) -> Vec<f32> {
    let k = q.len() / scales.len().max(1);
    q.chunks_exact(k.max(1))
        .zip(scales)
        .flat_map(|(row, &s)| row.iter().map(move |&v| v as f32 * s))
        .collect()
}

/// Number of int4 groups per row of `k` values.
pub(crate) fn int4_groups(k: usize) -> usize {
    k.div_ceil(INT4_GROUP)
}

/// int4 group-wise quantization of `rows x k` values: `(packed bytes, scales [rows, groups])`.
pub fn quantize_int4(values: &[f32], rows: usize) -> (Vec<u8>, Vec<f32>) {
    if rows == 0 || values.len() < rows {
        return (Vec::new(), Vec::new()); // no values to quantize (a dimension of size 0)
    }
    let k = values.len() / rows;
    let groups = int4_groups(k);
    let padded = groups * INT4_GROUP;
    let mut packed = Vec::with_capacity(rows * padded / 2);
    let mut scales = Vec::with_capacity(rows * groups);
    let mut nibbles = vec![0u8; padded];
    for row in values.chunks_exact(k) {
        nibbles.iter_mut().for_each(|n| *n = 8); // padding stores q = 0
        for (g, group) in row.chunks(INT4_GROUP).enumerate() {
            let max = group.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / 7.0 } else { 1.0 };
            scales.push(s);
            for (j, v) in group.iter().enumerate() {
                nibbles[g * INT4_GROUP + j] = ((v / s).round().clamp(-7.0, 7.0) as i32 + 8) as u8;
            }
        }
        packed.extend(nibbles.chunks_exact(2).map(|p| p[0] | (p[1] << 4)));
    }
    (packed, scales)
}

/// Inverse of [`quantize_int4`] for `rows x k` values.
pub fn dequantize_int4(packed: &[u8], scales: &[f32], rows: usize, k: usize) -> Vec<f32> {
    let groups = int4_groups(k);
    let row_bytes = groups * INT4_GROUP / 2;
    let mut out = Vec::with_capacity(rows * k);
    for r in 0..rows {
        let bytes = &packed[r * row_bytes..(r + 1) * row_bytes];
        let s = &scales[r * groups..(r + 1) * groups];
        for j in 0..k {
            let b = bytes[j / 2];
            let nib = if j % 2 == 0 { b & 0x0f } else { b >> 4 };
            out.push((nib as i32 - 8) as f32 * s[j / INT4_GROUP]);
        }
    }
    out
}

/// Error summary of one quantized tensor against its f32 original.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuantError {
    pub max_abs: f32,
    /// `||w - w_q|| / ||w||`
    pub rel_rms: f32,
}

pub fn quant_error(original: &[f32], restored: &[f32]) -> QuantError {
    let mut max_abs = 0f32;
    let (mut num, mut den) = (0f64, 0f64);
    for (a, b) in original.iter().zip(restored) {
        let d = (a - b).abs();
        max_abs = max_abs.max(d);
        num += (d as f64).powi(2);
        den += (*a as f64).powi(2);
    }
    QuantError {
        max_abs,
        rel_rms: if den > 0.0 {
            (num / den).sqrt() as f32
        } else {
            0.0
        },
    }
}

/// Stored shapes of a quantized tensor of logical `shape`: (values, scales).
pub(crate) fn stored_shapes(dtype: Dtype, shape: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
    if shape.len() < 2 {
        return None;
    }
    let rows = shape[0];
    let k: usize = shape[1..].iter().product();
    match dtype {
        Dtype::I8 => Some((shape.to_vec(), vec![rows])),
        Dtype::U8 => {
            let g = int4_groups(k);
            Some((vec![rows, g * INT4_GROUP / 2], vec![rows, g]))
        }
        _ => None,
    }
}

/// A tensor as a model file stores it: the tensors to write (the values, and their scales when
/// quantized) and the f32 values reading them back gives.
pub struct Packed {
    pub stored: Vec<(String, OwnedTensor)>,
    pub restored: Vec<f32>,
    pub stored_as: &'static str,
}

/// Stores tensor `name` (`values` of logical `shape`) as `quant` says; the inverse of
/// [`unpack`]. Tensors of rank < 2 are never quantized (the caller decides which to keep f32).
pub fn pack(name: &str, shape: &[usize], values: &[f32], quant: Quant) -> Packed {
    let rows = shape.first().copied().unwrap_or(1).max(1);
    let scales_name = format!("{name}{SCALE_SUFFIX}");
    let raw = |dtype, shape: Vec<usize>, data| OwnedTensor { dtype, shape, data };
    match (quant, stored_shapes(Dtype::U8, shape)) {
        (Quant::F16, _) => Packed {
            stored: vec![(
                name.to_string(),
                raw(Dtype::F16, shape.to_vec(), to_f16_bytes(values)),
            )],
            restored: values.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
            stored_as: "f16",
        },
        (Quant::Int8, Some(_)) => {
            let (q, s) = quantize_int8(values, rows);
            Packed {
                restored: dequantize_int8(&q, &s),
                stored: vec![
                    (
                        name.to_string(),
                        raw(
                            Dtype::I8,
                            shape.to_vec(),
                            q.iter().map(|&v| v as u8).collect(),
                        ),
                    ),
                    (scales_name, OwnedTensor::f32(vec![rows], &s)),
                ],
                stored_as: "int8",
            }
        }
        (Quant::Int4, Some((packed_shape, scales_shape))) => {
            let (packed, s) = quantize_int4(values, rows);
            Packed {
                restored: dequantize_int4(&packed, &s, rows, values.len() / rows),
                stored: vec![
                    (name.to_string(), raw(Dtype::U8, packed_shape, packed)),
                    (scales_name, OwnedTensor::f32(scales_shape, &s)),
                ],
                stored_as: "int4",
            }
        }
        // f32, and int8 / int4 asked of a vector (no rows to quantize).
        _ => Packed {
            stored: vec![(name.to_string(), OwnedTensor::f32(shape.to_vec(), values))],
            restored: values.to_vec(),
            stored_as: "f32",
        },
    }
}

/// The f32 values of a stored tensor of logical `shape`; `scales` are its scale tensor's
/// values when it is quantized (int8 `I8`, int4 packed `U8`). The inverse of [`pack`].
pub fn unpack(
    name: &str,
    view: &TensorView<'_>,
    scales: Option<&[f32]>,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let rows = shape.first().copied().unwrap_or(1).max(1);
    let k = shape.iter().product::<usize>() / rows;
    match (view.dtype, scales) {
        (Dtype::I8, Some(s)) => {
            let q: Vec<i8> = view.data.iter().map(|&b| b as i8).collect();
            Ok(dequantize_int8(&q, s))
        }
        (Dtype::U8, Some(s)) => Ok(dequantize_int4(view.data, s, rows, k)),
        (Dtype::I8 | Dtype::U8, None) => Err(Error::format(format!(
            "tensor `{name}`: expected scales `{name}{SCALE_SUFFIX}`, found none"
        ))),
        _ => view.to_f32(name),
    }
}

/// Checks that `container` holds exactly the `expected` tensors (name, logical shape), each
/// stored in a dtype and packed shape this crate reads ([`pack`]), with its scales where
/// quantized; `source` says where the list comes from (e.g. "the model config").
pub fn check_stored(
    container: &Container<'_>,
    expected: &[(String, Vec<usize>)],
    source: &str,
) -> Result<()> {
    // 1. Each expected tensor, in a dtype and shape that match the config.
    let mut used: BTreeSet<String> = BTreeSet::new();
    for (name, shape) in expected {
        let view = container.expect(name, shape, source)?;
        used.insert(name.clone());
        match view.dtype {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => {
                if &view.shape != shape {
                    return Err(Error::format(format!(
                        "tensor `{name}`: expected shape {shape:?} (from the config), found {:?}",
                        view.shape
                    )));
                }
            }
            Dtype::I8 | Dtype::U8 => {
                used.insert(check_quantized(container, name, shape, view)?);
            }
            Dtype::I64 => {
                return Err(Error::format(format!(
                    "tensor `{name}`: expected F32, F16, BF16, I8 or U8, found I64"
                )))
            }
        }
    }
    // 2. Nothing else.
    container.only(&used, source)
}

/// Quantized tensor `name` (logical `shape`, stored as `view`): its packed shape, and its
/// scales, present and F32 of the shape the quantization implies. Returns the scales' name.
fn check_quantized(
    container: &Container<'_>,
    name: &str,
    shape: &[usize],
    view: &TensorView<'_>,
) -> Result<String> {
    let scale_name = format!("{name}{SCALE_SUFFIX}");
    let scale = container.get(&scale_name).ok_or_else(|| {
        Error::format(format!(
            "tensor `{name}` is quantized ({}), expected its scales `{scale_name}`, found none",
            view.dtype.name()
        ))
    })?;
    let (packed, scales) = stored_shapes(view.dtype, shape).ok_or_else(|| {
        Error::format(format!(
            "tensor `{name}`: expected a float dtype for a tensor of shape {shape:?}, found {}",
            view.dtype.name()
        ))
    })?;
    if view.shape != packed {
        return Err(Error::format(format!(
            "tensor `{name}`: expected {} shape {packed:?} for logical shape {shape:?}, found {:?}",
            view.dtype.name(),
            view.shape
        )));
    }
    if scale.dtype != Dtype::F32 || scale.shape != scales {
        return Err(Error::format(format!(
            "tensor `{scale_name}`: expected F32 {scales:?}, found {} {:?}",
            scale.dtype.name(),
            scale.shape
        )));
    }
    Ok(scale_name)
}

/// The f32 values of stored tensor `name` (logical `shape`), dequantized if needed.
pub fn read_f32(container: &Container<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let view = container.get(name).ok_or_else(|| {
        Error::format(format!(
            "tensor `{name}`: expected in the file, found missing"
        ))
    })?;
    let scales = match view.dtype {
        Dtype::I8 | Dtype::U8 => Some(
            container
                .get(&format!("{name}{SCALE_SUFFIX}"))
                .ok_or_else(|| {
                    Error::format(format!(
                        "tensor `{name}`: expected scales `{name}{SCALE_SUFFIX}`, found none"
                    ))
                })?
                .to_f32(name)?,
        ),
        _ => None,
    };
    unpack(name, view, scales.as_deref(), shape)
}
