// The float32 softmax kernels of every family, written once over a vector
// type: each f32_softmax_<isa>.cpp supplies `A` (lanes W, loads, stores,
// arithmetic, the exp of non-positive arguments) and exports the kernels of
// vsoftmax.h from SoftmaxKernels<A>. A template header: no code of its own,
// helpers in an anonymous namespace (see CMakeLists.txt), no libm (the
// operator takes the logarithms and reciprocals between the passes).
//
// Sums: float vector partial sums over at most kFlush vectors per lane, then
// added into W double lanes, then the lanes in a fixed order: a row's result
// depends only on its values and length, not on which thread runs it, and a
// float32 sum of thousands of terms keeps ~1e-7 relative accuracy.
//
// NaN and Inf as torch: the max drops NaN lanes (vector max returns its second
// operand when either is NaN) but a NaN element makes exp(x - m) NaN and so the
// sum and the whole row; a row with +Inf gives Inf - Inf = NaN likewise; a row
// of -Inf has m = -Inf and -Inf - m = NaN. Lanes past a row's end are loaded
// as -Inf: exp(-Inf - m) = 0 for a finite m, and for an infinite m the row is
// NaN anyway.
#pragma once

#include <cstddef>

namespace nnkern::vmath {
namespace {

template <class A>
struct SoftmaxKernels {
  using V = typename A::V;
  static constexpr std::size_t W = A::W;
  static constexpr std::size_t kFlush = 8;

  static float neg_inf() { return -__builtin_inff(); }

  static V load(const float* p, std::size_t n, float fill) { return n == W ? A::load(p) : A::load_part(p, n, fill); }
  static void store(float* p, V v, std::size_t n) { n == W ? A::store(p, v) : A::store_part(p, v, n); }

  static void widen(V v, double* acc) {
    alignas(64) float t[W];
    A::store(t, v);
    for (std::size_t l = 0; l < W; ++l) acc[l] += t[l];
  }
  static double total(const double* acc) {
    double s = 0;
    for (std::size_t l = 0; l < W; ++l) s += acc[l];
    return s;
  }
  static float hmax(V v) {
    alignas(64) float t[W];
    A::store(t, v);
    float m = t[0];
    for (std::size_t l = 1; l < W; ++l) m = t[l] > m ? t[l] : m;
    return m;
  }

  // Sums f(i, lanes) over [0, n) in vectors; `lanes` is W but for the tail.
  template <class F>
  static double sum(std::size_t n, const F& f) {
    double acc[W] = {};
    V s = A::set1(0.0f);
    std::size_t k = 0;
    for (std::size_t i = 0; i < n; i += W) {
      s = A::add(s, f(i, n - i < W ? n - i : W));
      if (++k == kFlush) {
        widen(s, acc);
        s = A::set1(0.0f);
        k = 0;
      }
    }
    widen(s, acc);
    return total(acc);
  }

  static float row_max(std::size_t n, const float* x) {
    V vm = A::set1(neg_inf());
    for (std::size_t i = 0; i < n; i += W) vm = A::max(load(x + i, n - i < W ? n - i : W, neg_inf()), vm);
    return hmax(vm);
  }

  // Row of n: *m = max(x), *s = sum(exp(x - m)); e = exp(x - m) when e != nullptr.
  template <bool kStore>
  static void max_expsum(std::size_t n, const float* x, float* e, float* m, double* s) {
    const float mx = row_max(n, x);
    const V vm = A::set1(mx);
    *m = mx;
    *s = sum(n, [&](std::size_t i, std::size_t k) {
      const V v = A::exp(A::sub(load(x + i, k, neg_inf()), vm));
      if (kStore) store(e + i, v, k);
      return v;
    });
  }

  static void scale(std::size_t n, float* y, float c) {
    const V vc = A::set1(c);
    for (std::size_t i = 0; i < n; i += W) {
      const std::size_t k = n - i < W ? n - i : W;
      store(y + i, A::mul(load(y + i, k, 0.0f), vc), k);
    }
  }

  // y = (x - a) - b: x - a is exact near the max, so a large max cancels before b is subtracted.
  static void sub2(std::size_t n, const float* x, float* y, float a, float b) {
    const V va = A::set1(a), vb = A::set1(b);
    for (std::size_t i = 0; i < n; i += W) {
      const std::size_t k = n - i < W ? n - i : W;
      store(y + i, A::sub(A::sub(load(x + i, k, 0.0f), va), vb), k);
    }
  }

  // softmax backward of one row: out * ((g - top) - sum(out * (g - top))), top = g at the first
  // largest out (see softmax_op.cpp for why).
  static void softmax_bwd(std::size_t n, const float* g, const float* o, float* gi) {
    const std::size_t at = A::first_eq(n, o, row_max(n, o));
    const V top = A::set1(at < n ? g[at] : 0.0f);
    const V acc = A::set1(static_cast<float>(sum(n, [&](std::size_t i, std::size_t k) {
      return A::mul(A::sub(load(g + i, k, 0.0f), top), load(o + i, k, 0.0f));
    })));
    for (std::size_t i = 0; i < n; i += W) {
      const std::size_t k = n - i < W ? n - i : W;
      store(gi + i, A::mul(load(o + i, k, 0.0f), A::sub(A::sub(load(g + i, k, 0.0f), top), acc)), k);
    }
  }

