// 8 floats per vector, widened to two 4-lane double vectors for the sums,
// with four independent double accumulators per sum (16 floats per
// iteration) so the add latency hides behind the loads. Tails of fewer than
// 8 elements run a scalar loop with its own accumulators.
#include <immintrin.h>

#include "norm/bn_kernels.h"

namespace nnkern::norm {
namespace {

inline __m256d lo_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
inline __m256d hi_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }

// Sum of four accumulators in a fixed order, then across lanes.
inline double hsum4(__m256d a, __m256d b, __m256d c, __m256d d) {
  const __m256d s = _mm256_add_pd(_mm256_add_pd(a, b), _mm256_add_pd(c, d));
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

}  // namespace

void f32_bn_stats_avx2(std::size_t n, const float* x, double shift, double* out) {
  const __m256d sh = _mm256_set1_pd(shift);
  __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
  __m256d q0 = s0, q1 = s0, q2 = s0, q3 = s0;
  for (; n >= 16; n -= 16, x += 16) {
    const __m256 a = _mm256_loadu_ps(x), b = _mm256_loadu_ps(x + 8);
    const __m256d d0 = _mm256_sub_pd(lo_pd(a), sh), d1 = _mm256_sub_pd(hi_pd(a), sh);
    const __m256d d2 = _mm256_sub_pd(lo_pd(b), sh), d3 = _mm256_sub_pd(hi_pd(b), sh);
    s0 = _mm256_add_pd(s0, d0);
    s1 = _mm256_add_pd(s1, d1);
    s2 = _mm256_add_pd(s2, d2);
    s3 = _mm256_add_pd(s3, d3);
    q0 = _mm256_fmadd_pd(d0, d0, q0);
    q1 = _mm256_fmadd_pd(d1, d1, q1);
    q2 = _mm256_fmadd_pd(d2, d2, q2);
    q3 = _mm256_fmadd_pd(d3, d3, q3);
  }
  if (n >= 8) {
    const __m256 a = _mm256_loadu_ps(x);
    const __m256d d0 = _mm256_sub_pd(lo_pd(a), sh), d1 = _mm256_sub_pd(hi_pd(a), sh);
    s0 = _mm256_add_pd(s0, d0);
    s1 = _mm256_add_pd(s1, d1);
    q0 = _mm256_fmadd_pd(d0, d0, q0);
    q1 = _mm256_fmadd_pd(d1, d1, q1);
    n -= 8;
    x += 8;
  }
  double s = 0, q = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - shift;
    s += d;
    q += d * d;
  }
  out[0] = hsum4(s0, s1, s2, s3) + s;
  out[1] = hsum4(q0, q1, q2, q3) + q;
}

void f32_bn_affine_avx2(std::size_t n, const float* x, float* y, float shift, float scale, float offset) {
  const __m256 sh = _mm256_set1_ps(shift), sc = _mm256_set1_ps(scale), of = _mm256_set1_ps(offset);
  for (; n >= 8; n -= 8, x += 8, y += 8) {
    _mm256_storeu_ps(y, _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x), sh), sc, of));
  }
  for (std::size_t i = 0; i < n; ++i) y[i] = (x[i] - shift) * scale + offset;
}

void f32_bn_bwd_reduce_avx2(std::size_t n, const float* g, const float* x, double mean, double* out) {
  const __m256d mu = _mm256_set1_pd(mean);
  __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
  __m256d p0 = s0, p1 = s0, p2 = s0, p3 = s0;
  for (; n >= 16; n -= 16, g += 16, x += 16) {
    const __m256 ga = _mm256_loadu_ps(g), gb = _mm256_loadu_ps(g + 8);
    const __m256 xa = _mm256_loadu_ps(x), xb = _mm256_loadu_ps(x + 8);
    const __m256d g0 = lo_pd(ga), g1 = hi_pd(ga), g2 = lo_pd(gb), g3 = hi_pd(gb);
    s0 = _mm256_add_pd(s0, g0);
    s1 = _mm256_add_pd(s1, g1);
    s2 = _mm256_add_pd(s2, g2);
    s3 = _mm256_add_pd(s3, g3);
    p0 = _mm256_fmadd_pd(g0, _mm256_sub_pd(lo_pd(xa), mu), p0);
    p1 = _mm256_fmadd_pd(g1, _mm256_sub_pd(hi_pd(xa), mu), p1);
    p2 = _mm256_fmadd_pd(g2, _mm256_sub_pd(lo_pd(xb), mu), p2);
    p3 = _mm256_fmadd_pd(g3, _mm256_sub_pd(hi_pd(xb), mu), p3);
  }
  if (n >= 8) {
    const __m256 ga = _mm256_loadu_ps(g), xa = _mm256_loadu_ps(x);
    const __m256d g0 = lo_pd(ga), g1 = hi_pd(ga);
    s0 = _mm256_add_pd(s0, g0);
    s1 = _mm256_add_pd(s1, g1);
    p0 = _mm256_fmadd_pd(g0, _mm256_sub_pd(lo_pd(xa), mu), p0);
    p1 = _mm256_fmadd_pd(g1, _mm256_sub_pd(hi_pd(xa), mu), p1);
    n -= 8;
    g += 8;
    x += 8;
  }
  double s = 0, p = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double gv = static_cast<double>(g[i]);
    s += gv;
    p += gv * (static_cast<double>(x[i]) - mean);
  }
  out[0] = hsum4(s0, s1, s2, s3) + s;
  out[1] = hsum4(p0, p1, p2, p3) + p;
}

void f32_bn_bwd_input_avx2(std::size_t n, const float* g, const float* x, float* gi, float mean, float a, float b,
                           float c) {
  const __m256 mu = _mm256_set1_ps(mean), va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), vc = _mm256_set1_ps(c);
  for (; n >= 8; n -= 8, g += 8, x += 8, gi += 8) {
    const __m256 t = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x), mu), vb, vc);
    _mm256_storeu_ps(gi, _mm256_fmadd_ps(_mm256_loadu_ps(g), va, t));
  }
  for (std::size_t i = 0; i < n; ++i) gi[i] = g[i] * a + ((x[i] - mean) * b + c);
}

}  // namespace nnkern::norm
