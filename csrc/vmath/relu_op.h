// relu operators: pick the micro-kernel of the active family and split the
// array over the thread pool. Views are C-contiguous and of equal size/dtype.
#pragma once

#include "core/array_view.h"

namespace nnkern::ops {

void relu(const ArrayView& x, const ArrayView& y);
void relu_backward(const ArrayView& grad_output, const ArrayView& output, const ArrayView& grad_input);

}  // namespace nnkern::ops
