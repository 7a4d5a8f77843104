// The GEMM microbenchmark (see run.sh): dst += A B for several shapes, the gemm crate against
// packed register tiles (MRxNR), relaxed-SIMD variants and B read in place; median of 30 calls,
// results checked against the gemm crate.
import fs from "node:fs";
const bytes = fs.readFileSync(process.argv[2]);
const { instance } = await WebAssembly.instantiate(bytes, {});
const e = instance.exports;
const mem = () => new Float32Array(e.memory.buffer);
function run(m, n, k) {
  const a = e.buf(m * k), b = e.buf(k * n), c1 = e.buf(m * n), c2 = e.buf(m * n), ap = e.buf((m + 8) * k), bp = e.buf(k * (n + 16));
  let f = mem();
  for (let i = 0; i < m * k; i++) f[a / 4 + i] = Math.sin(i);
  for (let i = 0; i < k * n; i++) f[b / 4 + i] = Math.cos(i);
  const time = (fn, reps) => { fn(); const t = []; for (let r = 0; r < reps; r++) { const t0 = performance.now(); fn(); t.push(performance.now() - t0); } t.sort((x, y) => x - y); return t[t.length >> 1]; };
  const flops = 2 * m * n * k;
  const zero = (c) => mem().fill(0, c / 4, c / 4 + m * n);
  const out = [];
  const tg = time(() => { zero(c1); e.gemm_crate(m, n, k, c1, a, b); }, 30);
  out.push(`gemm crate ${tg.toFixed(2)} ms ${(flops / tg / 1e6).toFixed(1)} GF`);
  for (const [w, mr, nr, tag = ''] of [[0, 4, 8], [1, 6, 8], [2, 4, 12], [3, 8, 8], [4, 5, 8], [5, 3, 16], [6, 4, 8, 'relaxed'], [7, 3, 16, 'relaxed'], [8, 6, 8, 'relaxed']]) {
    if (m % mr || n % nr) { out.push(`${mr}x${nr} skip`); continue; }
    e.pack_a(m, k, a, ap, mr);
    const tpb = time(() => e.pack_b(k, n, b, bp, nr), 10);
    const t = time(() => { zero(c2); e.gemm_packed(w, m, n, k, c2, ap, bp); }, 30);
    f = mem();
    let err = 0; for (let i = 0; i < m * n; i++) err = Math.max(err, Math.abs(f[c1 / 4 + i] - f[c2 / 4 + i]));
    out.push(`${mr}x${nr}${tag} ${t.toFixed(2)} ms (+packB ${tpb.toFixed(2)}) ${(flops / t / 1e6).toFixed(1)} GF ratio ${(t / tg).toFixed(2)} err ${err.toExponential(1)}`);
  }
  e.pack_a(m, k, a, ap, 4);
  for (const kcb of [128, 256, 512, 100000]) {
    const t = time(() => { zero(c2); e.gemm_strided(m, n, k, c2, ap, b, kcb); }, 30);
    f = mem();
    let err = 0; for (let i = 0; i < m * n; i++) err = Math.max(err, Math.abs(f[c1 / 4 + i] - f[c2 / 4 + i]));
    out.push(`strided 4x8 kc ${kcb} ${t.toFixed(2)} ms ${(flops / t / 1e6).toFixed(1)} GF ratio ${(t / tg).toFixed(2)} err ${err.toExponential(1)}`);
  }
  for (const padf of [16, 8, 4]) {
    const ldb = n + padf;
    const bpad = e.buf(k * ldb + 64);
    e.repad(k, n, b, bpad, ldb);
    for (const kcb of [128, 256]) {
      const t = time(() => { zero(c2); e.gemm_strided_ld(m, n, k, c2, ap, bpad, ldb, kcb); }, 30);
      f = mem();
      let err = 0; for (let i = 0; i < m * n; i++) err = Math.max(err, Math.abs(f[c1 / 4 + i] - f[c2 / 4 + i]));
      out.push(`strided ldb n+${padf} kc ${kcb} ${t.toFixed(2)} ms ${(flops / t / 1e6).toFixed(1)} GF ratio ${(t / tg).toFixed(2)} err ${err.toExponential(1)}`);
    }
  }
  console.log(`m ${m} n ${n} k ${k}:\n  ` + out.join("\n  "));
}
run(32, 1024, 288);
run(64, 1024, 576);
run(120, 1024, 576);
run(240, 256, 1152);
run(480, 64, 2160);
