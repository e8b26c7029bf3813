// AVX-512 GEMM micro-kernels, A broadcast: per k step, 2 aligned loads of B,
// 14 broadcasts of A and 28 FMAs into 28 zmm accumulators (31 of 32
// registers live). Two FMA ports with 4-cycle latency need >= 8 independent
// chains; 28 chains leave room, and 16 loads per 28 FMAs stay under the two
// load ports. Column remainders use masked loads and stores; row remainders
// run a kernel instance with exactly that many rows.
#include <immintrin.h>

#include <type_traits>

#include "gemm/gemm_ukernel.h"
#include "gemm/transpose16_avx512.h"
#include "vmath/hsum4_avx512.h"

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


// C stored transposed (float, a 32-column tile): column j of the tile is
// row j of c, its ROWS elements contiguous. Each 16-column half of the
// accumulators is transposed in registers, then stored one C^T row (masked to
// ROWS) per column; alpha, beta and bias as in gemm_rows (the same bits).
template <std::size_t ROWS>
inline void store_transposed(const __m512 (&acc)[ROWS][2], std::size_t nr, float* c, std::size_t ldc, float alpha,
                             float beta, const float* bias) {
  static_assert(ROWS <= 16);
  const __mmask16 row_mask = Zmm<float>::mask(ROWS);
  const __m512 alpha_v = _mm512_set1_ps(alpha), beta_v = _mm512_set1_ps(beta);
#pragma GCC unroll 1
  for (std::size_t j = 0; j < 2; ++j) {
    __m512 r[16];
#pragma GCC unroll 16
    for (std::size_t i = 0; i < 16; ++i) r[i] = i < ROWS ? acc[i < ROWS ? i : 0][j] : _mm512_setzero_ps();
    transpose16x16(r);
    const std::size_t cols = nr > j * 16 ? (nr - j * 16 < 16 ? nr - j * 16 : 16) : 0;
    for (std::size_t q = 0; q < cols; ++q) {
      float* row = c + (j * 16 + q) * ldc;
      __m512 v = _mm512_mul_ps(r[q], alpha_v);
      if (beta != 0.0f) v = _mm512_fmadd_ps(beta_v, _mm512_maskz_loadu_ps(row_mask, row), v);
      if (bias != nullptr) v = _mm512_add_ps(v, _mm512_set1_ps(bias[j * 16 + q]));
      _mm512_mask_storeu_ps(row, row_mask, v);
    }
  }
}

