#include "vmath/dropout_mask.h"

namespace nnkern::vmath {

void dropout_mask_scalar(std::size_t n, std::uint64_t first, std::uint64_t key, std::uint32_t threshold, bool* keep) {
  std::uint64_t z0 = key + (first + 1) * kSplitmixPhi;
  for (std::size_t j = 0; j < n; ++j, z0 += kSplitmixPhi) {
    std::uint64_t z = z0;
    z = (z ^ (z >> 30)) * kSplitmixM1;
    z = (z ^ (z >> 27)) * kSplitmixM2;
    z ^= z >> 31;
    keep[j] = static_cast<std::uint32_t>(z >> 40) >= threshold;
  }
}

}  // namespace nnkern::vmath
