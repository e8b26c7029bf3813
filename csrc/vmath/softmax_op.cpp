#include "vmath/softmax_op.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/thread_pool.h"
#include "core/workspace.h"

namespace nnkern::ops {
namespace {

// One task is a (outer index, block of kInnerBlock inner columns): each
// reduction runs along dim with the inner columns side by side, so for
// inner > 1 the loops are unit-stride across inner and vectorize; for
// inner == 1 a task is one row.
constexpr std::size_t kInnerBlock = 256;

// NaN-propagating max (np.max semantics): once NaN, stays NaN.
template <class T>
inline T nan_max(T m, T v) {
  return (v > m || v != v) ? v : m;
}

template <class Fn>
void split_rows(const SoftmaxShape& s, Fn fn) {
  const std::size_t blocks = (s.inner + kInnerBlock - 1) / kInnerBlock;
  parallel_for(s.outer * blocks, [&](std::size_t first, std::size_t last) {
    for (std::size_t t = first; t < last; ++t) {
      const std::size_t o = t / blocks, j0 = (t % blocks) * kInnerBlock;
      fn(o * s.dim * s.inner + j0, std::min(kInnerBlock, s.inner - j0));
    }
  });
}

// Sums along dim accumulate in double: a float32 sum of thousands of terms
// would otherwise drift by ~1e-6 relative, the whole error budget.
// Forward on one (dim, w) slab with row stride `stride`.
template <class T>
void softmax_slab(const T* x, T* y, std::size_t dim, std::size_t stride, std::size_t w, bool log) {
  T m[kInnerBlock];
  double sum[kInnerBlock];
  std::fill_n(m, w, -std::numeric_limits<T>::infinity());
  std::fill_n(sum, w, 0.0);
  for (std::size_t d = 0; d < dim; ++d) {
    for (std::size_t j = 0; j < w; ++j) m[j] = nan_max(m[j], x[d * stride + j]);
  }
  for (std::size_t d = 0; d < dim; ++d) {
    for (std::size_t j = 0; j < w; ++j) {
      const T e = std::exp(x[d * stride + j] - m[j]);
      sum[j] += e;
      if (!log) y[d * stride + j] = e;
    }
  }
  if (log) {
    T log_sum[kInnerBlock];
    for (std::size_t j = 0; j < w; ++j) log_sum[j] = static_cast<T>(std::log(sum[j]));
    for (std::size_t d = 0; d < dim; ++d) {
      for (std::size_t j = 0; j < w; ++j) y[d * stride + j] = (x[d * stride + j] - m[j]) - log_sum[j];
    }
  } else {
    T total[kInnerBlock];
    for (std::size_t j = 0; j < w; ++j) total[j] = static_cast<T>(sum[j]);
    for (std::size_t d = 0; d < dim; ++d) {
      for (std::size_t j = 0; j < w; ++j) y[d * stride + j] /= total[j];
    }
  }
}

template <class T>
void softmax_backward_slab(const T* g, const T* out, T* gi, std::size_t dim, std::size_t stride, std::size_t w,
                           bool log) {
  // softmax: y * (g - sum(g y)) with g measured from its value at the largest y (sum(y) = 1
  // makes the forms equal). When one probability is close to 1, g - sum(g y) cancels almost
  // completely; (g - g_top) - sum(y (g - g_top)) has no large term left to cancel.
  double top[kInnerBlock];
  if (log) {
    std::fill_n(top, w, 0.0);
  } else {
    T best[kInnerBlock];
    for (std::size_t j = 0; j < w; ++j) best[j] = out[j], top[j] = g[j];
    for (std::size_t d = 1; d < dim; ++d) {
      for (std::size_t j = 0; j < w; ++j) {
        const std::size_t k = d * stride + j;
        if (out[k] > best[j]) best[j] = out[k], top[j] = g[k];
      }
    }
  }
  double acc[kInnerBlock];
  std::fill_n(acc, w, 0.0);
  for (std::size_t d = 0; d < dim; ++d) {
    for (std::size_t j = 0; j < w; ++j) {
      const std::size_t k = d * stride + j;
      acc[j] += log ? static_cast<double>(g[k]) : (g[k] - top[j]) * static_cast<double>(out[k]);
    }
  }
  for (std::size_t d = 0; d < dim; ++d) {
    for (std::size_t j = 0; j < w; ++j) {
      const std::size_t k = d * stride + j;
      gi[k] = log ? static_cast<T>(g[k] - std::exp(static_cast<double>(out[k])) * acc[j])
                  : static_cast<T>(out[k] * ((g[k] - top[j]) - acc[j]));
    }
  }
}

template <class T>
void softmax_typed(const ArrayView& x, std::size_t axis, bool log, const ArrayView& y) {
  const SoftmaxShape s = softmax_shape(x, axis);
  if (s.dim == 0) return;
  split_rows(s, [&](std::size_t base, std::size_t w) {
    softmax_slab(x.as<T>() + base, y.as<T>() + base, s.dim, s.inner, w, log);
  });
}

template <class T>
void softmax_backward_typed(const ArrayView& g, const ArrayView& out, std::size_t axis, bool log, const ArrayView& gi) {
  const SoftmaxShape s = softmax_shape(g, axis);
  if (s.dim == 0) return;
  split_rows(s, [&](std::size_t base, std::size_t w) {
    softmax_backward_slab(g.as<T>() + base, out.as<T>() + base, gi.as<T>() + base, s.dim, s.inner, w, log);
  });
}

// Per-row losses go to scratch and are summed in row order on this thread:
// the mean is the same for every thread count.
template <class T>
void cross_entropy_typed(const ArrayView& logits, const std::int64_t* target, const ArrayView& loss) {
  const std::size_t n = logits.shape[0], c = logits.shape[1];
  if (n == 0) {
    *loss.as<T>() = std::numeric_limits<T>::quiet_NaN();
    return;
  }
  ScratchBuffer rows = acquire_scratch(n * sizeof(double));
  double* row_loss = rows.as<double>();
  const T* x = logits.as<T>();
  parallel_for(n, [&](std::size_t first, std::size_t last) {
    for (std::size_t i = first; i < last; ++i) {
      const T* r = x + i * c;
      T m = -std::numeric_limits<T>::infinity();
      for (std::size_t k = 0; k < c; ++k) m = nan_max(m, r[k]);
      double sum = 0;
      for (std::size_t k = 0; k < c; ++k) sum += std::exp(r[k] - m);
      row_loss[i] = std::log(sum) - static_cast<double>(r[target[i]] - m);
    }
  });
  double total = 0;
  for (std::size_t i = 0; i < n; ++i) total += row_loss[i];
  *loss.as<T>() = static_cast<T>(total / static_cast<double>(n));
}

template <class T>
void cross_entropy_backward_typed(double grad_loss, const ArrayView& logits, const std::int64_t* target,
                                  const ArrayView& grad) {
  const std::size_t n = logits.shape[0], c = logits.shape[1];
  if (n == 0 || c == 0) return;
  const T scale = static_cast<T>(static_cast<T>(grad_loss) / static_cast<T>(n));
  const T* x = logits.as<T>();
  T* gx = grad.as<T>();
  parallel_for(n, [&](std::size_t first, std::size_t last) {
    for (std::size_t i = first; i < last; ++i) {
      softmax_slab(x + i * c, gx + i * c, c, 1, 1, false);
      gx[i * c + target[i]] -= 1;
      for (std::size_t k = 0; k < c; ++k) gx[i * c + k] *= scale;
    }
  });
}

}  // namespace

SoftmaxShape softmax_shape(const ArrayView& x, std::size_t axis) {
  SoftmaxShape s{1, static_cast<std::size_t>(x.shape[axis]), 1};
  for (std::size_t d = 0; d < axis; ++d) s.outer *= x.shape[d];
  for (std::size_t d = axis + 1; d < x.shape.size(); ++d) s.inner *= x.shape[d];
  return s;
}

void softmax(const ArrayView& x, std::size_t axis, bool log, const ArrayView& y) {
  if (x.dtype == Dtype::f32) {
    softmax_typed<float>(x, axis, log, y);
  } else {
    softmax_typed<double>(x, axis, log, y);
  }
}

void softmax_backward(const ArrayView& grad_output, const ArrayView& output, std::size_t axis, bool log,
                      const ArrayView& grad_input) {
  if (grad_output.dtype == Dtype::f32) {
    softmax_backward_typed<float>(grad_output, output, axis, log, grad_input);
  } else {
    softmax_backward_typed<double>(grad_output, output, axis, log, grad_input);
  }
}

void cross_entropy(const ArrayView& logits, const std::int64_t* target, const ArrayView& loss) {
  if (logits.dtype == Dtype::f32) {
    cross_entropy_typed<float>(logits, target, loss);
  } else {
    cross_entropy_typed<double>(logits, target, loss);
  }
}

void cross_entropy_backward(double grad_loss, const ArrayView& logits, const std::int64_t* target,
                            const ArrayView& grad_logits) {
  if (logits.dtype == Dtype::f32) {
    cross_entropy_backward_typed<float>(grad_loss, logits, target, grad_logits);
  } else {
    cross_entropy_backward_typed<double>(grad_loss, logits, target, grad_logits);
  }
}

}  // namespace nnkern::ops
