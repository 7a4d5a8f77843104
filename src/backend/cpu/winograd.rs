//! Conv2d 3x3, stride 1, padding 1 (every resnet and in/out conv of a diffusers U-Net and VAE)
//! as Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2016, "Fast Algorithms for
//! Convolutional Neural Networks", section 4).
//!
//! Why: a direct 3x3 convolution is a GEMM with `9 c_in` multiply-adds per output; with the tile
//! at simd128's bound (no FMA: BENCHMARKS.md "CPU speed with the fair harness") the lever left is
//! fewer multiplies. F(2x2, 3x3) computes each 2x2 block of outputs from a
//! 4x4 input tile with 16 products instead of 36 (2.25x fewer), and the products of all tiles
//! at one of the 16 positions `ξ` are one GEMM: `M_ξ [c_out, tiles] = U_ξ [c_out, c_in] @ V_ξ
//! [c_in, tiles]`. The pieces:
//! - **U** = `G g Gᵀ` for every filter `g`, transformed ONCE at load ([`WinogradWeight::new`];
//!   16/9 of the weight's memory), packed for the browser's GEMM there.
//! - **V** = `Bᵀ d B` for every 4x4 input tile `d` (stride 2, the padding read as zeros),
//!   written straight into the layout the GEMM reads (packed panels in the browser).
//! - **Y** = `Aᵀ M A`: the 2x2 outputs of a tile, plus the bias.
//! - The tiles of every image of the batch are the GEMMs' columns, so a batch is one GEMM per
//!   `ξ` (not one per image), in chunks that keep `V` and `M` in cache.
//!
//! F(2x2, 3x3)'s transforms have entries 0, ±1 and ±1/2 only, so its rounding stays within a few
//! ulp of the direct sum (the larger F(4x4, 3x3) has entries up to ±8 and a larger rounding
//! error); the unit tests hold it within 2e-5 of the direct convolution.

use burn::tensor::Tensor;

use super::conv::gemm_values;
use super::gemm::{copy_panel_row, gemm_packed, packed_b_len, PackedMatrix, NR};
use super::par::{self, Disjoint};
use super::{from_host, take_host};

/// Floats of one chunk's `V` and `M` together: tiles per chunk are chosen to keep both within
/// about 1 MiB (L2), so the transforms' writes are still cached when the GEMMs read them.
const CHUNK_ELEMS: usize = 1 << 18;

/// A 3x3 convolution weight `[c_out, c_in, 3, 3]` as the 16 Winograd matrices `U_ξ = (G g
/// Gᵀ)_ξ`, each `[c_out, c_in]`: row-major for the gemm crate natively, packed for the
/// browser's GEMM ([`super::PACK_WEIGHTS`]).
#[derive(Debug, Clone)]
pub struct WinogradWeight {
    c_out: usize,
    c_in: usize,
    u: Vec<Lhs>,
}

#[derive(Debug, Clone)]
enum Lhs {
    Values(Vec<f32>),
    Packed(PackedMatrix),
}

/// `G` of F(2, 3): a filter `g` (3 taps) to its 4 transformed taps.
fn filter_transform(g: [f32; 3]) -> [f32; 4] {
    [
        g[0],
        0.5 * (g[0] + g[1] + g[2]),
        0.5 * (g[0] - g[1] + g[2]),
        g[2],
    ]
}

/// A left inverse of `G` (`G⁺ G = I`): the filter back from its transform.
fn filter_inverse(u: [f32; 4]) -> [f32; 3] {
    [u[0], u[1] - u[2], u[3]]
}

/// Applies a 1-D transform `f` along both axes of a row-major 2-D tile (`f` on each row, then
/// on each column of the result): `F t Fᵀ`.
#[inline(always)]
fn two_d<const I: usize, const O: usize>(
    t: [[f32; I]; I],
    f: impl Fn([f32; I]) -> [f32; O],
) -> [[f32; O]; O] {
    // Columns first: f over each column gives the rows of F t.
    let cols: [[f32; O]; I] = std::array::from_fn(|c| f(std::array::from_fn(|r| t[r][c])));
    // Then f over each row of F t (a column of `cols`).
    std::array::from_fn(|r| f(std::array::from_fn(|c| cols[c][r])))
}

