#include "norm/bn_kernels.h"
#include "norm/bn_scalar.h"

namespace nnkern::norm {

void f32_bn_stats_scalar(std::size_t n, const float* x, double shift, double* out) {
  ScalarBn<float>::stats(n, x, shift, out);
}

void f32_bn_affine_scalar(std::size_t n, const float* x, const float* r, float* y, float shift, float scale, float offset,
                          bool relu) {
  ScalarBn<float>::affine(n, x, r, y, shift, scale, offset, relu);
}

void f32_bn_bwd_reduce_scalar(std::size_t n, const float* g, const float* x, double mean, double* out) {
  ScalarBn<float>::bwd_reduce(n, g, x, mean, out);
}

void f32_bn_bwd_input_scalar(std::size_t n, const float* g, const float* x, float* gi, float mean, float a, float b, float c) {
  ScalarBn<float>::bwd_input(n, g, x, gi, mean, a, b, c);
}

}  // namespace nnkern::norm
