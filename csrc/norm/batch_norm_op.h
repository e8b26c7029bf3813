// Batch-norm operators: pick the plane micro-kernels of the active family and
// split the (n, c) planes of x (N, C, *) over the thread pool. Views are
// C-contiguous; a view with data == nullptr is an absent optional argument
// (running statistics, weight, bias) or an output not asked for.
#pragma once

#include "core/array_view.h"

namespace nnkern::ops {

// Writes out = act(bn(x) + residual) (residual of x's shape, when given; act
// relu when `relu`), mean, invstd (C,); in training updates running_mean/var
// in place when given.
void batch_norm(const ArrayView& x, const ArrayView& running_mean, const ArrayView& running_var,
                const ArrayView& weight, const ArrayView& bias, bool training, double momentum, double eps,
                bool relu, const ArrayView& residual, const ArrayView& out, const ArrayView& mean,
                const ArrayView& invstd);

// Writes grad_input / grad_weight / grad_bias, each only when its data is set.
void batch_norm_backward(const ArrayView& grad_output, const ArrayView& x, const ArrayView& weight,
                         const ArrayView& mean, const ArrayView& invstd, bool training,
                         const ArrayView& grad_input, const ArrayView& grad_weight, const ArrayView& grad_bias);

}  // namespace nnkern::ops
