// Convolutions with the images in the lanes (AVX-512 float32), for batches of
// 16+ images and few channels (LeNet's 1 -> 6 and 6 -> 16 5x5 layers).
//
// With few channels, the other layouts leave the kernels load-bound: pixels in
// the lanes need a shifted, mostly line-crossing load per tap and row segment
// (direct.h), output channels in the lanes a broadcast per pixel and tap. Here
// 16 images are transposed into a "lanes" layout, element (c, y, x) of image l
// at buf[((c * rows + y) * pitch + x) * 16 + l]: every tap of every pixel is
// one aligned vector, and a register tile of OB channels x RB pixels does
// OB * RB FMAs for OB broadcasts and RB loads per tap. The transposes in and
// out (16 x 16 blocks in registers) cost a pass over the data each.
//
// lanes_conv: dst[o][y][x][:] = init(o) + sum_{c, i, j} w[o][c][i][j] * src[c][y + i * dh][x + j * dw][:]
//   for o in [o0, o1), y < oh, x < ow (src rows `rows` long apart, pitch
//   pitch; init = bias[o] or 0). One FMA chain per output over (c, i, j) in
//   that order, as direct_conv: the same bits, except that the taps reading
//   the all-zero rows above and below the planes are skipped (each would add
//   a zero: only a -0.0 result can differ, becoming +0.0 in direct_conv).
#pragma once

#include <cstddef>

namespace nnkern::conv {

// `count` (1..16) images of c planes h x w (images image_stride floats apart)
// into lanes layout dst[c][rows][pitch][16], each plane placed at (top, left);
// lanes >= count, and the border around the planes, are zero. Rows or columns
// of the planes past rows - top / pitch - left are left out.
void f32_to_lanes_avx512(const float* x, std::size_t count, std::size_t image_stride, std::size_t c, std::size_t h,
                         std::size_t w, std::size_t top, std::size_t left, std::size_t rows, std::size_t pitch,
                         float* dst);

// out[l * image_stride + o * plane + q] = act(src[(o * plane + q) * 16 + l] +
// residual[same index as out]) for l < count, o in [o0, o1), q < plane;
// act: ReLU (NaN passes) or none; residual may be null.
void f32_from_lanes_avx512(const float* src, std::size_t o0, std::size_t o1, std::size_t plane, std::size_t count,
                           std::size_t image_stride, const float* residual, bool relu, float* out);

struct LanesConv {
  const float* src;            // lanes layout [c][rows][pitch][16]
  std::size_t c, rows, pitch;
  std::size_t row_lo, row_hi;  // rows outside [row_lo, row_hi) are zero: their taps are skipped
  const float* w;              // (O, C, kh, kw)
  const float* bias;           // O, or null
  std::size_t o, kh, kw, dh, dw;
  std::size_t oh, ow;
};

// dst: lanes layout [o][oh][ow][16] (all O channels; [o0, o1) written).
void f32_conv_lanes_avx512(const LanesConv& p, std::size_t o0, std::size_t o1, float* dst);

// out[e] = (float) sum over l = 0..15, in order, of (double) acc[e * 16 + l]
// for e < count (any alignment): the lane reduction of the weight
// gradients (here and in direct.h's), 16 elements at a time.
void f32_sum_lanes_avx512(const float* acc, std::size_t count, float* out);

}  // namespace nnkern::conv
