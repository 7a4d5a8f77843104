//! Scaled dot-product attention on the browser's packed GEMM: `softmax(q kᵀ / sqrt(d)) v` for
//! every head, from the `[B, N, C]` projections straight to the `[B, N, C]` input of `to_out`
//! (the generic form splits the heads out with two transposes, then runs flex's matmul, a scale
//! pass, a softmax of several passes and a second matmul, and transposes back).
//!
//! Why: in the browser the attention of the shipped emoji model was ~22% of a CPU step (profile,
//! BENCHMARKS.md), flex's elementwise passes and the gemm crate's simd128 kernels; with threads it
//! was the one large part of a step left on one thread. Here, per head:
//! - `kᵀ` and `v` are packed once as the GEMM's right operands (panels of [`NR`] columns);
//! - the queries go in blocks of rows: `s = q_blk kᵀ` (one GEMM), each row's softmax of `s /
//!   sqrt(d)` in place (max, then [`exp_f32`], then the sum in f64 lanes), `o = p v` (a second
//!   GEMM), written into the head's columns of the output rows.
//!
//! The blocks are independent, so they are the parts of a split over threads (after the
//! packing, which is split by head); a row's result does not depend on its block, so the output is
//! the same bits at any thread count. Only in the browser ([`super::PACK_WEIGHTS`]): natively
//! flex's matmul runs on the gemm crate's AVX kernels, which our 4-lane tile does not beat.

use burn::tensor::Tensor;

use super::gemm::{gemm_packed, pack_b_row, packed_b_len, PackedMatrix, MR, NR};
use super::norm::{exp_f32, lane_sum};
use super::par::{self, Disjoint};
use super::{from_host, host_values, on_cpu_f32, PACK_WEIGHTS};

/// Whether [`attention`] runs on `q` `[B, N, C]`, `k` and `v` `[B, M, C]` with `heads` heads.
pub(crate) fn attention_applies(q: &Tensor<3>, k: &Tensor<3>, v: &Tensor<3>, heads: usize) -> bool {
    let ([b, _, c], [bk, m, ck]) = (q.dims(), k.dims());
    PACK_WEIGHTS
        && on_cpu_f32(q)
        && on_cpu_f32(k)
        && on_cpu_f32(v)
        && heads != 0
        && c % heads == 0
        && c != 0
        && m != 0
        && (bk, ck) == (b, c)
        && v.dims() == [b, m, c]
}

/// `softmax(q_h k_hᵀ / sqrt(d)) v_h` for every head `h` (columns `h d .. (h + 1) d` of the
/// projections, `d = C / heads`): `[B, N, C]` with the heads side by side, as diffusers' output
/// before `to_out` ([`attention_applies`]).
pub(crate) fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    let [b, n, c] = q.dims();
    let m = k.dims()[1];
    let device = q.device();
    let out = attention_values(
        &host_values(q),
        &host_values(k),
        &host_values(v),
        [b, n, m, c],
        heads,
    );
    from_host(out, [b, n, c], &device)
}

