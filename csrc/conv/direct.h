// Direct convolution of few channels, stride 1, vectorized along the output
// row (AVX-512 float32): for small channel counts (LeNet's 6 -> 16 5x5) an
// im2col matrix costs more to write than the GEMM that reads it (each column
// entry feeds only O multiply-adds, and 10-pixel rows make the copy runs
// short), and col2im's scattered adds cost more still. These kernels read the
// (padded) input planes in place: a register tile is OB output channels x RB
// row segments of up to 16 pixels, each tap one masked load per segment and
// one weight broadcast per channel.
//
// direct_conv: out[o][y][x] = init(o) + sum_{c, i, j} w[((o * C) + c) * kh * kw + i * kw + j]
//                 * in[c * plane + (y + i * dh) * pitch + x + j * dw]
//   for o in [o0, o1), y < oh, x < ow; init(o) = bias[o] or 0; then + residual
//   (laid out as out) and ReLU if asked. Each output is one FMA chain over
//   (c, i, j) in that order: the same bits whatever the tiling.
// direct_wgrad: acc[(o * K + t) * 16 + lane] += the lane-partial sums over
//   `images` images (in order) of g[o * oh * ow + y * ow + x] * in[tap_offset(t) + y * pitch + x],
//   t = (c, i, j) in weight order, K = C * kh * kw, for o in [o0, o1), t in
//   [t0, t1); lane l holds the pixels x = 16 s + l of every row. The caller
//   adds images in order and reduces the lanes in a fixed order at the end.
#pragma once

#include <cstddef>

namespace nnkern::conv {

struct DirectConv {
  const float* in;            // input planes (already padded), in[c * plane + y * pitch + x]
  std::size_t c, plane, pitch;
  const float* w;             // (O, C, kh, kw)
  std::size_t o, kh, kw, dh, dw;
  std::size_t oh, ow;         // output plane
  float* out;                 // out[o * oh * ow + y * ow + x]
  const float* bias;          // may be null
  const float* residual;      // may be null; laid out as out
  bool relu;
  const float* in_end;        // end of the readable memory after `in` (loads past a row stay below it)
};

void f32_direct_conv_avx512(const DirectConv& p, std::size_t o0, std::size_t o1);

struct DirectWgrad {
  const float* in;            // input planes (already padded)
  std::size_t c, plane, pitch;
  std::size_t kh, kw, dh, dw;
  const float* g;             // grad_output planes, g[o * oh * ow + y * ow + x]
  std::size_t o, oh, ow;
  std::size_t images, in_image, g_image;  // images summed in order, and their strides in `in` and `g`
};

void f32_direct_wgrad_avx512(const DirectWgrad& p, std::size_t o0, std::size_t o1, std::size_t t0, std::size_t t1,
                             float* acc);

// The forward with the output channels in the lanes (O <= 16): wt[((c * kh +
// i) * kw + j) * 16 + o] = w[o][c][i][j] (lanes o >= O zero) and bias16 (bias
// or zeros, 16 lanes), both 64-byte aligned; output rows [y0, y1) of one
// image (`in`: its planes, `out` / `residual`: its output planes), the same
// bits as direct_conv.
struct DirectConvLanes {
  std::size_t c, plane, pitch;
  const float* wt;
  const float* bias16;
  std::size_t o, kh, kw, dh, dw;
  std::size_t oh, ow;
  bool relu;
};

void f32_direct_conv_lanes_avx512(const DirectConvLanes& p, const float* in, std::size_t y0, std::size_t y1,
                                  float* out, const float* residual);

// The weight gradient with the output channels in the lanes (O <= 16, kw in
// 2..7): gt holds grad_output transposed, gt[pixel * 16 + o] (lanes o >= O
// zero, 64-byte aligned); for kernel rows r = c * kh + i in [r0, r1),
// acc[(r * kw + j) * 16 + o] += sum over images (in order), y, x of
// gt[(y * ow + x) * 16 + o] * in[c * plane + (y + i * dh) * pitch + x + j * dw].
// acc is 64-byte aligned. Returns false (nothing done) for another kw.
struct DirectWgradLanes {
  const float* in;
  std::size_t plane, pitch, kh, kw, dh, dw;
  const float* gt;
  std::size_t oh, ow;
  std::size_t images, in_image, gt_image;
};

bool f32_direct_wgrad_lanes_avx512(const DirectWgradLanes& p, std::size_t r0, std::size_t r1, float* acc);

}  // namespace nnkern::conv
