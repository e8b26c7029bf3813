// Elementwise activations, dropout, the softmax family and cross-entropy.
#pragma once

#include <cstdint>

#include "cuda/kernels/common.cuh"

namespace nnk {

constexpr unsigned kRowThreads = 128;  // one block per softmax row (a power of two)

template <class T>
NNK_GLOBAL void relu_kernel(const T* x, T* y, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) {
    const T v = x[i];
    y[i] = (v > T(0) || isnan_(v)) ? v : T(0);
  }
}

template <class T>
NNK_GLOBAL void relu_backward_kernel(const T* g, const T* y, T* gx, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) gx[i] = y[i] > T(0) ? g[i] : T(0);
}

template <class T>
NNK_GLOBAL void sigmoid_kernel(const T* x, T* y, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) {
    const T v = x[i];
    // exp of a non-positive argument never overflows
    const T e = exp_(v >= T(0) ? -v : v);
    y[i] = v >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
  }
}

template <class T>
NNK_GLOBAL void sigmoid_backward_kernel(const T* g, const T* y, T* gx, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) gx[i] = g[i] * y[i] * (T(1) - y[i]);
}

template <class T>
NNK_GLOBAL void tanh_kernel(const T* x, T* y, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) y[i] = tanh_(x[i]);
}

template <class T>
NNK_GLOBAL void tanh_backward_kernel(const T* g, const T* y, T* gx, std::int64_t n) {
  // (1 - y)(1 + y): no cancellation in 1 - y*y near |y| = 1
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) gx[i] = g[i] * ((T(1) - y[i]) * (T(1) + y[i]));
}

// The counter-based generator of numpy_ref/counter_rng.py: element i is kept when
// the top 24 bits of splitmix64(key + (i + 1) * phi) are >= threshold.
NNK_DEVICE bool dropout_keep(std::uint64_t key, std::uint64_t i, std::uint32_t threshold) {
  std::uint64_t z = key + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return std::uint32_t(z >> 40) >= threshold;
}

template <class T>
NNK_GLOBAL void dropout_kernel(const T* x, T* y, bool* mask, std::int64_t n, std::uint64_t key,
                               std::uint32_t threshold, T scale) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) {
    const bool keep = dropout_keep(key, std::uint64_t(i), threshold);
    mask[i] = keep;
    y[i] = keep ? x[i] * scale : x[i] * T(0);  // x * 0 as in PyTorch: NaN / Inf give NaN
  }
}

template <class T>
NNK_GLOBAL void dropout_backward_kernel(const T* g, const bool* mask, T* gx, std::int64_t n, T scale) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) gx[i] = mask[i] ? g[i] * scale : g[i] * T(0);
}

// ---- rows of the softmax family: the array is (outer, d, inner), one block per
// (outer, inner) row of d elements spaced `inner` apart; sums in double.

struct Row {
  std::int64_t base, stride;
  NNK_DEVICE std::int64_t at(std::int64_t j) const { return base + j * stride; }
};

NNK_DEVICE Row row_of(std::int64_t r, std::int64_t d, std::int64_t inner) {
  return {(r / inner) * d * inner + r % inner, inner};
}

template <class T>
NNK_DEVICE T row_max(const T* x, Row row, std::int64_t d, T* buf) {
  T m = -INFINITY;
  for (std::int64_t j = thread_x(); j < d; j += block_dim_x()) m = MaxOp()(m, x[row.at(j)]);
  return block_reduce(m, buf, MaxOp());
}

template <class T>
NNK_DEVICE double row_sum_exp(const T* x, Row row, std::int64_t d, T m, double* buf) {
  double s = 0;
  for (std::int64_t j = thread_x(); j < d; j += block_dim_x()) s += double(exp_(x[row.at(j)] - m));
  return block_reduce(s, buf, SumOp());
}

template <class T>
NNK_GLOBAL void softmax_kernel(const T* x, T* y, std::int64_t d, std::int64_t inner, bool log) {
  NNK_SHARED(T, tbuf, kRowThreads);
  NNK_SHARED(double, dbuf, kRowThreads);
  const Row row = row_of(block_x(), d, inner);
  const T m = row_max(x, row, d, tbuf);
  const double s = row_sum_exp(x, row, d, m, dbuf);
  const T log_s = T(::log(s));
  const T inv = T(1.0 / s);
  for (std::int64_t j = thread_x(); j < d; j += block_dim_x()) {
    const T shifted = x[row.at(j)] - m;
    y[row.at(j)] = log ? shifted - log_s : exp_(shifted) * inv;
  }
}

