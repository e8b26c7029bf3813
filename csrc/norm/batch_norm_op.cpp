#include "norm/batch_norm_op.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "core/workspace.h"
#include "norm/bn_kernels.h"

namespace nnkern::ops {
namespace {

using namespace nnkern::norm;

template <class T>
struct BnKernels {
  void (*stats)(std::size_t, const T*, double, double*);
  void (*affine)(std::size_t, const T*, const T*, T*, T, T, T, bool);
  void (*bwd_reduce)(std::size_t, const T*, const T*, double, double*);
  void (*bwd_input)(std::size_t, const T*, const T*, T*, T, T, T, T);
  void (*affine_stream)(std::size_t, const T*, const T*, T*, T, T, T, bool);
  void (*bwd_input_stream)(std::size_t, const T*, const T*, T*, T, T, T, T);
};

struct BnConfig {
  PerIsa<BnKernels<float>> f32;
  BnKernels<double> f64;
};

const BnConfig kBn = {
    {{f32_bn_stats_scalar, f32_bn_affine_scalar, f32_bn_bwd_reduce_scalar, f32_bn_bwd_input_scalar,
      f32_bn_affine_scalar, f32_bn_bwd_input_scalar},
     {NNKERN_X86_ONLY(f32_bn_stats_avx2), NNKERN_X86_ONLY(f32_bn_affine_avx2),
      NNKERN_X86_ONLY(f32_bn_bwd_reduce_avx2), NNKERN_X86_ONLY(f32_bn_bwd_input_avx2),
      NNKERN_X86_ONLY(f32_bn_affine_stream_avx2), NNKERN_X86_ONLY(f32_bn_bwd_input_stream_avx2)},
     {NNKERN_X86_ONLY(f32_bn_stats_avx512), NNKERN_X86_ONLY(f32_bn_affine_avx512),
      NNKERN_X86_ONLY(f32_bn_bwd_reduce_avx512), NNKERN_X86_ONLY(f32_bn_bwd_input_avx512),
      NNKERN_X86_ONLY(f32_bn_affine_stream_avx512), NNKERN_X86_ONLY(f32_bn_bwd_input_stream_avx512)}},
    {f64_bn_stats_scalar, f64_bn_affine_scalar, f64_bn_bwd_reduce_scalar, f64_bn_bwd_input_scalar,
     f64_bn_affine_scalar, f64_bn_bwd_input_scalar},
};

template <class T>
BnKernels<T> kernels();
template <>
BnKernels<float> kernels<float>() { return kBn.f32.active(); }
template <>
BnKernels<double> kernels<double>() { return kBn.f64; }

// 128 KiB of input per task: several times the cost of waking a pool thread,
// so small arrays run inline and larger ones split into tasks worth a thread.
constexpr std::size_t kTaskBytes = std::size_t{128} << 10;

// Outputs of at least this size are written with non-temporal stores: more
// than both cores' 2 MiB L2 would keep, so caching them only evicts the
// inputs, and streaming saves reading each destination line first.
constexpr std::size_t kStreamBytes = std::size_t{4} << 20;

// x (N, C, *) as N*C contiguous planes of hw elements; plane p is (p / C, p % C).
struct Planes {
  std::size_t n, c, hw;
  std::size_t count() const { return n * c; }
  std::size_t per_channel() const { return n * hw; }
};

Planes planes_of(const ArrayView& x) {
  Planes p{static_cast<std::size_t>(x.shape[0]), static_cast<std::size_t>(x.shape[1]), 1};
  for (std::size_t d = 2; d < x.shape.size(); ++d) p.hw *= static_cast<std::size_t>(x.shape[d]);
  return p;
}

// Runs, for every channel c: planes_a over its planes, finish(c), planes_b over
// its planes, with each task owning whole channels when that pays (the second
// pass over a channel then re-reads its planes from cache);
// otherwise runs planes_a(p) over all planes, finish(c) for every channel, and
// planes_b(p) over all planes. Both plans compute every plane with the same
// kernel calls and combine per-plane partial sums in plane order, so the
// results are the same bits for every thread count and plan.
template <class T, class PlanesA, class Finish, class PlanesB>
void run_planned(const Planes& pl, bool two_passes, const PlanesA& planes_a, const Finish& finish,
                 const PlanesB& planes_b) {
  const std::size_t total_bytes = pl.count() * pl.hw * sizeof(T);
  const std::size_t threads = static_cast<std::size_t>(get_num_threads());
  const std::size_t tasks = std::min<std::size_t>(pl.count(), std::max<std::size_t>(1, total_bytes / kTaskBytes));
  auto channel = [&](std::size_t c) {
    for (std::size_t n = 0; n < pl.n; ++n) planes_a(n * pl.c + c);
    finish(c);
    for (std::size_t n = 0; n < pl.n; ++n) planes_b(n * pl.c + c);
  };
  if (tasks <= 1) {
    for (std::size_t c = 0; c < pl.c; ++c) channel(c);
    return;
  }
  // Only a second pass over the data gains from owning channels, and only
  // when the channels split evenly enough: a multiple of the thread count, or
  // many. A single pass goes through memory in order instead.
  if (two_passes && pl.c >= threads && (pl.c % threads == 0 || pl.c >= 8 * threads)) {
    parallel_for(pl.c, [&](std::size_t c0, std::size_t c1) {
      for (std::size_t c = c0; c < c1; ++c) channel(c);
    });
    return;
  }
  auto over_planes = [&](const auto& fn) {
    parallel_for(tasks, [&](std::size_t t0, std::size_t t1) {
      const std::size_t p0 = chunk_range(pl.count(), tasks, t0).first;
      const std::size_t p1 = chunk_range(pl.count(), tasks, t1 - 1).second;
      for (std::size_t p = p0; p < p1; ++p) fn(p);
    });
  };
  over_planes(planes_a);
  for (std::size_t c = 0; c < pl.c; ++c) finish(c);
  over_planes(planes_b);
}

template <class T>
void batch_norm_typed(const ArrayView& xv, const ArrayView& rmv, const ArrayView& rvv, const ArrayView& wv,
                      const ArrayView& bv, bool training, double momentum, double eps, bool relu,
                      const ArrayView& resv, const ArrayView& outv, const ArrayView& meanv,
                      const ArrayView& invstdv) {
  const BnKernels<T> k = kernels<T>();
  const Planes pl = planes_of(xv);
  const std::size_t count = pl.per_channel();
  const T* x = xv.as<T>();
  T* out = outv.as<T>();
  T* mean = meanv.as<T>();
  T* invstd = invstdv.as<T>();
  T* rm = rmv.as<T>();
  T* rv = rvv.as<T>();
  const T* w = wv.as<T>();
  const T* b = bv.as<T>();
  const T* res = resv.as<T>();

  if (training && count == 0) {
    // an empty batch has no statistics: PyTorch leaves the running ones alone
    for (std::size_t c = 0; c < pl.c; ++c) {
      mean[c] = T(0);
      invstd[c] = static_cast<T>(1 / std::sqrt(eps));
    }
    return;
  }
  if (pl.c == 0) return;
  // Per plane: the partial sums of (x - shift) and (x - shift)^2 (training).
  // Per channel: the value subtracted before scaling, the scale and offset of
  // y = (x - shift) * scale + offset.
  ScratchBuffer buf = acquire_scratch(pl.count() * 2 * sizeof(double) + pl.c * 3 * sizeof(T));
  double* sums = buf.as<double>();
  T* shift = reinterpret_cast<T*>(sums + pl.count() * 2);
  T* scale = shift + pl.c;
  T* offset = scale + pl.c;

  const auto affine = pl.count() * pl.hw * sizeof(T) >= kStreamBytes ? k.affine_stream : k.affine;
  auto affine_plane = [&](std::size_t p) {
    const std::size_t c = p % pl.c;
    affine(pl.hw, x + p * pl.hw, res != nullptr ? res + p * pl.hw : nullptr, out + p * pl.hw, shift[c], scale[c],
           offset[c], relu);
  };
  if (!training) {
    for (std::size_t c = 0; c < pl.c; ++c) {
      const double is = 1 / std::sqrt(static_cast<double>(rv[c]) + eps);
      mean[c] = rm[c];
      invstd[c] = static_cast<T>(is);
      shift[c] = rm[c];
      scale[c] = static_cast<T>(w ? is * w[c] : is);
      offset[c] = b ? b[c] : T(0);
    }
    run_planned<T>(pl, false, [](std::size_t) {}, [](std::size_t) {}, affine_plane);
    return;
  }
  for (std::size_t c = 0; c < pl.c; ++c) shift[c] = x[c * pl.hw];
  auto stats_plane = [&](std::size_t p) {
    k.stats(pl.hw, x + p * pl.hw, static_cast<double>(shift[p % pl.c]), sums + 2 * p);
  };
  auto finish = [&](std::size_t c) {
    double s = 0, ss = 0;
    for (std::size_t n = 0; n < pl.n; ++n) {
      s += sums[2 * (n * pl.c + c)];
      ss += sums[2 * (n * pl.c + c) + 1];
    }
    const double cnt = static_cast<double>(count);
    const double ms = s / cnt;
    const double var = std::max(ss / cnt - ms * ms, 0.0);
    const double m = static_cast<double>(shift[c]) + ms;
    const double is = 1 / std::sqrt(var + eps);
    const double sc = w ? is * w[c] : is;
    mean[c] = static_cast<T>(m);
    invstd[c] = static_cast<T>(is);
    scale[c] = static_cast<T>(sc);
    offset[c] = static_cast<T>((b ? static_cast<double>(b[c]) : 0.0) - ms * sc);
    if (!std::isfinite(static_cast<T>(sc))) {
      // an infinite weight: (x - shift) * inf - ms * inf would be inf - inf; (x - mean) * inf + b
      // is what IEEE arithmetic gives for the reference's (x - mean) * (invstd * weight) + bias
      shift[c] = static_cast<T>(m);
      offset[c] = b ? b[c] : T(0);
    }
    if (rm != nullptr) {
      const double unbiased = count > 1 ? var * (cnt / (cnt - 1)) : var;
      rm[c] = static_cast<T>(rm[c] * (1 - momentum) + momentum * m);
      rv[c] = static_cast<T>(rv[c] * (1 - momentum) + momentum * unbiased);
    }
  };
  run_planned<T>(pl, true, stats_plane, finish, affine_plane);
}

template <class T>
void batch_norm_backward_typed(const ArrayView& gv, const ArrayView& xv, const ArrayView& wv, const ArrayView& meanv,
                               const ArrayView& invstdv, bool training, const ArrayView& giv, const ArrayView& gwv,
                               const ArrayView& gbv) {
  const BnKernels<T> k = kernels<T>();
  const Planes pl = planes_of(xv);
  const std::size_t count = pl.per_channel();
  const T* g = gv.as<T>();
  const T* x = xv.as<T>();
  const T* w = wv.as<T>();
  const T* mean = meanv.as<T>();
  const T* invstd = invstdv.as<T>();
  T* gi = giv.as<T>();
  T* gw = gwv.as<T>();
  T* gb = gbv.as<T>();
  const bool reduce = gw != nullptr || gb != nullptr || (gi != nullptr && training);
  if (pl.c == 0) return;

  ScratchBuffer buf = acquire_scratch(pl.count() * 2 * sizeof(double) + pl.c * 3 * sizeof(T));
  double* sums = buf.as<double>();  // per plane: sum(g), sum(g * (x - mean))
  T* ca = reinterpret_cast<T*>(sums + pl.count() * 2);
  T* cb = ca + pl.c;
  T* cc = cb + pl.c;

  auto reduce_plane = [&](std::size_t p) {
    if (reduce) k.bwd_reduce(pl.hw, g + p * pl.hw, x + p * pl.hw, static_cast<double>(mean[p % pl.c]), sums + 2 * p);
  };
  auto finish = [&](std::size_t c) {
    double s = 0, sx = 0;
    if (reduce) {
      for (std::size_t n = 0; n < pl.n; ++n) {
        s += sums[2 * (n * pl.c + c)];
        sx += sums[2 * (n * pl.c + c) + 1];
      }
    }
    const double is = static_cast<double>(invstd[c]);
    const double gwc = sx * is;  // sum(g * xhat)
    if (gb != nullptr) gb[c] = static_cast<T>(s);
    if (gw != nullptr) gw[c] = static_cast<T>(gwc);
    const double sc = w ? is * w[c] : is;
    ca[c] = static_cast<T>(sc);
    if (training && count > 0 && !std::isfinite(ca[c])) {
      // an infinite weight: the coefficients without the scale (input_plane multiplies by it
      // last), as the reference's (g - mean(g) - xhat * mean(g * xhat)) * scale; folding an
      // infinite scale into each term would give inf - inf
      const double cnt = static_cast<double>(count);
      cb[c] = static_cast<T>(-is * gwc / cnt);
      cc[c] = static_cast<T>(-s / cnt);
    } else if (training && count > 0) {
      const double cnt = static_cast<double>(count);
      cb[c] = static_cast<T>(-sc * is * gwc / cnt);
      cc[c] = static_cast<T>(-sc * s / cnt);
    } else {
      cb[c] = T(0);
      cc[c] = T(0);
    }
  };
  const auto bwd_input = pl.count() * pl.hw * sizeof(T) >= kStreamBytes ? k.bwd_input_stream : k.bwd_input;
  auto input_plane = [&](std::size_t p) {
    if (gi == nullptr) return;
    const std::size_t c = p % pl.c;
    if (!training) {
      // constant statistics: grad_input = g * scale does not read x, so a NaN or Inf in x (which
      // the general kernel would multiply by a zero coefficient) cannot reach it
      const T a = ca[c];
      const T* gp = g + p * pl.hw;
      T* gip = gi + p * pl.hw;
      for (std::size_t j = 0; j < pl.hw; ++j) gip[j] = gp[j] * a;
      return;
    }
    if (!std::isfinite(ca[c])) {  // unscaled coefficients (see finish)
      T* gip = gi + p * pl.hw;
      bwd_input(pl.hw, g + p * pl.hw, x + p * pl.hw, gip, mean[c], T(1), cb[c], cc[c]);
      for (std::size_t j = 0; j < pl.hw; ++j) gip[j] *= ca[c];
      return;
    }
    bwd_input(pl.hw, g + p * pl.hw, x + p * pl.hw, gi + p * pl.hw, mean[c], ca[c], cb[c], cc[c]);
  };
  run_planned<T>(pl, reduce && gi != nullptr, reduce_plane, finish, input_plane);
}

}  // namespace

void batch_norm(const ArrayView& x, const ArrayView& running_mean, const ArrayView& running_var,
                const ArrayView& weight, const ArrayView& bias, bool training, double momentum, double eps,
                bool relu, const ArrayView& residual, const ArrayView& out, const ArrayView& mean,
                const ArrayView& invstd) {
  if (x.dtype == Dtype::f32) {
    batch_norm_typed<float>(x, running_mean, running_var, weight, bias, training, momentum, eps, relu, residual, out,
                            mean, invstd);
  } else {
    batch_norm_typed<double>(x, running_mean, running_var, weight, bias, training, momentum, eps, relu, residual,
                             out, mean, invstd);
  }
}

void batch_norm_backward(const ArrayView& grad_output, const ArrayView& x, const ArrayView& weight,
                         const ArrayView& mean, const ArrayView& invstd, bool training,
                         const ArrayView& grad_input, const ArrayView& grad_weight, const ArrayView& grad_bias) {
  if (x.dtype == Dtype::f32) {
    batch_norm_backward_typed<float>(grad_output, x, weight, mean, invstd, training, grad_input, grad_weight,
                                     grad_bias);
  } else {
    batch_norm_backward_typed<double>(grad_output, x, weight, mean, invstd, training, grad_input, grad_weight,
                                      grad_bias);
  }
}

}  // namespace nnkern::ops
