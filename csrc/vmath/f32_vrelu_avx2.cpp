// One 8-lane vector per iteration; the n % 8 tail goes to the scalar kernel.
#include <immintrin.h>

#include "vmath/vrelu.h"

namespace nnkern::vmath {
namespace {

// Keep x when its bits are a positive int32 or it is NaN (see vrelu.h).
inline __m256 relu8(__m256 v) {
  const __m256i positive = _mm256_cmpgt_epi32(_mm256_castps_si256(v), _mm256_setzero_si256());
  const __m256 keep = _mm256_or_ps(_mm256_castsi256_ps(positive), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_and_ps(v, keep);
}

// Pass grad where 0 < bits(out) < bits(+Inf) + 1.
inline __m256 relu_grad8(__m256 grad, __m256 out) {
  const __m256i bits = _mm256_castps_si256(out);
  const __m256i keep = _mm256_and_si256(_mm256_cmpgt_epi32(bits, _mm256_setzero_si256()),
                                        _mm256_cmpgt_epi32(_mm256_set1_epi32(0x7f800001), bits));
  return _mm256_and_ps(grad, _mm256_castsi256_ps(keep));
}

}  // namespace

void f32_vrelu_avx2(std::size_t n, const float* x, float* y) {
  for (; n >= 8; n -= 8, x += 8, y += 8) {
    _mm256_storeu_ps(y, relu8(_mm256_loadu_ps(x)));
  }
  f32_vrelu_scalar(n, x, y);
}

void f32_vrelu_backward_avx2(std::size_t n, const float* grad, const float* out, float* grad_in) {
  for (; n >= 8; n -= 8, grad += 8, out += 8, grad_in += 8) {
    _mm256_storeu_ps(grad_in, relu_grad8(_mm256_loadu_ps(grad), _mm256_loadu_ps(out)));
  }
  f32_vrelu_backward_scalar(n, grad, out, grad_in);
}

}  // namespace nnkern::vmath
