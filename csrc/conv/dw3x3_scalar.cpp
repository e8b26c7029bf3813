// Depthwise 3x3 stride-1 plane kernels (dw3x3.h), portable: one output column
// per "vector" (f32 on the scalar family, f64 on every family), 4 output rows
// per pass, the same loop structure and summation order as the SIMD families.
#include "conv/dw3x3_impl.h"

namespace nnkern::conv {
namespace {

template <class Elem>
struct Scalar {
  using T = Elem;
  using vec = Elem;
  using mask = bool;
  static constexpr int L = 1;
  static constexpr int kFwdRows = 4;
  static constexpr int kWgradRows = 2;
  static constexpr bool kReluAfter = true;
  static constexpr bool kShift = false;  // no cheap lane shift: three loads per row
  static vec zero() { return T(0); }
  static vec set1(T v) { return v; }
  static vec loadu(const T* p) { return *p; }
  static vec maskz(mask m, const T* p) { return m ? *p : T(0); }
  static vec fma(vec a, vec b, vec c) { return a * b + c; }
  static vec fma_mask(mask m, vec a, vec b, vec c) { return m ? a * b + c : c; }
  static vec add(vec a, vec b) { return a + b; }
  // NaN fails the compare and passes through, as torch.relu
  static vec relu(vec v) { return v < T(0) ? T(0) : v; }
  static void storeu(T* p, vec v) { *p = v; }
  static void mask_store(T* p, mask m, vec v) {
    if (m) *p = v;
  }
  static mask lanes(std::ptrdiff_t lo, std::ptrdiff_t hi) { return lo <= 0 && 0 < hi; }
  static mask mand(mask a, mask b) { return a && b; }
  static T hsum(vec v) { return v; }
};

}  // namespace

void f32_dw3x3_plane_scalar(const Dw3x3Geo& g, const float* in, const float* w9, float init, const float* res,
                            bool relu, bool outside_zero, float* out) {
  Dw3x3Impl<Scalar<float>>::plane(g, in, w9, init, res, relu, outside_zero, out);
}
void f64_dw3x3_plane_scalar(const Dw3x3Geo& g, const double* in, const double* w9, double init, const double* res,
                            bool relu, bool outside_zero, double* out) {
  Dw3x3Impl<Scalar<double>>::plane(g, in, w9, init, res, relu, outside_zero, out);
}
void f32_dw3x3_wgrad_plane_scalar(const Dw3x3Geo& g, const float* x, const float* grad, bool taps, float* sums) {
  Dw3x3Impl<Scalar<float>>::wgrad_plane(g, x, grad, taps, sums);
}
void f64_dw3x3_wgrad_plane_scalar(const Dw3x3Geo& g, const double* x, const double* grad, bool taps,
                                  double* sums) {
  Dw3x3Impl<Scalar<double>>::wgrad_plane(g, x, grad, taps, sums);
}

}  // namespace nnkern::conv