impl WinogradWeight {
    /// Transforms the row-major weight `[c_out, c_in, 3, 3]`, packed for the browser's GEMM when
    /// `packed`.
    pub fn new(values: &[f32], c_out: usize, c_in: usize, packed: bool) -> Self {
        assert_eq!(values.len(), c_out * c_in * 9, "WinogradWeight::new: size");
        let mut u = vec![vec![0f32; c_out * c_in]; 16];
        for (f, g) in values.chunks_exact(9).enumerate() {
            let g: [[f32; 3]; 3] = std::array::from_fn(|r| std::array::from_fn(|c| g[r * 3 + c]));
            let t = two_d(g, filter_transform);
            for (xi, m) in u.iter_mut().enumerate() {
                m[f] = t[xi / 4][xi % 4];
            }
        }
        let u = u
            .into_iter()
            .map(|m| {
                if packed {
                    Lhs::Packed(PackedMatrix::pack(&m, c_out, c_in))
                } else {
                    Lhs::Values(m)
                }
            })
            .collect();
        Self { c_out, c_in, u }
    }

    /// The row-major weight `[c_out, c_in, 3, 3]` again (for the generic ops where the kernel
    /// does not apply; equal to the original up to the rounding of `G`'s halves).
    pub fn weight(&self) -> Vec<f32> {
        let u: Vec<Vec<f32>> = self
            .u
            .iter()
            .map(|m| match m {
                Lhs::Values(v) => v.clone(),
                Lhs::Packed(p) => p.unpack(),
            })
            .collect();
        let mut out = vec![0f32; self.c_out * self.c_in * 9];
        for (f, g) in out.chunks_exact_mut(9).enumerate() {
            let t: [[f32; 4]; 4] =
                std::array::from_fn(|r| std::array::from_fn(|c| u[r * 4 + c][f]));
            let w = two_d(t, filter_inverse);
            for (i, v) in g.iter_mut().enumerate() {
                *v = w[i / 3][i % 3];
            }
        }
        out
    }

    pub fn c_out(&self) -> usize {
        self.c_out
    }

    pub fn c_in(&self) -> usize {
        self.c_in
    }
}

