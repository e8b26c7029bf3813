// The reductions widen 8 floats at a time to an 8-lane double vector and keep
// four independent double accumulators per sum (32 floats per iteration) so
// the add latency hides behind the loads; the elementwise kernels are bound
// by loads and stores at one 16-float vector per step.
// Tails use masked loads/stores; masked-off lanes add exact zeros.
#include <immintrin.h>

#include "norm/bn_kernels.h"

namespace nnkern::norm {
namespace {

inline __mmask16 tail_mask(std::size_t n) { return _cvtu32_mask16((1u << n) - 1u); }

// 8 floats widened to doubles straight from memory (masked lanes read 0).
// The zero-masked convert with a full mask is the same instruction; the
// unmasked intrinsic trips GCC 12's -Wmaybe-uninitialized in its own header.
inline __m512d load_pd(const float* p) { return _mm512_maskz_cvtps_pd(0xff, _mm256_loadu_ps(p)); }
inline __m512d load_pd(const float* p, __mmask8 m) { return _mm512_maskz_cvtps_pd(0xff, _mm256_maskz_loadu_ps(m, p)); }

// Sum of four accumulators, then of the lanes, in a fixed order.
inline double hsum4(__m512d a, __m512d b, __m512d c, __m512d d) {
  alignas(64) double lanes[8];
  _mm512_store_pd(lanes, _mm512_add_pd(_mm512_add_pd(a, b), _mm512_add_pd(c, d)));
  return ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
}

// Masks of the first k (< 16) elements in the two 8-lane halves.
inline __mmask8 half_mask(std::size_t k, int half) {
  return static_cast<__mmask8>(((1u << k) - 1u) >> (8 * half));
}

}  // namespace

void f32_bn_stats_avx512(std::size_t n, const float* x, double shift, double* out) {
  const __m512d sh = _mm512_set1_pd(shift);
  __m512d s0 = _mm512_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
  __m512d q0 = s0, q1 = s0, q2 = s0, q3 = s0;
  for (; n >= 32; n -= 32, x += 32) {
    const __m512d d0 = _mm512_sub_pd(load_pd(x), sh), d1 = _mm512_sub_pd(load_pd(x + 8), sh);
    const __m512d d2 = _mm512_sub_pd(load_pd(x + 16), sh), d3 = _mm512_sub_pd(load_pd(x + 24), sh);
    s0 = _mm512_add_pd(s0, d0);
    s1 = _mm512_add_pd(s1, d1);
    s2 = _mm512_add_pd(s2, d2);
    s3 = _mm512_add_pd(s3, d3);
    q0 = _mm512_fmadd_pd(d0, d0, q0);
    q1 = _mm512_fmadd_pd(d1, d1, q1);
    q2 = _mm512_fmadd_pd(d2, d2, q2);
    q3 = _mm512_fmadd_pd(d3, d3, q3);
  }
  for (; n != 0; n -= n < 16 ? n : 16, x += 16) {
    const std::size_t k = n < 16 ? n : 16;
    // masked-off lanes subtract nothing: they add exact zeros
    const __mmask8 m0 = half_mask(k, 0), m1 = half_mask(k, 1);
    const __m512d d0 = _mm512_maskz_sub_pd(m0, load_pd(x, m0), sh);
    const __m512d d1 = _mm512_maskz_sub_pd(m1, load_pd(x + 8, m1), sh);
    s0 = _mm512_add_pd(s0, d0);
    s1 = _mm512_add_pd(s1, d1);
    q0 = _mm512_fmadd_pd(d0, d0, q0);
    q1 = _mm512_fmadd_pd(d1, d1, q1);
  }
  out[0] = hsum4(s0, s1, s2, s3);
  out[1] = hsum4(q0, q1, q2, q3);
}

void f32_bn_affine_avx512(std::size_t n, const float* x, float* y, float shift, float scale, float offset) {
  const __m512 sh = _mm512_set1_ps(shift), sc = _mm512_set1_ps(scale), of = _mm512_set1_ps(offset);
  for (; n >= 16; n -= 16, x += 16, y += 16) {
    _mm512_storeu_ps(y, _mm512_fmadd_ps(_mm512_sub_ps(_mm512_loadu_ps(x), sh), sc, of));
  }
  if (n != 0) {
    const __mmask16 m = tail_mask(n);
    _mm512_mask_storeu_ps(y, m, _mm512_fmadd_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x), sh), sc, of));
  }
}

void f32_bn_bwd_reduce_avx512(std::size_t n, const float* g, const float* x, double mean, double* out) {
  const __m512d mu = _mm512_set1_pd(mean);
  __m512d s0 = _mm512_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
  __m512d p0 = s0, p1 = s0, p2 = s0, p3 = s0;
  for (; n >= 32; n -= 32, g += 32, x += 32) {
    const __m512d g0 = load_pd(g), g1 = load_pd(g + 8), g2 = load_pd(g + 16), g3 = load_pd(g + 24);
    s0 = _mm512_add_pd(s0, g0);
    s1 = _mm512_add_pd(s1, g1);
    s2 = _mm512_add_pd(s2, g2);
    s3 = _mm512_add_pd(s3, g3);
    p0 = _mm512_fmadd_pd(g0, _mm512_sub_pd(load_pd(x), mu), p0);
    p1 = _mm512_fmadd_pd(g1, _mm512_sub_pd(load_pd(x + 8), mu), p1);
    p2 = _mm512_fmadd_pd(g2, _mm512_sub_pd(load_pd(x + 16), mu), p2);
    p3 = _mm512_fmadd_pd(g3, _mm512_sub_pd(load_pd(x + 24), mu), p3);
  }
  for (; n != 0; n -= n < 16 ? n : 16, g += 16, x += 16) {
    const std::size_t k = n < 16 ? n : 16;
    // masked-off lanes load g = 0, so they add 0 to both sums
    const __mmask8 m0 = half_mask(k, 0), m1 = half_mask(k, 1);
    const __m512d g0 = load_pd(g, m0), g1 = load_pd(g + 8, m1);
    s0 = _mm512_add_pd(s0, g0);
    s1 = _mm512_add_pd(s1, g1);
    p0 = _mm512_fmadd_pd(g0, _mm512_sub_pd(load_pd(x, m0), mu), p0);
    p1 = _mm512_fmadd_pd(g1, _mm512_sub_pd(load_pd(x + 8, m1), mu), p1);
  }
  out[0] = hsum4(s0, s1, s2, s3);
  out[1] = hsum4(p0, p1, p2, p3);
}

void f32_bn_bwd_input_avx512(std::size_t n, const float* g, const float* x, float* gi, float mean, float a, float b,
                             float c) {
  const __m512 mu = _mm512_set1_ps(mean), va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b), vc = _mm512_set1_ps(c);
  for (; n >= 16; n -= 16, g += 16, x += 16, gi += 16) {
    const __m512 t = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_loadu_ps(x), mu), vb, vc);
    _mm512_storeu_ps(gi, _mm512_fmadd_ps(_mm512_loadu_ps(g), va, t));
  }
  if (n != 0) {
    const __mmask16 m = tail_mask(n);
    const __m512 t = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x), mu), vb, vc);
    _mm512_mask_storeu_ps(gi, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, g), va, t));
  }
}

}  // namespace nnkern::norm
