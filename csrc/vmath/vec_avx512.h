// The AVX-512 float vector of the generic kernels (softmax_impl.h,
// activation_impl.h): 16 lanes, masked tails. For AVX-512 files only;
// helpers in an anonymous namespace (see CMakeLists.txt).
#pragma once

#include <immintrin.h>

#include <cstddef>

#include "vmath/exp_avx512.h"

namespace nnkern::vmath {
namespace {

inline __mmask16 tail_mask(std::size_t n) { return _cvtu32_mask16((1u << n) - 1u); }

struct Avx512 {
  using V = __m512;
  static constexpr std::size_t W = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load_part(const float* p, std::size_t n, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), tail_mask(n), p);
  }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store_part(float* p, V v, std::size_t n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
  // both return the second operand when either is NaN
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V abs(V a) { return _mm512_andnot_ps(_mm512_set1_ps(-0.0f), a); }
  // a with the sign bit of s or-ed in
  static V or_sign(V a, V s) { return _mm512_or_ps(a, _mm512_and_ps(_mm512_set1_ps(-0.0f), s)); }
  // a > b ? x : y, lane by lane (false for NaN)
  static V select_gt(V a, V b, V x, V y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), y, x); }
  // exp(a) for a <= 88: below -100 a is clamped (exp underflows to 0 there); NaN kept
  static V exp(V a) { return exp16(_mm512_max_ps(_mm512_set1_ps(-100.0f), a)); }
  // index of the first p[i] == v in [0, n), or n
  static std::size_t first_eq(std::size_t n, const float* p, float v) {
    const V vv = _mm512_set1_ps(v);
    for (std::size_t i = 0; i < n; i += W) {
      const __mmask16 in = tail_mask(n - i < W ? n - i : W);
      const unsigned hit = _mm512_mask_cmp_ps_mask(in, _mm512_maskz_loadu_ps(in, p + i), vv, _CMP_EQ_OQ);
      if (hit != 0) return i + static_cast<std::size_t>(__builtin_ctz(hit));
    }
    return n;
  }
};

}  // namespace
}  // namespace nnkern::vmath
