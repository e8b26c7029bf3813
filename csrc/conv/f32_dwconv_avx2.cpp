// 8 output pixels per vector, all taps accumulated in registers before one
// store. Stride 1 loads contiguous (masked for the row's tail); other strides
// gather lanes x*sw.
#include <immintrin.h>

#include "conv/dwconv.h"

namespace nnkern::conv {
namespace {

inline __m256i lanes(std::size_t n) {
  const int k = n >= 8 ? 8 : static_cast<int>(n);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline __m256 load(const float* p, std::size_t sw, __m256i idx, __m256i m) {
  if (sw == 1) return _mm256_maskload_ps(p, m);
  return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, idx, _mm256_castsi256_ps(m), 4);
}

// Lanes summed pairwise in a fixed order.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace

void f32_dwconv_row_avx2(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                         const float* const* rows, const float* w, float init, float* out) {
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                         _mm256_set1_epi32(static_cast<int>(sw)));
  for (std::size_t x = 0; x < ow; x += 8) {
    const __m256i m = lanes(ow - x);
    __m256 acc = _mm256_set1_ps(init);
    for (std::size_t i = 0; i < kh; ++i) {
      const float* r = rows[i] + x * sw;
      for (std::size_t j = 0; j < kw; ++j) {
        acc = _mm256_fmadd_ps(_mm256_set1_ps(w[i * kw + j]), load(r + j * dw, sw, idx, m), acc);
      }
    }
    _mm256_maskstore_ps(out + x, m, acc);
  }
}

void f32_dwconv_wgrad_row_avx2(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                               const float* const* rows, const float* g, float* acc) {
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                         _mm256_set1_epi32(static_cast<int>(sw)));
  for (std::size_t i = 0; i < kh; ++i) {
    for (std::size_t j = 0; j < kw; ++j) {
      const float* r = rows[i] + j * dw;
      __m256 s = _mm256_setzero_ps();
      for (std::size_t x = 0; x < ow; x += 8) {
        const __m256i m = lanes(ow - x);
        s = _mm256_fmadd_ps(_mm256_maskload_ps(g + x, m), load(r + x * sw, sw, idx, m), s);
      }
      acc[i * kw + j] += hsum(s);
    }
  }
}

}  // namespace nnkern::conv