// The 14x32 tile with an implicit A (a convolution's input read in place):
// row i, step p of A is a_base[a_off[p] + i * SA] (SA: the stride between
// the tile's pixels), B packed (32-wide panel), C stored transposed. The FMA
// chain of gemm_rows (the same bits as the packed kernel on the same values).
template <std::size_t ROWS, std::size_t SA>
void gemm_rows_implicit(std::size_t nr, std::size_t kc, const float* a_base, const std::ptrdiff_t* a_off,
                        const float* b, float* c, std::size_t ldc, float alpha, float beta, const float* bias) {
  using Z = Zmm<float>;
  constexpr std::size_t NV = 2, NR = 32;
#pragma GCC unroll 16
  for (std::size_t j = 0; j < NR; j += 16) _mm_prefetch(reinterpret_cast<const char*>(c + j * ldc), _MM_HINT_T0);
  __m512 acc[ROWS][NV];
#pragma GCC unroll 16
  for (std::size_t i = 0; i < ROWS; ++i) {
    for (std::size_t j = 0; j < NV; ++j) acc[i][j] = Z::zero();
  }
#pragma GCC unroll 4
  for (std::size_t p = 0; p < kc; ++p, b += NR) {
    const float* a = a_base + a_off[p];
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 16
    for (std::size_t i = 0; i < ROWS; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i * SA]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  store_transposed<ROWS>(acc, nr, c, ldc, alpha, beta, bias);
}

template <std::size_t SA, std::size_t ROWS = 14>
void gemm_tile_implicit(std::size_t mr, std::size_t nr, std::size_t kc, const float* a_base,
                        const std::ptrdiff_t* a_off, const float* b, float* c, std::size_t ldc, float alpha, float beta,
                        const float* bias) {
  if constexpr (ROWS > 1) {
    if (mr < ROWS) return gemm_tile_implicit<SA, ROWS - 1>(mr, nr, kc, a_base, a_off, b, c, ldc, alpha, beta, bias);
  }
  gemm_rows_implicit<ROWS, SA>(nr, kc, a_base, a_off, b, c, ldc, alpha, beta, bias);
}

constexpr std::size_t kPrefetchSteps = 48;
constexpr std::size_t kStridedAhead = 16;

// ROWS rows of C from an A panel packed MR rows wide (ROWS <= MR): a tile
// with fewer rows than the panel does only the FMAs it stores.
//
// STRIDED: B is read in place, row p of the panel at b + p * ldb (any
// alignment; columns past nr are not read), and when b_next is not null the
// same rows of the next panel are fetched as the FMAs run (the first row
// tile over a panel streams it from memory or L3; the next tiles find it in
// L1 or L2). Otherwise b is a packed panel (b_next and ldb unused).
//
// row_bias (not with CT): null, or ROWS elements, row_bias[i] added to row i
// of C last (after bias), as a separate pass over C would add it.
template <class T, std::size_t ROWS, std::size_t MR, std::size_t NV, bool STRIDED = false, bool CT = false>
void gemm_rows(std::size_t nr, std::size_t kc, const T* a, const T* b, T* c, std::size_t ldc, T alpha, T beta,
               const T* bias, std::size_t ldb = 0, const T* b_next = nullptr, const T* row_bias = nullptr) {
  using Z = Zmm<T>;
  constexpr std::size_t NR = NV * Z::kLanes;
  typename Z::Mask m[NV];
#pragma GCC unroll 4
  for (std::size_t j = 0; j < NV; ++j) m[j] = Z::mask(nr > j * Z::kLanes ? nr - j * Z::kLanes : 0);
  const std::size_t b_step = STRIDED ? ldb : NR;
  // The C tile is read (beta != 0) and written after the k loop; its rows are
  // ldc apart, often a multiple of 4 KiB, so they compete for a few L1 sets
  // and are usually evicted between visits: fetch them while the FMAs run.
#pragma GCC unroll 16
  for (std::size_t i = 0; i < ROWS; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + NR - 1), _MM_HINT_T0);
  }
  typename Z::V acc[ROWS][NV];
#pragma GCC unroll 16
  for (std::size_t i = 0; i < ROWS; ++i) {
#pragma GCC unroll 4
    for (std::size_t j = 0; j < NV; ++j) acc[i][j] = Z::zero();
  }
#pragma GCC unroll 4
  for (std::size_t p = 0; p < kc; ++p, a += MR, b += b_step) {
    // A panels stream from L3 when A is large and B narrow (a cached packed
    // weight against few columns: Winograd's 36 GEMMs of a 7x7 layer): fetch
    // 48 steps (2.7 KB for 14 rows) ahead; without it that case ran at half
    // the speed of the same GEMM with A in L2 (bench/NOTES.md).
    _mm_prefetch(reinterpret_cast<const char*>(a + kPrefetchSteps * MR), _MM_HINT_T0);
    typename Z::V bv[NV];
    if constexpr (STRIDED) {
      if (b_next != nullptr) {
        const char* next = reinterpret_cast<const char*>(b_next + p * ldb);
        _mm_prefetch(next, _MM_HINT_T0);
        _mm_prefetch(next + NR * sizeof(T) - 1, _MM_HINT_T0);
      }
      // this panel's rows, a few steps ahead: they are ldb apart, beyond
      // the hardware prefetchers, and mostly in L2 (a panel of rows a
      // multiple of 256 bytes apart does not stay in L1's few sets)
      const char* ahead = reinterpret_cast<const char*>(b + kStridedAhead * ldb);
      _mm_prefetch(ahead, _MM_HINT_T0);
      _mm_prefetch(ahead + NR * sizeof(T) - 1, _MM_HINT_T0);
#pragma GCC unroll 4
      for (std::size_t j = 0; j < NV; ++j) bv[j] = Z::load(m[j], b + j * Z::kLanes);
    } else {
#pragma GCC unroll 4
      for (std::size_t j = 0; j < NV; ++j) bv[j] = Z::load(b + j * Z::kLanes);
    }
#pragma GCC unroll 16
    for (std::size_t i = 0; i < ROWS; ++i) {
      const typename Z::V ai = Z::set1(a[i]);
#pragma GCC unroll 4
      for (std::size_t j = 0; j < NV; ++j) acc[i][j] = Z::fmadd(ai, bv[j], acc[i][j]);
    }
  }

  if constexpr (CT) {
    static_assert(std::is_same_v<T, float> && NV == 2);
    store_transposed<ROWS>(acc, nr, c, ldc, alpha, beta, bias);
    return;
  }
  typename Z::V bias_v[NV];
