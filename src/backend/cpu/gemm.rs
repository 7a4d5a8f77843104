//! The f32 GEMM of the browser's CPU convolution: `C += A B` with both operands packed, for
//! wasm simd128 (a portable 4-lane stand-in elsewhere, which the native tests run).
//!
//! Why not the gemm crate (which native builds keep, for its AVX-512 kernels): in the browser
//! its simd128 kernel was ~2/3 of a CPU step, and a 4x8 register tile over operands packed once
//! ran its GEMM shapes ~15-40% faster in the same V8 (`tools/gemm_microbench`-style runs,
//! BENCHMARKS.md "Browser CPU GEMM"). The pieces:
//! - **A**, the convolution weight `[c_out, c_in k k]`, is packed ONCE at load
//!   ([`PackedMatrix::pack`]): panels of `MR` rows, each stored k-major (`[k][MR]`), zero-padded
//!   to a whole panel. The gemm crate packs it again on every call.
//! - **B**, the im2col patch matrix `[k, n]`, is packed per call into panels of `NR` columns,
//!   each k-major (`[k][NR]`), one im2col row at a time while it is in L1 (no whole patch
//!   matrix is built): the tile's loads are then consecutive, and one 8-column panel of a K
//!   block fits L1. Read in place instead (row stride n), rows 4 KiB apart alias in L1 and the
//!   same GEMMs ran up to 3x slower.
//! - The **tile**: `MR` x `NR` = 4 x 8 outputs in 8 vector accumulators; per k two vector loads
//!   of B, four broadcast loads of A, eight multiply-adds. Four rows x two vectors keeps the
//!   accumulators, operands and V8's scratch registers within x86's 16 vector registers
//!   (larger tiles measured slower: they spill).
//! - **K blocks** of `KC`: a block of A (`m x KC`) stays in L2 while every B panel passes
//!   over it (GotoBLAS's loop order).

use super::par;

/// Rows of A (output channels) per tile.
pub(crate) const MR: usize = 4;
/// Columns of B (output pixels) per tile: two 4-lane vectors.
pub(crate) const NR: usize = 8;
/// Depth of one K block.
const KC: usize = 256;

/// A row-major `[rows, cols]` matrix packed as panels of [`MR`] rows, each column-major within
/// the panel (`[cols][MR]`), the last panel zero-padded.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl PackedMatrix {
    /// Packs the row-major `values` of a `[rows, cols]` matrix.
    pub fn pack(values: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(values.len(), rows * cols, "PackedMatrix::pack: size");
        let panels = rows.div_ceil(MR);
        let mut data = vec![0.0; panels * cols * MR];
        for (r, row) in values.chunks_exact(cols.max(1)).enumerate().take(rows) {
            let panel = &mut data[(r / MR) * cols * MR..][..cols * MR];
            for (c, &v) in row.iter().enumerate() {
                panel[c * MR + r % MR] = v;
            }
        }
        Self { rows, cols, data }
    }

    /// The row-major values again (for the generic ops where the kernel does not apply).
    pub fn unpack(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            let panel = &self.data[(r / MR) * self.cols * MR..];
            for (c, v) in row.iter_mut().enumerate() {
                *v = panel[c * MR + r % MR];
            }
        }
        out
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Length of the packed form of a `[k, n]` B matrix ([`pack_b`]).
pub(crate) fn packed_b_len(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * k * NR
}

/// Packs row `r` of a `[k, n]` B matrix (`row`, n values) into `out` ([`packed_b_len`]
/// values): panels of [`NR`] columns, each `[k][NR]`, the last one zero-padded. Row by row, so
/// that the convolution packs each im2col row while it is still in L1.
pub(crate) fn pack_b_row(row: &[f32], r: usize, k: usize, out: &mut [f32]) {
    let n = row.len();
    assert!(
        r < k && out.len() >= packed_b_len(k, n),
        "pack_b_row: sizes"
    );
    let full = n / NR;
    for j in 0..full {
        // SAFETY: row holds n >= (j + 1) NR values; out holds n.div_ceil(NR) k NR >= (j k + r +
        // 1) NR (asserted above). Two 4-lane copies: a slice copy of 8 values becomes a
        // `memory.copy` call in wasm, whose fixed cost dominated this loop.
        unsafe {
            let src = row.as_ptr().add(j * NR);
            let dst = out.as_mut_ptr().add((j * k + r) * NR);
            lanes::F4::load(src).store(dst);
            lanes::F4::load(src.add(4)).store(dst.add(4));
        }
    }
    if full * NR < n {
        let dst = &mut out[(full * k + r) * NR..][..NR];
        let rest = n - full * NR;
        dst[..rest].copy_from_slice(&row[full * NR..]);
        dst[rest..].fill(0.0);
    }
}

