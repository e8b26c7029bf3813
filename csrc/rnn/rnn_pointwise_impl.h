// Bodies of rnn_pointwise.h: plain loops over restrict-qualified rows that
// the compiler vectorizes under each family's flags. A template header: each
// f??_rnn_pointwise_<isa>.cpp instantiates it with NNKERN_DEFINE_RNN_POINTWISE;
// everything here is in an anonymous namespace (see CMakeLists.txt).
#pragma once

#include <cstddef>

#include "rnn/rnn_pointwise.h"

namespace nnkern::rnn {
namespace {

template <class T>
struct PointwiseImpl {
  static void lstm_state(std::size_t u, const T* __restrict i, const T* __restrict f, const T* __restrict g,
                         const T* __restrict c_prev, T* __restrict c) {
    for (std::size_t j = 0; j < u; ++j) {
      T v = f[j] * c_prev[j];
      v += i[j] * g[j];
      c[j] = v;
    }
  }
  static void lstm_out(std::size_t u, const T* __restrict o, const T* __restrict tanh_c, T* __restrict h_out,
                       T* __restrict h_next) {
    for (std::size_t j = 0; j < u; ++j) {
      const T h = o[j] * tanh_c[j];
      h_out[j] = h;
      h_next[j] = h;
    }
  }
  static void gru_pre(std::size_t u, T* __restrict r, T* __restrict z, const T* __restrict gh_r,
                      const T* __restrict gh_z) {
    for (std::size_t j = 0; j < u; ++j) {
      r[j] += gh_r[j];
      z[j] += gh_z[j];
    }
  }
  static void gru_n(std::size_t u, T* __restrict n, const T* __restrict r, const T* __restrict gh_n,
                    T* __restrict saved) {
    for (std::size_t j = 0; j < u; ++j) {
      saved[j] = gh_n[j];
      n[j] += r[j] * gh_n[j];
    }
  }
  static void gru_out(std::size_t u, const T* __restrict n, const T* __restrict z, const T* __restrict h_prev,
                      T* __restrict h_out, T* __restrict h_next) {
    for (std::size_t j = 0; j < u; ++j) {
      const T h = n[j] + z[j] * (h_prev[j] - n[j]);
      h_out[j] = h;
      h_next[j] = h;
    }
  }
  static void relu_out(std::size_t u, const T* __restrict pre, T* __restrict h_out, T* __restrict h_next) {
    for (std::size_t j = 0; j < u; ++j) {
      const T x = pre[j];
      const T h = x > T(0) || x != x ? x : T(0);  // NaN stays NaN, as torch.relu
      h_out[j] = h;
      h_next[j] = h;
    }
  }
  static void lstm_backward(std::size_t u, const T* __restrict dh, T* __restrict dc, const T* __restrict i,
                            const T* __restrict f, const T* __restrict g, const T* __restrict o,
                            const T* __restrict tanh_c, const T* __restrict c_prev, T* __restrict d_i,
                            T* __restrict d_f, T* __restrict d_g, T* __restrict d_o) {
    for (std::size_t j = 0; j < u; ++j) {
      const T dct = dh[j] * o[j] * (T(1) - tanh_c[j] * tanh_c[j]) + dc[j];
      d_i[j] = dct * g[j] * i[j] * (T(1) - i[j]);
      d_f[j] = dct * c_prev[j] * f[j] * (T(1) - f[j]);
      d_g[j] = dct * i[j] * (T(1) - g[j] * g[j]);
      d_o[j] = dh[j] * tanh_c[j] * o[j] * (T(1) - o[j]);
      dc[j] = dct * f[j];
    }
  }
  static void gru_backward(std::size_t u, const T* __restrict dh, const T* __restrict r, const T* __restrict z,
                           const T* __restrict n, const T* __restrict gh_n, const T* __restrict h_prev,
                           T* __restrict di_r, T* __restrict di_z, T* __restrict di_n, T* __restrict dh_r,
                           T* __restrict dh_z, T* __restrict dh_n, T* __restrict direct) {
    for (std::size_t j = 0; j < u; ++j) {
      const T dn = dh[j] * (T(1) - z[j]) * (T(1) - n[j] * n[j]);
      const T dr = dn * gh_n[j] * r[j] * (T(1) - r[j]);
      const T dz = dh[j] * (h_prev[j] - n[j]) * z[j] * (T(1) - z[j]);
      di_r[j] = dr;
      di_z[j] = dz;
      di_n[j] = dn;
      dh_r[j] = dr;
      dh_z[j] = dz;
      dh_n[j] = dn * r[j];
      direct[j] = dh[j] * z[j];
    }
  }
  static void tanh_backward(std::size_t u, const T* __restrict dh, const T* __restrict h, T* __restrict d) {
    for (std::size_t j = 0; j < u; ++j) d[j] = dh[j] * (T(1) - h[j] * h[j]);
  }
  static void relu_backward(std::size_t u, const T* __restrict dh, const T* __restrict h, T* __restrict d) {
    for (std::size_t j = 0; j < u; ++j) d[j] = h[j] > T(0) ? dh[j] : T(0);
  }

  static void add(std::size_t u, const T* __restrict a, const T* __restrict b, T* __restrict out) {
    for (std::size_t j = 0; j < u; ++j) out[j] = a[j] + b[j];
  }
  static void accumulate(std::size_t u, T* __restrict acc, const T* __restrict src) {
    for (std::size_t j = 0; j < u; ++j) acc[j] += src[j];
  }

  static PointwiseFns<T> table() {
    return {lstm_state, lstm_out, gru_pre, gru_n, gru_out, relu_out, lstm_backward, gru_backward, tanh_backward,
            relu_backward, add, accumulate};
  }
};

}  // namespace
}  // namespace nnkern::rnn

#define NNKERN_DEFINE_RNN_POINTWISE(isa)                                                                 \
  PointwiseFns<float> f32_rnn_pointwise_##isa() { return PointwiseImpl<float>::table(); }              \
  PointwiseFns<double> f64_rnn_pointwise_##isa() { return PointwiseImpl<double>::table(); }