#pragma GCC unroll 4
  for (std::size_t j = 0; j < NV; ++j) {
    bias_v[j] = bias != nullptr ? Z::load(m[j], bias + j * Z::kLanes) : Z::zero();
  }
  const typename Z::V alpha_v = Z::set1(alpha), beta_v = Z::set1(beta);
#pragma GCC unroll 16
  for (std::size_t i = 0; i < ROWS; ++i) {
    T* row = c + i * ldc;
#pragma GCC unroll 4
    for (std::size_t j = 0; j < NV; ++j) {
      typename Z::V v = Z::mul(acc[i][j], alpha_v);
      if (beta != T(0)) v = Z::fmadd(beta_v, Z::load(m[j], row + j * Z::kLanes), v);
      if (bias != nullptr) v = Z::add(v, bias_v[j]);
      if (row_bias != nullptr) v = Z::add(v, Z::set1(row_bias[i]));
      Z::store(row + j * Z::kLanes, m[j], v);
    }
  }
}

// ROWS rows of C against up to P consecutive B panels (P * NR columns) in one
// pass: for one or two rows a single panel gives only 2-4 accumulator chains,
// bound by FMA latency; P panels give P times as many. Every element is the
// same FMA chain as in gemm_rows, so the bits are the same.
template <class T, std::size_t ROWS, std::size_t MR, std::size_t NV, std::size_t P>
void gemm_rows_wide(std::size_t nr, std::size_t kc, const T* a, const T* b, std::size_t b_stride, T* c,
                    std::size_t ldc, T alpha, T beta, const T* bias) {
  using Z = Zmm<T>;
  constexpr std::size_t NR = NV * Z::kLanes;
  typename Z::V acc[ROWS][P * NV];
  for (std::size_t i = 0; i < ROWS; ++i) {
    for (std::size_t j = 0; j < P * NV; ++j) acc[i][j] = Z::zero();
  }
#pragma GCC unroll 2
  for (std::size_t p = 0; p < kc; ++p) {
#pragma GCC unroll 4
    for (std::size_t i = 0; i < ROWS; ++i) {
      const typename Z::V ai = Z::set1(a[p * MR + i]);
#pragma GCC unroll 4
      for (std::size_t q = 0; q < P; ++q) {
#pragma GCC unroll 4
        for (std::size_t j = 0; j < NV; ++j) {
          acc[i][q * NV + j] = Z::fmadd(ai, Z::load(b + q * b_stride + p * NR + j * Z::kLanes), acc[i][q * NV + j]);
        }
      }
    }
  }
  const typename Z::V alpha_v = Z::set1(alpha), beta_v = Z::set1(beta);
  for (std::size_t q = 0; q < P; ++q) {
    for (std::size_t j = 0; j < NV; ++j) {
      const std::size_t col = q * NR + j * Z::kLanes;
      const typename Z::Mask m = Z::mask(nr > col ? nr - col : 0);
      const typename Z::V bias_v = bias != nullptr ? Z::load(m, bias + col) : Z::zero();
      for (std::size_t i = 0; i < ROWS; ++i) {
        T* out = c + i * ldc + col;
        typename Z::V v = Z::mul(acc[i][q * NV + j], alpha_v);
        if (beta != T(0)) v = Z::fmadd(beta_v, Z::load(m, out), v);
        if (bias != nullptr) v = Z::add(v, bias_v);
        Z::store(out, m, v);
      }
    }
  }
}

