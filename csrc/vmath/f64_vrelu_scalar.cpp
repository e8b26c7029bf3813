#include <cstdint>

#include "vmath/vrelu.h"
#include "vmath/vrelu_scalar.h"

namespace nnkern::vmath {

using Relu = ScalarRelu<double, std::int64_t, 0x7ff0000000000000>;

void f64_vrelu_scalar(std::size_t n, const double* x, double* y) { Relu::forward(n, x, y); }

void f64_vrelu_backward_scalar(std::size_t n, const double* grad, const double* out, double* grad_in) {
  Relu::backward(n, grad, out, grad_in);
}

}  // namespace nnkern::vmath
