// General matrix multiply for the other operators (linear, conv, RNN):
//
//   C = alpha * A * B + beta * C  (+ bias[j] added to every row of C)
//
// A is m x k and B is k x n, each given by a pointer and two strides in
// elements (row stride, column stride; negative strides are allowed), so a
// caller serves op(A) = A^T or op(B) = B^T by swapping the strides instead of
// copying: the packing step reads any layout. C is row-major with leading
// dimension ldc (unit column stride) and must not overlap A, B or bias.
//
// Semantics:
//  - beta == 0: C is only written, never read (it may hold NaN or garbage).
//  - bias: null, or n elements added to each row after alpha*AB + beta*C.
//  - k == 0: C = beta*C (+ bias); m == 0 or n == 0: nothing is touched.
//  - Results are bit-identical for every run *and every thread count*: work is
//    split over output tiles only, and each element's k-reduction order is
//    fixed by the shape and the kernel family, never by the split (packed
//    path: kc-deep slices in ascending order, one FMA chain per slice; m <= 4
//    against a W^T operand on avx512: 16-lane partial sums and a fixed
//    reduction, see gemm_ukernel.h). Different families round differently.
//  - Called from inside a parallel_for chunk, it runs on the calling thread
//    (thread_pool.h), with the same bits.
//  - Denormals: the caller sets FTZ/DAZ (bindings run_native does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/cpu_features.h"
#include "core/workspace.h"

namespace nnkern::gemm {

template <class T>
struct MatrixRef {
  const T* data = nullptr;
  std::ptrdiff_t row_stride = 0;  // elements between (i, j) and (i + 1, j)
  std::ptrdiff_t col_stride = 1;  // elements between (i, j) and (i, j + 1)
};

// A row-major matrix with leading dimension ld, used as is (trans = false) or
// as its transpose (trans = true): the BLAS-style form of a MatrixRef.
template <class T>
MatrixRef<T> row_major(const T* data, std::size_t ld, bool trans = false) {
  const auto l = static_cast<std::ptrdiff_t>(ld);
  return trans ? MatrixRef<T>{data, 1, l} : MatrixRef<T>{data, l, 1};
}

template <class T>
struct GemmArgs {
  std::size_t m = 0, n = 0, k = 0;
  T alpha = 1;
  MatrixRef<T> a;  // m x k
  MatrixRef<T> b;  // k x n
  T beta = 0;
  T* c = nullptr;  // m x n, row-major
  std::size_t ldc = 0;
  const T* bias = nullptr;  // n elements or null
};

// With the kernel family in use (dispatch.h), or with a given one (tests).
void gemm(const GemmArgs<float>& args);
void gemm(const GemmArgs<double>& args);
void gemm(const GemmArgs<float>& args, Isa isa);
void gemm(const GemmArgs<double>& args, Isa isa);

template <class T>
class PreparedB;

// Rows up to which gemm() computes A * W^T (A's rows and W's rows
// contiguous) as dot products without packing, with the kernel family in use
// (AVX-512 float32: 4); 0 when it never does.
std::size_t dot_rows(float);
std::size_t dot_rows(double);

// C = alpha * A * W^T + beta * C (+ bias) by the dot kernel (W's rows and A's
// rows contiguous: args.b = W^T with unit row stride), any m: rows in groups of
// dot_rows(), W read once per block of its rows, nothing packed or cached; each
// element the same 16-lane sum as for m <= dot_rows(). False (nothing done)
// when the kernel family or the strides do not allow it.
bool gemm_by_rows(const GemmArgs<float>& args);
bool gemm_by_rows(const GemmArgs<double>& args);

// The width of B's panels (NR) with a kernel family: PreparedB::column_align().
std::size_t column_align(Isa isa, float);
std::size_t column_align(Isa isa, double);

// gemm() with B packed once (a cached weight): args.b is not read; args.k and
// args.n must be those b was prepared with. The same bits as gemm() with that
// B and the same kernel family.
void gemm(const GemmArgs<float>& args, const PreparedB<float>& b);
void gemm(const GemmArgs<double>& args, const PreparedB<double>& b);

// out[j] = sum over the rows i of g(i, j), g (m, n) row-major: each column
// summed over rows in order (bias gradients), columns split over threads in
// runs of whole cache lines: the same bits for every thread count.
void column_sums(std::size_t m, std::size_t n, const float* g, float* out);
void column_sums(std::size_t m, std::size_t n, const double* g, double* out);

// A B operand prepared once and multiplied many times, on the calling thread
// (the recurrent weights: one preparation per sequence, a few multiplies per
// time step and thread). B is k x n; the constructor packs it into the kernel
// family's NR-wide panels, kc-deep slices, as gemm() does.
//
//   multiply: C[:, j0:j1) = alpha * A * B[:, j0:j1) + beta * C[:, j0:j1) (+ bias[j0:j1))
//
// with A (m x k, rows lda apart, unit column stride), C row-major (ldc), and
// j0 a multiple of column_align(). pack_a + multiply_packed split it, so that
// one packed A serves several multiplies. Rows are cut into tiles of balanced
// heights. Each element of C is one FMA chain over k in ascending order per
// kc slice, whatever the column range and row tile, so callers may split
// columns over threads freely and get the same bits.
template <class T>
class PreparedB {
 public:
  // max_m: the most rows any multiply will have.
  PreparedB(const MatrixRef<T>& b, std::size_t k, std::size_t n, std::size_t max_m, Isa isa);
  // B = [left | right] (k x (n_left + n_right)): the columns of left, then
  // those of right, with no copy of either; n_left a multiple of
  // column_align() (or n_right = 0). The same panels as one operand holding
  // both. B of 1 MiB or more is packed over the threads.
  PreparedB(const MatrixRef<T>& left, std::size_t n_left, const MatrixRef<T>& right, std::size_t n_right,
            std::size_t k, std::size_t max_m, Isa isa);
  PreparedB(const PreparedB&) = delete;
  PreparedB& operator=(const PreparedB&) = delete;

