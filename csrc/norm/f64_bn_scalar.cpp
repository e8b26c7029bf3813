#include "norm/bn_kernels.h"
#include "norm/bn_scalar.h"

namespace nnkern::norm {

void f64_bn_stats_scalar(std::size_t n, const double* x, double shift, double* out) {
  ScalarBn<double>::stats(n, x, shift, out);
}

void f64_bn_affine_scalar(std::size_t n, const double* x, const double* r, double* y, double shift, double scale, double offset,
                          bool relu) {
  ScalarBn<double>::affine(n, x, r, y, shift, scale, offset, relu);
}

void f64_bn_bwd_reduce_scalar(std::size_t n, const double* g, const double* x, double mean, double* out) {
  ScalarBn<double>::bwd_reduce(n, g, x, mean, out);
}

void f64_bn_bwd_input_scalar(std::size_t n, const double* g, const double* x, double* gi, double mean, double a, double b, double c) {
  ScalarBn<double>::bwd_input(n, g, x, gi, mean, a, b, c);
}

}  // namespace nnkern::norm
