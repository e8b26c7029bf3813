#include "vmath/relu_op.h"

#include <algorithm>
#include <cstddef>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "vmath/vrelu.h"

namespace nnkern::ops {
namespace {

using namespace nnkern::vmath;

struct VreluConfig {
  PerIsa<F32VreluFn> f32;
  PerIsa<F64VreluFn> f64;
  PerIsa<F32VreluBackwardFn> f32_backward;
  PerIsa<F64VreluBackwardFn> f64_backward;
};

const VreluConfig kVrelu = {
    {f32_vrelu_scalar, NNKERN_X86_ONLY(f32_vrelu_avx2), NNKERN_X86_ONLY(f32_vrelu_avx512)},
    {f64_vrelu_scalar, NNKERN_X86_ONLY(f64_vrelu_avx2), NNKERN_X86_ONLY(f64_vrelu_avx512)},
    {f32_vrelu_backward_scalar, NNKERN_X86_ONLY(f32_vrelu_backward_avx2), NNKERN_X86_ONLY(f32_vrelu_backward_avx512)},
    {f64_vrelu_backward_scalar, NNKERN_X86_ONLY(f64_vrelu_backward_avx2), NNKERN_X86_ONLY(f64_vrelu_backward_avx512)},
};

// 128 KiB of output per task: at ~10 GB/s per core that is ~13 us of work,
// several times the ~2-5 us it costs to wake a pool thread, so arrays below
// it run inline and larger ones split into tasks that are all worth a thread.
constexpr std::size_t kTaskBytes = std::size_t{128} << 10;

// Calls kernel(offset, count) over [0, n) in tasks of kTaskBytes.
template <class T, class Kernel>
void split_elementwise(std::size_t n, const Kernel& kernel) {
  constexpr std::size_t per_task = kTaskBytes / sizeof(T);
  parallel_for((n + per_task - 1) / per_task, [&](std::size_t first, std::size_t last) {
    const std::size_t begin = first * per_task;
    kernel(begin, std::min(last * per_task, n) - begin);
  });
}

template <class T, class Fn>
void relu_typed(Fn kernel, const ArrayView& x, const ArrayView& y) {
  const T* in = x.as<T>();
  T* out = y.as<T>();
  split_elementwise<T>(x.size(), [&](std::size_t i, std::size_t n) { kernel(n, in + i, out + i); });
}

template <class T, class Fn>
void relu_backward_typed(Fn kernel, const ArrayView& grad, const ArrayView& out, const ArrayView& grad_in) {
  const T* g = grad.as<T>();
  const T* o = out.as<T>();
  T* gi = grad_in.as<T>();
  split_elementwise<T>(grad.size(), [&](std::size_t i, std::size_t n) { kernel(n, g + i, o + i, gi + i); });
}

}  // namespace

void relu(const ArrayView& x, const ArrayView& y) {
  if (x.dtype == Dtype::f32) {
    relu_typed<float>(kVrelu.f32.active(), x, y);
  } else {
    relu_typed<double>(kVrelu.f64.active(), x, y);
  }
}

void relu_backward(const ArrayView& grad_output, const ArrayView& output, const ArrayView& grad_input) {
  if (grad_output.dtype == Dtype::f32) {
    relu_backward_typed<float>(kVrelu.f32_backward.active(), grad_output, output, grad_input);
  } else {
    relu_backward_typed<double>(kVrelu.f64_backward.active(), grad_output, output, grad_input);
  }
}

}  // namespace nnkern::ops
