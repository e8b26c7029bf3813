// Helpers shared by the kernels: grid-stride loops and block reductions.
#pragma once

#include <cstdint>

#include "cuda/launch.h"

namespace nnk {

// Items i of a grid-stride loop over [0, n): this thread's first and the step.
NNK_DEVICE std::int64_t global_thread() {
  return std::int64_t(block_x()) * block_dim_x() + thread_x();
}
NNK_DEVICE std::int64_t grid_threads() {
  return std::int64_t(grid_dim_x()) * block_dim_x();
}

// The output positions o of a window (kernel k, stride s, low padding p,
// dilation d) whose tap i lands on input position pos (o * s - p + i * d == pos),
// visited in increasing o through f(o, i): what a gathering backward sums over.
template <class F>
NNK_DEVICE void windows_holding(std::int64_t pos, std::int64_t out, int k, int s, int p, int d, F&& f) {
  for (int i = k - 1; i >= 0; --i) {
    const std::int64_t t = pos + p - std::int64_t(i) * d;
    if (t < 0 || t % s != 0) continue;
    const std::int64_t o = t / s;
    if (o < out) f(o, i);
  }
}

struct SumOp {
  template <class A>
  NNK_DEVICE A operator()(A a, A b) const {
    return a + b;
  }
};

// max that keeps NaN (as np.max does)
struct MaxOp {
  template <class A>
  NNK_DEVICE A operator()(A a, A b) const {
    return (a > b || isnan_(a)) ? a : b;
  }
};

// Tree reduction over the x threads of a block (block_dim_x a power of two,
// buf one slot per thread): a fixed pairing, so the same bits on every run.
// Every thread of the block must call it; all get the result.
template <class A, class Op>
NNK_DEVICE A block_reduce(A v, A* buf, Op op) {
  const unsigned t = thread_x();
  buf[t] = v;
  sync();
  for (unsigned s = block_dim_x() / 2; s > 0; s >>= 1) {
    if (t < s) buf[t] = op(buf[t], buf[t + s]);
    sync();
  }
  const A r = buf[0];
  sync();  // buf is free for the caller's next reduction
  return r;
}

}  // namespace nnk