/// Copies the [`NR`] values of one panel row from `src` to `dst` as two 4-lane moves (a slice
/// copy of 8 values becomes a `memory.copy` call in wasm, whose fixed cost dominates it).
#[inline(always)]
pub(crate) fn copy_panel_row(src: &[f32], dst: &mut [f32]) {
    assert!(src.len() >= NR && dst.len() >= NR, "copy_panel_row: sizes");
    // SAFETY: both slices hold at least NR = 8 values (asserted above).
    unsafe {
        lanes::F4::load(src.as_ptr()).store(dst.as_mut_ptr());
        lanes::F4::load(src.as_ptr().add(4)).store(dst.as_mut_ptr().add(4));
    }
}

/// `dst += A B`: `a` is `[m, k]` packed, `b` the `[k, n]` matrix packed by [`pack_b`], `dst` an
/// `[m, n]` matrix with row stride `ldc`.
pub(crate) fn gemm_packed(a: &PackedMatrix, b: &[f32], n: usize, dst: &mut [f32], ldc: usize) {
    let k = a.cols;
    assert!(b.len() >= packed_b_len(k, n), "gemm_packed: B too small");
    // SAFETY: row kk < k of panel j < n.div_ceil(NR) ends at (j k + kk + 1) NR <= b.len().
    unsafe { drive(a, n, dst, ldc, |j, kk| b.as_ptr().add((j * k + kk) * NR)) }
}

/// `dst += A B` where B is read in place ("indirect" GEMM, as XNNPACK's convolutions do): row
/// `r` of B's panel `j` is the [`NR`] values at `src[bases[j] + offsets[r]..]`. `a` is
/// `[m, k]` packed (k = `offsets.len()`), `dst` an `[m, NR bases.len()]` matrix with row stride
/// `ldc`. A convolution over a zero-padded input is such a product with no patch matrix at
/// all: `offsets` step through the input channels and kernel taps, `bases` through the output
/// pixels.
pub(crate) fn gemm_indirect(
    a: &PackedMatrix,
    src: &[f32],
    offsets: &[usize],
    bases: &[usize],
    dst: &mut [f32],
    ldc: usize,
) {
    assert_eq!(
        offsets.len(),
        a.cols,
        "gemm_indirect: one offset per row of B"
    );
    let reach =
        offsets.iter().max().copied().unwrap_or(0) + bases.iter().max().copied().unwrap_or(0);
    assert!(
        offsets.is_empty() || bases.is_empty() || reach + NR <= src.len(),
        "gemm_indirect: B reads past the input"
    );
    // SAFETY: j < bases.len() and kk < k = offsets.len(), and every base + offset + NR is at
    // most src.len() (asserted above).
    unsafe {
        drive(a, bases.len() * NR, dst, ldc, |j, kk| {
            src.as_ptr()
                .add(bases.get_unchecked(j) + offsets.get_unchecked(kk))
        })
    }
}

