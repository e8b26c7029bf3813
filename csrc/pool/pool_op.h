// Pooling operators over NCHW views (C-contiguous, validated in Python):
// generic per-cell code for every shape and float64, the float32 row kernels
// of the active family (pool_rows.h) where a window row lies inside the input.
// Work is split over the N*C planes; each task writes only its own planes.
#pragma once

#include <cstdint>

#include "core/array_view.h"

namespace nnkern::ops {

struct Pool2dParams {
  std::int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// out (N,C,OH,OW) and indices (int64, same shape) are allocated by the caller;
// indices == nullptr computes the values alone (the same values).
void max_pool2d(const ArrayView& x, const Pool2dParams& p, const ArrayView& out, std::int64_t* indices);
// grad_input (N,C,H,W); indices as max_pool2d wrote them.
void max_pool2d_backward(const ArrayView& grad_output, const std::int64_t* indices, const ArrayView& grad_input);
void avg_pool2d(const ArrayView& x, const Pool2dParams& p, bool count_include_pad, const ArrayView& out);
void avg_pool2d_backward(const ArrayView& grad_output, const Pool2dParams& p, bool count_include_pad,
                         const ArrayView& grad_input);
void adaptive_avg_pool2d(const ArrayView& x, const ArrayView& out);
void adaptive_avg_pool2d_backward(const ArrayView& grad_output, const ArrayView& grad_input);

}  // namespace nnkern::ops
