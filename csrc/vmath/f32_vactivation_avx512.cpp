// sigmoid / tanh on 16 lanes with a polynomial exp (range reduction to
// |r| <= ln2/2, then 2^n by vscalefps, which also underflows gracefully).
// Measured max error vs float64 (exhaustive test): see vactivation.h and the
// test's ULP_BOUND; the tail uses masked loads/stores, so every element takes
// the same path.
#include <immintrin.h>

#include "vmath/vactivation.h"

namespace nnkern::vmath {
namespace {

// exp(r) = 1 + r + r^2 * Q(r) on |r| <= ln2/2: a degree-4 least-squares fit
// of Q in relative error (0.12 ulp before rounding).
constexpr float kQ0 = 0.49999991059303284f, kQ1 = 0.16666541993618011f, kQ2 = 0.04166920855641365f,
                kQ3 = 0.008366144262254238f, kQ4 = 0.0013752946397289634f;
// ln2 split so that n * kLn2Hi is exact for |n| < 2^11 (kLn2Hi has 12 bits).
constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187e-06f;
constexpr float kLog2e = 1.4426950408889634f;

// a in [-100, 88] (callers clamp; NaN propagates).
inline __m512 exp16(__m512 a) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), a);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(kQ4), r, _mm512_set1_ps(kQ3));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(kQ2));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(kQ1));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(kQ0));
  const __m512 p = _mm512_add_ps(_mm512_fmadd_ps(q, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// A function, not a namespace-scope constant: a static initializer would run
// AVX-512 code at import on any CPU.
inline __m512 sign_bit() { return _mm512_set1_ps(-0.0f); }

// e = exp(-|x|) never overflows; 1/(1+e) for x >= 0, e/(1+e) below (no
// cancellation either side). -100 clamps -Inf (exp(-100) flushes to 0).
inline __m512 sigmoid16(__m512 x) {
  const __m512 a = _mm512_max_ps(_mm512_set1_ps(-100.0f), _mm512_or_ps(x, sign_bit()));  // NaN stays NaN
  const __m512 e = exp16(a);
  const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), e);
  const __mmask16 nonneg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
  return _mm512_mask_blend_ps(nonneg, _mm512_div_ps(e, d), _mm512_div_ps(_mm512_set1_ps(1.0f), d));
}

// tanh(x) = x + x^3 * P(x^2) for |x| < 0.625 (a degree-5 least-squares fit,
// 0.02 ulp): keeps full relative accuracy near 0. Above, 1 - 2 / (exp(2|x|) + 1)
// with the sign of x: there 2/(e+1) <= 0.45 < tanh, so the subtraction loses
// under 1 ulp. |x| clamps at 10, where tanh rounds to 1.
constexpr float kP0 = -0.3333333134651184f, kP1 = 0.1333322674036026f, kP2 = -0.053949397057294846f,
                kP3 = 0.021715553477406502f, kP4 = -0.008214971981942654f, kP5 = 0.0021780235692858696f;

inline __m512 tanh16(__m512 x) {
  const __m512 t = _mm512_andnot_ps(sign_bit(), x);
  const __m512 x2 = _mm512_mul_ps(x, x);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(kP5), x2, _mm512_set1_ps(kP4));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(kP3));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(kP2));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(kP1));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(kP0));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(x, x2), p, x);
  const __m512 tc = _mm512_min_ps(_mm512_set1_ps(10.0f), t);  // NaN stays NaN
  const __m512 e = exp16(_mm512_add_ps(tc, tc));
  const __m512 big = _mm512_sub_ps(_mm512_set1_ps(1.0f),
                                   _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
  const __mmask16 is_small = _mm512_cmp_ps_mask(t, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
  // The sign of x, also onto the small path: there x + x^3 P(x^2) gives +0 for x = -0.
  return _mm512_or_ps(_mm512_mask_blend_ps(is_small, big, small), _mm512_and_ps(sign_bit(), x));
}

inline __m512 sigmoid_grad16(__m512 g, __m512 o) {
  return _mm512_mul_ps(_mm512_mul_ps(g, o), _mm512_sub_ps(_mm512_set1_ps(1.0f), o));
}

inline __m512 tanh_grad16(__m512 g, __m512 o) {
  return _mm512_mul_ps(g, _mm512_fnmadd_ps(o, o, _mm512_set1_ps(1.0f)));
}

inline __mmask16 tail_mask(std::size_t n) { return _cvtu32_mask16((1u << n) - 1u); }

template <class F>
inline void unary(std::size_t n, const float* x, float* y, F f) {
  for (; n >= 16; n -= 16, x += 16, y += 16) _mm512_storeu_ps(y, f(_mm512_loadu_ps(x)));
  if (n != 0) {
    const __mmask16 m = tail_mask(n);
    _mm512_mask_storeu_ps(y, m, f(_mm512_maskz_loadu_ps(m, x)));
  }
}

template <class F>
inline void binary(std::size_t n, const float* a, const float* b, float* y, F f) {
  for (; n >= 16; n -= 16, a += 16, b += 16, y += 16) {
    _mm512_storeu_ps(y, f(_mm512_loadu_ps(a), _mm512_loadu_ps(b)));
  }
  if (n != 0) {
    const __mmask16 m = tail_mask(n);
    _mm512_mask_storeu_ps(y, m, f(_mm512_maskz_loadu_ps(m, a), _mm512_maskz_loadu_ps(m, b)));
  }
}

}  // namespace

void f32_vsigmoid_avx512(std::size_t n, const float* x, float* y) { unary(n, x, y, sigmoid16); }
void f32_vtanh_avx512(std::size_t n, const float* x, float* y) { unary(n, x, y, tanh16); }
void f32_vsigmoid_backward_avx512(std::size_t n, const float* grad, const float* out, float* grad_in) {
  binary(n, grad, out, grad_in, sigmoid_grad16);
}
void f32_vtanh_backward_avx512(std::size_t n, const float* grad, const float* out, float* grad_in) {
  binary(n, grad, out, grad_in, tanh_grad16);
}

}  // namespace nnkern::vmath
