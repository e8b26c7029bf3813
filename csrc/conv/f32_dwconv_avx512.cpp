// 16 output pixels per vector, all taps accumulated in registers before one
// store. Stride 1 loads contiguous (masked for the row's tail); other strides
// gather lanes x*sw. The kernel rows are few (3..7), so the tap loop stays a
// runtime loop: its weight broadcasts come from L1 and are not the bottleneck
// next to the loads.
#include <immintrin.h>

#include "conv/dwconv.h"

namespace nnkern::conv {
namespace {

inline __mmask16 lanes(std::size_t n) { return n >= 16 ? __mmask16(0xffff) : _cvtu32_mask16((1u << n) - 1u); }

inline __m512 load(const float* p, std::size_t sw, __m512i idx, __mmask16 m) {
  if (sw == 1) return _mm512_maskz_loadu_ps(m, p);
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, p, 4);
}

}  // namespace

void f32_dwconv_row_avx512(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                           const float* const* rows, const float* w, float init, float* out) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(sw)));
  for (std::size_t x = 0; x < ow; x += 16) {
    const __mmask16 m = lanes(ow - x);
    __m512 acc = _mm512_set1_ps(init);
    for (std::size_t i = 0; i < kh; ++i) {
      const float* r = rows[i] + x * sw;
      for (std::size_t j = 0; j < kw; ++j) {
        acc = _mm512_fmadd_ps(_mm512_set1_ps(w[i * kw + j]), load(r + j * dw, sw, idx, m), acc);
      }
    }
    _mm512_mask_storeu_ps(out + x, m, acc);
  }
}

void f32_dwconv_wgrad_row_avx512(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                                 const float* const* rows, const float* g, float* acc) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(sw)));
  for (std::size_t i = 0; i < kh; ++i) {
    for (std::size_t j = 0; j < kw; ++j) {
      const float* r = rows[i] + j * dw;
      __m512 s = _mm512_setzero_ps();
      for (std::size_t x = 0; x < ow; x += 16) {
        const __mmask16 m = lanes(ow - x);
        s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, g + x), load(r + x * sw, sw, idx, m), s);
      }
      acc[i * kw + j] += _mm512_reduce_add_ps(s);
    }
  }
}

}  // namespace nnkern::conv
