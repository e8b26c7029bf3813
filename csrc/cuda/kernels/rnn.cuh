// Fused pointwise steps of the LSTM, GRU and Elman cells, forward and backward,
// over an (n, hid) batch of states; the matrix products around them are
// kernels/gemm.cuh. Used by the cells and, once per time step, by the sequences.
//
// Row strides: `ld_out` for the output or upstream-gradient rows (a column block
// of a bidirectional layer output); every other state array is (n, hid)
// contiguous, gates (n, G * hid). Optional pointers may be null: a null h_next
// is not written, a null gradient counts as zeros. A carried gradient may be
// updated in place (each element is read before it is written, by one thread).
#pragma once

#include <cstdint>

#include "cuda/kernels/common.cuh"

namespace nnk {

// sigmoid as 0.5 tanh(0.5 a) + 0.5: never overflows (the reference's form)
template <class T>
NNK_DEVICE T sigmoid_(T a) {
  return T(0.5) * tanh_(T(0.5) * a) + T(0.5);
}

template <class T>
NNK_DEVICE T grad_at(const T* a, std::int64_t i) {
  return a != nullptr ? a[i] : T(0);
}

// gates (n, 4 hid) pre-activations i, f, g, o -> activated in place; c' = f c + i g, h' = o tanh(c')
template <class T>
NNK_GLOBAL void lstm_step_kernel(T* gates, const T* c_prev, T* c_next, T* tanh_c, T* h_out, std::int64_t ld_out,
                                 T* h_next, std::int64_t n, std::int64_t hid) {
  for (std::int64_t k = global_thread(); k < n * hid; k += grid_threads()) {
    const std::int64_t b = k / hid, j = k % hid;
    T* g = gates + b * 4 * hid + j;
    const T i = sigmoid_(g[0]), f = sigmoid_(g[hid]), gg = tanh_(g[2 * hid]), o = sigmoid_(g[3 * hid]);
    g[0] = i;
    g[hid] = f;
    g[2 * hid] = gg;
    g[3 * hid] = o;
    const T c = f * c_prev[k] + i * gg;
    const T tc = tanh_(c);
    const T h = o * tc;
    c_next[k] = c;
    tanh_c[k] = tc;
    h_out[b * ld_out + j] = h;
    if (h_next != nullptr) h_next[k] = h;
  }
}

// dh = dh_out + dh_carry; d_pre (n, 4 hid); dc_prev = (dh o (1 - tanh_c^2) + dc) f
template <class T>
NNK_GLOBAL void lstm_step_backward_kernel(const T* dh_out, std::int64_t ld_out, const T* dh_carry, const T* dc,
                                          const T* gates, const T* c_prev, const T* tanh_c, T* d_pre, T* dc_prev,
                                          std::int64_t n, std::int64_t hid) {
  for (std::int64_t k = global_thread(); k < n * hid; k += grid_threads()) {
    const std::int64_t b = k / hid, j = k % hid;
    const T* g = gates + b * 4 * hid + j;
    const T i = g[0], f = g[hid], gg = g[2 * hid], o = g[3 * hid], tc = tanh_c[k];
    const T dh = grad_at(dh_out, b * ld_out + j) + grad_at(dh_carry, k);
    const T dct = dh * o * (T(1) - tc * tc) + grad_at(dc, k);
    T* d = d_pre + b * 4 * hid + j;
    d[0] = dct * gg * i * (T(1) - i);
    d[hid] = dct * c_prev[k] * f * (T(1) - f);
    d[2 * hid] = dct * i * (T(1) - gg * gg);
    d[3 * hid] = dh * tc * o * (T(1) - o);
    dc_prev[k] = dct * f;
  }
}

// gi (n, 3 hid) = x W_ih^T + b_ih -> activated r, z, n in place; gh = h W_hh^T + b_hh (read);
// ghn = its n block; h' = n + z (h - n)
template <class T>
NNK_GLOBAL void gru_step_kernel(T* gi, const T* gh, const T* h_prev, T* ghn, T* h_out, std::int64_t ld_out,
                                T* h_next, std::int64_t n, std::int64_t hid) {
  for (std::int64_t k = global_thread(); k < n * hid; k += grid_threads()) {
    const std::int64_t b = k / hid, j = k % hid;
    T* g = gi + b * 3 * hid + j;
    const T* hg = gh + b * 3 * hid + j;
    const T r = sigmoid_(g[0] + hg[0]), z = sigmoid_(g[hid] + hg[hid]);
    const T nn = tanh_(g[2 * hid] + r * hg[2 * hid]);
    g[0] = r;
    g[hid] = z;
    g[2 * hid] = nn;
    ghn[k] = hg[2 * hid];
    const T h = nn + z * (h_prev[k] - nn);
    h_out[b * ld_out + j] = h;
    if (h_next != nullptr) h_next[k] = h;
  }
}

// d_gi, d_gh (n, 3 hid): the input- and hidden-side pre-activation gradients (they differ in
// the n block, scaled by r on the hidden side); dh_direct = dh z, the part bypassing W_hh
template <class T>
NNK_GLOBAL void gru_step_backward_kernel(const T* dh_out, std::int64_t ld_out, const T* dh_carry, const T* gates,
                                         const T* ghn, const T* h_prev, T* d_gi, T* d_gh, T* dh_direct,
                                         std::int64_t n, std::int64_t hid) {
  for (std::int64_t k = global_thread(); k < n * hid; k += grid_threads()) {
    const std::int64_t b = k / hid, j = k % hid;
    const T* g = gates + b * 3 * hid + j;
    const T r = g[0], z = g[hid], nn = g[2 * hid];
    const T dh = grad_at(dh_out, b * ld_out + j) + grad_at(dh_carry, k);
    const T dn = dh * (T(1) - z) * (T(1) - nn * nn);
    const T dr = dn * ghn[k] * r * (T(1) - r);
    const T dz = dh * (h_prev[k] - nn) * z * (T(1) - z);
    T* di = d_gi + b * 3 * hid + j;
    T* dg = d_gh + b * 3 * hid + j;
    di[0] = dg[0] = dr;
    di[hid] = dg[hid] = dz;
    di[2 * hid] = dn;
    dg[2 * hid] = dn * r;
    dh_direct[k] = dh * z;
  }
}

// h' = tanh(pre) or relu(pre) (NaN kept)
template <class T>
NNK_GLOBAL void rnn_step_kernel(const T* pre, T* h_out, std::int64_t ld_out, T* h_next, std::int64_t n,
                                std::int64_t hid, bool relu) {
  for (std::int64_t k = global_thread(); k < n * hid; k += grid_threads()) {
    const T p = pre[k];
    const T h = relu ? ((p > T(0) || isnan_(p)) ? p : T(0)) : tanh_(p);
    h_out[(k / hid) * ld_out + k % hid] = h;
    if (h_next != nullptr) h_next[k] = h;
  }
}

// d_pre = (dh_out + dh_carry) * act'(h'), the derivative taken from the output h' (rows ld_h)
template <class T>
NNK_GLOBAL void rnn_step_backward_kernel(const T* dh_out, std::int64_t ld_out, const T* dh_carry, const T* h,
                                         std::int64_t ld_h, T* d_pre, std::int64_t n, std::int64_t hid, bool relu) {
  for (std::int64_t k = global_thread(); k < n * hid; k += grid_threads()) {
    const std::int64_t b = k / hid, j = k % hid;
    const T dh = grad_at(dh_out, b * ld_out + j) + grad_at(dh_carry, k);
    const T y = h[b * ld_h + j];
    d_pre[k] = relu ? (y > T(0) ? dh : T(0)) : dh * (T(1) - y * y);
  }
}

}  // namespace nnk
