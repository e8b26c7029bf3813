// AVX2 GEMM micro-kernels, A broadcast: per k step, 2 aligned loads of B,
// 6 broadcasts of A and 12 FMAs into 12 ymm accumulators (15 of 16
// registers live; 12 chains cover two FMA ports at 4-5 cycles latency).
// Column remainders use maskload/maskstore; row remainders run a kernel
// instance with exactly that many rows.
#include <immintrin.h>

#include "gemm/gemm_ukernel.h"

namespace nnkern::gemm {
namespace {

template <class T>
struct Ymm;

template <>
struct Ymm<float> {
  using V = __m256;
  static constexpr std::size_t kLanes = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_load_ps(p); }
  static V load(__m256i m, const float* p) { return _mm256_maskload_ps(p, m); }
  static void store(float* p, __m256i m, V v) { _mm256_maskstore_ps(p, m, v); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  // Lane l is active when l < n.
  static __m256i mask(std::size_t n) {
    const int k = n >= kLanes ? int(kLanes) : int(n);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
};

template <>
struct Ymm<double> {
  using V = __m256d;
  static constexpr std::size_t kLanes = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V set1(double x) { return _mm256_set1_pd(x); }
  static V load(const double* p) { return _mm256_load_pd(p); }
  static V load(__m256i m, const double* p) { return _mm256_maskload_pd(p, m); }
  static void store(double* p, __m256i m, V v) { _mm256_maskstore_pd(p, m, v); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static __m256i mask(std::size_t n) {
    const long long k = n >= kLanes ? (long long)kLanes : (long long)n;
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(k), _mm256_setr_epi64x(0, 1, 2, 3));
  }
};

// ROWS rows of C from an A panel packed MR rows wide (ROWS <= MR): a tile
// with fewer rows than the panel does only the FMAs it stores.
template <class T, std::size_t ROWS, std::size_t MR, std::size_t NV>
void gemm_rows(std::size_t nr, std::size_t kc, const T* a, const T* b, T* c, std::size_t ldc, T alpha, T beta,
               const T* bias) {
  using Y = Ymm<T>;
  constexpr std::size_t NR = NV * Y::kLanes;
  typename Y::V acc[ROWS][NV];
#pragma GCC unroll 8
  for (std::size_t i = 0; i < ROWS; ++i) {
#pragma GCC unroll 4
    for (std::size_t j = 0; j < NV; ++j) acc[i][j] = Y::zero();
  }
  for (std::size_t p = 0; p < kc; ++p, a += MR, b += NR) {
    typename Y::V bv[NV];
#pragma GCC unroll 4
    for (std::size_t j = 0; j < NV; ++j) bv[j] = Y::load(b + j * Y::kLanes);
#pragma GCC unroll 8
    for (std::size_t i = 0; i < ROWS; ++i) {
      const typename Y::V ai = Y::set1(a[i]);
#pragma GCC unroll 4
      for (std::size_t j = 0; j < NV; ++j) acc[i][j] = Y::fmadd(ai, bv[j], acc[i][j]);
    }
  }

  __m256i m[NV];
  typename Y::V bias_v[NV];
#pragma GCC unroll 4
  for (std::size_t j = 0; j < NV; ++j) {
    m[j] = Y::mask(nr > j * Y::kLanes ? nr - j * Y::kLanes : 0);
    bias_v[j] = bias != nullptr ? Y::load(m[j], bias + j * Y::kLanes) : Y::zero();
  }
  const typename Y::V alpha_v = Y::set1(alpha), beta_v = Y::set1(beta);
#pragma GCC unroll 8
  for (std::size_t i = 0; i < ROWS; ++i) {
    T* row = c + i * ldc;
#pragma GCC unroll 4
    for (std::size_t j = 0; j < NV; ++j) {
      typename Y::V v = Y::mul(acc[i][j], alpha_v);
      if (beta != T(0)) v = Y::fmadd(beta_v, Y::load(m[j], row + j * Y::kLanes), v);
      if (bias != nullptr) v = Y::add(v, bias_v[j]);
      Y::store(row + j * Y::kLanes, m[j], v);
    }
  }
}

// mr rows (1 <= mr <= MR): the gemm_rows instance with exactly mr rows.
template <class T, std::size_t MR, std::size_t NV, std::size_t ROWS = MR>
void gemm_tile(std::size_t mr, std::size_t nr, std::size_t kc, const T* a, const T* b, T* c, std::size_t ldc,
               T alpha, T beta, const T* bias) {
  if constexpr (ROWS > 1) {
    if (mr < ROWS) return gemm_tile<T, MR, NV, ROWS - 1>(mr, nr, kc, a, b, c, ldc, alpha, beta, bias);
  }
  gemm_rows<T, ROWS, MR, NV>(nr, kc, a, b, c, ldc, alpha, beta, bias);
}

}  // namespace

void f32_gemm_6x16_avx2(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b, float* c,
                        std::size_t ldc, float alpha, float beta, const float* bias) {
  gemm_tile<float, 6, 2>(mr, nr, kc, a, b, c, ldc, alpha, beta, bias);
}

void f64_gemm_6x8_avx2(std::size_t mr, std::size_t nr, std::size_t kc, const double* a, const double* b, double* c,
                       std::size_t ldc, double alpha, double beta, const double* bias) {
  gemm_tile<double, 6, 2>(mr, nr, kc, a, b, c, ldc, alpha, beta, bias);
}

}  // namespace nnkern::gemm
