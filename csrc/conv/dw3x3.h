// Depthwise 3x3, stride 1, dilation 1: whole-plane kernels reading the
// unpadded plane directly (no padded copy). Padding is a signed offset: output
// (oy, ox) reads input (oy + i - pt, ox + j - pl), i, j < 3; rows and columns
// outside the input plane read as zero (masked loads, skipped rows).
//
// dw3x3_plane:  out[oy][ox] = act(init + sum_{i,j} w9[3i + j] * in[oy + i - pt][ox + j - pl]
//                                 + res[oy][ox])      (res may be null; act = ReLU if relu)
//   The forward conv (in = x, out = y, outside_zero: taps outside the plane
//   read zero and are multiplied, as a zero-padded input), and grad_input
//   (in = grad_out, out = grad_in, w9 flipped, offsets 2 - pt, 2 - pl,
//   !outside_zero: those taps are left out, as col2im; the two differ only
//   for an infinite or NaN weight). res may be `out` itself (accumulating
//   several channel multipliers into one grad_input plane).
// dw3x3_wgrad_plane: sums[3i + j] = sum_{oy,ox} g[oy][ox] * x[oy + i - pt][ox + j - pl]
//   (when `taps`; x outside its plane reads zero and is multiplied, as
//   im2col), sums[9] = sum g, one plane (g: oh x ow, x: ih x iw);
//   summed in vector lanes in an order fixed by the shape, so the same bits
//   for any thread split (the operator adds the planes in double, in order).
//
// One implementation (dw3x3_impl.h) instantiated per kernel family; f64 uses
// the scalar family's.
#pragma once

#include <cstddef>

namespace nnkern::conv {

struct Dw3x3Geo {
  std::size_t ih, iw;  // input plane
  std::size_t oh, ow;  // output plane (grad_output plane for the weight gradient)
  std::ptrdiff_t pt, pl;
};

template <class T>
using Dw3x3PlaneFn = void (*)(const Dw3x3Geo& g, const T* in, const T* w9, T init, const T* res, bool relu,
                              bool outside_zero, T* out);
template <class T>
using Dw3x3WgradPlaneFn = void (*)(const Dw3x3Geo& g, const T* x, const T* grad, bool taps, T* sums);

#define NNKERN_DECLARE_DW3X3(T, prefix, isa)                                                                  \
  void prefix##_dw3x3_plane_##isa(const Dw3x3Geo& g, const T* in, const T* w9, T init, const T* res, bool relu, \
                                  bool outside_zero, T* out);                                                 \
  void prefix##_dw3x3_wgrad_plane_##isa(const Dw3x3Geo& g, const T* x, const T* grad, bool taps, T* sums);

NNKERN_DECLARE_DW3X3(float, f32, scalar)
NNKERN_DECLARE_DW3X3(double, f64, scalar)
NNKERN_DECLARE_DW3X3(float, f32, avx2)
NNKERN_DECLARE_DW3X3(float, f32, avx512)
#undef NNKERN_DECLARE_DW3X3

}  // namespace nnkern::conv
