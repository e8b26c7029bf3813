// Portable row kernels: the reference for the vector families' semantics.
#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "pool/pool_rows.h"

namespace nnkern::pool {

void f32_maxpool_row_scalar(std::size_t nrows, const float* const* rows, const std::int32_t* row_base,
                            std::size_t kw, std::size_t sw, std::size_t dw, std::size_t n, std::size_t c0,
                            float* out, std::int64_t* idx) {
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t c = c0 + k * sw;
    float best = -INFINITY;
    std::int64_t where = std::int64_t{row_base[0]} + static_cast<std::int64_t>(c);
    for (std::size_t r = 0; r < nrows; ++r) {
      for (std::size_t j = 0; j < kw; ++j) {
        const float v = rows[r][c + j * dw];
        if (v > best || std::isnan(v)) {
          best = v;
          where = std::int64_t{row_base[r]} + static_cast<std::int64_t>(c + j * dw);
        }
      }
    }
    out[k] = best;
    if (idx != nullptr) idx[k] = where;
  }
}

void f32_avgpool_row_scalar(std::size_t nrows, const float* const* rows, std::size_t kw, std::size_t sw,
                            std::size_t n, std::size_t c0, float divisor, float* out, std::size_t count,
                            std::ptrdiff_t in_step, std::ptrdiff_t out_step) {
  for (std::size_t t = 0; t < count; ++t, out += out_step) {
    const std::ptrdiff_t shift = static_cast<std::ptrdiff_t>(t) * in_step;
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t c = c0 + k * sw;
      float sum = 0.0f;
      for (std::size_t r = 0; r < nrows; ++r) {
        for (std::size_t j = 0; j < kw; ++j) sum += rows[r][shift + static_cast<std::ptrdiff_t>(c + j)];
      }
      out[k] = sum / divisor;
    }
  }
}

void f32_gavgpool_scalar(std::size_t planes, std::size_t hw, const float* x, float inv_hw, float* out) {
  for (std::size_t p = 0; p < planes; ++p, x += hw) {
    // four partial sums: independent add chains instead of one serial one
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    std::size_t i = 0;
    for (; i + 4 <= hw; i += 4) {
      for (int l = 0; l < 4; ++l) s[l] += x[i + l];
    }
    for (; i < hw; ++i) s[0] += x[i];
    out[p] = ((s[0] + s[1]) + (s[2] + s[3])) * inv_hw;
  }
}

void f32_maxpool_backward_scalar(const float* g, const std::int64_t* idx, std::size_t n_out, std::size_t n_in,
                                 float* dst, float* out) {
  maxpool_zero_scatter(g, idx, n_out, n_in, dst);
  if (out == nullptr) return;
  std::size_t i = 0;
#if defined(__SSE2__)
  for (; i < n_in && (reinterpret_cast<std::uintptr_t>(out + i) & 15) != 0; ++i) out[i] = dst[i];
  for (; i + 4 <= n_in; i += 4) _mm_stream_ps(out + i, _mm_loadu_ps(dst + i));
#endif
  for (; i < n_in; ++i) out[i] = dst[i];
}

}  // namespace nnkern::pool
