#include "gemm/linear_op.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "gemm/gemm.h"

namespace nnkern::ops {
namespace {

using gemm::GemmArgs;
using gemm::row_major;

std::size_t dim(const ArrayView& v, std::size_t d) { return static_cast<std::size_t>(v.shape[d]); }

// A few rows against a long weight: dot products on W's rows in groups of
// rows (gemm_by_rows: W read once per call, nothing packed) instead of the
// cached packed W^T, whose check alone reads W and its copy on every call.
// Measured (bench/NOTES.md, session 12; 1024 x 256 weight, 1 thread): 16 rows
// 121 vs 195 us, 32 rows 218 vs 249; 4 MiB weights still gain at 32 rows;
// weights of 128-256 KB gain up to 8 rows and lose a little at 16; short rows
// (k = 64) lose from 8 rows on (the 16-lane sums' reduction per element
// dominates).
bool by_rows(std::size_t m, std::size_t n, std::size_t k, std::size_t elem) {
  if (k < 128) return false;
  const std::size_t bytes = n * k * elem;
  return m <= 8 || (m <= 16 && bytes >= (std::size_t{512} << 10)) || (m <= 32 && bytes >= (std::size_t{1} << 20));
}

template <class T>
void linear_typed(const ArrayView& x, const ArrayView& w, const ArrayView* bias, const ArrayView& out) {
  GemmArgs<T> g;
  g.m = dim(x, 0);
  g.k = dim(x, 1);
  g.n = dim(w, 0);
  g.a = row_major(x.as<const T>(), g.k);
  g.b = row_major(w.as<const T>(), g.k, /*trans=*/true);
  g.c = out.as<T>();
  g.ldc = g.n;
  g.bias = bias != nullptr ? bias->as<const T>() : nullptr;
  if (g.m <= gemm::dot_rows(T()) || g.m == 0 || g.n == 0) {
    gemm::gemm(g);  // small batches: dot products on W's rows, nothing packed
    return;
  }
  if (by_rows(g.m, g.n, g.k, sizeof(T)) && gemm::gemm_by_rows(g)) return;
  // W^T packed once, kept in the weight cache
  gemm::gemm(g, *gemm::cached_prepared_b(g.b, g.n * g.k * sizeof(T), g.k, g.n, 1, 0x4c494e31ull));
}

template <class T>
void linear_backward_typed(const ArrayView& grad, const ArrayView& x, const ArrayView& w, const ArrayView* gx,
                           const ArrayView* gw, const ArrayView* gb) {
  const std::size_t m = dim(x, 0), k = dim(x, 1), n = dim(w, 0);
  const T* g = grad.as<const T>();
  if (gx != nullptr) {  // (M, N) x (N, K)
    GemmArgs<T> a;
    a.m = m;
    a.n = k;
    a.k = n;
    a.a = row_major(g, n);
    a.b = row_major(w.as<const T>(), k);
    a.c = gx->as<T>();
    a.ldc = k;
    gemm::gemm(a);
  }
  if (gw != nullptr) {  // (N, M) x (M, K); M == 0 writes zeros
    GemmArgs<T> a;
    a.m = n;
    a.n = k;
    a.k = m;
    a.a = row_major(g, n, /*trans=*/true);
    a.b = row_major(x.as<const T>(), k);
    a.c = gw->as<T>();
    a.ldc = k;
    gemm::gemm(a);
  }
  if (gb != nullptr) gemm::column_sums(m, n, g, gb->as<T>());
}

}  // namespace

void linear(const ArrayView& x, const ArrayView& weight, const ArrayView* bias, const ArrayView& out) {
  if (x.dtype == Dtype::f32) {
    linear_typed<float>(x, weight, bias, out);
  } else {
    linear_typed<double>(x, weight, bias, out);
  }
}

void linear_backward(const ArrayView& grad_output, const ArrayView& x, const ArrayView& weight,
                     const ArrayView* grad_input, const ArrayView* grad_weight, const ArrayView* grad_bias) {
  if (x.dtype == Dtype::f32) {
    linear_backward_typed<float>(grad_output, x, weight, grad_input, grad_weight, grad_bias);
  } else {
    linear_backward_typed<double>(grad_output, x, weight, grad_input, grad_weight, grad_bias);
  }
}

}  // namespace nnkern::ops