/// `torch.nn.Conv2d(c_in, c_out, 3, padding=1)` on a flex tensor `[B, c_in, H, W]` (checked by
/// [`super::conv2d_applies`]) with the bias `[c_out]`.
pub(crate) fn conv2d(x: Tensor<4>, w: &WinogradWeight, bias: &[f32]) -> Tensor<4> {
    let [b, c_in, h, wd] = x.dims();
    let c_out = w.c_out;
    assert!(
        c_in == w.c_in && bias.len() == c_out,
        "winograd conv2d: sizes checked by conv2d_applies"
    );
    let grid = Grid {
        h,
        w: wd,
        th: h.div_ceil(2),
        tw: wd.div_ceil(2),
    };
    let tiles = b * grid.th * grid.tw;
    // Tiles per chunk: V and M within CHUNK_ELEMS, whole GEMM panels.
    let mut chunk = (CHUNK_ELEMS / (16 * (c_in + c_out)).max(1) / NR * NR).max(NR);
    // With threads, the chunks are the parts: a whole number of them per thread.
    let parts = par::split(tiles * 16 * c_in * c_out, tiles.div_ceil(NR));
    if parts > 1 {
        let chunks = tiles.div_ceil(chunk).next_multiple_of(parts);
        chunk = tiles.div_ceil(chunks).next_multiple_of(NR);
    }
    let packed = matches!(w.u.first(), Some(Lhs::Packed(_)));
    // One ξ's V for n tiles: [c_in, n] row-major, or packed into NR-column panels.
    let v_len = |n: usize| {
        if packed {
            packed_b_len(c_in, n)
        } else {
            c_in * n
        }
    };
    let run = |x: &[f32]| {
        let mut out = vec![0f32; b * c_out * h * wd];
        let planes = Disjoint::new(&mut out);
        par::for_each(tiles.div_ceil(chunk), |ci| {
            let t0 = ci * chunk;
            let n = chunk.min(tiles - t0);
            SCRATCH.with_borrow_mut(|Scratch { v, m }| {
                let v_len = v_len(n);
                if v.len() < 16 * v_len {
                    v.resize(16 * v_len, 0.0);
                }
                if m.len() < 16 * c_out * n {
                    m.resize(16 * c_out * n, 0.0);
                }
                // 1. V_ξ = (Bᵀ d B)_ξ for every input channel and tile of the chunk.
                transform_inputs(x, grid, c_in, t0..t0 + n, packed, &mut v[..16 * v_len]);
                // 2. M_ξ = U_ξ V_ξ: one GEMM per ξ over all the chunk's tiles.
                let m = &mut m[..16 * c_out * n];
                for ((u, v), m) in
                    w.u.iter()
                        .zip(v.chunks_exact(v_len))
                        .zip(m.chunks_exact_mut(c_out * n))
                {
                    // Both GEMMs add onto m.
                    m.fill(0.0);
                    match u {
                        Lhs::Packed(a) => gemm_packed(a, v, n, m, n),
                        Lhs::Values(a) => gemm_values(a, v, c_out, c_in, n, m, n),
                    }
                }
                // 3. Y = Aᵀ M A + bias, the tiles' 2x2 outputs.
                transform_outputs(m, grid, c_out, t0..t0 + n, bias, &planes);
            });
        });
        out
    };
    let device = x.device();
    let (_, out) = take_host(x, |v| run(v));
    from_host(out, [b, c_out, h, wd], &device)
}

/// The 2x2-output tiling of an `h x w` plane: `th x tw` tiles; tile `(ty, tx)` reads the input
/// rows `2 ty - 1 .. 2 ty + 3` and columns `2 tx - 1 .. 2 tx + 3` (zero outside) and writes the
/// outputs `2 ty .. 2 ty + 2`, `2 tx .. 2 tx + 2` that lie inside the plane. Tiles are numbered
/// image by image, then row by row.
#[derive(Clone, Copy)]
struct Grid {
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
}

/// A run of a chunk's tiles within one tile row: image `img`, tile row `ty`, tile columns
/// `tx0 .. tx0 + len`, the chunk's columns `j0 .. j0 + len`.
struct Segment {
    img: usize,
    ty: usize,
    tx0: usize,
    len: usize,
    j0: usize,
}

impl Grid {
    /// The tiles `tiles` as runs within tile rows.
    fn segments(&self, tiles: std::ops::Range<usize>) -> Vec<Segment> {
        let per_image = self.th * self.tw;
        let mut out = Vec::new();
        let mut t = tiles.start;
        while t < tiles.end {
            let (img, r) = (t / per_image, t % per_image);
            let (ty, tx0) = (r / self.tw, r % self.tw);
            let len = (self.tw - tx0).min(tiles.end - t);
            out.push(Segment {
                img,
                ty,
                tx0,
                len,
                j0: t - tiles.start,
            });
            t += len;
        }
        out
    }
}

