// softmax kernels on 8 lanes (softmax_impl.h); tails use maskload / maskstore.
#include <immintrin.h>

#include "vmath/exp_avx2.h"
#include "vmath/softmax_export.h"

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
  static V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V select_gt(V a, V b, V x, V y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
  // a <= 0, -Inf or NaN: clamped at -88, where exp8 gives an exact 0; NaN kept (max returns its
  // second operand)
  static V exp_nonpos(V a) { return exp8(_mm256_max_ps(_mm256_set1_ps(-88.0f), a)); }
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

NNKERN_DEFINE_SOFTMAX(avx2, Avx2)

}  // namespace nnkern::vmath
