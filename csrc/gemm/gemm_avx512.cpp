// AVX-512 GEMM micro-kernels, A broadcast: per k step, 2 aligned loads of B,
// 14 broadcasts of A and 28 FMAs into 28 zmm accumulators (31 of 32
// registers live). Two FMA ports with 4-cycle latency need >= 8 independent
// chains; 28 chains leave room, and 16 loads per 28 FMAs stay under the two
// load ports. Column remainders use masked loads and stores; row remainders
// compute the zero-padded rows and skip their stores.
#include <immintrin.h>

#include "gemm/gemm_ukernel.h"

namespace nnkern::gemm {
namespace {

template <class T>
struct Zmm;

template <>
struct Zmm<float> {
  using V = __m512;
  using Mask = __mmask16;
  static constexpr std::size_t kLanes = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_load_ps(p); }
  static V load(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, Mask m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static Mask mask(std::size_t n) { return n >= kLanes ? Mask(0xffff) : Mask((1u << n) - 1u); }
};

template <>
struct Zmm<double> {
  using V = __m512d;
  using Mask = __mmask8;
  static constexpr std::size_t kLanes = 8;
  static V zero() { return _mm512_setzero_pd(); }
  static V set1(double x) { return _mm512_set1_pd(x); }
  static V load(const double* p) { return _mm512_load_pd(p); }
  static V load(Mask m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static void store(double* p, Mask m, V v) { _mm512_mask_storeu_pd(p, m, v); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static Mask mask(std::size_t n) { return n >= kLanes ? Mask(0xff) : Mask((1u << n) - 1u); }
};

template <class T, std::size_t MR, std::size_t NV>
void gemm_tile(std::size_t mr, std::size_t nr, std::size_t kc, const T* a, const T* b, T* c, std::size_t ldc,
               T alpha, T beta, const T* bias) {
  using Z = Zmm<T>;
  constexpr std::size_t NR = NV * Z::kLanes;
  typename Z::V acc[MR][NV];
#pragma GCC unroll 16
  for (std::size_t i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (std::size_t j = 0; j < NV; ++j) acc[i][j] = Z::zero();
  }
  for (std::size_t p = 0; p < kc; ++p, a += MR, b += NR) {
    typename Z::V bv[NV];
#pragma GCC unroll 4
    for (std::size_t j = 0; j < NV; ++j) bv[j] = Z::load(b + j * Z::kLanes);
#pragma GCC unroll 16
    for (std::size_t i = 0; i < MR; ++i) {
      const typename Z::V ai = Z::set1(a[i]);
#pragma GCC unroll 4
      for (std::size_t j = 0; j < NV; ++j) acc[i][j] = Z::fmadd(ai, bv[j], acc[i][j]);
    }
  }

  typename Z::Mask m[NV];
  typename Z::V bias_v[NV];
#pragma GCC unroll 4
  for (std::size_t j = 0; j < NV; ++j) {
    m[j] = Z::mask(nr > j * Z::kLanes ? nr - j * Z::kLanes : 0);
    bias_v[j] = bias != nullptr ? Z::load(m[j], bias + j * Z::kLanes) : Z::zero();
  }
  const typename Z::V alpha_v = Z::set1(alpha), beta_v = Z::set1(beta);
#pragma GCC unroll 16
  for (std::size_t i = 0; i < MR; ++i) {
    if (i >= mr) break;
    T* row = c + i * ldc;
#pragma GCC unroll 4
    for (std::size_t j = 0; j < NV; ++j) {
      typename Z::V v = Z::mul(acc[i][j], alpha_v);
      if (beta != T(0)) v = Z::fmadd(beta_v, Z::load(m[j], row + j * Z::kLanes), v);
      if (bias != nullptr) v = Z::add(v, bias_v[j]);
      Z::store(row + j * Z::kLanes, m[j], v);
    }
  }
}

}  // namespace

void f32_gemm_14x32_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b, float* c,
                           std::size_t ldc, float alpha, float beta, const float* bias) {
  gemm_tile<float, 14, 2>(mr, nr, kc, a, b, c, ldc, alpha, beta, bias);
}

void f64_gemm_14x16_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const double* a, const double* b,
                           double* c, std::size_t ldc, double alpha, double beta, const double* bias) {
  gemm_tile<double, 14, 2>(mr, nr, kc, a, b, c, ldc, alpha, beta, bias);
}

}  // namespace nnkern::gemm