template <class T, std::size_t MR, std::size_t NV, std::size_t ROWS>
void gemm_wide_rows(std::size_t nr, std::size_t kc, const T* a, const T* b, std::size_t b_stride, T* c,
                    std::size_t ldc, T alpha, T beta, const T* bias) {
  constexpr std::size_t NR = NV * Zmm<T>::kLanes;
  switch ((nr + NR - 1) / NR) {
    case 1: return gemm_rows_wide<T, ROWS, MR, NV, 1>(nr, kc, a, b, b_stride, c, ldc, alpha, beta, bias);
    case 2: return gemm_rows_wide<T, ROWS, MR, NV, 2>(nr, kc, a, b, b_stride, c, ldc, alpha, beta, bias);
    case 3: return gemm_rows_wide<T, ROWS, MR, NV, 3>(nr, kc, a, b, b_stride, c, ldc, alpha, beta, bias);
    default: return gemm_rows_wide<T, ROWS, MR, NV, 4>(nr, kc, a, b, b_stride, c, ldc, alpha, beta, bias);
  }
}

// mr rows (1 <= mr <= MR): the gemm_rows instance with exactly mr rows.
template <class T, std::size_t MR, std::size_t NV, bool STRIDED = false, std::size_t ROWS = MR, bool CT = false>
void gemm_tile(std::size_t mr, std::size_t nr, std::size_t kc, const T* a, const T* b, T* c, std::size_t ldc,
               T alpha, T beta, const T* bias, std::size_t ldb = 0, const T* b_next = nullptr,
               const T* row_bias = nullptr) {
  if constexpr (ROWS > 1) {
    if (mr < ROWS) {
      return gemm_tile<T, MR, NV, STRIDED, ROWS - 1, CT>(mr, nr, kc, a, b, c, ldc, alpha, beta, bias, ldb, b_next,
                                                          row_bias);
    }
  }
  gemm_rows<T, ROWS, MR, NV, STRIDED, CT>(nr, kc, a, b, c, ldc, alpha, beta, bias, ldb, b_next, row_bias);
}

