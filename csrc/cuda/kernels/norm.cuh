// Batch normalization over (N, C, S) arrays (S = the spatial size, 1 for (N, C)):
// per-channel statistics and gradient sums, one block per channel, two passes
// over data shifted by one of the channel's own values, in double; then one
// elementwise pass. No atomics: the same bits on every run.
#pragma once

#include <cstdint>

#include "cuda/kernels/common.cuh"

namespace nnk {

constexpr unsigned kChannelThreads = 256;  // one block per channel (a power of two)

// Element k of channel c in (N, C, S) order, for k in [0, N * S).
NNK_DEVICE std::int64_t channel_at(std::int64_t k, std::int64_t c, std::int64_t channels, std::int64_t s) {
  return ((k / s) * channels + c) * s + k % s;
}

// Training statistics of channel block_x: shift[c] = x[0, c, 0] and dmean[c] =
// mean(x - shift) (both double, for the output pass), mean = shift + dmean,
// invstd = 1 / sqrt(biased var + eps) in T; running stats updated (unbiased var).
template <class T>
NNK_GLOBAL void bn_stats_kernel(const T* x, double* shift_mean, T* mean, T* invstd, T* running_mean,
                                T* running_var, std::int64_t n, std::int64_t channels, std::int64_t s,
                                double momentum, double eps) {
  NNK_SHARED(double, buf, kChannelThreads);
  const std::int64_t c = block_x(), count = n * s;
  if (count == 0) {  // an empty batch has no statistics: running ones untouched (PyTorch)
    if (thread_x() == 0) {
      shift_mean[2 * c] = shift_mean[2 * c + 1] = 0;
      mean[c] = T(0);
      invstd[c] = T(1.0 / ::sqrt(eps));
    }
    return;
  }
  const double shift = double(x[c * s]);
  double sum = 0;
  for (std::int64_t k = thread_x(); k < count; k += block_dim_x()) sum += double(x[channel_at(k, c, channels, s)]) - shift;
  const double dmean = block_reduce(sum, buf, SumOp()) / double(count);
  double sq = 0;
  for (std::int64_t k = thread_x(); k < count; k += block_dim_x()) {
    const double d = double(x[channel_at(k, c, channels, s)]) - shift - dmean;
    sq += d * d;
  }
  const double var = block_reduce(sq, buf, SumOp()) / double(count);
  if (thread_x() == 0) {
    shift_mean[2 * c] = shift;
    shift_mean[2 * c + 1] = dmean;
    const T m = T(shift + dmean);
    mean[c] = m;
    // 1 / sqrt in T from the rounded variance, as the reference computes it
    const T inv = T(1) / sqrt_(T(var) + T(eps));
    invstd[c] = inv;
    if (running_mean != nullptr) {
      const T mom = T(momentum);
      const T unbiased = count > 1 ? T(var * (double(count) / double(count - 1))) : T(var);
      running_mean[c] = running_mean[c] * (T(1) - mom) + mom * m;
      running_var[c] = running_var[c] * (T(1) - mom) + mom * unbiased;
    }
  }
}

// Evaluation: the running statistics (shift = running mean, no residual mean).
template <class T>
NNK_GLOBAL void bn_eval_stats_kernel(const T* running_mean, const T* running_var, double* shift_mean, T* mean,
                                     T* invstd, std::int64_t channels, double eps) {
  for (std::int64_t c = global_thread(); c < channels; c += grid_threads()) {
    shift_mean[2 * c] = double(running_mean[c]);
    shift_mean[2 * c + 1] = 0;
    mean[c] = running_mean[c];
    invstd[c] = T(1) / sqrt_(running_var[c] + T(eps));
  }
}

// out = (x - shift - dmean) * invstd * weight + bias
template <class T>
NNK_GLOBAL void bn_output_kernel(const T* x, const double* shift_mean, const T* invstd, const T* weight,
                                 const T* bias, T* y, std::int64_t total, std::int64_t channels, std::int64_t s) {
  for (std::int64_t k = global_thread(); k < total; k += grid_threads()) {
    const std::int64_t c = (k / s) % channels;
    const T scale = weight != nullptr ? invstd[c] * weight[c] : invstd[c];
    const double centered = double(x[k]) - shift_mean[2 * c] - shift_mean[2 * c + 1];
    const T out = T(centered * double(scale));
    y[k] = bias != nullptr ? out + bias[c] : out;
  }
}

// Per channel: grad_bias = sum(g), grad_weight = sum(g * xhat), xhat = (x - mean) * invstd.
template <class T>
NNK_GLOBAL void bn_grad_sums_kernel(const T* g, const T* x, const T* mean, const T* invstd, T* grad_weight,
                                    T* grad_bias, std::int64_t n, std::int64_t channels, std::int64_t s) {
  NNK_SHARED(double, buf, kChannelThreads);
  const std::int64_t c = block_x(), count = n * s;
  const double m = double(mean[c]), inv = double(invstd[c]);
  double sg = 0, sgx = 0;
  for (std::int64_t k = thread_x(); k < count; k += block_dim_x()) {
    const std::int64_t at = channel_at(k, c, channels, s);
    sg += double(g[at]);
    sgx += double(g[at]) * ((double(x[at]) - m) * inv);
  }
  sg = block_reduce(sg, buf, SumOp());
  sgx = block_reduce(sgx, buf, SumOp());
  if (thread_x() == 0) {
    grad_bias[c] = T(sg);
    grad_weight[c] = T(sgx);
  }
}

// training: (g - sum(g) / count - xhat * sum(g xhat) / count) * invstd * weight; eval: g * invstd * weight
template <class T>
NNK_GLOBAL void bn_grad_input_kernel(const T* g, const T* x, const T* mean, const T* invstd, const T* weight,
                                     const T* grad_weight, const T* grad_bias, T* gx, std::int64_t total,
                                     std::int64_t channels, std::int64_t s, bool training) {
  const double count = double(total / (channels > 0 ? channels : 1));
  for (std::int64_t k = global_thread(); k < total; k += grid_threads()) {
    const std::int64_t c = (k / s) % channels;
    const double scale = double(weight != nullptr ? invstd[c] * weight[c] : invstd[c]);
    double inner = double(g[k]);
    if (training) {
      const double xhat = (double(x[k]) - double(mean[c])) * double(invstd[c]);
      inner -= double(grad_bias[c]) / count + xhat * (double(grad_weight[c]) / count);
    }
    gx[k] = T(inner * scale);
  }
}

}  // namespace nnk
