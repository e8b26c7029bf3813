// softmax kernels one element at a time (softmax_impl.h), exp from libm.
#include <cmath>

#include "vmath/softmax_export.h"

namespace nnkern::vmath {
namespace {

struct Scalar {
  using V = float;
  static constexpr std::size_t W = 1;
  static V load(const float* p) { return *p; }
  static V load_part(const float* p, std::size_t, float) { return *p; }  // never called: W = 1 has no tail
  static void store(float* p, V v) { *p = v; }
  static void store_part(float* p, V v, std::size_t) { *p = v; }
  static V set1(float v) { return v; }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V fnmadd(V a, V b, V c) { return c - a * b; }
  static V max(V a, V b) { return a > b ? a : b; }  // b when either is NaN, as the vector max
  static V select_gt(V a, V b, V x, V y) { return a > b ? x : y; }
  static V exp(V a) { return std::exp(a); }
  static std::size_t first_eq(std::size_t n, const float* p, float v) {
    std::size_t i = 0;
    while (i < n && !(p[i] == v)) ++i;
    return i;
  }
};

}  // namespace

NNKERN_DEFINE_SOFTMAX(scalar, Scalar)

}  // namespace nnkern::vmath
