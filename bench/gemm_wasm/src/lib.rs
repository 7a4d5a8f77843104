//! Kernels of the wasm GEMM microbenchmark (bench/gemm_wasm/run.sh): exported over the C ABI,
//! driven from bench.mjs. Packing is per call here; src/backend/cpu/gemm.rs packs A once.
use core::arch::wasm32::*;
use std::alloc::{alloc, Layout};

#[no_mangle]
pub extern "C" fn buf(n: usize) -> *mut f32 {
    unsafe { alloc(Layout::from_size_align(n * 4, 16).unwrap()) as *mut f32 }
}

/// gemm crate: dst[m x n] (row stride n) += a[m x k] @ b[k x n]
#[no_mangle]
pub unsafe extern "C" fn gemm_crate(m: usize, n: usize, k: usize, dst: *mut f32, a: *const f32, b: *const f32) {
    gemm::gemm(m, n, k, dst, 1, n as isize, true, a, 1, k as isize, b, 1, n as isize, 1.0f32, 1.0f32, false, false, false, gemm::Parallelism::None);
}

/// pack a [m x k] row-major into [m/MR][k][MR]
#[no_mangle]
pub unsafe extern "C" fn pack_a(m: usize, k: usize, a: *const f32, out: *mut f32, mr: usize) {
    let blocks = m.div_ceil(mr);
    for bi in 0..blocks {
        for kk in 0..k {
            for r in 0..mr {
                let row = bi * mr + r;
                *out.add((bi * k + kk) * mr + r) = if row < m { *a.add(row * k + kk) } else { 0.0 };
            }
        }
    }
}
/// pack b [k x n] row-major into [n/NR][k][NR]
#[no_mangle]
pub unsafe extern "C" fn pack_b(k: usize, n: usize, b: *const f32, out: *mut f32, nr: usize) {
    for bj in 0..n.div_ceil(nr) {
        for kk in 0..k {
            for c in 0..nr {
                let col = bj * nr + c;
                *out.add((bj * k + kk) * nr + c) = if col < n { *b.add(kk * n + col) } else { 0.0 };
            }
        }
    }
}

macro_rules! kernel {
    ($name:ident, $mr:literal, $nv:literal, $relaxed:literal) => {
        #[inline(never)]
        unsafe fn $name(k: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
            let mut acc = [[f32x4_splat(0.0); $nv]; $mr];
            for r in 0..$mr { for v in 0..$nv { acc[r][v] = v128_load(c.add(r * ldc + 4 * v) as *const v128); } }
            let mut a = a; let mut b = b;
            for _ in 0..k {
                let mut bv = [f32x4_splat(0.0); $nv];
                for v in 0..$nv { bv[v] = v128_load(b.add(4 * v) as *const v128); }
                for r in 0..$mr {
                    let av = v128_load32_splat(a.add(r) as *const u32);
                    for v in 0..$nv {
                        acc[r][v] = if $relaxed { f32x4_relaxed_madd(av, bv[v], acc[r][v]) } else { f32x4_add(acc[r][v], f32x4_mul(av, bv[v])) };
                    }
                }
                a = a.add($mr); b = b.add(4 * $nv);
            }
            for r in 0..$mr { for v in 0..$nv { v128_store(c.add(r * ldc + 4 * v) as *mut v128, acc[r][v]); } }
        }
    };
}
kernel!(k4x8, 4, 2, false);
kernel!(k6x8, 6, 2, false);
kernel!(k4x12, 4, 3, false);
kernel!(k8x8, 8, 2, false);
kernel!(k5x8, 5, 2, false);
kernel!(k3x16, 3, 4, false);
kernel!(r4x8, 4, 2, true);
kernel!(r3x16, 3, 4, true);
kernel!(r6x8, 6, 2, true);

/// packed: ap [m/MR][k][MR], bp [n/NR][k][NR], c m x n (m % MR == 0, n % NR == 0)
#[no_mangle]
pub unsafe extern "C" fn gemm_packed(which: u32, m: usize, n: usize, k: usize, c: *mut f32, ap: *const f32, bp: *const f32) {
    let (mr, nr): (usize, usize) = match which { 0 => (4, 8), 1 => (6, 8), 2 => (4, 12), 3 => (8, 8), 4 => (5, 8), 5 => (3, 16), 6 => (4, 8), 7 => (3, 16), _ => (6, 8) };
    // loop order: for each B panel (NR cols, kept in L1/L2), all A panels
    for j in 0..n / nr {
        let b = bp.add(j * k * nr);
        for i in 0..m / mr {
            let a = ap.add(i * k * mr);
            let cc = c.add(i * mr * n + j * nr);
            match which { 0 => k4x8(k, a, b, cc, n), 1 => k6x8(k, a, b, cc, n), 2 => k4x12(k, a, b, cc, n), 3 => k8x8(k, a, b, cc, n), 4 => k5x8(k, a, b, cc, n), 5 => k3x16(k, a, b, cc, n), 6 => r4x8(k, a, b, cc, n), 7 => r3x16(k, a, b, cc, n), _ => r6x8(k, a, b, cc, n) }
        }
    }
}

#[inline(always)]
unsafe fn tile_strided(kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize) {
    let mut acc = [[f32x4_splat(0.0); 2]; 4];
    for r in 0..4 { for v in 0..2 { acc[r][v] = v128_load(c.add(r * ldc + 4 * v) as *const v128); } }
    for kk in 0..kc {
        let b0 = v128_load(b.add(kk * ldb) as *const v128);
        let b1 = v128_load(b.add(kk * ldb + 4) as *const v128);
        for r in 0..4 {
            let av = v128_load32_splat(a.add(kk * 4 + r) as *const u32);
            acc[r][0] = f32x4_add(acc[r][0], f32x4_mul(av, b0));
            acc[r][1] = f32x4_add(acc[r][1], f32x4_mul(av, b1));
        }
    }
    for r in 0..4 { for v in 0..2 { v128_store(c.add(r * ldc + 4 * v) as *mut v128, acc[r][v]); } }
}

/// A packed [m/4][k][4], B row-major k x n, KC blocks: `gemm_strided_ld` with ldb = n.
#[no_mangle]
pub unsafe extern "C" fn gemm_strided(m: usize, n: usize, k: usize, c: *mut f32, ap: *const f32, b: *const f32, kcb: usize) {
    gemm_strided_ld(m, n, k, c, ap, b, n, kcb)
}

/// A packed [m/4][k][4], B k x n with row stride ldb, KC blocks
#[no_mangle]
pub unsafe extern "C" fn gemm_strided_ld(m: usize, n: usize, k: usize, c: *mut f32, ap: *const f32, b: *const f32, ldb: usize, kcb: usize) {
    let mut k0 = 0;
    while k0 < k {
        let kc = kcb.min(k - k0);
        for j in 0..n / 8 {
            for i in 0..m / 4 {
                tile_strided(kc, ap.add((i * k + k0) * 4), b.add(k0 * ldb + j * 8), ldb, c.add(i * 4 * n + j * 8), n);
            }
        }
        k0 += kc;
    }
}
/// copy b (k x n) into bpad with row stride ldb
#[no_mangle]
pub unsafe extern "C" fn repad(k: usize, n: usize, b: *const f32, out: *mut f32, ldb: usize) {
    for r in 0..k { for c in 0..n { *out.add(r * ldb + c) = *b.add(r * n + c); } }
}
