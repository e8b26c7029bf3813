// The definitions of ops.h: launch configurations around kernels/*.cuh. Included
// once by ops.cu (nvcc, real CUDA) and once by ops_emu.cpp (host emulator).
#pragma once

#include "cuda/kernels/conv.cuh"
#include "cuda/kernels/gemm.cuh"
#include "cuda/kernels/norm.cuh"
#include "cuda/kernels/pointwise.cuh"
#include "cuda/kernels/pool.cuh"
#include "cuda/kernels/rnn.cuh"
#include "cuda/kernels/selftest.cuh"
#include "cuda/launch.h"
#include "cuda/ops.h"

namespace nnkern::cuda_ops {
namespace {

using nnk::Dim;
using nnk::launch;

constexpr unsigned kThreads = 256;

template <class T>
T* at(Ptr p) {
  return reinterpret_cast<T*>(p);
}

// f(T{}) with T = double or float
template <class F>
void by_dtype(bool f64, F&& f) {
  if (f64) {
    f(double{});
  } else {
    f(float{});
  }
}

Dim flat_grid(std::int64_t n) { return {nnk::blocks_for(n, kThreads)}; }

nnk::PoolGeom pool_geom(const Geom& v) {
  return {v[0], v[1], v[2], v[3], int(v[4]), int(v[5]), int(v[6]), int(v[7]), int(v[8]), int(v[9]), int(v[10]),
          int(v[11])};
}

nnk::ConvGeom conv_geom(const Geom& v) {
  return {v[0], v[1], v[2], v[3], v[4], v[5], int(v[6]), int(v[7]), int(v[8]), int(v[9]), int(v[10]), int(v[11]),
          int(v[12]), int(v[13])};
}

}  // namespace

void selftest(Ptr out, Ptr counter, std::int64_t n, unsigned threads, Ptr stream) {
  launch(nnk::selftest_kernel, {unsigned((n + threads - 1) / threads)}, {threads}, stream, at<int>(out),
         at<int>(counter), n);
}

void activation(int which, bool f64, Ptr x, Ptr y, std::int64_t n, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    void (*kernel)(const T*, T*, std::int64_t) =
        which == 0 ? nnk::relu_kernel<T> : which == 1 ? nnk::sigmoid_kernel<T> : nnk::tanh_kernel<T>;
    launch(kernel, flat_grid(n), {kThreads}, stream, at<const T>(x), at<T>(y), n);
  });
}

void activation_backward(int which, bool f64, Ptr g, Ptr y, Ptr gx, std::int64_t n, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    void (*kernel)(const T*, const T*, T*, std::int64_t) =
        which == 0 ? nnk::relu_backward_kernel<T>
                   : which == 1 ? nnk::sigmoid_backward_kernel<T> : nnk::tanh_backward_kernel<T>;
    launch(kernel, flat_grid(n), {kThreads}, stream, at<const T>(g), at<const T>(y), at<T>(gx), n);
  });
}

void dropout(bool f64, Ptr x, Ptr y, Ptr mask, std::int64_t n, std::uint64_t key, std::uint32_t threshold,
             double scale, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::dropout_kernel<T>, flat_grid(n), {kThreads}, stream, at<const T>(x), at<T>(y), at<bool>(mask), n,
           key, threshold, T(scale));
  });
}

void dropout_backward(bool f64, Ptr g, Ptr mask, Ptr gx, std::int64_t n, double scale, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::dropout_backward_kernel<T>, flat_grid(n), {kThreads}, stream, at<const T>(g), at<const bool>(mask),
           at<T>(gx), n, T(scale));
  });
}

void softmax(bool f64, bool log, Ptr x, Ptr y, std::int64_t rows, std::int64_t d, std::int64_t inner, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::softmax_kernel<T>, {unsigned(rows)}, {nnk::kRowThreads}, stream, at<const T>(x), at<T>(y), d, inner,
           log);
  });
}

void softmax_backward(bool f64, bool log, Ptr g, Ptr y, Ptr gx, std::int64_t rows, std::int64_t d,
                      std::int64_t inner, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(log ? nnk::log_softmax_backward_kernel<T> : nnk::softmax_backward_kernel<T>, {unsigned(rows)},
           {nnk::kRowThreads}, stream, at<const T>(g), at<const T>(y), at<T>(gx), d, inner);
  });
}

