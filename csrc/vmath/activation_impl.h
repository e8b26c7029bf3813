// sigmoid / tanh and their backward rules for the vector families, written
// once over a vector type `A` (vec_avx512.h, vec_avx2.h): each
// f32_vactivation_<isa>.cpp instantiates them with NNKERN_DEFINE_VACTIVATION.
// A template header: no code of its own, helpers in an anonymous namespace
// (see CMakeLists.txt). Tails go through the vector's partial loads and stores
// (padded with 0, a finite input for every rule), so every element takes the
// same path. Measured max error vs float64 (exhaustive test): see
// vactivation.h and the test's ULP_BOUND.
#pragma once

#include <cstddef>

#include "vmath/vactivation.h"

namespace nnkern::vmath {
namespace {

// tanh(x) = x + x^3 * P(x^2) for |x| < 0.625 (a degree-5 least-squares fit,
// 0.02 ulp): keeps full relative accuracy near 0. Above, 1 - 2 / (exp(2|x|) + 1)
// with the sign of x: there 2/(e+1) <= 0.45 < tanh, so the subtraction loses
// under 1 ulp. |x| clamps at 10, where tanh rounds to 1.
constexpr float kP0 = -0.3333333134651184f, kP1 = 0.1333322674036026f, kP2 = -0.053949397057294846f,
                kP3 = 0.021715553477406502f, kP4 = -0.008214971981942654f, kP5 = 0.0021780235692858696f;

template <class A>
struct Activation {
  using V = typename A::V;

  // e = exp(-|x|) never overflows; 1/(1+e) for x >= 0, e/(1+e) below (no cancellation either
  // side). exp clamps -Inf and flushes what falls below FLT_MIN to 0 (giving exactly 1 or 0).
  // The numerator is selected before the one division (the divisions dominated the kernel).
  static V sigmoid(V x) {
    const V e = A::exp(A::or_sign(x, A::set1(-0.0f)));  // -|x|; NaN stays NaN
    const V d = A::add(A::set1(1.0f), e);
    return A::div(A::select_gt(A::set1(0.0f), x, e, A::set1(1.0f)), d);
  }

  static V tanh(V x) {
    const V t = A::abs(x);
    const V x2 = A::mul(x, x);
    V p = A::fmadd(A::set1(kP5), x2, A::set1(kP4));
    p = A::fmadd(p, x2, A::set1(kP3));
    p = A::fmadd(p, x2, A::set1(kP2));
    p = A::fmadd(p, x2, A::set1(kP1));
    p = A::fmadd(p, x2, A::set1(kP0));
    const V small = A::fmadd(A::mul(x, x2), p, x);
    const V tc = A::min(A::set1(10.0f), t);  // NaN stays NaN
    const V e = A::exp(A::add(tc, tc));
    const V big = A::sub(A::set1(1.0f), A::div(A::set1(2.0f), A::add(e, A::set1(1.0f))));
    // The sign of x, also onto the small path: there x + x^3 P(x^2) gives +0 for x = -0.
    return A::or_sign(A::select_gt(A::set1(0.625f), t, small, big), x);
  }

  static V sigmoid_grad(V g, V o) { return A::mul(A::mul(g, o), A::sub(A::set1(1.0f), o)); }
  static V tanh_grad(V g, V o) { return A::mul(g, A::fnmadd(o, o, A::set1(1.0f))); }

  template <V (*F)(V)>
  static void unary(std::size_t n, const float* x, float* y) {
    for (; n >= A::W; n -= A::W, x += A::W, y += A::W) A::store(y, F(A::load(x)));
    if (n != 0) A::store_part(y, F(A::load_part(x, n, 0.0f)), n);
  }

  template <V (*F)(V, V)>
  static void binary(std::size_t n, const float* a, const float* b, float* y) {
    for (; n >= A::W; n -= A::W, a += A::W, b += A::W, y += A::W) A::store(y, F(A::load(a), A::load(b)));
    if (n != 0) A::store_part(y, F(A::load_part(a, n, 0.0f), A::load_part(b, n, 0.0f)), n);
  }
};

}  // namespace
}  // namespace nnkern::vmath

#define NNKERN_DEFINE_VACTIVATION(isa, A)                                                                  \
  void f32_vsigmoid_##isa(std::size_t n, const float* x, float* y) {                                      \
    Activation<A>::unary<Activation<A>::sigmoid>(n, x, y);                                                 \
  }                                                                                                        \
  void f32_vtanh_##isa(std::size_t n, const float* x, float* y) {                                         \
    Activation<A>::unary<Activation<A>::tanh>(n, x, y);                                                    \
  }                                                                                                        \
  void f32_vsigmoid_backward_##isa(std::size_t n, const float* grad, const float* out, float* grad_in) { \
    Activation<A>::binary<Activation<A>::sigmoid_grad>(n, grad, out, grad_in);                             \
  }                                                                                                        \
  void f32_vtanh_backward_##isa(std::size_t n, const float* grad, const float* out, float* grad_in) {    \
    Activation<A>::binary<Activation<A>::tanh_grad>(n, grad, out, grad_in);                                \
  }
