// The portable relu element rule, shared by the f32 and f64 scalar kernels.
#pragma once

#include <cstddef>
#include <cstring>

namespace nnkern::vmath {

// Bits is the signed integer of the same width as F; kInfBits is +Inf's pattern.
template <class F, class Bits, Bits kInfBits>
struct ScalarRelu {
  static Bits bits(F v) {
    Bits b;
    std::memcpy(&b, &v, sizeof b);
    return b;
  }
  // Positive (denormals and +Inf included) or NaN: keep; else +0.0.
  static void forward(std::size_t n, const F* x, F* y) {
    for (std::size_t i = 0; i < n; ++i) {
      const F v = x[i];
      y[i] = (bits(v) > 0 || v != v) ? v : F(0);
    }
  }
  // 0 < out <= +Inf as a bit pattern excludes -0.0, negatives and every NaN.
  static void backward(std::size_t n, const F* grad, const F* out, F* grad_in) {
    for (std::size_t i = 0; i < n; ++i) {
      const Bits b = bits(out[i]);
      grad_in[i] = (b > 0 && b <= kInfBits) ? grad[i] : F(0);
    }
  }
};

}  // namespace nnkern::vmath
