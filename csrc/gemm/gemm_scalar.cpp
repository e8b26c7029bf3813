// Portable GEMM micro-kernels: a 4x4 tile, 16 accumulators that fit the
// register file of any 64-bit target. Multiply then add (two roundings): the
// baseline target has no FMA instruction, and std::fma would be a libm call
// per step.

#include "gemm/gemm_ukernel.h"

namespace nnkern::gemm {
namespace {

template <class T, std::size_t MR, std::size_t NR>
void gemm_tile(std::size_t mr, std::size_t nr, std::size_t kc, const T* a, const T* b, T* c, std::size_t ldc,
               T alpha, T beta, const T* bias) {
  T acc[MR][NR] = {};
  for (std::size_t p = 0; p < kc; ++p, a += MR, b += NR) {
    for (std::size_t i = 0; i < MR; ++i) {
      for (std::size_t j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
    }
  }
  for (std::size_t i = 0; i < mr; ++i) {
    T* row = c + i * ldc;
    for (std::size_t j = 0; j < nr; ++j) {
      T v = acc[i][j] * alpha;
      if (beta != T(0)) v += beta * row[j];
      if (bias != nullptr) v += bias[j];
      row[j] = v;
    }
  }
}

}  // namespace

void f32_gemm_4x4_scalar(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b, float* c,
                         std::size_t ldc, float alpha, float beta, const float* bias) {
  gemm_tile<float, 4, 4>(mr, nr, kc, a, b, c, ldc, alpha, beta, bias);
}

void f64_gemm_4x4_scalar(std::size_t mr, std::size_t nr, std::size_t kc, const double* a, const double* b, double* c,
                         std::size_t ldc, double alpha, double beta, const double* bias) {
  gemm_tile<double, 4, 4>(mr, nr, kc, a, b, c, ldc, alpha, beta, bias);
}

}  // namespace nnkern::gemm
