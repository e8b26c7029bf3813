// Defines the entry points of vsoftmax.h for one family from
// SoftmaxKernels<A> (softmax_impl.h): each f32_softmax_<isa>.cpp ends with
// NNKERN_DEFINE_SOFTMAX(isa, its vector type).
#pragma once

#include "vmath/softmax_impl.h"
#include "vmath/vsoftmax.h"

#define NNKERN_DEFINE_SOFTMAX(isa, A)                                                                         \
  void f32_max_expsum_##isa(std::size_t n, const float* x, float* m, double* s) {                            \
    SoftmaxKernels<A>::max_expsum<false>(n, x, nullptr, m, s);                                                \
  }                                                                                                           \
  void f32_max_expsum_store_##isa(std::size_t n, const float* x, float* e, float* m, double* s) {           \
    SoftmaxKernels<A>::max_expsum<true>(n, x, e, m, s);                                                       \
  }                                                                                                           \
  void f32_vscale_##isa(std::size_t n, float* y, float c) { SoftmaxKernels<A>::scale(n, y, c); }             \
  void f32_vsub2_##isa(std::size_t n, const float* x, float* y, float a, float b) {                          \
    SoftmaxKernels<A>::sub2(n, x, y, a, b);                                                                   \
  }                                                                                                           \
  void f32_softmax_bwd_##isa(std::size_t n, const float* g, const float* o, float* gi) {                     \
    SoftmaxKernels<A>::softmax_bwd(n, g, o, gi);                                                              \
  }                                                                                                           \
  void f32_log_softmax_bwd_##isa(std::size_t n, const float* g, const float* o, float* gi) {                 \
    SoftmaxKernels<A>::log_softmax_bwd(n, g, o, gi);                                                          \
  }                                                                                                           \
  void f32_max_expsum_cols_##isa(std::size_t dim, std::size_t stride, std::size_t w, const float* x, float* m, \
                                 double* s) {                                                                 \
    SoftmaxKernels<A>::max_expsum_cols<false>(dim, stride, w, x, nullptr, m, s);                              \
  }                                                                                                           \
  void f32_max_expsum_store_cols_##isa(std::size_t dim, std::size_t stride, std::size_t w, const float* x,   \
                                       float* e, float* m, double* s) {                                       \
    SoftmaxKernels<A>::max_expsum_cols<true>(dim, stride, w, x, e, m, s);                                     \
  }                                                                                                           \
  void f32_scale_cols_##isa(std::size_t dim, std::size_t stride, std::size_t w, float* y, const float* c) {  \
    SoftmaxKernels<A>::scale_cols(dim, stride, w, y, c);                                                      \
  }                                                                                                           \
  void f32_sub2_cols_##isa(std::size_t dim, std::size_t stride, std::size_t w, const float* x, float* y,     \
                           const float* a, const float* b) {                                                  \
    SoftmaxKernels<A>::sub2_cols(dim, stride, w, x, y, a, b);                                                 \
  }                                                                                                           \
  void f32_softmax_bwd_cols_##isa(std::size_t dim, std::size_t stride, std::size_t w, const float* g,       \
                                  const float* o, float* gi) {                                                \
    SoftmaxKernels<A>::softmax_bwd_cols(dim, stride, w, g, o, gi);                                            \
  }                                                                                                           \
  void f32_log_softmax_bwd_cols_##isa(std::size_t dim, std::size_t stride, std::size_t w, const float* g,   \
                                      const float* o, float* gi) {                                            \
    SoftmaxKernels<A>::log_softmax_bwd_cols(dim, stride, w, g, o, gi);                                        \
  }
