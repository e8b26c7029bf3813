// One 4-lane vector per iteration; the n % 4 tail goes to the scalar kernel.
#include <immintrin.h>

#include "vmath/vrelu.h"

namespace nnkern::vmath {
namespace {

inline __m256d relu4(__m256d v) {
  const __m256i positive = _mm256_cmpgt_epi64(_mm256_castpd_si256(v), _mm256_setzero_si256());
  const __m256d keep = _mm256_or_pd(_mm256_castsi256_pd(positive), _mm256_cmp_pd(v, v, _CMP_UNORD_Q));
  return _mm256_and_pd(v, keep);
}

inline __m256d relu_grad4(__m256d grad, __m256d out) {
  const __m256i bits = _mm256_castpd_si256(out);
  const __m256i keep = _mm256_and_si256(_mm256_cmpgt_epi64(bits, _mm256_setzero_si256()),
                                        _mm256_cmpgt_epi64(_mm256_set1_epi64x(0x7ff0000000000001), bits));
  return _mm256_and_pd(grad, _mm256_castsi256_pd(keep));
}

}  // namespace

void f64_vrelu_avx2(std::size_t n, const double* x, double* y) {
  for (; n >= 4; n -= 4, x += 4, y += 4) {
    _mm256_storeu_pd(y, relu4(_mm256_loadu_pd(x)));
  }
  f64_vrelu_scalar(n, x, y);
}

void f64_vrelu_backward_avx2(std::size_t n, const double* grad, const double* out, double* grad_in) {
  for (; n >= 4; n -= 4, grad += 4, out += 4, grad_in += 4) {
    _mm256_storeu_pd(grad_in, relu_grad4(_mm256_loadu_pd(grad), _mm256_loadu_pd(out)));
  }
  f64_vrelu_backward_scalar(n, grad, out, grad_in);
}

}  // namespace nnkern::vmath
