// The portable family computes each element in double with libm and rounds
// once: below 1 ulp, and simple; the vector families carry the speed.
#include <cmath>

#include "vmath/vactivation.h"

namespace nnkern::vmath {

void f32_vsigmoid_scalar(std::size_t n, const float* x, float* y) {
  for (std::size_t i = 0; i < n; ++i) {
    const double v = x[i];
    const double e = std::exp(-std::fabs(v));  // never overflows
    y[i] = static_cast<float>(v >= 0 ? 1 / (1 + e) : e / (1 + e));
  }
}

void f32_vtanh_scalar(std::size_t n, const float* x, float* y) {
  for (std::size_t i = 0; i < n; ++i) y[i] = static_cast<float>(std::tanh(static_cast<double>(x[i])));
}

void f32_vsigmoid_backward_scalar(std::size_t n, const float* grad, const float* out, float* grad_in) {
  for (std::size_t i = 0; i < n; ++i) grad_in[i] = grad[i] * out[i] * (1.0f - out[i]);
}

void f32_vtanh_backward_scalar(std::size_t n, const float* grad, const float* out, float* grad_in) {
  // (1 - y)(1 + y), not 1 - y*y: near |y| = 1 the rounding of y*y would swamp the small result (1400 ulp);
  // the vector families get the same accuracy from one fused 1 - y*y
  for (std::size_t i = 0; i < n; ++i) grad_in[i] = grad[i] * ((1.0f - out[i]) * (1.0f + out[i]));
}

}  // namespace nnkern::vmath