// rows (<= 4) rows of A against JW rows of W: 16-lane partial sums along k,
// reduced at the end (four W rows' sums together by hsum4, each with the bits
// of its own reduction). No packing: each W element is used by every A row
// while it is in a register, which is all the reuse a small m allows.
template <std::size_t ROWS, std::size_t JW>
void dot_rows(std::size_t k, const float* a, std::size_t lda, const float* w, std::size_t ldw, float* c,
              std::size_t ldc, float alpha, float beta, const float* bias) {
  // (fully unrolled: the accumulators stay in registers instead of being
  // stored back to the stack after every FMA)
  __m512 acc[ROWS][JW];
#pragma GCC unroll 4
  for (std::size_t i = 0; i < ROWS; ++i) {
#pragma GCC unroll 4
    for (std::size_t j = 0; j < JW; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  for (std::size_t p = 0; p < k; p += 16) {
    const __mmask16 m = Zmm<float>::mask(k - p);
    __m512 wv[JW];
#pragma GCC unroll 4
    for (std::size_t j = 0; j < JW; ++j) wv[j] = _mm512_maskz_loadu_ps(m, w + j * ldw + p);
#pragma GCC unroll 4
    for (std::size_t i = 0; i < ROWS; ++i) {
      const __m512 av = _mm512_maskz_loadu_ps(m, a + i * lda + p);
#pragma GCC unroll 4
      for (std::size_t j = 0; j < JW; ++j) acc[i][j] = _mm512_fmadd_ps(av, wv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (std::size_t i = 0; i < ROWS; ++i) {
    float sums[JW];
    if constexpr (JW == 4) {
      _mm_storeu_ps(sums, hsum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
    } else {
#pragma GCC unroll 4
      for (std::size_t j = 0; j < JW; ++j) sums[j] = _mm512_reduce_add_ps(acc[i][j]);
    }
    for (std::size_t j = 0; j < JW; ++j) {
      float v = sums[j] * alpha;
      if (beta != 0.0f) v += beta * c[i * ldc + j];
      if (bias != nullptr) v += bias[j];
      c[i * ldc + j] = v;
    }
  }
}

template <std::size_t ROWS>
void dot_all(std::size_t n, std::size_t k, const float* a, std::size_t lda, const float* w, std::size_t ldw, float* c,
             std::size_t ldc, float alpha, float beta, const float* bias) {
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    dot_rows<ROWS, 4>(k, a, lda, w + j * ldw, ldw, c + j, ldc, alpha, beta, bias != nullptr ? bias + j : nullptr);
  }
  for (; j < n; ++j) {
    dot_rows<ROWS, 1>(k, a, lda, w + j * ldw, ldw, c + j, ldc, alpha, beta, bias != nullptr ? bias + j : nullptr);
  }
}

}  // namespace

void f32_gemm_dot_4_avx512(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t lda,
                           const float* w, std::size_t ldw, float* c, std::size_t ldc, float alpha, float beta,
                           const float* bias) {
  switch (m) {
    case 1: return dot_all<1>(n, k, a, lda, w, ldw, c, ldc, alpha, beta, bias);
    case 2: return dot_all<2>(n, k, a, lda, w, ldw, c, ldc, alpha, beta, bias);
    case 3: return dot_all<3>(n, k, a, lda, w, ldw, c, ldc, alpha, beta, bias);
    default: return dot_all<4>(n, k, a, lda, w, ldw, c, ldc, alpha, beta, bias);
  }
}

void f32_pack_transpose_avx512(std::size_t rows, std::size_t depth, const float* src, std::ptrdiff_t ld_src,
                               float* out, std::size_t ld_out) {
  for (std::size_t r0 = 0; r0 < rows; r0 += 16) {
    const std::size_t h = rows - r0 < 16 ? rows - r0 : 16;
    const __mmask16 row_mask = Zmm<float>::mask(h);
    for (std::size_t p0 = 0; p0 < depth; p0 += 16) {
      const std::size_t d = depth - p0 < 16 ? depth - p0 : 16;
      const __mmask16 depth_mask = Zmm<float>::mask(d);
      __m512 v[16];
      for (std::size_t r = 0; r < 16; ++r) {
        v[r] = r < h ? _mm512_maskz_loadu_ps(depth_mask, src + static_cast<std::ptrdiff_t>(r0 + r) * ld_src + p0)
                     : _mm512_setzero_ps();
      }
      transpose16x16(v);
      for (std::size_t q = 0; q < d; ++q) _mm512_mask_storeu_ps(out + (p0 + q) * ld_out + r0, row_mask, v[q]);
    }
  }
}

void f32_gemm_14x32_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b, float* c,
                           std::size_t ldc, float alpha, float beta, const float* bias) {
  gemm_tile<float, 14, 2>(mr, nr, kc, a, b, c, ldc, alpha, beta, bias);
}

void f32_gemm_14x32_ct_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b,
                              float* c, std::size_t ldc, float alpha, float beta, const float* bias) {
  gemm_tile<float, 14, 2, false, 14, true>(mr, nr, kc, a, b, c, ldc, alpha, beta, bias);
}

void f32_gemm_14x32_implicit_ct_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const float* a_base,
                                       const std::ptrdiff_t* a_off, std::size_t a_step, const float* b, float* c,
                                       std::size_t ldc, float alpha, float beta, const float* bias) {
  if (a_step == 1) return gemm_tile_implicit<1>(mr, nr, kc, a_base, a_off, b, c, ldc, alpha, beta, bias);
  gemm_tile_implicit<2>(mr, nr, kc, a_base, a_off, b, c, ldc, alpha, beta, bias);
}

void f32_gemm_14x32_strided_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b,
                                   std::size_t ldb, const float* b_next, float* c, std::size_t ldc, float alpha,
                                   float beta, const float* bias, const float* row_bias) {
  gemm_tile<float, 14, 2, true>(mr, nr, kc, a, b, c, ldc, alpha, beta, bias, ldb, b_next, row_bias);
}

void f32_gemm_2x128_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b,
                           std::size_t b_stride, float* c, std::size_t ldc, float alpha, float beta,
                           const float* bias) {
  if (mr == 1) return gemm_wide_rows<float, 14, 2, 1>(nr, kc, a, b, b_stride, c, ldc, alpha, beta, bias);
  gemm_wide_rows<float, 14, 2, 2>(nr, kc, a, b, b_stride, c, ldc, alpha, beta, bias);
}

void f64_gemm_14x16_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const double* a, const double* b,
                           double* c, std::size_t ldc, double alpha, double beta, const double* bias) {
  gemm_tile<double, 14, 2>(mr, nr, kc, a, b, c, ldc, alpha, beta, bias);
}

}  // namespace nnkern::gemm
