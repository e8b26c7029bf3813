// conv2d by Winograd F(4x4, 3x3) for float32 3x3 stride-1 convolutions
// (conv/winograd.h has the transforms): the filters are transformed and
// packed once per weight (kept in the weight cache); then each block of tile rows is input-transformed, goes
// through 36 GEMMs (O x C) x (C x tiles) and is output-transformed with the
// bias / residual / ReLU epilogue, all while the block's buffers sit in L2.
#pragma once

#include <memory>
#include <vector>

#include "conv/conv_op.h"
#include "gemm/gemm.h"

namespace nnkern::ops {

// Whether conv2d_winograd serves this float32 convolution: Winograd allowed
// (set_winograd_allowed), the shape rule (3x3, stride 1, dilation 1, one
// group, enough channels) and an AVX-512 family.
bool winograd_applies(const ConvGeometry& g);

// Whether n floats are all finite (no NaN, no Inf: an exponent of all ones),
// as an integer OR over the bit patterns, split over threads in runs of 64 K.
// Winograd's transforms spread a NaN or Inf over a whole tile: such data
// takes the direct path.
bool all_finite(const float* p, std::size_t n);

// nnkern.set_conv_algorithm: "auto" allows Winograd (default), "direct" turns
// it off (every conv then takes the GEMM or direct kernels). Process-wide.
void set_winograd_allowed(bool allowed);
bool winograd_allowed();

// The 36 transformed filter matrices U[xi] = (G g G^T)[xi] (O x C), packed
// as GEMM A operands; empty when a weight is NaN or Inf (the transforms would
// spread it over whole tiles: the caller takes the direct path instead).
struct WinogradFilters {
  bool finite = true;
  std::vector<std::unique_ptr<gemm::PreparedA<float>>> u;
};

// The filters of weight w, from the weight cache (core/weight_cache.h) when
// this weight was transformed before with the same bytes.
std::shared_ptr<const WinogradFilters> winograd_filters(const ConvGeometry& g, const float* w);

void conv2d_winograd(const ConvGeometry& g, const float* x, const WinogradFilters& filters, const float* bias,
                     const float* residual, bool relu, float* out);

// grad_input of a stride-1 3x3 convolution is the forward convolution of
// grad_output with the transposed, 180-degree-rotated filters and padding
// 2 - p (rows past the bottom / right edge read as zero): served by the same
// Winograd path when its rule holds for that geometry (and top / left
// padding <= 2).
ConvGeometry grad_input_geometry(const ConvGeometry& g);
bool winograd_grad_input_applies(const ConvGeometry& g);
// The filters of that forward convolution (w' = w transposed and rotated), cached under w.
std::shared_ptr<const WinogradFilters> winograd_grad_input_filters(const ConvGeometry& g, const float* w);

}  // namespace nnkern::ops
