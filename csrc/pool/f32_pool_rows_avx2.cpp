// 8 outputs of a row per vector; stride-2 taps are the even lanes of two
// adjacent 8-float loads (shuffle + lane permute). Outputs past the last full
// vector use the scalar loop, so no load reads beyond the last window.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "pool/pool_rows.h"

namespace nnkern::pool {
namespace {

// Tap values of 8 outputs whose first tap column is p[0]: p[k*sw], k < 8.
inline __m256 load_taps(const float* p, std::size_t sw) {
  if (sw == 1) return _mm256_loadu_ps(p);
  // columns 0..14 are used: the 16th column is masked off
  const __m256 lo = _mm256_loadu_ps(p);
  const __m256 hi = _mm256_maskload_ps(p + 8, _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, -1, 0));
  const __m256 t = _mm256_shuffle_ps(lo, hi, 0x88);  // lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), 0xd8));
}

inline bool is_nan(float v) { return v != v; }

}  // namespace

void f32_maxpool_row_avx2(std::size_t nrows, const float* const* rows, const std::int32_t* row_base,
                          std::size_t kw, std::size_t sw, std::size_t dw, std::size_t n, std::size_t c0,
                          float* out, std::int64_t* idx) {
  const __m256i lane_cols = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                               _mm256_set1_epi32(static_cast<int>(sw)));
  std::size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const std::size_t c = c0 + k * sw;
    __m256 best = _mm256_set1_ps(-__builtin_inff());
    __m256i where = _mm256_add_epi32(lane_cols, _mm256_set1_epi32(row_base[0] + static_cast<int>(c)));
    for (std::size_t r = 0; r < nrows; ++r) {
      for (std::size_t j = 0; j < kw; ++j) {
        const std::size_t col = c + j * dw;
        const __m256 v = load_taps(rows[r] + col, sw);
        // first max wins: replace only on strictly greater, or on NaN (PyTorch's rule)
        const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        best = _mm256_blendv_ps(best, v, take);
        const __m256i cand = _mm256_add_epi32(lane_cols, _mm256_set1_epi32(row_base[r] + static_cast<int>(col)));
        where = _mm256_castps_si256(
            _mm256_blendv_ps(_mm256_castsi256_ps(where), _mm256_castsi256_ps(cand), take));
      }
    }
    _mm256_storeu_ps(out + k, best);
    if (idx == nullptr) continue;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + k), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(where)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + k + 4),
                        _mm256_cvtepi32_epi64(_mm256_extracti128_si256(where, 1)));
  }
  for (; k < n; ++k) {
    const std::size_t c = c0 + k * sw;
    float best = -__builtin_inff();
    std::int64_t where = std::int64_t{row_base[0]} + static_cast<std::int64_t>(c);
    for (std::size_t r = 0; r < nrows; ++r) {
      for (std::size_t j = 0; j < kw; ++j) {
        const float v = rows[r][c + j * dw];
        if (v > best || is_nan(v)) {
          best = v;
          where = std::int64_t{row_base[r]} + static_cast<std::int64_t>(c + j * dw);
        }
      }
    }
    out[k] = best;
    if (idx != nullptr) idx[k] = where;
  }
}

void f32_avgpool_row_avx2(std::size_t nrows, const float* const* rows, std::size_t kw, std::size_t sw,
                          std::size_t n, std::size_t c0, float divisor, float* out, std::size_t count,
                          std::ptrdiff_t in_step, std::ptrdiff_t out_step) {
  // a power-of-two divisor: multiplying by its exact reciprocal gives the same bits
  int e = 0;
  const bool mul = divisor > 0.0f && std::frexp(divisor, &e) == 0.5f && e > -125 && e < 127;
  const __m256 div = _mm256_set1_ps(mul ? 1.0f / divisor : divisor);
  for (std::size_t t = 0; t < count; ++t, out += out_step) {
    const std::ptrdiff_t shift = static_cast<std::ptrdiff_t>(t) * in_step;
    std::size_t k = 0;
    for (; k + 8 <= n; k += 8) {
      const std::size_t c = c0 + k * sw;
      __m256 sum = _mm256_setzero_ps();
      for (std::size_t r = 0; r < nrows; ++r) {
        for (std::size_t j = 0; j < kw; ++j) sum = _mm256_add_ps(sum, load_taps(rows[r] + shift + c + j, sw));
      }
      _mm256_storeu_ps(out + k, mul ? _mm256_mul_ps(sum, div) : _mm256_div_ps(sum, div));
    }
    for (; k < n; ++k) {
      const std::size_t c = c0 + k * sw;
      float sum = 0.0f;
      for (std::size_t r = 0; r < nrows; ++r) {
        for (std::size_t j = 0; j < kw; ++j) sum += rows[r][shift + static_cast<std::ptrdiff_t>(c + j)];
      }
      out[k] = sum / divisor;
    }
  }
}

void f32_gavgpool_avx2(std::size_t planes, std::size_t hw, const float* x, float inv_hw, float* out) {
  for (std::size_t p = 0; p < planes; ++p, x += hw) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    std::size_t i = 0;
    for (; i + 16 <= hw; i += 16) {
      acc0 = _mm256_add_ps(acc0, _mm256_loadu_ps(x + i));
      acc1 = _mm256_add_ps(acc1, _mm256_loadu_ps(x + i + 8));
    }
    for (; i + 8 <= hw; i += 8) acc0 = _mm256_add_ps(acc0, _mm256_loadu_ps(x + i));
    const __m256 acc = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float sum = _mm_cvtss_f32(s);
    for (; i < hw; ++i) sum += x[i];
    out[p] = sum * inv_hw;
  }
}

void f32_maxpool_backward_avx2(const float* g, const std::int64_t* idx, std::size_t n_out, std::size_t n_in,
                               float* dst, float* out) {
  maxpool_zero_scatter(g, idx, n_out, n_in, dst);
  if (out == nullptr) return;
  std::size_t i = 0;
  for (; i < n_in && (reinterpret_cast<std::uintptr_t>(out + i) & 31) != 0; ++i) out[i] = dst[i];
  for (; i + 8 <= n_in; i += 8) _mm256_stream_ps(out + i, _mm256_loadu_ps(dst + i));
  for (; i < n_in; ++i) out[i] = dst[i];
}

}  // namespace nnkern::pool