/// Writes `V_ξ[c][t - tiles.start]` for every channel `c` and tile `t` of `tiles` into `v`: 16
/// matrices `[c_in, n]` one after the other, row-major or (when `packed`) as the GEMM's B panels.
///
/// A run of tiles along a row is transformed at once, so that every step is a loop over the
/// run the compiler vectorises: the run's 4 input rows are copied zero-padded, `Bᵀ` down the
/// columns is adds and subtracts of whole rows, and `Bᵀ` along the rows reads tile `k`'s 4
/// columns `2 k .. 2 k + 4` of each result row.
#[inline(always)]
fn transform_inputs_body(
    x: &[f32],
    g: Grid,
    c_in: usize,
    tiles: std::ops::Range<usize>,
    packed: bool,
    v: &mut [f32],
) {
    let n = tiles.len();
    let v_len = v.len() / 16;
    let segs = g.segments(tiles);
    let longest = segs.iter().map(|s| s.len).max().unwrap_or(0);
    let m_max = longest + 1;
    // The 4 padded rows, then Bᵀ down their columns; the 16 outputs (packed only).
    let mut rows = vec![0f32; 8 * m_max];
    let mut te = vec![0f32; 8 * m_max];
    let mut out16 = vec![0f32; if packed { 16 * longest } else { 0 }];
    if packed {
        // The last panel's columns past n are multiplied into outputs that are dropped; keep them
        // finite (scratch may hold anything).
        for vx in v.chunks_exact_mut(v_len) {
            vx[packed_b_len(c_in, n) - NR..].fill(0.0);
        }
    }
    let (h, w) = (g.h, g.w);
    for c in 0..c_in {
        for s in &segs {
            let plane = &x[(s.img * c_in + c) * h * w..][..h * w];
            let m = s.len + 1;
            // 1. The 4 padded input rows: padded column p = input column 2 tx0 + p - 1, zero
            //    outside; tile k reads padded columns 2 k .. 2 k + 4.
            let pw = 2 * m;
            for r in 0..4 {
                let prow = &mut rows[r * 2 * m_max..][..pw];
                let y = (2 * s.ty + r).wrapping_sub(1);
                if y >= h {
                    prow.fill(0.0);
                    continue;
                }
                let row = &plane[y * w..][..w];
                // Input columns c0 - 1 .. c0 - 1 + pw, clipped to the row.
                let c0 = 2 * s.tx0;
                let lo = usize::from(c0 == 0);
                let hi = (w + 1 - c0).min(pw);
                prow[..lo].fill(0.0);
                prow[lo..hi].copy_from_slice(&row[c0 + lo - 1..c0 + hi - 1]);
                prow[hi..].fill(0.0);
            }
            // 2. Bᵀ down the columns: rows d0..d3 -> d0 - d2, d1 + d2, d2 - d1, d1 - d3.
            {
                let d = |r: usize| &rows[r * 2 * m_max..][..pw];
                let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
                let (t01, t23) = te[..8 * m_max].split_at_mut(4 * m_max);
                let (t0, t1) = t01.split_at_mut(2 * m_max);
                let (t2, t3) = t23.split_at_mut(2 * m_max);
                // Slices of exactly pw: the loop then has no bounds checks and vectorises.
                let (t0, t1, t2, t3) = (&mut t0[..pw], &mut t1[..pw], &mut t2[..pw], &mut t3[..pw]);
                for k in 0..pw {
                    t0[k] = d0[k] - d2[k];
                    t1[k] = d1[k] + d2[k];
                    t2[k] = d2[k] - d1[k];
                    t3[k] = d1[k] - d3[k];
                }
            }
            // 3. Bᵀ along the rows: tile k's columns t[2 k .. 2 k + 4]; row-major
            //    straight into the GEMM's B matrices, packed through out16.
            let len = s.len;
            for r in 0..4 {
                let t = &te[r * 2 * m_max..][..pw];
                let [v0, v1, v2, v3] = if packed {
                    let (v0, rest) = out16[4 * r * longest..][..4 * longest].split_at_mut(longest);
                    let (v1, rest) = rest.split_at_mut(longest);
                    let (v2, v3) = rest.split_at_mut(longest);
                    [v0, v1, v2, v3]
                } else {
                    let at = c * n + s.j0;
                    let (v0, rest) = v[4 * r * v_len..][..4 * v_len].split_at_mut(v_len);
                    let (v1, rest) = rest.split_at_mut(v_len);
                    let (v2, v3) = rest.split_at_mut(v_len);
                    [v0, v1, v2, v3].map(|vx| &mut vx[at..])
                };
                let (v0, v1, v2, v3) = (
                    &mut v0[..len],
                    &mut v1[..len],
                    &mut v2[..len],
                    &mut v3[..len],
                );
                for (k, (q, q1)) in t.chunks_exact(2).zip(t[2..].chunks_exact(2)).enumerate() {
                    v0[k] = q[0] - q1[0];
                    v1[k] = q[1] + q1[0];
                    v2[k] = q1[0] - q[1];
                    v3[k] = q[1] - q1[1];
                }
            }
            // 4. Packed: into the GEMM's B panels.
            if packed {
                // Column j goes to panel j / NR, row c, lane j % NR: the run in pieces per panel.
                let mut k = 0;
                while k < len {
                    let j = s.j0 + k;
                    let lane = j % NR;
                    let take = (NR - lane).min(len - k);
                    let at = (j / NR * c_in + c) * NR + lane;
                    for (xi, vals) in out16.chunks_exact(longest).enumerate() {
                        let vx = &mut v[xi * v_len + at..];
                        if take == NR {
                            copy_panel_row(&vals[k..], vx);
                        } else {
                            vx[..take].copy_from_slice(&vals[k..k + take]);
                        }
                    }
                    k += take;
                }
            }
        }
    }
}