/// [`attention`] on host values: `q` `[B, N, C]`, `k` and `v` `[B, M, C]`.
fn attention_values(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    [b, n, m, c]: [usize; 4],
    heads: usize,
) -> Vec<f32> {
    let d = c / heads;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let (kt_len, v_len) = (packed_b_len(d, m), packed_b_len(m, d));
    let work = b * heads * n * m * d * 2;

    // 1. kᵀ and v of every head, packed as the GEMMs' right operands.
    let head_len = kt_len + v_len;
    let mut packed = vec![0f32; b * heads * head_len];
    let part = par::part_len(b * heads, head_len, 2);
    par::for_each_chunk_mut(&mut packed, part, |i, chunk| {
        for (j, head) in chunk.chunks_exact_mut(head_len).enumerate() {
            let bh = i * (part / head_len) + j;
            let (bi, h) = (bh / heads, bh % heads);
            let (kt, vp) = head.split_at_mut(kt_len);
            let (kr, vr) = (
                |t: usize| &k[(bi * m + t) * c + h * d..][..d],
                |t: usize| &v[(bi * m + t) * c + h * d..][..d],
            );
            // kᵀ: row r of B is column r of k, so panel p holds keys p NR .. p NR + NR.
            for t in 0..m {
                let (p, col) = (t / NR, t % NR);
                for (r, &x) in kr(t).iter().enumerate() {
                    kt[(p * d + r) * NR + col] = x;
                }
            }
            // v: row t of B is value t.
            for t in 0..m {
                pack_b_row(vr(t), t, m, vp);
            }
        }
    });

    // 2. Blocks of query rows: enough of them for every thread, whole GEMM panels.
    let parts = par::split(work, b * heads * n.div_ceil(MR));
    let per_head = n.div_ceil(MR).div_ceil(parts.div_ceil(b * heads)).max(1);
    let block = (per_head * MR).min(64);
    let blocks = n.div_ceil(block);
    let mut out = vec![0f32; b * n * c];
    let dst = Disjoint::new(&mut out);
    par::for_each_sized(b * heads * blocks, work, |u| {
        let (bh, blk) = (u / blocks, u % blocks);
        let (bi, h) = (bh / heads, bh % heads);
        let (r0, rows) = (blk * block, block.min(n - blk * block));
        let head = &packed[bh * head_len..][..head_len];
        let (kt, vp) = head.split_at(kt_len);
        // s = q_blk kᵀ
        let mut qb = Vec::with_capacity(rows * d);
        for r in r0..r0 + rows {
            qb.extend_from_slice(&q[(bi * n + r) * c + h * d..][..d]);
        }
        let mut s = vec![0f32; rows * m];
        gemm_packed(&PackedMatrix::pack(&qb, rows, d), kt, m, &mut s, m);
        // p = softmax(s / sqrt(d)) per row
        for row in s.chunks_exact_mut(m) {
            let mut max = f32::NEG_INFINITY;
            for e in row.iter_mut() {
                *e *= scale;
                max = max.max(*e);
            }
            for e in row.iter_mut() {
                *e = exp_f32(*e - max);
            }
            let inv = (1.0 / lane_sum(row, |e| e)) as f32;
            for e in row.iter_mut() {
                *e *= inv;
            }
        }
        // o = p v, into the head's columns of the output rows
        let mut o = vec![0f32; rows * d];
        gemm_packed(&PackedMatrix::pack(&s, rows, m), vp, d, &mut o, d);
        for (r, orow) in o.chunks_exact(d).enumerate() {
            // SAFETY: row r0 + r, columns of head h: this unit's alone.
            let dst = unsafe { dst.run((bi * n + r0 + r) * c + h * d, d) };
            dst.copy_from_slice(orow);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::par::with_test_threads;
    use crate::backend::cpu::test_value as value;
    use burn::tensor::{activation::softmax, Device, TensorData};

    /// The generic form: heads split out, matmul, scale, softmax, matmul, heads back.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        [b, n, m, c]: [usize; 4],
        heads: usize,
    ) -> Vec<f32> {
        let device = Device::flex();
        let d = c / heads;
        let t = |x: &[f32], len: usize| {
            Tensor::<3>::from_data(TensorData::new(x.to_vec(), [b, len, c]), &device)
                .reshape([b, len, heads, d])
                .swap_dims(1, 2)
        };
        let s = t(q, n).matmul(t(k, m).swap_dims(2, 3)) * (1.0 / (d as f64).sqrt());
        softmax(s, 3)
            .matmul(t(v, m))
            .swap_dims(1, 2)
            .reshape([b, n, c])
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn attention_matches_the_generic_ops_at_any_thread_count() {
        // Self- and cross-attention, one and several heads, ragged rows and keys, a block edge.
        for (b, n, m, c, heads) in [
            (2, 13, 13, 8, 2),
            (1, 70, 9, 12, 3),
            (3, 5, 77, 16, 1),
            (1, 130, 130, 32, 4),
        ] {
            let q: Vec<f32> = (0..b * n * c).map(|i| 4.0 * value(i, 997)).collect();
            let k: Vec<f32> = (0..b * m * c).map(|i| 4.0 * value(i + 5, 991)).collect();
            let v: Vec<f32> = (0..b * m * c).map(|i| value(i + 9, 983)).collect();
            let want = reference(&q, &k, &v, [b, n, m, c], heads);
            let got = attention_values(&q, &k, &v, [b, n, m, c], heads);
            let worst = crate::backend::cpu::max_abs_diff(&got, &want);
            assert!(
                worst < 1e-5,
                "{b}x{n}x{m}x{c}/{heads}: max |diff| {worst:e}"
            );
            for t in [2, 3, 8] {
                let split =
                    with_test_threads(t, || attention_values(&q, &k, &v, [b, n, m, c], heads));
                assert_eq!(split, got, "{t} threads, {b}x{n}x{m}x{c}/{heads}");
            }
        }
    }
}
