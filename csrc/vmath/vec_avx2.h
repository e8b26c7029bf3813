// The AVX2 float vector of the generic kernels (softmax_impl.h,
// activation_impl.h): 8 lanes, tails by maskload / maskstore. For AVX2 files
// only; helpers in an anonymous namespace (see CMakeLists.txt).
#pragma once

#include <immintrin.h>

#include <cstddef>

#include "vmath/exp_avx2.h"

namespace nnkern::vmath {
namespace {

// Lanes [0, n) set.
inline __m256i lanes_below(std::size_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

struct Avx2 {
  using V = __m256;
  static constexpr std::size_t W = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load_part(const float* p, std::size_t n, float fill) {
    const __m256i m = lanes_below(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store_part(float* p, V v, std::size_t n) { _mm256_maskstore_ps(p, lanes_below(n), v); }
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  // both return the second operand when either is NaN
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V abs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  // a with the sign bit of s or-ed in
  static V or_sign(V a, V s) { return _mm256_or_ps(a, _mm256_and_ps(_mm256_set1_ps(-0.0f), s)); }
  // a > b ? x : y, lane by lane (false for NaN)
  static V select_gt(V a, V b, V x, V y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
  // exp(a) for a <= 88: clamped at -88, where exp8 gives an exact 0 (between -88 and ln(FLT_MIN)
  // the result is below FLT_MIN and flushes); NaN kept
  static V exp(V a) { return exp8(_mm256_max_ps(_mm256_set1_ps(-88.0f), a)); }
  // index of the first p[i] == v in [0, n), or n
  static std::size_t first_eq(std::size_t n, const float* p, float v) {
    const V vv = _mm256_set1_ps(v);
    for (std::size_t i = 0; i < n; i += W) {
      const std::size_t k = n - i < W ? n - i : W;
      const V x = k == W ? load(p + i) : load_part(p + i, k, 0.0f);
      const unsigned hit = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(x, vv, _CMP_EQ_OQ))) &
                           ((1u << k) - 1u);
      if (hit != 0) return i + static_cast<std::size_t>(__builtin_ctz(hit));
    }
    return n;
  }
};

}  // namespace
}  // namespace nnkern::vmath