/// Reads the products `M_ξ[o][t - tiles.start]` (16 matrices `[c_out, n]` one after the other)
/// and writes each tile's outputs plus the bias into `out` `[B, c_out, h, w]`, a run of tiles
/// along a row at a time (as [`transform_inputs_body`]).
#[inline(always)]
fn transform_outputs_body(
    m: &[f32],
    g: Grid,
    c_out: usize,
    tiles: std::ops::Range<usize>,
    bias: &[f32],
    out: &Disjoint<f32>,
) {
    let n = tiles.len();
    let segs = g.segments(tiles);
    let longest = segs.iter().map(|s| s.len).max().unwrap_or(0);
    let mut y4 = vec![0f32; 4 * longest];
    let (h, w) = (g.h, g.w);
    for (o, &bv) in bias.iter().enumerate() {
        for s in &segs {
            let len = s.len;
            // 1. Aᵀ M A for the run: products p(r, q) -> the 2x2 outputs y(r, q), plus the bias.
            let p = |r: usize, q: usize| &m[((r * 4 + q) * c_out + o) * n + s.j0..][..len];
            let (p00, p01, p02, p03) = (p(0, 0), p(0, 1), p(0, 2), p(0, 3));
            let (p10, p11, p12, p13) = (p(1, 0), p(1, 1), p(1, 2), p(1, 3));
            let (p20, p21, p22, p23) = (p(2, 0), p(2, 1), p(2, 2), p(2, 3));
            let (p30, p31, p32, p33) = (p(3, 0), p(3, 1), p(3, 2), p(3, 3));
            let (y0, rest) = y4[..4 * longest].split_at_mut(longest);
            let (y1, rest) = rest.split_at_mut(longest);
            let (y2, y3) = rest.split_at_mut(longest);
            let (y0, y1, y2, y3) = (
                &mut y0[..len],
                &mut y1[..len],
                &mut y2[..len],
                &mut y3[..len],
            );
            for k in 0..len {
                // Aᵀ down the columns: rows m0..m3 -> m0 + m1 + m2, m1 - m2 - m3.
                let a = [
                    p00[k] + p10[k] + p20[k],
                    p01[k] + p11[k] + p21[k],
                    p02[k] + p12[k] + p22[k],
                    p03[k] + p13[k] + p23[k],
                ];
                let b = [
                    p10[k] - p20[k] - p30[k],
                    p11[k] - p21[k] - p31[k],
                    p12[k] - p22[k] - p32[k],
                    p13[k] - p23[k] - p33[k],
                ];
                // Then along the rows.
                y0[k] = a[0] + a[1] + a[2] + bv;
                y1[k] = a[1] - a[2] - a[3] + bv;
                y2[k] = b[0] + b[1] + b[2] + bv;
                y3[k] = b[1] - b[2] - b[3] + bv;
            }
            // 2. Into the output rows 2 ty, 2 ty + 1 (those inside the plane), columns 2 tx, 2 tx + 1.
            let plane = (s.img * c_out + o) * h * w;
            for (r, (left, right)) in [(&*y0, &*y1), (&*y2, &*y3)].into_iter().enumerate() {
                let y = 2 * s.ty + r;
                if y >= h {
                    continue;
                }
                let x0 = 2 * s.tx0;
                // The run's columns 2 tx0 .. 2 (tx0 + len), cut at the plane's edge.
                let cols = (2 * len).min(w - x0);
                // SAFETY: these outputs belong to this chunk's tiles only.
                let row = unsafe { out.run(plane + y * w + x0, cols) };
                let whole = cols / 2;
                for (k, pair) in row.chunks_exact_mut(2).enumerate() {
                    pair[0] = left[k];
                    pair[1] = right[k];
                }
                if whole < len {
                    // An odd width: the last tile's left column only.
                    row[2 * whole] = left[whole];
                }
            }
        }
    }
}