// y * (g - sum(g y)) with g measured from its value at the largest y: when one
// probability is close to 1, (g - g_top) - sum(y (g - g_top)) has no large terms to cancel.
template <class T>
NNK_GLOBAL void softmax_backward_kernel(const T* g, const T* y, T* gx, std::int64_t d, std::int64_t inner) {
  NNK_SHARED(T, best, kRowThreads);
  NNK_SHARED(std::int64_t, best_at, kRowThreads);
  NNK_SHARED(double, dbuf, kRowThreads);
  const Row row = row_of(block_x(), d, inner);
  const unsigned t = thread_x();
  // the first largest y of the row (as argmax): per thread, then a tree keeping the lower index on ties
  T v = -INFINITY;
  std::int64_t at = d;
  for (std::int64_t j = t; j < d; j += block_dim_x()) {
    if (y[row.at(j)] > v || at == d) {
      v = y[row.at(j)];
      at = j;
    }
  }
  best[t] = v;
  best_at[t] = at;
  sync();
  for (unsigned s = block_dim_x() / 2; s > 0; s >>= 1) {
    if (t < s) {
      const T w = best[t + s];
      const std::int64_t wa = best_at[t + s];
      if (wa < d && (best_at[t] == d || w > best[t] || (w == best[t] && wa < best_at[t]))) {
        best[t] = w;
        best_at[t] = wa;
      }
    }
    sync();
  }
  const T top = g[row.at(best_at[0])];
  double s = 0;
  for (std::int64_t j = t; j < d; j += block_dim_x()) s += double(g[row.at(j)] - top) * double(y[row.at(j)]);
  s = block_reduce(s, dbuf, SumOp());
  for (std::int64_t j = t; j < d; j += block_dim_x()) {
    gx[row.at(j)] = T(double(y[row.at(j)]) * (double(g[row.at(j)] - top) - s));
  }
}

template <class T>
NNK_GLOBAL void log_softmax_backward_kernel(const T* g, const T* y, T* gx, std::int64_t d, std::int64_t inner) {
  NNK_SHARED(double, dbuf, kRowThreads);
  const Row row = row_of(block_x(), d, inner);
  double s = 0;
  for (std::int64_t j = thread_x(); j < d; j += block_dim_x()) s += double(g[row.at(j)]);
  const T total = T(block_reduce(s, dbuf, SumOp()));
  for (std::int64_t j = thread_x(); j < d; j += block_dim_x()) {
    gx[row.at(j)] = g[row.at(j)] - exp_(y[row.at(j)]) * total;
  }
}

// Cross-entropy, first pass: nll[r] = logsumexp(row) - logit[target] for each row of (n, c).
template <class T>
NNK_GLOBAL void cross_entropy_rows_kernel(const T* logits, const std::int64_t* target, double* nll, std::int64_t c) {
  NNK_SHARED(T, tbuf, kRowThreads);
  NNK_SHARED(double, dbuf, kRowThreads);
  const Row row = row_of(block_x(), c, 1);
  const T m = row_max(logits, row, c, tbuf);
  const double s = row_sum_exp(logits, row, c, m, dbuf);
  if (thread_x() == 0) nll[block_x()] = ::log(s) - double(logits[row.at(target[block_x()])] - m);
}

// Second pass, one block: the mean of nll (NaN for an empty batch, as NumPy's mean).
template <class T>
NNK_GLOBAL void mean_kernel(const double* v, T* out, std::int64_t n) {
  NNK_SHARED(double, dbuf, kRowThreads);
  double s = 0;
  for (std::int64_t i = thread_x(); i < n; i += block_dim_x()) s += v[i];
  s = block_reduce(s, dbuf, SumOp());
  if (thread_x() == 0) out[0] = n > 0 ? T(s / double(n)) : T(NAN);
}

// (softmax(row) - onehot(target)) * grad_loss / n, one block per row.
template <class T>
NNK_GLOBAL void cross_entropy_backward_kernel(const T* grad_loss, const T* logits, const std::int64_t* target,
                                              T* gx, std::int64_t n, std::int64_t c) {
  NNK_SHARED(T, tbuf, kRowThreads);
  NNK_SHARED(double, dbuf, kRowThreads);
  const Row row = row_of(block_x(), c, 1);
  const T m = row_max(logits, row, c, tbuf);
  const double s = row_sum_exp(logits, row, c, m, dbuf);
  const T inv = T(1.0 / s);
  const T scale = grad_loss[0] / T(n);
  const std::int64_t tgt = target[block_x()];
  for (std::int64_t j = thread_x(); j < c; j += block_dim_x()) {
    const T p = exp_(logits[row.at(j)] - m) * inv;
    gx[row.at(j)] = (j == tgt ? p - T(1) : p) * scale;
  }
}

}  // namespace nnk
