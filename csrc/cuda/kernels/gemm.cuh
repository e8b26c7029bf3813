// The project's own GEMM (no cuBLAS): C = A B (+ C) with shared-memory tiles,
// any strides for A and B (so transposes are free), batched over blockIdx.z,
// and a fused epilogue (row or column bias, an addend of C's layout, relu).
// One thread per element of C, which it sums in a fixed order: the same bits
// on every run.
#pragma once

#include <cstdint>

#include "cuda/kernels/common.cuh"

namespace nnk {

constexpr unsigned kTile = 16;
constexpr unsigned kSumThreads = 256;  // one block per channel_sum output (a power of two)

// A(m, k) = a[m * a_m + k * a_k], B(k, n) = b[k * b_k + n * b_n], C(m, n) = c[m * ldc + n];
// batch z offsets a, b, c (and addend) by z times their batch strides.
struct GemmArgs {
  std::int64_t m, n, k;
  std::int64_t a_m, a_k, a_batch;
  std::int64_t b_k, b_n, b_batch;
  std::int64_t ldc, c_batch;
  bool accumulate;  // C += A B instead of C = A B
  bool relu;        // after bias and addend
};

template <class T>
NNK_GLOBAL void gemm_kernel(const T* a, const T* b, T* c, const T* row_bias, const T* col_bias, const T* addend,
                            GemmArgs g) {
  NNK_SHARED(T, as, kTile * (kTile + 1));  // +1: threads of a row read a column without bank conflicts
  NNK_SHARED(T, bs, kTile * (kTile + 1));
  const unsigned tx = thread_x(), ty = thread_y();
  const std::int64_t z = block_z();
  a += z * g.a_batch;
  b += z * g.b_batch;
  c += z * g.c_batch;
  // tiles past the grid (a grid's y extent is at most 65535 blocks) are taken by later passes; the
  // trip counts depend only on block indices, so every thread of a block reaches the same barriers
  const std::int64_t tiles_m = (g.m + kTile - 1) / kTile, tiles_n = (g.n + kTile - 1) / kTile;
  for (std::int64_t tm = block_y(); tm < tiles_m; tm += grid_dim_y()) {
    for (std::int64_t tn = block_x(); tn < tiles_n; tn += grid_dim_x()) {
      const std::int64_t row = tm * kTile + ty, col = tn * kTile + tx;
      T acc = T(0);
      for (std::int64_t k0 = 0; k0 < g.k; k0 += kTile) {
        // thread (tx, ty) loads A(row, k0 + tx) and B(k0 + ty, col); zeros past the edges
        const std::int64_t ka = k0 + tx, kb = k0 + ty;
        as[ty * (kTile + 1) + tx] = (row < g.m && ka < g.k) ? a[row * g.a_m + ka * g.a_k] : T(0);
        bs[ty * (kTile + 1) + tx] = (kb < g.k && col < g.n) ? b[kb * g.b_k + col * g.b_n] : T(0);
        sync();
        for (unsigned kk = 0; kk < kTile; ++kk) acc += as[ty * (kTile + 1) + kk] * bs[kk * (kTile + 1) + tx];
        sync();
      }
      if (row < g.m && col < g.n) {
        const std::int64_t at = row * g.ldc + col;
        if (g.accumulate) acc += c[at];
        if (row_bias != nullptr) acc += row_bias[row];
        if (col_bias != nullptr) acc += col_bias[col];
        if (addend != nullptr) acc += addend[z * g.c_batch + at];
        if (g.relu && !(acc > T(0) || isnan_(acc))) acc = T(0);
        c[at] = acc;
      }
    }
  }
}

// out[c] = sum over n < outer, s < inner of x[(n * channels + c) * inner + s], in double;
// one block per channel (bias gradients).
template <class T>
NNK_GLOBAL void channel_sum_kernel(const T* x, T* out, std::int64_t outer, std::int64_t channels,
                                   std::int64_t inner) {
  NNK_SHARED(double, buf, kSumThreads);
  const std::int64_t c = block_x(), count = outer * inner;
  double s = 0;
  for (std::int64_t k = thread_x(); k < count; k += block_dim_x()) s += double(x[((k / inner) * channels + c) * inner + k % inner]);
  s = block_reduce(s, buf, SumOp());
  if (thread_x() == 0) out[c] = T(s);
}

}  // namespace nnk
