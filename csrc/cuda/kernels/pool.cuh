// 2-D max, average and adaptive-average pooling over NCHW planes, forward and
// backward. Forwards: one thread per output cell. Backwards gather instead of
// scatter: one thread per input cell sums the output cells whose windows hold
// it (no atomics, the same bits on every run).
#pragma once

#include <cstdint>

#include "cuda/kernels/common.cuh"

namespace nnk {

using i64 = std::int64_t;

struct PoolGeom {
  i64 h, w, oh, ow;
  int kh, kw, sh, sw, ph, pw, dh, dw;
};

// The first window position at or after `start` that lands inside the input
// (PyTorch's `while (ih0 < 0) ih0 += dilation`).
NNK_DEVICE i64 first_inside(i64 start, int d) { return start >= 0 ? start : start + d * ((-start + d - 1) / d); }

// PyTorch's CPU scan: row-major taps from max = -inf at the window's first
// in-bounds element; an element replaces the max when val > max or it is NaN.
template <class T>
NNK_GLOBAL void max_pool_kernel(const T* x, T* y, i64* indices, i64 planes, PoolGeom g) {
  const i64 total = planes * g.oh * g.ow;
  for (i64 k = global_thread(); k < total; k += grid_threads()) {
    const i64 ox = k % g.ow, oy = (k / g.ow) % g.oh, plane = k / (g.ow * g.oh);
    const T* xp = x + plane * g.h * g.w;
    const i64 h0 = oy * g.sh - g.ph, w0 = ox * g.sw - g.pw;
    T best = -INFINITY;
    i64 at = first_inside(h0, g.dh) * g.w + first_inside(w0, g.dw);
    for (int i = 0; i < g.kh; ++i) {
      const i64 ih = h0 + i64(i) * g.dh;
      if (ih < 0 || ih >= g.h) continue;
      for (int j = 0; j < g.kw; ++j) {
        const i64 iw = w0 + i64(j) * g.dw;
        if (iw < 0 || iw >= g.w) continue;
        const T v = xp[ih * g.w + iw];
        if (v > best || isnan_(v)) {
          best = v;
          at = ih * g.w + iw;
        }
      }
    }
    y[k] = best;
    indices[k] = at;
  }
}

template <class T>
NNK_GLOBAL void max_pool_backward_kernel(const T* g, const i64* indices, T* gx, i64 planes, PoolGeom geo) {
  const i64 total = planes * geo.h * geo.w;
  for (i64 k = global_thread(); k < total; k += grid_threads()) {
    const i64 iw = k % geo.w, ih = (k / geo.w) % geo.h, plane = k / (geo.w * geo.h);
    const i64 self = ih * geo.w + iw;
    const i64 base = plane * geo.oh * geo.ow;
    T sum = T(0);
    windows_holding(ih, geo.oh, geo.kh, geo.sh, geo.ph, geo.dh, [&](i64 oy, int) {
      windows_holding(iw, geo.ow, geo.kw, geo.sw, geo.pw, geo.dw, [&](i64 ox, int) {
        const i64 o = base + oy * geo.ow + ox;
        if (indices[o] == self) sum += g[o];
      });
    });
    gx[k] = sum;
  }
}

// PyTorch's divisor along one axis: the window cut at the padded border, or
// (without count_include_pad) its part inside the input, at least 1.
NNK_DEVICE i64 avg_extent(i64 o, i64 size, int k, int s, int p, bool include_pad) {
  const i64 start = o * s - p;
  const i64 end = start + k < size + p ? start + k : size + p;
  if (include_pad) return end - start;
  const i64 n = (end < size ? end : size) - (start > 0 ? start : 0);
  return n > 1 ? n : 1;
}

template <class T>
NNK_GLOBAL void avg_pool_kernel(const T* x, T* y, i64 planes, PoolGeom g, bool include_pad) {
  const i64 total = planes * g.oh * g.ow;
  for (i64 k = global_thread(); k < total; k += grid_threads()) {
    const i64 ox = k % g.ow, oy = (k / g.ow) % g.oh, plane = k / (g.ow * g.oh);
    const T* xp = x + plane * g.h * g.w;
    const i64 h0 = oy * g.sh - g.ph, w0 = ox * g.sw - g.pw;
    T sum = T(0);
    for (int i = 0; i < g.kh; ++i) {
      const i64 ih = h0 + i;
      if (ih < 0 || ih >= g.h) continue;
      for (int j = 0; j < g.kw; ++j) {
        const i64 iw = w0 + j;
        if (iw >= 0 && iw < g.w) sum += xp[ih * g.w + iw];
      }
    }
    y[k] = sum / T(avg_extent(oy, g.h, g.kh, g.sh, g.ph, include_pad) *
                   avg_extent(ox, g.w, g.kw, g.sw, g.pw, include_pad));
  }
}

template <class T>
NNK_GLOBAL void avg_pool_backward_kernel(const T* g, T* gx, i64 planes, PoolGeom geo, bool include_pad) {
  const i64 total = planes * geo.h * geo.w;
  for (i64 k = global_thread(); k < total; k += grid_threads()) {
    const i64 iw = k % geo.w, ih = (k / geo.w) % geo.h, plane = k / (geo.w * geo.h);
    const i64 base = plane * geo.oh * geo.ow;
    T sum = T(0);
    windows_holding(ih, geo.oh, geo.kh, geo.sh, geo.ph, 1, [&](i64 oy, int) {
      windows_holding(iw, geo.ow, geo.kw, geo.sw, geo.pw, 1, [&](i64 ox, int) {
        const T div = T(avg_extent(oy, geo.h, geo.kh, geo.sh, geo.ph, include_pad) *
                        avg_extent(ox, geo.w, geo.kw, geo.sw, geo.pw, include_pad));
        sum += g[base + oy * geo.ow + ox] / div;
      });
    });
    gx[k] = sum;
  }
}

// Adaptive bins: [floor(i * size / out), ceil((i + 1) * size / out)).
NNK_DEVICE i64 bin_start(i64 i, i64 size, i64 out) { return i * size / out; }
NNK_DEVICE i64 bin_end(i64 i, i64 size, i64 out) { return ((i + 1) * size + out - 1) / out; }

template <class T>
NNK_GLOBAL void adaptive_avg_pool_kernel(const T* x, T* y, i64 planes, i64 h, i64 w, i64 oh, i64 ow) {
  const i64 total = planes * oh * ow;
  for (i64 k = global_thread(); k < total; k += grid_threads()) {
    const i64 ox = k % ow, oy = (k / ow) % oh, plane = k / (ow * oh);
    const T* xp = x + plane * h * w;
    const i64 hs = bin_start(oy, h, oh), he = bin_end(oy, h, oh);
    const i64 ws = bin_start(ox, w, ow), we = bin_end(ox, w, ow);
    T sum = T(0);
    for (i64 ih = hs; ih < he; ++ih)
      for (i64 iw = ws; iw < we; ++iw) sum += xp[ih * w + iw];
    y[k] = sum / T((he - hs) * (we - ws));
  }
}

template <class T>
NNK_GLOBAL void adaptive_avg_pool_backward_kernel(const T* g, T* gx, i64 planes, i64 h, i64 w, i64 oh, i64 ow) {
  const i64 total = planes * h * w;
  for (i64 k = global_thread(); k < total; k += grid_threads()) {
    const i64 iw = k % w, ih = (k / w) % h, plane = k / (w * h);
    const T* gp = g + plane * oh * ow;
    // the bins holding ih (bin_start <= ih < bin_end) are a run from floor(ih * oh / h), the first
    // bin ending past ih, to the last one starting at or before it (both bounds grow with the bin)
    T sum = T(0);
    for (i64 oy = ih * oh / h; oy < oh && bin_start(oy, h, oh) <= ih; ++oy) {
      for (i64 ox = iw * ow / w; ox < ow && bin_start(ox, w, ow) <= iw; ++ox) {
        sum += gp[oy * ow + ox] / T((bin_end(oy, h, oh) - bin_start(oy, h, oh)) *
                                     (bin_end(ox, w, ow) - bin_start(ox, w, ow)));
      }
    }
    gx[k] = sum;
  }
}

}  // namespace nnk
