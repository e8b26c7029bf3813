// sigmoid / tanh on 8 lanes: the algorithm of f32_vactivation_avx512.cpp
// (same polynomials, same accuracy), with 2^n built in the exponent field
// since AVX2 has no vscalefps; the n % 8 tail runs through a padded vector so
// every element takes the same path.
#include <immintrin.h>

#include "vmath/vactivation.h"

namespace nnkern::vmath {
namespace {

constexpr float kQ0 = 0.49999991059303284f, kQ1 = 0.16666541993618011f, kQ2 = 0.04166920855641365f,
                kQ3 = 0.008366144262254238f, kQ4 = 0.0013752946397289634f;
constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187e-06f;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kP0 = -0.3333333134651184f, kP1 = 0.1333322674036026f, kP2 = -0.053949397057294846f,
                kP3 = 0.021715553477406502f, kP4 = -0.008214971981942654f, kP5 = 0.0021780235692858696f;

// a in [ln(FLT_MIN), 88] (callers clamp): n in [-126, 127], so 2^n is a normal float
// built directly in the exponent field. NaN propagates through r.
inline __m256 exp8(__m256 a) {
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), a);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(kQ4), r, _mm256_set1_ps(kQ3));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(kQ2));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(kQ1));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(kQ0));
  const __m256 p = _mm256_add_ps(_mm256_fmadd_ps(q, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

constexpr float kLnFltMin = -87.33654f;

inline __m256 sign_bit() { return _mm256_set1_ps(-0.0f); }

// As sigmoid16: below ln(FLT_MIN) = -87.33654 exp(-|x|) is under FLT_MIN and
// flushes, so those lanes take e = 0 (giving exactly 1 or 0); above it n >= -126.
inline __m256 sigmoid8(__m256 x) {
  const __m256 a = _mm256_or_ps(x, sign_bit());
  const __m256 tiny = _mm256_cmp_ps(a, _mm256_set1_ps(kLnFltMin), _CMP_LT_OQ);
  const __m256 e = _mm256_andnot_ps(tiny, exp8(_mm256_max_ps(_mm256_set1_ps(kLnFltMin), a)));  // NaN stays NaN
  const __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), e);
  const __m256 nonneg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
  return _mm256_blendv_ps(_mm256_div_ps(e, d), _mm256_div_ps(_mm256_set1_ps(1.0f), d), nonneg);
}

inline __m256 tanh8(__m256 x) {
  const __m256 t = _mm256_andnot_ps(sign_bit(), x);
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(kP5), x2, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(kP0));
  const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(x, x2), p, x);
  const __m256 tc = _mm256_min_ps(_mm256_set1_ps(10.0f), t);  // NaN stays NaN
  const __m256 e = exp8(_mm256_add_ps(tc, tc));
  const __m256 big = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                                   _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
  const __m256 is_small = _mm256_cmp_ps(t, _mm256_set1_ps(0.625f), _CMP_LT_OQ);
  // The sign of x, also onto the small path: there x + x^3 P(x^2) gives +0 for x = -0.
  return _mm256_or_ps(_mm256_blendv_ps(big, small, is_small), _mm256_and_ps(sign_bit(), x));
}

inline __m256 sigmoid_grad8(__m256 g, __m256 o) {
  return _mm256_mul_ps(_mm256_mul_ps(g, o), _mm256_sub_ps(_mm256_set1_ps(1.0f), o));
}

inline __m256 tanh_grad8(__m256 g, __m256 o) {
  return _mm256_mul_ps(g, _mm256_fnmadd_ps(o, o, _mm256_set1_ps(1.0f)));
}

// Tail lanes past n are padded with 0, a finite input for every rule.
template <class F>
inline void unary(std::size_t n, const float* x, float* y, F f) {
  for (; n >= 8; n -= 8, x += 8, y += 8) _mm256_storeu_ps(y, f(_mm256_loadu_ps(x)));
  if (n != 0) {
    float buf[8] = {};
    for (std::size_t i = 0; i < n; ++i) buf[i] = x[i];
    _mm256_storeu_ps(buf, f(_mm256_loadu_ps(buf)));
    for (std::size_t i = 0; i < n; ++i) y[i] = buf[i];
  }
}

template <class F>
inline void binary(std::size_t n, const float* a, const float* b, float* y, F f) {
  for (; n >= 8; n -= 8, a += 8, b += 8, y += 8) {
    _mm256_storeu_ps(y, f(_mm256_loadu_ps(a), _mm256_loadu_ps(b)));
  }
  if (n != 0) {
    float abuf[8] = {}, bbuf[8] = {};
    for (std::size_t i = 0; i < n; ++i) abuf[i] = a[i], bbuf[i] = b[i];
    _mm256_storeu_ps(abuf, f(_mm256_loadu_ps(abuf), _mm256_loadu_ps(bbuf)));
    for (std::size_t i = 0; i < n; ++i) y[i] = abuf[i];
  }
}

}  // namespace

void f32_vsigmoid_avx2(std::size_t n, const float* x, float* y) { unary(n, x, y, sigmoid8); }
void f32_vtanh_avx2(std::size_t n, const float* x, float* y) { unary(n, x, y, tanh8); }
void f32_vsigmoid_backward_avx2(std::size_t n, const float* grad, const float* out, float* grad_in) {
  binary(n, grad, out, grad_in, sigmoid_grad8);
}
void f32_vtanh_backward_avx2(std::size_t n, const float* grad, const float* out, float* grad_in) {
  binary(n, grad, out, grad_in, tanh_grad8);
}

}  // namespace nnkern::vmath
