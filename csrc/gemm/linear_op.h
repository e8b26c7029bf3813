// linear forward and backward on 2-D C-contiguous views (the binding folds
// x's leading dimensions into M):
//   x (M, K), weight (N, K), bias (N) or none, out (M, N) = x W^T + bias
//   grad_output (M, N): grad_input (M, K) = grad W, grad_weight (N, K) =
//   grad^T x, grad_bias (N) = column sums of grad (rows in order: the same
//   bits for every thread count). A null output of linear_backward is skipped.
#pragma once

#include "core/array_view.h"

namespace nnkern::ops {

void linear(const ArrayView& x, const ArrayView& weight, const ArrayView* bias, const ArrayView& out);

void linear_backward(const ArrayView& grad_output, const ArrayView& x, const ArrayView& weight,
                     const ArrayView* grad_input, const ArrayView* grad_weight, const ArrayView* grad_bias);

}  // namespace nnkern::ops
