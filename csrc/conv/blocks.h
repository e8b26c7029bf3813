// Near-equal parts of a range, for the register-tile loops of the conv
// kernels (direct.h, image_lanes.h): [0, n) in ceil(n / most) parts, part k
// is [start(k), start(k + 1)), none larger than `most`.
#pragma once

#include <cstddef>

namespace nnkern::conv {

struct Blocks {
  std::size_t n, parts;
  Blocks(std::size_t n_, std::size_t most) : n(n_), parts((n_ + most - 1) / most) {}
  std::size_t start(std::size_t k) const { return k * n / parts; }
};

}  // namespace nnkern::conv
