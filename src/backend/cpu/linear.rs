//! `torch.nn.Linear` on the browser's own GEMM ([`super::gemm`]): the weight `[out, in]` packed
//! once at load, the tokens packed per call.
//!
//! Why: in the browser, the attention and feed-forward layers of a text-to-image U-Net ran on
//! flex's matmul, i.e. the gemm crate's simd128 kernel, which re-packs the weight on every call
//! (21.5% of a 140M-parameter U-Net step, BENCHMARKS.md "Latent text-to-image, browser CPU"),
//! while our 4x8 tile over operands packed once was 15-40% faster on the convolutions' shapes.
//! `y = x Wᵀ + b` is computed transposed, `yᵀ [out, tokens] = W [out, in] @ xᵀ [in, tokens]`, so
//! that the weight is the packed left operand: packing the tokens and transposing the result
//! back are `tokens * (in + out)` moves against the GEMM's `2 tokens * in * out` flops.

use burn::tensor::Tensor;

use super::gemm::{gemm_packed, packed_b_len, PackedMatrix, NR};
use super::{from_host, on_cpu_f32, take_host};

/// Whether [`linear`] runs on `x` with the packed weight `w` (`[out, in]`) and `bias`: an f32
/// flex tensor whose last axis is `in`, and a bias of `out` values if any.
pub(crate) fn linear_applies<const D: usize>(
    x: &Tensor<D>,
    w: &PackedMatrix,
    bias: Option<&[f32]>,
) -> bool {
    D >= 1
        && on_cpu_f32(x)
        && x.dims()[D - 1] == w.cols()
        && bias.is_none_or(|b| b.len() == w.rows())
}

/// `x @ Wᵀ + bias` on a flex tensor `[..., in]` ([`linear_applies`]): `[..., out]`.
pub(crate) fn linear<const D: usize>(
    x: Tensor<D>,
    w: &PackedMatrix,
    bias: Option<&[f32]>,
) -> Tensor<D> {
    let dims = x.dims();
    let (d_in, d_out) = (w.cols(), w.rows());
    let tokens = dims[..D - 1].iter().product::<usize>();
    let device = x.device();
    let (_, y) = take_host(x, |x| {
        // 1. xᵀ as the GEMM's B: panels of NR tokens, each [in][NR]; the last one zero-padded.
        let mut b = vec![0f32; packed_b_len(d_in, tokens)];
        for (t, row) in x.chunks_exact(d_in.max(1)).enumerate().take(tokens) {
            let panel = &mut b[t / NR * d_in * NR..][..d_in * NR];
            for (r, &v) in row.iter().enumerate() {
                panel[r * NR + t % NR] = v;
            }
        }
        // 2. yᵀ = bias rows + W xᵀ.
        let mut yt = vec![0f32; d_out * tokens];
        if let Some(bias) = bias {
            for (row, &bv) in yt.chunks_exact_mut(tokens.max(1)).zip(bias) {
                row.fill(bv);
            }
        }
        gemm_packed(w, &b, tokens, &mut yt, tokens);
        // 3. y = (yᵀ)ᵀ, in blocks of 8 x 8 so that both sides stay in cache lines.
        let mut y = vec![0f32; tokens * d_out];
        const BLOCK: usize = 8;
        for o0 in (0..d_out).step_by(BLOCK) {
            for t0 in (0..tokens).step_by(BLOCK) {
                for o in o0..(o0 + BLOCK).min(d_out) {
                    for t in t0..(t0 + BLOCK).min(tokens) {
                        y[t * d_out + o] = yt[o * tokens + t];
                    }
                }
            }
        }
        y
    });
    let mut out = dims;
    out[D - 1] = d_out;
    from_host(y, out, &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn linear_matches_the_generic_op() {
        let device = Device::flex();
        let value = crate::backend::cpu::test_value;
        // (tokens, in, out): whole panels and tiles, ragged ones, one token, K over several
        // blocks of the GEMM.
        for (tokens, d_in, d_out, with_bias) in [
            (16, 8, 4, true),
            (13, 5, 7, true),
            (1, 3, 1, false),
            (37, 300, 9, true),
            (9, 600, 6, false),
        ] {
            let x: Vec<f32> = (0..tokens * d_in).map(|i| value(i, 997)).collect();
            let w: Vec<f32> = (0..d_out * d_in).map(|i| value(i + 5, 991)).collect();
            let b: Vec<f32> = (0..d_out).map(|i| value(i + 11, 983)).collect();
            // [2, tokens / 2-ish, in] where possible: leading axes are flattened.
            let xt = Tensor::<2>::from_data(TensorData::new(x, [tokens, d_in]), &device);
            let wt = Tensor::<2>::from_data(TensorData::new(w.clone(), [d_out, d_in]), &device);
            let bt = Tensor::<1>::from_data(TensorData::new(b.clone(), [d_out]), &device);
            let want =
                burn::tensor::module::linear(xt.clone(), wt.transpose(), with_bias.then_some(bt));
            let packed = PackedMatrix::pack(&w, d_out, d_in);
            let bias = with_bias.then_some(&b[..]);
            assert!(linear_applies(&xt, &packed, bias));
            let got = linear(xt.clone(), &packed, bias);
            assert_eq!(got.dims(), [tokens, d_out]);
            let (got, want) = (
                got.into_data().try_into_vec::<f32>().unwrap(),
                want.into_data().try_into_vec::<f32>().unwrap(),
            );
            let worst = crate::backend::cpu::max_abs_diff(&got, &want);
            assert!(
                worst < 1e-4,
                "{tokens}x{d_in}x{d_out}: max |diff| {worst:e}"
            );
            // A 3-D input: the leading axes are the tokens.
            if tokens % 2 == 0 {
                let x3 = xt.clone().reshape([2, tokens / 2, d_in]);
                let got3 = linear(x3, &packed, bias);
                assert_eq!(got3.dims(), [2, tokens / 2, d_out]);
                assert_eq!(got3.into_data().try_into_vec::<f32>().unwrap(), got);
            }
            // The wrong input width or bias length is refused.
            let wrong = Tensor::<2>::zeros([2, d_in + 1], &device);
            assert!(!linear_applies(&wrong, &packed, bias));
            assert!(!linear_applies(&xt, &packed, Some(&b[..d_out - 1])));
        }
    }
}
