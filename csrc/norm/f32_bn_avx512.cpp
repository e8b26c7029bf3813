// The reductions sum in float over short blocks and in double across blocks
// (block_sums); the elementwise kernels are bound by loads and stores at one
// 16-float vector per step. Tails use masked loads and stores.
#include <immintrin.h>

#include "norm/bn_fused.h"
#include "norm/bn_kernels.h"

namespace nnkern::norm {
namespace {

inline __mmask16 tail_mask(std::size_t n) { return _cvtu32_mask16((1u << n) - 1u); }

// A float vector's 16 lanes widened to two double vectors and added to acc.
// The zero-masked forms with a full mask are the same instructions; the
// unmasked intrinsics trip GCC 12's -Wmaybe-uninitialized in its own header.
inline void add_wide(__m512 v, __m512d& lo, __m512d& hi) {
  lo = _mm512_add_pd(lo, _mm512_maskz_cvtps_pd(0xff, _mm512_maskz_extractf32x8_ps(0xff, v, 0)));
  hi = _mm512_add_pd(hi, _mm512_maskz_cvtps_pd(0xff, _mm512_maskz_extractf32x8_ps(0xff, v, 1)));
}

// Sum of two double accumulators, then of the lanes, in a fixed order.
inline double hsum2(__m512d a, __m512d b) {
  alignas(64) double lanes[8];
  _mm512_store_pd(lanes, _mm512_add_pd(a, b));
  return ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
}

// Sums of a and a*b over n floats (b = x - c): float sums over blocks of 128
// elements (8 terms per lane, in four chains), each block's sums widened to
// double and added to the plane's totals. Widening every element costs two
// double conversions per 16 floats and made the pass compute-bound; per block
// it costs nothing, and a block's float rounding (at most ~8 ulps of the
// block's sum of magnitudes) stays far below the 1e-5 the sums need.
template <bool kSquare>
inline void block_sums(std::size_t n, const float* a, const float* x, float c, double* out) {
  const __m512 vc = _mm512_set1_ps(c);
  __m512d sl = _mm512_setzero_pd(), sh = sl, pl = sl, ph = sl;
  auto step = [&](__m512 av, __m512 xv, __m512& s, __m512& p) {
    const __m512 d = _mm512_sub_ps(xv, vc);
    if (kSquare) {
      s = _mm512_add_ps(s, d);
      p = _mm512_fmadd_ps(d, d, p);
    } else {
      s = _mm512_add_ps(s, av);
      p = _mm512_fmadd_ps(av, d, p);
    }
  };
  for (; n >= 128; n -= 128, a += 128, x += 128) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, p0 = s0, p1 = s0, p2 = s0, p3 = s0;
    for (int i = 0; i < 128; i += 64) {
      step(_mm512_loadu_ps(a + i), _mm512_loadu_ps(x + i), s0, p0);
      step(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(x + i + 16), s1, p1);
      step(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(x + i + 32), s2, p2);
      step(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(x + i + 48), s3, p3);
    }
    add_wide(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)), sl, sh);
    add_wide(_mm512_add_ps(_mm512_add_ps(p0, p1), _mm512_add_ps(p2, p3)), pl, ph);
  }
  if (n != 0) {
    // the last < 128 elements: one chain of at most 8 terms per lane; masked-off
    // lanes give d = 0 (kSquare) or a = 0, so they add exact zeros
    __m512 s = _mm512_setzero_ps(), p = s;
    for (; n != 0; n -= n < 16 ? n : 16, a += 16, x += 16) {
      const __mmask16 m = tail_mask(n < 16 ? n : 16);
      const __m512 xv = _mm512_maskz_loadu_ps(m, x);
      step(kSquare ? xv : _mm512_maskz_loadu_ps(m, a), kSquare ? _mm512_mask_blend_ps(m, vc, xv) : xv, s, p);
    }
    add_wide(s, sl, sh);
    add_wide(p, pl, ph);
  }
  out[0] = hsum2(sl, sh);
  out[1] = hsum2(pl, ph);
}

}  // namespace

void f32_bn_stats_avx512(std::size_t n, const float* x, double shift, double* out) {
  block_sums<true>(n, x, x, static_cast<float>(shift), out);
}

namespace {

// y[i] = op(i) over n elements, 16 at a time; with kStream, unaligned head
// elements go through a masked store up to the 64-byte boundary of y, then
// whole lines are streamed, and a fence orders the streamed lines before the
// caller signals completion to other threads.
template <bool kStream, class Op>
inline void write_vectors(std::size_t n, float* y, const Op& op) {
  const __mmask16 all = _cvtu32_mask16(0xffff);
  std::size_t i = 0;
  if (kStream) {
    const std::size_t head = (64 - reinterpret_cast<std::size_t>(y) % 64) % 64 / sizeof(float);
    if (head < n) {
      if (head != 0) _mm512_mask_storeu_ps(y, tail_mask(head), op(0, tail_mask(head)));
      for (i = head; i + 16 <= n; i += 16) _mm512_stream_ps(y + i, op(i, all));
    }
  }
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, op(i, all));
  if (i != n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, op(i, m));
  }
  if (kStream) _mm_sfence();
}

template <bool kStream, bool kResidual, bool kRelu>
inline void affine(std::size_t n, const float* x, const float* r, float* y, float shift, float scale, float offset) {
  const __m512 sh = _mm512_set1_ps(shift), sc = _mm512_set1_ps(scale), of = _mm512_set1_ps(offset);
  const __m512 zero = _mm512_setzero_ps();
  write_vectors<kStream>(n, y, [&](std::size_t i, __mmask16 m) {
    __m512 v = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), sh), sc, of);
    if (kResidual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, r + i));
    // max_ps returns its second operand when either is NaN: NaN passes, as torch.relu
    if (kRelu) v = _mm512_max_ps(zero, v);
    return v;
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
  const __m512 mu = _mm512_set1_ps(mean), va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b), vc = _mm512_set1_ps(c);
  write_vectors<kStream>(n, gi, [&](std::size_t i, __mmask16 m) {
    const __m512 t = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mu), vb, vc);
    return _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, g + i), va, t);
  });
}

}  // namespace

void f32_bn_affine_avx512(std::size_t n, const float* x, const float* r, float* y, float shift, float scale,
                          float offset, bool relu) {
  affine_any<false>(n, x, r, y, shift, scale, offset, relu);
}

void f32_bn_affine_stream_avx512(std::size_t n, const float* x, const float* r, float* y, float shift, float scale,
                                 float offset, bool relu) {
  affine_any<true>(n, x, r, y, shift, scale, offset, relu);
}

void f32_bn_bwd_reduce_avx512(std::size_t n, const float* g, const float* x, double mean, double* out) {
  block_sums<false>(n, g, x, static_cast<float>(mean), out);
}

void f32_bn_bwd_input_avx512(std::size_t n, const float* g, const float* x, float* gi, float mean, float a, float b,
                             float c) {
  bwd_input<false>(n, g, x, gi, mean, a, b, c);
}

void f32_bn_bwd_input_stream_avx512(std::size_t n, const float* g, const float* x, float* gi, float mean, float a,
                                    float b, float c) {
  bwd_input<true>(n, g, x, gi, mean, a, b, c);
}

}  // namespace nnkern::norm
