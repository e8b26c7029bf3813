#include "pool/pool_op.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__linux__)
#include <sched.h>
#endif
#include <atomic>

#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "pool/pool_rows.h"

namespace nnkern::ops {
namespace {

using namespace nnkern::pool;
using std::int64_t;

struct PoolRowsConfig {
  PerIsa<F32MaxpoolRowFn> maxpool;
  PerIsa<F32AvgpoolRowFn> avgpool;
  PerIsa<F32GavgpoolFn> gavgpool;
  PerIsa<F32MaxpoolBackwardFn> maxpool_backward;
};

const PoolRowsConfig kPoolRows = {
    {f32_maxpool_row_scalar, NNKERN_X86_ONLY(f32_maxpool_row_avx2), NNKERN_X86_ONLY(f32_maxpool_row_avx512)},
    {f32_avgpool_row_scalar, NNKERN_X86_ONLY(f32_avgpool_row_avx2), NNKERN_X86_ONLY(f32_avgpool_row_avx512)},
    {f32_gavgpool_scalar, NNKERN_X86_ONLY(f32_gavgpool_avx2), NNKERN_X86_ONLY(f32_gavgpool_avx512)},
    {f32_maxpool_backward_scalar, NNKERN_X86_ONLY(f32_maxpool_backward_avx2),
     NNKERN_X86_ONLY(f32_maxpool_backward_avx512)},
};

struct Dims {
  int64_t planes, h, w, oh, ow;
};

Dims dims_of(const ArrayView& in, const ArrayView& out) {
  return {in.shape[0] * in.shape[1], in.shape[2], in.shape[3], out.shape[2], out.shape[3]};
}

// Output columns [lo, hi) whose windows lie inside [0, w) horizontally.
std::pair<int64_t, int64_t> interior_cols(int64_t w, int64_t ow, int64_t k, int64_t s, int64_t p, int64_t d) {
  const int64_t lo = std::min((p + s - 1) / s, ow);
  const int64_t last = w - 1 + p - (k - 1) * d;  // largest window origin (+p) that fits
  const int64_t hi = last < 0 ? 0 : std::min(last / s + 1, ow);
  return {lo, std::max(lo, hi)};
}

// ---------------------------------------------------------------------------------------- max

// One output cell, PyTorch's scan (see numpy_ref/pool.py).
template <class T>
void max_cell(const T* x, const Dims& d, const Pool2dParams& p, int64_t oy, int64_t ox, T* out, int64_t* idx) {
  int64_t y0 = oy * p.sh - p.ph;
  int64_t x0 = ox * p.sw - p.pw;
  const int64_t y1 = std::min(y0 + (p.kh - 1) * p.dh + 1, d.h);
  const int64_t x1 = std::min(x0 + (p.kw - 1) * p.dw + 1, d.w);
  while (y0 < 0) y0 += p.dh;
  while (x0 < 0) x0 += p.dw;
  T best = -std::numeric_limits<T>::infinity();
  int64_t where = y0 * d.w + x0;
  for (int64_t y = y0; y < y1; y += p.dh) {
    for (int64_t xx = x0; xx < x1; xx += p.dw) {
      const T v = x[y * d.w + xx];
      if (v > best || std::isnan(v)) {
        best = v;
        where = y * d.w + xx;
      }
    }
  }
  *out = best;
  if (idx != nullptr) *idx = where;
}

// One border output of a float row whose window rows are known (rows/base as
// for the row kernels): max_cell's scan over the in-range columns, without
// its per-cell row arithmetic.
void max_border_cell(std::size_t nrows, const float* const* rows, const std::int32_t* base, int64_t w,
                     const Pool2dParams& p, int64_t ox, float* out, int64_t* idx) {
  int64_t x0 = ox * p.sw - p.pw;
  const int64_t x1 = std::min(x0 + (p.kw - 1) * p.dw + 1, w);
  while (x0 < 0) x0 += p.dw;
  float best = -std::numeric_limits<float>::infinity();
  int64_t where = base[0] + x0;
  for (std::size_t r = 0; r < nrows; ++r) {
    for (int64_t xx = x0; xx < x1; xx += p.dw) {
      const float v = rows[r][xx];
      if (v > best || std::isnan(v)) {
        best = v;
        where = base[r] + xx;
      }
    }
  }
  *out = best;
  if (idx != nullptr) *idx = where;
}

// rows / base: kh entries each, the caller's scratch (reused over its planes).
template <class T>
void max_plane(const T* x, const Dims& d, const Pool2dParams& p, T* out, int64_t* idx, const float** rows,
               std::int32_t* base) {
  bool rows_fast = false;
  std::pair<int64_t, int64_t> cols{0, 0};
  F32MaxpoolRowFn row_kernel = nullptr;
  if constexpr (std::is_same_v<T, float>) {
    rows_fast = (p.sw == 1 || p.sw == 2) && d.h * d.w <= std::numeric_limits<std::int32_t>::max();
    if (rows_fast) {
      cols = interior_cols(d.w, d.ow, p.kw, p.sw, p.pw, p.dw);
      row_kernel = kPoolRows.maxpool.active();
    }
  }
  for (int64_t oy = 0; oy < d.oh; ++oy) {
    T* orow = out + oy * d.ow;
    int64_t* irow = idx == nullptr ? nullptr : idx + oy * d.ow;
    int64_t lo = 0, hi = 0;
    if constexpr (std::is_same_v<T, float>) {
      if (rows_fast) {
        std::size_t nrows = 0;
        for (int64_t i = 0; i < p.kh; ++i) {
          const int64_t y = oy * p.sh - p.ph + i * p.dh;
          if (y < 0 || y >= d.h) continue;
          rows[nrows] = x + y * d.w;
          base[nrows] = static_cast<std::int32_t>(y * d.w);
          ++nrows;
        }
        if (nrows != 0 && cols.second > cols.first) {
          lo = cols.first;
          hi = cols.second;
          row_kernel(nrows, rows, base, p.kw, p.sw, p.dw, hi - lo, lo * p.sw - p.pw, orow + lo,
                     irow == nullptr ? nullptr : irow + lo);
          for (int64_t ox = 0; ox < lo; ++ox) {
            max_border_cell(nrows, rows, base, d.w, p, ox, orow + ox, irow == nullptr ? nullptr : irow + ox);
          }
          for (int64_t ox = hi; ox < d.ow; ++ox) {
            max_border_cell(nrows, rows, base, d.w, p, ox, orow + ox, irow == nullptr ? nullptr : irow + ox);
          }
          continue;
        }
      }
    }
    for (int64_t ox = 0; ox < lo; ++ox) max_cell(x, d, p, oy, ox, orow + ox, irow == nullptr ? nullptr : irow + ox);
    for (int64_t ox = hi; ox < d.ow; ++ox) max_cell(x, d, p, oy, ox, orow + ox, irow == nullptr ? nullptr : irow + ox);
  }
}

template <class T>
void max_pool_typed(const ArrayView& xv, const Pool2dParams& p, const ArrayView& ov, int64_t* indices) {
  const Dims d = dims_of(xv, ov);
  const T* x = xv.as<T>();
  T* out = ov.as<T>();
  const int64_t in_plane = d.h * d.w, out_plane = d.oh * d.ow;
  if (out_plane == 0) return;
  parallel_for(static_cast<std::size_t>(d.planes), [&](std::size_t b, std::size_t e) {
    std::vector<const float*> rows(static_cast<std::size_t>(p.kh));
    std::vector<std::int32_t> base(rows.size());
    for (std::size_t q = b; q < e; ++q) {
      max_plane<T>(x + q * in_plane, d, p, out + q * out_plane, indices == nullptr ? nullptr : indices + q * out_plane,
                   rows.data(), base.data());
    }
  });
}

// A grad_input of at least kStreamBytes is written with non-temporal stores
// (as batch norm's large outputs, norm/batch_norm_op.cpp): each plane is
// built in a scratch plane that stays in L2, then streamed out. The forward's
// input, output and indices and grad_output (about twice grad_input's bytes
// for 3x3 stride 2) then stay in the last-level cache instead of being
// evicted by grad_input's lines, which the backward never reads back.
constexpr std::size_t kStreamBytes = std::size_t{4} << 20;
// planes larger than this are built in place (a scratch plane would not stay in L2)
constexpr std::size_t kStreamPlaneBytes = std::size_t{1} << 20;

// dst[0, n) = src[0, n) with non-temporal stores where the target has them;
// the caller fences (store_fence) before the data is published.
template <class T>
void copy_streaming(const T* src, T* dst, std::size_t n) {
#if defined(__SSE2__)
  std::size_t i = 0;
  for (; i < n && (reinterpret_cast<std::uintptr_t>(dst + i) & 15) != 0; ++i) dst[i] = src[i];
  constexpr std::size_t kPer = 16 / sizeof(T);
  for (; i + kPer <= n; i += kPer) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
  }
  for (; i < n; ++i) dst[i] = src[i];
#else
  std::copy_n(src, n, dst);
#endif
}

// Orders this thread's non-temporal stores before its later stores (the pool's completion flag).
inline void store_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

template <class T>
void max_backward_typed(const ArrayView& gv, const int64_t* indices, const ArrayView& giv) {
  const Dims d = dims_of(giv, gv);
  const T* g = gv.as<T>();
  T* gi = giv.as<T>();
  const int64_t in_plane = d.h * d.w, out_plane = d.oh * d.ow;
  const auto plane_bytes = static_cast<std::size_t>(in_plane) * sizeof(T);
  const bool stream = plane_bytes <= kStreamPlaneBytes && plane_bytes * static_cast<std::size_t>(d.planes) >= kStreamBytes;
  // each task owns whole planes: the scatter-add needs no atomics and its order is fixed
  if constexpr (std::is_same_v<T, float>) {
    const F32MaxpoolBackwardFn plane_fn = kPoolRows.maxpool_backward.active();
    parallel_for(static_cast<std::size_t>(d.planes), [&](std::size_t b, std::size_t e) {
      std::vector<float> scratch(stream ? static_cast<std::size_t>(in_plane) : 0);
      for (std::size_t q = b; q < e; ++q) {
        float* plane = gi + q * in_plane;
        plane_fn(g + q * out_plane, indices + q * out_plane, static_cast<std::size_t>(out_plane),
                 static_cast<std::size_t>(in_plane), stream ? scratch.data() : plane, stream ? plane : nullptr);
      }
      if (stream) store_fence();
    });
    return;
  }
  parallel_for(static_cast<std::size_t>(d.planes), [&](std::size_t b, std::size_t e) {
    std::vector<T> scratch(stream ? static_cast<std::size_t>(in_plane) : 0);
    for (std::size_t q = b; q < e; ++q) {
      T* dst = stream ? scratch.data() : gi + q * in_plane;
      std::fill_n(dst, in_plane, T(0));
      const T* src = g + q * out_plane;
      const int64_t* ix = indices + q * out_plane;
      for (int64_t k = 0; k < out_plane; ++k) {
        const int64_t i = ix[k];
        // an index outside the plane comes only from a window with no input element in it
        if (static_cast<std::uint64_t>(i) < static_cast<std::uint64_t>(in_plane)) dst[i] += src[k];
      }
      if (stream) copy_streaming(dst, gi + q * in_plane, static_cast<std::size_t>(in_plane));
    }
    if (stream) store_fence();
  });
}

// ---------------------------------------------------------------------------------------- avg

// Divisor of output cell o along one axis (numpy_ref/pool.py _avg_divisor).
int64_t avg_divisor(int64_t o, int64_t size, int64_t k, int64_t s, int64_t p, bool include_pad) {
  const int64_t start = o * s - p;
  const int64_t end = std::min(start + k, size + p);
  if (include_pad) return end - start;
  return std::max<int64_t>(std::min(end, size) - std::max<int64_t>(start, 0), 1);
}

template <class T>
void avg_cell(const T* x, const Dims& d, const Pool2dParams& p, int64_t oy, int64_t ox, T divisor, T* out) {
  const int64_t y0 = std::max<int64_t>(oy * p.sh - p.ph, 0), y1 = std::min(oy * p.sh - p.ph + p.kh, d.h);
  const int64_t x0 = std::max<int64_t>(ox * p.sw - p.pw, 0), x1 = std::min(ox * p.sw - p.pw + p.kw, d.w);
  T sum = 0;
  for (int64_t y = y0; y < y1; ++y) {
    for (int64_t xx = x0; xx < x1; ++xx) sum += x[y * d.w + xx];
  }
  *out = sum / divisor;
}

template <class T>
void avg_pool_typed(const ArrayView& xv, const Pool2dParams& p, bool include_pad, const ArrayView& ov) {
  const Dims d = dims_of(xv, ov);
  const T* x = xv.as<T>();
  T* out = ov.as<T>();
  const int64_t in_plane = d.h * d.w, out_plane = d.oh * d.ow;
  if (out_plane == 0) return;
  std::vector<int64_t> div_y(d.oh), div_x(d.ow);
  for (int64_t o = 0; o < d.oh; ++o) div_y[o] = avg_divisor(o, d.h, p.kh, p.sh, p.ph, include_pad);
  for (int64_t o = 0; o < d.ow; ++o) div_x[o] = avg_divisor(o, d.w, p.kw, p.sw, p.pw, include_pad);
  const bool rows_fast = std::is_same_v<T, float> && (p.sw == 1 || p.sw == 2);
  const auto cols = interior_cols(d.w, d.ow, p.kw, p.sw, p.pw, 1);
  // output rows whose windows lie inside the input vertically: one row-kernel call per plane
  const auto inner = interior_cols(d.h, d.oh, p.kh, p.sh, p.ph, 1);
  const F32AvgpoolRowFn row_kernel = kPoolRows.avgpool.active();
  parallel_for(static_cast<std::size_t>(d.planes), [&](std::size_t b, std::size_t e) {
    std::vector<const float*> rows(static_cast<std::size_t>(p.kh));
    for (std::size_t q = b; q < e; ++q) {
      const T* xp = x + q * in_plane;
      T* op = out + q * out_plane;
      const auto border_cells = [&](int64_t oy, int64_t lo, int64_t hi) {
        T* orow = op + oy * d.ow;
        for (int64_t ox = 0; ox < lo; ++ox) avg_cell(xp, d, p, oy, ox, static_cast<T>(div_y[oy] * div_x[ox]), orow + ox);
        for (int64_t ox = hi; ox < d.ow; ++ox) avg_cell(xp, d, p, oy, ox, static_cast<T>(div_y[oy] * div_x[ox]), orow + ox);
      };
      // one row (count 1), or the block [oy, oy + count) of inner rows
      const auto kernel_rows = [&](int64_t oy, int64_t count) {
        int64_t lo = 0, hi = 0;
        if constexpr (std::is_same_v<T, float>) {
          if (rows_fast && cols.second > cols.first) {
            std::size_t nrows = 0;
            for (int64_t i = 0; i < p.kh; ++i) {
              const int64_t y = oy * p.sh - p.ph + i;
              if (y >= 0 && y < d.h) rows[nrows++] = xp + y * d.w;
            }
            if (nrows != 0) {
              // inside horizontally, every x divisor is kw
              lo = cols.first;
              hi = cols.second;
              row_kernel(nrows, rows.data(), p.kw, p.sw, hi - lo, lo * p.sw - p.pw,
                         static_cast<float>(div_y[oy] * p.kw), op + oy * d.ow + lo, static_cast<std::size_t>(count),
                         p.sh * d.w, d.ow);
            }
          }
        }
        for (int64_t r = 0; r < count; ++r) border_cells(oy + r, lo, hi);
      };
      for (int64_t oy = 0; oy < inner.first; ++oy) kernel_rows(oy, 1);
      if (inner.second > inner.first) kernel_rows(inner.first, inner.second - inner.first);
      for (int64_t oy = std::max(inner.first, inner.second); oy < d.oh; ++oy) kernel_rows(oy, 1);
    }
  });
}

template <class T>
void avg_backward_typed(const ArrayView& gv, const Pool2dParams& p, bool include_pad, const ArrayView& giv) {
  const Dims d = dims_of(giv, gv);
  const T* g = gv.as<T>();
  T* gi = giv.as<T>();
  const int64_t in_plane = d.h * d.w, out_plane = d.oh * d.ow;
  std::vector<int64_t> div_y(d.oh), div_x(d.ow);
  for (int64_t o = 0; o < d.oh; ++o) div_y[o] = avg_divisor(o, d.h, p.kh, p.sh, p.ph, include_pad);
  for (int64_t o = 0; o < d.ow; ++o) div_x[o] = avg_divisor(o, d.w, p.kw, p.sw, p.pw, include_pad);
  parallel_for(static_cast<std::size_t>(d.planes), [&](std::size_t b, std::size_t e) {
    for (std::size_t q = b; q < e; ++q) {
      T* dst = gi + q * in_plane;
      std::fill_n(dst, in_plane, T(0));
      const T* src = g + q * out_plane;
      for (int64_t oy = 0; oy < d.oh; ++oy) {
        const int64_t y0 = std::max<int64_t>(oy * p.sh - p.ph, 0), y1 = std::min(oy * p.sh - p.ph + p.kh, d.h);
        for (int64_t ox = 0; ox < d.ow; ++ox) {
          const int64_t x0 = std::max<int64_t>(ox * p.sw - p.pw, 0), x1 = std::min(ox * p.sw - p.pw + p.kw, d.w);
          const T v = src[oy * d.ow + ox] / static_cast<T>(div_y[oy] * div_x[ox]);
          for (int64_t y = y0; y < y1; ++y) {
            for (int64_t xx = x0; xx < x1; ++xx) dst[y * d.w + xx] += v;
          }
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------- adaptive

// Bin [start, end) of output cell i (nnkern/_shapes.adaptive_bounds).
std::pair<int64_t, int64_t> bin(int64_t i, int64_t size, int64_t out) {
  return {(i * size) / out, ((i + 1) * size + out - 1) / out};
}

template <class T>
void adaptive_typed(const ArrayView& xv, const ArrayView& ov) {
  const Dims d = dims_of(xv, ov);
  const T* x = xv.as<T>();
  T* out = ov.as<T>();
  const int64_t in_plane = d.h * d.w, out_plane = d.oh * d.ow;
  if (out_plane == 0 || d.planes == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (d.oh == 1 && d.ow == 1) {
      // global average: planes are contiguous runs, summed in blocks of planes
      const F32GavgpoolFn kernel = kPoolRows.gavgpool.active();
      const float inv = 1.0f / static_cast<float>(in_plane);
      const auto planes = static_cast<std::size_t>(d.planes);
      const std::size_t parts = std::min<std::size_t>(static_cast<std::size_t>(get_num_threads()), planes);
      if (parts < 2 || parts > 64) {
        parallel_for(planes, [&](std::size_t b, std::size_t e) {
          kernel(e - b, static_cast<std::size_t>(in_plane), x + b * in_plane, inv, out + b);
        });
        return;
      }
      // One part of the planes per thread, each thread taking its CPU's part (cpu % parts) when
      // free: called again on the same input (and a part fits a core's L2), a part is summed
      // where its data already is, whichever pool thread the OS has put on that CPU meanwhile.
      // Every plane's sum is the same whoever computes it, so the bits do not change.
      std::atomic<std::uint64_t> taken{0};
      parallel_for(parts, [&](std::size_t b, std::size_t e) {
        for (std::size_t t = b; t < e; ++t) {
          std::size_t want = t;
#if defined(__linux__)
          const int cpu = sched_getcpu();
          if (cpu >= 0) want = static_cast<std::size_t>(cpu) % parts;
#endif
          // `parts` tasks claim `parts` parts: a free one always exists
          std::uint64_t seen = taken.load(std::memory_order_relaxed);
          std::size_t part = want;
          for (;;) {
            part = want;
            while (((seen >> part) & 1u) != 0) part = (part + 1) % parts;
            if (taken.compare_exchange_weak(seen, seen | (std::uint64_t{1} << part), std::memory_order_relaxed)) break;
          }
          const auto [pb, pe] = chunk_range(planes, parts, part);
          kernel(pe - pb, static_cast<std::size_t>(in_plane), x + pb * in_plane, inv, out + pb);
        }
      });
      return;
    }
  }
  parallel_for(static_cast<std::size_t>(d.planes), [&](std::size_t b, std::size_t e) {
    for (std::size_t q = b; q < e; ++q) {
      const T* xp = x + q * in_plane;
      T* op = out + q * out_plane;
      for (int64_t oy = 0; oy < d.oh; ++oy) {
        const auto [y0, y1] = bin(oy, d.h, d.oh);
        for (int64_t ox = 0; ox < d.ow; ++ox) {
          const auto [x0, x1] = bin(ox, d.w, d.ow);
          T sum = 0;
          for (int64_t y = y0; y < y1; ++y) {
            for (int64_t xx = x0; xx < x1; ++xx) sum += xp[y * d.w + xx];
          }
          op[oy * d.ow + ox] = sum / static_cast<T>((y1 - y0) * (x1 - x0));
        }
      }
    }
  });
}

template <class T>
void adaptive_backward_typed(const ArrayView& gv, const ArrayView& giv) {
  const Dims d = dims_of(giv, gv);
  const T* g = gv.as<T>();
  T* gi = giv.as<T>();
  const int64_t in_plane = d.h * d.w, out_plane = d.oh * d.ow;
  parallel_for(static_cast<std::size_t>(d.planes), [&](std::size_t b, std::size_t e) {
    for (std::size_t q = b; q < e; ++q) {
      T* dst = gi + q * in_plane;
      const T* src = g + q * out_plane;
      if (d.oh == 1 && d.ow == 1) {
        std::fill_n(dst, in_plane, src[0] / static_cast<T>(in_plane));
        continue;
      }
      std::fill_n(dst, in_plane, T(0));
      for (int64_t oy = 0; oy < d.oh; ++oy) {
        const auto [y0, y1] = bin(oy, d.h, d.oh);
        for (int64_t ox = 0; ox < d.ow; ++ox) {
          const auto [x0, x1] = bin(ox, d.w, d.ow);
          const T v = src[oy * d.ow + ox] / static_cast<T>((y1 - y0) * (x1 - x0));
          for (int64_t y = y0; y < y1; ++y) {
            for (int64_t xx = x0; xx < x1; ++xx) dst[y * d.w + xx] += v;
          }
        }
      }
    }
  });
}

}  // namespace

void max_pool2d(const ArrayView& x, const Pool2dParams& p, const ArrayView& out, int64_t* indices) {
  if (x.dtype == Dtype::f32) {
    max_pool_typed<float>(x, p, out, indices);
  } else {
    max_pool_typed<double>(x, p, out, indices);
  }
}

void max_pool2d_backward(const ArrayView& grad_output, const int64_t* indices, const ArrayView& grad_input) {
  if (grad_output.dtype == Dtype::f32) {
    max_backward_typed<float>(grad_output, indices, grad_input);
  } else {
    max_backward_typed<double>(grad_output, indices, grad_input);
  }
}

void avg_pool2d(const ArrayView& x, const Pool2dParams& p, bool count_include_pad, const ArrayView& out) {
  if (x.dtype == Dtype::f32) {
    avg_pool_typed<float>(x, p, count_include_pad, out);
  } else {
    avg_pool_typed<double>(x, p, count_include_pad, out);
  }
}

void avg_pool2d_backward(const ArrayView& grad_output, const Pool2dParams& p, bool count_include_pad,
                         const ArrayView& grad_input) {
  if (grad_output.dtype == Dtype::f32) {
    avg_backward_typed<float>(grad_output, p, count_include_pad, grad_input);
  } else {
    avg_backward_typed<double>(grad_output, p, count_include_pad, grad_input);
  }
}

void adaptive_avg_pool2d(const ArrayView& x, const ArrayView& out) {
  if (x.dtype == Dtype::f32) {
    adaptive_typed<float>(x, out);
  } else {
    adaptive_typed<double>(x, out);
  }
}

void adaptive_avg_pool2d_backward(const ArrayView& grad_output, const ArrayView& grad_input) {
  if (grad_output.dtype == Dtype::f32) {
    adaptive_backward_typed<float>(grad_output, grad_input);
  } else {
    adaptive_backward_typed<double>(grad_output, grad_input);
  }
}

}  // namespace nnkern::ops
