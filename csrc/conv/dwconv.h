// Depthwise-convolution micro-kernels over one output row, reading a
// zero-padded input plane (the operator pads it once into scratch, so the
// kernels have no bounds checks). rows[i] is the padded input row that kernel
// row i reads for this output row; taps are row-major (kh x kw).
//
// dwconv_row:  out[x] = init + sum_{i,j} w[i*kw + j] * rows[i][x*sw + j*dw], x < ow
// dwconv_wgrad_row: acc[i*kw + j] += sum_x g[x] * rows[i][x*sw + j*dw]
//   (float lanes summed in a fixed order per kernel family: deterministic)
//
// f32 has one kernel per family, vectorized along the output row (masked
// loads for the tail; sw == 1 is the contiguous fast path, other strides
// gather); f64 uses the portable kernel on every family.
#pragma once

#include <cstddef>

namespace nnkern::conv {

template <class T>
using DwconvRowFn = void (*)(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                             const T* const* rows, const T* w, T init, T* out);
template <class T>
using DwconvWgradRowFn = void (*)(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                                  const T* const* rows, const T* g, T* acc);

#define NNKERN_DECLARE_DWCONV(T, prefix, isa)                                                                   \
  void prefix##_dwconv_row_##isa(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw, \
                                 const T* const* rows, const T* w, T init, T* out);                             \
  void prefix##_dwconv_wgrad_row_##isa(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw,          \
                                       std::size_t dw, const T* const* rows, const T* g, T* acc);

// Several output channels of one input row set (channel multipliers, e.g. a
// LeNet 1 -> 6 conv): out[o][x] = init[o] + sum_{i,j} w[o*kh*kw + i*kw + j] *
// rows[i][x*sw + j*dw] for o < channels, each output the same FMA chain as
// dwconv_row's. AVX-512 only; other families call dwconv_row per channel.
template <class T>
using DwconvRowsFn = void (*)(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                              const T* const* rows, const T* w, std::size_t channels, const T* init, T* const* out);
void f32_dwconv_rows_avx512(std::size_t ow, std::size_t kh, std::size_t kw, std::size_t sw, std::size_t dw,
                            const float* const* rows, const float* w, std::size_t channels, const float* init,
                            float* const* out);

// The weight gradient of one channel over a whole padded plane: sums[i*kw +
// j] += sum over output rows oy and pixels x of g[oy*ow + x] *
// pad[(oy*sh + i*dh) * pw + x*sw + j*dw]. Each tap is one vector of
// lane-partial sums over the whole plane, reduced once at the end (per row,
// the reductions cost more than the FMAs: LeNet's 28-pixel rows). AVX-512
// only; other families call dwconv_wgrad_row per output row.
struct DwWgradPlane {
  std::size_t oh, ow, kh, kw, sh, sw, dh, dw, pw;
};
void f32_dwconv_wgrad_plane_avx512(const DwWgradPlane& p, const float* pad, const float* g, float* sums);

NNKERN_DECLARE_DWCONV(float, f32, scalar)
NNKERN_DECLARE_DWCONV(double, f64, scalar)
NNKERN_DECLARE_DWCONV(float, f32, avx2)
NNKERN_DECLARE_DWCONV(float, f32, avx512)
#undef NNKERN_DECLARE_DWCONV

}  // namespace nnkern::conv