  std::size_t column_align() const { return nr_; }
  std::size_t bytes() const { return packed_.capacity(); }
  Isa isa() const { return isa_; }
  const T* panels() const { return packed_.as<T>(); }
  std::size_t padded_columns() const { return (n_ + nr_ - 1) / nr_ * nr_; }
  // Elements of a packed A of up to max_m rows (the scratch of multiply).
  std::size_t scratch_elements() const { return scratch_; }
  // The packed A layout multiply_packed reads, for callers that pack A
  // themselves (a convolution's patches, written straight into panels):
  // slice pc (kb = min(slice_depth(), k - pc) deep) at pc * tiles * row_align()
  // with tiles = ceil(m / row_align()); row tile t at + t * row_align() * kb,
  // holding row_tile_height(m, t) rows (the tiles before it hold the rows
  // above), element (p, i) at [p * row_align() + i].
  std::size_t depth() const { return k_; }
  std::size_t slice_depth() const { return kc_; }
  std::size_t row_align() const { return mr_; }
  std::size_t row_tile_height(std::size_t m, std::size_t tile) const { return tile_rows(m, tile); }
  void pack_a(std::size_t m, const T* a, std::size_t lda, T* packed_a) const;
  void multiply_packed(std::size_t m, const T* packed_a, std::size_t j0, std::size_t j1, T* c, std::size_t ldc,
                       T alpha, T beta, const T* bias) const;
  void multiply(std::size_t m, const T* a, std::size_t lda, std::size_t j0, std::size_t j1, T* c, std::size_t ldc,
                T alpha, T beta, const T* bias, T* scratch) const;

 private:
  std::size_t tile_rows(std::size_t m, std::size_t tile) const;
  std::size_t k_, n_, kc_ = 1, mr_ = 1, nr_ = 1, scratch_ = 0;
  Isa isa_;
  ScratchBuffer packed_;  // panels: slice at pc * round_up(n, nr), panel p of it at + p * nr * kb
};

// An A operand packed once and multiplied by many B operands (the weights
// of a convolution: packed once per weight, kept in the weight cache, and
// shared by every tile and thread). A is m x k; the constructor packs it into
// the kernel family's MR-tall panels, kc-deep slices, as gemm() does.
//
//   multiply: C = alpha * A * B + beta * C (+ bias[j]) (+ row_bias[i]), B k x n
//   (any strides); row_bias (m elements, a convolution's bias) is added last,
//   in the kernels' stores where B is read in place, else in a pass over C.
//
// on the calling thread; scratch holds scratch_elements(n) elements (B's
// packed block; unused when the kernel family reads B's rows in place). Each element of C is the FMA chain gemm() computes: the same
// bits as gemm() with the same kernel family, whatever n or the tiling.
// Where the B operand of PreparedA::multiply comes from, when the kernel
// family reads B in place (its rows contiguous): this sets the loop order.
//  - resident: B was just written and sits in L2 (an im2col tile, Winograd's
//    transformed input): row tile by row tile, each A panel held in L1.
//  - streamed: B is read from memory once (a 1x1 convolution's input
//    planes): panel by panel, the next panel fetched while this one computes.
enum class BSource { resident, streamed };

template <class T>
class PreparedA {
 public:
  PreparedA(const MatrixRef<T>& a, std::size_t m, std::size_t k, Isa isa);
  PreparedA(const PreparedA&) = delete;
  PreparedA& operator=(const PreparedA&) = delete;

  std::size_t rows() const { return m_; }
  std::size_t depth() const { return k_; }
  std::size_t bytes() const { return packed_.capacity(); }
  std::size_t scratch_elements(std::size_t n) const;
  void multiply(std::size_t n, const MatrixRef<T>& b, T* c, std::size_t ldc, T alpha, T beta, const T* bias,
                T* scratch, BSource source = BSource::resident, const T* row_bias = nullptr) const;

 private:
  std::size_t m_, k_, m_pad_ = 0, kc_ = 1, nc_ = 1;
  Isa isa_;
  ScratchBuffer packed_;  // slice pc at pc * m_pad_, panel r of it at + r * mr * kb
};

// A B operand of k x n elements at `data` (read through b) prepared once and
// kept in the weight cache (core/weight_cache.h): reused while those bytes
// compare equal. tag names the use (it keys the entry with k, n, max_m, the
// dtype and the ISA). For weights: linear's W^T, the recurrent W_ih^T / W_hh.
template <class T>
std::shared_ptr<const PreparedB<T>> cached_prepared_b(const MatrixRef<T>& b, std::size_t bytes, std::size_t k,
                                                     std::size_t n, std::size_t max_m, std::uint64_t tag);

}  // namespace nnkern::gemm
