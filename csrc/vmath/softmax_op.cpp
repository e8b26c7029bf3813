#include "vmath/softmax_op.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "core/workspace.h"
#include "vmath/vsoftmax.h"

namespace nnkern::ops {
namespace {

using namespace nnkern::vmath;

// float32: the vector kernels of the active family (vsoftmax.h).
struct F32Softmax {
  decltype(&f32_max_expsum_scalar) max_expsum;
  decltype(&f32_max_expsum_store_scalar) max_expsum_store;
  decltype(&f32_vscale_scalar) scale;
  decltype(&f32_vsub2_scalar) sub2;
  decltype(&f32_softmax_bwd_scalar) softmax_bwd;
  decltype(&f32_log_softmax_bwd_scalar) log_softmax_bwd;
  decltype(&f32_max_expsum_cols_scalar) max_expsum_cols;
  decltype(&f32_max_expsum_store_cols_scalar) max_expsum_store_cols;
  decltype(&f32_scale_cols_scalar) scale_cols;
  decltype(&f32_sub2_cols_scalar) sub2_cols;
  decltype(&f32_softmax_bwd_cols_scalar) softmax_bwd_cols;
  decltype(&f32_log_softmax_bwd_cols_scalar) log_softmax_bwd_cols;
};

#define NNKERN_SOFTMAX_TABLE(isa)                                                                                  \
  {f32_max_expsum_##isa,       f32_max_expsum_store_##isa,       f32_vscale_##isa,       f32_vsub2_##isa,       \
   f32_softmax_bwd_##isa,      f32_log_softmax_bwd_##isa,        f32_max_expsum_cols_##isa,                     \
   f32_max_expsum_store_cols_##isa, f32_scale_cols_##isa,        f32_sub2_cols_##isa,                           \
   f32_softmax_bwd_cols_##isa, f32_log_softmax_bwd_cols_##isa}
#if NNKERN_X86_KERNELS
const PerIsa<F32Softmax> kF32Softmax = {NNKERN_SOFTMAX_TABLE(scalar), NNKERN_SOFTMAX_TABLE(avx2),
                                        NNKERN_SOFTMAX_TABLE(avx512)};
#else
const PerIsa<F32Softmax> kF32Softmax = {NNKERN_SOFTMAX_TABLE(scalar), {}, {}};
#endif
#undef NNKERN_SOFTMAX_TABLE

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

// At least this many elements per task: smaller arrays (E1's 64 x 10 logits)
// run inline, since waking a pool thread (~2-5 us) costs more than their work.
constexpr std::size_t kTaskElements = std::size_t{16} << 10;

// fn(first, last) over [0, units) units of unit_elems elements, in tasks of
// at least kTaskElements. Every unit is computed alone, so its bits do not
// depend on the split.
template <class Fn>
void split_units(std::size_t units, std::size_t unit_elems, const Fn& fn) {
  const std::size_t tasks = std::min(units, std::max<std::size_t>(1, units * unit_elems / kTaskElements));
  if (tasks <= 1) {
    fn(std::size_t{0}, units);
    return;
  }
  parallel_for(tasks, [&](std::size_t t0, std::size_t t1) {
    fn(chunk_range(units, tasks, t0).first, chunk_range(units, tasks, t1 - 1).second);
  });
}

template <class Fn>
void split_rows(const SoftmaxShape& s, Fn fn) {
  const std::size_t blocks = (s.inner + kInnerBlock - 1) / kInnerBlock;
  split_units(s.outer * blocks, s.dim * std::min(s.inner, kInnerBlock), [&](std::size_t first, std::size_t last) {
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

// float32, one row (inner == 1) or one slab of w columns: the kernels' passes,
// with the logarithm / reciprocal of each sum taken here in double.
void softmax_f32(const ArrayView& xv, std::size_t axis, bool log, const ArrayView& yv) {
  const F32Softmax k = kF32Softmax.active();
  const SoftmaxShape s = softmax_shape(xv, axis);
  if (s.dim == 0) return;
  const float* x = xv.as<float>();
  float* y = yv.as<float>();
  if (s.inner == 1) {
    split_units(s.outer, s.dim, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r) {
        const float* xr = x + r * s.dim;
        float* yr = y + r * s.dim;
        float m;
        double sum;
        if (log) {
          k.max_expsum(s.dim, xr, &m, &sum);
          k.sub2(s.dim, xr, yr, m, static_cast<float>(std::log(sum)));
        } else {
          k.max_expsum_store(s.dim, xr, yr, &m, &sum);
          k.scale(s.dim, yr, static_cast<float>(1 / sum));
        }
      }
    });
    return;
  }
  split_rows(s, [&](std::size_t base, std::size_t w) {
    float m[kInnerBlock], c[kInnerBlock];
    double sum[kInnerBlock];
    if (log) {
      k.max_expsum_cols(s.dim, s.inner, w, x + base, m, sum);
      for (std::size_t j = 0; j < w; ++j) c[j] = static_cast<float>(std::log(sum[j]));
      k.sub2_cols(s.dim, s.inner, w, x + base, y + base, m, c);
    } else {
      k.max_expsum_store_cols(s.dim, s.inner, w, x + base, y + base, m, sum);
      for (std::size_t j = 0; j < w; ++j) c[j] = static_cast<float>(1 / sum[j]);
      k.scale_cols(s.dim, s.inner, w, y + base, c);
    }
  });
}

void softmax_backward_f32(const ArrayView& gv, const ArrayView& ov, std::size_t axis, bool log,
                          const ArrayView& giv) {
  const F32Softmax k = kF32Softmax.active();
  const SoftmaxShape s = softmax_shape(gv, axis);
  if (s.dim == 0) return;
  const float* g = gv.as<float>();
  const float* o = ov.as<float>();
  float* gi = giv.as<float>();
  if (s.inner == 1) {
    const auto row = log ? k.log_softmax_bwd : k.softmax_bwd;
    split_units(s.outer, s.dim, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r) row(s.dim, g + r * s.dim, o + r * s.dim, gi + r * s.dim);
    });
    return;
  }
  const auto slab = log ? k.log_softmax_bwd_cols : k.softmax_bwd_cols;
  split_rows(s, [&](std::size_t base, std::size_t w) { slab(s.dim, s.inner, w, g + base, o + base, gi + base); });
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
  split_units(n, c, [&](std::size_t first, std::size_t last) {
    for (std::size_t i = first; i < last; ++i) {
      const T* r = x + i * c;
      T m = -std::numeric_limits<T>::infinity();
      double sum = 0;
      if constexpr (std::is_same_v<T, float>) {
        kF32Softmax.active().max_expsum(c, r, &m, &sum);
      } else {
        for (std::size_t k = 0; k < c; ++k) m = nan_max(m, r[k]);
        for (std::size_t k = 0; k < c; ++k) sum += std::exp(r[k] - m);
      }
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
  split_units(n, c, [&](std::size_t first, std::size_t last) {
    for (std::size_t i = first; i < last; ++i) {
      if constexpr (std::is_same_v<T, float>) {
        // scale * softmax in one pass over the exps, then the target's -scale
        const F32Softmax k = kF32Softmax.active();
        float m;
        double sum;
        k.max_expsum_store(c, x + i * c, gx + i * c, &m, &sum);
        if (std::isfinite(scale)) {
          k.scale(c, gx + i * c, static_cast<float>(static_cast<double>(scale) / sum));
          gx[i * c + target[i]] -= scale;
        } else {
          // an infinite grad_loss: (p - 1) * inf as the reference, not p * inf - inf
          k.scale(c, gx + i * c, static_cast<float>(1.0 / sum));
          gx[i * c + target[i]] -= 1;
          for (std::size_t j = 0; j < c; ++j) gx[i * c + j] *= scale;
        }
      } else {
        softmax_slab(x + i * c, gx + i * c, c, 1, 1, false);
        gx[i * c + target[i]] -= 1;
        for (std::size_t k = 0; k < c; ++k) gx[i * c + k] *= scale;
      }
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
    softmax_f32(x, axis, log, y);
  } else {
    softmax_typed<double>(x, axis, log, y);
  }
}

void softmax_backward(const ArrayView& grad_output, const ArrayView& output, std::size_t axis, bool log,
                      const ArrayView& grad_input) {
  if (grad_output.dtype == Dtype::f32) {
    softmax_backward_f32(grad_output, output, axis, log, grad_input);
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
