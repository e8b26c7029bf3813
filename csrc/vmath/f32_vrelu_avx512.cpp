// One 16-lane vector per iteration: relu is bound by loads and stores, which
// this already saturates; the n % 16 tail uses masked loads and stores.
#include <immintrin.h>

#include "vmath/vrelu.h"

namespace nnkern::vmath {
namespace {

// Keep x when its bits are a positive int32 (x > 0, denormals and +Inf
// included) or when it is NaN of either sign.
inline __m512 relu16(__m512 v) {
  const __mmask16 keep = _mm512_cmpgt_epi32_mask(_mm512_castps_si512(v), _mm512_setzero_si512()) |
                         _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_maskz_mov_ps(keep, v);
}

// Pass grad where 0 < bits(out) <= bits(+Inf).
inline __m512 relu_grad16(__m512 grad, __m512 out) {
  const __m512i bits = _mm512_castps_si512(out);
  const __mmask16 keep = _mm512_cmpgt_epi32_mask(bits, _mm512_setzero_si512()) &
                         _mm512_cmple_epi32_mask(bits, _mm512_set1_epi32(0x7f800000));
  return _mm512_maskz_mov_ps(keep, grad);
}

inline __mmask16 tail_mask(std::size_t n) { return _cvtu32_mask16((1u << n) - 1u); }

}  // namespace

void f32_vrelu_avx512(std::size_t n, const float* x, float* y) {
  for (; n >= 16; n -= 16, x += 16, y += 16) {
    _mm512_storeu_ps(y, relu16(_mm512_loadu_ps(x)));
  }
  if (n != 0) {
    const __mmask16 m = tail_mask(n);
    _mm512_mask_storeu_ps(y, m, relu16(_mm512_maskz_loadu_ps(m, x)));
  }
}

void f32_vrelu_backward_avx512(std::size_t n, const float* grad, const float* out, float* grad_in) {
  for (; n >= 16; n -= 16, grad += 16, out += 16, grad_in += 16) {
    _mm512_storeu_ps(grad_in, relu_grad16(_mm512_loadu_ps(grad), _mm512_loadu_ps(out)));
  }
  if (n != 0) {
    const __mmask16 m = tail_mask(n);
    _mm512_mask_storeu_ps(grad_in, m, relu_grad16(_mm512_maskz_loadu_ps(m, grad), _mm512_maskz_loadu_ps(m, out)));
  }
}

}  // namespace nnkern::vmath
