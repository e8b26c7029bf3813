// float32 softmax micro-kernels, one set per kernel family
// (f32_softmax_avx512.cpp, ...), all from softmax_impl.h. A row is n
// contiguous floats; a slab is `dim` rows of w <= 256 columns at row stride
// `stride` (softmax along a dim that is not the last: vectorized across the
// inner dimension). Sums come back in double; the operator (softmax_op.cpp)
// takes logarithms and reciprocals between the passes.
//
// max_expsum:   *m = max(x) (NaN dropped), *s = sum(exp(x - m)); the _store
//               form also writes e = exp(x - m) (to y, for softmax).
// scale:        y *= c.                 sub2: y = (x - a) - b.
// softmax_bwd:  gi = out * ((g - top) - sum(out * (g - top))), top = g at the
//               first largest out.      log_softmax_bwd: gi = g - exp(out) * sum(g).
// *_cols:       the same per column, with per-column m, s (double), c, a, b.
//
// exp has at most 2 ulp of error on non-positive arguments (the only ones these
// kernels take: x - max(x), and log-probabilities); results below FLT_MIN flush to 0.
#pragma once

#include <cstddef>

namespace nnkern::vmath {

// Per-ISA entry points (functions, not a table built by a function: building
// one would run the family's code at import on any CPU).
#define NNKERN_DECLARE_SOFTMAX(isa)                                                                           \
  void f32_max_expsum_##isa(std::size_t n, const float* x, float* m, double* s);                             \
  void f32_max_expsum_store_##isa(std::size_t n, const float* x, float* e, float* m, double* s);            \
  void f32_vscale_##isa(std::size_t n, float* y, float c);                                                   \
  void f32_vsub2_##isa(std::size_t n, const float* x, float* y, float a, float b);                           \
  void f32_softmax_bwd_##isa(std::size_t n, const float* g, const float* o, float* gi);                      \
  void f32_log_softmax_bwd_##isa(std::size_t n, const float* g, const float* o, float* gi);                  \
  void f32_max_expsum_cols_##isa(std::size_t dim, std::size_t stride, std::size_t w, const float* x, float* m, \
                                 double* s);                                                                  \
  void f32_max_expsum_store_cols_##isa(std::size_t dim, std::size_t stride, std::size_t w, const float* x,   \
                                       float* e, float* m, double* s);                                        \
  void f32_scale_cols_##isa(std::size_t dim, std::size_t stride, std::size_t w, float* y, const float* c);  \
  void f32_sub2_cols_##isa(std::size_t dim, std::size_t stride, std::size_t w, const float* x, float* y,     \
                           const float* a, const float* b);                                                  \
  void f32_softmax_bwd_cols_##isa(std::size_t dim, std::size_t stride, std::size_t w, const float* g,       \
                                  const float* o, float* gi);                                                 \
  void f32_log_softmax_bwd_cols_##isa(std::size_t dim, std::size_t stride, std::size_t w, const float* g,   \
                                      const float* o, float* gi);

NNKERN_DECLARE_SOFTMAX(scalar)
NNKERN_DECLARE_SOFTMAX(avx2)
NNKERN_DECLARE_SOFTMAX(avx512)
#undef NNKERN_DECLARE_SOFTMAX

}  // namespace nnkern::vmath
