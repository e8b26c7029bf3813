// One input channel per group (depthwise convs, channel multipliers): direct
// row kernels (dwconv.h) for any shape, and whole-plane kernels (dw3x3.h) for
// 3x3 at stride 1 and dilation 1, whose backward is one pass per plane.
#include <algorithm>
#include <vector>

#include "conv/conv_plan.h"
#include "conv/dw3x3.h"
#include "conv/dwconv.h"
#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "core/workspace.h"

namespace nnkern::ops::detail {

// ---- one input channel per group (depthwise, channel multipliers): direct kernels

namespace {

struct DwconvConfig {
  PerIsa<conv::DwconvRowFn<float>> f32_row;
  PerIsa<conv::DwconvWgradRowFn<float>> f32_wgrad;
};

const DwconvConfig kDwconv = {
    {conv::f32_dwconv_row_scalar, NNKERN_X86_ONLY(conv::f32_dwconv_row_avx2),
     NNKERN_X86_ONLY(conv::f32_dwconv_row_avx512)},
    {conv::f32_dwconv_wgrad_row_scalar, NNKERN_X86_ONLY(conv::f32_dwconv_wgrad_row_avx2),
     NNKERN_X86_ONLY(conv::f32_dwconv_wgrad_row_avx512)},
};

struct Dw3x3Config {
  PerIsa<conv::Dw3x3PlaneFn<float>> f32_plane;
  PerIsa<conv::Dw3x3WgradPlaneFn<float>> f32_wgrad;
};

const Dw3x3Config kDw3x3 = {
    {conv::f32_dw3x3_plane_scalar, NNKERN_X86_ONLY(conv::f32_dw3x3_plane_avx2),
     NNKERN_X86_ONLY(conv::f32_dw3x3_plane_avx512)},
    {conv::f32_dw3x3_wgrad_plane_scalar, NNKERN_X86_ONLY(conv::f32_dw3x3_wgrad_plane_avx2),
     NNKERN_X86_ONLY(conv::f32_dw3x3_wgrad_plane_avx512)},
};

conv::Dw3x3PlaneFn<float> dw3x3_plane(float) { return kDw3x3.f32_plane.active(); }
conv::Dw3x3PlaneFn<double> dw3x3_plane(double) { return conv::f64_dw3x3_plane_scalar; }
conv::Dw3x3WgradPlaneFn<float> dw3x3_wgrad(float) { return kDw3x3.f32_wgrad.active(); }
conv::Dw3x3WgradPlaneFn<double> dw3x3_wgrad(double) { return conv::f64_dw3x3_wgrad_plane_scalar; }

conv::DwconvRowsFn<float> dw_rows(float) {
  return active_isa() == Isa::avx512 ? NNKERN_X86_ONLY(conv::f32_dwconv_rows_avx512) : nullptr;
}
conv::DwconvRowsFn<double> dw_rows(double) { return nullptr; }
conv::DwconvRowFn<float> dw_row(float) { return kDwconv.f32_row.active(); }
conv::DwconvRowFn<double> dw_row(double) { return conv::f64_dwconv_row_scalar; }
conv::DwconvWgradRowFn<float> dw_wgrad(float) { return kDwconv.f32_wgrad.active(); }
conv::DwconvWgradRowFn<double> dw_wgrad(double) { return conv::f64_dwconv_wgrad_row_scalar; }
// The whole-plane weight-gradient kernel, or null: then dw_wgrad row by row.
using DwWgradPlaneFn = void (*)(const conv::DwWgradPlane&, const float*, const float*, float*);
DwWgradPlaneFn dw_wgrad_plane(float) {
  return active_isa() == Isa::avx512 ? NNKERN_X86_ONLY(conv::f32_dwconv_wgrad_plane_avx512) : nullptr;
}
void (*dw_wgrad_plane(double))(const conv::DwWgradPlane&, const double*, const double*, double*) { return nullptr; }

}  // namespace

// Each task pads one input plane into scratch and computes its og output
// planes row by row (all og channels of a row at once where the family has a
// several-channel kernel), the epilogue applied to each row while it is in L1.
template <class T>
void dwconv_forward(const Plan& pl, const T* x, const T* w, const T* bias, const T* residual, bool relu, T* out) {
  const ConvGeometry& g = pl.g;
  if (pl.p == 0) return;
  const DwPadded pd(g);
  const auto kernel = dw_row(T());
  const auto multi = dw_rows(T());
  const size_t taps = g.kh * g.kw;
  parallel_for(g.n * g.c, [&](size_t first, size_t last) {
    ScratchBuffer scratch = acquire_scratch(pd.ph * pd.pw * sizeof(T));
    T* const pad = scratch.as<T>();
    std::vector<const T*> rows(g.kh);
    std::vector<T> init(pl.og);
    std::vector<T*> orows(pl.og);
    for (size_t t = first; t < last; ++t) {
      const size_t n = t / g.c, c = t % g.c, o0 = c * pl.og;
      pad_plane(x + t * pl.hw, g.h, g.w, static_cast<ptrdiff_t>(g.pt), static_cast<ptrdiff_t>(g.pl), pd.ph, pd.pw,
                pad);
      for (size_t r = 0; r < pl.og; ++r) init[r] = bias != nullptr ? bias[o0 + r] : T(0);
      for (size_t oy = 0; oy < g.oh; ++oy) {
        for (size_t i = 0; i < g.kh; ++i) rows[i] = pad + (oy * g.sh + i * g.dh) * pd.pw;
        for (size_t r = 0; r < pl.og; ++r) orows[r] = out + ((n * g.o + o0 + r) * g.oh + oy) * g.ow;
        if (multi != nullptr && pl.og > 1) {
          multi(g.ow, g.kh, g.kw, g.sw, g.dw, rows.data(), w + o0 * taps, pl.og, init.data(), orows.data());
        } else {
          for (size_t r = 0; r < pl.og; ++r) {
            kernel(g.ow, g.kh, g.kw, g.sw, g.dw, rows.data(), w + (o0 + r) * taps, init[r], orows[r]);
          }
        }
        for (T* const orow : orows) {
          if (residual != nullptr) {
            const T* res = residual + (orow - out);
            for (size_t i = 0; i < g.ow; ++i) orow[i] += res[i];
          }
          if (relu) {
            for (size_t i = 0; i < g.ow; ++i) orow[i] = orow[i] < T(0) ? T(0) : orow[i];
          }
        }
      }
    }
  });
}

// grad_input plane by plane. Stride 1 with one output per channel: a
// depthwise conv of the padded grad_output with the flipped kernel (the
// forward row kernel). Otherwise: scatter each tap into a padded plane, then crop.
template <class T>
void dwconv_grad_input(const Plan& pl, const T* go, const T* w, T* gx) {
  const ConvGeometry& g = pl.g;
  const size_t taps = g.kh * g.kw;
  const bool as_conv = g.sh == 1 && g.sw == 1 && pl.og == 1;
  const DwPadded pd(g);
  const size_t gph = as_conv ? g.h + (g.kh - 1) * g.dh : pd.ph;
  const size_t gpw = as_conv ? g.w + (g.kw - 1) * g.dw : pd.pw;
  const auto kernel = dw_row(T());
  parallel_for(g.n * g.c, [&](size_t first, size_t last) {
    ScratchBuffer scratch = acquire_scratch((gph * gpw + taps) * sizeof(T));
    T* const pad = scratch.as<T>();
    T* const wflip = pad + gph * gpw;
    std::vector<const T*> rows(g.kh);
    for (size_t t = first; t < last; ++t) {
      const size_t n = t / g.c, c = t % g.c;
      T* const plane = gx + t * pl.hw;
      if (as_conv) {
        for (size_t k = 0; k < taps; ++k) wflip[k] = w[c * taps + taps - 1 - k];
        pad_plane(go + (n * g.o + c) * pl.p, g.oh, g.ow,
                  static_cast<ptrdiff_t>((g.kh - 1) * g.dh) - static_cast<ptrdiff_t>(g.pt),
                  static_cast<ptrdiff_t>((g.kw - 1) * g.dw) - static_cast<ptrdiff_t>(g.pl), gph, gpw, pad);
        for (size_t iy = 0; iy < g.h; ++iy) {
          for (size_t i = 0; i < g.kh; ++i) rows[i] = pad + (iy + i * g.dh) * gpw;
          kernel(g.w, g.kh, g.kw, 1, g.dw, rows.data(), wflip, T(0), plane + iy * g.w);
        }
        continue;
      }
      std::fill_n(pad, gph * gpw, T(0));
      for (size_t o = c * pl.og; o < (c + 1) * pl.og; ++o) {
        for (size_t oy = 0; oy < g.oh; ++oy) {
          const T* grow = go + ((n * g.o + o) * g.oh + oy) * g.ow;
          for (size_t i = 0; i < g.kh; ++i) {
            for (size_t j = 0; j < g.kw; ++j) {
              const T wt = w[o * taps + i * g.kw + j];
              T* d = pad + (oy * g.sh + i * g.dh) * gpw + j * g.dw;
              for (size_t x = 0; x < g.ow; ++x) d[x * g.sw] += wt * grow[x];
            }
          }
        }
      }
      pad_plane(pad, gph, gpw, -static_cast<ptrdiff_t>(g.pt), -static_cast<ptrdiff_t>(g.pl), g.h, g.w, plane);
    }
  });
}

// grad_weight[o] = sum over images (in order, in double) of the per-image tap
// sums: outputs are split over the threads, so the bits do not depend on the
// thread count.
template <class T>
void dwconv_grad_weight(const Plan& pl, const T* go, const T* x, T* gw) {
  const ConvGeometry& g = pl.g;
  const size_t taps = g.kh * g.kw;
  const DwPadded pd(g);
  const auto kernel = dw_wgrad(T());
  const auto plane_kernel = dw_wgrad_plane(T());
  const conv::DwWgradPlane plane{g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, pd.pw};
  parallel_for(g.o, [&](size_t first, size_t last) {
    ScratchBuffer scratch = acquire_scratch((pd.ph * pd.pw + taps) * sizeof(T));
    T* const pad = scratch.as<T>();
    T* const part = pad + pd.ph * pd.pw;
    std::vector<double> acc(taps);
    std::vector<const T*> rows(g.kh);
    for (size_t o = first; o < last; ++o) {
      const size_t c = o / pl.og;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (size_t n = 0; n < g.n && pl.p != 0; ++n) {
        pad_plane(x + (n * g.c + c) * pl.hw, g.h, g.w, static_cast<ptrdiff_t>(g.pt), static_cast<ptrdiff_t>(g.pl),
                  pd.ph, pd.pw, pad);
        std::fill_n(part, taps, T(0));
        if (plane_kernel != nullptr) {
          plane_kernel(plane, pad, go + (n * g.o + o) * pl.p, part);
        } else {
          for (size_t oy = 0; oy < g.oh; ++oy) {
            for (size_t i = 0; i < g.kh; ++i) rows[i] = pad + (oy * g.sh + i * g.dh) * pd.pw;
            kernel(g.ow, g.kh, g.kw, g.sw, g.dw, rows.data(), go + ((n * g.o + o) * g.oh + oy) * g.ow, part);
          }
        }
        for (size_t k = 0; k < taps; ++k) acc[k] += static_cast<double>(part[k]);
      }
      for (size_t k = 0; k < taps; ++k) gw[o * taps + k] = static_cast<T>(acc[k]);
    }
  });
}

// ---- depthwise 3x3, stride 1, dilation 1 (any padding, channel multipliers):
// whole-plane kernels (dw3x3.h) on the unpadded planes, the epilogue fused.

bool dw3x3_applies(const Plan& pl) {
  const ConvGeometry& g = pl.g;
  return pl.cg == 1 && g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1;
}

namespace {

// The forward reads x (h x w) at (oy + i - pt, ox + j - pl).
conv::Dw3x3Geo dw3x3_forward_geo(const ConvGeometry& g) {
  return {g.h, g.w, g.oh, g.ow, static_cast<ptrdiff_t>(g.pt), static_cast<ptrdiff_t>(g.pl)};
}

// grad_input[iy][ix] = sum_{i,j} go[iy + pt - i][ix + pl - j] w[i][j]: the
// same kernel over grad_output with the flipped weights and offsets 2 - pt,
// 2 - pl (negative when the padding exceeds 2: a crop).
conv::Dw3x3Geo dw3x3_grad_input_geo(const ConvGeometry& g) {
  return {g.oh, g.ow, g.h, g.w, 2 - static_cast<ptrdiff_t>(g.pt), 2 - static_cast<ptrdiff_t>(g.pl)};
}

}  // namespace

// One task per output plane (n, o); each reads its input plane once.
template <class T>
void dw3x3_forward(const Plan& pl, const T* x, const T* w, const T* bias, const T* residual, bool relu, T* out) {
  const ConvGeometry& g = pl.g;
  const auto kernel = dw3x3_plane(T());
  const conv::Dw3x3Geo geo = dw3x3_forward_geo(g);
  parallel_for(g.n * g.o, [&](size_t first, size_t last) {
    for (size_t t = first; t < last; ++t) {
      const size_t n = t / g.o, o = t % g.o, c = o / pl.og;
      kernel(geo, x + (n * g.c + c) * pl.hw, w + o * 9, bias != nullptr ? bias[o] : T(0),
             residual != nullptr ? residual + t * pl.p : nullptr, relu, /*outside_zero=*/true, out + t * pl.p);
    }
  });
}

namespace {

// grad_input plane (n, c): the first output channel of the group writes it,
// the others (channel multipliers) add to it in channel order. Taps reading
// outside grad_output are left out (not multiplied by zero), as col2im.
template <class T>
void dw3x3_grad_input_plane(const Plan& pl, conv::Dw3x3PlaneFn<T> kernel, const conv::Dw3x3Geo& geo, const T* go,
                            const T* w, size_t n, size_t c, T* gx) {
  const ConvGeometry& g = pl.g;
  T* const plane = gx + (n * g.c + c) * pl.hw;
  for (size_t o = c * pl.og; o < (c + 1) * pl.og; ++o) {
    T wflip[9];
    for (size_t k = 0; k < 9; ++k) wflip[k] = w[o * 9 + 8 - k];
    kernel(geo, go + (n * g.o + o) * pl.p, wflip, T(0), o == c * pl.og ? nullptr : plane, /*relu=*/false,
           /*outside_zero=*/false, plane);
  }
}

}  // namespace

// grad_input, grad_weight and grad_bias in one pass over the planes: task
// (n, c) writes grad_input plane (n, c) and, for each output channel o of
// input channel c, the tap sums of (x, grad_output) planes (n, o) and the sum
// of grad_output plane (n, o) (float lane sums in a shape-fixed order) into
// part[n][o][0..10). The planes are walked in memory order and grad_output is
// read from memory once (the weight pass finds it in cache). Then each
// channel adds its images' sums in double, in image order: the bits of every
// output depend on neither the thread count nor the output mask.
template <class T>
void dw3x3_backward(const Plan& pl, const T* go, const T* x, const T* w, T* gx, T* gw, T* gb) {
  const ConvGeometry& g = pl.g;
  const auto fwd = dw3x3_plane(T());
  const auto wgrad = dw3x3_wgrad(T());
  const conv::Dw3x3Geo gi_geo = dw3x3_grad_input_geo(g), wg_geo = dw3x3_forward_geo(g);
  const bool want_w = gw != nullptr || gb != nullptr, taps = gw != nullptr;
  constexpr size_t kSums = 10;
  ScratchBuffer scratch;
  if (want_w) scratch = acquire_scratch(std::max<size_t>(1, g.n * g.o * kSums) * sizeof(T));
  T* const part = scratch.as<T>();
  parallel_for(g.n * g.c, [&](size_t first, size_t last) {
    for (size_t t = first; t < last; ++t) {
      const size_t n = t / g.c, c = t % g.c;
      if (gx != nullptr) dw3x3_grad_input_plane(pl, fwd, gi_geo, go, w, n, c, gx);
      if (!want_w) continue;
      for (size_t o = c * pl.og; o < (c + 1) * pl.og; ++o) {
        wgrad(wg_geo, x + t * pl.hw, go + (n * g.o + o) * pl.p, taps, part + (n * g.o + o) * kSums);
      }
    }
  });
  if (!want_w) return;
  parallel_for(g.o, [&](size_t first, size_t last) {
    for (size_t o = first; o < last; ++o) {
      double acc[kSums] = {};
      for (size_t n = 0; n < g.n; ++n) {
        for (size_t k = 0; k < kSums; ++k) acc[k] += static_cast<double>(part[(n * g.o + o) * kSums + k]);
      }
      if (gw != nullptr) {
        for (size_t k = 0; k < 9; ++k) gw[o * 9 + k] = static_cast<T>(acc[k]);
      }
      if (gb != nullptr) gb[o] = static_cast<T>(acc[9]);
    }
  });
}

template void dwconv_forward(const Plan&, const float*, const float*, const float*, const float*, bool, float*);
template void dwconv_forward(const Plan&, const double*, const double*, const double*, const double*, bool, double*);
template void dwconv_grad_input(const Plan&, const float*, const float*, float*);
template void dwconv_grad_input(const Plan&, const double*, const double*, double*);
template void dwconv_grad_weight(const Plan&, const float*, const float*, float*);
template void dwconv_grad_weight(const Plan&, const double*, const double*, double*);
template void dw3x3_forward(const Plan&, const float*, const float*, const float*, const float*, bool, float*);
template void dw3x3_forward(const Plan&, const double*, const double*, const double*, const double*, bool, double*);
template void dw3x3_backward(const Plan&, const float*, const float*, const float*, float*, float*, float*);
template void dw3x3_backward(const Plan&, const double*, const double*, const double*, double*, double*, double*);

}  // namespace nnkern::ops::detail
