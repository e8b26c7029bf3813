// conv2d and conv2d_backward (conv_op.h): the algorithm family chosen per
// shape and dtype (the families: conv_plan.h), and the bias gradient, which
// every family but the depthwise 3x3 kernels leaves to it.
#include "conv/conv_op.h"

#include <cstddef>
#include <type_traits>

#include "conv/conv_plan.h"
#include "conv/winograd_op.h"
#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "norm/bn_kernels.h"

namespace nnkern::ops::detail {
namespace {

// grad_bias[o] = sum over images and pixels in double, with eight
// interleaved partial sums (one dependent chain of double adds would take
// ~4 cycles per element) combined in a fixed order: the same bits for every
// thread count. float32 sums each plane with the batch-norm statistics
// kernel of the active family (norm/bn_kernels.h: float blocks of at most 8
// terms per lane, double across blocks), the planes added in image order.
const PerIsa<norm::F32BnStatsFn> kPlaneSums = {norm::f32_bn_stats_scalar, NNKERN_X86_ONLY(norm::f32_bn_stats_avx2),
                                               NNKERN_X86_ONLY(norm::f32_bn_stats_avx512)};

void plane_sums(const float* go, const Plan& pl, size_t o, double& s) {
  const auto sums = kPlaneSums.active();
  for (size_t n = 0; n < pl.g.n; ++n) {
    double out[2];
    sums(pl.p, go + (n * pl.g.o + o) * pl.p, 0.0, out);
    s += out[0];
  }
}

void plane_sums(const double* go, const Plan& pl, size_t o, double& s) {
  constexpr size_t kLanes = 8;
  double part[kLanes] = {};
  for (size_t n = 0; n < pl.g.n; ++n) {
    const double* plane = go + (n * pl.g.o + o) * pl.p;
    size_t i = 0;
    for (; i + kLanes <= pl.p; i += kLanes) {
      for (size_t l = 0; l < kLanes; ++l) part[l] += plane[i + l];
    }
    for (; i < pl.p; ++i) part[i % kLanes] += plane[i];
  }
  for (double v : part) s += v;
}

template <class T>
void grad_bias_typed(const Plan& pl, const T* go, T* gb) {
  parallel_for(pl.g.o, [&](size_t o0, size_t o1) {
    for (size_t o = o0; o < o1; ++o) {
      double s = 0;
      plane_sums(go, pl, o, s);
      gb[o] = static_cast<T>(s);
    }
  });
}

template <class T>
const T* data_or_null(const ArrayView* v) {
  return v != nullptr ? v->as<T>() : nullptr;
}

std::size_t input_elements(const ConvGeometry& g) { return g.n * g.c * g.h * g.w; }
std::size_t output_elements(const ConvGeometry& g) { return g.n * g.o * g.oh * g.ow; }
std::size_t weight_elements(const Plan& pl) { return pl.g.o * pl.k; }

template <class T>
void conv2d_backward_typed(const Plan& pl, const ArrayView& go, const ArrayView& x, const ArrayView& w,
                           const ArrayView* gx, const ArrayView* gw, const ArrayView* gb) {
  if (dw3x3_applies(pl)) {
    dw3x3_backward(pl, go.as<T>(), x.as<T>(), w.as<T>(), gx != nullptr ? gx->as<T>() : nullptr,
                   gw != nullptr ? gw->as<T>() : nullptr, gb != nullptr ? gb->as<T>() : nullptr);
    return;
  }
  if (gb != nullptr) grad_bias_typed(pl, go.as<T>(), gb->as<T>());
  if (pl.cg == 1) {
    bool done = false;
    if constexpr (std::is_same_v<T, float>) {
      if (gw != nullptr && direct_grad_weight_applies(pl)) {
        direct_grad_weight(pl, go.as<float>(), x.as<float>(), gw->as<float>());
        done = true;
      }
    }
    if (gw != nullptr && !done) dwconv_grad_weight(pl, go.as<T>(), x.as<T>(), gw->as<T>());
    if (gx != nullptr) dwconv_grad_input(pl, go.as<T>(), w.as<T>(), gx->as<T>());
    return;
  }
  if (gw != nullptr) {
    if constexpr (std::is_same_v<T, float>) {
      if (direct_grad_weight_applies(pl)) {
        direct_grad_weight(pl, go.as<float>(), x.as<float>(), gw->as<float>());
      } else if (taps_grad_weight_applies(pl)) {
        taps_grad_weight(pl, go.as<float>(), x.as<float>(), gw->as<float>());
      } else {
        grad_weight_typed(pl, go.as<T>(), x.as<T>(), gw->as<T>());
      }
    } else {
      grad_weight_typed(pl, go.as<T>(), x.as<T>(), gw->as<T>());
    }
  }
  if (gx == nullptr) return;
  if constexpr (std::is_same_v<T, float>) {
    if (winograd_grad_input_applies(pl.g) && all_finite(go.as<float>(), output_elements(pl.g))) {
      const auto filters = winograd_grad_input_filters(pl.g, w.as<float>());
      if (filters->finite) {
        conv2d_winograd(grad_input_geometry(pl.g), go.as<float>(), *filters, nullptr, nullptr, false,
                        gx->as<float>());
        return;
      }
    }
    // the padded grad_output multiplies every weight, so a NaN / Inf weight
    // would reach pixels that col2im leaves out: such weights take col2im
    if ((lanes_grad_input_applies(pl) || direct_grad_input_applies(pl)) &&
        all_finite(w.as<float>(), weight_elements(pl))) {
      if (lanes_grad_input_applies(pl)) {
        lanes_grad_input(pl, go.as<float>(), w.as<float>(), gx->as<float>());
      } else {
        direct_grad_input(pl, go.as<float>(), w.as<float>(), gx->as<float>());
      }
      return;
    }
  }
  grad_input_typed(pl, go.as<T>(), w.as<T>(), gx->as<T>());
}

template <class T>
void conv2d_typed(const Plan& pl, const T* x, const T* w, const T* bias, const T* residual, bool relu, T* out) {
  if constexpr (std::is_same_v<T, float>) {
    // Winograd's transforms mix every pixel of a tile (an Inf becomes inf - inf = NaN across
    // it): with a NaN or Inf in the data, the direct path gives the IEEE result instead.
    if (winograd_applies(pl.g) && all_finite(x, input_elements(pl.g))) {
      const auto filters = winograd_filters(pl.g, w);
      if (filters->finite) {
        conv2d_winograd(pl.g, x, *filters, bias, residual, relu, out);
        return;
      }
    }
    if (lanes_applies(pl)) {
      lanes_forward(pl, x, w, bias, residual, relu, out);
      return;
    }
    if (direct_applies(pl)) {
      direct_forward(pl, x, w, bias, residual, relu, out);
      return;
    }
  }
  if (pl.cg == 1 && dw3x3_applies(pl)) {
    dw3x3_forward(pl, x, w, bias, residual, relu, out);
  } else if (pl.cg == 1) {
    dwconv_forward(pl, x, w, bias, residual, relu, out);
  } else if (pixel_rows_form_applies<T>(pl) && (pixel_rows_applies<T>(pl) || pixel_rows_implicit_shape(pl))) {
    // the implicit form when every thread gets an image, else patches packed per tile (the same bits)
    if constexpr (std::is_same_v<T, float>) {
      if (pixel_rows_implicit_applies(pl)) {
        conv2d_pixel_rows_implicit(pl, x, w, bias, residual, relu, out);
      } else {
        conv2d_pixel_rows(pl, x, w, bias, residual, relu, out);
      }
    }
  } else {
    conv2d_gemm(pl, x, w, bias, residual, relu, out);
  }
}

}  // namespace
}  // namespace nnkern::ops::detail

