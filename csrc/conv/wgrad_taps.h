// The weight gradient of a convolution without im2col (AVX-512 float32):
// gw^T = patches^T x grad_output^T, with the patches read in place from a
// zero-padded copy of the image.
//
// Rows of the GEMM are the taps t = (i, j) of one input channel (at most
// kWgradTapsMaxRows), its depth the output pixels of whole rows, its columns
// 32 output channels. Row t of A at output pixel (y, x) is xpad[y * row_step +
// x * sx + a_row[t]] (row_step = stride_h * pitch, sx the column stride, 1 or
// 2, a_row[t] = i * dh * pitch + j * dw), so a k step broadcasts one value per
// tap from a few padded rows that stay in L1, and B is grad_output packed once
// into 32-wide panels: B(p, o) at b[p * 32 + o] for the pixels p of those rows
// in order (p = (y - y0) * ow + x).
//
// wgrad_taps: c[t * ldc + o] = beta * c[t * ldc + o] + sum over y in [y0, y1),
//   x < ow (in that order) of xpad[y * row_step + x * sx + a_row[t]] *
//   b[p * 32 + o] for t < rows, o < nr <= 32; beta is 0 or 1. One FMA chain
//   per element.
#pragma once

#include <cstddef>

namespace nnkern::conv {

constexpr std::size_t kWgradTapsMaxRows = 14;

void f32_wgrad_taps_avx512(std::size_t rows, std::size_t nr, const float* xpad, const std::ptrdiff_t* a_row,
                           std::size_t row_step, std::size_t sx, std::size_t y0, std::size_t y1, std::size_t ow,
                           const float* b, float* c, std::size_t ldc, float beta);

}  // namespace nnkern::conv
