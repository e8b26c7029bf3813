// The recurrent cells' elementwise passes (rnn_pointwise_impl.h) compiled for the avx512 family,
// plus an in-place float32 sigmoid.
#include "rnn/rnn_pointwise_impl.h"
#include "vmath/vec_avx512.h"

namespace nnkern::rnn {
namespace {

// vmath's sigmoid (activation_impl.h: e = exp(-|x|), d = 1 + e, then e / d below 0 and 1 / d
// above) with the numerator selected before the division: the same quotient in every lane, so
// the same bits, for one vdivps per vector instead of two (the divisions were ~75% of the
// kernel's samples in perf; sigmoid is ~5% of the L1 forward, ~8% of L2's native time).
void f32_sigmoid_inplace(std::size_t n, float* x) {
  using A = vmath::Avx512;
  const auto f = [](A::V v) {
    const A::V e = A::exp(A::or_sign(v, A::set1(-0.0f)));  // -|x|; NaN stays NaN
    const A::V d = A::add(A::set1(1.0f), e);
    return A::div(A::select_gt(A::set1(0.0f), v, e, A::set1(1.0f)), d);
  };
  for (; n >= A::W; n -= A::W, x += A::W) A::store(x, f(A::load(x)));
  if (n != 0) A::store_part(x, f(A::load_part(x, n, 0.0f)), n);
}

}  // namespace

PointwiseFns<float> f32_rnn_pointwise_avx512() {
  PointwiseFns<float> fns = PointwiseImpl<float>::table();
  fns.sigmoid = f32_sigmoid_inplace;
  return fns;
}
PointwiseFns<double> f64_rnn_pointwise_avx512() { return PointwiseImpl<double>::table(); }

}  // namespace nnkern::rnn
