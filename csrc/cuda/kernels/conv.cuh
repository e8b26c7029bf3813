// 2-D convolution pieces: im2col / col2im for the GEMM path (kernels/gemm.cuh)
// and a direct depthwise convolution, forward and backward. Backwards gather
// (one thread per input cell or one block per weight): no atomics.
#pragma once

#include <cstdint>

#include "cuda/kernels/common.cuh"

namespace nnk {

constexpr unsigned kWeightThreads = 256;  // one block per depthwise weight tap (a power of two)

struct ConvGeom {
  std::int64_t n, c, h, w, oh, ow;
  int kh, kw, sh, sw, pt, pl, dh, dw;
};

// col[n][(c * kh + i) * kw + j][oy * ow + ox] = x[n][c][oy * sh - pt + i * dh][ox * sw - pl + j * dw] (0 outside)
template <class T>
NNK_GLOBAL void im2col_kernel(const T* x, T* col, ConvGeom g) {
  const std::int64_t p = g.oh * g.ow, rows = g.c * g.kh * g.kw, total = g.n * rows * p;
  for (std::int64_t k = global_thread(); k < total; k += grid_threads()) {
    const std::int64_t ox = k % g.ow, oy = (k / g.ow) % g.oh, r = (k / p) % rows, n = k / (p * rows);
    const int j = int(r % g.kw), i = int((r / g.kw) % g.kh);
    const std::int64_t c = r / (g.kw * g.kh);
    const std::int64_t ih = oy * g.sh - g.pt + std::int64_t(i) * g.dh;
    const std::int64_t iw = ox * g.sw - g.pl + std::int64_t(j) * g.dw;
    col[k] = (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) ? x[((n * g.c + c) * g.h + ih) * g.w + iw] : T(0);
  }
}

// The transpose of im2col: gx[n][c][h][w] = the sum of the col entries im2col read it into.
template <class T>
NNK_GLOBAL void col2im_kernel(const T* col, T* gx, ConvGeom g) {
  const std::int64_t p = g.oh * g.ow, rows = g.c * g.kh * g.kw, total = g.n * g.c * g.h * g.w;
  for (std::int64_t k = global_thread(); k < total; k += grid_threads()) {
    const std::int64_t iw = k % g.w, ih = (k / g.w) % g.h, c = (k / (g.w * g.h)) % g.c, n = k / (g.w * g.h * g.c);
    const T* base = col + (n * rows + c * g.kh * g.kw) * p;
    T sum = T(0);
    windows_holding(ih, g.oh, g.kh, g.sh, g.pt, g.dh, [&](std::int64_t oy, int i) {
      windows_holding(iw, g.ow, g.kw, g.sw, g.pl, g.dw, [&](std::int64_t ox, int j) {
        sum += base[(std::int64_t(i) * g.kw + j) * p + oy * g.ow + ox];
      });
    });
    gx[k] = sum;
  }
}

// Depthwise: output channel o reads input channel o / mult with its own kh x kw filter;
// out = act(conv + bias + residual).
template <class T>
NNK_GLOBAL void depthwise_kernel(const T* x, const T* wt, const T* bias, const T* residual, T* y, ConvGeom g,
                                 int mult, bool relu) {
  const std::int64_t outs = g.c * mult, total = g.n * outs * g.oh * g.ow;
  for (std::int64_t k = global_thread(); k < total; k += grid_threads()) {
    const std::int64_t ox = k % g.ow, oy = (k / g.ow) % g.oh, o = (k / (g.ow * g.oh)) % outs;
    const std::int64_t n = k / (g.ow * g.oh * outs);
    const T* xp = x + (n * g.c + o / mult) * g.h * g.w;
    const T* wp = wt + o * g.kh * g.kw;
    T acc = T(0);
    for (int i = 0; i < g.kh; ++i) {
      const std::int64_t ih = oy * g.sh - g.pt + std::int64_t(i) * g.dh;
      if (ih < 0 || ih >= g.h) continue;
      for (int j = 0; j < g.kw; ++j) {
        const std::int64_t iw = ox * g.sw - g.pl + std::int64_t(j) * g.dw;
        if (iw >= 0 && iw < g.w) acc += xp[ih * g.w + iw] * wp[i * g.kw + j];
      }
    }
    if (bias != nullptr) acc += bias[o];
    if (residual != nullptr) acc += residual[k];
    if (relu && !(acc > T(0) || isnan_(acc))) acc = T(0);
    y[k] = acc;
  }
}

template <class T>
NNK_GLOBAL void depthwise_backward_input_kernel(const T* gy, const T* wt, T* gx, ConvGeom g, int mult) {
  const std::int64_t total = g.n * g.c * g.h * g.w, outs = g.c * mult;
  for (std::int64_t k = global_thread(); k < total; k += grid_threads()) {
    const std::int64_t iw = k % g.w, ih = (k / g.w) % g.h, c = (k / (g.w * g.h)) % g.c, n = k / (g.w * g.h * g.c);
    T sum = T(0);
    for (int m = 0; m < mult; ++m) {
      const std::int64_t o = c * mult + m;
      const T* gp = gy + (n * outs + o) * g.oh * g.ow;
      const T* wp = wt + o * g.kh * g.kw;
      windows_holding(ih, g.oh, g.kh, g.sh, g.pt, g.dh, [&](std::int64_t oy, int i) {
        windows_holding(iw, g.ow, g.kw, g.sw, g.pl, g.dw, [&](std::int64_t ox, int j) {
          sum += gp[oy * g.ow + ox] * wp[i * g.kw + j];
        });
      });
    }
    gx[k] = sum;
  }
}

// One block per weight tap (o, i, j): the sum over (n, oy, ox) of grad * input, in double.
template <class T>
NNK_GLOBAL void depthwise_backward_weight_kernel(const T* gy, const T* x, T* gw, ConvGeom g, int mult) {
  NNK_SHARED(double, buf, kWeightThreads);
  const std::int64_t tap = block_x(), taps = std::int64_t(g.kh) * g.kw;
  const std::int64_t o = tap / taps, outs = g.c * mult;
  const int i = int((tap % taps) / g.kw), j = int(tap % g.kw);
  const std::int64_t p = g.oh * g.ow, count = g.n * p;
  double s = 0;
  for (std::int64_t k = thread_x(); k < count; k += block_dim_x()) {
    const std::int64_t n = k / p, oy = (k % p) / g.ow, ox = k % g.ow;
    const std::int64_t ih = oy * g.sh - g.pt + std::int64_t(i) * g.dh;
    const std::int64_t iw = ox * g.sw - g.pl + std::int64_t(j) * g.dw;
    if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) {
      s += double(gy[(n * outs + o) * p + oy * g.ow + ox]) * double(x[((n * g.c + o / mult) * g.h + ih) * g.w + iw]);
    }
  }
  s = block_reduce(s, buf, SumOp());
  if (thread_x() == 0) gw[tap] = T(s);
}

}  // namespace nnk
