// The definitions of ops.h: launch configurations around kernels/*.cuh. Included
// once by ops.cu (nvcc, real CUDA) and once by ops_emu.cpp (host emulator).
#pragma once

#include "cuda/kernels/pointwise.cuh"
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

}  // namespace nnkern::cuda_ops
