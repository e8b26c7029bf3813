// conv2d forward and backward (NCHW), the operator layer: picks an algorithm
// per shape and splits the work over the thread pool.
//
//  - float32 3x3, stride 1, enough channels, AVX-512: Winograd F(4x4, 3x3)
//    (winograd_op.h); also grad_input of such convs (padding <= 2).
//  - 1x1, stride 1, no padding: a GEMM straight on the NCHW planes.
//  - one input channel per group (depthwise, or a channel multiplier), 3x3,
//    stride 1, dilation 1: whole-plane kernels on the unpadded planes
//    (dw3x3.h), the epilogue fused; grad_input is the same kernel with the
//    flipped filter, grad_weight and grad_bias one pass per plane.
//  - other depthwise shapes: direct kernels along the output row (dwconv.h).
//  - few channels at stride 1 (groups 1, at most 32 outputs, AVX-512 float32):
//    direct kernels on the planes in place (direct.h), no im2col / col2im;
//    grad_input as the same conv of the padded grad_output with the flipped
//    weight (at most 32 input channels); grad_weight also with one input channel.
//  - forward, float32 AVX-512, O a multiple of 32 and pixels per image not:
//    "pixel rows", out^T = patches x W^T with the tile stored transposed into
//    the NCHW planes; patches read in place from a padded image (implicit)
//    or written into the packed panels (im2col_panels.h).
//  - everything else: GEMM over an im2col of a tile of output pixels, packed
//    into a reused workspace buffer (never the whole batch's columns).
//
// Arguments are trusted (Python validated them); every array is C-contiguous.
#pragma once

#include <cstddef>

#include "core/array_view.h"

namespace nnkern::ops {

struct ConvGeometry {
  std::size_t n, c, h, w;     // input (N, C, H, W)
  std::size_t o, kh, kw;      // weight (O, C / groups, kh, kw)
  std::size_t oh, ow;         // output (N, O, OH, OW)
  std::size_t sh, sw;         // stride
  std::size_t pt, pl;         // top / left padding (bottom / right only shape OH, OW)
  std::size_t dh, dw;         // dilation
  std::size_t groups;
};

// out = act(conv(x, weight) + bias + residual); bias / residual may be null.
void conv2d(const ConvGeometry& g, const ArrayView& x, const ArrayView& weight, const ArrayView* bias,
            const ArrayView* residual, bool relu, const ArrayView& out);

// Gradients w.r.t. the input, weight and bias of the convolution; a null output is not computed.
void conv2d_backward(const ConvGeometry& g, const ArrayView& grad_output, const ArrayView& x,
                     const ArrayView& weight, const ArrayView* grad_input, const ArrayView* grad_weight,
                     const ArrayView* grad_bias);

}  // namespace nnkern::ops
