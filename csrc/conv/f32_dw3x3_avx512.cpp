// Depthwise 3x3 stride-1 plane kernels (dw3x3.h), AVX-512: 16 output columns
// per vector, 4 output rows per pass (6 input rows x 3 loads, 36 FMAs, 4
// stores) for the forward; 4 grad rows per pass for the weight gradient
// (9 + 1 accumulators). Edges by k-masked loads (masked-off lanes never read).
#include <immintrin.h>

#include "conv/dw3x3_impl.h"

namespace nnkern::conv {
namespace {

struct V512 {
  using T = float;
  using vec = __m512;
  using mask = __mmask16;
  static constexpr int L = 16;
  static constexpr int kFwdRows = 4;
  static constexpr int kWgradRows = 4;
  static constexpr bool kReluAfter = false;
  static vec zero() { return _mm512_setzero_ps(); }
  static vec set1(float v) { return _mm512_set1_ps(v); }
  static vec loadu(const float* p) { return _mm512_loadu_ps(p); }
  static vec maskz(mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  static vec fma_mask(mask m, vec a, vec b, vec c) { return _mm512_mask3_fmadd_ps(a, b, c, m); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  // max(0, v) with v second: vmaxps returns its second operand when either is NaN
  static vec relu(vec v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }
  static void storeu(float* p, vec v) { _mm512_storeu_ps(p, v); }
  static void mask_store(float* p, mask m, vec v) { _mm512_mask_storeu_ps(p, m, v); }
  static mask lanes(std::ptrdiff_t lo, std::ptrdiff_t hi) {
    lo = lo < 0 ? 0 : (lo > L ? L : lo);
    hi = hi < lo ? lo : (hi > L ? L : hi);
    const unsigned below_hi = (1u << hi) - 1u, below_lo = (1u << lo) - 1u;
    return _cvtu32_mask16(below_hi & ~below_lo);
  }
  static mask mand(mask a, mask b) { return _kand_mask16(a, b); }
  static float hsum(vec v) { return _mm512_reduce_add_ps(v); }
  // full-row blocks shift the +-1 taps in from the neighbour vectors (valignd)
  static constexpr bool kShift = true;
  static mask first_lane() { return _cvtu32_mask16(1u); }
  static mask last_lane() { return _cvtu32_mask16(0x8000u); }
  static vec keep(mask m, vec v) { return _mm512_maskz_mov_ps(m, v); }
  // [prev[15], cur[0..14]]
  static vec shift_in_prev(vec cur, vec prev) {
    return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(cur), _mm512_castps_si512(prev), 15));
  }
  // [cur[1..15], next[0]]
  static vec shift_in_next(vec next, vec cur) {
    return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(next), _mm512_castps_si512(cur), 1));
  }
};

}  // namespace

void f32_dw3x3_plane_avx512(const Dw3x3Geo& g, const float* in, const float* w9, float init, const float* res,
                            bool relu, bool outside_zero, float* out) {
  Dw3x3Impl<V512>::plane(g, in, w9, init, res, relu, outside_zero, out);
}

void f32_dw3x3_wgrad_plane_avx512(const Dw3x3Geo& g, const float* x, const float* grad, bool taps, float* sums) {
  Dw3x3Impl<V512>::wgrad_plane(g, x, grad, taps, sums);
}

}  // namespace nnkern::conv