namespace nnkern::ops {

void conv2d(const ConvGeometry& g, const ArrayView& x, const ArrayView& weight, const ArrayView* bias,
            const ArrayView* residual, bool relu, const ArrayView& out) {
  const detail::Plan pl(g);
  if (x.dtype == Dtype::f32) {
    detail::conv2d_typed(pl, x.as<float>(), weight.as<float>(), detail::data_or_null<float>(bias),
                         detail::data_or_null<float>(residual), relu, out.as<float>());
  } else {
    detail::conv2d_typed(pl, x.as<double>(), weight.as<double>(), detail::data_or_null<double>(bias),
                         detail::data_or_null<double>(residual), relu, out.as<double>());
  }
}

void conv2d_backward(const ConvGeometry& g, const ArrayView& grad_output, const ArrayView& x,
                     const ArrayView& weight, const ArrayView* grad_input, const ArrayView* grad_weight,
                     const ArrayView* grad_bias) {
  const detail::Plan pl(g);
  if (x.dtype == Dtype::f32) {
    detail::conv2d_backward_typed<float>(pl, grad_output, x, weight, grad_input, grad_weight, grad_bias);
  } else {
    detail::conv2d_backward_typed<double>(pl, grad_output, x, weight, grad_input, grad_weight, grad_bias);
  }
}

}  // namespace nnkern::ops
