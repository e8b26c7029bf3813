// One 8-lane vector per iteration (see f32_vrelu_avx512.cpp); masked tail.
#include <immintrin.h>

#include "vmath/vrelu.h"

namespace nnkern::vmath {
namespace {

inline __m512d relu8(__m512d v) {
  const __mmask8 keep = _mm512_cmpgt_epi64_mask(_mm512_castpd_si512(v), _mm512_setzero_si512()) |
                        _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q);
  return _mm512_maskz_mov_pd(keep, v);
}

inline __m512d relu_grad8(__m512d grad, __m512d out) {
  const __m512i bits = _mm512_castpd_si512(out);
  const __mmask8 keep = _mm512_cmpgt_epi64_mask(bits, _mm512_setzero_si512()) &
                        _mm512_cmple_epi64_mask(bits, _mm512_set1_epi64(0x7ff0000000000000));
  return _mm512_maskz_mov_pd(keep, grad);
}

inline __mmask8 tail_mask(std::size_t n) { return _cvtu32_mask8((1u << n) - 1u); }

}  // namespace

void f64_vrelu_avx512(std::size_t n, const double* x, double* y) {
  for (; n >= 8; n -= 8, x += 8, y += 8) {
    _mm512_storeu_pd(y, relu8(_mm512_loadu_pd(x)));
  }
  if (n != 0) {
    const __mmask8 m = tail_mask(n);
    _mm512_mask_storeu_pd(y, m, relu8(_mm512_maskz_loadu_pd(m, x)));
  }
}

void f64_vrelu_backward_avx512(std::size_t n, const double* grad, const double* out, double* grad_in) {
  for (; n >= 8; n -= 8, grad += 8, out += 8, grad_in += 8) {
    _mm512_storeu_pd(grad_in, relu_grad8(_mm512_loadu_pd(grad), _mm512_loadu_pd(out)));
  }
  if (n != 0) {
    const __mmask8 m = tail_mask(n);
    _mm512_mask_storeu_pd(grad_in, m, relu_grad8(_mm512_maskz_loadu_pd(m, grad), _mm512_maskz_loadu_pd(m, out)));
  }
}

}  // namespace nnkern::vmath
