// conv2d by Winograd F(4x4, 3x3) for float32 3x3 stride-1 convolutions
// (conv/winograd.h has the transforms): per call, the filters are
// transformed once; then each block of tile rows is input-transformed, goes
// through 36 GEMMs (O x C) x (C x tiles) and is output-transformed with the
// bias / residual / ReLU epilogue, all while the block's buffers sit in L2.
#pragma once

#include "conv/conv_op.h"

namespace nnkern::ops {

// Whether conv2d_winograd serves this float32 convolution: the shape rule
// (3x3, stride 1, dilation 1, one group, enough channels) and an AVX-512 family.
bool winograd_applies(const ConvGeometry& g);

void conv2d_winograd(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                     const float* residual, bool relu, float* out);

// grad_input of a stride-1 3x3 convolution is the forward convolution of
// grad_output with the transposed, 180-degree-rotated filters and padding
// 2 - p (rows past the bottom / right edge read as zero): served by the same
// Winograd path when its rule holds for that geometry (and top / left
// padding <= 2).
ConvGeometry grad_input_geometry(const ConvGeometry& g);
bool winograd_grad_input_applies(const ConvGeometry& g);
void conv2d_winograd_grad_input(const ConvGeometry& g, const float* grad_output, const float* w, float* grad_input);

}  // namespace nnkern::ops
