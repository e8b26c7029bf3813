// Depthwise 3x3 stride-1 plane kernels (dw3x3.h), AVX2: 8 output columns per
// vector, 3 output rows per pass in the forward (9 weights + 3 accumulators
// + loads fit the 16 ymm registers), 2 grad rows per pass for the weight
// gradient (10 accumulators). Edges by vmaskmovps (masked-off lanes never read).
#include <immintrin.h>

#include "conv/dw3x3_impl.h"

namespace nnkern::conv {
namespace {

struct V256 {
  using T = float;
  using vec = __m256;
  using mask = __m256i;
  static constexpr int L = 8;
  static constexpr int kFwdRows = 3;
  static constexpr int kWgradRows = 2;
  static constexpr bool kReluAfter = false;
  static constexpr bool kShift = false;  // no cheap lane shift: three loads per row
  static vec zero() { return _mm256_setzero_ps(); }
  static vec set1(float v) { return _mm256_set1_ps(v); }
  static vec loadu(const float* p) { return _mm256_loadu_ps(p); }
  static vec maskz(mask m, const float* p) { return _mm256_maskload_ps(p, m); }
  static vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  static vec fma_mask(mask m, vec a, vec b, vec c) {
    return _mm256_blendv_ps(c, _mm256_fmadd_ps(a, b, c), _mm256_castsi256_ps(m));
  }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  // max(0, v) with v second: maxps returns its second operand when either is NaN
  static vec relu(vec v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }
  static void storeu(float* p, vec v) { _mm256_storeu_ps(p, v); }
  static void mask_store(float* p, mask m, vec v) { _mm256_maskstore_ps(p, m, v); }
  static mask lanes(std::ptrdiff_t lo, std::ptrdiff_t hi) {
    lo = lo < 0 ? 0 : (lo > L ? L : lo);
    hi = hi < lo ? lo : (hi > L ? L : hi);
    const __m256i l = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // lo <= l < hi
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(lo)), l),
                               _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(hi)), l));
  }
  static mask mand(mask a, mask b) { return _mm256_and_si256(a, b); }
  // lanes summed pairwise in a fixed order
  static float hsum(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

}  // namespace

void f32_dw3x3_plane_avx2(const Dw3x3Geo& g, const float* in, const float* w9, float init, const float* res,
                          bool relu, bool outside_zero, float* out) {
  Dw3x3Impl<V256>::plane(g, in, w9, init, res, relu, outside_zero, out);
}

void f32_dw3x3_wgrad_plane_avx2(const Dw3x3Geo& g, const float* x, const float* grad, bool taps, float* sums) {
  Dw3x3Impl<V256>::wgrad_plane(g, x, grad, taps, sums);
}

}  // namespace nnkern::conv
