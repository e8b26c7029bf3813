// 16 outputs of a row per vector. Stride-2 taps are the even lanes of two
// adjacent 16-float loads (one permute); every load is masked to the columns
// the outputs use, so nothing past the last window is read.
#include <immintrin.h>

#include "pool/pool_rows.h"

namespace nnkern::pool {
namespace {

inline __mmask16 first_lanes(std::size_t n) { return _cvtu32_mask16(n >= 16 ? 0xffffu : (1u << n) - 1u); }

// Tap values for nb outputs whose first tap column is p[0]: p[k*sw], k < nb.
inline __m512 load_taps(const float* p, std::size_t sw, std::size_t nb) {
  if (sw == 1) return _mm512_maskz_loadu_ps(first_lanes(nb), p);
  const std::size_t used = 2 * nb - 1;  // columns 0, 2, ..., 2(nb-1)
  const __m512 lo = _mm512_maskz_loadu_ps(first_lanes(used), p);
  const __m512 hi = _mm512_maskz_loadu_ps(first_lanes(used > 16 ? used - 16 : 0), p + 16);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  return _mm512_permutex2var_ps(lo, even, hi);
}

inline void store_indices(std::int64_t* idx, __m512i v, std::size_t nb) {
  const __mmask16 m = first_lanes(nb);
  _mm512_mask_storeu_epi64(idx, static_cast<__mmask8>(m & 0xff), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)));
  _mm512_mask_storeu_epi64(idx + 8, static_cast<__mmask8>(m >> 8),
                           _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
}

}  // namespace

void f32_maxpool_row_avx512(std::size_t nrows, const float* const* rows, const std::int32_t* row_base,
                            std::size_t kw, std::size_t sw, std::size_t dw, std::size_t n, std::size_t c0,
                            float* out, std::int64_t* idx) {
  const __m512i lane_cols = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32(static_cast<int>(sw)));
  for (std::size_t k = 0; k < n; k += 16) {
    const std::size_t nb = n - k < 16 ? n - k : 16;
    const std::size_t c = c0 + k * sw;
    __m512 best = _mm512_set1_ps(-__builtin_inff());
    // the first tap's index, kept when no tap beats -inf
    __m512i where = _mm512_add_epi32(lane_cols, _mm512_set1_epi32(row_base[0] + static_cast<int>(c)));
    for (std::size_t r = 0; r < nrows; ++r) {
      for (std::size_t j = 0; j < kw; ++j) {
        const std::size_t col = c + j * dw;
        const __m512 v = load_taps(rows[r] + col, sw, nb);
        // first max wins: replace only on strictly greater, or on NaN (PyTorch's rule)
        const __mmask16 take = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, take, v);
        where = _mm512_mask_add_epi32(where, take, lane_cols, _mm512_set1_epi32(row_base[r] + static_cast<int>(col)));
      }
    }
    _mm512_mask_storeu_ps(out + k, first_lanes(nb), best);
    store_indices(idx + k, where, nb);
  }
}

void f32_avgpool_row_avx512(std::size_t nrows, const float* const* rows, std::size_t kw, std::size_t sw,
                            std::size_t n, std::size_t c0, float divisor, float* out) {
  const __m512 div = _mm512_set1_ps(divisor);
  for (std::size_t k = 0; k < n; k += 16) {
    const std::size_t nb = n - k < 16 ? n - k : 16;
    const std::size_t c = c0 + k * sw;
    __m512 sum = _mm512_setzero_ps();
    for (std::size_t r = 0; r < nrows; ++r) {
      for (std::size_t j = 0; j < kw; ++j) sum = _mm512_add_ps(sum, load_taps(rows[r] + c + j, sw, nb));
    }
    _mm512_mask_storeu_ps(out + k, first_lanes(nb), _mm512_div_ps(sum, div));
  }
}

void f32_gavgpool_avx512(std::size_t planes, std::size_t hw, const float* x, float inv_hw, float* out) {
  for (std::size_t p = 0; p < planes; ++p, x += hw) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    std::size_t i = 0;
    for (; i + 32 <= hw; i += 32) {
      acc0 = _mm512_add_ps(acc0, _mm512_loadu_ps(x + i));
      acc1 = _mm512_add_ps(acc1, _mm512_loadu_ps(x + i + 16));
    }
    for (; i < hw; i += 16) acc0 = _mm512_add_ps(acc0, _mm512_maskz_loadu_ps(first_lanes(hw - i), x + i));
    out[p] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) * inv_hw;
  }
}

}  // namespace nnkern::pool