/// The loop both GEMMs share: `dst` `[m, n]` with row stride `ldc` += A B, over the pool's
/// threads when there are several and the product is large enough to pay for the hand-off
/// ([`par::split`]): each thread takes a run of A's row panels and writes its own rows of `dst`,
/// each computed exactly as on one thread.
///
/// # Safety
/// `b(j, kk)` points at [`NR`] readable values for every panel `j < n.div_ceil(NR)` and row
/// `kk < a.cols`.
#[inline(always)]
unsafe fn drive(
    a: &PackedMatrix,
    n: usize,
    dst: &mut [f32],
    ldc: usize,
    b: impl Fn(usize, usize) -> *const f32 + Sync,
) {
    let (m, k) = (a.rows, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ldc >= n && dst.len() >= (m - 1) * ldc + n,
        "gemm: C too small"
    );
    let panels = m.div_ceil(MR);
    let parts = par::split(m * n * k, panels);
    if parts <= 1 {
        // SAFETY: the caller's promise, for all of A's panels.
        return unsafe { drive_panels(a, 0..panels, n, dst, ldc, &b) };
    }
    let per = panels.div_ceil(parts);
    let dst = &mut dst[..(m - 1) * ldc + n];
    par::for_each_chunk_mut(dst, per * MR * ldc, |i, d| {
        let first = i * per;
        // SAFETY: chunk i of dst starts at row first MR and holds the rows of panels first ..
        // first + per (the last chunk ends with dst); `b` is the caller's promise.
        unsafe { drive_panels(a, first..(first + per).min(panels), n, d, ldc, &b) }
    });
}

/// [`drive`] on one thread for A's row panels `panels`, `dst` starting at the first panel's
/// first row: K blocks of [`KC`], then B's panels, then A's (GotoBLAS's order); an edge tile goes
/// through a full-size scratch tile.
///
/// # Safety
/// As [`drive`]; `dst` holds the rows of `panels` (the last one up to row m - 1, n values).
#[inline(always)]
unsafe fn drive_panels(
    a: &PackedMatrix,
    panels: std::ops::Range<usize>,
    n: usize,
    dst: &mut [f32],
    ldc: usize,
    b: &impl Fn(usize, usize) -> *const f32,
) {
    let (m, k) = (a.rows, a.cols);
    let first = panels.start;
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for j in 0..n.div_ceil(NR) {
            let cols = NR.min(n - j * NR);
            let bj = |kk: usize| b(j, k0 + kk);
            for i in panels.clone() {
                let ap = &a.data[(i * k + k0) * MR..][..kc * MR];
                let rows = MR.min(m - i * MR);
                let c = &mut dst[(i - first) * MR * ldc + j * NR..];
                if rows == MR && cols == NR {
                    // SAFETY: the tile's rows r < MR start at r ldc <= (m - 1 - i MR) ldc in `c`
                    // and hold NR <= n - j NR values: inside dst (the caller's promise); ap
                    // holds kc MR values (sliced above), bj the caller's promise.
                    tile(kc, ap.as_ptr(), bj, c.as_mut_ptr(), ldc);
                } else {
                    let mut t = [0f32; MR * NR];
                    for r in 0..rows {
                        t[r * NR..][..cols].copy_from_slice(&c[r * ldc..][..cols]);
                    }
                    // SAFETY: `t` is a whole MR x NR tile with row stride NR.
                    tile(kc, ap.as_ptr(), bj, t.as_mut_ptr(), NR);
                    for r in 0..rows {
                        c[r * ldc..][..cols].copy_from_slice(&t[r * NR..][..cols]);
                    }
                }
            }
        }
    }
}

/// One 4 x 8 tile: `c[r][0..8] += sum_k a[k][r] * b(k)[0..8]`.
///
/// # Safety
/// `a` holds `kc * MR` values, `b(k)` points at `NR` readable values for each `k < kc`, and
/// `c` points at `MR` rows of `NR` values with row stride `ldc`.
#[inline(always)]
unsafe fn tile(kc: usize, a: *const f32, b: impl Fn(usize) -> *const f32, c: *mut f32, ldc: usize) {
    use lanes::F4;
    let mut acc = [[F4::zero(); 2]; MR];
    for (r, row) in acc.iter_mut().enumerate() {
        row[0] = F4::load(c.add(r * ldc));
        row[1] = F4::load(c.add(r * ldc + 4));
    }
    for kk in 0..kc {
        let bk = b(kk);
        let b0 = F4::load(bk);
        let b1 = F4::load(bk.add(4));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = F4::splat_load(a.add(kk * MR + r));
            row[0] = row[0].mul_add(av, b0);
            row[1] = row[1].mul_add(av, b1);
        }
    }
    for (r, row) in acc.iter().enumerate() {
        row[0].store(c.add(r * ldc));
        row[1].store(c.add(r * ldc + 4));
    }
}

