// Portable depthwise row kernels (f32 on the scalar family, f64 everywhere):
// one accumulator per output element, taps in row-major order.
#include "conv/dwconv.h"

namespace nnkern::conv {
namespace {

template <class T>
void row(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw, const T* const* rows,
         const T* w, T init, T* out) {
  for (std::size_t x = 0; x < ow; ++x) {
    T acc = init;
    for (std::size_t i = 0; i < kh; ++i) {
      const T* r = rows[i] + x * sw;
      for (std::size_t j = 0; j < kw; ++j) acc += w[i * kw + j] * r[j * dw];
    }
    out[x] = acc;
  }
}

template <class T>
void wgrad_row(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw, const T* const* rows,
               const T* g, T* acc) {
  for (std::size_t i = 0; i < kh; ++i) {
    for (std::size_t j = 0; j < kw; ++j) {
      const T* r = rows[i] + j * dw;
      T s = 0;
      for (std::size_t x = 0; x < ow; ++x) s += g[x] * r[x * sw];
      acc[i * kw + j] += s;
    }
  }
}

}  // namespace

void f32_dwconv_row_scalar(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                           const float* const* rows, const float* w, float init, float* out) {
  row(ow, kh, kw, sw, dw, rows, w, init, out);
}
void f64_dwconv_row_scalar(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                           const double* const* rows, const double* w, double init, double* out) {
  row(ow, kh, kw, sw, dw, rows, w, init, out);
}
void f32_dwconv_wgrad_row_scalar(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                                 const float* const* rows, const float* g, float* acc) {
  wgrad_row(ow, kh, kw, sw, dw, rows, g, acc);
}
void f64_dwconv_wgrad_row_scalar(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                                 const double* const* rows, const double* g, double* acc) {
  wgrad_row(ow, kh, kw, sw, dw, rows, g, acc);
}

}  // namespace nnkern::conv
