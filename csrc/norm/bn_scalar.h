// The portable batch-norm plane kernels, shared by the f32 and f64 scalar
// families (sums in double, one accumulator: the order depends only on n).
#pragma once

#include <cstddef>

namespace nnkern::norm {

template <class T>
struct ScalarBn {
  static void stats(std::size_t n, const T* x, double shift, double* out) {
    double s = 0, ss = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double d = static_cast<double>(x[i]) - shift;
      s += d;
      ss += d * d;
    }
    out[0] = s;
    out[1] = ss;
  }
  static void affine(std::size_t n, const T* x, const T* r, T* y, T shift, T scale, T offset, bool relu) {
    for (std::size_t i = 0; i < n; ++i) {
      T v = (x[i] - shift) * scale + offset;
      if (r != nullptr) v += r[i];
      // v < 0 is false for NaN: NaN passes, as torch.relu
      y[i] = relu && v < T(0) ? T(0) : v;
    }
  }
  static void bwd_reduce(std::size_t n, const T* g, const T* x, double mean, double* out) {
    double s = 0, sx = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double gv = static_cast<double>(g[i]);
      s += gv;
      sx += gv * (static_cast<double>(x[i]) - mean);
    }
    out[0] = s;
    out[1] = sx;
  }
  static void bwd_input(std::size_t n, const T* g, const T* x, T* gi, T mean, T a, T b, T c) {
    for (std::size_t i = 0; i < n; ++i) gi[i] = g[i] * a + ((x[i] - mean) * b + c);
  }
};

}  // namespace nnkern::norm
