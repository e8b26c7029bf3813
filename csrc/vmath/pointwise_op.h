// sigmoid / tanh / dropout operators: pick the micro-kernel of the active
// family and split the array over the thread pool. Views are C-contiguous and
// of equal size; float and mask views as documented per function.
#pragma once

#include <cstdint>

#include "core/array_view.h"

namespace nnkern::ops {

void sigmoid(const ArrayView& x, const ArrayView& y);
void tanh(const ArrayView& x, const ArrayView& y);
void sigmoid_backward(const ArrayView& grad_output, const ArrayView& output, const ArrayView& grad_input);
void tanh_backward(const ArrayView& grad_output, const ArrayView& output, const ArrayView& grad_input);

// keep: a bool buffer of x's size; the mask of counter_rng.keep_mask(seed, shape, p).
void dropout(const ArrayView& x, double p, std::uint64_t seed, const ArrayView& y, bool* keep);
void dropout_backward(const ArrayView& grad_output, const bool* keep, double p, const ArrayView& grad_input);

}  // namespace nnkern::ops
