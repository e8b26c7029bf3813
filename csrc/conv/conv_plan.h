// What the convolution algorithm families share (private to csrc/conv/): the
// derived sizes of a convolution (Plan), the geometry of im2col tiles (runs of
// output pixels, tap rows), the task runner, plane padding, and each family's
// entry points, between which conv_op.cpp chooses per shape:
//   conv_gemm.cpp        GEMM over im2col tiles (1x1: the NCHW planes), and the GEMM-based backward
//   conv_pixel_rows.cpp  pixel rows, out^T = patches x W^T (patches packed per tile, or implicit)
//   conv_direct.cpp      few channels at stride 1: direct kernels (direct.h) and image lanes
//   conv_depthwise.cpp   one input channel per group: row kernels (dwconv.h), 3x3 whole planes (dw3x3.h)
//   conv_wgrad_taps.cpp  the weight gradient without im2col (wgrad_taps.h)
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include "conv/conv_op.h"
#include "core/thread_pool.h"
#include "core/workspace.h"

namespace nnkern::ops::detail {

using std::ptrdiff_t;
using std::size_t;

// im2col tiles hold about this many bytes of columns: with the GEMM's packed
// copy of the same tile they stay inside one core's 2 MiB L2.
constexpr size_t kTileBytes = size_t{1} << 20;

inline size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

// Derived sizes of one convolution.
struct Plan {
  const ConvGeometry& g;
  size_t cg, og;      // channels per group in / out
  size_t k;           // GEMM depth: cg * kh * kw
  size_t hw, p;       // input / output pixels per plane
  bool direct_1x1;    // 1x1, stride 1, no padding: the input plane is the column matrix
  explicit Plan(const ConvGeometry& geo)
      : g(geo), cg(geo.c / geo.groups), og(geo.o / geo.groups), k(cg * geo.kh * geo.kw), hw(geo.h * geo.w),
        p(geo.oh * geo.ow),
        direct_1x1(geo.kh == 1 && geo.kw == 1 && geo.sh == 1 && geo.sw == 1 && geo.pt == 0 && geo.pl == 0 &&
                   geo.oh == geo.h && geo.ow == geo.w) {}
};

// A run of output pixels [ox0, ox1) on output row oy of image n, starting at
// column `at` of a tile. Tiles are cut into runs once, so the per-row loops of
// im2col / col2im do no divisions.
struct Run {
  size_t n, oy;
  ptrdiff_t ox0, ox1;
  size_t at;
};

// Run by run, the global output pixels [q0, q1) (q = n * P + pixel).
std::vector<Run> runs_of(const Plan& pl, size_t q0, size_t q1);

// Row r = (c, i, j) of the columns (weight order) reads input row
// oy*sh + i*dh - pt, columns ox*sw + off_x for ox in [lo_x, hi_x).
struct Tap {
  size_t c;
  ptrdiff_t row_off, off_x, lo_x, hi_x;
  Tap(const ConvGeometry& g, size_t r);
};

// Runs task(t, scratch) for t in [0, tasks): split over the pool when there
// are enough tasks to feed every thread (GEMMs inside then run inline), else
// one after the other on this thread, each GEMM threading over its own tiles.
template <class Task>
void run_tasks(size_t tasks, size_t scratch_bytes, const Task& task) {
  if (tasks == 0) return;
  if (tasks >= static_cast<size_t>(get_num_threads())) {
    parallel_for(tasks, [&](size_t first, size_t last) {
      ScratchBuffer scratch = acquire_scratch(scratch_bytes);
      for (size_t t = first; t < last; ++t) task(t, scratch.data());
    });
  } else {
    ScratchBuffer scratch = acquire_scratch(scratch_bytes);
    for (size_t t = 0; t < tasks; ++t) task(t, scratch.data());
  }
}

// dst (ph x pw) = src (h x w) moved down by `top` rows and right by `left`
// columns (negative: cropped), zeros elsewhere.
template <class T>
void pad_plane(const T* src, size_t h, size_t w, ptrdiff_t top, ptrdiff_t left, size_t ph, size_t pw, T* dst) {
  const auto spw = static_cast<ptrdiff_t>(pw);
  const ptrdiff_t c0 = std::clamp<ptrdiff_t>(left, 0, spw);
  const ptrdiff_t c1 = std::clamp<ptrdiff_t>(left + static_cast<ptrdiff_t>(w), c0, spw);
  for (size_t r = 0; r < ph; ++r) {
    T* d = dst + r * pw;
    const ptrdiff_t sr = static_cast<ptrdiff_t>(r) - top;
    if (sr < 0 || sr >= static_cast<ptrdiff_t>(h)) {
      std::fill_n(d, pw, T(0));
      continue;
    }
    std::fill(d, d + c0, T(0));
    std::memcpy(d + c0, src + static_cast<size_t>(sr) * w + (c0 - left), static_cast<size_t>(c1 - c0) * sizeof(T));
    std::fill(d + c1, d + pw, T(0));
  }
}

// The padded input extent a depthwise conv reads.
struct DwPadded {
  size_t ph, pw;
  explicit DwPadded(const ConvGeometry& g)
      : ph((g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1), pw((g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1) {}
};

// ---- each family's entry points (the templates instantiated for float and
// double in their files; the float-only functions are AVX-512 kernels)

// conv_gemm.cpp
template <class T>
void conv2d_gemm(const Plan& pl, const T* x, const T* w, const T* bias, const T* residual, bool relu, T* out);
template <class T>
void grad_weight_typed(const Plan& pl, const T* go, const T* x, T* gw);
template <class T>
void grad_input_typed(const Plan& pl, const T* go, const T* w, T* gx);

// conv_pixel_rows.cpp (the predicates are false for double)
template <class T>
bool pixel_rows_form_applies(const Plan& pl);
template <class T>
bool pixel_rows_applies(const Plan& pl);
bool pixel_rows_implicit_shape(const Plan& pl);
bool pixel_rows_implicit_applies(const Plan& pl);
void conv2d_pixel_rows(const Plan& pl, const float* x, const float* w, const float* bias, const float* residual,
                       bool relu, float* out);
void conv2d_pixel_rows_implicit(const Plan& pl, const float* x, const float* w, const float* bias,
                                const float* residual, bool relu, float* out);

// conv_direct.cpp
bool direct_applies(const Plan& pl);
bool direct_grad_weight_applies(const Plan& pl);
bool direct_grad_input_applies(const Plan& pl);
void direct_forward(const Plan& pl, const float* x, const float* w, const float* bias, const float* residual,
                    bool relu, float* out);
void direct_grad_input(const Plan& pl, const float* go, const float* w, float* gx);
void direct_grad_weight(const Plan& pl, const float* go, const float* x, float* gw);
bool lanes_applies(const Plan& pl);
bool lanes_grad_input_applies(const Plan& pl);
void lanes_forward(const Plan& pl, const float* x, const float* w, const float* bias, const float* residual,
                   bool relu, float* out);
void lanes_grad_input(const Plan& pl, const float* go, const float* w, float* gx);

// conv_depthwise.cpp
template <class T>
void dwconv_forward(const Plan& pl, const T* x, const T* w, const T* bias, const T* residual, bool relu, T* out);
template <class T>
void dwconv_grad_input(const Plan& pl, const T* go, const T* w, T* gx);
template <class T>
void dwconv_grad_weight(const Plan& pl, const T* go, const T* x, T* gw);
bool dw3x3_applies(const Plan& pl);
template <class T>
void dw3x3_forward(const Plan& pl, const T* x, const T* w, const T* bias, const T* residual, bool relu, T* out);
template <class T>
void dw3x3_backward(const Plan& pl, const T* go, const T* x, const T* w, T* gx, T* gw, T* gb);

// conv_wgrad_taps.cpp
bool taps_grad_weight_applies(const Plan& pl);
void taps_grad_weight(const Plan& pl, const float* go, const float* x, float* gw);

}  // namespace nnkern::ops::detail
