#include "vmath/pointwise_op.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "vmath/dropout_mask.h"
#include "vmath/vactivation.h"

namespace nnkern::ops {
namespace {

using namespace nnkern::vmath;

struct VactivationConfig {
  PerIsa<F32VunaryFn> sigmoid;
  PerIsa<F32VunaryFn> tanh;
  PerIsa<F32VunaryBackwardFn> sigmoid_backward;
  PerIsa<F32VunaryBackwardFn> tanh_backward;
  PerIsa<DropoutMaskFn> dropout_mask;
};

const VactivationConfig kConfig = {
    {f32_vsigmoid_scalar, NNKERN_X86_ONLY(f32_vsigmoid_avx2), NNKERN_X86_ONLY(f32_vsigmoid_avx512)},
    {f32_vtanh_scalar, NNKERN_X86_ONLY(f32_vtanh_avx2), NNKERN_X86_ONLY(f32_vtanh_avx512)},
    {f32_vsigmoid_backward_scalar, NNKERN_X86_ONLY(f32_vsigmoid_backward_avx2),
     NNKERN_X86_ONLY(f32_vsigmoid_backward_avx512)},
    {f32_vtanh_backward_scalar, NNKERN_X86_ONLY(f32_vtanh_backward_avx2), NNKERN_X86_ONLY(f32_vtanh_backward_avx512)},
    {dropout_mask_scalar, NNKERN_X86_ONLY(dropout_mask_scalar), NNKERN_X86_ONLY(dropout_mask_avx512)},
};

// 64 KiB of float32 output per task: sigmoid/tanh cost ~1 ns per element per
// core, so a task is ~16 us, well above the ~2-5 us of waking a pool thread.
constexpr std::size_t kTaskElements = std::size_t{16} << 10;

// Calls kernel(offset, count) over [0, n) in tasks of kTaskElements. Task
// boundaries depend on n only, so each element's result does too.
template <class Kernel>
void split_elementwise(std::size_t n, const Kernel& kernel) {
  parallel_for((n + kTaskElements - 1) / kTaskElements, [&](std::size_t first, std::size_t last) {
    for (std::size_t t = first; t < last; ++t) {
      const std::size_t begin = t * kTaskElements;
      kernel(begin, std::min(begin + kTaskElements, n) - begin);
    }
  });
}

// float64 is the exact-but-simple path: libm per element.
void f64_sigmoid(std::size_t n, const double* x, double* y) {
  for (std::size_t i = 0; i < n; ++i) {
    const double e = std::exp(-std::fabs(x[i]));
    y[i] = x[i] >= 0 ? 1 / (1 + e) : e / (1 + e);
  }
}
void f64_tanh(std::size_t n, const double* x, double* y) {
  for (std::size_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}
void f64_sigmoid_backward(std::size_t n, const double* g, const double* o, double* gi) {
  for (std::size_t i = 0; i < n; ++i) gi[i] = g[i] * o[i] * (1 - o[i]);
}
void f64_tanh_backward(std::size_t n, const double* g, const double* o, double* gi) {
  // (1 - y)(1 + y), not 1 - y*y: near |y| = 1 the rounding of y*y would swamp the small result
  for (std::size_t i = 0; i < n; ++i) gi[i] = g[i] * ((1 - o[i]) * (1 + o[i]));
}

void unary(F32VunaryFn f32, void (*f64)(std::size_t, const double*, double*), const ArrayView& x,
           const ArrayView& y) {
  if (x.dtype == Dtype::f32) {
    split_elementwise(x.size(), [&](std::size_t i, std::size_t n) { f32(n, x.as<float>() + i, y.as<float>() + i); });
  } else {
    split_elementwise(x.size(), [&](std::size_t i, std::size_t n) { f64(n, x.as<double>() + i, y.as<double>() + i); });
  }
}

void binary(F32VunaryBackwardFn f32, void (*f64)(std::size_t, const double*, const double*, double*),
            const ArrayView& a, const ArrayView& b, const ArrayView& y) {
  if (a.dtype == Dtype::f32) {
    split_elementwise(a.size(), [&](std::size_t i, std::size_t n) {
      f32(n, a.as<float>() + i, b.as<float>() + i, y.as<float>() + i);
    });
  } else {
    split_elementwise(a.size(), [&](std::size_t i, std::size_t n) {
      f64(n, a.as<double>() + i, b.as<double>() + i, y.as<double>() + i);
    });
  }
}

// counter_rng.key: splitmix64's finalizer of seed + phi.
std::uint64_t dropout_key(std::uint64_t seed) {
  std::uint64_t z = seed + kSplitmixPhi;
  z = (z ^ (z >> 30)) * kSplitmixM1;
  z = (z ^ (z >> 27)) * kSplitmixM2;
  return z ^ (z >> 31);
}

// The mask of a task is drawn into `keep` first, then applied while it is
// still in L1 (16 KiB of bytes per task). A dropped element is x * 0, as in
// PyTorch (x * mask / (1 - p)): NaN and +-Inf give NaN, a negative x gives -0.
template <class T>
void dropout_typed(const ArrayView& x, double p, std::uint64_t seed, const ArrayView& y, bool* keep) {
  const DropoutMaskFn mask = kConfig.dropout_mask.active();
  const std::uint64_t key = dropout_key(seed);
  const auto threshold = static_cast<std::uint32_t>(p * (1 << 24));  // counter_rng.threshold: int() truncates
  const T scale = static_cast<T>(1.0 / (1.0 - p));                   // in x's dtype, as the reference
  const T* in = x.as<T>();
  T* out = y.as<T>();
  split_elementwise(x.size(), [&](std::size_t i, std::size_t n) {
    mask(n, i, key, threshold, keep + i);
    for (std::size_t j = i; j < i + n; ++j) out[j] = keep[j] ? in[j] * scale : in[j] * T(0);
  });
}

template <class T>
void dropout_backward_typed(const ArrayView& grad, const bool* keep, double p, const ArrayView& grad_in) {
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  const T* g = grad.as<T>();
  T* gi = grad_in.as<T>();
  split_elementwise(grad.size(), [&](std::size_t i, std::size_t n) {
    for (std::size_t j = i; j < i + n; ++j) gi[j] = keep[j] ? g[j] * scale : g[j] * T(0);
  });
}

}  // namespace

void sigmoid(const ArrayView& x, const ArrayView& y) { unary(kConfig.sigmoid.active(), f64_sigmoid, x, y); }
void tanh(const ArrayView& x, const ArrayView& y) { unary(kConfig.tanh.active(), f64_tanh, x, y); }

void sigmoid_backward(const ArrayView& grad_output, const ArrayView& output, const ArrayView& grad_input) {
  binary(kConfig.sigmoid_backward.active(), f64_sigmoid_backward, grad_output, output, grad_input);
}
void tanh_backward(const ArrayView& grad_output, const ArrayView& output, const ArrayView& grad_input) {
  binary(kConfig.tanh_backward.active(), f64_tanh_backward, grad_output, output, grad_input);
}

void dropout(const ArrayView& x, double p, std::uint64_t seed, const ArrayView& y, bool* keep) {
  if (x.dtype == Dtype::f32) {
    dropout_typed<float>(x, p, seed, y, keep);
  } else {
    dropout_typed<double>(x, p, seed, y, keep);
  }
}

void dropout_backward(const ArrayView& grad_output, const bool* keep, double p, const ArrayView& grad_input) {
  if (grad_output.dtype == Dtype::f32) {
    dropout_backward_typed<float>(grad_output, keep, p, grad_input);
  } else {
    dropout_backward_typed<double>(grad_output, keep, p, grad_input);
  }
}

}  // namespace nnkern::ops
