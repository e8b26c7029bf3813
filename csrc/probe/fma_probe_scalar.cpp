#include "probe/probe.h"

namespace nnkern::probe {

// Baseline ISA has no FMA: a multiply and an add per element (2 flops), on
// 32 independent chains that the compiler keeps in SIMD registers.
std::uint64_t fma_probe_scalar(std::uint64_t iterations, float* sink) {
  constexpr int kChains = 32;
  float acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = static_cast<float>(j);
  const float a = 0.999f, b = 0.001f;  // converges to b / (1 - a)
  for (std::uint64_t i = 0; i < iterations; ++i) {
    for (int j = 0; j < kChains; ++j) acc[j] = acc[j] * a + b;
  }
  float sum = 0.0f;
  for (int j = 0; j < kChains; ++j) sum += acc[j];
  *sink = sum;
  return iterations * kChains * 2;
}

}  // namespace nnkern::probe