  // log_softmax backward of one row: g - exp(out) * sum(g).
  static void log_softmax_bwd(std::size_t n, const float* g, const float* o, float* gi) {
    const V s = A::set1(static_cast<float>(sum(n, [&](std::size_t i, std::size_t k) { return load(g + i, k, 0.0f); })));
    for (std::size_t i = 0; i < n; i += W) {
      const std::size_t k = n - i < W ? n - i : W;
      store(gi + i, A::fnmadd(A::exp(load(o + i, k, 0.0f)), s, load(g + i, k, 0.0f)), k);
    }
  }

  // ---- a slab of `dim` rows of w columns, row stride `stride`: the same steps per column, W
  // columns side by side (vectorized across the inner dimension, no gathers).

  // Calls f(j, lanes) for each column vector of [0, w).
  template <class F>
  static void columns(std::size_t w, const F& f) {
    for (std::size_t j = 0; j < w; j += W) f(j, w - j < W ? w - j : W);
  }

  template <class F>
  static V col_sum(std::size_t dim, const F& f) {
    // per lane: float over kFlush rows, then double; back to float once at the end
    double acc[W] = {};
    V s = A::set1(0.0f);
    std::size_t k = 0;
    for (std::size_t d = 0; d < dim; ++d) {
      s = A::add(s, f(d));
      if (++k == kFlush) {
        widen(s, acc);
        s = A::set1(0.0f);
        k = 0;
      }
    }
    widen(s, acc);
    alignas(64) float t[W];
    for (std::size_t l = 0; l < W; ++l) t[l] = static_cast<float>(acc[l]);
    return A::load(t);
  }

  template <bool kStore>
  static void max_expsum_cols(std::size_t dim, std::size_t stride, std::size_t w, const float* x, float* e,
                              float* m, double* s) {
    columns(w, [&](std::size_t j, std::size_t k) {
      V vm = A::set1(neg_inf());
      for (std::size_t d = 0; d < dim; ++d) vm = A::max(load(x + d * stride + j, k, neg_inf()), vm);
      store(m + j, vm, k);
      double acc[W] = {};
      V vs = A::set1(0.0f);
      std::size_t c = 0;
      for (std::size_t d = 0; d < dim; ++d) {
        const V v = A::exp(A::sub(load(x + d * stride + j, k, neg_inf()), vm));
        if (kStore) store(e + d * stride + j, v, k);
        vs = A::add(vs, v);
        if (++c == kFlush) {
          widen(vs, acc);
          vs = A::set1(0.0f);
          c = 0;
        }
      }
      widen(vs, acc);
      for (std::size_t l = 0; l < k; ++l) s[j + l] = acc[l];
    });
  }

  static void scale_cols(std::size_t dim, std::size_t stride, std::size_t w, float* y, const float* c) {
    columns(w, [&](std::size_t j, std::size_t k) {
      const V vc = load(c + j, k, 0.0f);
      for (std::size_t d = 0; d < dim; ++d) {
        float* p = y + d * stride + j;
        store(p, A::mul(load(p, k, 0.0f), vc), k);
      }
    });
  }

  static void sub2_cols(std::size_t dim, std::size_t stride, std::size_t w, const float* x, float* y, const float* a,
                        const float* b) {
    columns(w, [&](std::size_t j, std::size_t k) {
      const V va = load(a + j, k, 0.0f), vb = load(b + j, k, 0.0f);
      for (std::size_t d = 0; d < dim; ++d) {
        store(y + d * stride + j, A::sub(A::sub(load(x + d * stride + j, k, 0.0f), va), vb), k);
      }
    });
  }

  static void softmax_bwd_cols(std::size_t dim, std::size_t stride, std::size_t w, const float* g, const float* o,
                               float* gi) {
    columns(w, [&](std::size_t j, std::size_t k) {
      // the first largest out of each column (strictly greater replaces) and its g
      V best = load(o + j, k, 0.0f), top = load(g + j, k, 0.0f);
      for (std::size_t d = 1; d < dim; ++d) {
        const V ov = load(o + d * stride + j, k, 0.0f);
        top = A::select_gt(ov, best, load(g + d * stride + j, k, 0.0f), top);
        best = A::select_gt(ov, best, ov, best);
      }
      const V acc = col_sum(dim, [&](std::size_t d) {
        return A::mul(A::sub(load(g + d * stride + j, k, 0.0f), top), load(o + d * stride + j, k, 0.0f));
      });
      for (std::size_t d = 0; d < dim; ++d) {
        const std::size_t at = d * stride + j;
        store(gi + at, A::mul(load(o + at, k, 0.0f), A::sub(A::sub(load(g + at, k, 0.0f), top), acc)), k);
      }
    });
  }

  static void log_softmax_bwd_cols(std::size_t dim, std::size_t stride, std::size_t w, const float* g,
                                   const float* o, float* gi) {
    columns(w, [&](std::size_t j, std::size_t k) {
      const V s = col_sum(dim, [&](std::size_t d) { return load(g + d * stride + j, k, 0.0f); });
      for (std::size_t d = 0; d < dim; ++d) {
        const std::size_t at = d * stride + j;
        store(gi + at, A::fnmadd(A::exp(load(o + at, k, 0.0f)), s, load(g + at, k, 0.0f)), k);
      }
    });
  }
};

}  // namespace
}  // namespace nnkern::vmath