void cross_entropy(bool f64, Ptr logits, Ptr target, Ptr nll, Ptr out, std::int64_t n, std::int64_t c, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::cross_entropy_rows_kernel<T>, {unsigned(n)}, {nnk::kRowThreads}, stream, at<const T>(logits),
           at<const std::int64_t>(target), at<double>(nll), c);
    launch(nnk::mean_kernel<T>, {1}, {nnk::kRowThreads}, stream, at<const double>(nll), at<T>(out), n);
  });
}

void cross_entropy_backward(bool f64, Ptr grad_loss, Ptr logits, Ptr target, Ptr gx, std::int64_t n, std::int64_t c,
                            Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::cross_entropy_backward_kernel<T>, {unsigned(n)}, {nnk::kRowThreads}, stream,
           at<const T>(grad_loss), at<const T>(logits), at<const std::int64_t>(target), at<T>(gx), n, c);
  });
}


void max_pool(bool f64, Ptr x, Ptr y, Ptr indices, std::int64_t planes, const Geom& pool, Ptr stream) {
  const nnk::PoolGeom g = pool_geom(pool);
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::max_pool_kernel<T>, flat_grid(planes * g.oh * g.ow), {kThreads}, stream, at<const T>(x), at<T>(y),
           at<std::int64_t>(indices), planes, g);
  });
}

void max_pool_backward(bool f64, Ptr gy, Ptr indices, Ptr gx, std::int64_t planes, const Geom& pool, Ptr stream) {
  const nnk::PoolGeom g = pool_geom(pool);
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::max_pool_backward_kernel<T>, flat_grid(planes * g.h * g.w), {kThreads}, stream, at<const T>(gy),
           at<const std::int64_t>(indices), at<T>(gx), planes, g);
  });
}

void avg_pool(bool f64, Ptr x, Ptr y, std::int64_t planes, const Geom& pool, bool include_pad, Ptr stream) {
  const nnk::PoolGeom g = pool_geom(pool);
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::avg_pool_kernel<T>, flat_grid(planes * g.oh * g.ow), {kThreads}, stream, at<const T>(x), at<T>(y),
           planes, g, include_pad);
  });
}

void avg_pool_backward(bool f64, Ptr gy, Ptr gx, std::int64_t planes, const Geom& pool, bool include_pad,
                       Ptr stream) {
  const nnk::PoolGeom g = pool_geom(pool);
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::avg_pool_backward_kernel<T>, flat_grid(planes * g.h * g.w), {kThreads}, stream, at<const T>(gy),
           at<T>(gx), planes, g, include_pad);
  });
}

void adaptive_avg_pool(bool f64, Ptr x, Ptr y, std::int64_t planes, const Geom& s, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::adaptive_avg_pool_kernel<T>, flat_grid(planes * s[2] * s[3]), {kThreads}, stream, at<const T>(x),
           at<T>(y), planes, s[0], s[1], s[2], s[3]);
  });
}

void adaptive_avg_pool_backward(bool f64, Ptr gy, Ptr gx, std::int64_t planes, const Geom& s, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::adaptive_avg_pool_backward_kernel<T>, flat_grid(planes * s[0] * s[1]), {kThreads}, stream,
           at<const T>(gy), at<T>(gx), planes, s[0], s[1], s[2], s[3]);
  });
}

void bn_stats(bool f64, Ptr x, Ptr shift_mean, Ptr mean, Ptr invstd, Ptr running_mean, Ptr running_var,
              std::int64_t n, std::int64_t channels, std::int64_t s, double momentum, double eps, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::bn_stats_kernel<T>, {unsigned(channels)}, {nnk::kChannelThreads}, stream, at<const T>(x),
           at<double>(shift_mean), at<T>(mean), at<T>(invstd), at<T>(running_mean), at<T>(running_var), n, channels,
           s, momentum, eps);
  });
}

void bn_eval_stats(bool f64, Ptr running_mean, Ptr running_var, Ptr shift_mean, Ptr mean, Ptr invstd,
                   std::int64_t channels, double eps, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::bn_eval_stats_kernel<T>, flat_grid(channels), {kThreads}, stream, at<const T>(running_mean),
           at<const T>(running_var), at<double>(shift_mean), at<T>(mean), at<T>(invstd), channels, eps);
  });
}

