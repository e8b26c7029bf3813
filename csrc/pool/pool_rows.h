// Pooling micro-kernels over one output row segment, float32, one function per
// kernel family (f32_pool_rows_avx512.cpp, ...).
//
// A row kernel computes n consecutive outputs of one output row whose windows
// lie inside the input horizontally: output k reads columns
// c0 + k*sw + j*dw (j < kw) of each of the nrows input rows rows[r] (only the
// rows inside the input; the operator drops the others). sw is 1 or 2.
//
// maxpool: PyTorch's scan in row-major tap order, max starting at -inf and
// the index at the first tap; a tap replaces when val > max or val is NaN.
// index = row_base[r] + column (row_base[r] = y * W, the plane fits int32);
// idx == nullptr: the values alone (same values, no index stores).
// avgpool: out = (sum over taps in row-major order) / divisor, for `count`
// output rows at once: row t reads rows[r] + t*in_step and writes
// out + t*out_step (consecutive output rows whose windows all lie inside the
// input vertically, one call per plane instead of one per row).
// gavgpool: out[p] = sum(x[p*hw .. (p+1)*hw)) * inv_hw for `planes` planes.
// maxpool backward, one plane: dst[0, n_in) = 0, then dst[idx[k]] += g[k] for
// k = 0, 1, ... n_out - 1 (PyTorch's order; an index outside [0, n_in) is
// skipped); with out != nullptr, dst is the caller's scratch plane and is
// then copied to out with non-temporal stores (the caller fences).
#pragma once

#include <cstddef>
#include <cstdint>

namespace nnkern::pool {

using F32MaxpoolRowFn = void (*)(std::size_t nrows, const float* const* rows, const std::int32_t* row_base,
                                 std::size_t kw, std::size_t sw, std::size_t dw, std::size_t n, std::size_t c0,
                                 float* out, std::int64_t* idx);
using F32AvgpoolRowFn = void (*)(std::size_t nrows, const float* const* rows, std::size_t kw, std::size_t sw,
                                 std::size_t n, std::size_t c0, float divisor, float* out, std::size_t count,
                                 std::ptrdiff_t in_step, std::ptrdiff_t out_step);
using F32GavgpoolFn = void (*)(std::size_t planes, std::size_t hw, const float* x, float inv_hw, float* out);
using F32MaxpoolBackwardFn = void (*)(const float* g, const std::int64_t* idx, std::size_t n_out, std::size_t n_in,
                                      float* dst, float* out);

// The max-pool backward's scatter of one plane, shared by every family: dst[idx[k]] += g[k] in k
// order (adjacent windows share input elements; indices outside the plane are skipped).
inline void maxpool_scatter(const float* g, const std::int64_t* idx, std::size_t n_out, std::size_t n_in,
                            float* dst) {
  for (std::size_t k = 0; k < n_out; ++k) {
    const std::int64_t i = idx[k];
    if (static_cast<std::uint64_t>(i) < n_in) dst[i] += g[k];
  }
}

// dst (n_in elements) zeroed, then the scatter: the portable families' first half of the backward.
inline void maxpool_zero_scatter(const float* g, const std::int64_t* idx, std::size_t n_out, std::size_t n_in,
                                 float* dst) {
  for (std::size_t i = 0; i < n_in; ++i) dst[i] = 0.0f;
  maxpool_scatter(g, idx, n_out, n_in, dst);
}

#define NNKERN_DECLARE_POOL_ROWS(isa)                                                                          \
  void f32_maxpool_row_##isa(std::size_t nrows, const float* const* rows, const std::int32_t* row_base,       \
                             std::size_t kw, std::size_t sw, std::size_t dw, std::size_t n, std::size_t c0,   \
                             float* out, std::int64_t* idx);                                                   \
  void f32_avgpool_row_##isa(std::size_t nrows, const float* const* rows, std::size_t kw, std::size_t sw,     \
                             std::size_t n, std::size_t c0, float divisor, float* out, std::size_t count,     \
                             std::ptrdiff_t in_step, std::ptrdiff_t out_step);                                \
  void f32_gavgpool_##isa(std::size_t planes, std::size_t hw, const float* x, float inv_hw, float* out);      \
  void f32_maxpool_backward_##isa(const float* g, const std::int64_t* idx, std::size_t n_out, std::size_t n_in, \
                                  float* dst, float* out);

NNKERN_DECLARE_POOL_ROWS(scalar)
NNKERN_DECLARE_POOL_ROWS(avx2)
NNKERN_DECLARE_POOL_ROWS(avx512)
#undef NNKERN_DECLARE_POOL_ROWS

}  // namespace nnkern::pool
