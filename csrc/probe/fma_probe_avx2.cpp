#include <immintrin.h>

#include "probe/probe.h"

namespace nnkern::probe {

// 12 chains of 8 lanes: enough FMAs in flight for two ports x 4-5 cycles of
// latency, leaving 4 of the 16 ymm registers for the constants.
std::uint64_t fma_probe_avx2(std::uint64_t iterations, float* sink) {
  constexpr int kChains = 12;
  __m256 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm256_set1_ps(static_cast<float>(j));
  const __m256 a = _mm256_set1_ps(0.999f);  // converges to b / (1 - a), see the avx512 probe
  const __m256 b = _mm256_set1_ps(0.001f);
  for (std::uint64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < kChains; ++j) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
  }
  __m256 sum = acc[0];
  for (int j = 1; j < kChains; ++j) sum = _mm256_add_ps(sum, acc[j]);
  float lanes[8];
  _mm256_storeu_ps(lanes, sum);
  *sink = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
  return iterations * kChains * 8 * 2;
}

}  // namespace nnkern::probe
