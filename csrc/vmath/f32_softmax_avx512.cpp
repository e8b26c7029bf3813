// softmax kernels on 16 lanes (softmax_impl.h); tails use masked loads and stores.
#include <immintrin.h>

#include "vmath/exp_avx512.h"
#include "vmath/softmax_export.h"

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
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V select_gt(V a, V b, V x, V y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), y, x); }
  // a <= 0, -Inf or NaN: clamped at -100 (exp underflows to 0 there), NaN kept (max returns its second operand)
  static V exp_nonpos(V a) { return exp16(_mm512_max_ps(_mm512_set1_ps(-100.0f), a)); }
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

NNKERN_DEFINE_SOFTMAX(avx512, Avx512)

}  // namespace nnkern::vmath