/// Four f32 lanes: wasm simd128 in the browser build.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod lanes {
    use core::arch::wasm32::*;

    #[derive(Clone, Copy)]
    pub(super) struct F4(v128);

    impl F4 {
        #[inline(always)]
        pub(super) fn zero() -> Self {
            F4(f32x4_splat(0.0))
        }
        /// # Safety: `p` points at 4 readable values (no alignment needed).
        #[inline(always)]
        pub(super) unsafe fn load(p: *const f32) -> Self {
            F4(v128_load(p as *const v128))
        }
        /// # Safety: `p` points at a readable value.
        #[inline(always)]
        pub(super) unsafe fn splat_load(p: *const f32) -> Self {
            F4(v128_load32_splat(p as *const u32))
        }
        /// # Safety: `p` points at 4 writable values.
        #[inline(always)]
        pub(super) unsafe fn store(self, p: *mut f32) {
            v128_store(p as *mut v128, self.0)
        }
        /// `self + a * b` (a multiply and an add: simd128 has no fused multiply-add).
        #[inline(always)]
        pub(super) fn mul_add(self, a: Self, b: Self) -> Self {
            F4(f32x4_add(self.0, f32x4_mul(a.0, b.0)))
        }
    }
}

/// Four f32 lanes as an array: the same arithmetic (a multiply, then an add) elsewhere, so the
/// native tests check the packing and tiling the browser runs.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod lanes {
    #[derive(Clone, Copy)]
    pub(super) struct F4([f32; 4]);

    impl F4 {
        #[inline(always)]
        pub(super) fn zero() -> Self {
            F4([0.0; 4])
        }
        /// # Safety: `p` points at 4 readable values.
        #[inline(always)]
        pub(super) unsafe fn load(p: *const f32) -> Self {
            F4(std::ptr::read_unaligned(p as *const [f32; 4]))
        }
        /// # Safety: `p` points at a readable value.
        #[inline(always)]
        pub(super) unsafe fn splat_load(p: *const f32) -> Self {
            F4([*p; 4])
        }
        /// # Safety: `p` points at 4 writable values.
        #[inline(always)]
        pub(super) unsafe fn store(self, p: *mut f32) {
            std::ptr::write_unaligned(p as *mut [f32; 4], self.0)
        }
        #[inline(always)]
        pub(super) fn mul_add(self, a: Self, b: Self) -> Self {
            F4(std::array::from_fn(|i| self.0[i] + a.0[i] * b.0[i]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backend::cpu::test_value as value;

    #[test]
    fn pack_then_unpack_is_the_identity() {
        for (rows, cols) in [(1, 1), (4, 3), (5, 7), (13, 1), (8, 300)] {
            let v: Vec<f32> = (0..rows * cols).map(|i| value(i, 101)).collect();
            let p = PackedMatrix::pack(&v, rows, cols);
            assert_eq!(p.data.len(), rows.div_ceil(MR) * cols * MR);
            assert_eq!(p.unpack(), v, "{rows}x{cols}");
        }
    }

    #[test]
    fn gemm_indirect_reads_b_through_offsets() {
        // B[r][c] = src[bases[c / NR] + c % NR + offsets[r]], over one and several K blocks and
        // a row count that is not whole tiles.
        for (m, k, panels) in [(4, 3, 1), (7, 2 * KC + 5, 3), (1, 1, 2)] {
            let n = panels * NR;
            let src: Vec<f32> = (0..5000).map(|i| value(i, 977)).collect();
            let offsets: Vec<usize> = (0..k).map(|r| (r * 37) % 3000).collect();
            let bases: Vec<usize> = (0..panels).map(|j| 100 + j * 213).collect();
            let a: Vec<f32> = (0..m * k).map(|i| value(i, 997)).collect();
            let ldc = n + 2;
            let c0: Vec<f32> = (0..m * ldc).map(|i| value(i + 3, 983)).collect();
            let mut got = c0.clone();
            gemm_indirect(
                &PackedMatrix::pack(&a, m, k),
                &src,
                &offsets,
                &bases,
                &mut got,
                ldc,
            );
            for r in 0..m {
                for c in 0..n {
                    let mut s = 0f64;
                    for kk in 0..k {
                        s +=
                            a[r * k + kk] as f64 * src[bases[c / NR] + c % NR + offsets[kk]] as f64;
                    }
                    let want = c0[r * ldc + c] + s as f32;
                    let g = got[r * ldc + c];
                    assert!(
                        (g - want).abs() < 1e-4,
                        "{m}x{k}x{n} at ({r}, {c}): {g} vs {want}"
                    );
                }
                assert_eq!(
                    got[r * ldc + n..(r + 1) * ldc],
                    c0[r * ldc + n..(r + 1) * ldc]
                );
            }
        }
    }

    #[test]
    fn threads_give_the_same_bits() {
        use crate::backend::cpu::par::with_test_threads;
        for (m, k, n, extra) in [(13, 300, 21, 3), (4, 9, 8, 0), (33, 17, 5, 1)] {
            let a: Vec<f32> = (0..m * k).map(|i| value(i, 997)).collect();
            let b: Vec<f32> = (0..k * n).map(|i| value(i + 7, 991)).collect();
            let ldc = n + extra;
            let pa = PackedMatrix::pack(&a, m, k);
            let mut pb = vec![0.0; packed_b_len(k, n)];
            for (r, row) in b.chunks_exact(n).enumerate() {
                pack_b_row(row, r, k, &mut pb);
            }
            let run = || {
                let mut c: Vec<f32> = (0..m * ldc).map(|i| value(i + 3, 983)).collect();
                gemm_packed(&pa, &pb, n, &mut c, ldc);
                c
            };
            let one = run();
            for t in [2, 3, 5] {
                assert_eq!(with_test_threads(t, run), one, "{t} threads, {m}x{k}x{n}");
            }
        }
    }

    #[test]
    fn gemm_packed_matches_the_naive_product_on_edges_and_k_blocks() {
        // m, k, n: whole tiles, ragged rows and columns, K over one and several blocks, and a
        // row stride wider than n (a band of output rows).
        for (m, k, n, extra) in [
            (4, 1, 8, 0),
            (3, 5, 7, 0),
            (9, 17, 21, 3),
            (8, KC, 16, 0),
            (6, 2 * KC + 13, 10, 5),
            (1, 300, 1, 0),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| value(i, 997)).collect();
            let b: Vec<f32> = (0..k * n).map(|i| value(i + 7, 991)).collect();
            let ldc = n + extra;
            let c0: Vec<f32> = (0..m * ldc).map(|i| value(i + 3, 983)).collect();
            let mut want = c0.clone();
            for r in 0..m {
                for c in 0..n {
                    let mut s = 0f64;
                    for kk in 0..k {
                        s += a[r * k + kk] as f64 * b[kk * n + c] as f64;
                    }
                    want[r * ldc + c] += s as f32;
                }
            }
            let pa = PackedMatrix::pack(&a, m, k);
            let mut pb = vec![f32::NAN; packed_b_len(k, n)];
            for (r, row) in b.chunks_exact(n).enumerate() {
                pack_b_row(row, r, k, &mut pb);
            }
            let mut got = c0.clone();
            gemm_packed(&pa, &pb, n, &mut got, ldc);
            for r in 0..m {
                for c in 0..ldc {
                    let (g, w) = (got[r * ldc + c], want[r * ldc + c]);
                    if c >= n {
                        // Columns past n are another band's: untouched.
                        assert_eq!(
                            g,
                            c0[r * ldc + c],
                            "{m}x{k}x{n}: wrote past n at ({r}, {c})"
                        );
                    } else {
                        assert!(
                            (g - w).abs() < 1e-4,
                            "{m}x{k}x{n} at ({r}, {c}): {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
