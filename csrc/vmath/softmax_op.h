// softmax / log_softmax along one dim and cross-entropy. The array is
// C-contiguous and viewed as (outer, dim, inner): `dim` is the reduced axis.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/array_view.h"

namespace nnkern::ops {

struct SoftmaxShape {
  std::size_t outer, dim, inner;
};
SoftmaxShape softmax_shape(const ArrayView& x, std::size_t axis);

void softmax(const ArrayView& x, std::size_t axis, bool log, const ArrayView& y);
// grad_input = out * (g - sum(g * out)) (softmax) or g - exp(out) * sum(g) (log).
void softmax_backward(const ArrayView& grad_output, const ArrayView& output, std::size_t axis, bool log,
                      const ArrayView& grad_input);

// logits (N, C), target (N,) int64 in [0, C); loss written to *loss (NaN for N == 0).
void cross_entropy(const ArrayView& logits, const std::int64_t* target, const ArrayView& loss);
void cross_entropy_backward(double grad_loss, const ArrayView& logits, const std::int64_t* target,
                            const ArrayView& grad_logits);

}  // namespace nnkern::ops
