// The elementwise parts of the recurrent cells over one row of hidden units,
// declared per kernel family (f32/f64_rnn_pointwise_<isa>.cpp); the bodies
// are plain loops in rnn_pointwise_impl.h, vectorized by the compiler under
// each family's flags. The transcendental parts (sigmoid, tanh) are the
// vmath kernels, called by rnn_forward.cpp between these passes.
//
// Every pointer is already offset to the first unit; u units are processed.
// Results depend only on each element's inputs (no reductions), so any split
// of the units gives the same bits.
#pragma once

#include <cstddef>

namespace nnkern::rnn {

template <class T>
struct PointwiseFns {
  // LSTM forward: c = f * c_prev + i * g; then h = o * tanh(c) into two places
  void (*lstm_state)(std::size_t u, const T* i, const T* f, const T* g, const T* c_prev, T* c);
  void (*lstm_out)(std::size_t u, const T* o, const T* tanh_c, T* h_out, T* h_next);
  // GRU forward: r += gh_r, z += gh_z (before the sigmoid); n += r * gh_n (before the tanh,
  // saving gh_n); h = n + z * (h_prev - n) into two places
  void (*gru_pre)(std::size_t u, T* r, T* z, const T* gh_r, const T* gh_z);
  void (*gru_n)(std::size_t u, T* n, const T* r, const T* gh_n, T* gh_n_saved);
  void (*gru_out)(std::size_t u, const T* n, const T* z, const T* h_prev, T* h_out, T* h_next);
  // Elman forward, relu: h = relu(pre) into two places (NaN stays NaN)
  void (*relu_out)(std::size_t u, const T* pre, T* h_out, T* h_next);
  // LSTM backward: gate gradients from dh and the running dc (updated to dc * f)
  void (*lstm_backward)(std::size_t u, const T* dh, T* dc, const T* i, const T* f, const T* g, const T* o,
                        const T* tanh_c, const T* c_prev, T* d_i, T* d_f, T* d_g, T* d_o);
  // GRU backward: input-side (d_r, d_z, d_n), hidden-side (d_r, d_z, r * d_n) gradients and
  // the part of dh_prev that bypasses W_hh (dh * z)
  void (*gru_backward)(std::size_t u, const T* dh, const T* r, const T* z, const T* n, const T* gh_n,
                       const T* h_prev, T* di_r, T* di_z, T* di_n, T* dh_r, T* dh_z, T* dh_n, T* direct);
  // Elman backward from the output: tanh: dh * (1 - h^2); relu: h > 0 ? dh : 0
  void (*tanh_backward)(std::size_t u, const T* dh, const T* h, T* d);
  void (*relu_backward)(std::size_t u, const T* dh, const T* h, T* d);
  // out = a + b; acc += src (the backward's dh and bias sums: same bits in any family)
  void (*add)(std::size_t u, const T* a, const T* b, T* out);
  void (*accumulate)(std::size_t u, T* acc, const T* src);
};

#define NNKERN_DECLARE_RNN_POINTWISE(isa)            \
  PointwiseFns<float> f32_rnn_pointwise_##isa();    \
  PointwiseFns<double> f64_rnn_pointwise_##isa();

NNKERN_DECLARE_RNN_POINTWISE(scalar)
NNKERN_DECLARE_RNN_POINTWISE(avx2)
NNKERN_DECLARE_RNN_POINTWISE(avx512)
#undef NNKERN_DECLARE_RNN_POINTWISE

}  // namespace nnkern::rnn