void bn_output(bool f64, Ptr x, Ptr shift_mean, Ptr invstd, Ptr weight, Ptr bias, Ptr y, std::int64_t n,
               std::int64_t channels, std::int64_t s, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::bn_output_kernel<T>, flat_grid(n * channels * s), {kThreads}, stream, at<const T>(x),
           at<const double>(shift_mean), at<const T>(invstd), at<const T>(weight), at<const T>(bias), at<T>(y),
           n * channels * s, channels, s);
  });
}

void bn_grad_sums(bool f64, Ptr g, Ptr x, Ptr mean, Ptr invstd, Ptr grad_weight, Ptr grad_bias, std::int64_t n,
                  std::int64_t channels, std::int64_t s, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::bn_grad_sums_kernel<T>, {unsigned(channels)}, {nnk::kChannelThreads}, stream, at<const T>(g),
           at<const T>(x), at<const T>(mean), at<const T>(invstd), at<T>(grad_weight), at<T>(grad_bias), n, channels,
           s);
  });
}

void bn_grad_input(bool f64, Ptr g, Ptr x, Ptr mean, Ptr invstd, Ptr weight, Ptr grad_weight, Ptr grad_bias, Ptr gx,
                   std::int64_t n, std::int64_t channels, std::int64_t s, bool training, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::bn_grad_input_kernel<T>, flat_grid(n * channels * s), {kThreads}, stream, at<const T>(g),
           at<const T>(x), at<const T>(mean), at<const T>(invstd), at<const T>(weight), at<const T>(grad_weight),
           at<const T>(grad_bias), at<T>(gx), n * channels * s, channels, s, training);
  });
}

void gemm(bool f64, Ptr a, Ptr b, Ptr c, Ptr row_bias, Ptr col_bias, Ptr addend, const Geom& d, bool accumulate,
          bool relu, Ptr stream) {
  const nnk::GemmArgs g{d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[12], d[13], d[14],
                        accumulate, relu};
  const Dim grid{nnk::blocks_for(g.n, nnk::kBlockTile), nnk::blocks_for(g.m, nnk::kBlockTile), unsigned(d[11])};
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::gemm_kernel<T>, grid, {nnk::kGemmThreads, nnk::kGemmThreads}, stream, at<const T>(a), at<const T>(b), at<T>(c),
           at<const T>(row_bias), at<const T>(col_bias), at<const T>(addend), g);
  });
}

void channel_sum(bool f64, Ptr x, Ptr out, std::int64_t outer, std::int64_t channels, std::int64_t inner,
                 Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::channel_sum_kernel<T>, {unsigned(channels)}, {nnk::kSumThreads}, stream, at<const T>(x), at<T>(out),
           outer, channels, inner);
  });
}

void im2col(bool f64, Ptr x, Ptr col, const Geom& conv, Ptr stream) {
  const nnk::ConvGeom g = conv_geom(conv);
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::im2col_kernel<T>, flat_grid(g.n * g.c * g.kh * g.kw * g.oh * g.ow), {kThreads}, stream,
           at<const T>(x), at<T>(col), g);
  });
}

void col2im(bool f64, Ptr col, Ptr gx, const Geom& conv, Ptr stream) {
  const nnk::ConvGeom g = conv_geom(conv);
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::col2im_kernel<T>, flat_grid(g.n * g.c * g.h * g.w), {kThreads}, stream, at<const T>(col), at<T>(gx),
           g);
  });
}

void depthwise(bool f64, Ptr x, Ptr w, Ptr bias, Ptr residual, Ptr y, const Geom& conv, int mult, bool relu,
               Ptr stream) {
  const nnk::ConvGeom g = conv_geom(conv);
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::depthwise_kernel<T>, flat_grid(g.n * g.c * mult * g.oh * g.ow), {kThreads}, stream, at<const T>(x),
           at<const T>(w), at<const T>(bias), at<const T>(residual), at<T>(y), g, mult, relu);
  });
}

