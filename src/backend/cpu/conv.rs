//! Conv2d as one NCHW im2col + GEMM (gemm crate) with the bias folded into the GEMM.

use burn::tensor::Tensor;

use super::gemm::{gemm_indirect, gemm_packed, pack_b_row, packed_b_len, PackedMatrix, NR};
use super::winograd::{self, WinogradWeight};
use super::{from_host, on_cpu_f32, take_host};
use crate::memory::MAX_IM2COL_ELEMS;

/// Geometry of a square-kernel 2-D convolution with (begin, end) zero padding on both axes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeometry {
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) padding: (usize, usize),
}

/// A convolution weight `[c_out, c_in, k, k]` as the CPU kernel takes it: the row-major values
/// (multiplied by the gemm crate, natively) or packed once at load for the browser's GEMM
/// ([`super::gemm`]).
#[derive(Clone, Copy)]
pub(crate) enum ConvWeight<'a> {
    Values(&'a [f32]),
    Packed(&'a PackedMatrix),
    /// A 3x3, stride-1, padding-1 weight as its Winograd transform ([`super::winograd`]).
    Winograd(&'a WinogradWeight),
}

impl ConvWeight<'_> {
    /// Whether this is the weight of `g`'s `[c_out, c_in k k]` GEMM.
    fn fits(&self, g: ConvGeometry) -> bool {
        let kk = g.c_in * g.kernel * g.kernel;
        match self {
            ConvWeight::Values(v) => v.len() == g.c_out * kk,
            ConvWeight::Packed(p) => p.rows() == g.c_out && p.cols() == kk,
            ConvWeight::Winograd(w) => {
                w.c_out() == g.c_out
                    && w.c_in() == g.c_in
                    && g.kernel == 3
                    && g.stride == 1
                    && g.padding == (1, 1)
            }
        }
    }
}

/// The weight of the im2col path of [`conv2d`] (every weight but a Winograd one).
#[derive(Clone, Copy)]
enum Im2colWeight<'a> {
    Values(&'a [f32]),
    Packed(&'a PackedMatrix),
}

/// Whether [`conv2d`] runs on `x` with the weight and bias `weight`, `bias` and geometry `g`: an
/// f32 flex tensor with `g.c_in` channels and at least one kernel-sized window, and parameters
/// of the sizes `g` implies (what makes the GEMM's reads safe).
pub(crate) fn conv2d_applies(
    x: &Tensor<4>,
    weight: ConvWeight,
    bias: &[f32],
    g: ConvGeometry,
) -> bool {
    let [_, c_in, h, w] = x.dims();
    let (pb, pe) = g.padding;
    on_cpu_f32(x)
        && c_in == g.c_in
        && weight.fits(g)
        && bias.len() == g.c_out
        && g.kernel != 0
        && g.stride != 0
        && h + pb + pe >= g.kernel
        && w + pb + pe >= g.kernel
}

/// `torch.nn.Conv2d` on a flex tensor `[B, c_in, H, W]` ([`conv2d_applies`]) with the weight
/// `[c_out, c_in, k, k]` and the host values of the bias `[c_out]`.
pub(crate) fn conv2d(x: Tensor<4>, weight: ConvWeight, bias: &[f32], g: ConvGeometry) -> Tensor<4> {
    let [b, c_in, h, w] = x.dims();
    let ConvGeometry {
        c_out,
        kernel: k,
        stride: s,
        padding: (pb, pe),
        ..
    } = g;
    assert!(
        weight.fits(g) && bias.len() == c_out,
        "conv2d: parameter sizes checked by conv2d_applies"
    );
    let oh = (h + pb + pe - k) / s + 1;
    let ow = (w + pb + pe - k) / s + 1;
    let p = oh * ow;
    let kk = c_in * k * k;
    let pointwise = k == 1 && s == 1 && pb == 0 && pe == 0;
    let weight = match weight {
        ConvWeight::Winograd(wt) => return winograd::conv2d(x, wt, bias),
        ConvWeight::Packed(a) if s == 1 && oh == h && ow == w && w % NR == 0 => {
            return conv2d_indirect(x, a, bias, g);
        }
        ConvWeight::Packed(a) => Im2colWeight::Packed(a),
        ConvWeight::Values(v) => Im2colWeight::Values(v),
    };
    // The patch matrix is bounded: above MAX_IM2COL_ELEMS it is built and multiplied in bands
    // of output rows (a 256x256 layer on 256 channels would otherwise take 600 MB of scratch).
    let band = if pointwise || kk * p <= MAX_IM2COL_ELEMS {
        oh
    } else {
        (MAX_IM2COL_ELEMS / (kk * ow)).clamp(1, oh)
    };
    let run = |v: &[f32]| {
        SCRATCH.with_borrow_mut(|Scratch { col, panels }| {
            // The patch matrix is scratch kept between calls; im2col overwrites all of it.
            let band_p = band * ow;
            // With the gemm crate the whole patch matrix; packed, one row of it at a time
            // (packed at once) and the panels.
            let (col_len, panels_len) = match weight {
                Im2colWeight::Values(_) => (kk * band_p, 0),
                Im2colWeight::Packed(_) => (band_p, packed_b_len(kk, band_p)),
            };
            if !pointwise && col.len() < col_len {
                col.resize(col_len, 0.0);
            }
            if panels.len() < panels_len {
                panels.resize(panels_len, 0.0);
            }
            let mut out: Vec<f32> = Vec::with_capacity(b * c_out * p);
            for xb in v.chunks_exact(c_in * h * w) {
                let ob = push_bias_rows(&mut out, bias, p);
                for oy0 in (0..oh).step_by(band) {
                    let oy1 = (oy0 + band).min(oh);
                    let bp = (oy1 - oy0) * ow;
                    let dst = &mut ob[oy0 * ow..];
                    let patch = Patch {
                        c_in,
                        h,
                        w,
                        k,
                        s,
                        pad: pb,
                        rows: oy0..oy1,
                        ow,
                    };
                    match weight {
                        Im2colWeight::Packed(a) => {
                            if pointwise {
                                for (r, row) in xb.chunks_exact(bp).enumerate() {
                                    pack_b_row(row, r, kk, panels);
                                }
                            } else {
                                let row = &mut col[..bp];
                                for r in 0..kk {
                                    patch.row(xb, r, row);
                                    pack_b_row(row, r, kk, panels);
                                }
                            }
                            gemm_packed(a, panels, bp, dst, p);
                        }
                        Im2colWeight::Values(weight) => {
                            if !pointwise {
                                for (r, row) in col[..kk * bp].chunks_exact_mut(bp).enumerate() {
                                    patch.row(xb, r, row);
                                }
                            }
                            let rhs = if pointwise { xb } else { &col[..kk * bp] };
                            gemm_values(weight, rhs, c_out, kk, bp, dst, p);
                        }
                    }
                }
            }
            out
        })
    };
    let device = x.device();
    let (_, out) = take_host(x, |v| run(v));
    from_host(out, [b, c_out, oh, ow], &device)
}

/// [`conv2d`] with packed weights, stride 1, an output of the input's size (a "same" or 1x1
/// convolution) and a width of whole [`NR`]-pixel panels: an indirect GEMM over the input
/// zero-padded once ([`gemm_indirect`]), so no patch matrix is built or packed. Row `(ci, ky,
/// kx)` of the patch matrix at output pixel `(y, x)` is the padded input at `(ci, y + ky, x +
/// kx)`, so the 8 pixels of a panel (one output row) are 8 consecutive padded values.
fn conv2d_indirect(x: Tensor<4>, a: &PackedMatrix, bias: &[f32], g: ConvGeometry) -> Tensor<4> {
    let [b, c_in, h, w] = x.dims();
    let ConvGeometry {
        c_out,
        kernel: k,
        padding: (pb, pe),
        ..
    } = g;
    let (hp, wp) = (h + pb + pe, w + pb + pe);
    let p = h * w;
    let padded = pb + pe > 0;
    // Offsets of the patch matrix's rows in the (padded) input, bases of its 8-pixel panels.
    let offsets: Vec<usize> = (0..c_in * k * k)
        .map(|r| {
            let (ci, ky, kx) = (r / (k * k), r / k % k, r % k);
            ci * hp * wp + ky * wp + kx
        })
        .collect();
    let bases: Vec<usize> = (0..p / NR)
        .map(|j| {
            let (y, x0) = (j / (w / NR), j % (w / NR) * NR);
            y * wp + x0
        })
        .collect();
    let run = |v: &[f32]| {
        SCRATCH.with_borrow_mut(|Scratch { col, .. }| {
            if padded && col.len() < c_in * hp * wp {
                col.resize(c_in * hp * wp, 0.0);
            }
            let mut out: Vec<f32> = Vec::with_capacity(b * c_out * p);
            for xb in v.chunks_exact(c_in * p) {
                let src: &[f32] = if padded {
                    let dst = &mut col[..c_in * hp * wp];
                    dst.fill(0.0);
                    for (ci, plane) in xb.chunks_exact(p).enumerate() {
                        for (y, row) in plane.chunks_exact(w).enumerate() {
                            dst[ci * hp * wp + (y + pb) * wp + pb..][..w].copy_from_slice(row);
                        }
                    }
                    dst
                } else {
                    xb
                };
                let ob = push_bias_rows(&mut out, bias, p);
                gemm_indirect(a, src, &offsets, &bases, ob, p);
            }
            out
        })
    };
    let device = x.device();
    let (_, out) = take_host(x, |v| run(v));
    from_host(out, [b, c_out, h, w], &device)
}

/// Appends one image's output rows, each `p` copies of its channel's bias (written once, no
/// zero-fill: the GEMM adds onto them), and returns them.
fn push_bias_rows<'o>(out: &'o mut Vec<f32>, bias: &[f32], p: usize) -> &'o mut [f32] {
    let start = out.len();
    for &bv in bias {
        out.extend(std::iter::repeat_n(bv, p));
    }
    &mut out[start..]
}

