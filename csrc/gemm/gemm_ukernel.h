// GEMM micro-kernels: one register tile of C from packed panels.
//
//   a: kc x MR panel of A, column by column (a[p * MR + i] = A(i, p)), rows
//      past mr zero-padded; b: kc x NR panel of B, row by row
//      (b[p * NR + j] = B(p, j)), columns past nr zero-padded, 64-byte aligned.
//   C(i, j) = alpha * sum_p a(i, p) b(p, j) + beta * C(i, j) (+ bias[j])
//   for i < mr <= MR, j < nr <= NR; C is not read when beta == 0, bias may be
//   null. The sum runs over p in ascending order (one FMA per step in the
// vector kernels).
//
// Names follow XNNPACK: <dtype>_gemm_<MR>x<NR>_<isa>. The operator (gemm.cpp)
// reads MR and NR from its config table next to each function.
#pragma once

#include <cstddef>

namespace nnkern::gemm {

template <class T>
using GemmUkernelFn = void (*)(std::size_t mr, std::size_t nr, std::size_t kc, const T* a, const T* b, T* c,
                               std::size_t ldc, T alpha, T beta, const T* bias);

// Scalar: 4x4 keeps 16 accumulators in registers on any target.
void f32_gemm_4x4_scalar(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b, float* c,
                         std::size_t ldc, float alpha, float beta, const float* bias);
void f64_gemm_4x4_scalar(std::size_t mr, std::size_t nr, std::size_t kc, const double* a, const double* b, double* c,
                         std::size_t ldc, double alpha, double beta, const double* bias);

// AVX2: 6 rows x 2 ymm = 12 accumulators + 2 B vectors + 1 broadcast of 16 registers.
void f32_gemm_6x16_avx2(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b, float* c,
                        std::size_t ldc, float alpha, float beta, const float* bias);
void f64_gemm_6x8_avx2(std::size_t mr, std::size_t nr, std::size_t kc, const double* a, const double* b, double* c,
                       std::size_t ldc, double alpha, double beta, const double* bias);

// AVX-512: 14 rows x 2 zmm = 28 accumulators + 2 B vectors + 1 broadcast of 32 registers.
// The 14x32 kernel with C stored transposed: C(i, j) at c[j * ldc + i]
// (bias[j] added to row j of c), the same FMA chains (the same bits). For a
// convolution computed as out^T = patches @ W^T, writing NCHW planes.
void f32_gemm_14x32_ct_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b,
                              float* c, std::size_t ldc, float alpha, float beta, const float* bias);
// The transposed-store 14x32 kernel with an implicit A (a convolution's
// zero-padded input read in place): A(i, p) = a_base[a_off[p] + i * a_step],
// a_step 1 or 2; B a packed 32-wide panel. The same FMA chains.
void f32_gemm_14x32_implicit_ct_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const float* a_base,
                                       const std::ptrdiff_t* a_off, std::size_t a_step, const float* b, float* c,
                                       std::size_t ldc, float alpha, float beta, const float* bias);
void f32_gemm_14x32_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b, float* c,
                           std::size_t ldc, float alpha, float beta, const float* bias);
void f64_gemm_14x16_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const double* a, const double* b,
                           double* c, std::size_t ldc, double alpha, double beta, const double* bias);

// The 14x32 kernel with B read in place instead of packed: row p of the
// kc x nr panel at b + p * ldb (any alignment; columns past nr are not read).
// When b_next is not null, the same kc rows of the next panel (b_next + p *
// ldb, NR columns) are prefetched as the FMAs run. The same FMA chains,
// so the same bits, as the packed kernel. It spares the copy of B into
// panels where B's rows are contiguous: the input planes of a 1x1
// convolution, an im2col tile. row_bias: null, or mr elements, row_bias[i]
// added to row i of C after everything else (a convolution's bias, fused
// into the last kc slice's stores).
template <class T>
using GemmStridedFn = void (*)(std::size_t mr, std::size_t nr, std::size_t kc, const T* a, const T* b,
                               std::size_t ldb, const T* b_next, T* c, std::size_t ldc, T alpha, T beta,
                               const T* bias, const T* row_bias);
void f32_gemm_14x32_strided_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b,
                                   std::size_t ldb, const float* b_next, float* c, std::size_t ldc, float alpha,
                                   float beta, const float* bias, const float* row_bias);

// One or two rows against up to four consecutive packed B panels of the
// 14x32 kernel (panel q at b + q * b_stride), nr <= 128 columns: the same
// bits as four 14x32 calls, with four times the independent FMA chains
// (a 1-row tile of one panel is bound by FMA latency, not throughput).
template <class T>
using GemmWideFn = void (*)(std::size_t mr, std::size_t nr, std::size_t kc, const T* a, const T* b,
                            std::size_t b_stride, T* c, std::size_t ldc, T alpha, T beta, const T* bias);
constexpr std::size_t kWideMaxRows = 2, kWidePanels = 4;
void f32_gemm_2x128_avx512(std::size_t mr, std::size_t nr, std::size_t kc, const float* a, const float* b,
                           std::size_t b_stride, float* c, std::size_t ldc, float alpha, float beta,
                           const float* bias);

// Packing helper: out[p * ld_out + r] = src[r * ld_src + p] for r < rows,
// p < depth (a transpose of rows x depth). It packs A when A's rows are
// contiguous and B when B's columns are (x and W^T in linear), where a plain
// loop would move one element per instruction.
template <class T>
using PackTransposeFn = void (*)(std::size_t rows, std::size_t depth, const T* src, std::ptrdiff_t ld_src, T* out,
                                 std::size_t ld_out);

// 16 x 16 blocks transposed in registers.
void f32_pack_transpose_avx512(std::size_t rows, std::size_t depth, const float* src, std::ptrdiff_t ld_src,
                               float* out, std::size_t ld_out);

// Small-m GEMM without packing, for B = W^T with W's rows contiguous (x W^T
// in linear and the recurrent cells at batch 1..4):
//   C(i, j) = alpha * sum_p a[i * lda + p] w[j * ldw + p] + beta * C(i, j)
//   (+ bias[j]) for i < m <= 4, j < n; each sum is 16 lanes of partial
//   sums along p, added by a fixed reduction tree.
template <class T>
using GemmDotFn = void (*)(std::size_t m, std::size_t n, std::size_t k, const T* a, std::size_t lda, const T* w,
                           std::size_t ldw, T* c, std::size_t ldc, T alpha, T beta, const T* bias);

void f32_gemm_dot_4_avx512(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t lda,
                           const float* w, std::size_t ldw, float* c, std::size_t ldc, float alpha, float beta,
                           const float* bias);

}  // namespace nnkern::gemm
