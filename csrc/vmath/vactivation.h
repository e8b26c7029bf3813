// sigmoid / tanh micro-kernels over n contiguous float32 elements, any n, one
// function per kernel family (f32_vactivation_avx512.cpp, ...), and their
// backward rules (grad * out * (1 - out), grad * (1 - out * out)).
//
// Accuracy (measured by tests/test_native_pointwise.py over every 64th float32
// bit pattern plus special values, against float64): sigmoid and tanh are
// within 4 ulp of the float64 result on every family (see the kernels for
// the measured maximum). Results below FLT_MIN are flushed to zero (FTZ), as
// every native call runs with denormals flushed.
#pragma once

#include <cstddef>

namespace nnkern::vmath {

using F32VunaryFn = void (*)(std::size_t n, const float* x, float* y);
using F32VunaryBackwardFn = void (*)(std::size_t n, const float* grad, const float* out, float* grad_in);

#define NNKERN_DECLARE_VACTIVATION(isa)                                                                  \
  void f32_vsigmoid_##isa(std::size_t n, const float* x, float* y);                                    \
  void f32_vtanh_##isa(std::size_t n, const float* x, float* y);                                       \
  void f32_vsigmoid_backward_##isa(std::size_t n, const float* grad, const float* out, float* grad_in); \
  void f32_vtanh_backward_##isa(std::size_t n, const float* grad, const float* out, float* grad_in);

NNKERN_DECLARE_VACTIVATION(scalar)
NNKERN_DECLARE_VACTIVATION(avx2)
NNKERN_DECLARE_VACTIVATION(avx512)
#undef NNKERN_DECLARE_VACTIVATION

}  // namespace nnkern::vmath
