#include <immintrin.h>

#include "probe/probe.h"

namespace nnkern::probe {

// 16 chains of 16 lanes: two FMA ports x 4-cycle latency need 8 FMAs in
// flight; 16 also covers parts with longer latency, in 16 of the 32 zmm.
std::uint64_t fma_probe_avx512(std::uint64_t iterations, float* sink) {
  constexpr int kChains = 16;
  __m512 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(static_cast<float>(j));
  // acc <- acc * a + b converges to b / (1 - a): no overflow, no denormals.
  const __m512 a = _mm512_set1_ps(0.999f);
  const __m512 b = _mm512_set1_ps(0.001f);
  for (std::uint64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_fmadd_ps(acc[j], a, b);
  }
  __m512 sum = acc[0];
  for (int j = 1; j < kChains; ++j) sum = _mm512_add_ps(sum, acc[j]);
  // Stored and summed by hand: GCC 12's _mm512_reduce_add_ps warns in its own header.
  float lanes[16];
  _mm512_storeu_ps(lanes, sum);
  float total = 0.0f;
  for (float lane : lanes) total += lane;
  *sink = total;
  return iterations * kChains * 16 * 2;
}

}  // namespace nnkern::probe
