// 8 floats per vector. The reductions sum in float over short blocks and in
// double across blocks (block_sums); tails of fewer than 8 elements run a
// scalar loop.
#include <immintrin.h>

#include "norm/bn_fused.h"
#include "norm/bn_kernels.h"

namespace nnkern::norm {
namespace {

// A float vector's 8 lanes widened to two double vectors and added to acc.
inline void add_wide(__m256 v, __m256d& lo, __m256d& hi) {
  lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
  hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

// Sum of two double accumulators, then of the lanes, in a fixed order.
inline double hsum2(__m256d a, __m256d b) {
  const __m256d s = _mm256_add_pd(a, b);
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

// Sums of a and a*b over n floats (b = x - c), as in the AVX-512 kernels:
// float sums over blocks of 64 elements (8 terms per lane, four chains), each
// block's sums widened to double and added to the plane's totals, so the
// conversions cost nothing per element; a scalar loop (in double) takes the
// last n % 8 elements.
template <bool kSquare>
inline void block_sums(std::size_t n, const float* a, const float* x, float c, double* out) {
  const __m256 vc = _mm256_set1_ps(c);
  __m256d sl = _mm256_setzero_pd(), sh = sl, pl = sl, ph = sl;
  auto step = [&](const float* ap, const float* xp, __m256& s, __m256& p) {
    const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(xp), vc);
    if (kSquare) {
      s = _mm256_add_ps(s, d);
      p = _mm256_fmadd_ps(d, d, p);
    } else {
      const __m256 av = _mm256_loadu_ps(ap);
      s = _mm256_add_ps(s, av);
      p = _mm256_fmadd_ps(av, d, p);
    }
  };
  for (; n >= 64; n -= 64, a += 64, x += 64) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, p0 = s0, p1 = s0, p2 = s0, p3 = s0;
    for (int i = 0; i < 64; i += 32) {
      step(a + i, x + i, s0, p0);
      step(a + i + 8, x + i + 8, s1, p1);
      step(a + i + 16, x + i + 16, s2, p2);
      step(a + i + 24, x + i + 24, s3, p3);
    }
    add_wide(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)), sl, sh);
    add_wide(_mm256_add_ps(_mm256_add_ps(p0, p1), _mm256_add_ps(p2, p3)), pl, ph);
  }
  __m256 s = _mm256_setzero_ps(), p = s;
  for (; n >= 8; n -= 8, a += 8, x += 8) step(a, x, s, p);
  add_wide(s, sl, sh);
  add_wide(p, pl, ph);
  double st = 0, pt = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - static_cast<double>(c);
    st += kSquare ? d : static_cast<double>(a[i]);
    pt += kSquare ? d * d : static_cast<double>(a[i]) * d;
  }
  out[0] = hsum2(sl, sh) + st;
  out[1] = hsum2(pl, ph) + pt;
}

}  // namespace

void f32_bn_stats_avx2(std::size_t n, const float* x, double shift, double* out) {
  block_sums<true>(n, x, x, static_cast<float>(shift), out);
}

namespace {

// y[i] over n elements, 8 at a time by vec(i), the rest by one(i); with
// kStream, head elements up to the 32-byte boundary of y are written one by
// one, then whole vectors are streamed, and a fence orders the streamed
// lines before the caller signals completion to other threads.
template <bool kStream, class Vec, class One>
inline void write_vectors(std::size_t n, float* y, const Vec& vec, const One& one) {
  std::size_t i = 0;
  if (kStream) {
    const std::size_t head = (32 - reinterpret_cast<std::size_t>(y) % 32) % 32 / sizeof(float);
    if (head < n) {
      for (; i < head; ++i) y[i] = one(i);
      for (; i + 8 <= n; i += 8) _mm256_stream_ps(y + i, vec(i));
    }
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, vec(i));
  for (; i < n; ++i) y[i] = one(i);
  if (kStream) _mm_sfence();
}

template <bool kStream, bool kResidual, bool kRelu>
inline void affine(std::size_t n, const float* x, const float* r, float* y, float shift, float scale, float offset) {
  const __m256 sh = _mm256_set1_ps(shift), sc = _mm256_set1_ps(scale), of = _mm256_set1_ps(offset);
  const __m256 zero = _mm256_setzero_ps();
  write_vectors<kStream>(
      n, y,
      [&](std::size_t i) {
        __m256 v = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh), sc, of);
        if (kResidual) v = _mm256_add_ps(v, _mm256_loadu_ps(r + i));
        // max_ps returns its second operand when either is NaN: NaN passes, as torch.relu
        if (kRelu) v = _mm256_max_ps(zero, v);
        return v;
      },
      [&](std::size_t i) {
        float v = (x[i] - shift) * scale + offset;
        if (kResidual) v += r[i];
        return kRelu && v < 0.0f ? 0.0f : v;
      });
}

// One instantiation per fused form, chosen once per plane.
template <bool kStream>
inline void affine_any(std::size_t n, const float* x, const float* r, float* y, float shift, float scale,
                       float offset, bool relu) {
  with_fused_form(r != nullptr, relu, [&](auto res, auto act) {
    affine<kStream, decltype(res)::value, decltype(act)::value>(n, x, r, y, shift, scale, offset);
  });
}

template <bool kStream>
inline void bwd_input(std::size_t n, const float* g, const float* x, float* gi, float mean, float a, float b,
                      float c) {
  const __m256 mu = _mm256_set1_ps(mean), va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), vc = _mm256_set1_ps(c);
  write_vectors<kStream>(
      n, gi,
      [&](std::size_t i) {
        const __m256 t = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mu), vb, vc);
        return _mm256_fmadd_ps(_mm256_loadu_ps(g + i), va, t);
      },
      [&](std::size_t i) { return g[i] * a + ((x[i] - mean) * b + c); });
}

}  // namespace

void f32_bn_affine_avx2(std::size_t n, const float* x, const float* r, float* y, float shift, float scale,
                        float offset, bool relu) {
  affine_any<false>(n, x, r, y, shift, scale, offset, relu);
}

void f32_bn_affine_stream_avx2(std::size_t n, const float* x, const float* r, float* y, float shift, float scale,
                               float offset, bool relu) {
  affine_any<true>(n, x, r, y, shift, scale, offset, relu);
}

void f32_bn_bwd_reduce_avx2(std::size_t n, const float* g, const float* x, double mean, double* out) {
  block_sums<false>(n, g, x, static_cast<float>(mean), out);
}

void f32_bn_bwd_input_avx2(std::size_t n, const float* g, const float* x, float* gi, float mean, float a, float b,
                           float c) {
  bwd_input<false>(n, g, x, gi, mean, a, b, c);
}

void f32_bn_bwd_input_stream_avx2(std::size_t n, const float* g, const float* x, float* gi, float mean, float a,
                                  float b, float c) {
  bwd_input<true>(n, g, x, gi, mean, a, b, c);
}

}  // namespace nnkern::norm
