// The project's own GEMM (no cuBLAS): C = A B (+ C) with shared-memory tiles,
// any strides for A and B (so transposes are free), batched over blockIdx.z,
// and a fused epilogue (row or column bias, an addend of C's layout, relu).
//
// A block of 16 x 16 threads computes a 64 x 64 tile of C, each thread a 4 x 4
// register tile (rows ty + 16 i, columns tx + 16 j: the warp's stores and shared
// reads are contiguous), over K in steps of 16 staged in shared memory: every
// shared value read feeds 4 multiply-adds. Each element of C is summed in k
// order by one thread: the same bits on every run.
#pragma once

#include <cstdint>

#include "cuda/kernels/common.cuh"

namespace nnk {

constexpr unsigned kGemmThreads = 16;               // a block is kGemmThreads x kGemmThreads threads
constexpr unsigned kMicro = 4;                      // each computes kMicro x kMicro elements of C
constexpr unsigned kBlockTile = kGemmThreads * kMicro;  // 64: the block's tile of C
constexpr unsigned kDepth = 16;                     // K staged per step
constexpr unsigned kPad = kBlockTile + 1;           // shared row length (+1 against bank conflicts)
constexpr unsigned kSumThreads = 256;  // one block per channel_sum output (a power of two)

// A(m, k) = a[m * a_m + k * a_k], B(k, n) = b[k * b_k + n * b_n], C(m, n) = c[m * ldc + n];
// batch z offsets a, b, c (and addend) by z times their batch strides. The reduction index
// may run over two axes: k = q * k_inner + r (r < k_inner) addresses q * a_ko + r * a_k in A
// and q * b_ko + r * b_k in B (a convolution's weight gradient sums over images and pixels).
struct GemmArgs {
  std::int64_t m, n, k;
  std::int64_t a_m, a_k, a_batch;
  std::int64_t b_k, b_n, b_batch;
  std::int64_t ldc, c_batch;
  std::int64_t k_inner, a_ko, b_ko;
  bool accumulate;  // C += A B instead of C = A B
  bool relu;        // after bias and addend
};

// The offset of reduction index k along one operand (inner stride `inner`, outer stride `outer`).
NNK_DEVICE std::int64_t k_offset(std::int64_t k, const GemmArgs& g, std::int64_t outer, std::int64_t inner) {
  if (g.k_inner >= g.k) return k * inner;  // one axis, the common case: no 64-bit division
  return (k / g.k_inner) * outer + (k % g.k_inner) * inner;
}

template <class T>
NNK_GLOBAL void gemm_kernel(const T* a, const T* b, T* c, const T* row_bias, const T* col_bias, const T* addend,
                            GemmArgs g) {
  NNK_SHARED(T, as, kDepth * kPad);  // as[kk * kPad + r] = A(tile row r, k0 + kk)
  NNK_SHARED(T, bs, kDepth * kPad);  // bs[kk * kPad + j] = B(k0 + kk, tile column j)
  const unsigned tx = thread_x(), ty = thread_y(), tid = ty * kGemmThreads + tx;
  constexpr unsigned kThreadsPerBlock = kGemmThreads * kGemmThreads;
  const std::int64_t z = block_z();
  a += z * g.a_batch;
  b += z * g.b_batch;
  c += z * g.c_batch;
  // tiles past the grid (a grid's y extent is at most 65535 blocks) are taken by later passes; the
  // trip counts depend only on block indices, so every thread of a block reaches the same barriers
  const std::int64_t tiles_m = (g.m + kBlockTile - 1) / kBlockTile, tiles_n = (g.n + kBlockTile - 1) / kBlockTile;
  for (std::int64_t tm = block_y(); tm < tiles_m; tm += grid_dim_y()) {
    for (std::int64_t tn = block_x(); tn < tiles_n; tn += grid_dim_x()) {
      const std::int64_t row0 = tm * kBlockTile, col0 = tn * kBlockTile;
      T acc[kMicro][kMicro];
      NNK_UNROLL for (unsigned i = 0; i < kMicro; ++i) {
        NNK_UNROLL for (unsigned j = 0; j < kMicro; ++j) acc[i][j] = T(0);
      }
      for (std::int64_t k0 = 0; k0 < g.k; k0 += kDepth) {
        // each thread stages kBlockTile * kDepth / 256 = 4 elements of each operand; zeros past the edges
        for (unsigned l = tid; l < kBlockTile * kDepth; l += kThreadsPerBlock) {
          const unsigned r = l / kDepth, kk = l % kDepth;  // consecutive threads: consecutive k of one row
          const std::int64_t row = row0 + r, ka = k0 + kk;
          as[kk * kPad + r] = (row < g.m && ka < g.k) ? a[row * g.a_m + k_offset(ka, g, g.a_ko, g.a_k)] : T(0);
          const unsigned kb = l / kBlockTile, j = l % kBlockTile;  // consecutive threads: consecutive columns
          const std::int64_t col = col0 + j, kbb = k0 + kb;
          bs[kb * kPad + j] = (kbb < g.k && col < g.n) ? b[k_offset(kbb, g, g.b_ko, g.b_k) + col * g.b_n] : T(0);
        }
        sync();
        NNK_UNROLL for (unsigned kk = 0; kk < kDepth; ++kk) {
          T af[kMicro], bf[kMicro];
          NNK_UNROLL for (unsigned i = 0; i < kMicro; ++i) af[i] = as[kk * kPad + ty + i * kGemmThreads];
          NNK_UNROLL for (unsigned j = 0; j < kMicro; ++j) bf[j] = bs[kk * kPad + tx + j * kGemmThreads];
          NNK_UNROLL for (unsigned i = 0; i < kMicro; ++i) {
            NNK_UNROLL for (unsigned j = 0; j < kMicro; ++j) acc[i][j] += af[i] * bf[j];
          }
        }
        sync();
      }
      NNK_UNROLL for (unsigned i = 0; i < kMicro; ++i) {
        const std::int64_t row = row0 + ty + i * kGemmThreads;
        NNK_UNROLL for (unsigned j = 0; j < kMicro; ++j) {
          const std::int64_t col = col0 + tx + j * kGemmThreads;
          if (row >= g.m || col >= g.n) continue;
          const std::int64_t at = row * g.ldc + col;
          T v = acc[i][j];
          if (g.accumulate) v += c[at];
          if (row_bias != nullptr) v += row_bias[row];
          if (col_bias != nullptr) v += col_bias[col];
          if (addend != nullptr) v += addend[z * g.c_batch + at];
          if (g.relu && !(v > T(0) || isnan_(v))) v = T(0);
          c[at] = v;
        }
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
