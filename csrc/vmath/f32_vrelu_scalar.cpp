#include <cstdint>

#include "vmath/vrelu.h"
#include "vmath/vrelu_scalar.h"

namespace nnkern::vmath {

using Relu = ScalarRelu<float, std::int32_t, 0x7f800000>;

void f32_vrelu_scalar(std::size_t n, const float* x, float* y) { Relu::forward(n, x, y); }

void f32_vrelu_backward_scalar(std::size_t n, const float* grad, const float* out, float* grad_in) {
  Relu::backward(n, grad, out, grad_in);
}

}  // namespace nnkern::vmath