/// `dst += weight @ rhs` with the gemm crate: `weight` `[c_out, kk]`, `rhs` `[kk, bp]` (row
/// stride bp), `dst` `[c_out, bp]` with row stride `p` (a band of the output's rows).
pub(super) fn gemm_values(
    weight: &[f32],
    rhs: &[f32],
    c_out: usize,
    kk: usize,
    bp: usize,
    dst: &mut [f32],
    p: usize,
) {
    assert!(weight.len() == c_out * kk && rhs.len() >= kk * bp);
    assert!(c_out == 0 || dst.len() >= (c_out - 1) * p + bp);
    // SAFETY: lhs is c_out x kk (row stride kk), rhs kk x bp (row stride bp) and dst c_out x bp
    // with row stride p, so its last element is (c_out - 1) p + bp - 1: all inside the slices
    // (asserted above). dst = 1 * dst + 1 * (W @ col): the bias rows plus the convolution.
    unsafe {
        gemm::gemm(
            c_out,
            bp,
            kk,
            dst.as_mut_ptr(),
            1,
            p as isize,
            true,
            weight.as_ptr(),
            1,
            kk as isize,
            rhs.as_ptr(),
            1,
            bp as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// One im2col row of a stride-1 "same" convolution: `row[y w + x] = plane[(y + dy) w + (x + dx)]`,
/// zero where that falls outside the plane. In flat indices this is ONE shifted copy of the
/// plane (offset `dy w + dx`), then the `|dx|` columns that wrapped around from the
/// neighbouring row are zeroed: far fewer, longer copies than one per output row (wasm's
/// `memory.copy` has a high fixed cost per call).
fn same_shift(plane: &[f32], row: &mut [f32], h: usize, w: usize, dy: isize, dx: isize) {
    let n = (h * w) as isize;
    let off = dy * w as isize + dx;
    // Flat destination range whose source index j + off lies inside the plane.
    let lo = (-off).clamp(0, n) as usize;
    let hi = (n - off).clamp(0, n) as usize;
    row[..lo].fill(0.0);
    if lo < hi {
        row[lo..hi]
            .copy_from_slice(&plane[(lo as isize + off) as usize..(hi as isize + off) as usize]);
    }
    row[hi.max(lo)..].fill(0.0);
    // Columns whose source x + dx is outside [0, w) picked up a neighbour row's pixel.
    let (c0, c1) = if dx < 0 {
        (0, (-dx as usize).min(w))
    } else {
        (w.saturating_sub(dx as usize), w)
    };
    if c0 < c1 {
        for r in row.chunks_exact_mut(w) {
            r[c0..c1].fill(0.0);
        }
    }
}

/// Scratch of [`conv2d`], grown to the largest layer and reused: the im2col patch matrix and
/// its packed panels (packed weights only).
#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
    panels: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Frees [`conv2d`]'s scratch.
pub(super) fn release_scratch() {
    SCRATCH.with_borrow_mut(|s| *s = Scratch::default());
}

/// The im2col patch matrix `[c_in k k, |rows| ow]` of one image, for the output rows `rows`
/// (all `oh` of them, or a band); padding is zero.
struct Patch {
    c_in: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    pad: usize,
    rows: std::ops::Range<usize>,
    ow: usize,
}

impl Patch {
    /// Writes row `r` = `(ci, ky, kx)` of the patch matrix of image `x` into `row`.
    fn row(&self, x: &[f32], r: usize, row: &mut [f32]) {
        let Patch {
            c_in,
            h,
            w,
            k,
            s,
            pad,
            ow,
            ..
        } = *self;
        let (ci, ky, kx) = (r / (k * k), r / k % k, r % k);
        debug_assert!(ci < c_in && row.len() == self.rows.len() * ow);
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        if s == 1 && ow == w && self.rows.len() == h && self.rows.start == 0 {
            let d = |kv: usize| kv as isize - pad as isize;
            same_shift(plane, row, h, w, d(ky), d(kx));
            return;
        }
        for (i, oy) in self.rows.clone().enumerate() {
            let dst = &mut row[i * ow..(i + 1) * ow];
            let iy = (oy * s + ky) as isize - pad as isize;
            if iy < 0 || iy >= h as isize {
                dst.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * w..(iy as usize + 1) * w];
            if s == 1 {
                // ix = ox + kx - pad: one contiguous run, zeros either side.
                let lo = pad.saturating_sub(kx).min(ow);
                let hi = (w + pad).saturating_sub(kx).clamp(lo, ow);
                dst[..lo].fill(0.0);
                if lo < hi {
                    dst[lo..hi].copy_from_slice(&src[lo + kx - pad..hi + kx - pad]);
                }
                dst[hi..].fill(0.0);
            } else {
                for (ox, d) in dst.iter_mut().enumerate() {
                    let ix = (ox * s + kx) as isize - pad as isize;
                    *d = if ix < 0 || ix >= w as isize {
                        0.0
                    } else {
                        src[ix as usize]
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn conv2d_matches_the_generic_op() {
        use burn::tensor::module::conv2d as generic_conv2d;
        use burn::tensor::ops::ConvOptions;
        let device = Device::flex();
        let value = crate::backend::cpu::test_value;
        // (c_in, c_out, k, stride, padding, h, w): the shapes UNet2DModel uses (3x3 same, 1x1,
        // stride-2 downsample with symmetric and asymmetric padding) on odd and even sizes.
        for (c_in, c_out, k, s, pad, h, w) in [
            (3, 8, 3, 1, (1, 1), 9, 7),
            (8, 5, 1, 1, (0, 0), 6, 6),
            (6, 6, 3, 2, (1, 1), 8, 8),
            (6, 4, 3, 2, (0, 1), 9, 8),
            (4, 4, 3, 1, (1, 1), 1, 1),
            (3, 2, 5, 1, (2, 2), 4, 6),
            (2, 3, 3, 1, (1, 1), 2, 2),
            // Winograd: channels over several GEMM tiles, odd sizes (a ragged last row and column
            // of 2x2 tiles), more tiles than one chunk.
            (19, 13, 3, 1, (1, 1), 7, 9),
            (40, 72, 3, 1, (1, 1), 16, 16),
            // Widths of whole 8-pixel panels: the indirect GEMM over the padded input (packed
            // weights), 3x3 and 5x5, a single row, 1x1, output channels beyond one 4-row tile.
            (8, 5, 1, 1, (0, 0), 2, 8),
            (3, 5, 3, 1, (1, 1), 5, 16),
            (2, 9, 5, 1, (2, 2), 3, 8),
            (4, 6, 3, 1, (1, 1), 1, 24),
            // Patch matrices above MAX_IM2COL_ELEMS: built in bands of output rows (the last
            // band shorter), same-padded and strided.
            (64, 4, 3, 1, (1, 1), 130, 128),
            (96, 4, 3, 2, (0, 1), 200, 198),
        ] {
            let b = 2;
            let x: Vec<f32> = (0..b * c_in * h * w).map(|i| value(i, 997)).collect();
            let wt: Vec<f32> = (0..c_out * c_in * k * k)
                .map(|i| value(i + 5, 991))
                .collect();
            let bias: Vec<f32> = (0..c_out).map(|i| value(i + 11, 983)).collect();
            let xt = Tensor::<4>::from_data(TensorData::new(x, [b, c_in, h, w]), &device);
            let want = generic_conv2d(
                xt.clone(),
                Tensor::from_data(TensorData::new(wt.clone(), [c_out, c_in, k, k]), &device),
                Some(Tensor::from_data(
                    TensorData::new(bias.clone(), [c_out]),
                    &device,
                )),
                ConvOptions::new_with_padding([s, s], [pad, pad], [1, 1], 1),
            );
            let want_dims = want.dims();
            let g = ConvGeometry {
                c_in,
                c_out,
                kernel: k,
                stride: s,
                padding: pad,
            };
            let want = want.into_data().try_into_vec::<f32>().unwrap();
            let packed = PackedMatrix::pack(&wt, c_out, c_in * k * k);
            let winograd: Vec<WinogradWeight> = if k == 3 {
                [false, true]
                    .map(|p| WinogradWeight::new(&wt, c_out, c_in, p))
                    .into()
            } else {
                vec![]
            };
            let mut weights = vec![ConvWeight::Values(&wt), ConvWeight::Packed(&packed)];
            if k == 3 && s == 1 && pad == (1, 1) {
                weights.extend(winograd.iter().map(ConvWeight::Winograd));
            } else if let Some(w) = winograd.first() {
                // A Winograd weight is refused where it does not apply (stride 2, other padding).
                assert!(!conv2d_applies(&xt, ConvWeight::Winograd(w), &bias, g));
            }
            for weight in weights {
                assert!(
                    conv2d_applies(&xt, weight, &bias, g),
                    "fast path refused {g:?}"
                );
                let got = conv2d(xt.clone(), weight, &bias, g);
                assert_eq!(got.dims()[..], want_dims[..], "{g:?}");
                let got = got.into_data().try_into_vec::<f32>().unwrap();
                let worst = crate::backend::cpu::max_abs_diff(&got, &want);
                let winograd = matches!(weight, ConvWeight::Winograd(_));
                assert!(
                    worst < if winograd { 2e-5 } else { 1e-5 },
                    "{g:?} {h}x{w} (winograd: {winograd}): max |diff| {worst:e}"
                );
            }
            // A weight of the wrong size is refused.
            let short = PackedMatrix::pack(&wt[..c_in * k * k], 1, c_in * k * k);
            assert!(c_out == 1 || !conv2d_applies(&xt, ConvWeight::Packed(&short), &bias, g));
        }
    }
}