wide_simd! {
    /// [`transform_inputs_body`], AVX2 where the CPU has it.
    fn transform_inputs(
        x: &[f32],
        g: Grid,
        c_in: usize,
        tiles: std::ops::Range<usize>,
        packed: bool,
        v: &mut [f32],
    ) = transform_inputs_body
}

wide_simd! {
    /// [`transform_outputs_body`], AVX2 where the CPU has it.
    fn transform_outputs(
        m: &[f32],
        g: Grid,
        c_out: usize,
        tiles: std::ops::Range<usize>,
        bias: &[f32],
        out: &Disjoint<f32>,
    ) = transform_outputs_body
}

/// Scratch of [`conv2d`], grown to the largest chunk and reused: the 16 `V_ξ` and `M_ξ`.
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Frees [`conv2d`]'s scratch.
pub(crate) fn release_scratch() {
    par::on_every_thread(|| SCRATCH.with_borrow_mut(|s| *s = Scratch::default()));
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backend::cpu::test_value as value;

    #[test]
    fn threads_give_the_same_bits() {
        use crate::backend::cpu::par::with_test_threads;
        use burn::tensor::{Device, TensorData};
        let device = Device::flex();
        // Odd sizes (a chunk boundary inside a tile row, a last tile of one column), a batch.
        for (b, c_in, c_out, h, w) in [(2, 3, 5, 7, 9), (1, 8, 4, 16, 16), (3, 2, 6, 5, 3)] {
            let x: Vec<f32> = (0..b * c_in * h * w).map(|i| value(i, 997)).collect();
            let wt: Vec<f32> = (0..c_out * c_in * 9).map(|i| value(i + 1, 101)).collect();
            let bias: Vec<f32> = (0..c_out).map(|i| value(i + 2, 13)).collect();
            for packed in [false, true] {
                let weight = WinogradWeight::new(&wt, c_out, c_in, packed);
                let run = || {
                    let xt = Tensor::<4>::from_data(
                        TensorData::new(x.clone(), [b, c_in, h, w]),
                        &device,
                    );
                    conv2d(xt, &weight, &bias)
                        .into_data()
                        .try_to_vec::<f32>()
                        .unwrap()
                };
                let one = run();
                for t in [2, 3] {
                    assert_eq!(
                        with_test_threads(t, run),
                        one,
                        "{t} threads, {b}x{c_in}x{h}x{w}, packed {packed}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_weight_comes_back_from_its_transform() {
        let (c_out, c_in) = (5, 3);
        let wt: Vec<f32> = (0..c_out * c_in * 9).map(|i| value(i, 101)).collect();
        for packed in [false, true] {
            let back = WinogradWeight::new(&wt, c_out, c_in, packed).weight();
            for (a, b) in back.iter().zip(&wt) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
    }
}