void depthwise_backward_input(bool f64, Ptr gy, Ptr w, Ptr gx, const Geom& conv, int mult, Ptr stream) {
  const nnk::ConvGeom g = conv_geom(conv);
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::depthwise_backward_input_kernel<T>, flat_grid(g.n * g.c * g.h * g.w), {kThreads}, stream,
           at<const T>(gy), at<const T>(w), at<T>(gx), g, mult);
  });
}

void depthwise_backward_weight(bool f64, Ptr gy, Ptr x, Ptr gw, const Geom& conv, int mult, Ptr stream) {
  const nnk::ConvGeom g = conv_geom(conv);
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::depthwise_backward_weight_kernel<T>, {unsigned(g.c * mult * g.kh * g.kw)}, {nnk::kWeightThreads},
           stream, at<const T>(gy), at<const T>(x), at<T>(gw), g, mult);
  });
}


void lstm_step(bool f64, Ptr gates, Ptr c_prev, Ptr c_next, Ptr tanh_c, Ptr h_out, std::int64_t ld_out, Ptr h_next,
               std::int64_t n, std::int64_t hid, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::lstm_step_kernel<T>, flat_grid(n * hid), {kThreads}, stream, at<T>(gates), at<const T>(c_prev),
           at<T>(c_next), at<T>(tanh_c), at<T>(h_out), ld_out, at<T>(h_next), n, hid);
  });
}

void lstm_step_backward(bool f64, Ptr dh_out, std::int64_t ld_out, Ptr dh_carry, Ptr dc, Ptr gates, Ptr c_prev,
                        Ptr tanh_c, Ptr d_pre, Ptr dc_prev, std::int64_t n, std::int64_t hid, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::lstm_step_backward_kernel<T>, flat_grid(n * hid), {kThreads}, stream, at<const T>(dh_out), ld_out,
           at<const T>(dh_carry), at<const T>(dc), at<const T>(gates), at<const T>(c_prev), at<const T>(tanh_c),
           at<T>(d_pre), at<T>(dc_prev), n, hid);
  });
}

void gru_step(bool f64, Ptr gi, Ptr gh, Ptr h_prev, Ptr ghn, Ptr h_out, std::int64_t ld_out, Ptr h_next,
              std::int64_t n, std::int64_t hid, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::gru_step_kernel<T>, flat_grid(n * hid), {kThreads}, stream, at<T>(gi), at<const T>(gh),
           at<const T>(h_prev), at<T>(ghn), at<T>(h_out), ld_out, at<T>(h_next), n, hid);
  });
}

void gru_step_backward(bool f64, Ptr dh_out, std::int64_t ld_out, Ptr dh_carry, Ptr gates, Ptr ghn, Ptr h_prev,
                       Ptr d_gi, Ptr d_gh, Ptr dh_direct, std::int64_t n, std::int64_t hid, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::gru_step_backward_kernel<T>, flat_grid(n * hid), {kThreads}, stream, at<const T>(dh_out), ld_out,
           at<const T>(dh_carry), at<const T>(gates), at<const T>(ghn), at<const T>(h_prev), at<T>(d_gi),
           at<T>(d_gh), at<T>(dh_direct), n, hid);
  });
}

void rnn_step(bool f64, Ptr pre, Ptr h_out, std::int64_t ld_out, Ptr h_next, std::int64_t n, std::int64_t hid,
              bool relu, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::rnn_step_kernel<T>, flat_grid(n * hid), {kThreads}, stream, at<const T>(pre), at<T>(h_out), ld_out,
           at<T>(h_next), n, hid, relu);
  });
}

void rnn_step_backward(bool f64, Ptr dh_out, std::int64_t ld_out, Ptr dh_carry, Ptr h, std::int64_t ld_h, Ptr d_pre,
                       std::int64_t n, std::int64_t hid, bool relu, Ptr stream) {
  by_dtype(f64, [&](auto z) {
    using T = decltype(z);
    launch(nnk::rnn_step_backward_kernel<T>, flat_grid(n * hid), {kThreads}, stream, at<const T>(dh_out), ld_out,
           at<const T>(dh_carry), at<const T>(h), ld_h, at<T>(d_pre), n, hid, relu);
  });
}

}  // namespace nnkern::cuda_ops
