// relu micro-kernels: y = relu(x) and grad_in = grad * (out > 0), over n
// contiguous elements, any n, one function per dtype and kernel family
// (f32_vrelu_avx512.cpp, ...).
//
// Semantics (PyTorch's): relu(NaN) = NaN of either sign, relu(-0.0) = +0.0;
// relu_backward passes grad where 0 < out <= +Inf and writes +0.0 elsewhere
// (NaN out included). The kernels decide with integer compares on the bit
// patterns plus an unordered compare for NaN, and copy the selected input
// bits, so results are exact whatever the MXCSR (DAZ would read a positive
// denormal as 0 in a float compare).
#pragma once

#include <cstddef>

namespace nnkern::vmath {

using F32VreluFn = void (*)(std::size_t n, const float* x, float* y);
using F64VreluFn = void (*)(std::size_t n, const double* x, double* y);
using F32VreluBackwardFn = void (*)(std::size_t n, const float* grad, const float* out, float* grad_in);
using F64VreluBackwardFn = void (*)(std::size_t n, const double* grad, const double* out, double* grad_in);

#define NNKERN_DECLARE_VRELU(isa)                                                                        \
  void f32_vrelu_##isa(std::size_t n, const float* x, float* y);                                       \
  void f64_vrelu_##isa(std::size_t n, const double* x, double* y);                                     \
  void f32_vrelu_backward_##isa(std::size_t n, const float* grad, const float* out, float* grad_in);   \
  void f64_vrelu_backward_##isa(std::size_t n, const double* grad, const double* out, double* grad_in);

NNKERN_DECLARE_VRELU(scalar)
NNKERN_DECLARE_VRELU(avx2)
NNKERN_DECLARE_VRELU(avx512)
#undef NNKERN_DECLARE_VRELU

}  // namespace nnkern::vmath
